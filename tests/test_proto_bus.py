"""Reaching NATS: connect, BusUnavailable, ensure_stream (against a real nats-server)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import (
    DEFAULT_NATS_URL,
    STREAM_NAME,
    BusUnavailable,
    connect,
    decode_batch,
    encode_batch,
    ensure_stream,
    event_subject,
    nats_url_from_env,
)
from snoopbus.proto.stream_limits import StreamLimits

from .test_proto_schema import make_event


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_nats_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SNOOPBUS_NATS_URL", raising=False)
    assert nats_url_from_env() == DEFAULT_NATS_URL == "nats://127.0.0.1:4222"
    monkeypatch.setenv("SNOOPBUS_NATS_URL", "nats://a:1,nats://b:2")
    assert nats_url_from_env() == "nats://a:1,nats://b:2"
    monkeypatch.setenv("SNOOPBUS_NATS_URL", "  ")
    assert nats_url_from_env() == DEFAULT_NATS_URL


async def test_connect_and_publish(nats_server: NatsServer) -> None:
    nc = await connect(nats_server.url, name="test-proto")
    try:
        assert nc.is_connected
        assert nc.options["max_reconnect_attempts"] == -1  # forever, once connected
        subject = event_subject("h", "open")
        sub = await nc.subscribe(subject)
        await nc.publish(subject, encode_batch([make_event(host="h")]))
        msg = await sub.next_msg(timeout=2)
        assert decode_batch(msg.data)[0]["host"] == "h"
    finally:
        await nc.close()


async def test_connect_skips_a_dead_server_in_the_list(nats_server: NatsServer) -> None:
    dead = f"nats://127.0.0.1:{closed_port()}"
    nc = await connect(f"{dead}, {nats_server.url}", name="test-proto")
    try:
        assert nc.is_connected
    finally:
        await nc.close()


async def test_bus_unavailable_is_quick_and_clear(caplog: pytest.LogCaptureFixture) -> None:
    url = f"nats://127.0.0.1:{closed_port()}"
    tasks_before = asyncio.all_tasks()
    start = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(BusUnavailable) as info:
        await connect(url, name="test-proto")
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert url in message
    assert "connection refused" in message
    assert "snoopbus up" in message and "SNOOPBUS_NATS_URL" in message
    assert not any(r.exc_info for r in caplog.records)  # no stack traces logged
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == tasks_before  # nothing left running


async def test_connect_needs_a_url() -> None:
    with pytest.raises(BusUnavailable, match="no NATS server URL"):
        await connect(" , ", name="test-proto")


async def test_ensure_stream_creates_then_finds(js: JetStreamContext) -> None:
    created = await ensure_stream(js, limits=StreamLimits(max_age_s=3600, max_bytes=10_000_000))
    assert created.config.name == STREAM_NAME
    assert created.config.subjects == ["snoopbus.>"]
    assert created.config.storage == StorageType.FILE
    assert created.config.duplicate_window == 120
    again = await ensure_stream(js)
    assert again.config.subjects == ["snoopbus.>"]
    assert again.config.max_age == 3600  # an existing stream's limits are left alone
    # Subjects it already captures are not added twice; new ones are.
    assert (await ensure_stream(js, subjects=["snoopbus.events.>"])).config.subjects == [
        "snoopbus.>"
    ]
    grown = await ensure_stream(js, subjects=["snoopbus.>", "legacy.>"])
    assert grown.config.subjects == ["snoopbus.>", "legacy.>"]


async def test_stream_captures_published_batches(nc: Client, js: JetStreamContext) -> None:
    await ensure_stream(js, name="T1", subjects=["snoopbus.>"])
    ack = await js.publish(
        event_subject("h", "exec"),
        encode_batch([make_event(type="exec")]),
        headers={"Nats-Msg-Id": "a1b2-42"},
    )
    dup = await js.publish(
        event_subject("h", "exec"),
        encode_batch([make_event(type="exec")]),
        headers={"Nats-Msg-Id": "a1b2-42"},
    )
    assert ack.stream == "T1"
    assert dup.duplicate
