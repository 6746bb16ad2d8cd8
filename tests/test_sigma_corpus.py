"""Compatibility: the shared copy of SigmaHQ's Linux rules loads through pySigma.

Every rule compiles or is skipped with a reason; the loader never raises.
The corpus is read from ../shared/sigma beside the clone (never vendored).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from snoopbus.consumers.alert.loader import default_rules_dir, load_rules, rule_files

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "sigma" / "rules"
# Measured: 128 of 130 compile (the 2 OMIGOD rules need LogonId, which snoopbus
# events do not carry). A small margin for corpus refreshes; fewer is a regression.
MIN_LOADED = 125


def test_the_shared_corpus_loads() -> None:
    assert CORPUS.is_dir(), (
        f"SigmaHQ corpus missing at {CORPUS}: the tests expect shared/sigma/ beside the clone"
    )
    files = list(rule_files([CORPUS]))
    report = load_rules([CORPUS])
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

    assert CORPUS.is_dir(), f"SigmaHQ corpus missing at {CORPUS}"
    paths = [default_rules_dir(), CORPUS]
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
