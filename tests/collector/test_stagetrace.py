"""The latency bench's stage stamps: which message gets which drain's stamps."""

from __future__ import annotations

from pathlib import Path

from snoopbus.collector.stagetrace import StageTrace


def test_the_first_message_of_a_buffer_carries_its_oldest_drain(tmp_path: Path) -> None:
    trace = StageTrace(tmp_path / "t")
    trace.drained(100, 110)
    trace.submitted(["a"])
    trace.drained(200, 210)
    trace.submitted(["a", "b"])
    trace.cut([("a", "a-1"), ("a", "a-2"), ("b", "b-1")])
    for msg_id in ("a-1", "a-2", "b-1", "a-1"):  # the last: a retry, handed already
        trace.handed(msg_id)
    trace.close()
    lines = [line.split() for line in (tmp_path / "t").read_text().splitlines()]
    assert [(x[0], x[1:3]) for x in lines] == [("a-1", ["100", "110"]), ("b-1", ["200", "210"])]
    assert all(int(x[2]) <= int(x[3]) <= int(x[4]) for x in lines)  # built, cut, handed


def test_a_flush_forgets_what_it_cut(tmp_path: Path) -> None:
    trace = StageTrace(tmp_path / "t")
    trace.drained(100, 110)
    trace.submitted(["a"])
    trace.cut([("a", "a-1")])
    trace.drained(300, 310)
    trace.submitted(["a"])
    trace.cut([("a", "a-2")])
    trace.handed("a-2")
    trace.close()
    assert (tmp_path / "t").read_text().split()[:3] == ["a-2", "300", "310"]
