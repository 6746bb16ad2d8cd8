"""The archiver against a real nats-server: durable commits, dedup, alerts, bad input."""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers import Runtime, dlq
from snoopbus.consumers.archive import columns, layout
from snoopbus.consumers.archive.archiver import Archiver
from snoopbus.consumers.archive.columns import (
    EventBuffer,
    RowError,
    append_event,
    restore_text,
    restore_texts,
)
from snoopbus.consumers.archive.query import Filters, pick_engine, run_query
from snoopbus.consumers.archive.writer import RecentIds
from snoopbus.consumers.delivery import State
from snoopbus.proto import (
    STREAM_NAME,
    alert_subject,
    dlq_subject,
    encode_batch,
    encode_map,
    event_subject,
    host_token,
    text_from_kernel,
)
from tests.support.archive import FAST, archived_ids, archived_rows, archiver, settled
from tests.support.events import BASE_TS, mixed_event, publish_grouped


async def test_archives_every_event_once_a_file_per_commit_sorted_by_host(
    nats_server: NatsServer, stream: JetStreamContext, tmp_path: Path
) -> None:
    events = [mixed_event(n, host=f"h{n % 3}.example") for n in range(600)]
    root = tmp_path / "archive"
    async with archiver(nats_server.url, root) as (a, _):
        await publish_grouped(stream, events)
        await settled(stream)
    ids = archived_ids(root)
    assert sorted(ids) == sorted(e["id"] for e in events)
    # Every host's rows of a commit in one file of the day's folder, in host order.
    stored = list(layout.files(root))
    assert stored and all(f.path.parent.name.startswith("date=") for f in stored)
    assert a.writer.files_written == a.commits == len(stored)
    for f in stored:
        table = pq.read_table(f.path, columns=["host", "host_name"])
        hosts = table.column("host").to_pylist()
        assert hosts == sorted(hosts)
        assert hosts == [host_token(n) for n in table.column("host_name").to_pylist()]
    assert {r["host"] for r in archived_rows(root)} == {"h0_example", "h1_example", "h2_example"}
    assert not list(root.rglob(".*.tmp"))


async def dead_letters(nc_sub, n: int, limit: float = 15) -> list:  # type: ignore[no-untyped-def]
    got = []
    async with asyncio.timeout(limit):
        while len(got) < n:
            got.append(await nc_sub.next_msg(timeout=limit))
    return got


class CrashesBeforeAcking(Archiver):
    """Commits like the real one, then 'dies' before acking anything."""

    async def flush(self, *, force: bool = False) -> bool:
        async with self._lock:
            if self.writer.window.rows:
                window = self.writer.take()
                await asyncio.to_thread(self.writer.commit, window)
                self.writer.committed(window)
        return True


async def test_redelivery_after_a_commit_is_not_written_twice(
    nats_server: NatsServer, stream: JetStreamContext, tmp_path: Path
) -> None:
    events = [mixed_event(n) for n in range(300)]
    root = tmp_path / "archive"
    first = CrashesBeforeAcking(root, roll_seconds=0.2, settings=FAST, gc_tuning=False)
    runtime = Runtime(first, servers=nats_server.url)
    task = asyncio.create_task(runtime.run())
    await runtime.ready.wait()
    await publish_grouped(stream, events)
    async with asyncio.timeout(10):
        while len(archived_ids(root)) < len(events):
            await asyncio.sleep(0.05)
    runtime.stop()  # held messages are released unacked: all come back
    await asyncio.wait_for(task, 10)
    assert runtime.counters.released > 0
    async with archiver(nats_server.url, root) as (second, _):
        await settled(stream)
    assert second.writer.duplicates == len(events)
    assert sorted(archived_ids(root)) == sorted(e["id"] for e in events)


class LosesItsFirstAcks(Archiver):
    """Commits its first window like the real one, but the acks never reach the
    server (the connection dropped): its messages come back after ack_wait."""

    lost = False

    async def flush(self, *, force: bool = False) -> bool:
        if self.lost or not self.writer.window.rows:
            return await super().flush(force=force)
        async with self._lock:
            window = self.writer.take()
            await asyncio.to_thread(self.writer.commit, window)
            self.writer.committed(window)
            for delivery in window.deliveries:  # settled here, never told to the server
                delivery.state = State.ACKED
                delivery._settler._unsettled.pop(delivery, None)
            self.lost = True
        return True


async def test_a_late_redelivery_is_skipped_whole_when_its_ids_are_forgotten(
    nats_server: NatsServer, stream: JetStreamContext, tmp_path: Path
) -> None:
    events = [mixed_event(n) for n in range(200)]
    settings = replace(FAST, ack_wait=1.0)
    a = LosesItsFirstAcks(tmp_path / "archive", roll_seconds=0.2, settings=settings,
                          gc_tuning=False)  # fmt: skip
    a.writer.recent.max_bytes = 0  # no ids remembered once committed: only the messages
    runtime = Runtime(a, servers=nats_server.url, settings=settings)
    task = asyncio.create_task(runtime.run())
    try:
        await runtime.ready.wait()
        await publish_grouped(stream, events)
        async with asyncio.timeout(15):
            while a.writer.duplicates < len(events):  # all came back after ack_wait
                await asyncio.sleep(0.05)
        await settled(stream)
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 10)
    assert a.lost and len(a.writer.recent) == 0
    assert sorted(archived_ids(tmp_path / "archive")) == sorted(e["id"] for e in events)


