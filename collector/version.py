"""snoopbus's installed version: `--version`, and every collector meta report."""

from __future__ import annotations

from functools import cache
from importlib import metadata


@cache
def version() -> str:
    try:
        return metadata.version("snoopbus")
    except metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"
