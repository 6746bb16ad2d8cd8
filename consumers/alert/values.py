"""One Sigma value (after pySigma applied the modifiers) -> a predicate on a record.

A record is two dicts built once per event: `values` (Sigma field -> the raw
value, str or int; absent when the event lacks it) and `low` (the same values
as lower-case text). Sigma compares strings case-insensitively unless
`|cased`, so most predicates read `low`; regular expressions read the value
as it is (their `i` flag decides).
"""

from __future__ import annotations

import ipaddress
import re
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from sigma.conditions import ConditionAND, ConditionOR
from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaType,
    SpecialChars,
)

Values = dict[str, Any]
Lowered = dict[str, str]
Pred = Callable[[Values, Lowered], bool]
TextTest = Callable[[str], bool]


class Unsupported(Exception):
    """A construct this matcher does not evaluate; the message names it."""


_REGEX_FLAGS = {
    SigmaRegularExpressionFlag.IGNORECASE: re.IGNORECASE,
    SigmaRegularExpressionFlag.MULTILINE: re.MULTILINE,
    SigmaRegularExpressionFlag.DOTALL: re.DOTALL,
}


def never(values: Values, low: Lowered) -> bool:
    return False


# Rough cost of a predicate, so that AND/OR try the cheap tests first (all
# predicates are pure, so the order changes speed, never the result).
_COST: weakref.WeakKeyDictionary[Pred, int] = weakref.WeakKeyDictionary()


def costed(pred: Pred, cost: int) -> Pred:
    _COST[pred] = cost
    return pred


def cost(pred: Pred) -> int:
    return _COST.get(pred, 5)


# What a predicate is, for fuse(): ("and"|"or", children), ("not", child), or a
# test on one lower-cased field: ("in"|"pre"|"suf"|"search", field, constant).
_SHAPE: weakref.WeakKeyDictionary[Pred, tuple[Any, ...]] = weakref.WeakKeyDictionary()


def shaped(pred: Pred, *shape: Any) -> Pred:
    _SHAPE[pred] = shape
    return pred


def shape_of(pred: Pred) -> tuple[Any, ...] | None:
    """What `pred` is, if it was built with a shape (for fuse() and index.py)."""
    return _SHAPE.get(pred)


def any_of(preds: Sequence[Pred]) -> Pred:
    ordered = tuple(sorted(preds, key=cost))
    if not ordered:
        return never
    if len(ordered) == 1:
        return ordered[0]
    total = sum(map(cost, ordered))
    if len(ordered) == 2:
        a, b = ordered
        return shaped(costed(lambda v, lo: a(v, lo) or b(v, lo), total), "or", ordered)

    def either(v: Values, lo: Lowered) -> bool:
        for p in ordered:  # a plain loop: cheaper than any() over a generator
            if p(v, lo):
                return True
        return False

    return shaped(costed(either, total), "or", ordered)


def all_of(preds: Sequence[Pred]) -> Pred:
    ordered = tuple(sorted(preds, key=cost))
    if len(ordered) == 1:
        return ordered[0]
    total = sum(map(cost, ordered))
    if len(ordered) == 2:
        a, b = ordered
        return shaped(costed(lambda v, lo: a(v, lo) and b(v, lo), total), "and", ordered)

    def both(v: Values, lo: Lowered) -> bool:
        for p in ordered:
            if not p(v, lo):
                return False
        return True

    return shaped(costed(both, total), "and", ordered)


def not_(pred: Pred) -> Pred:
    return shaped(costed(lambda v, lo: not pred(v, lo), cost(pred)), "not", pred)


# -- strings ---------------------------------------------------------------


