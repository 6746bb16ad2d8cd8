"""Hostile input: the decoder and each consumer's handler, fuzzed with hypothesis.

Bounded for CI (a few seconds in all). A longer run, same tests:

    SNOOPBUS_FUZZ_EXAMPLES=20000 .venv/bin/pytest -q tests/consumers/test_fuzz.py

(or `.venv/bin/python -m tests.bench.faults fuzz --examples 20000`).
"""

from __future__ import annotations

import json
import time
from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers import dlq as dlq_headers
from snoopbus.consumers.archive.columns import restore_texts, texts_cell, to_json
from snoopbus.consumers.forward.cef import render_cef
from snoopbus.consumers.forward.ecs import to_ecs
from snoopbus.consumers.forward.jsonl import to_native
from snoopbus.consumers.forward.ocsf import to_ocsf
from snoopbus.consumers.forward.sink import Item
from snoopbus.consumers.forward.syslog import render_5424
from snoopbus.consumers.pairing import PairTable
from snoopbus.proto import (
    MAX_BATCH_EVENTS,
    SCHEMA_VERSION,
    DecodeError,
    SchemaError,
    decode_batch,
    encode_batch,
    event_subject,
    validate_event,
)
from tests.support.bus import dead_letters
from tests.support.consumers import Collector, running
from tests.support.events import bare_exec
from tests.support.fuzz import ENGINE, FUZZ, events, hostile_corpus, msgpack_values
from tests.support.waits import until

# -- the decoder ---------------------------------------------------------------


def decodes_or_refuses(data: bytes) -> None:
    try:
        out = decode_batch(data)
    except SchemaError:  # DecodeError included: a clear refusal, nothing else
        return
    assert isinstance(out, list) and out


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    decodes_or_refuses(data)


@FUZZ
@given(st.lists(st.dictionaries(
    st.sampled_from(["v", "id", "ts", "host", "type", "proc", "file", "cookie", "x"]),
    msgpack_values, max_size=9), min_size=1, max_size=5) | msgpack_values)
def test_wrong_types_anywhere(obj: Any) -> None:
    decodes_or_refuses(msgpack.packb(obj, use_bin_type=True))


GOOD = encode_batch([bare_exec(argv=["sh", "-c", "x"], cwd="/"), bare_exec()])


def test_every_truncation_is_refused_and_hostile_shapes_are_cheap() -> None:
    for cut in range(len(GOOD)):
        try:
            decode_batch(GOOD[:cut])
            raise AssertionError(f"a payload cut at {cut} decoded")
        except DecodeError:
            pass
    started = time.monotonic()
    hostile = [
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion elements
        msgpack.packb([{}] * (MAX_BATCH_EVENTS + 1)),
        b"\x91" * 100_000 + b"\x80",  # 100k nested arrays
        msgpack.packb([{"v": SCHEMA_VERSION + 1, "id": 1}]),
        b"\xc1",  # never used in msgpack
        b"\xd4\x01\x00",  # an ext type
    ]
    for data in hostile:
        decodes_or_refuses(data)
    assert time.monotonic() - started < 2


# -- each consumer's handler, on valid events with hostile text -------------------

@FUZZ
@given(st.lists(events(), min_size=1, max_size=4))
def test_hostile_text_through_every_handler(batch: list[dict[str, Any]]) -> None:
    # The wire: it round-trips exactly, surrogates included.
    assert decode_batch(encode_batch(batch)) == batch
    # Alerter: matching never raises, and no rule errored.
    for ev in batch:
        ENGINE.match(ev)
    assert not ENGINE.errors
    # Rename pairer: outputs are valid events of the contract.
    table = PairTable(window=1, max_pending=10)
    outs = [o for ev in batch if ev["type"].startswith("moved")
            for o in table.add(ev, ev["id"], 0.0)] + table.expire(10.0)
    for o in outs:
        validate_event(o.event)
        decode_batch(encode_batch([o.event]))
    # Archiver: text columns keep every string exactly, JSON cells stay JSON.
    for ev in batch:
        argv = ev["proc"]["argv"]
        assert restore_texts(*texts_cell(argv)) == argv
        json.loads(to_json(ev))
    # Forwarder: one line per record in line formats, valid JSON in the others.
    for ev in batch:
        item = Item("event", ev, 0, event_subject("h", ev["type"]))
        # CEF is one line per record; RFC 5424 is octet-counted, so its
        # structured data keeps text raw (test_forward_syslog round-trips it).
        line = render_cef(item)
        assert "\n" not in line and "\r" not in line
        assert render_5424(item, 8192).startswith("<")
        for doc in (to_ecs(item), to_ocsf(item), to_native(item)):
            json.loads(json.dumps(doc, ensure_ascii=False))


# -- the runtime: hostile messages among good ones, on a real server -----------------


async def test_bad_messages_are_dead_lettered_and_good_ones_flow_around_them(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    from snoopbus.proto import ensure_stream

    await ensure_stream(js)
    bad = hostile_corpus()
    subject = event_subject("h1", "exec")
    good_ids = []
    for data in bad:
        ev = bare_exec(comm="ok")
        good_ids.append(ev["id"])
        await js.publish(subject, encode_batch([ev]))
        await js.publish(subject, data)
    c = Collector("fuzz")
    async with running(c, nats_server.url) as rt:
        letters = await dead_letters(js, "fuzz", len(bad))
        # Bad ones are dead-lettered as they are decoded; good ones fetched before
        # them may still be in a handler's batch (batches run side by side).
        await until(lambda: len(c.events) >= len(good_ids), what="every good event handled")
        assert sorted(e["id"] for e in c.events) == sorted(good_ids)
    assert sorted(m.data for m in letters) == sorted(bad)
    assert all(m.headers and m.headers[dlq_headers.REASON] for m in letters)
    assert rt.counters.dead_lettered == len(bad) and rt.counters.failed == 0
    print(f"\nFUZZ runtime: {len(bad)} hostile messages dead-lettered with a reason, "
          f"{len(good_ids)} good ones between them processed")
