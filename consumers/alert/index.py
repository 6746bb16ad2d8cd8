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

from collections.abc import Callable, Iterable, Sequence
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

    def code(self, x: str, n: int, consts: dict[str, Any]) -> list[str]:
        """Lines (at one indent) adding to `found` the rules whose tests the
        value in variable `x` may pass; their constants go into `consts`."""
        lines: list[str] = []

        def hit(table: dict[str, set[int]], key: str) -> None:
            name = f"_t{n}_{len(consts)}"
            consts[name] = {k: frozenset(v) for k, v in table.items()}
            lines.append(f"h = {name}.get({key})")
            lines.append("if h is not None: found = h if found is None else found | h")

        if self.exact:
            hit(self.exact, x)
        if self.tails:
            lines.append(f"i = {x}.rfind('/')")
            lines.append("if i >= 0:")
            before = len(lines)
            hit(self.tails, f"{x}[i:]")
            lines[before:] = ["    " + line for line in lines[before:]]
        if self.suffixes:
            hit(self.suffixes, f"{x}[-{self.suffix_width}:]")
        if self.prefixes:
            hit(self.prefixes, f"{x}[:{self.prefix_width}]")
        if len(self.needles) <= _INLINE_NEEDLES:
            for needle, rules in self.needles.items():
                name = f"_n{n}_{len(consts)}"
                consts[name] = frozenset(rules)
                # The needle reaches the code only through repr(): a rule cannot inject code.
                lines.append(f"if {needle!r} in {x}: "
                             f"found = {name} if found is None else found | {name}")  # fmt: skip
        else:
            scan, by_word, words = f"_ac{n}", f"_r{n}", f"_w{n}"
            consts[scan] = _scan(self.scanner)
            consts[by_word] = [frozenset(r) for r in self.needle_rules]
            consts[words] = list(self.needles)
            lines += [
                f"for i in {scan}({x}, {words}):",
                f"    found = {by_word}[i] if found is None else found | {by_word}[i]",
            ]
        return lines


# Up to this many substrings are tested one by one; more take one Aho-Corasick scan.
_INLINE_NEEDLES = 8


def _scan(scanner: Any) -> Any:
    """Indexes of the needles found in a value (overlapping ones included)."""

    def scan(value: str, words: list[str]) -> list[int]:
        if scanner is not None:
            try:
                return [i for i, _, _ in scanner.find_matches_as_indexes(value, overlapping=True)]
            except UnicodeEncodeError:  # text that is not UTF-8 (lone surrogates)
                pass
        return [i for i, w in enumerate(words) if w in value]

    return scan


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
        self.candidates = self._generate()

    def _generate(self) -> Callable[[Lowered], list[int]]:
        """candidates(low): positions of the rules to run, in order. Generated
        code, the lookups of every field inline (as fuse() does for rules)."""
        consts: dict[str, Any] = {
            "_always": tuple(sorted(self.always)), "_always_set": frozenset(self.always),
        }  # fmt: skip
        lines = ["def candidates(lo):", "    found = None"]
        for n, (name, f) in enumerate(self.fields.items()):
            lines.append(f"    x = lo.get({name!r})")
            lines.append("    if x is not None:")
            lines += ["        " + line for line in f.code("x", n, consts)]
        lines += [
            "    if found is None:",
            "        return _always",
            "    return sorted(found | _always_set)",
        ]
        namespace = dict(consts)
        exec(compile("\n".join(lines) + "\n", "<sigma index>", "exec"), namespace)
        candidates: Callable[[Lowered], list[int]] = namespace["candidates"]
        return candidates
