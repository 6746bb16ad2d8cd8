"""What the builder makes of the records bpf/closes.h adds (pure): close_write
marked by what released the file, O_TMPFILE files named by their link, the
whiteout of renameat2(RENAME_WHITEOUT)."""

from __future__ import annotations

from typing import Any

from snoopbus.collector import records as R
from snoopbus.collector.events import RENAME_WHITEOUT, EventBuilder
from snoopbus.collector.proc_cache import ProcCache, ProcInfo

PID = 4242


def rec(kind: int, path: bytes | None, flags: int = 0, ret: int | None = 0, ino: int = 7,
        path2: bytes | None = None, oflags: int = 0, tid: int = PID) -> R.FileRecord:
    hdr = R.Header(1, 1, PID, tid, 1, 0, 0, kind, flags, "w")
    return R.FileRecord(hdr, ret, 5, ino, 1, 1, 0, oflags, 0, 3, path, False, path2)


def builder() -> EventBuilder:
    cache = ProcCache()
    cache.put(PID, ProcInfo("/bin/w", ["w"], "/"))
    return EventBuilder("h", "i", cache)


def events(b: EventBuilder, r: R.FileRecord | R.ExitRecord) -> list[dict[str, Any]]:
    return [ev for _, ev in b.build_all(r)]


def by(code: int) -> int:
    return code << R.F_CLOSED_BY_SHIFT


def test_closed_by_comes_from_the_record_and_exit_closes_take_the_exit_proc() -> None:
    b = builder()
    [plain] = events(b, rec(R.KIND_CLOSE_WRITE, b"/a", R.F_NO_RET, ret=None))
    assert "closed_by" not in plain["file"] and "ret" not in plain
    [ranged] = events(b, rec(R.KIND_CLOSE_WRITE, b"/b", R.F_NO_RET | by(3), ret=None))
    assert ranged["file"]["closed_by"] == "close_range"
    [at_exec] = events(b, rec(R.KIND_CLOSE_WRITE, b"/c", R.F_NO_RET | by(2), ret=None))
    assert at_exec["file"]["closed_by"] == "exec" and at_exec["proc"]["exe"] == "/bin/w"
    [exit_event] = events(b, R.ExitRecord(R.Header(2, 1, PID, PID, 1, 0, 0, R.KIND_EXIT, 0, "w"),
                                          0))
    [at_exit] = events(b, rec(R.KIND_CLOSE_WRITE, b"/d", R.F_NO_RET | by(1), ret=None))
    assert at_exit["file"]["closed_by"] == "exit"
    assert at_exit["proc"] is exit_event["proc"] and at_exit["proc"]["exe"] == "/bin/w"
    assert at_exit["file"]["path"] == "/d"


def test_an_o_tmpfile_is_named_by_its_link() -> None:
    b = builder()
    walked = b"/work/#7"  # the kernel's made-up dentry name
    assert events(b, rec(R.KIND_CREATE, walked, R.F_TMPFILE, ret=3)) == []
    [write] = events(b, rec(R.KIND_MODIFY, walked, R.F_TMPFILE, ret=1))
    assert write["file"]["path"] == "/work" and write["file"]["tmpfile"] is True
    [create] = events(b, rec(R.KIND_LINK, b"/proc/self/fd/3", R.F_TMPFILE,
                             path2=b"/work/final", oflags=0o20000001))
    assert create["type"] == "create" and create["file"]["path"] == "/work/final"
    assert create["file"]["tmpfile"] is True and create["file"]["inode"] == 7
    assert create["file"]["flags"] == 0o20000001  # the open flags: O_TMPFILE | O_WRONLY
    [closed] = events(b, rec(R.KIND_CLOSE_WRITE, walked, R.F_TMPFILE | R.F_NO_RET | by(1),
                             ret=None))
    assert closed["file"]["path"] == "/work/final" and closed["file"]["closed_by"] == "exit"
    # Another tmpfile (another inode) is still unnamed.
    [other] = events(b, rec(R.KIND_MODIFY, b"/work/#8", R.F_TMPFILE, ino=8))
    assert other["file"]["path"] == "/work"


def test_a_failed_tmpfile_link_names_nothing() -> None:
    b = builder()
    [failed] = events(b, rec(R.KIND_LINK, b"", R.F_TMPFILE, ret=-17, path2=b"/work/taken"))
    assert failed["type"] == "create" and failed["ret"] == -17
    [write] = events(b, rec(R.KIND_MODIFY, b"/work/#7", R.F_TMPFILE))
    assert write["file"]["path"] == "/work"


def test_rename_whiteout_adds_the_whiteout_create() -> None:
    b = builder()
    evs = events(b, rec(R.KIND_RENAME, b"/u/old", path2=b"/u/new", oflags=RENAME_WHITEOUT))
    assert [(e["type"], e["file"]["path"]) for e in evs] == [
        ("moved_from", "/u/old"), ("moved_to", "/u/new"), ("create", "/u/old")]
    assert evs[2]["file"]["whiteout"] is True and "flags" not in evs[2]["file"]
    failed = events(b, rec(R.KIND_RENAME, b"/u/old", ret=-1, path2=b"/u/new",
                           oflags=RENAME_WHITEOUT))
    assert [e["type"] for e in failed] == ["moved_from", "moved_to"]
    plain = events(b, rec(R.KIND_RENAME, b"/u/a", path2=b"/u/b"))
    assert [e["type"] for e in plain] == ["moved_from", "moved_to"]
