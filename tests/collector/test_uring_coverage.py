"""io_uring records, events and doctor coverage: pure, no root, no kernel
(tests/collector/test_file_uring.py runs the real thing)."""

from __future__ import annotations

import time

from snoopbus.collector import records as R
from snoopbus.collector import uring
from snoopbus.collector.capabilities import Check, choose_hooks
from snoopbus.collector.doctor import Report, render
from snoopbus.collector.events import EventBuilder
from snoopbus.collector.proc_cache import ProcCache, ProcInfo
from snoopbus.proto import validate_event

PID = 77
F_URING = 1 << 15
SLOT0 = -2  # URING_SLOT_FD(0) in bpf/uring.h


def record(kind: int, segs: list[bytes], op: int, flags: int = F_URING, ret: int = 0,
           fd: int = -1, cookie: int = 0) -> bytes:
    hdr = R.HDR.pack(time.monotonic_ns(), 7, PID, PID + 1, 1, 65534, 65534, kind, flags,
                     b"uring_ops".ljust(16, b"\0"))
    tail = R.FILE_TAIL.pack(ret, cookie, 99, (8 << 20) | 1, 4026531840, op, 0o101, 0o640, fd,
                            *[len(s) for s in segs])
    return hdr + tail + b"".join(segs)


def builder() -> EventBuilder:
    cache = ProcCache()
    cache.put(PID, ProcInfo(exe="/usr/bin/uring_ops", argv=["uring_ops"], cwd="/w"))
    return EventBuilder("h1", "inst", cache)


def test_events_say_they_came_through_io_uring() -> None:
    b = builder()
    base = b"w\0"
    out = b.build_raw(record(R.KIND_RENAME, [base, b"a\0", base, b"b\0"], op=35, cookie=5,
                             flags=F_URING | R.F_NO_RET))
    assert [(e["type"], e["file"]["path"], e["via"], e["io_uring_op"]) for _, e in out] == [
        ("moved_from", "/w/a", "io_uring", "renameat"),
        ("moved_to", "/w/b", "io_uring", "renameat"),
    ]
    assert out[0][1]["cookie"] == out[1][1]["cookie"]
    assert "ret" not in out[0][1]  # reported at submit
    assert out[0][1]["proc"]["comm"] == "uring_ops" and out[0][1]["proc"]["tid"] == PID + 1
    for _, ev in out:
        validate_event(ev)
    # A syscall's record has neither field.
    [(_, plain)] = b.build_raw(record(R.KIND_DELETE, [base, b"a\0", b"", b""], op=87, flags=0))
    assert "via" not in plain and "io_uring_op" not in plain


def test_a_fixed_slot_close_is_named_by_the_write_that_counted() -> None:
    """The close of a slot a linked open filled has no file at submit: user
    space names it from the slot's modify, and drops it when nothing was written."""
    b = builder()
    [(_, mod)] = b.build_raw(record(R.KIND_MODIFY, [b"direct\0w\0", b"", b"", b""], op=2,
                                    ret=7, fd=SLOT0))
    assert (mod["type"], mod["file"]["path"], mod["io_uring_op"]) == ("modify", "/w/direct",
                                                                      "writev")
    gone = F_URING | R.F_FD_GONE | R.F_PATH_TRUNC
    [(_, close)] = b.build_raw(record(R.KIND_CLOSE_WRITE, [b"", b"", b"", b""], op=19,
                                      flags=gone, fd=SLOT0))
    assert (close["type"], close["file"]["path"], close["io_uring_op"]) == (
        "close_write", "/w/direct", "close")
    validate_event(close)
    # A direct open names its slot (its ret is 0: never fd 0's) for the close.
    b.build_raw(record(R.KIND_MODIFY, [b"f\0w\0", b"", b"", b""], op=23, ret=1, fd=0))
    b.build_raw(record(R.KIND_CREATE, [b"g\0w\0", b"", b"", b""], op=18, ret=0, fd=SLOT0 - 1))
    [(_, close)] = b.build_raw(record(R.KIND_CLOSE_WRITE, [b"", b"", b"", b""], op=19,
                                      flags=gone, fd=SLOT0 - 1))
    assert close["file"]["path"] == "/w/g"
    # Closed once: a second close of the slot names nothing.
    assert b.build_raw(record(R.KIND_CLOSE_WRITE, [b"", b"", b"", b""], op=19, flags=gone,
                              fd=SLOT0)) == []


def test_coverage_names_what_is_missing() -> None:
    assert all(c.seen for c in uring.coverage({}, {}))
    # One field of renameat's command data gone: renameat says which, the
    # others that the whole block is off (one missing field disables it).
    cov = {c.op.name: c for c in uring.coverage({"OFF_IO_RENAME_NEWPATH": "no member"}, {})}
    assert not cov["renameat"].seen and "io_rename.newpath: no member" in cov["renameat"].detail
    assert not cov["write"].seen and "1 fields" in cov["write"].detail
    cov = {c.op.name: c for c in uring.coverage({}, {"io_uring_submit_req": "ENOENT"})}
    assert not any(c.seen for c in cov.values()) and cov["openat"].detail == "ENOENT"
    ops = {op.name for op in uring.OPS}
    assert {"openat", "write", "close", "renameat", "unlinkat", "mkdirat", "linkat",
            "symlinkat"} <= ops


def test_doctor_lists_each_operation() -> None:
    checks = [Check("raw_tracepoint", True, "fine")]
    cov = uring.coverage({"OFF_IO_UNLINK_FLAGS": "gone"}, {})
    report = Report(checks, choose_hooks(checks), {}, {}, "/btf", uring=cov,
                    uring_users="every user")
    text = render(report)
    assert "io_uring requests (0 of" in text
    assert "MISS  unlinkat" in text and "io_unlink.flags: gone" in text
    assert "MISS  setxattr" in text
    ops = report.to_json()["io_uring"]["operations"]
    assert ops["unlinkat"]["seen"] is False and ops["linkat"]["events"] == "link"
    full = Report(checks, choose_hooks(checks), {}, {}, "/btf",
                  uring=uring.coverage({}, {}), uring_users="all")
    assert f"({len(uring.OPS)} of {len(uring.OPS)} operations seen; all)" in render(full)
