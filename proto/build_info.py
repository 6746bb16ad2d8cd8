"""What this process is built from: snoopbus's version, Python's, the kernel's.

`snoopbus --version` prints the first; every /metrics serves all three as
`snoopbus_build_info` (proto/metric_names.py).
"""

from __future__ import annotations

import os
import platform
from importlib import metadata


def version() -> str:
    try:
        return metadata.version("snoopbus")
    except metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


def labels(component: str) -> dict[str, str]:
    """The build_info labels of one process; component: collector, consumer or up."""
    return {
        "version": version(),
        "python": platform.python_version(),
        "kernel": os.uname().release,
        "component": component,
    }
