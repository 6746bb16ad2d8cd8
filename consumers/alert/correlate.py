"""Sigma correlation rules on the live stream: event_count, value_count, temporal.

A correlation counts the hits of its base rules per group (the host and the
`group-by` fields' values: never across hosts, so alerters that split the
hosts give the alerts of one) within `timespan`, in event time (the events' `ts`), and
fires once the condition holds: one alert, then the group starts afresh.
Only conditions that can hold while events arrive are evaluated (`gt`,
`gte`, and `eq` as "reached"); "fewer than" needs the end of a window and is
skipped with its reason, as are the value_sum/avg/percentile/median and
temporal_ordered types.

State is bounded: at most `max_groups` open groups per correlation (the
least recently fed closes first, counted in `evicted`), and per group only
what the condition can still use: `count` hit times, `count` distinct values
(each with its latest time), one time per base rule.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any

from sigma.correlations import (
    SigmaCorrelationCondition,
    SigmaCorrelationRule,
    SigmaCorrelationType,
)
from sigma.correlations import (
    SigmaCorrelationConditionOperator as Op,
)

from .matcher import RuleIdentity
from .values import Unsupported

KINDS = {
    SigmaCorrelationType.EVENT_COUNT: "event_count",
    SigmaCorrelationType.VALUE_COUNT: "value_count",
    SigmaCorrelationType.TEMPORAL: "temporal",
}
MAX_GROUPS = 10_000


@dataclass(frozen=True)
class Correlation(RuleIdentity):
    rule: SigmaCorrelationRule
    kind: str
    bases: tuple[str, ...]  # the base rules' ids
    categories: frozenset[str]  # of the base rules
    group_by: tuple[str, ...]
    window_ns: int
    threshold: int  # hits (event_count), distinct values (value_count), base rules (temporal)
    value_field: str | None  # value_count
    source: str = ""


    @property
    def fields(self) -> frozenset[str]:
        """What the base rules' records must hold for it."""
        return frozenset(self.group_by) | ({self.value_field} if self.value_field else set())

    @property
    def generate(self) -> bool:
        """The base rules alert on their own too (Sigma's `generate`, default no)."""
        return bool(self.rule.generate)


def compile_correlation(
    rule: SigmaCorrelationRule, bases: Mapping[str, Any], known: Mapping[str, Container[str]],
    source: str = "",
) -> Correlation:  # fmt: skip
    """`bases`: compiled rules by id (and by name); `known`: each category's fields.
    Unsupported (naming what) for what cannot be evaluated live."""
    kind = KINDS.get(rule.type)
    if kind is None:
        raise Unsupported(f"correlation type {rule.type} (supported: {', '.join(KINDS.values())})")
    ids: list[str] = []
    categories: set[str] = set()
    if rule.rules is None:
        raise Unsupported("correlation without rules")
    for ref in rule.rules:  # by name or id, among the rules of its file that loaded
        base = bases.get(str(ref.reference))
        if base is None:
            raise Unsupported(f"correlation: base rule {ref.reference!r} is not a rule of "
                              "this file that loads")  # fmt: skip
        ids.append(base.id)
        categories.add(base.category)
    if rule.timespan is None:
        raise Unsupported("correlation without timespan")
    cond = rule.condition
    value_field: str | None = None
    if kind == "temporal":
        threshold = len(ids)
    else:
        if not isinstance(cond, SigmaCorrelationCondition):  # None, or an and/or expression
            raise Unsupported(f"correlation condition {'none' if cond is None else 'expression'} "
                              "(only a count with gt, gte or eq)")
        if cond.op not in (Op.GT, Op.GTE, Op.EQ):
            raise Unsupported(f"correlation condition {cond.op.name.lower()} (only gt, gte, "
                              "eq: a live stream can tell when a count is reached, not when it "
                              "stays low)")
        # The least whole count that meets it (Sigma allows a fractional bound).
        threshold = math.floor(cond.count) + 1 if cond.op is Op.GT else math.ceil(cond.count)
        if kind == "value_count":
            value_field = cond.fieldref if isinstance(cond.fieldref, str) else None
            if not value_field:
                raise Unsupported("value_count correlation without a field")
    group_by = tuple(rule.group_by or ())
    needed = [*group_by, *([value_field] if value_field else [])]
    for category in categories:
        missing = [f for f in needed if f not in known[category]]
        if missing:
            from .matcher import UnmappedFields

            raise UnmappedFields(missing)
    return Correlation(rule, kind, tuple(ids), frozenset(categories), group_by,
                       int(rule.timespan.seconds * 1_000_000_000), max(threshold, 1),
                       value_field, source)  # fmt: skip


