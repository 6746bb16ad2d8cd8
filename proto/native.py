"""The guard of the optional C extensions (collector/native.py,
consumers/archive/native.py, consumers/pairing.py): each is built by `pip install` (setup.py)
where a C compiler is found. Where it is not, or where SNOOPBUS_NATIVE=0
turns it off, its module takes the pure-Python path (the same output,
slower) and says why in its log.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def optional_extension(name: str) -> tuple[ModuleType | None, str | None]:
    """The extension module `name` and None, or None and why it is not there
    (not built: no compiler at install time)."""
    try:
        return importlib.import_module(name), None
    except ImportError as exc:
        return None, f"not built ({exc})"


def disabled() -> bool:
    """SNOOPBUS_NATIVE=0: the pure-Python path everywhere, built or not (to rule
    the native code out when an event or a row looks wrong)."""
    return os.environ.get("SNOOPBUS_NATIVE", "1") == "0"