def _pattern(parts: Sequence[str | SpecialChars | Placeholder], cased: bool) -> str:
    """A wildcard pattern as a regular expression matching the whole value."""
    out = []
    for part in parts:
        if isinstance(part, Placeholder):
            raise Unsupported(f"placeholder %{part.name}% (needs a processing pipeline)")
        if isinstance(part, str):
            out.append(re.escape(part if cased else part.lower()))
        else:
            out.append(".*" if part is SpecialChars.WILDCARD_MULTI else ".")
    return "".join(out)


def _string_group(field: str | None, strings: list[SigmaString], cased: bool) -> Pred:
    """OR over several patterns on one field, as at most four C-level tests: a
    set of exact values, a tuple of prefixes, a tuple of suffixes, and one
    regular expression for every substring and other wildcard pattern."""
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    subs: list[str] = []  # plain substrings: `in` beats a regex alternation of them
    searches: list[str] = []
    star = SpecialChars.WILDCARD_MULTI
    for s in strings:
        parts = s.s
        if any(isinstance(p, Placeholder) for p in parts):
            _pattern(parts, cased)  # raises, naming the placeholder
        norm = [p if not isinstance(p, str) or cased else p.lower() for p in parts]
        if not norm:
            exact.add("")
        elif all(p is star for p in norm):
            return costed(_on_text(field, lambda v: True, cased), 1)  # '*': any value
        elif len(norm) == 1 and isinstance(norm[0], str):
            exact.add(norm[0])
        elif len(norm) == 2 and isinstance(norm[0], str) and norm[1] is star:
            prefixes.append(norm[0])
        elif len(norm) == 2 and norm[0] is star and isinstance(norm[1], str):
            suffixes.append(norm[1])
        elif len(norm) == 3 and norm[0] is star and norm[2] is star and isinstance(norm[1], str):
            subs.append(norm[1])
        else:
            searches.append(rf"\A(?:{_pattern(parts, cased)})\Z")
    tests: list[TextTest] = []
    weight = 0
    if exact:
        tests.append(frozenset(exact).__contains__)
        weight += 1
    if prefixes:
        pre = tuple(prefixes)
        tests.append(lambda v: v.startswith(pre))
        weight += 1
    if suffixes:
        suf = tuple(suffixes)
        tests.append(lambda v: v.endswith(suf))
        weight += 1
    if subs:
        needles = tuple(subs)
        tests.append(lambda v: _contains_any(v, needles))
        weight += 2 + len(needles) // 4
    if searches:
        rx = re.compile("|".join(searches), re.DOTALL)
        tests.append(lambda v: rx.search(v) is not None)
        weight += 4
    weight += 20 if field is None else 0
    if field is not None and not cased:
        # One closure per kind of test, OR-linked: fuse() inlines them all.
        kinds = [
            _direct(field, "in", frozenset(exact)) if exact else None,
            _direct(field, "pre", tuple(prefixes)) if prefixes else None,
            _direct(field, "suf", tuple(suffixes)) if suffixes else None,
            _direct(field, "sub", tuple(subs)) if subs else None,
            _direct(field, "search", re.compile("|".join(searches), re.DOTALL).search)
            if searches else None,
        ]  # fmt: skip
        return costed(any_of([k for k in kinds if k is not None]), weight)
    return costed(_on_text(field, _any_text(tests), cased), weight)


def _contains_any(v: str, needles: tuple[str, ...]) -> bool:
    for needle in needles:
        if needle in v:
            return True
    return False


def _direct(field: str, kind: str, const: Any) -> Pred:
    """One kind of test on one lower-cased field, as a closure fuse() can inline."""
    if kind == "in":
        return shaped(lambda v, lo: lo.get(field) in const, kind, field, const)
    if kind == "pre":
        return shaped(
            lambda v, lo: (x := lo.get(field)) is not None and x.startswith(const),
            kind, field, const,
        )  # fmt: skip
    if kind == "suf":
        return shaped(
            lambda v, lo: (x := lo.get(field)) is not None and x.endswith(const), kind, field, const
        )
    if kind == "sub":
        return shaped(
            lambda v, lo: (x := lo.get(field)) is not None and _contains_any(x, const),
            kind, field, const,
        )  # fmt: skip
    return shaped(
        lambda v, lo: (x := lo.get(field)) is not None and const(x) is not None, kind, field, const
    )


