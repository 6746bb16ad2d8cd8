"""The close_write an exit, exec or close_range stands in for: which fds the
builder remembers, and which each of them closes (pure)."""

from __future__ import annotations

from snoopbus.collector.events import EventBuilder
from snoopbus.collector.proc_cache import ProcCache
from snoopbus.collector.records import (
    F_CLOEXEC,
    KIND_CLOSE_RANGE,
    KIND_CLOSE_WRITE,
    KIND_CREATE,
    KIND_EXEC,
    KIND_EXIT,
    KIND_MODIFY,
    ExecRecord,
    ExitRecord,
    FileRecord,
    Header,
)
from snoopbus.collector.written import CLOSE_RANGE_CLOEXEC

PID = 4242


def hdr(kind: int, pid: int = PID, flags: int = 0) -> Header:
    return Header(1, 1, pid, pid, 1, 0, 0, kind, flags, "w")


def rec(kind: int, fd: int, path: bytes, ret: int | None = 0, pid: int = PID,
        flags: int = 0) -> FileRecord:
    return FileRecord(hdr(kind, pid, flags), ret, 0, 7, 0, 1, 0, 0, 0, fd, path, False)


def close_range(first: int, last: int, flags: int = 0, ret: int = 0) -> FileRecord:
    r = rec(KIND_CLOSE_RANGE, first, b"/", ret=ret)
    r.mode, r.oflags = last, flags
    return r


def closes(out: list[tuple[str, dict]], by: str) -> list[str]:
    return [ev["file"]["path"] for _, ev in out
            if ev["type"] == "close_write" and ev["file"]["closed_by"] == by]


def closes_at_exit(builder: EventBuilder, pid: int = PID) -> list[str]:
    out = builder.build_all(ExitRecord(hdr(KIND_EXIT, pid), 0))
    assert out[0][1]["type"] == "exit"
    assert all(ev["file"]["closed_by"] == "exit" for _, ev in out[1:])
    return [ev["file"]["path"] for _, ev in out[1:]]


def test_only_written_and_still_open_fds_are_closed_by_the_exit() -> None:
    b = EventBuilder("h", "i", ProcCache())
    for r in (rec(KIND_CREATE, 3, b"/a", ret=3), rec(KIND_MODIFY, 3, b"/a"),
              rec(KIND_CREATE, 4, b"/b", ret=4), rec(KIND_MODIFY, 4, b"/b"),
              rec(KIND_CLOSE_WRITE, 4, b"/b", ret=None),
              rec(KIND_CREATE, 5, b"/c", ret=5)):
        b.build_all(r)
    assert closes_at_exit(b) == ["/a"]
    assert closes_at_exit(b) == []  # once only


def test_an_fd_number_reused_by_an_open_forgets_the_old_file() -> None:
    b = EventBuilder("h", "i", ProcCache())
    b.build_all(rec(KIND_MODIFY, 3, b"/old"))
    b.build_all(rec(KIND_CREATE, 3, b"/new", ret=3))  # old fd closed unseen (dup2, close_range)
    assert closes_at_exit(b) == []


def test_failed_writes_do_not_count_and_the_table_is_bounded() -> None:
    b = EventBuilder("h", "i", ProcCache())
    b.build_all(rec(KIND_MODIFY, 3, b"/a", ret=-28))  # ENOSPC: nothing changed
    assert closes_at_exit(b) == []
    b.written.limit = 2
    for pid in (1, 2, 3):
        b.build_all(rec(KIND_MODIFY, 3, f"/p{pid}".encode(), pid=pid))
    assert closes_at_exit(b, 1) == []  # the oldest process's were forgotten
    assert closes_at_exit(b, 3) == ["/p3"]


def test_exec_closes_only_the_written_close_on_exec_fds_before_its_own_event() -> None:
    b = EventBuilder("h", "i", ProcCache())
    b.build_all(rec(KIND_MODIFY, 3, b"/cloexec", flags=F_CLOEXEC))
    b.build_all(rec(KIND_MODIFY, 4, b"/kept"))
    out = b.build_all(ExecRecord(hdr(KIND_EXEC), "/bin/true", "/", ["true"]))
    assert closes(out, "exec") == ["/cloexec"]
    assert [ev["type"] for _, ev in out] == ["close_write", "exec"]
    assert out[0][1]["proc"]["comm"] == "w"  # the image that wrote it
    assert closes_at_exit(b) == ["/kept"]


def test_close_range_closes_the_written_fds_within_it_or_marks_them_close_on_exec() -> None:
    b = EventBuilder("h", "i", ProcCache())
    for fd in (3, 5, 7, 9):
        b.build_all(rec(KIND_MODIFY, fd, f"/f{fd}".encode()))
    assert b.build_all(close_range(5, 7, ret=-22)) == []  # EINVAL: nothing closed
    assert closes(b.build_all(close_range(5, 7)), "close_range") == ["/f5", "/f7"]
    assert b.build_all(close_range(9, 2**32 - 1, CLOSE_RANGE_CLOEXEC)) == []
    out = b.build_all(ExecRecord(hdr(KIND_EXEC), "/bin/true", "/", ["true"]))
    assert closes(out, "exec") == ["/f9"]
    assert closes_at_exit(b) == ["/f3"]
    assert len(b.written) == 0
