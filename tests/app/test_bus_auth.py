"""The embedded bus is closed: each attack on `up`'s nats-server, performed for real.

The server is started by `up`'s own code (app/stack.py start_server,
create_stream) with its generated credentials and permissions, on a free
loopback port. Each refusal is shown next to the same action by the role
that owns it, which succeeds: a test that passes because nothing works
proves nothing.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig

from snoopbus.app.stack import StackConfig, create_stream, secure_state_dir, start_server
from snoopbus.app.stack_auth import StackAuth
from snoopbus.consumers.alert.consumer import AlertConsumer
from snoopbus.consumers.alert.hosts import HealthConfig
from snoopbus.consumers.alert.wire import decode_alert
from snoopbus.consumers.fleet import read_fleet
from snoopbus.consumers.follow import Follower
from snoopbus.consumers.runtime import Runtime
from snoopbus.proto import (
    STREAM_NAME,
    alert_subject,
    alerts_filter,
    connect,
    encode_batch,
    encode_map,
    event_subject,
    events_filter,
    meta_filter,
    meta_subject,
    stored_filters,
)
from snoopbus.proto.roles import RENAME_OUTPUTS
from tests.support.processes import AS_NOBODY, free_port

SYSTEM_PYTHON = "/usr/bin/python3"  # readable by nobody
HOST = "web1"
# A client with no credentials, in the plain protocol: what any local user can write.
ANONYMOUS = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
f = s.makefile("rb")
print(f.readline().decode().strip())
s.sendall(b'CONNECT {"verbose":false}\\r\\nSUB snoopbus.> 1\\r\\nPING\\r\\n')
print(f.readline().decode().strip())
"""


@dataclass
class Stack:
    url: str
    port: int
    auth: StackAuth
    state_dir: Path
    clients: list[Client] = field(default_factory=list)

    async def as_role(self, role: str) -> tuple[Client, list[str]]:
        """A connection with `role`'s seed, and the errors the server sends it."""
        errors: list[str] = []

        async def on_error(e: Exception) -> None:
            errors.append(str(e))

        nc = await connect(self.url, name=f"test-{role}", error_cb=on_error,
                           auth=self.auth.nats_auth(role))
        self.clients.append(nc)
        return nc, errors


def violated(errors: list[str], subject: str) -> bool:
    """The server refused `subject` to this client (nats-py lower-cases its errors)."""
    return any("permissions violation" in e.lower() and f'"{subject.lower()}' in e.lower()
               for e in errors)


@pytest.fixture
def stack_cfg(tmp_path: Path) -> StackConfig:
    return StackConfig(state_dir=tmp_path / "state", port=free_port(), host=HOST,
                       consumers=("rename", "alert", "archive", "forward"),
                       forward_sinks=("forward-siem",))


@pytest.fixture
async def stack(stack_cfg: StackConfig) -> AsyncIterator[Stack]:
    secure_state_dir(stack_cfg.state_dir)
    auth = StackAuth.in_state_dir(stack_cfg.state_dir)
    server, url = start_server(stack_cfg, auth)
    s = Stack(url, stack_cfg.port, auth, stack_cfg.state_dir)
    try:
        await create_stream(url, auth)
        admin, _ = await s.as_role("admin")
        js = admin.jetstream()
        for durable in ("alert", "forward-siem"):
            await js.add_consumer(STREAM_NAME, ConsumerConfig(
                durable_name=durable, filter_subjects=stored_filters(events_filter()),
                ack_policy="explicit"))  # fmt: skip
        yield s
    finally:
        for nc in s.clients:
            if not nc.is_closed:
                await nc.close()
        server.stop()


async def publish_event(stack: Stack, type_: str = "exec") -> None:
    col, _ = await stack.as_role(f"collector-{HOST}")
    ev = {"v": 1, "id": f"x-{type_}", "ts": 1, "host": HOST, "type": type_, "proc": {"pid": 1}}
    await col.jetstream().publish(event_subject(HOST, type_), encode_batch([ev]))


def test_credentials_are_private_and_kept(stack_cfg: StackConfig) -> None:
    secure_state_dir(stack_cfg.state_dir)
    auth = StackAuth.in_state_dir(stack_cfg.state_dir)
    first = auth.ensure(stack_cfg.roles())
    assert set(first) >= {f"collector-{HOST}", "rename", "alert", "archive", "forward",
                          "reader", "admin"}
    assert auth.auth_dir.stat().st_mode & 0o777 == 0o700
    for name in first:
        assert auth.seed_path(name).stat().st_mode & 0o777 == 0o600
    auth.seed_path("reader").chmod(0o644)  # loosened by hand: tightened at the next start
    assert auth.ensure(stack_cfg.roles()) == first  # reused, not remade
    assert auth.seed_path("reader").stat().st_mode & 0o777 == 0o600


