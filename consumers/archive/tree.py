"""`snoopbus query --tree PID`: the process around PID, from the archive alone.

Ancestors are followed through `proc_ppid`, descendants through events whose
`proc_ppid` is a known pid. A pid is reused over time, so the tree is built
within the query's time range and one host (give --host when several hosts
have the pid). Each process shows its command (argv of its exec, else exe or
comm) and its file activity: counts by type and the first few paths.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .query import Filters, QueryError
from .render import command, iso_ns, shown

Select = Callable[[Filters], list[dict[str, Any]]]
MAX_ANCESTORS = 32
MAX_DEPTH = 6
MAX_PROCESSES = 500
PATHS_SHOWN = 5


@dataclass
class Process:
    pid: int
    ppid: int | None = None
    row: dict[str, Any] | None = None  # its exec if seen, else its first event
    first_ts: int | None = None
    files: Counter[str] = field(default_factory=Counter)
    paths: list[str] = field(default_factory=list)
    children: list[int] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        if self.first_ts is None or row["ts"] < self.first_ts:
            self.first_ts = row["ts"]
        if row.get("type") == "exec" or self.row is None:
            self.row = row  # rows come in time order: the latest exec names it
        if row.get("proc_ppid") is not None:
            self.ppid = row["proc_ppid"]
        if row.get("file_path") is not None:
            self.files[row["type"]] += 1
            path = shown(row["file_path"])
            if path not in self.paths and len(self.paths) < PATHS_SHOWN:
                self.paths.append(path)


def _gather(select: Select, base: Filters, pids: list[int], procs: dict[int, Process]) -> None:
    for row in select(replace(base, pids=tuple(pids))):
        procs.setdefault(row["proc_pid"], Process(row["proc_pid"])).add(row)


def build(select: Select, pid: int, base: Filters) -> tuple[dict[int, Process], int]:
    """The processes around `pid` and the root pid of the tree."""
    first = select(replace(base, pids=(pid,)))
    if not first:
        raise QueryError(f"no events of pid {pid} in the archive for this range")
    hosts = sorted({r["host"] for r in first})
    if len(hosts) > 1:
        raise QueryError(f"pid {pid} appears on several hosts ({', '.join(hosts)}): give --host")
    base = replace(base, hosts=(hosts[0],))
    procs: dict[int, Process] = {pid: Process(pid)}
    for row in first:
        procs[pid].add(row)
    # Up: each parent's own events.
    top, seen = pid, {pid}
    for _ in range(MAX_ANCESTORS):
        parent = procs[top].ppid
        if parent is None or parent in seen or parent <= 0:
            break
        seen.add(parent)
        procs.setdefault(parent, Process(parent))
        _gather(select, base, [parent], procs)
        procs[parent].children.append(top)
        top = parent
    # Down: events whose parent is a pid of the level above.
    level = [pid]
    for _ in range(MAX_DEPTH):
        kids: list[int] = []
        for row in select(replace(base, pids=(), ppids=tuple(level))):
            child = row["proc_pid"]
            if child in seen or child == row.get("proc_ppid"):
                if child in procs:
                    procs[child].add(row)
                continue
            seen.add(child)
            procs.setdefault(child, Process(child)).add(row)
            kids.append(child)
        if not kids or len(procs) > MAX_PROCESSES:
            break
        _gather(select, base, kids, procs)  # their file activity
        for child in kids:
            parent = procs[child].ppid
            if parent in procs and child not in procs[parent].children:
                procs[parent].children.append(child)
        level = kids
    return procs, top


def render(procs: dict[int, Process], top: int, target: int) -> list[str]:
    lines: list[str] = []

    def walk(pid: int, prefix: str, last: bool, depth: int) -> None:
        p = procs[pid]
        branch = "" if depth == 0 else ("└─ " if last else "├─ ")
        when = f"  [{iso_ns(p.first_ts)}]" if p.first_ts is not None else ""
        cmd = command(p.row) if p.row else "(no events)"
        mark = "   <==" if pid == target else ""
        lines.append(f"{prefix}{branch}{pid}  {cmd}{when}{mark}")
        inner = prefix + ("" if depth == 0 else ("   " if last else "│  "))
        if p.files:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(p.files.items()))
            lines.append(f"{inner}   files: {counts}: {', '.join(p.paths)}"
                         + (" ..." if sum(p.files.values()) > len(p.paths) else ""))
        kids = sorted(p.children, key=lambda c: (procs[c].first_ts or 0, c))
        for i, child in enumerate(kids):
            walk(child, inner, i == len(kids) - 1, depth + 1)

    walk(top, "", True, 0)
    return lines
