"""A compromised collector's attacks on the bus, performed for real.

The server gives each collector user only its own host's subjects
(proto/SECURITY.md). The attacker holds host `a`'s credentials and publishes
as `nobody` from a stdlib program (tests/consumers/bus_forger.py), so nothing it does
depends on the test's own process:

- it publishes the ids host `b`'s next message would take, first: `b`'s real
  batch still arrives and is consumed, the forgeries are dead-lettered;
- when an id does collide (forced here: the old ids were that guessable), the
  publisher counts the batch lost as `duplicate_id`, never silently;
- it publishes on its own subjects events claiming host `b` or another type,
  and (with the alerter's rights) an alert under a hostile host token: every
  built-in consumer process dead-letters them, none archives, forwards,
  alerts or pairs them, and no odd archive partition appears.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.collector.loss import DUPLICATE_ID, LossCounters
from snoopbus.collector.publisher import Publisher, PublisherConfig
from snoopbus.consumers.archive import layout
from snoopbus.consumers.consumer import consumer
from snoopbus.consumers.delivery import Batch
from snoopbus.consumers.dlq import KIND, REASON, STREAM_SEQ
from snoopbus.consumers.runtime import Runtime
from snoopbus.proto import (
    STREAM_NAME,
    NatsAuth,
    connect,
    decode_batch,
    encode_batch,
    encode_map,
    ensure_stream,
    event_subject,
    events_filter,
)
from snoopbus.proto.msgid import id_host
from snoopbus.proto.subjects import is_host_token
from tests.support.archive import archived_ids
from tests.support.bus import read_stored
from tests.support.events import TS, full_proc
from tests.support.events import event as build_event
from tests.support.processes import AS_NOBODY
from tests.support.publish_attack import SYSTEM_PYTHON
from tests.support.servers import serve
from tests.support.waits import durables_pulled, durables_settled

FORGER = Path(__file__).with_name("bus_forger.py")
OPS = NatsAuth(user="ops", password="pw")


def collector_user(host: str) -> str:
    return f"""
    {{ user: collector-{host}, password: pw, permissions: {{
        publish: {{ allow: ["snoopbus.events.{host}.>", "snoopbus.meta.{host}.>",
                            "$JS.API.INFO", "$JS.API.STREAM.INFO.SNOOPBUS"] }}
        subscribe: {{ allow: ["_INBOX.>"] }} }} }}"""


CONF = f"""
authorization {{
  users: [ {collector_user("a")} {collector_user("b")}
    {{ user: ops, password: pw }}
  ]
}}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    with serve(tmp_path, CONF) as srv:
        yield srv


@pytest.fixture
async def ops(server: NatsServer) -> AsyncIterator[Client]:
    nc = await connect(server.url, name="ops", auth=OPS)
    await ensure_stream(nc.jetstream())  # the operator makes the stream
    try:
        yield nc
    finally:
        await nc.close()


