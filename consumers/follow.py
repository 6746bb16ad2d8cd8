"""Reading the stream live, in order and at the reader's own pace (`snoopbus tail`).

A core subscription is pushed whatever is published: a reader slower than
the collector (a terminal, a pipe into grep, a paused `less`) falls behind,
the server cuts it off as a slow consumer ("unexpected EOF"), and what was
in flight is gone without a count. `Follower` reads the stream instead,
through an ordered consumer as the NATS clients build one: ephemeral, pull,
no acks, in memory, one replica, recreated after any gap. The server hands
over a batch only when asked, so a slow reader lags and loses nothing the
stream still holds.

What no reader can get back is what the stream itself dropped (retention
limits: age, bytes, message count) before the reader got to it. A jump in
stream sequence that reaches back past the stream's first message is
counted in `missed`: exact when every message of the stream matches the
filters, an upper bound otherwise (the skipped messages that no filter
wanted cannot be told apart once they are gone).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from snoopbus.proto import STREAM_NAME, stored_filters
from snoopbus.proto.bus import covers
from snoopbus.proto.stream_limits import MissedCounter

BATCH = 256  # messages per fetch: one round trip each, and a bounded amount in hand
INACTIVE_S = 120.0  # the server deletes a consumer left this long (tail killed, or stopped)
CHECK_EVERY_S = 5.0  # while idle, how often to check that the consumer still exists


class FollowError(RuntimeError):
    """The stream cannot be followed: the message says why and what to do."""


@dataclass
class FollowStats:
    missed: int = 0  # stream messages dropped by the stream before they were read
    recreated: int = 0  # consumers recreated after a gap or a deletion


class Follower:
    def __init__(
        self, js: JetStreamContext, subjects: list[str], *, stream: str = STREAM_NAME,
        batch: int = BATCH, inactive_s: float = INACTIVE_S,
    ) -> None:  # fmt: skip
        self.js = js
        self.subjects = subjects
        self.stream = stream
        self.batch = batch
        self.inactive_s = inactive_s
        self.stats = FollowStats()
        self.last_seq = 0  # stream sequence of the last message handed out
        self.name = ""
        self._sub: JetStreamContext.PullSubscription | None = None
        self._next_delivery = 1  # consumer sequence expected next
        self._checked = time.monotonic()
        self._missed = MissedCounter()  # stream sequences jumped over, counted against the head

    async def start(self) -> None:
        """Follow from the next message the stream stores (what is published from now on)."""
        try:
            info = await self.js.stream_info(self.stream)
        except NotFoundError:
            raise FollowError(
                f"no JetStream stream {self.stream} on this server: the collector (or "
                "`snoopbus up`) creates it when it first starts; start one, or check --nats"
            ) from None
        held = list(info.config.subjects or [])
        outside = [s for s in self.subjects if not any(covers(h, s) for h in held)]
        if outside:
            raise FollowError(
                f"cannot follow {', '.join(outside)} on stream {self.stream}: it holds only "
                f"{', '.join(held)}"
            )
        self.last_seq = info.state.last_seq
        await self._create()

    async def _create(self) -> None:
        if self._sub is not None:
            await self._drop()
        self.name = f"tail-{secrets.token_hex(8)}"
        filters = [f for s in self.subjects for f in stored_filters(s)]
        one = len(filters) == 1
        config = ConsumerConfig(
            name=self.name,
            description="snoopbus tail (ordered, ephemeral)",
            filter_subject=filters[0] if one else None,
            filter_subjects=None if one else filters,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.last_seq + 1,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=self.inactive_s,
            mem_storage=True,
            num_replicas=1,
        )
        try:
            await self.js.add_consumer(self.stream, config)
        except APIError as exc:
            raise FollowError(
                f"cannot follow {', '.join(self.subjects)} on stream {self.stream}: "
                f"{exc.description or exc}"
            ) from None
        self._sub = await self.js.pull_subscribe_bind(consumer=self.name, stream=self.stream)
        self._next_delivery = 1
        self._checked = time.monotonic()

    async def _drop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()

    async def _recreate(self) -> None:
        self.stats.recreated += 1
        await self._drop()  # if the create below times out, the next fetch tries again
        await self._create()

    async def fetch(self, wait: float = 1.0) -> list[Msg]:
        """The next messages in stream order, each once; none after `wait` s,
        or while the server does not answer (a reconnect): call again."""
        try:
            if self._sub is None:
                await self._create()
            return await self._fetch(wait)
        except TimeoutError:
            return []

    async def _fetch(self, wait: float) -> list[Msg]:
        assert self._sub is not None
        try:
            msgs = await self._sub.fetch(self.batch, timeout=wait)
        except TimeoutError:
            await self._check_alive()
            return []
        except APIError:  # the consumer is gone (deleted, server restarted)
            await self._recreate()
            return []
        out: list[Msg] = []
        gap = False
        for msg in msgs:
            seq = msg.metadata.sequence
            if seq.consumer != self._next_delivery:
                # A delivery went missing (a reconnect): start again after the
                # last message handed out. Later ones in this batch come again.
                gap = True
                break
            self._next_delivery += 1
            if seq.stream <= self.last_seq:
                continue  # seen before a recreation
            if seq.stream > self.last_seq + 1:
                self._missed.skip(self.last_seq + 1, seq.stream - 1)
            self.last_seq = seq.stream
            out.append(msg)
        self._checked = time.monotonic()
        # `out` is handed out whatever happens below: last_seq has passed it.
        try:
            if self._missed.pending:
                await self._count_dropped()
            if gap:
                await self._recreate()
        except TimeoutError:
            pass  # counted, or recreated, on the next fetch
        return out

    async def _count_dropped(self) -> None:
        """Of the sequences skipped, those before the stream's first are gone unread."""
        info = await self.js.stream_info(self.stream)
        self.stats.missed += self._missed.count(info.state.first_seq)

    async def _check_alive(self) -> None:
        if time.monotonic() - self._checked < CHECK_EVERY_S:
            return
        self._checked = time.monotonic()
        try:
            await self.js.consumer_info(self.stream, self.name)
        except NotFoundError:
            await self._recreate()

    async def close(self) -> None:
        """Unsubscribe and delete the consumer (left behind, it would expire by itself)."""
        await self._drop()
        if self.name:
            try:
                await asyncio.wait_for(self.js.delete_consumer(self.stream, self.name), 2)
            except (APIError, TimeoutError):
                pass
