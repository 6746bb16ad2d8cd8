"""What the collector knows about each live process, for attribution.

Filled from exec events and, at start-up, from a /proc scan, so events from
processes that started before the collector still name their program.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from snoopbus.collector.cgroups import CgroupIndex, container_id
from snoopbus.proto import text_from_kernel


@dataclass(slots=True)
class ProcInfo:
    exe: str | None
    argv: list[str] | None
    cwd: str | None
    container: str | None = None
    script: str | None = None  # a #! script the image runs (exe is its interpreter)

    def with_cwd(self, cwd: str) -> ProcInfo:
        """The same image in another directory (a new object: events.py caches
        proc maps by the identity of the ProcInfo they were built from)."""
        return ProcInfo(self.exe, self.argv, cwd, self.container, self.script)

    def copy(self) -> ProcInfo:
        return ProcInfo(self.exe, self.argv, self.cwd, self.container, self.script)


class ProcCache:
    def __init__(self, max_entries: int = 1 << 20, cgroups: CgroupIndex | None = None) -> None:
        self._procs: dict[int, ProcInfo] = {}
        # pid_max is at most 4M; the bound only guards against a leak of exits.
        self.max_entries = max_entries
        self.cgroups = cgroups
        self._containers: dict[int, str | None] = {}

    def container_of(self, cgroup_id: int) -> str | None:
        if self.cgroups is None or not cgroup_id:
            return None
        if cgroup_id not in self._containers:
            path = self.cgroups.path(cgroup_id)
            if path is None:
                return None  # not cached: a later scan may find it
            self._containers[cgroup_id] = container_id(path)
        return self._containers[cgroup_id]

    def lookup(self, pid: int, ppid: int, cgroup_id: int) -> ProcInfo | None:
        """What is known of pid; a child that forked without exec inherits its
        parent's entry (same image, same argv), remembered under its own pid."""
        info = self._procs.get(pid)
        if info is None:
            parent = self._procs.get(ppid)
            if parent is not None:
                info = parent.copy()
            else:
                info = read_proc(Path("/proc") / str(pid))  # started after our scan
                if info is None:
                    return None
            if info.container is None:
                info.container = self.container_of(cgroup_id)
            self.put(pid, info)
        return info

    def table(self) -> dict[int, ProcInfo]:
        """The live pid -> entry map, for the native builder's lookups of known
        processes (it asks lookup() about the others)."""
        return self._procs

    def __len__(self) -> int:
        return len(self._procs)

    def get(self, pid: int) -> ProcInfo | None:
        return self._procs.get(pid)

    def put(self, pid: int, info: ProcInfo) -> None:
        if len(self._procs) >= self.max_entries and pid not in self._procs:
            self._procs.pop(next(iter(self._procs)))  # oldest first
        self._procs[pid] = info

    def forked(self, parent: int, ppid: int, cgroup_id: int, child: int) -> None:
        """`child` was forked by `parent`: the same image, until it execs."""
        info = self.lookup(parent, ppid, cgroup_id)
        if info is not None:
            self.put(child, info.copy())

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
