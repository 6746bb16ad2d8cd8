"""After the probes are loaded, the collector gives up the capabilities it no
longer needs (capset(2) and the bounding set, through ctypes; no libcap).

What it still does after loading, and what that needs on Linux >= 6.5
(measured on this project's 6.18 machine, see tests/collector/test_privileges.py):

- poll the ring buffer (epoll on a map fd it holds, pages mmapped at load)
  and read the `lost`/`kstats` maps through their fds: no capability. Since
  6.5 only map and program *creation* check CAP_BPF; commands on an fd one
  already holds do not. So CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN go.
- read /proc/<pid>/exe and /proc/<pid>/cwd of other users' processes, to
  name the program of events from processes it had not seen exec:
  ptrace read access, so CAP_SYS_PTRACE stays (measured: EACCES without it).
- resolve the names of name-based calls (unlink("lnk/../q")) again after
  the fact, symlinks and all, in any user's directories (collector/resolve.py):
  searching directories and reading symlinks others may not, so
  CAP_DAC_READ_SEARCH stays (without it, a 0700 directory hides its symlinks
  and the decoy path would be reported).
- write its spill under a root-owned directory: ownership, no capability.

Kept: CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH. Also set: no_new_privs, and every other
capability leaves the bounding set, so nothing exec'd later regains them.
Capabilities are per thread, and a thread keeps those it had when created:
the agent drops in the loop's thread (which reads the ring buffer) before it
starts reading, replaces the loop's default executor (whose threads may
already exist, e.g. from resolving the NATS host name), and the metrics
server's thread, started before the load so /healthz answers during it,
calls follow() at every turn of its loop, before it starts request threads.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Iterable
from typing import Final

log = logging.getLogger(__name__)

CAP_DAC_READ_SEARCH: Final = 2
CAP_SETPCAP: Final = 8
CAP_SYS_PTRACE: Final = 19
CAP_SYS_ADMIN: Final = 21
CAP_PERFMON: Final = 38
CAP_BPF: Final = 39
KEEP_AFTER_LOAD: Final = frozenset({CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH})
KEEP_MASK: Final = sum(1 << c for c in KEEP_AFTER_LOAD)

_VERSION_3: Final = 0x20080522
_PR_CAPBSET_DROP: Final = 24
_PR_SET_NO_NEW_PRIVS: Final = 38
_PR_CAP_AMBIENT: Final = 47
_PR_CAP_AMBIENT_CLEAR_ALL: Final = 4


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)


def _last_cap() -> int:
    try:
        return int(open("/proc/sys/kernel/cap_last_cap").read())
    except OSError:
        return 40


def effective() -> int:
    """This thread's effective capability mask."""
    data = (_Data * 2)()
    if _libc.capget(ctypes.byref(_Header(_VERSION_3, 0)), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    low: int = data[0].effective  # ctypes fields read as Python ints
    high: int = data[1].effective
    return low | high << 32


# What drop_to kept, for threads that started before it to follow (follow()).
_kept: frozenset[int] | None = None


def follow() -> None:
    """In a thread that started before drop_to(): drop to what it kept, if it
    ran and this thread has more. A no-op otherwise (and in processes that
    never drop), so long-lived threads can call it at every turn."""
    kept = _kept
    if kept is not None and effective() != sum(1 << c for c in kept):
        _drop(kept)


def drop_to(keep: Iterable[int] = KEEP_AFTER_LOAD) -> int:
    """Keeps only `keep` (for this thread and the threads it starts later;
    threads already running do so at their next follow()); returns the
    effective mask now in force."""
    global _kept
    keep = frozenset(keep)
    now = _drop(keep)
    _kept = keep
    log.info("dropped privileges: keeping %s", ", ".join(_name(c) for c in sorted(keep)) or "none")
    return now


def _drop(keep: frozenset[int]) -> int:
    """Capabilities, the bounding set and no_new_privs are all per thread."""
    mask = sum(1 << c for c in keep)
    if effective() >> CAP_SETPCAP & 1:  # the bounding set first: that needs CAP_SETPCAP
        for cap in range(_last_cap() + 1):
            if cap not in keep:
                _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    data = (_Data * 2)()
    for i in (0, 1):
        part = mask >> (32 * i) & 0xFFFFFFFF
        data[i] = _Data(part, part, 0)
    if _libc.capset(ctypes.byref(_Header(_VERSION_3, 0)), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset failed: {os.strerror(err)}")
    _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    return effective()


def _name(cap: int) -> str:
    return {CAP_SYS_PTRACE: "CAP_SYS_PTRACE", CAP_DAC_READ_SEARCH: "CAP_DAC_READ_SEARCH",
            CAP_BPF: "CAP_BPF", CAP_PERFMON: "CAP_PERFMON",
            CAP_SYS_ADMIN: "CAP_SYS_ADMIN"}.get(cap, f"cap {cap}")
