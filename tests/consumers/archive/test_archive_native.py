"""The archive's native decoder (fastcols.c) against the reference path.

Every payload it takes must give exactly the rows the reference path gives
(the msgspec records, then columns.records_table, the reference's equal);
every payload the reference would treat otherwise (convert, dead-letter,
split) it must leave out, without disturbing the payloads around it in the
same batch. Through a real nats-server the archive must hold exactly the
reference rows with it on and off (test_archive_columns.py, both ways).
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from snoopbus.consumers.archive import native
from snoopbus.consumers.archive.columns import NS_PER_DAY
from snoopbus.proto import decode_batch, decode_records, encode_batch, event_subject
from tests.support.archive import corpus, reference_table
from tests.support.events import mixed_event

pytestmark = pytest.mark.skipif(native.MISSING is not None, reason=native.status())


def by_subject(events: list[dict[str, Any]]) -> list[bytes]:
    """The payloads a collector would send: one per host and type."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for ev in events:
        groups.setdefault(event_subject(ev["host"], ev["type"]), []).append(ev)
    return [encode_batch(evs) for evs in groups.values()]


def payloads() -> list[bytes]:
    return [p for batch in corpus() for p in by_subject(batch)]


def rows_of(decoded: native.Decoded, i: int) -> Any:
    span = decoded.spans[i]
    assert span is not None
    return decoded.table().slice(span.start, span.count)


def test_every_payload_taken_gives_the_reference_rows() -> None:
    data = payloads()
    decoded = native.Decoder().decode(data)  # one call for all, as for a fetched batch
    taken = 0
    for i, payload in enumerate(data):
        span = decoded.spans[i]
        if span is None:
            continue
        taken += 1
        assert decode_records(payload) is not None  # never past the reference's fast path
        reference = reference_table(decode_batch(payload, fast=False))
        assert rows_of(decoded, i).equals(reference), i
        assert decoded.ids[span.start : span.stop] == reference.column("id").to_pylist()
        assert span.day == reference.column("ts").cast("int64")[0].as_py() // NS_PER_DAY
    assert taken >= 0.8 * len(data), "the busy host's payloads and most odd ones"
    assert decoded.rows == sum(s.count for s in decoded.spans if s is not None)


def raw_map(pairs: list[tuple[Any, Any]]) -> bytes:
    """A msgpack map written pair by pair (msgpack.packb cannot repeat a key)."""
    return bytes([0x80 | len(pairs)]) + b"".join(msgpack.packb(k) + msgpack.packb(v)
                                                 for k, v in pairs)  # fmt: skip


def left_out() -> dict[str, bytes]:
    """Payloads the reference path converts, rejects or splits: never the decoder's."""
    def one(**change: Any) -> bytes:
        ev = mixed_event(3)
        for key, value in change.items():
            if value is None:
                del ev[key]
            else:
                ev[key] = value
        return msgpack.packb([ev])

    ev = mixed_event(3)
    other = "create" if ev["type"] != "create" else "delete"
    midnight = NS_PER_DAY * 20_000
    two_days = [{**ev, "ts": midnight - 1}, {**ev, "id": "h1-i1-98", "ts": midnight}]
    return {
        "an unknown key": one(future=1),
        "a nil": msgpack.packb([{**ev, "ret": None}]),
        "text as bin": msgpack.packb([{**ev, "file": {**ev["file"], "path": b"/tmp/caf\xe9"}}]),
        "not UTF-8": msgpack.packb([{**ev, "host": "h1"}]).replace(b"/var/data", b"/var/dat\xff"),
        "an int past int64": one(ret=2**63),
        "a negative unsigned": msgpack.packb([{**ev, "file": {**ev["file"], "inode": -1}}]),
        "a bool for an int": one(ret=True),
        "an int for a bool": msgpack.packb([{**ev, "file": {**ev["file"], "tmpfile": 1}}]),
        "a newer version": one(v=2),
        "no version": one(v=None),
        "no id": one(id=None),
        "an id with a space": one(id="h1 3"),
        "an empty host": one(host=""),
        "an unknown type": one(type="frobnicate"),
        "a key twice": b"\x91" + raw_map([*ev.items(), ("ret", 4)]),
        "proc twice": b"\x91" + raw_map([*ev.items(), ("proc", ev["proc"])]),
        "two hosts": msgpack.packb([ev, {**ev, "id": "h2-i1-3", "host": "h2"}]),
        "two types": msgpack.packb([ev, {**ev, "id": "h1-i1-99", "type": other}]),
        "two days": msgpack.packb(two_days),
        "trailing bytes": msgpack.packb([ev]) + b"\x00",
        "a map, not an array": msgpack.packb(ev),
        "an empty array": msgpack.packb([]),
        "an argv item not text": msgpack.packb([{**mixed_event(10), "proc": {
            **mixed_event(10)["proc"], "argv": ["a", 1]}}]),
        "cut short": msgpack.packb([ev])[:-3],
    }


@pytest.mark.parametrize("case", sorted(left_out()))
def test_what_the_reference_treats_otherwise_is_left_out(case: str) -> None:
    good = [encode_batch([mixed_event(n) for n in range(1, 30) if n % 10 == 1]),
            encode_batch([mixed_event(n) for n in range(2, 60, 10)])]  # fmt: skip
    bad = left_out()[case]
    decoded = native.Decoder().decode([good[0], bad, good[1]])
    assert decoded.spans[1] is None
    for i, payload in ((0, good[0]), (2, good[1])):  # the bad one's rows rewound, none kept
        assert rows_of(decoded, i).equals(reference_table(decode_batch(payload, fast=False)))
    assert decoded.rows == len(decoded.ids) == decoded.table().num_rows


def test_the_reference_fast_path_takes_the_well_formed_cases() -> None:
    """The left-out payloads above are left out for the reason named: their
    well-formed twin is taken."""
    ev = mixed_event(3)
    decoded = native.Decoder().decode([msgpack.packb([ev]), encode_batch([ev])])
    assert decoded.spans[0] is not None and decoded.spans[1] is not None
