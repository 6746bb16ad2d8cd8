"""Alerts made outside the stream (host health, folded summaries) whose send fails:
tried again within bounds, given up counted by reason; malformed meta messages
counted, logged at most once a minute. Pure logic: no server, the clock given."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from snoopbus.consumers.alert.consumer import AlertConsumer
from snoopbus.consumers.alert.host_feed import HostFeed
from snoopbus.consumers.alert.hosts import HealthConfig, HostHealth
from snoopbus.consumers.alert.resend import GAVE_UP, QUEUE_FULL, STOPPED, Resend

NO_CLIENT = Client()  # the handler reads subject and data only


def alert(n: int) -> dict[str, Any]:
    return {"id": f"a{n}", "rule": {"title": "t"}}


def test_an_alert_is_given_up_after_its_first_failure_plus_give_up_after() -> None:
    lost: Counter[str] = Counter()
    r = Resend("test alerts", lost, give_up_after=10.0)
    r.failed([(None, alert(1))], now=100.0)
    again = r.take()
    assert again == [(100.0, alert(1))]  # the first failure's time is kept across tries
    r.failed([*again, (None, alert(2))], now=109.0)
    assert len(r) == 2 and not lost
    r.failed(r.take(), now=110.0)  # alert 1: 10 s since its first failure
    assert lost == {GAVE_UP: 1}
    assert [a["id"] for _, a in r.take()] == ["a2"]


def test_beyond_max_alerts_the_oldest_are_given_up() -> None:
    lost: Counter[str] = Counter()
    r = Resend("test alerts", lost, max_alerts=3)
    r.failed([(None, alert(1)), (None, alert(2))], now=1.0)
    r.failed([(None, alert(3)), (None, alert(4))], now=2.0)
    assert [a["id"] for _, a in r.take()] == ["a2", "a3", "a4"]
    assert lost == {QUEUE_FULL: 1}


def feed_with(send: Any, lost: Counter[str], give_up_after: float = 600.0) -> HostFeed:
    health = HostHealth(HealthConfig(silent_after=60.0))
    return HostFeed(health, send, resend=Resend("host alerts", lost,
                                                give_up_after=give_up_after))  # fmt: skip


async def test_a_failed_send_is_tried_again_with_the_same_alert_once() -> None:
    sent: list[list[dict[str, Any]]] = []
    failures = [ConnectionError("no responders")]

    async def send(alerts: list[dict[str, Any]]) -> None:
        if failures:
            raise failures.pop()
        sent.append(alerts)

    lost: Counter[str] = Counter()
    feed = feed_with(send, lost)
    feed.pending = [alert(1)]
    await feed._flush(closing=False)
    assert sent == [] and len(feed.resend) == 1
    feed.pending = [alert(2)]
    await feed._flush(closing=False)
    assert sent == [[alert(1), alert(2)]]  # the retried one first, once
    await feed._flush(closing=False)
    assert sent == [[alert(1), alert(2)]] and len(feed.resend) == 0 and not lost


async def test_a_send_that_always_fails_gives_up_counted_and_keeps_nothing() -> None:
    async def send(alerts: list[dict[str, Any]]) -> None:
        raise PermissionError("permissions violation for publish")

    lost: Counter[str] = Counter()
    feed = feed_with(send, lost, give_up_after=0.05)
    feed.pending = [alert(1), alert(2)]
    await feed._flush(closing=False)
    assert len(feed.resend) == 2 and not lost
    await asyncio.sleep(0.06)
    await feed._flush(closing=False)
    assert len(feed.resend) == 0 and lost == {GAVE_UP: 2}
    feed.pending = [alert(3)]
    await feed._flush(closing=True)  # unsent at the stop: counted too
    assert lost == {GAVE_UP: 2, STOPPED: 1}


async def test_a_flood_of_malformed_meta_messages_is_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def send(alerts: list[dict[str, Any]]) -> None:
        pass

    feed = feed_with(send, Counter())
    caplog.set_level(logging.WARNING)
    for _ in range(1000):
        await feed._on_msg(Msg(NO_CLIENT, subject="snoopbus.meta.web1.heartbeat",
                               data=b"\xc1 not msgpack"))  # fmt: skip
    assert feed.ignored == 1000
    lines = [r for r in caplog.records if "malformed meta" in r.getMessage()]
    assert len(lines) == 1 and "web1" in lines[0].getMessage()
    assert feed.health.hosts == {}  # nothing observed from them


def test_the_alerter_exports_its_losses_by_reason_from_zero() -> None:
    alerter = AlertConsumer()  # the packaged rules
    first = {m.name: samples for m, samples in alerter.metrics()}
    assert sorted(first["snoopbus_alerts_lost_total"]) == [
        ([QUEUE_FULL], 0), ([GAVE_UP], 0), ([STOPPED], 0)]
    assert first["snoopbus_alert_meta_messages_ignored_total"] == [([], 0)]
    alerter.stats.lost[GAVE_UP] += 3
    samples = next(s for m, s in alerter.metrics() if m.name == "snoopbus_alerts_lost_total")
    assert ([GAVE_UP], 3) in samples
