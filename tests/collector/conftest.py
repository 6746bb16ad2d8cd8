"""Fixtures of the collector tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kernel import NOBODY


@pytest.fixture
def attic() -> Iterator[Path]:
    """A directory nobody owns, reachable by nobody (/tmp, not pytest's 0700 tree)."""
    d = Path(tempfile.mkdtemp(prefix="snoopbus-naming-", dir="/tmp"))
    os.chown(d, NOBODY.pw_uid, NOBODY.pw_gid)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