async def test_malformed_and_unstorable_messages_are_dead_lettered(
    nats_server: NatsServer, stream: JetStreamContext, nc: Client, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    sub = await nc.subscribe(dlq_subject("archive"))
    good = [mixed_event(n) for n in range(20)]
    too_big = mixed_event(99)
    too_big["ret"] = 2**64 - 1  # a valid msgpack int, but no int64 column holds it
    async with archiver(nats_server.url, root) as (_, runtime):
        await stream.publish(event_subject("h1", "open"), b"\xc1 not msgpack")
        await publish_grouped(stream, good)
        await publish_grouped(stream, [too_big])  # the message is the unit that is given up
        letters = await dead_letters(sub, 2)
        await settled(stream)
    reasons = {m.headers[dlq.KIND]: m.headers[dlq.REASON] for m in letters}
    assert set(reasons) == {"decode", "schema"}
    assert "payload is not msgpack" in reasons["decode"]
    assert "event[0].ret: 18446744073709551615" in reasons["schema"]
    assert "does not fit" in reasons["schema"]
    assert sorted(archived_ids(root)) == sorted(e["id"] for e in good)
    assert runtime.counters.dead_lettered == 2


async def test_alerts_are_archived_and_a_bad_alert_dead_lettered(
    nats_server: NatsServer, stream: JetStreamContext, nc: Client, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    sub = await nc.subscribe(dlq_subject("archive"))
    async with archiver(nats_server.url, root) as (_, runtime):
        for i in range(5):
            # The alerter's shape: rule and triggering event nested.
            event = mixed_event(i + 1, host="web.1")
            alert = {"v": 1, "id": f"al-{i}", "ts": BASE_TS + i, "host": "web.1", "level": "high",
                     "rule": {"id": "r-1", "title": f"rule {i}"}, "category": "file_event",
                     "event": event, "count": 1, "score": 0.5}  # fmt: skip
            await stream.publish(alert_subject("web.1", "high"), encode_map(alert))
        await stream.publish(alert_subject("web.1", "low"), encode_map({"title": "bare"}))
        await stream.publish(alert_subject("web.1", "low"), b"\x93\x01\x02\x03")  # an array
        (letter,) = await dead_letters(sub, 1)
        await settled(stream)
    assert letter.headers[dlq.KIND] == "decode"
    rows = sorted(archived_rows(root, "alerts"), key=lambda r: r["id"])
    assert [r["id"] for r in rows[:5]] == [f"al-{i}" for i in range(5)]
    assert rows[5]["id"].startswith("seq-") and rows[5]["title"] == "bare"  # no id: stream seq
    first = rows[0]
    assert (first["level"], first["host"], first["host_name"]) == ("high", "web_1", "web.1")
    assert (first["title"], first["rule_id"], first["category"]) == ("rule 0", "r-1", "file_event")
    assert first["event_id"] == "web.1-i1-1" and first["proc_pid"] == 1001
    assert first["file_path"].startswith("/var/data/")
    assert json.loads(first["data"])["score"] == 0.5
    got = run_query(root, Filters(hosts=("web.1",)), kind="alerts", engine=pick_engine("pyarrow"))
    assert len(got) == 6
    assert runtime.counters.dead_lettered == 1


async def test_non_utf8_text_is_kept_exactly(
    nats_server: NatsServer, stream: JetStreamContext, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    odd = mixed_event(1)
    odd["file"]["path"] = text_from_kernel(b"/tmp/caf\xe9-\xff.txt")
    odd["proc"]["argv"] = ["cat", text_from_kernel(b"\xfe")]
    plain = mixed_event(10)
    async with archiver(nats_server.url, root):
        await publish_grouped(stream, [odd, plain])
        await settled(stream)
    rows = {r["id"]: r for r in archived_rows(root)}
    row = rows[odd["id"]]
    assert row["file_path_raw"] == b"/tmp/caf\xe9-\xff.txt"
    assert row["file_path"] == "/tmp/caf\ufffd-\ufffd.txt"  # readable, but lossy: use _raw
    assert restore_text(row["file_path"], row["file_path_raw"]) == odd["file"]["path"]
    assert restore_texts(row["proc_argv"], row["proc_argv_raw"]) == odd["proc"]["argv"]
    assert rows[plain["id"]]["proc_argv_raw"] is None


def test_unknown_keys_are_kept_as_json_and_unstorable_values_refused() -> None:
    buf = EventBuffer()
    ev = mixed_event(3)
    ev["future"] = {"a": 1}
    ev["proc"]["new_thing"] = 2**70  # unknown keys may hold anything JSON can
    append_event(buf, ev)
    for mutate, field in (
        (lambda e: e["proc"].__setitem__("pid", "seven"), "event.proc.pid: expected int"),
        (lambda e: e["file"].__setitem__("inode", -1), "event.file.inode: -1 does not fit"),
        (lambda e: e.__setitem__("cookie", 2**63), "event.cookie: 9223372036854775808"),
        (lambda e: e["proc"].__setitem__("argv", ["a", 1]), "event.proc.argv: expected texts"),
    ):
        bad = mixed_event(4)
        mutate(bad)
        with pytest.raises(RowError, match=re.escape(field)):
            append_event(buf, bad)
    big = mixed_event(5)
    big["file"]["inode"] = 2**64 - 1  # unsigned columns take the whole range
    append_event(buf, big)
    table = buf.table()
    assert table.num_rows == 2
    assert json.loads(table.column("extra")[0].as_py()) == {
        "future": {"a": 1}, "proc.new_thing": 2**70
    }
    assert table.column("extra")[1].as_py() is None
    assert table.column("file_inode")[1].as_py() == 2**64 - 1
    pq.write_table(table, io.BytesIO())


async def test_a_dead_writers_temporary_is_ignored_by_readers_and_removed_at_start(
    nats_server: NatsServer, stream: JetStreamContext, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    async with archiver(nats_server.url, root):
        await publish_grouped(stream, [mixed_event(n) for n in range(30)])
        await settled(stream)
    (committed,) = [f.path for f in layout.files(root)]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that is certainly gone
    half = committed.parent / f".{committed.stem}-x.parquet.{dead.pid}.tmp"
    half.write_bytes(committed.read_bytes()[:100])  # what a crash mid-write leaves
    for engine in ("duckdb", "pyarrow"):
        got = run_query(root, Filters(), engine=pick_engine(engine))
        assert len(got) == 30, engine
    assert len(archived_ids(root)) == 30
    async with archiver(nats_server.url, root):
        assert not half.exists()


def test_fast_and_per_column_table_building_agree() -> None:
    events = [mixed_event(n) for n in range(50)]
    events[3]["proc"].pop("comm")
    events[4].pop("proc")
    events[5]["future"] = [1, 2]
    fast = columns.event_table(events)
    assert fast.equals(columns._event_table_by_column(events))
    odd = [*events, mixed_event(61)]
    odd[-1]["file"]["path"] = text_from_kernel(b"/x\xff")  # forces the per-column path
    table = columns.event_table(odd)
    assert table.slice(0, 50).equals(fast)
    assert table.column("file_path_raw")[50].as_py() == b"/x\xff"


async def test_rolls_by_size_and_commits_the_open_window_at_a_graceful_stop(
    nats_server: NatsServer, stream: JetStreamContext, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    events = [mixed_event(n) for n in range(1000)]
    async with archiver(nats_server.url, root, roll_seconds=3600, roll_events=100) as (a, _):
        await publish_grouped(stream, events[:950], per_msg=10)
        async with asyncio.timeout(10):
            while a.writer.rows_written + a.writer.window.rows < 950:
                await asyncio.sleep(0.05)
        assert a.writer.rows_written >= 950 - 99  # size rolls only: the clock never fires
        await publish_grouped(stream, events[950:], per_msg=10)
        async with asyncio.timeout(10):
            while a.writer.window.rows + a.writer.rows_written < len(events):
                await asyncio.sleep(0.05)
        assert a.writer.window.rows > 0  # held, waiting for the size or the clock
    # Stopped: the last window was committed and acked, not released.
    assert a.writer.files_written >= 2  # a roll is checked once per fetched batch
    info = await stream.consumer_info(STREAM_NAME, "archive")
    assert info.num_ack_pending == 0 and info.num_pending == 0
    assert sorted(archived_ids(root)) == sorted(e["id"] for e in events)


def test_recent_ids_are_forgotten_by_age_and_by_count() -> None:
    recent = RecentIds(horizon=10.0, max_ids=5)
    now = time.monotonic()
    recent.add([("events", "h", "a"), ("events", "h", "b")], at=now - 11)
    recent.add([("events", "h", "c")], at=now)
    assert ("events", "h", "a") not in recent and ("events", "h", "c") in recent
    recent.add([("events", "h", str(i)) for i in range(5)], at=now)
    assert ("events", "h", "c") not in recent and len(recent) == 5


async def test_an_id_repeated_inside_one_message_is_stored_once(
    nats_server: NatsServer, stream: JetStreamContext, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    ev = mixed_event(1)
    async with archiver(nats_server.url, root):
        await stream.publish(event_subject("h1", ev["type"]), encode_batch([ev, ev, ev]))
        await settled(stream)
    assert archived_ids(root) == [ev["id"]]
