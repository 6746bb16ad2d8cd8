"""What a dead `snoopbus up` leaves behind, and how its children die with it.

Children run in sessions of their own (a terminal's Ctrl-C must reach only
`up`), so nothing stops them when `up` itself is killed (SIGKILL, the OOM
killer): orphans would keep the port, the spill lock and the probes. Two
defences:

- each child asks the kernel for SIGTERM when `up` dies (PR_SET_PDEATHSIG),
  checked once more after asking, for a parent that died in between;
- `up` records itself and every child it starts in <state_dir>/up.json
  (pid and start time, so a reused pid is never mistaken for ours), and the
  next `up` on that folder stops whatever of it still runs, before it looks
  for a server on its port.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from snoopbus.proto import exits

log = logging.getLogger(__name__)

RECORD_NAME = "up.json"
PR_SET_PDEATHSIG = 1
TERM_WAIT = 5.0  # s a leftover gets after SIGTERM before SIGKILL


class UpRunning(RuntimeError):
    """Another `up` is alive with this state folder."""

    exit_code = exits.BUSY  # the folder is in use by something else


@dataclass(frozen=True, slots=True)
class Proc:
    """A process as `up` recorded it: its pid and the kernel's start time."""

    name: str
    pid: int
    start: int

    @classmethod
    def of(cls, name: str, pid: int) -> Proc | None:
        start = start_time(pid)
        return None if start is None else cls(name, pid, start)

    def alive(self) -> bool:
        """Still this very process (a pid reused since has another start time)."""
        return start_time(self.pid) == self.start


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after its last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # a zombie is dead; its parent only has not reaped it
        return None
    return int(fields[19])


def die_with_parent() -> Callable[[], None]:
    """A `preexec_fn`: the child gets SIGTERM when the process that forks it dies.

    The death signal follows the forking thread: `up` starts its children
    from its main thread, which lives as long as `up` does.
    """
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class UpRecord:
    """<state_dir>/up.json: this `up` and the children it runs now."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / RECORD_NAME
        self.me = Proc.of("up", os.getpid())
        self.children: dict[str, Proc] = {}

    def started(self, name: str, pid: int) -> None:
        proc = Proc.of(name, pid)
        if proc is not None:
            self.children[name] = proc
            self._write()

    def _write(self) -> None:
        procs = [self.me, *self.children.values()]
        body = json.dumps([[p.name, p.pid, p.start] for p in procs if p is not None])
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def read_record(state_dir: Path) -> list[Proc]:
    """What an earlier `up` recorded; nothing if no record or an unreadable one."""
    try:
        rows = json.loads((state_dir / RECORD_NAME).read_text())
        return [Proc(str(name), int(pid), int(start)) for name, pid, start in rows]
    except (OSError, ValueError, TypeError):
        return []


def stop_leftovers(state_dir: Path, report: Callable[[str], None]) -> list[Proc]:
    """Stop what a dead `up` of this folder left running; refuse if it still lives.

    Returns what was stopped. Raises UpRunning when the recorded `up` is alive.
    """
    procs = [p for p in read_record(state_dir) if p.pid != os.getpid() and p.alive()]
    for p in procs:
        if p.name == "up":
            raise UpRunning(
                f"another `snoopbus up` (pid {p.pid}) runs with the state folder "
                f"{state_dir}: stop it first, or pick another folder with --state-dir"
            )
    if procs:
        names = ", ".join(f"{p.name} (pid {p.pid})" for p in procs)
        report(f"stopping what a dead `up` left running: {names}")
        end(procs)
    return procs


def end(procs: Iterable[Proc], wait: float = TERM_WAIT) -> None:
    """SIGTERM, then SIGKILL to whichever is still the same process after `wait`."""
    procs = list(procs)
    _signal(procs, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(p.alive() for p in procs):
        time.sleep(0.05)
    _signal([p for p in procs if p.alive()], signal.SIGKILL)


def _signal(procs: Iterable[Proc], sig: int) -> None:
    for p in procs:
        if p.alive():
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