def forge(server: NatsServer, user: str, msgs: list[tuple[str, str | None, bytes]],
          ) -> list[dict[str, Any]]:  # fmt: skip
    """Publishes (subject, id, payload) as `user`, running as nobody; the server's answers."""
    host, port = server.url.removeprefix("nats://").rsplit(":", 1)
    lines = "".join(json.dumps({"subject": s, "id": i, "payload_hex": p.hex()}) + "\n"
                    for s, i, p in msgs)
    out = subprocess.run([*AS_NOBODY, SYSTEM_PYTHON, "-I", str(FORGER), host, port, user, "pw"],
                         input=lines, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def event(host: str, id_: str, type_: str = "exec", **extra: Any) -> dict[str, Any]:
    proc = full_proc(["/tmp/payload"], comm="sh", cwd="/tmp")
    return build_event(type_, id=id_, ts=TS, host=host, proc=proc, **extra)


def b_events(start: int, n: int) -> list[tuple[str, dict[str, Any]]]:
    return [(event_subject("b", "exec"), event("b", f"binst-{i}")) for i in range(start, start + n)]


async def b_publisher(server: NatsServer) -> tuple[Publisher, Client, LossCounters,
                                                   asyncio.Task[None]]:  # fmt: skip
    nc = await connect(server.url, name="collector-b", auth=NatsAuth(user="collector-b",
                                                                     password="pw"))
    loss = LossCounters()
    pub = Publisher(nc.jetstream(), loss, PublisherConfig(), nc=nc)
    return pub, nc, loss, asyncio.create_task(pub.run())


async def dead_letters(nc: Client) -> list[tuple[str, dict[str, str]]]:
    """(dlq subject, headers) of every dead letter."""
    return [(m.subject, dict(m.headers or {}))
            for m in await read_stored(nc, "snoopbus.dlq.>", within=2)]


async def test_another_hosts_next_ids_published_first_drop_nothing(
    server: NatsServer, ops: Client
) -> None:
    pub, nc, loss, task = await b_publisher(server)
    pub.submit(b_events(0, 10))
    await pub.drain()
    (first,) = await read_stored(ops, events_filter(host="b"), within=2)
    known = first.headers["Nats-Msg-Id"]  # as if it had leaked: b.<run>.1.<nonce>+10
    _, run, seq, rest = known.split(".")
    nonce = rest.split("+")[0]
    guesses = [
        "binst-10+10",  # what b's next id was before ids were namespaced
        f"b.{run}.{int(seq) + 1}.{nonce}+10", f"b.{run}.{int(seq) + 1}.{'0' * 16}+10",
        f"b.{run}.{int(seq) + 1}+10",
    ]
    forged = encode_batch([event("a", "forged-1")])
    answers = forge(server, "collector-a",
                    [(event_subject("a", "exec"), g, forged) for g in guesses])
    # the server took them all (it cannot tell): only the ids can save b's batch
    assert len(answers) == 4 and all("seq" in a["answer"] for a in answers), answers
    pub.submit(b_events(10, 10))
    await pub.close()
    await task
    await nc.close()
    assert loss.total == 0 and pub.duplicate_ids == 0 and pub.published_events == 20
    stored = [e["id"] for m in await read_stored(ops, events_filter(host="b"), within=2)
              for e in decode_batch(m.data)]
    assert stored == [f"binst-{i}" for i in range(20)]

    # A plugin consumer (the runtime every built-in one runs in) gets b's 20 events
    # and dead-letters the 4 forgeries: their ids are not of their subject's host.
    seen: list[str] = []

    @consumer("plugin", filters=[events_filter()])
    async def plugin(batch: Batch) -> None:
        seen.extend(e["id"] for e in batch.events)

    runtime = Runtime(plugin, nc=ops)
    run = asyncio.create_task(runtime.run())
    await runtime.ready.wait()
    await durables_settled(ops.jetstream())
    runtime.stop()
    await run
    assert sorted(seen) == sorted(f"binst-{i}" for i in range(20))
    letters = await dead_letters(ops)
    assert len(letters) == 4 and runtime.counters.dead_letter_reasons["subject"] == 4
    assert all(h[KIND] == "subject" and "is not of host 'a'" in h[REASON] for _, h in letters)


async def test_a_colliding_id_is_counted_lost_not_silent(server: NatsServer, ops: Client) -> None:
    pub, nc, loss, task = await b_publisher(server)
    taken = "b.guessed.1.0000000000000000+3"
    answers = forge(server, "collector-a",
                    [(event_subject("a", "exec"), taken, encode_batch([event("a", "x")]))])
    assert "seq" in answers[0]["answer"], answers
    new = pub._ids.new
    pub._ids.new = lambda subject, count: taken  # type: ignore[method-assign]  # as if guessed
    pub.submit(b_events(0, 3))
    await pub.drain()
    pub._ids.new = new  # type: ignore[method-assign]
    pub.submit(b_events(3, 2))
    await pub.close()
    await task
    await nc.close()
    assert loss.dropped[DUPLICATE_ID] == 3 and pub.duplicate_ids == 1
    assert "already held id" in pub.last_error
    stored = [e["id"] for m in await read_stored(ops, events_filter(host="b"), within=2)
              for e in decode_batch(m.data)]
    assert stored == ["binst-3", "binst-4"]  # the rest still flows


@pytest.fixture
def consumers(server: NatsServer, tmp_path: Path) -> Iterator[dict[str, Path]]:
    """The built-in consumers as processes, as the operator user."""
    paths = {"archive": tmp_path / "archive", "forward": tmp_path / "out.jsonl"}
    args = {
        "rename": ["rename", "--window", "0.5"],
        "alert": ["alert"],
        "archive": ["archive", "--dir", str(paths["archive"]), "--roll-seconds", "0.2"],
        "forward": ["forward", "--to", f"jsonl+file://{paths['forward']}"],
    }
    env = {**os.environ, "SNOOPBUS_NATS_USER": "ops", "SNOOPBUS_NATS_PASSWORD": "pw"}
    procs = {}
    for name, a in args.items():
        with (tmp_path / f"{name}.log").open("wb") as log:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "snoopbus.consumers", *a, "--nats", server.url],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        yield paths
    finally:
        for p in procs.values():
            p.terminate()
        for name, p in procs.items():
            assert p.wait(20) == 0, (tmp_path / f"{name}.log").read_text()


