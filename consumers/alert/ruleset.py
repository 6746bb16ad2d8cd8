"""The rules an alerter matches with, loaded whole, and the check a reload must pass.

A reload (SIGHUP) builds a new `RuleSet` off the event loop and the consumer
swaps it in between batches: every event is matched by exactly one set, the
old or the new. A new set that is worse than the one in use — a rule file
that no longer loads, fields it cannot map, no rule at all, a bad field map —
is refused with the reasons, and the old set stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .engine import Engine
from .fields import FieldMap, FieldMapError, default_field_map, load_field_map
from .loader import LoadReport, PipelineError, Skipped, load_pipelines, load_rules


class RuleSetError(ValueError):
    """Why a rule set cannot be used (the first load fails; a reload is refused)."""


@dataclass(frozen=True)
class RuleSet:
    paths: tuple[Path, ...]
    field_map: FieldMap
    report: LoadReport
    engine: Engine

    @property
    def ids(self) -> set[str]:
        return {r.id for r in self.report.rules}


def load(paths: Sequence[Path], field_map: FieldMap | None = None,
         field_map_file: Path | None = None, pipelines: Sequence[Path] = (),
         ) -> tuple[LoadReport, FieldMap]:  # fmt: skip
    """Load and compile each rule (skips reported, not raised), through the
    user's pySigma `pipelines` first. `field_map_file` and the pipelines are
    read again each time (a reload sees their edits); else `field_map`, else
    the default. RuleSetError: a path that does not exist, a bad field map or
    pipeline."""
    missing = [str(p) for p in [*paths, *pipelines] if not p.exists()]
    if missing:
        raise RuleSetError(f"no such file or folder: {', '.join(missing)}")
    if field_map_file is not None:
        try:
            field_map = load_field_map(field_map_file)
        except (FieldMapError, OSError) as exc:
            raise RuleSetError(f"--field-map: {exc}") from None
    fmap = field_map or default_field_map()
    try:
        pipeline = load_pipelines(pipelines)
    except PipelineError as exc:
        raise RuleSetError(str(exc)) from None
    return load_rules(paths, fmap, pipeline), fmap


def build(paths: Sequence[Path], field_map: FieldMap | None = None,
          field_map_file: Path | None = None, pipelines: Sequence[Path] = ()) -> RuleSet:
    """load(), and the engine; RuleSetError also when no rule loads."""
    report, fmap = load(paths, field_map, field_map_file, pipelines)
    if not report.rules:
        raise RuleSetError(f"no rule loaded from {', '.join(map(str, paths))} "
                           f"({len(report.skipped)} skipped)")  # fmt: skip
    engine = Engine(report.rules, fmap, report.correlations)
    return RuleSet(tuple(paths), fmap, report, engine)


def _problem_key(s: Skipped) -> tuple[str, str, str]:
    return (s.source, s.rule, s.reason)


def new_problems(old: RuleSet, new: RuleSet) -> list[Skipped]:
    """Rules that could apply and will not run in `new`, and did not fail in
    `old` too (a corpus with two rules needing an unmapped field reloads)."""
    before = {_problem_key(s) for s in old.report.skipped if s.problem}
    return [s for s in new.report.skipped if s.problem and _problem_key(s) not in before]


def changes(old: RuleSet, new: RuleSet) -> str:
    """`3 added, 1 removed` for the log line of a reload."""
    added, removed = len(new.ids - old.ids), len(old.ids - new.ids)
    return f"{added} added, {removed} removed"
