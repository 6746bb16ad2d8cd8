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


@dataclass(frozen=True)
class Hit:
    rule: CompiledRule
    event: Mapping[str, Any]
    values: Values  # the Sigma fields of the record, for the alert
    selections: list[str]


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
        self.index = RuleIndex([rule.needs for rule in rules])


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
        event map made only when there is one."""
        hits: list[Hit] = []
        ret = record.ret
        if ret is not None and ret < 0:
            return hits
        event: Mapping[str, Any] | None = None
        for category in self._by_type.get(record.type, ()):
            values, low = category.record_of(record)
            for rule, selected in self._run(category, values, low, record):
                if event is None:
                    event = to_events([record])[0]
                hits.append(Hit(rule, event, values, selected))
        return hits

    def _run(
        self, category: _Category, values: Values, low: Lowered, event: Any
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
                continue
            out.append((rule, selected))
        return out

    def _failed(self, rule: CompiledRule, event: Any, exc: Exception) -> None:
        self.errors[rule.id] += 1
        if self.errors[rule.id] == 1:  # once per rule: a hot loop must not flood the log
            ident = event.get("id") if isinstance(event, Mapping) else getattr(event, "id", None)
            log.error("rule %r raised on event %s: %s: %s (further errors only counted)",
                      rule.title, ident, type(exc).__name__, exc)  # fmt: skip