def _any_text(tests: list[TextTest]) -> TextTest:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda v: a(v) or b(v)
    frozen = tuple(tests)

    def either(v: str) -> bool:
        for t in frozen:
            if t(v):
                return True
        return False

    return either


def _on_text(field: str | None, test: TextTest, cased: bool) -> Pred:
    """Apply a text test to one field (or, for keywords, to every field)."""
    if field is None:
        if cased:
            return lambda v, lo: any(test(str(x)) for x in v.values())
        return lambda v, lo: any(test(x) for x in lo.values())
    if cased:

        def cased_pred(v: Values, lo: Lowered) -> bool:
            x = v.get(field)
            return x is not None and test(x if isinstance(x, str) else str(x))

        return cased_pred

    def pred(v: Values, lo: Lowered) -> bool:
        x = lo.get(field)
        return x is not None and test(x)

    return pred


def _keyword(s: SigmaString) -> SigmaString:
    """Keywords are full-text search: a plain keyword matches anywhere in a field."""
    out = SigmaString()
    star = SpecialChars.WILDCARD_MULTI
    out.s = list(s.s)
    if not out.s or out.s[0] is not star:
        out.s.insert(0, star)
    if out.s[-1] is not star:
        out.s.append(star)
    return out


# -- other value types -----------------------------------------------------


def _regex(field: str | None, value: SigmaRegularExpression) -> Pred:
    flags = 0
    for flag in value.flags:
        flags |= _REGEX_FLAGS[flag]
    # to_plain(regex=True): the pattern as written (str() would escape ? and *).
    rx = re.compile(value.regexp.to_plain(regex=True), flags)
    return costed(_on_text(field, lambda v: rx.search(v) is not None, cased=True), 8)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value) if "." in value else int(value, 0)
        except ValueError:
            return None
    return None


def _numeric(field: str | None, test: Callable[[float], bool]) -> Pred:
    if field is None:
        raise Unsupported("numeric comparison without a field")

    def pred(v: Values, lo: Lowered) -> bool:
        n = _number(v.get(field))
        return n is not None and test(n)

    return pred


_COMPARE: dict[CompareOperators, Callable[[float, float], bool]] = {
    CompareOperators.LT: lambda a, b: a < b,
    CompareOperators.LTE: lambda a, b: a <= b,
    CompareOperators.GT: lambda a, b: a > b,
    CompareOperators.GTE: lambda a, b: a >= b,
    CompareOperators.NEQ: lambda a, b: a != b,
}


def _cidr(field: str | None, value: SigmaCIDRExpression) -> Pred:
    if field is None:
        raise Unsupported("cidr without a field")
    network = value.network

    def pred(v: Values, lo: Lowered) -> bool:
        x = v.get(field)
        try:
            return x is not None and ipaddress.ip_address(str(x)) in network
        except ValueError:
            return False

    return pred


def _bool(field: str | None, value: SigmaBool) -> Pred:
    if field is None:
        raise Unsupported("boolean keyword")
    want, text = bool(value.boolean), str(bool(value.boolean)).lower()
    return lambda v, lo: v.get(field) is want or lo.get(field) == text


def compile_values(field: str | None, values: list[SigmaType], linking: type) -> Pred:
    """The predicate of one detection item: its values OR-linked (or AND with |all)."""
    if linking is ConditionAND:
        return all_of([compile_values(field, [value], ConditionOR) for value in values])
    preds: list[Pred] = []
    by_case: dict[bool, list[SigmaString]] = {False: [], True: []}
    for value in values:
        if isinstance(value, SigmaExpansion):  # windash, base64offset: always OR-linked
            preds.append(compile_values(field, value.values, ConditionOR))
        elif isinstance(value, SigmaString):
            cased = isinstance(value, SigmaCasedString)
            by_case[cased].append(_keyword(value) if field is None else value)
        else:
            preds.append(compile_value(field, value))
    for cased, strings in by_case.items():
        if strings:
            preds.insert(0, _string_group(field, strings, cased))
    return any_of(preds)


