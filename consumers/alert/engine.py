"""Matching events against compiled rules: one record per event and category.

Rules are indexed by the event types that feed their log source, so an
event meets only the rules that can apply to it. Each event is turned into a
record of just the Sigma fields those rules read, once; then the rules the
record could match (index.py) run their compiled predicates on it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from snoopbus.proto.fastpath import to_events

from .correlate import Correlation
from .fields import FieldMap, Getter, default_field_map
from .index import RuleIndex
from .logsources import EVENT_TYPES
from .matcher import CompiledRule
from .values import Lowered, Values

log = logging.getLogger(__name__)

# Record keys whose matches are kept per category (typed records), and their bytes, roughly.
SEEN_MAX = 8192
SEEN_BYTES = 8 << 20
# Of one record key: its record's values, the rules matched with their selections,
# the rules that raised, its cost in bytes.
Outcome = tuple[Values, list[tuple[CompiledRule, list[str]]], list[CompiledRule], int]


def _cost(values: Values) -> int:
    """Bytes a kept outcome holds, roughly: the key, the values and their lower case."""
    return 600 + 3 * sum(len(v) for v in values.values() if isinstance(v, str))


class Hit:
    """One rule matched one event. `event` is its map: given, or made from the
    decoder's typed record when first read (most hits are repeats the throttle
    folds: their map is never needed). `host`, `ts` and `id` read either."""

    __slots__ = ("_event", "_record", "rule", "selections", "values")

    def __init__(self, rule: CompiledRule, event: Any, values: Values,
                 selections: list[str]) -> None:  # fmt: skip
        self.rule = rule
        self.values = values  # the Sigma fields of the record, for the alert
        self.selections = selections
        is_map = isinstance(event, Mapping)
        self._event: Mapping[str, Any] | None = event if is_map else None
        self._record: Any = None if is_map else event

    @property
    def event(self) -> Mapping[str, Any]:
        if self._event is None:
            self._event = to_events([self._record])[0]
            self._record = None
        return self._event

    @property
    def host(self) -> Any:
        return self._record.host if self._record is not None else self.event.get("host")

    @property
    def ts(self) -> int:
        return int(self._record.ts if self._record is not None else self.event.get("ts", 0))

    @property
    def id(self) -> Any:
        return self._record.id if self._record is not None else self.event.get("id")


@dataclass(frozen=True)
class Verdict:
    """One rule against one event, for `snoopbus rules test`: whether it matched
    (as match() decides) and which named detections hold either way."""

    rule: CompiledRule
    matched: bool
    selections: list[str]
    values: Values


class _Category:
    """The rules of one log source category, the fields they read and their index."""

    def __init__(self, name: str, rules: list[CompiledRule], field_map: FieldMap,
                 extra: frozenset[str] = frozenset()) -> None:  # fmt: skip
        self.name = name
        self.rules = rules
        wanted: set[str] | None = set(extra)  # correlations' group-by fields
        for rule in rules:
            if rule.keywords:
                wanted = None  # full-text rules search every mapped field
                break
            assert wanted is not None
            wanted |= rule.fields
        self.getters: list[tuple[str, Getter]] = field_map.getters(name, wanted)
        # Of an event map, and of the decoder's typed record of one.
        self.record, self.record_of = field_map.recorders(name, wanted)
        self.key_of = field_map.record_key(name, wanted)
        self.index = RuleIndex([rule.needs for rule in rules])
        # Matching is a function of the record alone, and a busy host repeats
        # itself (the same command lines, the same files written): the outcome
        # of a record key is kept, bounded by count and bytes, oldest out first.
        self.seen: dict[Any, Outcome] = {}
        self.seen_bytes = 0

    def keep(self, key: Any, outcome: Outcome) -> None:
        seen = self.seen
        while seen and (len(seen) >= SEEN_MAX or self.seen_bytes + outcome[3] > SEEN_BYTES):
            self.seen_bytes -= seen.pop(next(iter(seen)))[3]
        if outcome[3] <= SEEN_BYTES:
            seen[key] = outcome
            self.seen_bytes += outcome[3]


class Engine:
    def __init__(self, rules: Sequence[CompiledRule], field_map: FieldMap | None = None,
                 correlations: Sequence[Correlation] = ()) -> None:  # fmt: skip
        fmap = field_map or default_field_map()
        self.rules = list(rules)
        by_category: dict[str, list[CompiledRule]] = {}
        for rule in self.rules:
            by_category.setdefault(rule.category, []).append(rule)
        extra: dict[str, frozenset[str]] = {}
        for c in correlations:  # their hits' records must hold the group-by fields
            for name in c.categories:
                extra[name] = extra.get(name, frozenset()) | c.fields
        self.categories = {name: _Category(name, rs, fmap, extra.get(name, frozenset()))
                           for name, rs in by_category.items()}  # fmt: skip
        self.errors: Counter[str] = Counter()  # rule id -> events it raised on
        self._by_type: dict[str, list[_Category]] = {}
        for name, category in self.categories.items():
            for type_ in EVENT_TYPES[name]:
                self._by_type.setdefault(type_, []).append(category)

    @property
    def event_types(self) -> list[str]:
        return sorted(self._by_type)

    def match(self, event: Mapping[str, Any]) -> list[Hit]:
        hits: list[Hit] = []
        if event.get("ret", 0) < 0:
            return hits  # a failed syscall changed nothing (the collector sends these on request)
        for category in self._by_type.get(event.get("type", ""), ()):
            values, low = category.record(event)
            for rule, selected in self._run(category, values, low, event):
                hits.append(Hit(rule, event, values, selected))
        return hits

    def explain(self, event: Mapping[str, Any]) -> list[Verdict]:
        """Every rule of the log sources `event` feeds, matched or not. Matching
        is match()'s own; the selections held are asked of every rule, so a
        rule that did not match shows which of its detections did hold."""
        hits = {id(hit.rule): hit for hit in self.match(event)}
        out: list[Verdict] = []
        for category in self._by_type.get(event.get("type", ""), ()):
            values, low = category.record(event)
            for rule in category.rules:
                hit = hits.get(id(rule))
                if hit is not None:
                    out.append(Verdict(rule, True, hit.selections, hit.values))
                else:
                    held = rule.matched_selections(values, low)
                    out.append(Verdict(rule, False, held, values))
        return out

    def match_record(self, record: Any) -> list[Hit]:
        """match() for a typed record (Delivery.records): the same hits, the
        event map made only when read (Hit.event)."""
        return self.match_records((record,))

    def match_records(self, records: Sequence[Any]) -> list[Hit]:
        """match_record() of each record in turn: one call per message, the
        log sources looked up once per run of one type (a message holds one)."""
        hits: list[Hit] = []
        last_type: str | None = None
        categories: Sequence[_Category] = ()
        errors = self.errors
        for record in records:
            ret = record.ret
            if ret is not None and ret < 0:
                continue  # a failed syscall changed nothing
            if record.type != last_type:
                last_type = record.type
                categories = self._by_type.get(last_type, ())
            for category in categories:
                key_of = category.key_of
                if key_of is None:
                    values, low = category.record_of(record)
                    matched = self._run(category, values, low, record)
                else:
                    key = key_of(record)
                    seen = category.seen.get(key)
                    if seen is None:
                        seen = self._first(category, key, record)
                    else:
                        for rule in seen[2]:  # counted per event, as if run again
                            errors[rule.id] += 1
                    values, matched = seen[0], seen[1]
                for rule, selected in matched:
                    hits.append(Hit(rule, record, values, selected))
        return hits

    def _first(self, category: _Category, key: Any, record: Any) -> Outcome:
        """Match a record whose key is not in `category.seen`, and keep the outcome."""
        values, low = category.record_of(record)
        failed: list[CompiledRule] = []
        matched = self._run(category, values, low, record, failed)
        outcome = (values, matched, failed, _cost(values))
        category.keep(key, outcome)
        return outcome

    def _run(
        self, category: _Category, values: Values, low: Lowered, event: Any,
        failed: list[CompiledRule] | None = None,
    ) -> list[tuple[CompiledRule, list[str]]]:
        """The rules of `category` the record matches (those the index cannot rule out run)."""
        out = []
        rules = category.rules
        for i in category.index.candidates(low):
            rule = rules[i]
            try:
                if not rule.match(values, low):
                    continue
                selected = rule.matched_selections(values, low)
            except Exception as exc:  # one rule's bug must not fail the batch for all
                self._failed(rule, event, exc)
                if failed is not None:
                    failed.append(rule)
                continue
            out.append((rule, selected))
        return out

    def _failed(self, rule: CompiledRule, event: Any, exc: Exception) -> None:
        self.errors[rule.id] += 1
        if self.errors[rule.id] == 1:  # once per rule: a hot loop must not flood the log
            ident = event.get("id") if isinstance(event, Mapping) else getattr(event, "id", None)
            log.error("rule %r raised on event %s: %s: %s (further errors only counted)",
                      rule.title, ident, type(exc).__name__, exc)  # fmt: skip
