"""io_uring requests end to end: real kernel probes, real nats-server.

Each operation of tests/uring/uring_ops.c (liburing, from Debian's
liburing-dev) runs as `nobody` in a directory it owns: the file changes an
unprivileged attacker would make without a syscall of their own. Every
expected event is checked for type, absolute path, the process that made it
and `via: "io_uring"`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.collector import EventWatch, RunningCollector
from tests.support.kernel import file_events
from tests.support.paths import TESTS

pytestmark = pytest.mark.kernel

SOURCE = TESTS / "uring" / "uring_ops.c"
NOBODY = pwd.getpwnam("nobody")


@pytest.fixture(scope="module")
def uring_ops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """uring_ops built with liburing; the build failing is a test failure
    (`make setup` installs liburing-dev), never a skip."""
    out = tmp_path_factory.mktemp("uring") / "uring_ops"
    done = subprocess.run(["gcc", "-O2", "-Wall", "-o", str(out), str(SOURCE), "-luring"],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"cannot build uring_ops (make setup installs liburing-dev):\n" \
                                 f"{done.stderr}"
    return out


@pytest.fixture
def work(uring_ops: Path) -> Iterator[Path]:
    """A directory only nobody can write, holding its own copy of uring_ops."""
    top = Path(tempfile.mkdtemp(prefix="snoopbus-uring-"))
    try:
        os.chmod(top, 0o755)
        d = top / "w"
        d.mkdir()
        shutil.copy(uring_ops, top / "uring_ops")
        os.chmod(top / "uring_ops", 0o755)
        os.chown(d, NOBODY.pw_uid, NOBODY.pw_gid)
        os.chmod(d, 0o700)
        yield d
    finally:
        shutil.rmtree(top)


def run_as_nobody(work: Path, mode: str) -> int:
    def drop() -> None:
        os.setgroups([])
        os.setgid(NOBODY.pw_gid)
        os.setuid(NOBODY.pw_uid)

    child = subprocess.Popen([str(work.parent / "uring_ops"), mode], cwd=work,
                             preexec_fn=drop, stderr=subprocess.PIPE)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err.decode()
    return child.pid


async def uring_events(watch: EventWatch, pid: int, count: int) -> list[dict[str, Any]]:
    """The child's io_uring file events, in the order the kernel recorded them."""
    try:
        await watch.wait_for(lambda e: e.get("proc", {}).get("pid") == pid
                             and e.get("via") == "io_uring", count=count)
    except TimeoutError:
        pass  # the comparison below shows what came
    return [e for e in file_events(watch, pid) if e.get("via") == "io_uring"]


def check_proc(events: list[dict[str, Any]], pid: int) -> None:
    for e in events:
        p = e["proc"]
        assert p["pid"] == pid, e
        assert p["uid"] == NOBODY.pw_uid and p["gid"] == NOBODY.pw_gid, e
        assert p["comm"] == "uring_ops", e  # the ring owner's, also for io threads
        assert p["exe"] == str(Path(p["exe"]).parent / "uring_ops"), e


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [(e["io_uring_op"], e["type"], e["file"].get("path")) for e in events]


async def check_plain_ops(watch: EventWatch, work: Path, pid: int) -> list[dict[str, Any]]:
    w = str(work)
    expected = [
        ("openat", "create", f"{w}/a"),
        ("write", "modify", f"{w}/a"),  # the second write: no event, as for write(2)
        ("close", "close_write", f"{w}/a"),
        ("mkdirat", "mkdir", f"{w}/d"),
        ("renameat", "moved_from", f"{w}/a"),
        ("renameat", "moved_to", f"{w}/d/b"),
        ("linkat", "link", f"{w}/c"),
        ("symlinkat", "symlink", f"{w}/s"),
        ("unlinkat", "delete", f"{w}/c"),
        ("unlinkat", "delete", f"{w}/d/b"),
        ("unlinkat", "rmdir", f"{w}/d"),
    ]
    events = await uring_events(watch, pid, len(expected))
    assert summary(events) == expected
    check_proc(events, pid)
    by_type = {e["type"]: e for e in events}
    assert by_type["create"]["ret"] >= 0  # the fd, known at completion
    assert by_type["create"]["file"]["flags"] & os.O_CREAT
    assert by_type["create"]["file"]["inode"] == by_type["modify"]["file"]["inode"]
    assert by_type["mkdir"]["file"]["mode"] == 0o750
    assert by_type["moved_from"]["cookie"] == by_type["moved_to"]["cookie"]
    assert by_type["link"]["file"]["target"] == f"{w}/d/b"
    assert by_type["symlink"]["file"]["target"] == "d/b"
    return events


async def test_each_operation_through_a_ring(
    collector: RunningCollector, watch: EventWatch, work: Path
) -> None:
    pid = run_as_nobody(work, "plain")
    events = await check_plain_ops(watch, work, pid)
    # Submitted by the process itself; an open's completion may come from an
    # io-wq worker (iou-wrk-PID), a thread of the same process.
    assert all(e["proc"]["tid"] == pid for e in events if e["io_uring_op"] != "openat")


async def test_sqpoll_kernel_thread_is_attributed_to_the_ring_owner(
    collector: RunningCollector, watch: EventWatch, work: Path
) -> None:
    """With IORING_SETUP_SQPOLL a kernel thread (iou-sqp-PID) submits: the
    events still name the owner's process, uid and program."""
    pid = run_as_nobody(work, "sqpoll")
    events = await check_plain_ops(watch, work, pid)
    assert any(e["proc"]["tid"] != pid for e in events)  # the SQPOLL thread's own id


async def test_no_completion_and_fixed_slots_are_still_seen(
    collector: RunningCollector, watch: EventWatch, work: Path
) -> None:
    """An open with IOSQE_CQE_SKIP_SUCCESS posts no completion; a direct open
    puts the file in a fixed slot, never in an fd; a linked writev and close
    name only the slot."""
    pid = run_as_nobody(work, "hidden")
    w = str(work)
    expected = [
        ("openat", "create", f"{w}/skipped"),
        ("openat", "create", f"{w}/direct"),
        ("writev", "modify", f"{w}/direct"),
        ("close", "close_write", f"{w}/direct"),
    ]
    events = await uring_events(watch, pid, len(expected))
    assert sorted(summary(events)) == sorted(expected)
    check_proc(events, pid)
    skipped = events[[e["file"]["path"] for e in events].index(f"{w}/skipped")]
    assert "ret" not in skipped  # reported at submit: no result to give