async def test_nobody_gets_no_bus_and_no_credentials(stack: Stack) -> None:
    out = subprocess.run([*AS_NOBODY, SYSTEM_PYTHON, "-I", "-c", ANONYMOUS, str(stack.port)],
                         capture_output=True, text=True, timeout=20)
    info, reply = out.stdout.splitlines()[:2]
    assert json.loads(info.removeprefix("INFO "))["auth_required"] is True
    assert "Authorization Violation" in reply
    for path in [stack.auth.auth_dir / "reader.nk", stack.auth.auth_dir / "admin.nk",
                 stack.auth.auth_dir / "nats-server.conf"]:
        cat = subprocess.run([*AS_NOBODY, "cat", str(path)], capture_output=True, text=True)
        assert cat.returncode != 0 and "Permission denied" in cat.stderr, cat
        assert path.read_bytes()  # root reads it


async def test_a_consumer_role_touches_only_its_own_durable(stack: Stack) -> None:
    await publish_event(stack)
    rename, errors = await stack.as_role("rename")
    rjs = rename.jetstream(timeout=1)
    # Pull from alert's durable: starving it.
    sub = await rjs.pull_subscribe_bind("alert", stream=STREAM_NAME)
    with pytest.raises(nats.errors.TimeoutError):
        await sub.fetch(1, timeout=1)
    assert violated(errors, "$JS.API.CONSUMER.MSG.NEXT.SNOOPBUS.alert")
    # The owner still can, and gets the message the attacker wanted.
    alert, _ = await stack.as_role("alert")
    asub = await alert.jetstream().pull_subscribe_bind("alert", stream=STREAM_NAME)
    [msg] = await asub.fetch(1, timeout=5)
    await msg.ack()
    # Delete a forwarder's durable, take over alert's, delete or purge the stream.
    for attempt in (rjs.delete_consumer(STREAM_NAME, "forward-siem"),
                    rjs.add_consumer(STREAM_NAME, ConsumerConfig(
                        name="alert", durable_name="alert", filter_subject="nothing.here")),
                    rjs.delete_stream(STREAM_NAME), rjs.purge_stream(STREAM_NAME)):
        with pytest.raises(nats.errors.TimeoutError):
            await attempt
    for subject in ("CONSUMER.DELETE.SNOOPBUS.forward-siem", "CONSUMER.CREATE.SNOOPBUS.alert",
                    "STREAM.DELETE.SNOOPBUS", "STREAM.PURGE.SNOOPBUS"):
        assert violated(errors, f"$JS.API.{subject}"), (subject, errors)
    admin, _ = await stack.as_role("admin")
    ajs = admin.jetstream()
    info = await ajs.consumer_info(STREAM_NAME, "alert")
    assert info.config.filter_subjects == stored_filters(events_filter())
    await ajs.consumer_info(STREAM_NAME, "forward-siem")  # still there
    assert (await ajs.stream_info(STREAM_NAME)).state.messages == 1


async def test_a_consumer_role_publishes_only_its_own_outputs(stack: Stack) -> None:
    rename, errors = await stack.as_role("rename")
    rjs = rename.jetstream(timeout=1)
    ev = encode_batch([{"v": 1, "id": "r", "ts": 1, "host": HOST, "type": "renamed"}])
    await rjs.publish(event_subject(HOST, "renamed"), ev)  # its own output, its host
    forged = [event_subject("web2", "renamed"), event_subject(HOST, "exec"),
              alert_subject(HOST, "critical"), "snoopbus.dlq.alert"]
    for subject in forged:
        with pytest.raises(nats.errors.TimeoutError):
            await rjs.publish(subject, ev)
        assert violated(errors, subject), (subject, errors)
    admin, _ = await stack.as_role("admin")
    assert (await admin.jetstream().stream_info(STREAM_NAME)).state.messages == 1
    # Every rename output the pairer writes is one its role may publish.
    alert, _ = await stack.as_role("alert")
    await alert.jetstream(timeout=2).publish(alert_subject(HOST, "high"), b"\x80")
    with pytest.raises(nats.errors.TimeoutError):
        await alert.jetstream(timeout=1).publish(event_subject(HOST, "renamed"), ev)
    assert set(RENAME_OUTPUTS) == {"renamed", "moved_in", "moved_out"}


