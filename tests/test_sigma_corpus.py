"""Compatibility: the shared copy of SigmaHQ's Linux rules loads through pySigma.

Every rule compiles or is skipped with a reason; the loader never raises.
The corpus is read from ../shared/sigma beside the clone (never vendored).
"""

from __future__ import annotations

from pathlib import Path

from snoopbus.consumers.alert.loader import load_rules, rule_files

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
