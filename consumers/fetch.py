"""Pulling from a durable in batches bounded by count *and* bytes.

nats-py's `fetch(batch)` bounds a batch by count only: through a backlog of
large messages one fetch could bring `batch` x max_payload (256 MiB with the
defaults). A JetStream pull request also takes `max_bytes`, and the server
then stops before the message that would pass it. So this puller asks for
at most `batch` messages and `max_bytes` bytes (never less than the largest
message the server accepts, or a big one could never be delivered), and
returns what one request brought:

1. what the durable has now (`no_wait`: the server answers at once, with
   the messages or "no messages");
2. if nothing, one message, waiting up to the timeout for it; then what
   else is there by then, without waiting. A trickle is handed on as it
   comes, not held for the timeout to fill a batch.

A request ends with the count reached or a status message (404 no
messages, 408 expired, 409 the byte bound or others). Messages that arrive
after their request was given up on (a late reply) are handed out by the
next fetch, first, within the same bounds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

# Room over max_payload for the subject, reply and headers the server counts too.
_ENVELOPE = 64 << 10


class Puller:
    """One durable's messages, a bounded batch per `fetch`."""

    def __init__(
        self, nc: Client, js: JetStreamContext, stream: str, durable: str, *, batch: int,
        max_bytes: int,
    ) -> None:  # fmt: skip
        if batch < 1 or max_bytes < 1:
            raise ValueError("puller: batch and max_bytes must be >= 1")
        self.batch = batch
        # The server refuses a request smaller than a message it holds ("409
        # Message Size Exceeds MaxBytes") and would never hand that one out.
        self.max_bytes = max(max_bytes, (nc.max_payload or 0) + _ENVELOPE)
        prefix = getattr(js, "_prefix", "$JS.API")
        self._next = f"{prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._nc = nc
        self._sub: Subscription | None = None
        self._inbox = ""
        self._requests = 0  # each request replies on its own subject: <inbox>.<n>
        self._arrived: deque[Msg] = deque()  # replies not yet handed out
        self._wake = asyncio.Event()
        self.largest = 0  # bytes of the largest batch returned (tests, metrics)

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(
            f"{self._inbox}.*", cb=self._on_msg, pending_msgs_limit=4 * self.batch + 64,
            pending_bytes_limit=4 * self.max_bytes,
        )  # fmt: skip

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception:  # the connection is going away: nothing to tidy
                pass

    async def _on_msg(self, msg: Msg) -> None:
        self._arrived.append(msg)
        self._wake.set()

    async def fetch(self, wait: float) -> list[Msg]:
        """Up to `batch` messages and `max_bytes` bytes; [] if none came in `wait` s."""
        msgs, size = self._late()
        if not msgs:
            msgs, size = await self._pull(self.batch, self.max_bytes, None, wait)
        if not msgs:
            msgs, size = await self._pull(1, self.max_bytes, wait, wait)
            if msgs and self.batch > 1 and size < self.max_bytes:
                more, extra = await self._pull(
                    self.batch - 1, self.max_bytes - size, None, wait
                )
                msgs += more
                size += extra
        self.largest = max(self.largest, size)
        return msgs

    def _late(self) -> tuple[list[Msg], int]:
        """Replies that came after their request was given up on, within the bounds."""
        msgs: list[Msg] = []
        size = 0
        arrived = self._arrived
        while arrived and len(msgs) < self.batch:
            msg = arrived[0]
            if not JetStreamContext.is_status_msg(msg):
                n = _size(msg)
                if msgs and size + n > self.max_bytes:
                    break  # the next fetch's
                msgs.append(msg)
                size += n
            arrived.popleft()
        return msgs, size

    async def _pull(
        self, batch: int, max_bytes: int, expires: float | None, wait: float
    ) -> tuple[list[Msg], int]:
        request: dict[str, object] = {"batch": batch, "max_bytes": max_bytes}
        if expires is None:
            request["no_wait"] = True
        else:
            # Expire on the server a little before we stop listening.
            request["expires"] = max(1_000_000, int((expires - 0.05) * 1e9))
        # Its own reply subject: a late status ending an earlier request must not
        # end this one, which the server would then still hold open (and fill,
        # e.g. with a message nak'd at shutdown, for nobody to read until ack_wait).
        self._requests += 1
        reply = f"{self._inbox}.{self._requests}"
        await self._nc.publish(self._next, json.dumps(request).encode(), reply=reply)
        msgs: list[Msg] = []
        size = 0
        deadline = time.monotonic() + wait
        arrived = self._arrived
        while len(msgs) < batch:
            if not arrived:
                self._wake.clear()
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except TimeoutError:
                    break
                continue
            msg = arrived.popleft()
            status = JetStreamContext.is_status_msg(msg)
            if status == "100":  # idle heartbeat or flow control: not asked for
                continue
            if status:
                if msg.subject != reply:
                    continue  # the end of an earlier request, come late
                break  # 404 no messages, 408 expired, 409 bytes reached...: this request is over
            msgs.append(msg)
            size += _size(msg)
        return msgs, size


def _size(msg: Msg) -> int:
    """About what the server counts against max_bytes."""
    headers = sum(len(k) + len(v) for k, v in msg.headers.items()) if msg.headers else 0
    return len(msg.data) + len(msg.subject) + len(msg.reply or "") + headers
