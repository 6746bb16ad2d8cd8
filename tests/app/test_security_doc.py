"""proto/SECURITY.md's nats-server config, run as written: the collector user
publishes its host's subjects only, the rename user runs the pairer and
cannot touch the stream or another's durable, the admin creates the stream.
The config is proto/roles.py's output, the one place `up` takes it from too."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import nats.errors
import pytest

from snoopbus.app.natsd import NatsServer, config_args
from snoopbus.consumers.rename import RenamePairer
from snoopbus.consumers.runtime import Runtime
from snoopbus.proto import (
    NatsAuth,
    connect,
    encode_batch,
    ensure_stream,
    event_subject,
    roles,
    stored_filters,
)
from tests.support.events import rename_half
from tests.support.paths import ROOT

DOC = ROOT / "proto" / "SECURITY.md"


def doc_config() -> str:
    (block,) = re.findall(r"```conf\n(.*?)```", DOC.read_text(), re.S)
    return block


def half(kind: str, cookie: int) -> dict[str, object]:
    return rename_half(kind, cookie, host="web1", id=f"w-{kind}-{cookie}", proc={"pid": 1},
                       path=f"/x/{kind}")


def test_the_documented_config_is_the_one_up_generates() -> None:
    assert doc_config().strip() == roles.doc_example().strip()


async def test_the_documented_permissions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for who in ("COLLECTOR_WEB1", "RENAME", "ADMIN", "ALERT", "ARCHIVE", "FORWARD", "READER"):
        monkeypatch.setenv(f"SNOOPBUS_{who}_PASSWORD", f"pw-{who.lower()}")
    server = NatsServer(tmp_path / "n", extra_args=config_args(tmp_path / "n.conf", doc_config()))
    server.start()
    try:
        op = await connect(server.url, name="op", auth=NatsAuth(user="admin",
                                                                password="pw-admin"))
        await ensure_stream(op.jetstream())
        col = await connect(server.url, name="c", auth=NatsAuth(user="collector-web1",
                                                                password="pw-collector_web1",
                                                                inbox_prefix="_INBOX_collector-web1"))
        cjs = col.jetstream()
        await ensure_stream(cjs)
        moved_from = encode_batch([half("moved_from", 1)])
        await cjs.publish(event_subject("web1", "moved_from"), moved_from)
        await cjs.publish(event_subject("web1", "moved_to"), encode_batch([half("moved_to", 1)]))
        with pytest.raises(nats.errors.TimeoutError):
            await cjs.publish(event_subject("web2", "exec"), b"\x90", timeout=0.5)
        with pytest.raises(nats.errors.Error):  # refused: no reply comes
            await col.jetstream(timeout=0.5).delete_stream("SNOOPBUS")
        rename = NatsAuth(user="rename", password="pw-rename", inbox_prefix="_INBOX_rename")
        runtime = Runtime(RenamePairer(), servers=server.url, auth=rename)
        task = asyncio.create_task(runtime.run())
        ojs = op.jetstream()
        sub = await ojs.subscribe(stored_filters(event_subject("web1", "renamed"))[0])
        msg = await sub.next_msg(timeout=20)
        assert b"/x/moved_to" in msg.data
        rc = await connect(server.url, name="r", auth=rename)
        rjs = rc.jetstream(timeout=0.5)
        for durable in ("alert", "forward-siem"):
            await ojs.add_consumer("SNOOPBUS", durable_name=durable, ack_policy="explicit")
        for durable in ("rename", "alert", "forward-siem"):  # not even its own
            with pytest.raises(nats.errors.Error):
                await rjs.delete_consumer("SNOOPBUS", durable)
            await ojs.consumer_info("SNOOPBUS", durable)
        with pytest.raises(nats.errors.Error):
            await rjs.publish(event_subject("web2", "renamed"), moved_from)
        await rc.close()
        runtime.stop()
        await asyncio.wait_for(task, 20)
        await col.close()
        await op.close()
    finally:
        server.stop()