async def test_the_reader_reads_and_nothing_else(stack: Stack) -> None:
    reader, errors = await stack.as_role("reader")
    rjs = reader.jetstream(timeout=1)
    follower = Follower(rjs, [events_filter()])  # what `tail` does
    await follower.start()
    await publish_event(stack, "exec")
    msgs: list[nats.aio.msg.Msg] = []
    async with asyncio.timeout(10):
        while not msgs:
            msgs = await follower.fetch(0.5)
    await follower.close()
    # A durable: no pull, no create or update, no delete.
    sub = await rjs.pull_subscribe_bind("alert", stream=STREAM_NAME)
    with pytest.raises(nats.errors.TimeoutError):
        await sub.fetch(1, timeout=1)
    for attempt in (rjs.delete_consumer(STREAM_NAME, "alert"),
                    rjs.add_consumer(STREAM_NAME, ConsumerConfig(
                        name="forward-siem", durable_name="forward-siem",
                        filter_subject="nothing.here")),
                    rjs.publish(event_subject(HOST, "exec"), b"\x90"),
                    rjs.delete_stream(STREAM_NAME)):
        with pytest.raises(nats.errors.TimeoutError):
            await attempt
    # Ack a durable's delivery (with the owner's reply subject in hand).
    await publish_event(stack, "exit")
    alert, _ = await stack.as_role("alert")
    [msg] = await (await alert.jetstream().pull_subscribe_bind(
        "alert", stream=STREAM_NAME)).fetch(1, timeout=5)
    await reader.publish(msg.reply, b"+ACK")
    await reader.flush()
    await asyncio.sleep(0.2)
    for subject in ("$JS.API.CONSUMER.MSG.NEXT.SNOOPBUS.alert",
                    "$JS.API.CONSUMER.DELETE.SNOOPBUS.alert",
                    "$JS.API.CONSUMER.CREATE.SNOOPBUS.forward-siem",
                    event_subject(HOST, "exec"), "$JS.API.STREAM.DELETE.SNOOPBUS",
                    msg.reply):
        assert violated(errors, subject), (subject, errors)
    admin, _ = await stack.as_role("admin")
    info = await admin.jetstream().consumer_info(STREAM_NAME, "alert")
    assert info.num_ack_pending == 1  # the reader's ack did not count


async def test_the_collector_publishes_its_host_only_and_reads_nothing(stack: Stack) -> None:
    col, errors = await stack.as_role(f"collector-{HOST}")
    cjs = col.jetstream(timeout=1)
    await cjs.publish(event_subject(HOST, "exec"), b"\x90")
    with pytest.raises(nats.errors.TimeoutError):
        await cjs.publish(event_subject("web2", "exec"), b"\x90")
    await col.subscribe("snoopbus.>")
    await col.subscribe("_INBOX.>")  # every consumer's deliveries, with the default prefix
    await col.subscribe("_INBOX_reader.>")
    await col.flush()
    await asyncio.sleep(0.2)
    assert violated(errors, "_INBOX.>") and violated(errors, "_INBOX_reader.>"), errors
    assert violated(errors, event_subject("web2", "exec"))
    assert violated(errors, "snoopbus.>"), errors  # for subscription
    with pytest.raises(nats.errors.TimeoutError):  # consumers are not its business either
        await cjs.consumer_info(STREAM_NAME, "alert")


async def test_the_alerter_watches_its_hosts_collector_and_no_other(stack: Stack) -> None:
    """With its role's rights alone, the alerter reads its host's last report from the
    stream (a heartbeat sent before it started), raises the silent-host alert, and may
    not listen to another host's reports; the reader's `fleet` lists the host."""
    col, _ = await stack.as_role(f"collector-{HOST}")
    beat = {"v": 1, "host": HOST, "instance": "i1", "ts": 1, "stalled": False, "lost": 0,
            "interval": 0.2, "version": "test"}
    await col.jetstream().publish(meta_subject(HOST, "heartbeat"), encode_map(beat))
    reader, _ = await stack.as_role("reader")
    alerts = await reader.subscribe(alerts_filter(HOST))
    alert_nc, errors = await stack.as_role("alert")
    consumer = AlertConsumer(health=HealthConfig(silent_after=1.0), watch_hosts=[HOST])
    runtime = Runtime(consumer, nc=alert_nc)
    task = asyncio.create_task(runtime.run())
    try:
        alert = decode_alert((await alerts.next_msg(timeout=20)).data)
        assert alert["rule"]["id"] == "snoopbus-host-silent" and alert["host"] == HOST
        assert alert["fields"]["version"] == "test"
        await alert_nc.subscribe(meta_filter("web2"))
        await alert_nc.flush()
        await asyncio.sleep(0.2)
        assert violated(errors, meta_filter("web2")), errors
        assert not any("permissions violation" in e.lower() and "web2" not in e.lower()
                       for e in errors), errors
    finally:
        runtime.stop()
        await task
    (row,) = await read_fleet(stack.url, stack.auth.nats_auth("reader"), silent_after=1.0)
    assert (row.host, row.state, row.version) == (HOST, "silent", "test")
