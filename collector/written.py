"""Files written through an fd and not yet closed, per process.

Three ways of closing an fd happen without a close() the probes see: the
kernel closes every fd in do_exit, exec closes those with FD_CLOEXEC, and
close_range(2) closes (or marks close-on-exec) a whole range. For each, the
collector emits the close_write itself, from what the fd's modify event said.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# close_range(2) flags (include/uapi/linux/close_range.h)
CLOSE_RANGE_CLOEXEC = 1 << 2


@dataclass(slots=True)
class Written:
    file: dict[str, Any]  # the file map of the fd's modify event
    proc: dict[str, Any]  # and its proc map: the image that wrote it
    cloexec: bool


class WrittenFiles:
    """tgid -> fd -> Written, bounded host-wide (the oldest process's go first)."""

    def __init__(self, limit: int = 1 << 18) -> None:
        self.limit = limit
        self._by_pid: dict[int, dict[int, Written]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def wrote(self, pid: int, fd: int, entry: Written) -> None:
        fds = self._by_pid.setdefault(pid, {})
        if fd not in fds:
            self._count += 1
            if self._count > self.limit:
                self._count -= len(self._by_pid.pop(next(iter(self._by_pid))))
                fds = self._by_pid.setdefault(pid, {})
        fds[fd] = entry

    def forget(self, pid: int, fd: int) -> None:
        """The fd was closed where the probes saw it, or now names another file."""
        fds = self._by_pid.get(pid)
        if fds is not None and fds.pop(fd, None) is not None:
            self._count -= 1
            if not fds:
                del self._by_pid[pid]

    def closed(self, pid: int, fd: int) -> Written | None:
        """What a close the probes saw without its file (an io_uring fixed
        slot) closed, if it was written."""
        taken = self._take(pid, lambda f, w: f == fd)
        return taken[0] if taken else None

    def closed_by_exit(self, pid: int) -> list[Written]:
        fds = self._by_pid.pop(pid, None) or {}
        self._count -= len(fds)
        return list(fds.values())

    def closed_by_exec(self, pid: int) -> list[Written]:
        return self._take(pid, lambda fd, w: w.cloexec)

    def closed_by_range(self, pid: int, first: int, last: int, flags: int) -> list[Written]:
        """close_range(first, last, flags) succeeded: what it closed. With
        CLOSE_RANGE_CLOEXEC nothing is closed yet: the fds close at exec."""
        if flags & CLOSE_RANGE_CLOEXEC:
            for fd, w in self._by_pid.get(pid, {}).items():
                if first <= fd <= last:
                    w.cloexec = True
            return []
        return self._take(pid, lambda fd, w: first <= fd <= last)

    def _take(self, pid: int, closes: Callable[[int, Written], bool]) -> list[Written]:
        fds = self._by_pid.get(pid)
        if not fds:
            return []
        gone = [fd for fd, w in fds.items() if closes(fd, w)]
        out = [fds.pop(fd) for fd in gone]
        self._count -= len(out)
        if not fds:
            del self._by_pid[pid]
        return out
