"""The decoder's fast path (proto/fastpath.py) against the reference path.

decode_batch tries msgspec's typed decode first: what it accepts must be
exactly what the reference path (msgpack + validate_event) makes of the same
bytes, and what it does not accept goes the reference path. So for any
payload: the same events (same types too: a bool is not an int), or the
same error. And the records a consumer may read instead of the maps hold
the same values.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from snoopbus.proto import (
    MAX_BATCH_EVENTS,
    SCHEMA_VERSION,
    SchemaError,
    decode_batch,
    decode_records,
    encode_batch,
    fastpath,
)
from tests.bench.alerter import iter_events
from tests.bench.archive import Events
from tests.support.fuzz import FUZZ, events, msgpack_values


def typed(obj: Any) -> Any:
    """`obj` with every value's type beside it: 1 and True must not compare equal."""
    if isinstance(obj, dict):
        return {k: typed(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [typed(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return ("float", "nan")  # NaN equals nothing, itself included: compare it by name
    return (type(obj).__name__, obj)


def outcome(data: bytes, fast: bool) -> tuple[str, Any]:
    try:
        return "events", typed(decode_batch(data, fast=fast))
    except SchemaError as exc:  # DecodeError too
        return type(exc).__name__, str(exc)


def same_both_ways(data: bytes) -> bool:
    """Assert the two paths agree on `data`; whether the fast path took it."""
    reference = outcome(data, fast=False)
    assert outcome(data, fast=True) == reference
    records = decode_records(data)
    if records is None:
        return False
    assert reference[0] == "events", "the fast path took what the reference refuses"
    events = decode_batch(data, fast=False)
    assert typed(fastpath.to_events(records)) == typed(events)
    for record, event in zip(records, events, strict=True):
        for within, names in fastpath.FIELDS.items():
            source = event if within is None else event.get(within, {})
            holder = record if within is None else getattr(record, within)
            for name in names:
                if name in ("proc", "file") and within is None:
                    continue
                value = None if holder is None else getattr(holder, name)
                assert typed(value) == typed(source.get(name)), (within, name)
    return True


def test_every_bench_event_takes_the_fast_path_and_agrees() -> None:
    archive = Events(3000)
    batches = [[archive.make(n) for n in range(i, i + 100)] for i in range(0, 3000, 100)]
    alerter = list(iter_events(2000))
    batches += [alerter[i : i + 100] for i in range(0, 2000, 100)]
    for batch in batches:
        assert same_both_ways(encode_batch(batch))


def test_extensions_of_the_schema_take_the_fast_path() -> None:
    ev = Events(10).make(3)
    ev["file"].update(closed_by="exit", host_path="/var/lib/x", path_truncated=True,
                      mnt_ns=4026531841, old_path_truncated=False)  # fmt: skip
    ev["proc"].update(argv_redacted=True, parent_argv=["sh"], parent_argv_truncated=True,
                      container="abc")  # fmt: skip
    assert same_both_ways(encode_batch([ev]))


def test_what_needs_the_reference_path_goes_there() -> None:
    base = Events(10).make(5)
    cases: dict[str, Any] = {
        "an unknown key": {**base, "future": 1},
        "an unknown key in proc": {**base, "proc": {**base["proc"], "x": [1, {2: 3}]}},
        "text as bin": {**base, "file": {**base["file"], "path": "/caf\udce9"}},
        "a newer version": {**base, "v": SCHEMA_VERSION + 1},
        "nil for a key": {**base, "ret": None},
        "a bool for an int": {**base, "ret": True},
        "an int for text": {**base, "host": 7},
        "an empty host": {**base, "host": ""},
        "an id with a space": {**base, "id": "a b"},
        "an id not ASCII": {**base, "id": "é"},
        "an id too long": {**base, "id": "x" * 1025},
        "an unknown type": {**base, "type": "teleport"},
        "no ts": {k: v for k, v in base.items() if k != "ts"},
        "a float ts": {**base, "ts": 1.5},
        "proc not a map": {**base, "proc": [1]},
        "argv not all text": {**base, "proc": {**base["proc"], "argv": ["a", 1]}},
    }
    for what, ev in cases.items():
        data = encode_batch([ev]) if what != "text as bin" else encode_batch([base, ev])
        assert decode_records(data) is None, what
        same_both_ways(data)
    for data in (
        b"", b"\xc1", b"\x90", msgpack.packb({"v": 1}), encode_batch([base]) + b"\x00",
        msgpack.packb([base] * (MAX_BATCH_EVENTS + 1)), b"\x91" * 5000 + b"\x80",
        msgpack.packb([{**base, 5: 1}]),  # a key that is not text
    ):  # fmt: skip
        assert decode_records(data) is None
        same_both_ways(data)


def test_a_repeated_key_reads_as_the_reference_reads_it() -> None:
    base = Events(10).make(7)
    packer = msgpack.Packer(use_bin_type=True)
    for first, last in ((1, 2), ("bad", 2), (2, "bad"), (None, 2)):
        ev = {**base, "ret": first}
        body = packer.pack(ev)
        # One more "ret" appended to the map: fixmap header + 1, then the pair.
        assert 0x80 <= body[0] < 0x8F
        data = b"\x91" + bytes([body[0] + 1]) + body[1:] + packer.pack("ret") + packer.pack(last)
        same_both_ways(data)


@FUZZ
@given(st.lists(events(), min_size=1, max_size=5))
def test_valid_hostile_events_agree(batch: list[dict[str, Any]]) -> None:
    same_both_ways(encode_batch(batch))


@FUZZ
@given(st.lists(st.dictionaries(
    st.sampled_from(["v", "id", "ts", "host", "type", "proc", "file", "cookie", "ret", "x"]),
    msgpack_values, max_size=10), min_size=1, max_size=4))  # fmt: skip
def test_wrong_types_anywhere_agree(batch: list[dict[str, Any]]) -> None:
    same_both_ways(msgpack.packb(batch, use_bin_type=True))


@FUZZ
@given(events(), st.sampled_from(["proc", "file", None]), st.text(max_size=12), msgpack_values)
def test_one_key_changed_agrees(ev: dict[str, Any], within: str | None, key: str,
                                value: Any) -> None:  # fmt: skip
    target = ev if within is None else ev.setdefault(within, {})
    key = key or "pid"
    target[key] = value
    same_both_ways(encode_batch([ev]))  # the wire's own packing: kernel text may hold surrogates
