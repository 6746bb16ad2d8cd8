"""Cutting events into messages that fit a byte budget (collector/fit.py): pure logic."""

from __future__ import annotations

from typing import Any

import pytest

from snoopbus.collector.fit import EventTooLarge, Unencodable, fit, fit_all, truncate_event
from snoopbus.proto import TRUNCATED_PREFIX, decode_batch, encode_batch, validate_event
from tests.support.events import event as build_event


def event(i: int, argv_bytes: int = 0, path: str = "/data/f", **proc: Any) -> dict[str, Any]:
    return build_event("create", id=f"i-{i}", ts=i, host="h", file={"path": f"{path}{i}"},
                       proc={"pid": 7, "comm": "cp", "argv": ["cp", "a" * argv_bytes], **proc})


def test_a_batch_under_the_budget_is_one_message() -> None:
    events = [event(i) for i in range(50)]
    [(run, data)] = list(fit(events, 1 << 20))
    assert run == events and data == encode_batch(events)


def test_an_oversized_batch_is_split_in_order_and_every_piece_fits() -> None:
    events = [event(i, argv_bytes=7000) for i in range(300)]  # ~2.1 MB: the attack's batch
    budget = 64 << 10
    runs = list(fit(events, budget))
    assert len(runs) > 30
    assert all(len(data) <= budget for _, data in runs)
    assert [e["id"] for run, _ in runs for e in run] == [e["id"] for e in events]
    assert all(decode_batch(data) == run for run, data in runs)  # nothing cut: it all fitted


def test_an_event_too_large_alone_is_cut_argv_first_and_flagged() -> None:
    big = event(1, argv_bytes=5000)
    shared_proc = big["proc"]
    [(run, data)] = list(fit([big], 2000))
    [cut] = decode_batch(data)
    assert len(data) <= 2000 and run == [cut]
    assert cut["proc"]["argv_truncated"] is True and cut["proc"]["argv"][0] == "cp"
    assert cut["proc"]["argv"][1] == "a" * len(cut["proc"]["argv"][1])  # its start, kept
    assert cut["file"] == {"path": "/data/f1"} and "path_truncated" not in cut["file"]
    assert shared_proc["argv"][1] == "a" * 5000  # the original (shared by events) untouched
    validate_event(cut)


def test_when_argv_is_not_enough_paths_go_next_keeping_their_end() -> None:
    deep = "/" + "d" * 3000 + "/name"
    ev = event(2, argv_bytes=500, path=deep)
    cut = truncate_event(ev, 1500)
    assert len(encode_batch([cut])) <= 1500
    assert cut["proc"]["argv_truncated"] is True and len("".join(cut["proc"]["argv"])) <= 256
    assert cut["file"]["path_truncated"] is True and cut["file"]["path"].endswith("/name2")
    assert cut["file"]["path"].startswith(TRUNCATED_PREFIX)  # never mistaken for a real path
    assert cut["file"]["path"].count(TRUNCATED_PREFIX) == 1  # cut twice, marked once
    assert len(cut["file"]["path"]) > 500  # the path kept what argv gave back


def test_then_any_other_long_text_and_short_fields_only_when_nothing_else_is_left() -> None:
    ev = event(3, argv_bytes=600, container="c" * 3000, exe="/bin/cp")
    cut = truncate_event(ev, 1000)
    assert len(encode_batch([cut])) <= 1000
    # first pass: argv down to 256 bytes, then the container; exe and path untouched
    assert cut["proc"]["argv_truncated"] and 200 < len("".join(cut["proc"]["argv"])) <= 256
    assert cut["proc"]["container_truncated"] is True and cut["proc"]["exe"] == "/bin/cp"
    assert "exe_truncated" not in cut["proc"] and cut["file"]["path"] == "/data/f3"
    tight = truncate_event(ev, 200)  # second pass: everything down to nothing if need be
    assert len(encode_batch([tight])) <= 200 and tight["proc"]["argv"] == []


def test_non_utf8_text_is_cut_on_bytes_and_still_round_trips() -> None:
    raw = ("é" * 2000).encode() + b"\xff"  # two-byte characters, then a stray byte
    ev = event(4)
    ev["proc"]["argv"] = ["cp", raw.decode("utf-8", "surrogateescape")]
    cut = truncate_event(ev, 1200)
    [back] = decode_batch(encode_batch([cut]))
    kept = back["proc"]["argv"][1]
    assert kept and set(kept) == {"é"}  # not split in the middle of a character
    assert len(encode_batch([cut])) <= 1200


def test_an_event_that_cannot_fit_is_refused_and_the_rest_still_goes() -> None:
    events = [event(i, argv_bytes=1000) for i in range(5)]
    with pytest.raises(EventTooLarge):
        truncate_event(events[0], 40)  # less than its fixed fields
    events[2]["host"] = "h" * 500  # not cut: the one event that cannot fit 300 bytes
    ok, refused = fit_all(events, 300)
    assert [e["id"] for e, _ in refused] == ["i-2"]
    assert isinstance(refused[0][1], EventTooLarge)
    assert [e["id"] for run, _ in ok for e in run] == ["i-0", "i-1", "i-3", "i-4"]
    assert all(len(data) <= 300 and e["proc"]["argv_truncated"]
               for run, data in ok for e in run)


def test_an_unencodable_event_is_refused_alone() -> None:
    bad = event(5)
    bad["proc"]["comm"] = "\ud800"  # a lone surrogate no kernel byte stands for
    ok, refused = fit_all([event(1), bad, event(2)], 1 << 20)
    assert [e["id"] for run, _ in ok for e in run] == ["i-1", "i-2"]
    assert [(e["id"], type(why)) for e, why in refused] == [("i-5", Unencodable)]
