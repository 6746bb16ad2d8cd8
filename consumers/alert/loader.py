"""Loading rule files: every rule either compiles or is skipped with a reason.

The loader never raises for a bad rule or file: it records a `Skipped`
(and logs one warning naming the rule and the construct) and carries on.
Warnings pySigma itself emits while parsing are recorded the same way,
never left to escape (callers may run with warnings as errors).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from sigma.collection import SigmaCollection
from sigma.exceptions import SigmaRuleLocation
from sigma.rule import SigmaRule

from .fields import FieldMap, default_field_map
from .logsources import category_of
from .matcher import CompiledRule, compile_rule
from .values import Unsupported

log = logging.getLogger(__name__)

RULE_SUFFIXES = (".yml", ".yaml")


@dataclass(frozen=True)
class Skipped:
    source: str  # file path
    rule: str  # title (and id) when known, else ""
    reason: str

    def __str__(self) -> str:
        what = f"rule {self.rule!r} in {self.source}" if self.rule else self.source
        return f"{what}: skipped: {self.reason}"


@dataclass
class LoadReport:
    rules: list[CompiledRule] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # from pySigma, with their file

    @property
    def files(self) -> int:
        return len({r.source for r in self.rules} | {s.source for s in self.skipped})


def default_rules_dir() -> Path:
    return Path(str(files("snoopbus.consumers.alert") / "rules"))


def rule_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in RULE_SUFFIXES)
        else:
            yield path


def load_rules(paths: Iterable[Path], field_map: FieldMap | None = None) -> LoadReport:
    """Compile every rule under `paths` (files, or directories searched for *.yml)."""
    fmap = field_map or default_field_map()
    report = LoadReport()
    seen: dict[str, str] = {}  # rule id -> file that defined it first
    for path in rule_files(paths):
        for outcome in _load_file(path, fmap, report.warnings):
            if isinstance(outcome, CompiledRule):
                first = seen.setdefault(outcome.id, outcome.source)
                if first != outcome.source:
                    why = f"duplicate rule id {outcome.id} (first in {first})"
                    outcome = Skipped(outcome.source, _name(outcome.rule), why)
                else:
                    report.rules.append(outcome)
                    continue
            report.skipped.append(outcome)
            log.warning("%s", outcome)
    return report


def _load_file(path: Path, fmap: FieldMap, noted: list[str]) -> list[CompiledRule | Skipped]:
    source = str(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            text = path.read_text(encoding="utf-8")
            collection = SigmaCollection.from_yaml(
                text,
                collect_errors=True,
                source=SigmaRuleLocation(path),
                collect_filters=True,
                resolve_references=False,  # correlations are skipped: nothing to resolve
            )
        except Exception as exc:  # a broken file must not stop the others
            why = " ".join(str(exc).split())  # YAML errors span lines; a log line should not
            return [Skipped(source, "", f"cannot parse: {type(exc).__name__}: {why}")]
    out: list[CompiledRule | Skipped] = []
    for w in caught:
        noted.append(f"{source}: pySigma: {w.message}")
        log.warning("%s", noted[-1])
    for error in collection.errors:
        if not any(error in getattr(r, "errors", ()) for r in collection.rules):
            out.append(Skipped(source, "", f"invalid: {error}"))
    for item in collection.filters:
        out.append(Skipped(source, str(item.title), "Sigma filters are not supported"))
    for rule in collection.rules:
        out.append(_compile(rule, source, fmap))
    return out


def _compile(rule: object, source: str, fmap: FieldMap) -> CompiledRule | Skipped:
    if not isinstance(rule, SigmaRule):
        kind = type(rule).__name__.removeprefix("Sigma")
        return Skipped(source, str(getattr(rule, "title", "")), f"{kind} is not supported")
    name = _name(rule)
    if rule.errors:
        return Skipped(source, name, f"invalid: {rule.errors[0]}")
    category, why = category_of(rule.logsource)
    if category is None:
        return Skipped(source, name, why)
    if str(rule.status) == "unsupported":
        return Skipped(source, name, "status: unsupported (Sigma says it cannot be expressed)")
    try:
        return compile_rule(rule, category, fmap.fields(category), source)
    except Unsupported as exc:
        return Skipped(source, name, f"unsupported: {exc}")
    except Exception as exc:  # pySigma or a bug of ours: skip this rule, keep the rest
        return Skipped(source, name, f"cannot compile: {type(exc).__name__}: {exc}")


def _name(rule: SigmaRule) -> str:
    return f"{rule.title} ({rule.id})" if rule.id else str(rule.title)