@dataclass
class _Group:
    times: deque[int] = field(default_factory=deque)  # event_count: hit times, oldest first
    values: dict[Any, int] = field(default_factory=dict)  # value_count: value -> latest time
    seen: dict[str, int] = field(default_factory=dict)  # temporal: base rule -> latest time
    events: deque[str] = field(default_factory=lambda: deque(maxlen=20))  # ids, for the alert
    first_ts: int = 0


@dataclass(frozen=True)
class Fired:
    correlation: Correlation
    hit: Any  # the last base hit (engine.Hit)
    group: dict[str, Any]
    count: int
    first_ts: int
    events: list[str]


class Correlator:
    def __init__(self, correlations: list[Correlation], max_groups: int = MAX_GROUPS) -> None:
        self.correlations = correlations
        self.max_groups = max_groups
        self.by_base: dict[str, list[Correlation]] = {}
        for c in correlations:
            for base in c.bases:
                self.by_base.setdefault(base, []).append(c)
        # Base rules whose own alerts no correlation asked for (Sigma's generate: false).
        self.silent = {b for c in correlations if not c.generate for b in c.bases}
        self.silent -= {b for c in correlations if c.generate for b in c.bases}
        self.groups: dict[str, OrderedDict[tuple[Any, ...], _Group]] = {
            c.id: OrderedDict() for c in correlations
        }
        self.evicted = 0  # groups closed early to bound memory

    def adopt(self, old: Correlator) -> None:
        """Keep the open groups of the correlations both sets have (a reload)."""
        for cid in self.groups.keys() & old.groups.keys():
            self.groups[cid] = old.groups[cid]
        self.evicted = old.evicted

    def feed(self, hit: Any) -> list[Fired]:
        out: list[Fired] = []
        for c in self.by_base.get(hit.rule.id, ()):
            fired = self._feed(c, hit)
            if fired is not None:
                out.append(fired)
        return out

    def _feed(self, c: Correlation, hit: Any) -> Fired | None:
        values = hit.values
        # Per host, whatever the group-by: a ProcessId or a path names different
        # things on two hosts, and alerters that split the hosts (--partition)
        # then count exactly what one alerter would.
        key = (hit.host, *(_hashable(values.get(f)) for f in c.group_by))
        groups = self.groups[c.id]
        group = groups.get(key)
        if group is None:
            while len(groups) >= self.max_groups:
                groups.popitem(last=False)
                self.evicted += 1
            group = groups[key] = _Group()
        else:
            groups.move_to_end(key)
        ts = hit.ts
        start = ts - c.window_ns
        if c.kind == "event_count":
            group.times.append(ts)
            while group.times and group.times[0] < start:
                group.times.popleft()
            while len(group.times) > c.threshold:
                group.times.popleft()
            count, first = len(group.times), group.times[0]
        elif c.kind == "value_count":
            group.values[_hashable(values.get(c.value_field or ""))] = ts
            group.values = {v: t for v, t in group.values.items() if t >= start}
            while len(group.values) > c.threshold:  # drop the stalest
                del group.values[min(group.values, key=group.values.__getitem__)]
            count, first = len(group.values), min(group.values.values())
        else:
            group.seen[hit.rule.id] = ts
            group.seen = {r: t for r, t in group.seen.items() if t >= start}
            count, first = len(group.seen), min(group.seen.values())
        group.events.append(str(hit.id or "?"))
        if count < c.threshold:
            return None
        del groups[key]  # fired: the next alert needs a fresh window
        fields = dict(zip(c.group_by, key[1:], strict=True))
        return Fired(c, hit, fields, count, first, list(group.events))

    @property
    def open_groups(self) -> int:
        return sum(len(g) for g in self.groups.values())


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
