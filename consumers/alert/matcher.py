"""A pySigma rule -> a compiled matcher: closures built once, then called per event.

Uses pySigma's parsed objects throughout: the detection items with their
modifiers already applied (values.py), and the condition's parse tree with
`1 of x*` / `all of them` resolved by pySigma's own selector.
"""

from __future__ import annotations

import functools
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionIdentifier,
    ConditionItem,
    ConditionNOT,
    ConditionOR,
    ConditionSelector,
    ConditionValueExpression,
)
from sigma.exceptions import SigmaError
from sigma.modifiers import (
    SigmaExpandModifier,
    SigmaFieldReferenceModifier,
    SigmaTimestampModifier,
)
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaRule

from .index import Atom, necessary
from .values import (
    Lowered,
    Pred,
    Unsupported,
    Values,
    all_of,
    any_of,
    compile_values,
    fuse,
    not_,
)

# Modifiers pySigma parses but this matcher does not evaluate, by what they need.
_UNSUPPORTED_MODIFIERS = {
    SigmaFieldReferenceModifier: "modifier |fieldref (field-to-field comparison)",
    SigmaExpandModifier: "modifier |expand (placeholders need a processing pipeline)",
}


class UnmappedFields(Unsupported):
    """The rule reads fields its category's field map has no source for (all of them)."""

    def __init__(self, fields: list[str]) -> None:
        self.fields = tuple(fields)
        names = ", ".join(map(repr, fields))
        s = "s" if len(fields) > 1 else ""
        super().__init__(f"field{s} {names} (snoopbus events do not provide it; map it "
                         "with --field-map or --pipeline)")


class RuleIdentity:
    """What an alert says of the Sigma rule behind it (a rule or a correlation):
    needs `rule` (pySigma's) and `source` (its file, for a rule without an id)."""

    rule: Any
    source: str

    @functools.cached_property  # read per hit (throttle keys, correlations): a UUID's str is slow
    def id(self) -> str:
        return str(self.rule.id) if self.rule.id else f"{self.source}:{self.rule.title}"

    @property
    def title(self) -> str:
        return str(self.rule.title)

    @property
    def level(self) -> str:
        return str(self.rule.level) if self.rule.level else "medium"

    @property
    def tags(self) -> list[str]:
        return [f"{t.namespace}.{t.name}" for t in self.rule.tags]


@dataclass(frozen=True)
class CompiledRule(RuleIdentity):
    rule: SigmaRule
    category: str
    match: Pred  # the whole condition
    selections: Mapping[str, Pred]  # each named detection the condition uses
    fields: frozenset[str]  # Sigma fields the rule reads
    keywords: bool  # has field-less (full-text) detections
    source: str = ""
    # Tests on lower-cased fields one of which holds whenever the rule matches
    # (index.py); None: it may match anything and runs on every event.
    needs: tuple[Atom, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def matched_selections(self, values: Values, low: Lowered) -> list[str]:
        """Which named detections hold (asked only after the rule matched)."""
        return [name for name, pred in self.selections.items() if pred(values, low)]


class _Compiler:
    def __init__(self, rule: SigmaRule, known_fields: Container[str] | None) -> None:
        self.rule = rule
        self.known = known_fields
        self.fields: set[str] = set()
        self.keywords = False
        self.selections: dict[str, Pred] = {}
        self.unmapped: list[str] = []  # in the order met, each once

    def condition(self, node: Any) -> Pred:
        if isinstance(node, ConditionIdentifier):
            return self.selection(node.identifier)
        if isinstance(node, ConditionSelector):
            ids = node.resolve_referenced_detections(self.rule.detection)
            if not ids:
                raise Unsupported(f"'{node.args[0]} of {node.pattern}' matches no detection")
            preds = [self.selection(i.identifier) for i in ids]
            return any_of(preds) if node.cond_class is ConditionOR else all_of(preds)
        if isinstance(node, ConditionNOT):
            return not_(self.condition(node.args[0]))
        if isinstance(node, ConditionAND):
            return all_of([self.condition(a) for a in node.args])
        if isinstance(node, ConditionOR):
            return any_of([self.condition(a) for a in node.args])
        if isinstance(node, ConditionFieldEqualsValueExpression | ConditionValueExpression):
            raise Unsupported("condition expression outside a detection")
        if isinstance(node, ConditionItem):
            raise Unsupported(f"condition operator {type(node).__name__}")
        raise Unsupported(f"condition element {type(node).__name__}")

    def selection(self, name: str) -> Pred:
        pred = self.selections.get(name)
        if pred is None:
            try:
                detection = self.rule.detection.detections[name]
            except KeyError:
                raise Unsupported(f"condition names undefined detection {name!r}") from None
            pred = self.selections[name] = self.detection(detection)
        return pred

    def detection(self, detection: SigmaDetection) -> Pred:
        preds = [
            self.detection(item) if isinstance(item, SigmaDetection) else self.item(item)
            for item in detection.detection_items
        ]
        return all_of(preds) if detection.item_linking is ConditionAND else any_of(preds)

    def item(self, item: SigmaDetectionItem) -> Pred:
        for modifier in item.modifiers:
            if modifier in _UNSUPPORTED_MODIFIERS:
                raise Unsupported(_UNSUPPORTED_MODIFIERS[modifier])
            if issubclass(modifier, SigmaTimestampModifier):
                raise Unsupported(f"timestamp modifier {modifier.__name__}")
        name = item.field
        if name is None:
            self.keywords = True
        else:
            if self.known is not None and name not in self.known:
                if name not in self.unmapped:  # all of them are reported, not the first
                    self.unmapped.append(name)
            self.fields.add(name)
        pred = compile_values(name, item.value, item.value_linking)
        return not_(pred) if item.negated else pred


def compile_rule(
    rule: SigmaRule, category: str, known_fields: Container[str] | None = None,
    source: str = "",
) -> CompiledRule:  # fmt: skip
    """Raises Unsupported (naming the construct) for what cannot be evaluated;
    `known_fields` (the category's field map) limits the fields a rule may use."""
    if rule.errors:
        raise Unsupported(f"invalid rule: {rule.errors[0]}")
    c = _Compiler(rule, known_fields)
    try:
        conditions = [c.condition(cond.parse(postprocess=False))
                      for cond in rule.detection.parsed_condition]  # fmt: skip
    except SigmaError as exc:
        raise Unsupported(f"condition: {exc}") from None
    if c.unmapped:
        raise UnmappedFields(c.unmapped)
    whole = any_of(conditions)
    needs = necessary(whole)
    return CompiledRule(
        rule=rule, category=category, match=fuse(whole),
        selections={name: fuse(pred) for name, pred in c.selections.items()},
        fields=frozenset(c.fields), keywords=c.keywords, source=source,
        needs=None if needs is None else tuple(needs),
    )  # fmt: skip
