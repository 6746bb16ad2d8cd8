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


def any_of(preds: Sequence[Pred]) -> Pred:
    preds = tuple(preds)
    if not preds:
        return never
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda v, lo: a(v, lo) or b(v, lo)
    return lambda v, lo: any(p(v, lo) for p in preds)


def all_of(preds: Sequence[Pred]) -> Pred:
    preds = tuple(preds)
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda v, lo: a(v, lo) and b(v, lo)
    return lambda v, lo: all(p(v, lo) for p in preds)


def not_(pred: Pred) -> Pred:
    return lambda v, lo: not pred(v, lo)


# -- strings ---------------------------------------------------------------


def _text_test(s: SigmaString, cased: bool) -> TextTest:
    """The cheapest test for one wildcard pattern: equality, prefix, suffix,
    substring, or (for anything else) a compiled regular expression."""
    parts: list[str | SpecialChars] = []
    for part in s.s:
        if isinstance(part, Placeholder):
            raise Unsupported(f"placeholder %{part.name}% (needs a processing pipeline)")
        if isinstance(part, str):
            parts.append(part if cased else part.lower())
        else:
            parts.append(part)
    star = SpecialChars.WILDCARD_MULTI
    plain = [p for p in parts if isinstance(p, str)]
    specials = [p for p in parts if not isinstance(p, str)]
    if not specials:
        text = "".join(plain)
        return text.__eq__
    if all(p is star for p in specials) and len(plain) <= 1:
        text = plain[0] if plain else ""
        shape = tuple(p is star for p in parts)
        if shape in ((True,), (True, True)):
            return lambda v: True
        if shape == (False, True):
            return lambda v: v.startswith(text)
        if shape == (True, False):
            return lambda v: v.endswith(text)
        if shape == (True, False, True):
            return lambda v: text in v
    body = "".join(
        re.escape(p) if isinstance(p, str) else (".*" if p is star else ".") for p in parts
    )
    rx = re.compile(body, re.DOTALL)
    return lambda v: rx.fullmatch(v) is not None


def _string_group(field: str | None, strings: list[SigmaString], cased: bool) -> Pred:
    """OR over several patterns on one field, with exact/prefix/suffix values
    merged into one set or tuple test."""
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    others: list[TextTest] = []
    star = SpecialChars.WILDCARD_MULTI
    for s in strings:
        parts = s.s
        norm = [p if not isinstance(p, str) or cased else p.lower() for p in parts]
        if len(norm) == 1 and isinstance(norm[0], str):
            exact.add(norm[0])
        elif len(norm) == 2 and isinstance(norm[0], str) and norm[1] is star:
            prefixes.append(norm[0])
        elif len(norm) == 2 and norm[0] is star and isinstance(norm[1], str):
            suffixes.append(norm[1])
        else:
            others.append(_text_test(s, cased))
    tests: list[TextTest] = []
    if exact:
        frozen = frozenset(exact)
        tests.append(frozen.__contains__)
    if prefixes:
        pre = tuple(prefixes)
        tests.append(lambda v: v.startswith(pre))
    if suffixes:
        suf = tuple(suffixes)
        tests.append(lambda v: v.endswith(suf))
    tests.extend(others)
    test = _any_text(tests)
    return _on_text(field, test, cased)


def _any_text(tests: list[TextTest]) -> TextTest:
    if len(tests) == 1:
        return tests[0]
    frozen = tuple(tests)
    return lambda v: any(t(v) for t in frozen)


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
    return _on_text(field, lambda v: rx.search(v) is not None, cased=True)


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