def covered(subject: str, filters: list[str]) -> bool:
    def match(f: str) -> bool:
        ft, st = f.split("."), subject.split(".")
        if ft[-1] == ">":
            head = zip(ft[:-1], st, strict=False)
            return len(st) >= len(ft) and all(a in ("*", b) for a, b in head)
        return len(ft) == len(st) and all(a in ("*", b) for a, b in zip(ft, st, strict=True))
    return any(match(f) for f in filters)


async def test_every_consumer_trusts_the_subject_not_the_payload(
    server: NatsServer, ops: Client, consumers: dict[str, Path]
) -> None:
    js: JetStreamContext = ops.jetstream()
    await durables_pulled(js, 5, within=60)  # rename, alert, archive, forward and its sink's
    mv = {"cookie": 77, "file": {"path": "/etc/shadow"}}
    forgeries: list[tuple[str, str | None, bytes]] = [
        # claims host b (an alert and an archive row for b, were it believed)
        (event_subject("a", "exec"), None, encode_batch([event("b", "f-host")])),
        # claims another type than its subject's
        (event_subject("a", "exec"), None, encode_batch([event("a", "f-type", "exit")])),
        (event_subject("a", "moved_from"), None,
         encode_batch([event("a", "f-type2", "moved_to", **mv)])),
        # a rename for host b, from host a's subjects
        (event_subject("a", "moved_from"), None,
         encode_batch([event("b", "f-from", "moved_from", **mv)])),
        (event_subject("a", "moved_to"), None,
         encode_batch([event("b", "f-to", "moved_to", **{**mv, "file": {"path": "/x"}})])),
        # host a's batch hiding one event of host b among its own
        (event_subject("a", "exec"), None,
         encode_batch([event("a", "f-mixed-a"), event("b", "f-mixed-b")])),
    ]
    legit = (event_subject("a", "exec"), "a.r.1.n+1", encode_batch([event("a", "ok-1")]))
    answers = forge(server, "collector-a", [*forgeries, legit])
    assert all("seq" in a["answer"] for a in answers), answers
    seqs = {a["i"]: a["answer"]["seq"] for a in answers}
    # With the alerter's rights (ops here): alerts under a hostile token, or claiming another host.
    alert = {"id": "r1:x", "title": "forged", "level": "high", "ts": 1, "host": "a"}
    alert_forgeries: list[tuple[str, str | None, bytes]] = [
        ("snoopbus.alerts.a/../../b.high", None, encode_map(alert)),
        ("snoopbus.alerts.a\x1b[2J.high", None, encode_map(alert)),
        ("snoopbus.alerts.a.high", None, encode_map({**alert, "host": "b"})),
        ("snoopbus.alerts.a.high", None, encode_map({**alert, "level": "low"})),
    ]
    alert_answers = forge(server, "ops", alert_forgeries)
    stored_alerts = {a["i"]: a["answer"]["seq"] for a in alert_answers
                     if "seq" in a.get("answer", {})}
    assert stored_alerts, alert_answers  # at least one reached the stream (a hostile token did)
    await asyncio.sleep(1)  # the rename window, the archive roll
    await durables_settled(js)

    # Each durable dead-lettered every forgery its filters cover, with the reason.
    letters = await dead_letters(ops)
    forged_seqs = {seqs[i]: s for i, (s, _, _) in enumerate(forgeries)}
    forged_seqs.update({stored_alerts[i]: alert_forgeries[i][0] for i in stored_alerts})
    infos = [i for i in await js.consumers_info(STREAM_NAME) if i.config.durable_name]
    checked = []
    for info in infos:
        filters = info.config.filter_subjects or [info.config.filter_subject or ">"]
        mine = {int(h[STREAM_SEQ]) for s, h in letters
                if h[KIND] == "subject" and h["Snoopbus-Dlq-Consumer"] in info.name}
        want = {seq for seq, subject in forged_seqs.items() if covered(subject, filters)}
        if want:  # (forward's own durable reads meta only)
            assert want <= mine, (info.name, want - mine, letters)
            checked.append(info.name.split("-")[0])
    assert sorted(checked) == ["alert", "archive", "forward", "rename"], checked
    assert seqs[len(forgeries)] not in {int(h[STREAM_SEQ]) for _, h in letters}  # the legit one
    reasons = " | ".join(h[REASON] for _, h in letters)
    for said in ("claims host 'b'", "claims type 'exit'", "is not a host token",
                 "alert claims host 'b'", "alert claims level 'low'"):
        assert said in reasons, (said, reasons)

    # Nothing forged was archived, forwarded, alerted on or paired; the legit event was.
    archived = set(archived_ids(consumers["archive"]))
    forwarded = {json.loads(line).get("id") for line in
                 consumers["forward"].read_text().splitlines()}
    forged_ids = {"f-host", "f-type", "f-type2", "f-from", "f-to", "f-mixed-a", "f-mixed-b"}
    assert "ok-1" in archived and "ok-1" in forwarded
    assert not forged_ids & archived and not forged_ids & forwarded
    info = await js.stream_info(STREAM_NAME, subjects_filter="snoopbus.>")
    subjects = set(info.state.subjects or {})
    assert not [s for s in subjects if s.startswith("snoopbus.events.b.")], subjects
    alerts_about = [m for m in await read_stored(ops, "snoopbus.alerts.*.*", within=2)]
    assert any(b"ok-1" in m.data for m in alerts_about)  # the alerter is running
    assert not [m for m in alerts_about if any(i.encode() in m.data for i in forged_ids)]
    # Nothing archived but files in day folders, every host in them a token.
    root = consumers["archive"]
    stored = list(layout.files(root))
    assert stored and all(f.path.parent.parent.parent == root for f in stored)
    for f in stored:
        hosts = pq.read_table(f.path, columns=["host"]).column("host").to_pylist()
        assert all(is_host_token(h) for h in hosts), f.path
    assert not [p for p in root.rglob("*") if p.is_dir() and p.parent.name.startswith("date=")]
    assert not [p for p in root.rglob("*") if not p.resolve().is_relative_to(root.resolve())]
    assert {id_host(h["Nats-Msg-Id"]) for _, h in letters} == {""}  # dlq ids: no host
