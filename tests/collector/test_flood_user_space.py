"""Isolation in user space (issue 15): a repeat record makes its thread's last
file event again with `count`; the kernel's overflow counters become summary
events, each count reported exactly once; both fit the contract."""

from __future__ import annotations

from snoopbus.collector import records as R
from snoopbus.collector.events import EventBuilder
from snoopbus.collector.proc_cache import ProcCache, ProcInfo
from snoopbus.collector.summary import Overflow, SummaryDrain
from snoopbus.proto import as_map, event_subject, family, validate_event

COMM = b"flood".ljust(16, b"\0")


def file_rec(tid: int, kind: int = R.KIND_CLOSE_WRITE, ts: int = 10, path: bytes = b"x") -> bytes:
    hdr = R.HDR.pack(ts, 0, 100, tid, 1, 65534, 65534, kind, R.F_NO_RET, COMM)
    walked = path + b"\0" + b"tmp\0"  # leaf first: /tmp/x
    tail = R.FILE_TAIL.pack(0, 0, 42, (8 << 20) | 1, 4026531840, 3, 1, 0, 3, len(walked), 0, 0, 0)
    return hdr + tail + walked


def repeat_rec(tid: int, count: int, of_kind: int = R.KIND_CLOSE_WRITE, ts: int = 99) -> bytes:
    hdr = R.HDR.pack(ts, 0, 100, tid, 1, 65534, 65534, R.KIND_REPEAT, 0, COMM)
    return hdr + R.REPEAT_TAIL.pack(count, of_kind, 0)


def builder(**kw: object) -> EventBuilder:
    cache = ProcCache()
    cache.put(100, ProcInfo("/usr/bin/flood", ["flood"], "/tmp"))
    return EventBuilder("h1", "inst", cache, **kw)  # type: ignore[arg-type]


def test_a_repeat_is_the_last_event_again_with_its_count() -> None:
    b = builder()
    [(subject, first)] = b.build_raw(file_rec(101))
    assert "count" not in first  # absent means 1
    [(subject2, again)] = b.build_raw(repeat_rec(101, 5))
    assert subject2 == subject == event_subject("h1", "close_write")
    assert again["count"] == 5 and again["id"] != first["id"]
    assert again["ts"] == first["ts"] + 89  # the time of the last of the repeats
    assert again["file"] == first["file"] and again["proc"] == first["proc"]
    validate_event(again)
    assert b.orphan_repeats == 0


def test_a_repeat_belongs_to_its_own_thread_and_kind() -> None:
    b = builder()
    b.build_raw(file_rec(101))
    b.build_raw(file_rec(102, R.KIND_MODIFY))
    [(_, ev)] = b.build_raw(repeat_rec(101, 2))
    assert ev["type"] == "close_write" and ev["proc"]["tid"] == 101
    assert b.build_raw(repeat_rec(102, 3)) == []  # of close_write, but 102's last was a modify
    assert b.build_raw(repeat_rec(103, 4)) == []  # no base known
    assert b.orphan_repeats == 7  # counted (as lost), never silent


def test_a_filtered_base_makes_filtered_repeats() -> None:
    b = builder(path_filter=lambda p: False)
    assert b.build_raw(file_rec(101)) == []
    assert b.build_raw(repeat_rec(101, 9)) == []
    assert b.orphan_repeats == 0


def test_a_short_record_is_refused_as_undecodable() -> None:
    import pytest

    with pytest.raises(R.RecordError):
        builder().build_raw(b"\x01\x00")
    with pytest.raises(R.RecordError):
        builder().build_raw(repeat_rec(101, 1)[:-2])


def over(summarized: int, lost: int = 0, last_ts: int = 200, tgid: int = 100) -> Overflow:
    return Overflow(tgid, R.KIND_CREATE, summarized, lost, 100, last_ts, 42, (8 << 20) | 1,
                    65534)


def test_overflow_growth_becomes_summary_events_exactly_once() -> None:
    alive = {100: True}
    drain = SummaryDrain(builder(), alive=lambda pid: alive[pid])
    out, gone = drain.drain([over(1000, 3)])
    [(subject, ev)] = out
    assert subject == event_subject("h1", "summary") and family("summary") == "file"
    validate_event(ev)
    assert (ev["of"], ev["count"], ev["lost"]) == ("create", 1000, 3)
    assert ev["proc"]["pid"] == 100 and ev["proc"]["exe"] == "/usr/bin/flood"
    assert ev["proc"]["uid"] == 65534 and ev["file"]["inode"] == 42
    assert ev["since"] < ev["ts"]
    assert drain.drain([over(1000, 3)]) == ([], [])  # no growth, nothing new
    [(_, ev2)], _ = drain.drain([over(1500, 3, last_ts=300)])
    assert ev2["count"] == 500 and "lost" not in ev2 and ev2["since"] == ev["ts"]
    alive[100] = False
    out, gone = drain.drain([over(1600, 3, last_ts=400)])
    assert [e["count"] for _, e in out] == [100] and gone == []  # gone now: final next time
    out, gone = drain.drain([over(1700, 3, last_ts=500)])
    assert [e["count"] for _, e in out] == [100] and gone == [(100, R.KIND_CREATE)]
    assert (drain.summarized, drain.lost) == (1700, 3)


def test_the_builders_drain_keeps_each_threads_last_record_for_its_repeats() -> None:
    """build_many (natively, where built: fastbuild.c keeps the records) and
    the Python path: a repeat in the same drain as its base, and in a later one."""
    for native in (True, False):
        b = builder(use_native=native)
        first = b.build_many([file_rec(101), file_rec(102, R.KIND_MODIFY), repeat_rec(101, 5)])
        later = b.build_many([repeat_rec(102, 2, R.KIND_MODIFY)])
        counts = [(as_map(e) if isinstance(e, bytes) else e).get("count") for _, e in first + later]
        assert counts == [None, None, 5, 2], native
        assert b.orphan_repeats == 0
