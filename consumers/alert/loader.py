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
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaRuleLocation
from sigma.processing.pipeline import ProcessingPipeline
from sigma.rule import SigmaRule

from .correlate import Correlation, compile_correlation
from .fields import FieldMap, default_field_map
from .logsources import EVENT_TYPES, category_of
from .matcher import CompiledRule, UnmappedFields, compile_rule
from .values import Unsupported

log = logging.getLogger(__name__)

RULE_SUFFIXES = (".yml", ".yaml")


# Why a rule was skipped. The first four mean a rule that could apply to this
# stream will not run (`snoopbus rules check` exits 1 for them); the last two,
# that it was never meant for it (another product, or Sigma's `status: unsupported`).
INVALID = "invalid"  # not YAML, or not valid Sigma
UNMAPPED = "unmapped"  # reads fields the category's field map has no source for
UNSUPPORTED = "unsupported"  # a construct the matcher cannot evaluate
DUPLICATE = "duplicate"  # its id was loaded from another file first
LOGSOURCE = "logsource"  # a log source snoopbus does not produce
STATUS = "status"  # `status: unsupported`
PROBLEMS = (INVALID, UNMAPPED, UNSUPPORTED, DUPLICATE)


@dataclass(frozen=True)
class Skipped:
    source: str  # file path
    rule: str  # title (and id) when known, else ""
    reason: str
    kind: str = UNSUPPORTED
    unmapped: tuple[str, ...] = ()  # the fields, when kind is UNMAPPED

    @property
    def problem(self) -> bool:
        """A rule that could apply to this stream will not run."""
        return self.kind in PROBLEMS

    def __str__(self) -> str:
        what = f"rule {self.rule!r} in {self.source}" if self.rule else self.source
        return f"{what}: skipped: {self.reason}"


@dataclass
class LoadReport:
    rules: list[CompiledRule] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # from pySigma, with their file
    correlations: list[Correlation] = field(default_factory=list)

    @property
    def files(self) -> int:
        return len({r.source for r in self.rules} | {s.source for s in self.skipped}
                   | {c.source for c in self.correlations})  # fmt: skip


def default_rules_dir() -> Path:
    return Path(str(files("snoopbus.consumers.alert") / "rules"))


def resolve_paths(paths: Iterable[Path | str] | None) -> list[Path]:
    """Rule paths as given; `default` names the packaged set (unless a file of
    that name is there), so it can be combined: --rules default ~/sigma."""
    return [
        default_rules_dir() if str(p) == "default" and not Path(p).exists() else Path(p)
        for p in (paths or ["default"])
    ]


def rule_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in RULE_SUFFIXES)
        else:
            yield path


def load_rules(
    paths: Iterable[Path], field_map: FieldMap | None = None,
    pipeline: ProcessingPipeline | None = None,
) -> LoadReport:  # fmt: skip
    """Compile every rule under `paths` (files, or directories searched for *.yml),
    each through `pipeline` (the user's pySigma pipelines) first if given."""
    fmap = field_map or default_field_map()
    report = LoadReport()
    seen: dict[str, str] = {}  # rule id -> file that defined it first
    for path in rule_files(paths):
        for outcome in _load_file(path, fmap, report.warnings, pipeline):
            if isinstance(outcome, CompiledRule | Correlation):
                first = seen.setdefault(outcome.id, outcome.source)
                if first != outcome.source:
                    why = f"duplicate rule id {outcome.id} (first in {first})"
                    outcome = Skipped(outcome.source, _name(outcome.rule), why, DUPLICATE)
                elif isinstance(outcome, Correlation):
                    report.correlations.append(outcome)
                    continue
                else:
                    report.rules.append(outcome)
                    continue
            report.skipped.append(outcome)
            log.warning("%s", outcome)
    return report


