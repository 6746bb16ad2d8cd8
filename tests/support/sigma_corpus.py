"""Where the tests find SigmaHQ's rules (never vendored): $SNOOPBUS_SIGMA_CORPUS,
else ../shared/sigma beside the clone; either the corpus folder or its rules/.

Without either, the tests that need it are reported as not run, with the
reason (a skip: `pytest -rs` lists it). Where the corpus must be there — the
variable is set, or $CI is — its absence fails them instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "SNOOPBUS_SIGMA_CORPUS"
BESIDE = Path(__file__).resolve().parents[3] / "shared" / "sigma"  # tests/support/ -> ../shared


def find() -> Path | None:
    given = os.environ.get(ENV, "")
    base = Path(given) if given else BESIDE
    rules = base / "rules" if (base / "rules").is_dir() else base
    return rules if rules.is_dir() else None


CORPUS = find()
MISSING = (
    f"SigmaHQ corpus not found: set ${ENV} to a copy of SigmaHQ's rules "
    f"(https://github.com/SigmaHQ/sigma), or put one at {BESIDE}"
)


def require() -> Path:
    """The corpus; else the calling test is not run (or fails where it must run)."""
    if CORPUS is not None:
        return CORPUS
    if os.environ.get(ENV) or os.environ.get("CI"):
        pytest.fail(f"{MISSING} (${ENV}={os.environ.get(ENV, '')!r}, $CI set: must run here)")
    pytest.skip(MISSING)
