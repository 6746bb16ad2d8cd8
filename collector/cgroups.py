"""cgroup v2 id -> cgroup path -> container id, for attribution.

The probes stamp bpf_get_current_cgroup_id(): the inode number of the
process's cgroup v2 directory. The path comes from finding that inode under
the cgroup2 mount (at /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid
hosts); a container id is read from the path when a runtime's naming shows.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

# docker-<id>.scope, crio-<id>.scope, cri-containerd-<id>.scope, libpod-<id>.scope,
# /docker/<id>, /kubepods/.../<id>, /kubepods.slice/...-pod<uid>.slice/cri-containerd-<id>.scope
_CONTAINER_ID = re.compile(
    r"(?:docker|crio|cri-containerd|containerd|libpod|podman)[-/]([0-9a-f]{12,64})(?:\.scope)?(?:/|$)"
    r"|/kubepods[^ ]*/(?:pod[0-9a-f_-]+/)?([0-9a-f]{64})(?:/|$)"
)


def container_id(cgroup_path: str) -> str | None:
    """The container id a cgroup path names, if any (the innermost one)."""
    found = None
    for m in _CONTAINER_ID.finditer(cgroup_path):
        found = m.group(1) or m.group(2)
    return found


def cgroup2_mount(mounts: Path = Path("/proc/self/mounts")) -> Path | None:
    try:
        for line in mounts.read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return Path(fields[1].replace("\\040", " "))
    except OSError:
        pass
    return None


class CgroupIndex:
    """cgroup id -> path below the cgroup2 mount, rescanned on a miss (at most
    once per `rescan_s`: ids of cgroups made since the last scan)."""

    def __init__(self, root: Path | None = None, rescan_s: float = 5.0) -> None:
        self.root = root if root is not None else cgroup2_mount()
        self.rescan_s = rescan_s
        self._paths: dict[int, str] = {}
        self._scanned = -1e9

    def _scan(self) -> None:
        self._scanned = time.monotonic()
        if self.root is None:
            return
        paths: dict[int, str] = {}
        for dirpath, _dirs, _files in os.walk(self.root):
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue
            rel = "/" + os.path.relpath(dirpath, self.root)
            paths[ino] = "/" if rel == "/." else rel
        self._paths = paths

    def path(self, cgroup_id: int) -> str | None:
        found = self._paths.get(cgroup_id)
        if found is None and time.monotonic() - self._scanned >= self.rescan_s:
            self._scan()
            found = self._paths.get(cgroup_id)
        return found

    def id_of(self, path: str) -> int:
        """The id of a cgroup given as a path below the mount (or absolute)."""
        if self.root is None:
            raise ValueError("no cgroup2 mount on this host: cannot resolve cgroup paths")
        p = Path(path)
        if p.is_absolute() and p.is_relative_to(self.root):
            full = p
        else:
            full = self.root / path.lstrip("/")
        try:
            return os.stat(full).st_ino
        except OSError as exc:
            raise ValueError(f"cgroup {path!r}: {exc.strerror} ({full})") from None
