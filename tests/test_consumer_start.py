"""`--start new|all|TIME`: where a new durable starts; an existing one goes on."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers import cli, plugin
from snoopbus.consumers.settings import Settings
from snoopbus.proto import STREAM_NAME, ensure_stream
from tests.test_consumer_runtime import FAST, Collector, exec_event, publish, running, wait_for


def settings_for(*flags: str, base: Settings = FAST) -> Settings:
    target = plugin.load("rename")
    opts = cli._consumer_parser("rename", target, "nats://x").parse_args(list(flags))
    return cli._settings(opts, base)


def test_the_flag_is_parsed_for_every_consumer() -> None:
    assert settings_for().deliver_new is False and settings_for().start_time is None  # all
    assert settings_for("--start", "new").deliver_new is True
    assert settings_for("--start", "all").deliver_new is False
    when = settings_for("--start", "2026-11-20T14:00").start_time
    assert when == datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
    ago = settings_for("--start", "2h").start_time
    assert ago is not None and 7100 < (datetime.now(UTC) - ago).total_seconds() < 7300
    with pytest.raises(SystemExit):
        settings_for("--start", "yesterday-ish")


@pytest.mark.parametrize("start", ["all", "new", "time"])
async def test_a_new_durable_starts_where_asked(
    nats_server: NatsServer, js: JetStreamContext, start: str
) -> None:
    await ensure_stream(js)
    await publish(js, exec_event(comm="before"))
    await asyncio.sleep(0.05)
    cut = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await publish(js, exec_event(comm="between"))
    flag = cut.isoformat() if start == "time" else start
    c = Collector(name=f"start-{start}")
    async with running(c, nats_server.url, settings_for("--start", flag)):
        await publish(js, exec_event(comm="after"))
        await wait_for(lambda: any(e["proc"]["comm"] == "after" for e in c.events))
        await asyncio.sleep(0.3)
    got = [e["proc"]["comm"] for e in c.events]
    assert got == {"all": ["before", "between", "after"], "new": ["after"],
                   "time": ["between", "after"]}[start]  # fmt: skip


async def test_an_existing_durable_goes_on_from_where_it_is(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    await ensure_stream(js)
    c = Collector(name="keeps")
    async with running(c, nats_server.url, replace(FAST, deliver_new=True)):
        await publish(js, exec_event(comm="one"))
        await wait_for(lambda: len(c.events) == 1)
    await publish(js, exec_event(comm="two"))
    # A restart asking for another start: refused by the server if passed on as is.
    again = Collector(name="keeps")
    async with running(again, nats_server.url, replace(FAST, start_time=datetime.now(UTC))):
        await wait_for(lambda: len(again.events) == 1)
    assert [e["proc"]["comm"] for e in again.events] == ["two"]
    info = await js.consumer_info(STREAM_NAME, "keeps")
    assert info.config.deliver_policy == "new"
