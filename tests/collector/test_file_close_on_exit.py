"""close_write for files open for writing that are released without a
close() the probes could see: by the kernel when the process exits, by exec
(FD_CLOEXEC), and by close_range(2). The probes scan the fd table just
before (bpf/closes.h) and report each, marked closed_by — once, written or
not (as inotify's IN_CLOSE_WRITE), and never for a file already closed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support.collector import EventWatch, RunningCollector
from tests.support.kernel import check_proc, file_events, run_child, summary

pytestmark = pytest.mark.kernel


async def test_files_left_open_at_exit_get_their_close_write(
    collector: RunningCollector, watch: EventWatch, tmp_path: Path
) -> None:
    written, untouched, closed = tmp_path / "left open", tmp_path / "untouched", tmp_path / "closed"
    pid = run_child(tmp_path, f"""
        a = os.open({str(written)!r}, os.O_CREAT | os.O_WRONLY, 0o600)
        os.write(a, b"data")
        os.open({str(untouched)!r}, os.O_CREAT | os.O_WRONLY, 0o600)  # never written
        c = os.open({str(closed)!r}, os.O_CREAT | os.O_WRONLY, 0o600)
        os.write(c, b"data")
        os.close(c)
        os._exit(0)  # fds a and the untouched one are still open
    """)
    await watch.wait_for(lambda e: e["type"] == "close_write" and e["proc"]["pid"] == pid
                         and e["file"].get("closed_by") == "exit")
    await watch.wait_for(lambda e: e["type"] == "exit" and e["proc"]["pid"] == pid)
    events = file_events(watch, pid)
    check_proc(events, pid)
    assert summary(events) == [
        ("create", str(written)), ("modify", str(written)),
        ("create", str(untouched)),
        ("create", str(closed)), ("modify", str(closed)), ("close_write", str(closed)),
        # from the exit, after it, in fd order; never written is no exception
        ("close_write", str(written)), ("close_write", str(untouched)),
    ]
    by_exit = [e for e in events if e["file"].get("closed_by") == "exit"]
    [exit_event] = [e for e in watch.events if e["type"] == "exit" and e["proc"]["pid"] == pid]
    assert len(by_exit) == 2
    for last in by_exit:
        assert last["ts"] == exit_event["ts"]
        assert int(last["id"].rsplit("-", 1)[1]) > int(exit_event["id"].rsplit("-", 1)[1])
        assert last["proc"] == exit_event["proc"]
    assert by_exit[0]["file"]["inode"] == written.stat().st_ino
    assert "closed_by" not in events[5]["file"]  # the explicit close is not marked


async def test_exec_closes_close_on_exec_fds_and_keeps_the_rest(
    collector: RunningCollector, watch: EventWatch, tmp_path: Path
) -> None:
    cloexec, inherited = tmp_path / "cloexec", tmp_path / "inherited"
    pid = run_child(tmp_path, f"""
        a = os.open({str(cloexec)!r}, os.O_CREAT | os.O_WRONLY, 0o600)  # O_CLOEXEC (PEP 446)
        os.write(a, b"data")
        b = os.open({str(inherited)!r}, os.O_CREAT | os.O_WRONLY, 0o600)
        os.set_inheritable(b, True)  # fcntl(F_SETFD): only the fd table knows
        os.write(b, b"data")
        os.execv("/bin/true", ["true"])  # closes a; b lives on until true exits
    """)
    await watch.wait_for(lambda e: e["type"] == "exit" and e["proc"]["pid"] == pid)
    closes = await watch.wait_for(lambda e: e["type"] == "close_write"
                                  and e["proc"]["pid"] == pid, count=2)
    [exec_event] = [e for e in watch.events if e["type"] == "exec" and e["proc"]["pid"] == pid
                    and e["proc"]["exe"] == os.path.realpath("/bin/true")]
    by = {e["file"]["path"]: e for e in closes}
    assert sorted(by) == [str(cloexec), str(inherited)] and len(closes) == 2
    at_exec, at_exit = by[str(cloexec)], by[str(inherited)]
    assert at_exec["file"]["closed_by"] == "exec"
    assert at_exec["ts"] <= exec_event["ts"]  # at exec's point of no return
    assert int(at_exec["id"].rsplit("-", 1)[1]) < int(exec_event["id"].rsplit("-", 1)[1])
    assert at_exec["proc"]["exe"] == os.path.realpath(sys.executable)  # the image that wrote it
    assert at_exec["file"]["inode"] == cloexec.stat().st_ino
    assert at_exit["file"]["closed_by"] == "exit"
    assert at_exit["proc"]["exe"] == os.path.realpath("/bin/true")


async def test_close_range_closes_written_fds_in_its_range(
    collector: RunningCollector, watch: EventWatch, tmp_path: Path
) -> None:
    names = [tmp_path / f"r{i}" for i in range(4)]
    pid = run_child(tmp_path, f"""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        def close_range(first, last, flags):
            assert libc.syscall(436, first, last, flags) == 0, ctypes.get_errno()
        fds = [os.open(n, os.O_CREAT | os.O_WRONLY, 0o600) for n in {[str(n) for n in names]!r}]
        for fd in fds[:3]:
            os.write(fd, b"data")  # r3 is never written
        close_range(fds[1], fds[3], 0)  # closes r1 (written), r2 (written), r3 (not)
        os.set_inheritable(fds[0], True)
        close_range(fds[0], fds[0], 4)  # CLOSE_RANGE_CLOEXEC: r0 closes at the exec
        os.execv("/bin/true", ["true"])
    """)
    await watch.wait_for(lambda e: e["type"] == "exit" and e["proc"]["pid"] == pid)
    closes = await watch.wait_for(lambda e: e["type"] == "close_write"
                                  and e["proc"]["pid"] == pid, count=4)
    assert sorted((e["file"]["path"], e["file"]["closed_by"]) for e in closes) == [
        (str(names[0]), "exec"), (str(names[1]), "close_range"), (str(names[2]), "close_range"),
        (str(names[3]), "close_range"),
    ]


async def test_an_fd_number_exec_closed_reports_its_next_first_write(
    collector: RunningCollector, watch: EventWatch, tmp_path: Path
) -> None:
    """The kernel's first-write table is keyed by process image: the fd exec
    closed unseen must not hide a write through a new fd with its number
    (memfd_create is not watched, so nothing else clears it)."""
    before = tmp_path / "before"
    second_image = (
        "import os, sys\n"
        "m = os.memfd_create('snoopbus-reuse')\n"
        "assert m == int(sys.argv[1]), (m, sys.argv[1])\n"
        "os.write(m, b'x')\n"
    )
    pid = run_child(tmp_path, f"""
        a = os.open({str(before)!r}, os.O_CREAT | os.O_WRONLY, 0o600)
        os.write(a, b"data")
        os.execv(sys.executable, [sys.executable, "-I", "-c", {second_image!r}, str(a)])
    """)
    [modify] = await watch.wait_for(lambda e: e["type"] == "modify" and e["proc"]["pid"] == pid
                                    and e["file"].get("path") == "/memfd:snoopbus-reuse")
    assert modify["proc"]["argv"][-1].isdigit()  # from the second image
