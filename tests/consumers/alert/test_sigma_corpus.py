"""Compatibility: the shared copy of SigmaHQ's Linux rules loads through pySigma.

Every rule compiles or is skipped with a reason; the loader never raises.
The corpus: $SNOOPBUS_SIGMA_CORPUS or ../shared/sigma (tests/support/sigma_corpus.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from snoopbus.consumers.alert.loader import default_rules_dir, load_rules, rule_files
from tests.support import sigma_corpus
from tests.support.paths import ROOT

# Measured: 128 of 130 compile (the 2 OMIGOD rules need LogonId, which snoopbus
# events do not carry). A small margin for corpus refreshes; fewer is a regression.
MIN_LOADED = 125


def test_the_shared_corpus_loads() -> None:
    corpus = sigma_corpus.require()
    files = list(rule_files([corpus]))
    report = load_rules([corpus])
    print(f"\nSigma corpus: {len(files)} files, {len(report.rules)} rules loaded, "
          f"{len(report.skipped)} skipped")  # fmt: skip
    for skipped in report.skipped:
        print(f"  {skipped}")
    assert len(report.rules) + len(report.skipped) >= len(files)
    assert all(s.reason for s in report.skipped)
    assert len(report.rules) >= MIN_LOADED
    by_category = {r.category for r in report.rules}
    assert {"process_creation", "file_event"} <= by_category


def test_fused_matchers_agree_with_the_closures(monkeypatch: pytest.MonkeyPatch) -> None:
    """fuse() generates one function per rule from the closures' shapes: on the
    whole corpus and a realistic event mix, both must give the same hits."""
    from snoopbus.consumers.alert import matcher
    from snoopbus.consumers.alert.engine import Engine
    from tests.bench.alerter import make_events

    paths = [default_rules_dir(), sigma_corpus.require()]
    fused = Engine(load_rules(paths).rules)
    monkeypatch.setattr(matcher, "fuse", lambda pred: pred)
    plain = Engine(load_rules(paths).rules)
    assert any(r.match.__name__ == "_fused" for r in fused.rules)
    assert not any(r.match.__name__ == "_fused" for r in plain.rules)
    hits = 0
    for event in make_events(3000, seed=11):
        a = [(h.rule.id, h.selections) for h in fused.match(event)]
        assert a == [(h.rule.id, h.selections) for h in plain.match(event)], event
        hits += len(a)
    assert hits > 0


HERE = Path(__file__).resolve().relative_to(ROOT)  # this file, as pytest names it from the root
CORPUS_TESTS = (test_the_shared_corpus_loads, test_fused_matchers_agree_with_the_closures)


def _pytest_in_a_copy(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """pytest on this file in a copy of the repository's tests with nothing beside it
    (no ../shared), as a fresh clone has."""
    repo = ROOT
    copy = tmp_path / "clone"
    copy.mkdir()
    shutil.copy(repo / "pyproject.toml", copy)
    shutil.copytree(repo / "tests", copy / "tests",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if k not in (sigma_corpus.ENV, "CI")}
    return subprocess.run(
        # Only the two corpus tests, by id: never these two again (they would recurse).
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         *(f"{HERE}::{t.__name__}" for t in CORPUS_TESTS)],
        cwd=copy, env={**clean, **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_in_a_clone_without_the_corpus_the_tests_are_not_run_and_say_why(
    tmp_path: Path,
) -> None:
    out = _pytest_in_a_copy(tmp_path, {})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 skipped" in out.stdout and "SigmaHQ corpus not found" in out.stdout, out.stdout


def test_a_corpus_that_must_be_there_fails_when_missing(tmp_path: Path) -> None:
    out = _pytest_in_a_copy(tmp_path, {sigma_corpus.ENV: str(tmp_path / "no-such-corpus")})
    assert out.returncode == 1 and "2 failed" in out.stdout, out.stdout