def compile_value(field: str | None, value: SigmaType) -> Pred:
    """Every non-string value type."""
    if isinstance(value, SigmaRegularExpression):
        return _regex(field, value)
    if isinstance(value, SigmaNull):
        if field is None:
            raise Unsupported("null keyword")
        return lambda v, lo: lo.get(field, "") == ""
    if isinstance(value, SigmaExists):
        if field is None:
            raise Unsupported("exists without a field")
        want = bool(value.exists)
        return lambda v, lo: (field in v) == want
    if isinstance(value, SigmaBool):
        return _bool(field, value)
    if isinstance(value, SigmaCompareExpression):
        bound, op = value.number.number, _COMPARE[value.op]
        return _numeric(field, lambda n: op(n, bound))
    if isinstance(value, SigmaNumber):
        number, text = value.number, str(value.number)
        if field is None:
            return lambda v, lo: any(x == text for x in lo.values())
        return lambda v, lo: v.get(field) == number or lo.get(field) == text
    if isinstance(value, SigmaCIDRExpression):
        return _cidr(field, value)
    raise Unsupported(f"value type {type(value).__name__}")


class _Source:
    """Generated code for fuse(): constants and field lookups become names."""

    def __init__(self) -> None:
        self.consts: dict[str, Any] = {}
        self.fields: dict[str, str] = {}

    def const(self, obj: Any) -> str:
        name = f"_c{len(self.consts)}"
        self.consts[name] = obj
        return name

    def field(self, name: str) -> str:
        if name not in self.fields:
            self.fields[name] = f"_f{len(self.fields)}"
        return self.fields[name]

    def expr(self, pred: Pred) -> str:
        shape = _SHAPE.get(pred)
        if shape is None:
            return f"{self.const(pred)}(v, lo)"  # anything else: call its closure
        kind = shape[0]
        if kind in ("and", "or"):
            return "(" + f" {kind} ".join(self.expr(p) for p in shape[1]) + ")"
        if kind == "not":
            return f"(not {self.expr(shape[1])})"
        x = self.field(shape[1])
        if kind == "sub":  # inlined: `'a' in x or 'b' in x` with the needles as literals
            return f"({x} is not None and (" + " or ".join(f"{n!r} in {x}" for n in shape[2]) + "))"
        c = self.const(shape[2])
        test = {"in": f"{x} in {c}", "pre": f"{x}.startswith({c})",
                "suf": f"{x}.endswith({c})", "search": f"{c}({x}) is not None"}[kind]  # fmt: skip
        return f"({x} is not None and {test})"


def fuse(pred: Pred) -> Pred:
    """One generated function for a whole predicate tree: each field looked up
    once, the tests inlined, AND/OR as Python's own short-circuit operators.
    Same results as `pred` (which stays the fallback for what has no shape)."""
    if pred not in _SHAPE:
        return pred
    # Rule text reaches the generated code only through repr() (field names,
    # substrings) or as bound constants: a rule cannot inject code.
    src = _Source()
    body = src.expr(pred)
    lookups = "".join(f"    {name} = lo.get({field!r})\n" for field, name in src.fields.items())
    code = f"def _fused(v, lo):\n{lookups}    return {body}\n"
    namespace = dict(src.consts)
    try:
        exec(compile(code, "<sigma rule>", "exec"), namespace)
    except (SyntaxError, RecursionError, MemoryError):  # absurdly deep: keep the closures
        return pred
    fused: Pred = namespace["_fused"]
    return costed(fused, cost(pred))
