"""The close_write an exit stands in for: which fds the builder remembers (pure)."""

from __future__ import annotations

from snoopbus.collector.events import EventBuilder
from snoopbus.collector.proc_cache import ProcCache
from snoopbus.collector.records import (
    KIND_CLOSE_WRITE,
    KIND_CREATE,
    KIND_EXIT,
    KIND_MODIFY,
    ExitRecord,
    FileRecord,
    Header,
)

PID = 4242


def hdr(kind: int, pid: int = PID) -> Header:
    return Header(1, 1, pid, pid, 1, 0, 0, kind, 0, "w")


def rec(kind: int, fd: int, path: bytes, ret: int | None = 0, pid: int = PID) -> FileRecord:
    return FileRecord(hdr(kind, pid), ret, 0, 7, 0, 1, 0, 0, 0, fd, path, False)


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
    b.MAX_WRITTEN = 2
    for pid in (1, 2, 3):
        b.build_all(rec(KIND_MODIFY, 3, f"/p{pid}".encode(), pid=pid))
    assert closes_at_exit(b, 1) == []  # the oldest process's were forgotten
    assert closes_at_exit(b, 3) == ["/p3"]
