"""The native hot path (collector/fastbuild.c), when this install has it.

It turns the common file records (one path or a plain rename, named by the
kernel's own dentries) straight into msgpack-encoded events, about five times
faster than the Python builder; every other record goes through the Python
builder, in order. It is built by `pip install` (setup.py) where a C compiler
is found. Without it, or when its record layout is not records.py's, the
collector runs the Python path for everything: the same events, slower. Which
one runs is said once in the log, in `snoopbus doctor` and in the
snoopbus_native_build metric (collector/metrics.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from snoopbus.collector import paths
from snoopbus.collector import records as R
from snoopbus.proto import SCHEMA_VERSION
from snoopbus.proto.native import disabled, optional_extension

log = logging.getLogger(__name__)

_fastbuild, MISSING = optional_extension("snoopbus.collector._fastbuild")

# The event types fastbuild.c makes, in the order it takes their subjects.
TYPES: Final = ("open", "create", "modify", "close_write", "delete", "attrib", "mkdir",
                "rmdir", "moved_from", "moved_to")
_said = False


def layout(noted_nrs: frozenset[int], rename_whiteout: int, last: dict[int, Any], last_max: int,
           not_file_kinds: tuple[int, ...]) -> dict[str, Any]:
    """What fastbuild.c needs of records.py: the formats it checks against its
    own, and the kind and flag numbers it uses."""
    kinds = {name: kind for kind, name in R.FILE_KIND_NAMES.items()
             if name in TYPES or name == "rename"}
    kinds["attrib"] = R.KIND_ATTRIB  # KIND_XATTR is attrib too, but not one it takes
    return {
        "hdr_format": R.HDR.format,
        "tail_format": R.FILE_TAIL.format,
        "version": SCHEMA_VERSION,
        "kinds": kinds,
        "F_PATH_TRUNC": R.F_PATH_TRUNC,
        "F_PATH2_TRUNC": R.F_PATH2_TRUNC,
        "F_FD_GONE": R.F_FD_GONE,
        "F_NO_RET": R.F_NO_RET,
        "F_EXCHANGE": R.F_EXCHANGE,
        # The flags it takes records with; a record with any other (what closed
        # a file, O_TMPFILE, io_uring, a flag added later) is the Python builder's.
        "known_flags": (R.F_PATH_TRUNC | R.F_PATH2_TRUNC | R.F_FD_GONE | R.F_NO_RET
                        | R.F_EXCHANGE | R.F_TOUCHED),
        "RENAME_WHITEOUT": rename_whiteout,
        "noted_nrs": sorted(noted_nrs),
        "truncated": paths.TRUNCATED,
        # EventBuilder._last: tid -> its last file record, kept by the builder
        # for repeat records (at most last_max threads; not those kinds).
        "last": last,
        "last_max": last_max,
        "not_file_kinds": tuple(not_file_kinds),
    }


def status() -> str:
    """One line for the log and `snoopbus doctor`."""
    if _fastbuild is None:
        return f"native event builder: {MISSING}; the Python builder makes every event"
    if disabled():
        return "native event builder: built, off (SNOOPBUS_NATIVE=0); the Python builder " \
               "makes every event"
    return "native event builder: built (collector/fastbuild.c)"


def make(
    host: str, instance: str, subjects: tuple[str, ...], procs: dict[int, Any],
    proc_section: Callable[[bytes], tuple[Any, bytes]],
    path_filter: Callable[[bytes], bool] | None, host_ns: int | None,
    noted_nrs: frozenset[int], rename_whiteout: int, last: dict[int, Any],
    last_max: int, not_file_kinds: tuple[int, ...],
) -> Any | None:
    """A native builder, or None (said once in the log) where there is none."""
    global _said
    if _fastbuild is None or disabled():
        if not _said:
            log.info("%s", status())
            _said = True
        return None
    try:
        built = _fastbuild.Builder(
            layout(noted_nrs, rename_whiteout, last, last_max, not_file_kinds), host, instance,
            subjects, procs, proc_section,
            path_filter, -1 if host_ns is None else host_ns,
        )
    except (ValueError, TypeError, KeyError) as exc:  # a layout it does not read
        if not _said:
            log.warning("native event builder not used (the Python path makes every event): %s",
                        exc)
            _said = True
        return None
    if not _said:
        log.info("%s", status())
        _said = True
    return built
