"""The alerter's view of its hosts' collectors: meta reports in, health alerts out.

A core subscription to snoopbus.meta.<host>.* (every watched host) feeds
`HostHealth` as reports arrive; at start, the last reports the stream holds
seed it, so a host that went silent while no alerter ran is noticed too. A
ticker asks it for silent hosts and sends what it raised through the
alerter's outputs (NATS first: forwarded, archived and shown like any alert).
A send that fails is tried again on the next ticks, within resend.py's bounds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from snoopbus.proto import DecodeError, SubjectError, decode_map, meta_filter, parse_subject

from ..host_reports import hosts_in_stream, last_reports
from .hosts import HostHealth
from .resend import STOPPED, Resend

log = logging.getLogger(__name__)

Send = Callable[[list[dict[str, Any]]], Awaitable[None]]

# A malformed meta message is logged at most this often (the rest are counted):
# anyone who may publish on a meta subject must not be able to flood the log.
WARN_EVERY = 60.0


class HostFeed:
    def __init__(
        self, health: HostHealth, send: Send, hosts: Sequence[str] = ("*",),
        owns: Callable[[str], bool] = lambda host: True, resend: Resend | None = None,
    ) -> None:  # fmt: skip
        self.health = health
        self.send = send
        self.hosts = tuple(hosts) or ("*",)
        self.owns = owns  # this instance's partition: a host is watched by one alerter
        self.pending: list[dict[str, Any]] = []  # raised, not yet tried
        self.resend = resend if resend is not None else Resend("host alerts", Counter())
        self.ignored = 0  # malformed meta messages
        self._ignored_since_warning = 0
        self._warned_at: float | None = None
        self._warned: set[str] = set()  # hosts whose heartbeat is too slow for silent_after
        self._subs: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    async def start(self, nc: Client, js: JetStreamContext) -> None:
        for host in self.hosts:  # live first, so nothing falls between seed and subscription
            self._subs.append(await nc.subscribe(meta_filter(host), cb=self._on_msg))
        await self._seed(js)
        self._task = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        self._closing.set()
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass  # the connection is going: so is the subscription
        if self._task is not None:
            await self._task

    async def _seed(self, js: JetStreamContext) -> None:
        try:
            for pattern in self.hosts:
                for host in sorted(await hosts_in_stream(js, pattern)):
                    if not self.owns(host):
                        continue
                    for report in await last_reports(js, host):
                        age = max(0.0, time.time() - report.stored)
                        self._observe(host, report.what, report.body, time.monotonic() - age)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            # Without the seed, hosts are watched from their next report on.
            log.warning("alert: could not read the hosts' last reports from the stream (%s); "
                        "watching hosts from their next report", exc)  # fmt: skip

    async def _on_msg(self, msg: Msg) -> None:
        try:
            parts = parse_subject(msg.subject)
            body = decode_map(msg.data)
        except (SubjectError, DecodeError) as exc:
            self._ignore(msg.subject, exc)
            return
        if parts.host is not None and self.owns(parts.host):
            self._observe(parts.host, parts.type, body, time.monotonic())

    def _ignore(self, subject: str, exc: Exception) -> None:
        self.ignored += 1
        self._ignored_since_warning += 1
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY:
            log.warning("alert: %d malformed meta message(s) ignored (in %gs at most one line); "
                        "the last on %r: %s", self._ignored_since_warning, WARN_EVERY,
                        subject, exc)  # fmt: skip
            self._warned_at, self._ignored_since_warning = now, 0

    def _observe(self, host: str, what: str, body: dict[str, Any], at: float) -> None:
        self.pending += self.health.observe(host, what, body, at)
        interval, silent_after = body.get("interval"), self.health.config.silent_after
        if (isinstance(interval, int | float) and silent_after and interval * 1.5 > silent_after
                and host not in self._warned):
            self._warned.add(host)
            log.warning("alert: host %s sends a heartbeat every %gs: with --silent-after %gs "
                        "it will be called silent between two; raise silent_after above "
                        "1.5 heartbeat intervals", host, interval, silent_after)

    async def _tick(self) -> None:
        silent_after = self.health.config.silent_after
        period = min(1.0, silent_after / 4) if silent_after > 0 else 1.0
        while True:
            closing = self._closing.is_set()
            await self._flush(closing)
            if closing:
                return
            try:
                await asyncio.wait_for(self._closing.wait(), period)
            except TimeoutError:
                pass

    async def _flush(self, closing: bool) -> None:
        """Send what was raised and what waits to be sent again (the same ids: no copies)."""
        fresh, self.pending = self.pending + self.health.check(time.monotonic()), []
        batch: list[tuple[float | None, dict[str, Any]]] = [
            *self.resend.take(), *((None, alert) for alert in fresh)]
        if not batch:
            return
        try:
            await self.send([alert for _, alert in batch])
        except Exception as exc:
            if closing:
                self.resend.lost[STOPPED] += len(batch)
                log.error("alert: %d host alerts not sent at shutdown: %s", len(batch), exc)
                return
            log.error("alert: could not send %d host alerts (will retry): %s", len(batch), exc)
            self.resend.failed(batch, time.monotonic())
