"""For the tests that load real probes: children whose file operations are
watched, their events picked out, an unprivileged user to act as, the
checks of what this kernel allows."""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from snoopbus.proto import FILE_TYPES
from tests.support.collector import EventWatch

NOBODY = pwd.getpwnam("nobody")

CAPABILITY_CHECKS = (  # the names of the kernel capability checks
    "privileges",
    "btf",
    "bpf_syscall",
    "ringbuf",
    "perf_buffer",
    "tracefs",
    "tracepoint",
    "raw_tracepoint",
    "tp_btf",
    "kprobe",
    "fentry",
    "lsm",
    "kernel_headers",
    "bcc",
)

PRELUDE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def renameat2(olddfd, old, newdfd, new, flags):
    if libc.renameat2(olddfd, os.fsencode(old), newdfd, os.fsencode(new), flags) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")
AT_FDCWD = -100
RENAME_EXCHANGE = 2
def touch(p, data=b"x", **kw):
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o640, **kw)
    os.write(fd, data)
    os.write(fd, data)  # a second write: still one modify
    os.close(fd)
"""


def run_child(cwd: Path, body: str) -> int:
    """Runs `body` in a fresh Python child in `cwd`; returns its pid once it exited."""
    proc = subprocess.Popen(
        [sys.executable, "-I", "-B", "-c", PRELUDE + textwrap.dedent(body)], cwd=cwd
    )
    assert proc.wait(30) == 0, "child failed"
    return proc.pid


def file_events(watch: EventWatch, pid: int) -> list[dict[str, Any]]:
    """The pid's file events in the order the kernel recorded them (each type
    has its own subject, so arrival order is not that order; ids are)."""
    found = [e for e in watch.events
             if e.get("proc", {}).get("pid") == pid and e["type"] in FILE_TYPES]
    return sorted(found, key=lambda e: int(e["id"].rsplit("-", 1)[1]))


async def settled_file_events(watch: EventWatch, pid: int) -> list[dict[str, Any]]:
    """file_events once no more came for a second (each type has its own
    subject: batches of others may still be on their way)."""
    count, still = -1, 0.0
    while still < 1.0:
        now = len(file_events(watch, pid))
        still = still + 0.1 if now == count else 0.0
        count = now
        await asyncio.sleep(0.1)
    return file_events(watch, pid)


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(e["type"], e["file"].get("path")) for e in events]


def check_proc(events: list[dict[str, Any]], pid: int) -> None:
    for e in events:
        p = e["proc"]
        assert p["pid"] == pid and p["tid"] == pid, e
        assert p["ppid"] == os.getpid()
        assert p["uid"] == os.getuid() and p["gid"] == os.getgid()
        assert p["comm"] == Path(sys.executable).name[:15] or p["comm"].startswith("python")
        assert p["exe"] == os.path.realpath(sys.executable)
        assert p["argv"][:3] == [sys.executable, "-I", "-B"]
        assert isinstance(p["cgroup"], int)
        assert e["ts"] > 0 and e["file"]["mnt_ns"] == os.stat("/proc/self/ns/mnt").st_ino


def as_nobody(cwd: Path, script: str, *shell: str) -> None:
    """Runs a script (sh unless `shell` says otherwise) as nobody in `cwd`;
    fails the test if it fails."""
    subprocess.run(
        ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups",
         *(shell or ("sh", "-ec")), script],
        cwd=cwd, check=True, timeout=30,
    )
