"""Which rules an event could match, found without running them all.

From each rule's predicate tree (the shapes values.py records) comes a
necessary condition: tests on lower-cased fields (value in a set, starts
with, ends with, contains) at least one of which holds whenever the rule
matches. An AND needs any one of its children's (the cheapest is kept), an
OR all of its children's, and a NOT, a regular expression, a number or a
keyword search none: a rule without one runs on every event. The others run
only when one of their tests may hold, which the index finds by dict lookups
(whole values, the last path component, the first and last few characters)
and one Aho-Corasick scan per field for substrings. The rule itself still
decides: the index only skips rules that cannot match, so hits are the same.

Most SigmaHQ Linux rules need an `Image|endswith` or a `CommandLine|contains`:
on an ordinary exec, a handful of 125 process_creation rules run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ahocorasick_rs

from .values import Lowered, Pred, shape_of

# A test on one lower-cased field: (kind, field, constant); kind: in, pre, suf, sub.
Atom = tuple[str, str, str]
_WEIGHT = {"in": 1, "pre": 2, "suf": 2, "sub": 4}  # lookups are cheaper than scans


def necessary(pred: Pred) -> list[Atom] | None:
    """Tests one of which holds whenever `pred` does; None if there are none."""
    shape = shape_of(pred)
    if shape is None:
        return None
    kind = shape[0]
    if kind == "and":
        options = [n for n in map(necessary, shape[1]) if n is not None]
        return min(options, key=_cost) if options else None
    if kind == "or":
        out: list[Atom] = []
        for child in shape[1]:
            n = necessary(child)
            if n is None:
                return None
            out += n
        return out
    if kind in ("in", "pre", "suf", "sub"):
        consts = shape[2]
        if kind != "in" and "" in consts:
            return None  # holds for any value the field has
        return [(kind, shape[1], c) for c in consts]
    return None  # not, search (wildcard patterns), closures without a shape


def _cost(atoms: list[Atom]) -> int:
    return sum(_WEIGHT[kind] for kind, _, _ in atoms)


@dataclass
class _Field:
    """The tests of one field, by how they are looked up. Affixes are looked up
    by their first (last) `width` characters, the length of the shortest: one
    lookup finds every rule whose affix could be there, and a few more."""

    exact: dict[str, set[int]] = field(default_factory=dict)
    tails: dict[str, set[int]] = field(default_factory=dict)  # "/name" suffixes
    suffixes: dict[str, set[int]] = field(default_factory=dict)  # by their last chars
    prefixes: dict[str, set[int]] = field(default_factory=dict)  # by their first chars
    needles: dict[str, set[int]] = field(default_factory=dict)  # substrings
    suffix_width: int = 0
    prefix_width: int = 0
    scanner: Any = None
    needle_rules: list[set[int]] = field(default_factory=list)  # by needle index
    _affixes: list[tuple[str, str, int]] = field(default_factory=list)

    def add(self, kind: str, const: str, rule: int) -> None:
        if kind == "in":
            self.exact.setdefault(const, set()).add(rule)
        elif kind == "suf" and const.startswith("/") and "/" not in const[1:]:
            self.tails.setdefault(const, set()).add(rule)
        elif kind in ("pre", "suf"):
            self._affixes.append((kind, const, rule))
        else:
            self.needles.setdefault(const, set()).add(rule)

    def seal(self) -> None:
        for kind in ("pre", "suf"):
            consts = [(c, r) for k, c, r in self._affixes if k == kind]
            if not consts:
                continue
            width = min(len(c) for c, _ in consts)
            table = self.prefixes if kind == "pre" else self.suffixes
            for const, rule in consts:
                key = const[:width] if kind == "pre" else const[-width:]
                table.setdefault(key, set()).add(rule)
            if kind == "pre":
                self.prefix_width = width
            else:
                self.suffix_width = width
        if self.needles:
            words = list(self.needles)
            try:
                self.scanner = ahocorasick_rs.AhoCorasick(words)
            except UnicodeEncodeError:  # a needle with a lone surrogate: the plain loop
                self.scanner = None
            self.needle_rules = [self.needles[w] for w in words]

    def find(self, value: str, out: set[int]) -> None:
        """Add to `out` every rule one of whose tests `value` may pass."""
        hit = self.exact.get(value)
        if hit:
            out |= hit
        if self.tails:
            i = value.rfind("/")
            if i >= 0 and (hit := self.tails.get(value[i:])):
                out |= hit
        if self.suffixes and (hit := self.suffixes.get(value[-self.suffix_width:])):
            out |= hit
        if self.prefixes and (hit := self.prefixes.get(value[: self.prefix_width])):
            out |= hit
        if self.needles:
            found: list[tuple[int, int, int]] | None = None
            if self.scanner is not None:
                try:
                    found = self.scanner.find_matches_as_indexes(value, overlapping=True)
                except UnicodeEncodeError:  # text that is not UTF-8 (lone surrogates)
                    pass
            if found is None:
                found = [(i, 0, 0) for i, w in enumerate(self.needles) if w in value]
            rules = self.needle_rules
            for i, _, _ in found:
                out |= rules[i]


class RuleIndex:
    """The rules of one category (by position) an event's record could match."""

    def __init__(self, conditions: Sequence[Iterable[Atom] | None]) -> None:
        self.always: set[int] = set()
        self.fields: dict[str, _Field] = {}
        for i, atoms in enumerate(conditions):
            if atoms is None:
                self.always.add(i)
                continue
            for kind, name, const in atoms:
                self.fields.setdefault(name, _Field()).add(kind, const, i)
        for f in self.fields.values():
            f.seal()
        self._fields = tuple(self.fields.items())

    def candidates(self, low: Lowered) -> list[int]:
        """Positions of the rules to run, in order."""
        out = set(self.always)
        for name, f in self._fields:
            value = low.get(name)
            if value is not None:
                f.find(value, out)
        return sorted(out)
