"""Where a path seen inside another mount namespace lies on the host.

The probes report a path as the process sees it (a container's /etc/passwd)
plus its mount namespace. To place it on the host (the collector's own
namespace): find the deepest mount the path is under in the process's
/proc/<pid>/mountinfo, turn the path into one within that mount's
filesystem (its device and root), then find a host mount of the same device
whose root holds it. A filesystem the host does not mount (a tmpfs private
to the namespace) has no host path: the event then carries none.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

_ESCAPE = re.compile(r"\\([0-7]{3})")  # mountinfo escapes space, tab, newline, backslash


@dataclass(frozen=True, slots=True)
class Mount:
    dev: str  # "major:minor" of the filesystem
    root: str  # the directory of that filesystem mounted here
    point: str  # where, in the namespace's view


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m[1], 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """/proc/<pid>/mountinfo -> mounts in its order (a later one covers an
    earlier one at the same point). Lines that do not parse are skipped."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 5 or ":" not in fields[2]:
            continue
        mounts.append(Mount(fields[2], _unescape(fields[3]), _unescape(fields[4])))
    return mounts


def _within(path: str, top: str) -> str | None:
    """The rest of `path` below directory `top` ("" for top itself), or None."""
    if top == "/":
        return None if not path.startswith("/") else "" if path == "/" else path
    if path == top:
        return ""
    if path.startswith(top) and path[len(top)] == "/":
        return path[len(top):]
    return None


def _deepest(mounts: list[Mount], path: str, where: Callable[[Mount], str]) -> Mount | None:
    best: Mount | None = None
    for m in mounts:  # the longest match wins; at a tie the later (upper) mount
        if _within(path, where(m)) is not None and (
            best is None or len(where(m)) >= len(where(best))
        ):
            best = m
    return best


def host_path(ns_mounts: list[Mount], host_mounts: list[Mount], path: str) -> str | None:
    """`path` as the namespace sees it -> the same file's path on the host."""
    inner = _deepest(ns_mounts, path, lambda m: m.point)
    if inner is None:
        return None
    rest = _within(path, inner.point) or ""
    in_fs = (inner.root.rstrip("/") + rest) or "/"
    same_fs = [m for m in host_mounts if m.dev == inner.dev]
    outer = _deepest(same_fs, in_fs, lambda m: m.root)
    if outer is None:
        return None
    below = _within(in_fs, outer.root) or ""
    return (outer.point.rstrip("/") + below) or "/"


def read_text(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "surrogateescape")


class HostPaths:
    """host_path() for events. Each namespace's mounts are read from a live
    process of it, and again after the probes see its mount table change
    (forget()) or after `ttl` seconds; the host's are read again when a
    filesystem is missing from them (a container started since)."""

    def __init__(self, proc: str = "/proc", ttl: float = 30.0, max_namespaces: int = 4096) -> None:
        self._proc = proc
        self._ttl = ttl
        self._max = max_namespaces
        self.own_ns = os.stat(f"{proc}/self/ns/mnt").st_ino
        self._host: list[Mount] = []
        self._host_read = 0.0
        self._ns: dict[int, tuple[float, list[Mount]]] = {}
        self._dead: set[int] = set()  # pids whose mounts could not be read
        self._dead_since = 0.0

    def lookup(
        self, mnt_ns: int, pid: int, path: str, inode: int = 0, st_dev: int = 0
    ) -> str | None:
        """The host path of `path` seen by `pid` in `mnt_ns`; None if it is the
        same, or cannot be known (no live process of the namespace, a
        filesystem the host does not mount). With the file's `inode` and
        `st_dev` (fd-based events) the answer is checked on the host, which
        also catches a mount made after the event and before this lookup."""
        if mnt_ns == self.own_ns:
            return None
        mounts = self._ns_mounts(mnt_ns, pid)
        if not mounts:
            return None
        if not self._host:
            self._read_host()
        found = host_path(mounts, self._host, path)
        if found is None and self._read_host():
            found = host_path(mounts, self._host, path)
        if found is None or found == path:
            return None
        if inode:
            try:
                st = os.lstat(found)
            except OSError:
                return None  # gone since, or never there: unknown, not a guess
            if (st.st_ino, st.st_dev) != (inode, st_dev):
                return None
        return found

    def forget(self, mnt_ns: int) -> None:
        """A mount table changed (the probes saw mount, umount2, pivot_root...):
        read it again before the namespace's next path is placed."""
        if mnt_ns == self.own_ns:
            self._host = []
        else:
            self._ns.pop(mnt_ns, None)

    def _read_host(self) -> bool:
        """Re-reads the host's mounts, at most once a second; whether it did."""
        now = time.monotonic()
        if self._host and now - self._host_read < 1.0:
            return False
        self._host_read = now
        try:
            self._host = parse_mountinfo(read_text(f"{self._proc}/self/mountinfo"))
        except OSError as exc:
            log.warning("cannot read the host's mounts: %s", exc)
        return True

    def _ns_mounts(self, mnt_ns: int, pid: int) -> list[Mount] | None:
        now = time.monotonic()
        cached = self._ns.get(mnt_ns)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        if now - self._dead_since > 1.0:
            self._dead.clear()
            self._dead_since = now
        if pid in self._dead:  # an exited process: each of its events would ask again
            return cached[1] if cached is not None else None
        try:
            text = read_text(f"{self._proc}/{pid}/mountinfo")
            # The pid may have exited and been reused: the namespace must still be its.
            if os.stat(f"{self._proc}/{pid}/ns/mnt").st_ino != mnt_ns:
                raise FileNotFoundError
        except OSError:
            self._dead.add(pid)  # another process of the namespace may tell
            return cached[1] if cached is not None else None  # stale beats nothing
        if len(self._ns) >= self._max:
            self._ns.clear()
        mounts = parse_mountinfo(text)
        self._ns[mnt_ns] = (now, mounts)
        return mounts
