"""The archive's fast path against the reference, and its memory bounded by bytes.

Rows are built from the decoder's typed records a fetched batch at a time
(columns.records_table); the reference is what the archive did before: event
maps from the reference decoder, check_event, event_table. On a fixed corpus
(busy-host events, every schema extension, keys the schema does not know,
text that is not UTF-8) the tables must be equal, and through a real
nats-server the archive must hold exactly the reference rows.

Memory: a backlog of large events must not grow the open window past its
byte bound, nor the recent ids past theirs, nor a fetch past its own: the
assertions are on the buffers' own accounting, not on timing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers import Batch, Runtime, Settings
from snoopbus.consumers.archive.archiver import Archiver
from snoopbus.consumers.archive.columns import (
    records_table,
)
from snoopbus.consumers.archive.writer import RecentIds
from snoopbus.consumers.delivery import Delivery, State
from snoopbus.proto import (
    decode_batch,
    decode_records,
    encode_batch,
    ensure_stream,
    event_subject,
)
from tests.support.archive import archived_rows, archiver, corpus, reference_table, settled
from tests.support.events import mixed_event


def test_record_columns_equal_the_reference_columns() -> None:
    fast = 0
    for batch in corpus():
        data = encode_batch(batch)
        reference = reference_table(decode_batch(data, fast=False))
        records = decode_records(data)
        if records is not None:
            fast += 1
            assert records_table(records).equals(reference), batch[0]["id"]
        else:
            assert reference_table(decode_batch(data)).equals(reference)
    assert fast >= 20, "the busy-host mix and most odd batches take the fast path"


def test_a_value_no_column_holds_fails_the_fast_build() -> None:
    ev = mixed_event(1)
    ev["ret"] = 2**63  # msgpack carries it, int64 does not
    records = decode_records(encode_batch([ev]))
    assert records is not None
    with pytest.raises((pa.ArrowInvalid, OverflowError)):
        records_table(records)


@pytest.mark.parametrize("native", ["1", "0"])  # the native decoder (if built), then without
async def test_the_archive_holds_exactly_the_reference_rows(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path, native: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SNOOPBUS_NATIVE", native)
    await ensure_stream(js)
    batches = corpus()
    for batch in batches:  # each message of one subject's host and type, as the contract says
        by_subject: dict[str, list[dict[str, Any]]] = {}
        for ev in batch:
            by_subject.setdefault(event_subject(ev["host"], ev["type"]), []).append(ev)
        for subject, evs in by_subject.items():
            await js.publish(subject, encode_batch(evs))
    root = tmp_path / "archive"
    async with archiver(nats_server.url, root):
        await settled(js)
    table = pa.concat_tables(
        reference_table(decode_batch(encode_batch(b), fast=False)) for b in batches
    )
    want = table.set_column(0, "ts", table.column("ts").cast(pa.int64())).to_pylist()
    got = archived_rows(root)
    for row in got:
        row.pop("date"), row.pop("host")  # the folder's keys
    key = lambda r: (r["host_name"], r["id"])  # noqa: E731
    assert sorted(got, key=key) == sorted(want, key=key)


# -- memory, by bytes ------------------------------------------------------------------


def big_event(n: int, size: int) -> dict[str, Any]:
    ev = mixed_event(n * 10)  # an exec: argv rides on it
    ev["proc"]["argv"] = ["/usr/bin/x", "y" * size]
    return ev


class Watched(Archiver):
    """Records the open window's bytes after every batch is added, before the
    archiver decides whether to roll, as it counts them."""

    peak = 0

    async def _roll_if_full(self) -> None:
        self.peak = max(self.peak, self.writer.window.nbytes)
        await super()._roll_if_full()


async def test_a_backlog_of_large_events_stays_within_the_byte_bounds(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    await ensure_stream(js)
    fetch_bytes = 512 << 10
    for n in range(400):  # 400 messages of ~40 KB: 16 MB
        await js.publish(event_subject("h1", "exec"), encode_batch([big_event(n, 40_000)]))
    settings = Settings(batch=256, fetch_bytes=fetch_bytes, fetch_timeout=0.2, concurrency=1)
    roll_bytes = 2 << 20
    a = Watched(tmp_path / "archive", roll_seconds=3600, roll_bytes=roll_bytes,
                settings=settings, gc_tuning=False)  # fmt: skip
    runtime = Runtime(a, servers=nats_server.url, settings=settings)
    task = asyncio.create_task(runtime.run())
    try:
        async with asyncio.timeout(20):
            while a.writer.rows_written + a.writer.window.rows < 400:
                await asyncio.sleep(0.05)
        size_rolls = a.commits  # the clock never fires: every commit so far was by size
    finally:
        runtime.stop()  # the last window is committed at the stop
        await asyncio.wait_for(task, 20)
    assert a.writer.rows_written == 400
    assert runtime.puller is not None
    # A fetch is cut at its byte bound (the server's max_payload at least, 1 MiB here)...
    bound = runtime.puller.max_bytes
    assert bound == max(fetch_bytes, (1 << 20) + (64 << 10))  # nats-server's default 1 MiB
    assert 0 < runtime.puller.largest <= bound
    # ...and the window rolls once it holds roll_bytes (rows as columns, ~40 KB an
    # event here, and what its held messages cost): it never holds more than that
    # plus what one fetch brought.
    assert size_rolls >= 5
    assert roll_bytes <= a.peak <= roll_bytes + bound


def test_recent_ids_stay_within_their_byte_bound() -> None:
    recent = RecentIds(horizon=3600, max_ids=10**9, max_bytes=200_000)
    for batch in range(100):
        recent.add_ids("events", "h1", [f"host-instance-{batch}-{i}" for i in range(100)])
        assert recent.nbytes <= 200_000
    assert ("events", "h1", "host-instance-99-5") in recent  # the newest stay
    assert ("events", "h1", "host-instance-0-5") not in recent  # the oldest went first
    assert 0 < len(recent) < 10_000


async def test_held_deliveries_keep_neither_events_nor_payload(tmp_path: Path) -> None:
    from tests.support.fakebus import Bus
    from tests.support.fakebus import Msg as FakeMsg

    a = Archiver(tmp_path / "a", roll_seconds=3600, gc_tuning=False)
    runtime = Runtime(a, nc=cast(Client, object()))
    runtime._js = Bus()  # type: ignore[assignment]  # where a dead letter would go
    data = encode_batch([mixed_event(n) for n in range(20)])
    msg = FakeMsg(event_subject("h1", "open"), data, 1)
    delivery = Delivery(msg, None, runtime, decode_records(data))  # type: ignore[arg-type]
    await a.handle(Batch([delivery]))
    assert delivery.state is State.HELD and a.writer.window.rows == 20
    # The window keeps columns; the held message keeps neither events nor payload...
    assert delivery.released and delivery.records is None and msg.data == b""
    with pytest.raises(RuntimeError, match="released"):
        _ = delivery.events  # never an empty list a retry would ack unread
    assert a.writer.window.nbytes < len(data) + a.writer.window.row_bytes
    # ...so it is never dead-lettered empty: the server redelivers it whole instead.
    await runtime.dead_letter(delivery, "rejected", "a handler's mistake")
    assert msg.calls == ["nak"] and not runtime._js.stored  # type: ignore[attr-defined]