def _load_file(
    path: Path, fmap: FieldMap, noted: list[str], pipeline: ProcessingPipeline | None
) -> list[CompiledRule | Correlation | Skipped]:
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
                # A correlation's base rules are looked up among this file's compiled
                # rules (_correlation): one missing must not fail the file's other rules.
                resolve_references=False,
            )
        except Exception as exc:  # a broken file must not stop the others
            why = " ".join(str(exc).split())  # YAML errors span lines; a log line should not
            return [Skipped(source, "", f"cannot parse: {type(exc).__name__}: {why}", INVALID)]
    out: list[CompiledRule | Correlation | Skipped] = []
    for w in caught:
        noted.append(f"{source}: pySigma: {w.message}")
        log.warning("%s", noted[-1])
    for error in collection.errors:
        if not any(error in getattr(r, "errors", ()) for r in collection.rules):
            out.append(Skipped(source, "", f"invalid: {error}", INVALID))
    for item in collection.filters:
        out.append(Skipped(source, str(item.title), "Sigma filters are not supported"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bases: dict[str, CompiledRule] = {}
        for rule in collection.rules:
            if isinstance(rule, SigmaRule):
                outcome = _compile(rule, source, fmap, pipeline)
                if isinstance(outcome, CompiledRule):
                    bases[outcome.id] = outcome
                    if rule.name:
                        bases[str(rule.name)] = outcome
                out.append(outcome)
        for rule in collection.rules:  # after the base rules they refer to
            if isinstance(rule, SigmaCorrelationRule):
                out.append(_correlation(rule, source, fmap, bases))
    for w in caught:
        noted.append(f"{source}: pySigma: {w.message}")
        log.warning("%s", noted[-1])
    return out


def _correlation(rule: SigmaCorrelationRule, source: str, fmap: FieldMap,
                 bases: dict[str, CompiledRule]) -> Correlation | Skipped:  # fmt: skip
    name = f"{rule.title} ({rule.id})" if rule.id else str(rule.title)
    known = {category: fmap.known(category) for category in EVENT_TYPES}
    try:
        return compile_correlation(rule, bases, known, source)
    except UnmappedFields as exc:
        return Skipped(source, name, f"unmapped: {exc}", UNMAPPED, exc.fields)
    except Unsupported as exc:
        return Skipped(source, name, f"unsupported: {exc}", UNSUPPORTED)


def _compile(
    rule: object, source: str, fmap: FieldMap, pipeline: ProcessingPipeline | None
) -> CompiledRule | Skipped:
    if not isinstance(rule, SigmaRule):
        kind = type(rule).__name__.removeprefix("Sigma")
        return Skipped(source, str(getattr(rule, "title", "")), f"{kind} is not supported")
    name = _name(rule)
    if rule.errors:
        return Skipped(source, name, f"invalid: {rule.errors[0]}", INVALID)
    if pipeline is not None:
        try:
            # A fresh pipeline per rule, as pySigma's backends make: it keeps per-rule state.
            (ProcessingPipeline() + pipeline).apply(rule)
        except Exception as exc:  # the user's pipeline on this rule: skip it, keep the rest
            why = f"pipeline: {type(exc).__name__}: {exc}"
            return Skipped(source, name, why, UNSUPPORTED)
    category, why = category_of(rule.logsource)
    if category is None:
        return Skipped(source, name, why, LOGSOURCE)
    if str(rule.status) == "unsupported":
        why = "status: unsupported (Sigma says it cannot be expressed)"
        return Skipped(source, name, why, STATUS)
    try:
        return compile_rule(rule, category, fmap.known(category), source)
    except UnmappedFields as exc:
        return Skipped(source, name, f"unmapped: {exc}", UNMAPPED, exc.fields)
    except Unsupported as exc:
        return Skipped(source, name, f"unsupported: {exc}")
    except Exception as exc:  # pySigma or a bug of ours: skip this rule, keep the rest
        return Skipped(source, name, f"cannot compile: {type(exc).__name__}: {exc}")


def _name(rule: SigmaRule | SigmaCorrelationRule) -> str:
    return f"{rule.title} ({rule.id})" if rule.id else str(rule.title)


def load_pipelines(paths: Iterable[Path]) -> ProcessingPipeline | None:
    """The user's pySigma pipeline files, in pySigma's priority order (ties: as
    given), as one; None for none. PipelineError names the file."""
    loaded: list[ProcessingPipeline] = []
    for path in paths:
        try:
            loaded.append(ProcessingPipeline.from_yaml(path.read_text(encoding="utf-8")))
        except Exception as exc:  # the file's YAML, pySigma's checks: one line either way
            why = str(exc) if exc.__context__ is None else f"{exc}: {exc.__context__}"
            raise PipelineError(f"--pipeline {path}: {' '.join(why.split())}") from None
    if not loaded:
        return None
    loaded.sort(key=lambda p: p.priority)  # stable: equal priorities stay in order given
    return sum(loaded, ProcessingPipeline())


class PipelineError(ValueError):
    pass
