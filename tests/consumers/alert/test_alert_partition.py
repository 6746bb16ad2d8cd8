"""Alerters scaled out by host partition give the alerts of one alerter.

Two alerters (`--partition 0/2` and `1/2`, each its own durable, on one
real nats-server) and one alerter, over the same events of several hosts:
repeats that the throttle folds (a first alert, then a summary with the
count), and a correlation whose group-by field has the same value on two
hosts that land in different partitions. The alerts published, with their
counts, must be the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers import Settings
from snoopbus.consumers.alert.consumer import AlertConsumer
from snoopbus.consumers.settings import Partition
from snoopbus.proto import STREAM_NAME, alerts_filter, decode_map
from tests.support import consumers
from tests.support.events import exec_event, publish_events

FAST = Settings(batch=8, fetch_timeout=0.2, concurrency=1, backoff=(0.05,))
HOSTS = [f"scale-{i}" for i in range(8)]

RULES = """\
title: wget run
id: 5a1e0001-0000-4000-8000-000000000001
logsource: {product: linux, category: process_creation}
detection: {sel: {Image|endswith: /wget}, condition: sel}
level: medium
"""
CORRELATION = """\
title: nc run
id: 5a1e0002-0000-4000-8000-000000000002
name: nc_run
logsource: {product: linux, category: process_creation}
detection: {sel: {Image|endswith: /nc}, condition: sel}
level: low
---
title: nc run three times
id: 5a1e0003-0000-4000-8000-000000000003
correlation: {type: event_count, rules: [nc_run], group-by: [Image], timespan: 1h,
              condition: {gte: 3}}
level: high
"""


def split_hosts() -> tuple[str, str]:
    """Two hosts of different partitions (of 2)."""
    part = Partition(0, 2)
    mine = [h for h in HOSTS if part.owns(h)]
    other = [h for h in HOSTS if not part.owns(h)]
    assert mine and other, "the hosts must split between the partitions"
    return mine[0], other[0]


def workload() -> list[dict[str, Any]]:
    events = []
    n = 0
    for rnd in range(4):
        for h, host in enumerate(HOSTS):
            n += 1
            # Every host: a wget each round (one alert, then folded), and one of its
            # own in the first two rounds (the key, its Image, differs).
            events.append(exec_event(["/usr/bin/wget", "http://x"], host=host,
                                     id=f"{host}.w{rnd}", ts=n))  # fmt: skip
            if rnd < 2:
                events.append(exec_event([f"/opt/{h}/wget", "http://y"], host=host,
                                         id=f"{host}.v{rnd}", ts=n))  # fmt: skip
    a, b = split_hosts()
    # Two nc runs on each of two hosts: three or more only across hosts.
    for i in range(2):
        for host in (a, b):
            n += 1
            events.append(exec_event(["/usr/bin/nc", "-l", "4444"], host=host,
                                     id=f"{host}.nc{i}", ts=n))  # fmt: skip
    # And three on one host: that one fires, with either number of alerters.
    for i in range(3):
        n += 1
        events.append(exec_event(["/usr/bin/nc", "-l", "5555"], host=b, id=f"{b}.nd{i}", ts=n))
    return events


async def drained(js: JetStreamContext, durables: list[str], within: float = 60) -> None:
    async with asyncio.timeout(within):
        while True:
            infos = [await js.consumer_info(STREAM_NAME, d) for d in durables]
            if all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos):
                return
            await asyncio.sleep(0.1)


async def alerts_of(nc: Client, js: JetStreamContext, url: str, rules: Path,
                    count: int) -> list[tuple[Any, ...]]:  # fmt: skip
    """The alerts `count` alerters (partitions of the hosts) publish over the stream."""
    got: list[dict[str, Any]] = []

    async def on_msg(msg: Msg) -> None:
        got.append(decode_map(msg.data))

    sub = await nc.subscribe(alerts_filter(), cb=on_msg)
    parts = [Partition(i, count) for i in range(count)]
    try:
        async with contextlib.AsyncExitStack() as stack:
            for part in parts:
                alerter = AlertConsumer([rules], throttle=3600)
                settings = replace(FAST, partition=part)
                await stack.enter_async_context(consumers.running(alerter, url, settings, 15))
            await drained(js, [p.durable("alert") for p in parts])
        # Stopped: each alerter sent its folded summaries on the way out.
        await nc.flush()
        await asyncio.sleep(0.3)
    finally:
        await sub.unsubscribe()
    return sorted((a["id"], a["host"], a["count"], a.get("folded", False), a["first_ts"],
                   a["last_ts"]) for a in got)  # fmt: skip


async def test_two_alerters_split_by_host_send_the_alerts_of_one(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "wget.yml").write_text(RULES)
    (rules / "nc.yml").write_text(CORRELATION)
    await publish_events(js, workload(), per_msg=3)
    one = await alerts_of(nc, js, nats_server.url, rules, 1)
    two = await alerts_of(nc, js, nats_server.url, rules, 2)
    assert two == one
    # Per host: the wget of every round, one alert and a summary of 3 repeats;
    # its own wget, one alert and a summary of 1.
    assert sorted(a[2] for a in one if a[3]) == [1] * len(HOSTS) + [3] * len(HOSTS)
    assert sum(1 for a in one if not a[3]) == 2 * len(HOSTS) + 1
    fired = [a for a in one if a[0].startswith("5a1e0003")]
    assert len(fired) == 1 and fired[0][1] == split_hosts()[1]  # per host: not a's + b's
