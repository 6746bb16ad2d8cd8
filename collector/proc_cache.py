"""What the collector knows about each live process, for attribution.

Filled from exec events and, at start-up, from a /proc scan, so events from
processes that started before the collector still name their program.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from snoopbus.proto import text_from_kernel


@dataclass(slots=True)
class ProcInfo:
    exe: str | None
    argv: list[str] | None
    cwd: str | None


class ProcCache:
    def __init__(self, max_entries: int = 1 << 20) -> None:
        self._procs: dict[int, ProcInfo] = {}
        # pid_max is at most 4M; the bound only guards against a leak of exits.
        self.max_entries = max_entries

    def __len__(self) -> int:
        return len(self._procs)

    def get(self, pid: int) -> ProcInfo | None:
        return self._procs.get(pid)

    def put(self, pid: int, info: ProcInfo) -> None:
        if len(self._procs) >= self.max_entries and pid not in self._procs:
            self._procs.pop(next(iter(self._procs)))  # oldest first
        self._procs[pid] = info

    def pop(self, pid: int) -> ProcInfo | None:
        return self._procs.pop(pid, None)

    def scan(self, proc_root: Path = Path("/proc")) -> int:
        """Adds every process now running; returns how many were read."""
        count = 0
        for entry in os.scandir(proc_root):
            if entry.name.isdigit():
                info = read_proc(proc_root / entry.name)
                if info is not None:
                    self.put(int(entry.name), info)
                    count += 1
        return count


def read_proc(path: Path) -> ProcInfo | None:
    """One /proc/<pid>; None when it exited while we looked."""
    try:
        raw_argv = (path / "cmdline").read_bytes()
    except OSError:
        return None
    argv = [text_from_kernel(a) for a in raw_argv.split(b"\0")[:-1]] if raw_argv else None
    return ProcInfo(exe=_readlink(path / "exe"), argv=argv, cwd=_readlink(path / "cwd"))


def _readlink(path: Path) -> str | None:
    try:
        return text_from_kernel(os.readlink(os.fsencode(path)))
    except OSError:
        return None  # kernel threads have no exe; exited processes vanish
