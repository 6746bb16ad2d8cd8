"""Import BCC's Python module, which Debian installs for the system Python only.

BCC's module is pure Python over libbcc.so, so it works from any CPython 3:
when `import bcc` fails, load it from Debian's dist-packages by file path
without putting that whole folder (built for another interpreter) on sys.path.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SYSTEM_BCC = Path("/usr/lib/python3/dist-packages/bcc")


class BccUnavailable(RuntimeError):
    pass


def import_bcc() -> ModuleType:
    try:
        import bcc

        module: ModuleType = bcc  # untyped: mypy sees Any
        return module
    except ImportError:
        pass
    init = SYSTEM_BCC / "__init__.py"
    if not init.is_file():
        raise BccUnavailable(
            "BCC's Python module is not installed: run `make up` (or as root: "
            "apt-get install python3-bpfcc)"
        )
    spec = importlib.util.spec_from_file_location(
        "bcc", init, submodule_search_locations=[str(SYSTEM_BCC)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bcc"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # libbcc.so missing or broken
        del sys.modules["bcc"]
        raise BccUnavailable(f"BCC failed to load from {SYSTEM_BCC}: {exc}") from exc
    return module
