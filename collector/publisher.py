"""Publishes events to JetStream in per-subject batches, without blocking the reader.

The ring-buffer reader hands batches to submit() (both run on the event
loop); submit only appends to per-subject buffers. Batching adapts to the
load (collector/flush_policy.py): while the sender is idle (nothing queued,
fewer than `eager_inflight` acks out) a submit is flushed at once, so a lone
event is not held back; while it keeps up with acks out, buffers wait
`linger` (2 ms) from their oldest event; while messages queue, they wait up
to `flush_interval`, or `max_batch` events, and become messages of up to
`max_batch` events, cut to the connected server's max_payload (collector/fit.py: split,
and an event too large alone truncated field by field), each with a
Nats-Msg-Id made once (proto/msgid.py: namespaced by host, unguessable, kept
through retries and the spill). A
sender publishes them with up to `max_inflight` acks outstanding. A message
that no longer fits (a reconnect to a server with a smaller max_payload) is
split again before it is sent: it was never sent, so its pieces may take new ids.

Errors are of two kinds (loss_reason):
- transient (disconnected, a timeout, JetStream unavailable): retried with the
  same id, in order, holding back new sends, for as long as it takes; nothing
  is lost, and JetStream's dedup window drops a copy that did land.
- a PubAck saying `duplicate` for a message's first send (not a retry, not a
  replay from the spill, which may have landed before a stop): the stream
  already held that id, so this message was dropped. Only another publisher
  having used the id first (proto/SECURITY.md) can do that: counted lost
  (`duplicate_id`), never silent.
- permanent (max payload, permissions violation, no stream for the subject,
  bad subject, JetStream refusing the message): retried for `retry_permanent_s`
  seconds (`retry_denied_s` for a denial; none for what cannot change: too
  large, bad subject), then counted lost by reason (collector/loss.py) and the
  queue moves on. Later messages meeting the same error get one attempt each until a
  publish there succeeds, so a refused subject cannot stall the rest.

Meta reports (status, loss, heartbeat) have their own lane: a small queue
and sender of their own, never behind events, so a collector that cannot
publish events still says so. A collector that captured events but published
none for `stall_after` seconds is `stalled` (reported by the agent).

When NATS is away or slow, events wait in memory up to `max_buffered`; past
that, new messages go to the spill on disk (collector/spill.py) up to
`spill_max_bytes`, and from then on every new message goes there too until it
has drained, so the stream gets events in the order they were read. What
finds both bounds full is dropped and counted (`publish_backlog`). At stop,
what NATS did not acknowledge within the grace period is spilled for the next
start, reports included (or counted as `publish_failed` without a spill).

A publisher may start before NATS is reachable (js=None): it buffers and
spills as in an outage and sends once attach() gives it a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import defaultdict, deque
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Protocol

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import PubAck

from snoopbus.collector.fit import Unencodable, fit_all
from snoopbus.collector.flush_policy import FlushPolicy
from snoopbus.collector.loss import (
    DUPLICATE_ID,
    PUBLISH_BACKLOG,
    PUBLISH_BAD_SUBJECT,
    PUBLISH_DENIED,
    PUBLISH_FAILED,
    PUBLISH_NO_STREAM,
    PUBLISH_REJECTED,
    PUBLISH_TOO_LARGE,
    SPILL_IO_ERROR,
    SPILL_TORN,
    UNENCODABLE,
    LossCounters,
)
from snoopbus.collector.spill import Spill, Spilled
from snoopbus.collector.stagetrace import StageTrace
from snoopbus.proto import Event, SchemaError, as_map, decode_batch
from snoopbus.proto.backoff import backoff_delay
from snoopbus.proto.msgid import ID_HEADER, ID_ROOM, MessageIds, id_host
from snoopbus.proto.settings_file import CollectorSection
from snoopbus.proto.subjects import subject_host

log = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD: Final = 1 << 20  # nats-server's default, until a server says otherwise
# Bytes kept free for the header block ("NATS/1.0", Nats-Msg-Id, what a server
# or a later version adds): nats-server counts headers against max_payload,
# and nats-py only checks the payload; a message over the limit makes the server
# send -ERR, on which nats-py closes the connection for good.
HEADER_ROOM: Final = 512
# s before the first retry of a message or report, doubling up to the cap
RETRY_FIRST_S: Final = 0.05
RETRY_CAP_S: Final = 1.0
JS_MESSAGE_TOO_LARGE: Final = 10054  # JetStream: over the stream's max_msg_size
_DENIED: Final = re.compile(r'permissions violation for publish to "([^"]+)"', re.IGNORECASE)


@dataclass(frozen=True)
class PublisherConfig:
    max_batch: int = 256  # events per NATS message (fewer when max_payload says so)
    # When partial batches are cut (collector/flush_policy.py): at once while fewer than
    # `eager_inflight` acks are out and nothing is queued; `linger` s after the oldest
    # buffered event while the sender keeps up; `flush_interval` s while it is behind.
    eager_inflight: int = 4
    linger: float = 0.002
    flush_interval: float = 0.02
    max_inflight: int = 64  # messages awaiting a JetStream ack
    # events held in memory before the spill (or loss); this and the spill size and
    # stall_after default to [collector]'s (proto/settings_file.py)
    max_buffered: int = CollectorSection.buffer_events
    ack_timeout: float = 5.0
    spill_dir: Path | None = None  # None: no spill, memory only
    spill_max_bytes: int = CollectorSection.spill_max_mb << 20
    # s a message meeting a permanent error is retried before it is counted lost;
    # long enough for a cluster to elect a stream leader (no responders meanwhile)
    retry_permanent_s: float = 10.0
    # a denial is the server's configuration, not an election: a short budget, per
    # subject, so that a collector denied every subject does not wait this per type
    retry_denied_s: float = 1.0
    stall_after: float = CollectorSection.stall_after  # s captured, none published: stalled
    max_reports: int = 1000  # meta reports held while NATS is away; the oldest go first


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    msg_id: str
    count: int
    payload: bytes
    spilled: Spilled | None = None  # read back from the spill: ack it there
    # pieces of one spilled message: [pieces not yet settled], shared by them
    pieces_left: list[int] | None = None


class PublishDenied(Exception):
    """The server's permissions refuse publishing to the subject (its -ERR came on
    the connection; the publish itself would only time out)."""


class NotConnected(Exception):
    """Reconnecting: nothing is sent meanwhile (nats-py would buffer it for a
    server whose max_payload is not known yet)."""

    def __str__(self) -> str:
        return "disconnected from NATS"


def loss_reason(exc: BaseException) -> str | None:
    """The loss reason of an error that waiting will not cure; None for a
    transient one (retried in order, nothing lost)."""
    if isinstance(exc, PublishDenied):
        return PUBLISH_DENIED
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PUBLISH_TOO_LARGE
    if isinstance(exc, nats.errors.BadSubjectError):
        return PUBLISH_BAD_SUBJECT
    if isinstance(exc, nats.js.errors.NoStreamResponseError | nats.errors.NoRespondersError):
        return PUBLISH_NO_STREAM
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return None  # JetStream busy or electing: wait
    if isinstance(exc, nats.js.errors.APIError):
        return PUBLISH_TOO_LARGE if exc.err_code == JS_MESSAGE_TOO_LARGE else PUBLISH_REJECTED
    return None


def denied_subject(err: BaseException) -> str | None:
    """The subject (lower case, as nats-py passes it on) of a publish permissions
    violation the server reported, else None."""
    found = _DENIED.search(str(err))
    return found.group(1).lower() if found else None


def describe(exc: BaseException) -> str:
    text = str(exc).removeprefix("nats: ").strip()
    return text or type(exc).__name__


class JetStreamPublish(Protocol):
    """What the publisher uses of a JetStream context: nats-py's own, or the
    metrics' PublishCounter standing in for it (collector/metrics.py)."""

    def publish(
        self, subject: str, payload: bytes, *, timeout: float | None,
        headers: dict[str, Any] | None,
    ) -> Awaitable[PubAck]: ...


class Publisher:
    def __init__(
        self, js: JetStreamPublish | None, loss: LossCounters, config: PublisherConfig,
        nc: Client | None = None, trace: StageTrace | None = None,
    ) -> None:
        self._js = js  # None until attach()
        self._trace = trace
        self._nc = nc  # for its max_payload and state; None: assume DEFAULT_MAX_PAYLOAD
        self._stream_max = -1  # the stream's max_msg_size, when it has one
        self._online = asyncio.Event()
        if js is not None:
            self._online.set()
        self._loss = loss
        self._cfg = config
        self._buffers: dict[str, list[Event]] = defaultdict(list)  # bound for memory
        self._overflow: dict[str, list[Event]] = defaultdict(list)  # bound for the spill
        self._overflow_n = 0
        self._queue: deque[Message] = deque()
        self._buffered = 0  # events in memory: buffers, queue and in flight
        self._wake = asyncio.Event()
        self._policy = FlushPolicy(config.max_batch, config.eager_inflight, config.linger,
                                   config.flush_interval)
        self._oldest: float | None = None  # time.monotonic() of the oldest buffered event
        self._ready = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_inflight)
        self._healthy = asyncio.Event()  # cleared while failed publishes are retried
        self._healthy.set()
        self._retry_lock = asyncio.Lock()
        self._failing = 0
        self._progress = asyncio.Event()  # set whenever a message is settled
        # task -> the messages it still has to settle (one, or the pieces it was cut into)
        self._inflight: dict[asyncio.Task[None], list[Message]] = {}
        self._sender: asyncio.Task[None] | None = None
        # Meta reports: their own lane.
        self._reports: deque[Message] = deque()
        self._reports_ready = asyncio.Event()
        self._reporter: asyncio.Task[None] | None = None
        # Permanent errors: subject (or "" for the whole stream) -> reason, until a
        # publish there succeeds; publishes awaiting an ack -> their subject.
        self._broken: dict[str, str] = {}
        self._attempts: dict[asyncio.Future[Any], str] = {}
        self._aborted: set[asyncio.Future[Any]] = set()
        self._denied_at: dict[str, float] = {}
        # time.monotonic() of the first event captured since the last one published
        # (read by the metrics thread too)
        self._waiting_since: float | None = None
        self._events_stopped = False
        self._closing = False
        self.last_error = ""  # the last publish error, for status reports
        self.submitted_events = 0
        self.published_events = 0
        self.published_messages = 0
        # subject -> events acknowledged on it (a report counts 0): the metrics' by type
        self.published_by_subject: dict[str, int] = {}
        self.largest_message = 0  # payload bytes of the largest message acknowledged
        self.cut_batches = 0  # batches over the limit, split to fit
        self.truncated_events = 0  # events over the limit alone, cut to fit
        self.reports_lost = 0
        self.duplicate_ids = 0  # first sends the stream said it already had (see above)
        self._ids = MessageIds()
        self.spilled_total = 0  # events ever written to the spill
        self.spill: Spill | None = None
        if config.spill_dir is not None:
            self.spill = Spill(config.spill_dir, config.spill_max_bytes)
            self._loss.add(SPILL_TORN, self.spill.torn_events)

    # -- state ----------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return self._buffered

    @property
    def spilled(self) -> int:
        """Events waiting on disk (or about to be written there)."""
        return (self.spill.events if self.spill is not None else 0) + self._overflow_n

    @property
    def online(self) -> bool:
        return self._online.is_set()

    def payload_limit(self) -> int:
        """Bytes a message may take, headers included: the connected server's
        max_payload (nats-py re-reads it from INFO at every reconnect), and the
        stream's max_msg_size if smaller."""
        limit = self._nc.max_payload if self._nc is not None else DEFAULT_MAX_PAYLOAD
        return min(limit, self._stream_max) if self._stream_max > 0 else limit

    def stalled_for(self) -> float:
        """Seconds since the first event captured after the last one published (0: none waits)."""
        if self._waiting_since is None:
            return 0.0
        return time.monotonic() - self._waiting_since

    @property
    def stalled(self) -> bool:
        return self.stalled_for() > self._cfg.stall_after

    def attach(self, js: JetStreamPublish, nc: Client | None = None,
               stream_max_msg: int | None = None) -> None:
        """NATS became reachable and the stream exists: start sending."""
        self._js = js
        if nc is not None:
            self._nc = nc
        self._stream_max = stream_max_msg or -1
        self._online.set()

    def note_error(self, err: BaseException) -> None:
        """An asynchronous error from the connection (its error callback): a
        publish permissions violation fails the publishes to that subject now,
        rather than after their ack timeout."""
        subject = denied_subject(err)
        if subject is None:
            return
        self._denied_at[subject] = asyncio.get_running_loop().time()
        for fut, key in list(self._attempts.items()):
            if key == subject and not fut.done():
                self._aborted.add(fut)
                fut.cancel()

    # -- taking events and reports --------------------------------------------

    def _spilling(self) -> bool:
        return self.spill is not None and bool(self._overflow_n or self.spill.has_next())

    def message_id(self, subject: str, count: int) -> str:
        """A new Nats-Msg-Id for a message of `count` events (0: a report) to `subject`."""
        return self._ids.new(subject, count)

    def submit_meta(self, subject: str, msg_id: str, payload: bytes) -> None:
        """One report (no events in it), in the reports' own lane."""
        if len(self._reports) >= self._cfg.max_reports:
            self._reports.popleft()  # reports are cumulative: the newest say more
            self.reports_lost += 1
        self._reports.append(Message(subject, msg_id, 0, payload))
        self._reports_ready.set()

    def submit(self, batch: list[tuple[str, Event]]) -> None:
        if not batch:
            return
        self.submitted_events += len(batch)
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        spilling = self._spilling()
        room = 0 if spilling else max(self._cfg.max_buffered - self._buffered, 0)
        for subject, event in batch[:room]:
            self._buffers[subject].append(event)
        kept = min(room, len(batch))
        self._buffered += kept
        if kept and self._oldest is None:
            self._oldest = time.monotonic()
        rest = len(batch) - kept
        if self._trace is not None:
            self._trace.submitted({subject for subject, _ in batch[:kept]})
        if rest and self.spill is None:
            self._loss.add(PUBLISH_BACKLOG, rest)
        elif rest:
            for subject, event in batch[kept:]:
                self._overflow[subject].append(event)
            self._overflow_n += rest
        if self._flush_wait() == 0.0:
            self._wake.set()

    def _flush_wait(self) -> float | None:
        """Adaptive batching (collector/flush_policy.py): s until the buffers are
        due, 0 now; None when they are empty. Offline or retrying counts as behind."""
        fullest = max(map(len, self._buffers.values()), default=0)
        behind = bool(self._queue) or not (self._online.is_set() and self._healthy.is_set())
        age = time.monotonic() - self._oldest if self._oldest is not None else 0.0
        return self._policy.wait(age=age, fullest=fullest, queued=int(behind),
                                 inflight=len(self._inflight))

    async def run(self) -> None:
        """Flushes until close(); call as a task."""
        self._start_senders()
        while not self._closing:
            wait = self._flush_wait()
            if wait != 0.0:
                try:
                    await asyncio.wait_for(self._wake.wait(),
                                           self._cfg.flush_interval if wait is None else wait)
                except TimeoutError:
                    pass
            self._wake.clear()
            # Empty buffers too: that kicks the sender for the spill every flush_interval.
            if self._flush_wait() in (0.0, None) or self._overflow_n:
                self._flush()

    def _start_senders(self) -> None:
        if self._sender is None and not self._events_stopped:
            self._sender = asyncio.create_task(self._send())
        if self._reporter is None:
            self._reporter = asyncio.create_task(self._send_reports())

    # -- cutting messages -------------------------------------------------------

    def _fitted(self, subject: str, events: list[Event]) -> tuple[list[Message], int]:
        """`events` as messages that fit payload_limit(), and how many were refused
        (counted lost here: an event too large even truncated, or unencodable)."""
        budget = self.payload_limit() - HEADER_ROOM - ID_ROOM - len(subject_host(subject))
        runs, refused = fit_all(events, budget)
        if len(runs) + len(refused) > 1:
            self.cut_batches += 1
        self.truncated_events += sum(  # truncate_event returns a copy
            1 for run, _ in runs if len(run) == 1 and not any(e is run[0] for e in events))
        for event, why in refused:
            reason = UNENCODABLE if isinstance(why, Unencodable) else PUBLISH_TOO_LARGE
            log.warning("event %s on %s not sent (%s): %s", as_map(event).get("id"), subject,
                        reason, why)
            self._loss.add(reason)
        msgs = [Message(subject, self._ids.new(subject, len(run)), len(run), data)
                for run, data in runs]
        return msgs, len(refused)

    def _chunks(self, buffers: dict[str, list[Event]]) -> tuple[list[Message], int]:
        out: list[Message] = []
        refused = 0
        for subject, events in buffers.items():
            for i in range(0, len(events), self._cfg.max_batch):
                msgs, lost = self._fitted(subject, events[i : i + self._cfg.max_batch])
                out += msgs
                refused += lost
        return out, refused

    def _fits(self, msg: Message) -> bool:
        return len(msg.payload) + len(msg.msg_id) + HEADER_ROOM <= self.payload_limit()

    def _split(self, msg: Message) -> list[Message]:
        """The pieces of a message over the current limit (never sent: new ids are
        safe). What cannot be cut (a report) is counted lost and settled here."""
        events: list[Event] = []
        if msg.count:
            try:
                events = decode_batch(msg.payload)  # our own encoding: text back to str
            except SchemaError as exc:
                log.warning("a message read back for %s is not a batch: %s", msg.subject, exc)
        if not events:
            self._lost(msg, PUBLISH_TOO_LARGE)
            return []
        pieces, refused = self._fitted(msg.subject, events)
        log.info("%s: %d events re-cut into %d messages for a %d-byte limit",
                 msg.subject, msg.count, len(pieces), self.payload_limit())
        if msg.spilled is None:
            self._buffered -= refused
            return pieces
        left = msg.pieces_left or [1]
        left[0] += len(pieces) - 1  # the message itself stands for its pieces now
        if left[0] == 0:
            self._ack_spilled(msg.spilled)
        return [replace(p, spilled=msg.spilled, pieces_left=left) for p in pieces]

    def _flush(self) -> None:
        """Buffers -> messages in the memory queue; overflow -> messages in the spill."""
        buffers, self._buffers = self._buffers, defaultdict(list)
        self._oldest = None
        msgs, refused = self._chunks(buffers)
        self._buffered -= refused
        if self._trace is not None:
            self._trace.cut((m.subject, m.msg_id) for m in msgs)
        self._queue.extend(msgs)
        if self._overflow_n:
            overflow, self._overflow = self._overflow, defaultdict(list)
            self._overflow_n = 0
            self._to_spill(self._chunks(overflow)[0])
        if self._queue or (self.spill is not None and self.spill.has_next()):
            self._ready.set()

    def _to_spill(self, messages: list[Message]) -> None:
        assert self.spill is not None
        for m in messages:
            try:
                if self.spill.append(m.subject, m.msg_id, m.count, m.payload):
                    self.spilled_total += m.count
                else:
                    self._loss.add(PUBLISH_BACKLOG, m.count)
                    if not m.count:
                        self.reports_lost += 1
            except OSError as exc:
                log.warning("could not write to the spill %s: %s", self.spill.dir, exc)
                self._loss.add(SPILL_IO_ERROR, m.count)

    def _next(self) -> Message | None:
        """The memory queue first: while the spill holds anything, nothing newer
        than it enters the queue, so this is the order events were read in. A
        message over the current limit is replaced by its pieces, in place."""
        while True:
            if self._queue:
                msg = self._queue.popleft()
            elif self.spill is not None and (s := self.spill.next()) is not None:
                msg_id = s.msg_id
                if id_host(msg_id) != subject_host(s.subject):  # spilled by an older version
                    msg_id = self._ids.new(s.subject, s.count)
                msg = Message(s.subject, msg_id, s.count, s.payload, spilled=s)
            else:
                return None
            if self._fits(msg):
                return msg
            self._queue.extendleft(reversed(self._split(msg)))

    # -- sending events ---------------------------------------------------------

    async def _send(self) -> None:
        while True:
            await self._slots.acquire()  # backpressure: bounded acks in flight
            await self._online.wait()
            await self._healthy.wait()
            msg = self._next()
            while msg is None:
                self._ready.clear()
                await self._ready.wait()
                msg = self._next()
            task = asyncio.create_task(self._publish(msg))
            self._inflight[task] = [msg]

    async def _publish(self, msg: Message) -> None:
        try:
            try:
                ack = await self._attempt(msg)
                if ack.duplicate and msg.spilled is None:  # its first send: someone had the id
                    self.duplicate_ids += 1
                    self.last_error = f"the stream already held id {msg.msg_id} (on {msg.subject})"
                    self._lost(msg, DUPLICATE_ID)
                else:
                    self._delivered(msg)
            except Exception as exc:  # timeouts, no responders, disconnected, refused
                known = self._broken.get(msg.subject) or self._broken.get("")
                log.log(logging.DEBUG if known else logging.WARNING,
                        "publish to %s failed (%s); retrying in order", msg.subject,
                        describe(exc))
                await self._recover(msg, exc)
        finally:
            self._slots.release()
        task = asyncio.current_task()
        if task is not None:
            self._inflight.pop(task, None)

    async def _attempt(self, msg: Message) -> PubAck:
        """One publish, until its ack. PublishDenied when the server's -ERR says the
        subject is refused; NotConnected (nothing sent) while reconnecting."""
        nc = self._nc
        if nc is not None and not nc.is_connected and not nc.is_closed:
            raise NotConnected
        if not self._fits(msg):  # headers included: the server would close the connection
            raise nats.errors.MaxPayloadError
        key = msg.subject.lower()
        loop = asyncio.get_running_loop()
        started = loop.time()
        js = self._js
        assert js is not None  # sending starts (_online) only once attached
        fut = asyncio.ensure_future(js.publish(
            msg.subject, msg.payload, timeout=self._cfg.ack_timeout,
            headers={ID_HEADER: msg.msg_id},
        ))
        self._attempts[fut] = key
        if self._trace is not None:
            self._trace.handed(msg.msg_id)
        try:
            return await fut
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if fut in self._aborted and not (task is not None and task.cancelling()):
                raise PublishDenied(f"permissions violation for publish to {msg.subject}") from None
            raise
        except TimeoutError:
            if self._denied_at.get(key, -1.0) >= started:
                raise PublishDenied(f"permissions violation for publish to {msg.subject}") from None
            raise
        finally:
            self._attempts.pop(fut, None)
            self._aborted.discard(fut)

    async def _recover(self, msg: Message, exc: Exception) -> None:
        """Retries one at a time, in the order they failed (which is the order they
        were sent: all wait the same ack timeout), and holds back new sends
        meanwhile, so an outage does not reorder the stream."""
        self._healthy.clear()
        self._failing += 1
        try:
            async with self._retry_lock:  # asyncio locks are FIFO
                await self._retry(msg, exc)
        finally:
            self._failing -= 1
            if not self._failing:
                self._healthy.set()

    async def _retry(self, msg: Message, exc: Exception) -> None:
        """Until `msg` is stored, or counted lost for a permanent error."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        failures = 0
        while True:
            reason = loss_reason(exc)
            self.last_error = f"{describe(exc)} (publishing to {msg.subject})"
            if reason == PUBLISH_TOO_LARGE and msg.count:
                # The limit went down since it was cut (a reconnect): cut it again.
                await self._deliver_all(msg, self._split(msg))
                return
            if reason is not None:
                known = self._broken.get(msg.subject) == reason or self._broken.get("") == reason
                if self._give_up(msg, reason, loop.time() - started):
                    self._lost(msg, reason, quiet=known)  # known: said once already
                    return
            failures += 1
            delay = backoff_delay(failures, RETRY_FIRST_S, RETRY_CAP_S)
            log.debug("retry of %s in %.2fs (%s)", msg.msg_id, delay, describe(exc))
            await asyncio.sleep(delay)
            try:
                await self._attempt(msg)
                self._delivered(msg)
                return
            except Exception as e:
                exc = e

    async def _deliver_all(self, whole: Message, pieces: list[Message]) -> None:
        """Publishes the pieces a message was cut into, in order."""
        holder = self._held()
        if holder is not None:
            holder[holder.index(whole) : holder.index(whole) + 1] = pieces
        for piece in pieces:
            try:
                await self._attempt(piece)
                self._delivered(piece)
            except Exception as exc:
                await self._retry(piece, exc)

    def _held(self) -> list[Message] | None:
        """The messages the current task is publishing, if it is one of the sender's."""
        task = asyncio.current_task()
        return self._inflight.get(task) if task is not None else None

    def _give_up(self, msg: Message, reason: str, retried_s: float) -> bool:
        if reason in (PUBLISH_TOO_LARGE, PUBLISH_BAD_SUBJECT):
            return True  # the same bytes to the same subject fail the same way
        key = msg.subject if reason == PUBLISH_DENIED else ""  # else: stream-wide
        if self._broken.get(key) == reason:
            return True  # known broken: one attempt per message, until one succeeds
        cfg = self._cfg
        if retried_s < (cfg.retry_denied_s if reason == PUBLISH_DENIED else cfg.retry_permanent_s):
            return False
        self._broken[key] = reason
        log.warning("publishing to %s failed for %.0fs (%s): counting its events as lost "
                    "(%s) until a publish succeeds", msg.subject, retried_s, self.last_error,
                    reason)
        return True

    def _settle(self, msg: Message) -> None:
        """`msg` is done with (stored, or counted lost): free it in memory or the spill."""
        holder = self._held()
        if holder is not None and msg in holder:
            holder.remove(msg)
        self._progress.set()
        if msg.spilled is None:
            self._buffered -= msg.count
            return
        if msg.pieces_left is not None:
            msg.pieces_left[0] -= 1
            if msg.pieces_left[0] > 0:
                return
        self._ack_spilled(msg.spilled)

    def _ack_spilled(self, spilled: Spilled) -> None:
        assert self.spill is not None
        self.spill.ack(spilled)

    def _delivered(self, msg: Message) -> None:
        # Acknowledged: only now does the message count as delivered.
        self.published_events += msg.count
        self.published_messages += 1
        self._count_published(msg)
        self.largest_message = max(self.largest_message, len(msg.payload))
        self._broken.pop(msg.subject, None)
        self._broken.pop("", None)
        self._settle(msg)
        if self._buffers and self._flush_wait() == 0.0:  # the sender freed up: what waits goes
            self._wake.set()
        if msg.count:
            nothing_waits = not (self._buffered or self.spilled or self._queue)
            self._waiting_since = None if nothing_waits else time.monotonic()

    def _count_published(self, msg: Message) -> None:
        by_subject = self.published_by_subject
        by_subject[msg.subject] = by_subject.get(msg.subject, 0) + msg.count

    def _lost(self, msg: Message, reason: str, quiet: bool = False) -> None:
        log.log(logging.DEBUG if quiet else logging.WARNING, "%d events to %s counted lost "
                "(%s): %s", msg.count, msg.subject, reason, self.last_error)
        self._loss.add(reason, msg.count)
        if not msg.count:
            self.reports_lost += 1
        self._settle(msg)

    # -- sending reports ----------------------------------------------------------

    async def _send_reports(self) -> None:
        """The reports' lane: one at a time, in order; a transient error is retried,
        a permanent one a few times, then the report is dropped (the next one
        carries the same cumulative counts)."""
        while True:
            await self._online.wait()
            while not self._reports:
                self._reports_ready.clear()
                await self._reports_ready.wait()
            msg = self._reports[0]
            failures, refusals, first = 0, 0, True
            while True:
                try:
                    ack = await self._attempt(msg)
                    if ack.duplicate and first:
                        self.duplicate_ids += 1
                        self.reports_lost += 1
                        log.warning("report to %s dropped by the stream: it already held id %s",
                                    msg.subject, msg.msg_id)
                    else:
                        self._count_published(msg)
                    break
                except Exception as exc:
                    reason = loss_reason(exc)
                    if reason is not None:
                        refusals += 1
                        if refusals >= 3 or reason in (PUBLISH_TOO_LARGE, PUBLISH_BAD_SUBJECT):
                            log.warning("report to %s not sent: %s", msg.subject, describe(exc))
                            self.reports_lost += 1
                            break
                    failures += 1
                    await asyncio.sleep(backoff_delay(failures, RETRY_FIRST_S, RETRY_CAP_S))
                    first = False
            if self._reports and self._reports[0] is msg:
                self._reports.popleft()
            self._progress.set()

    # -- stopping ---------------------------------------------------------------

    def _drained(self) -> bool:
        spill_left = self.spill is not None and not self.spill.empty
        return not (self._queue or self._inflight or spill_left)

    async def _wait(self, done: Any, grace: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while not done() and (left := deadline - loop.time()) > 0:
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), left)

    async def drain(self, grace: float = 10.0) -> None:
        """Publishes what is buffered, waiting up to `grace` seconds for acks
        (none while NATS has never been reached: it all goes to the spill)."""
        self._flush()
        self._start_senders()  # this may come before run() had its first turn
        await self._wait(self._drained, grace if self.online else 0)

    async def stop_events(self, grace: float = 10.0) -> None:
        """drain(grace), then the events lane stops: what is left goes to the spill,
        or is counted lost (`publish_failed`) without one. Reports still go."""
        if self._events_stopped:
            return
        self._closing = True
        self._wake.set()
        await self.drain(grace)
        self._events_stopped = True
        await _cancel(self._sender)
        pending = dict(self._inflight)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        # Unacked: in flight first (older), then the queue. Spilled ones stay on disk.
        left = [m for msgs in pending.values() for m in msgs] + list(self._queue)
        left = [m for m in left if m.spilled is None]
        self._queue.clear()
        self._inflight.clear()
        self._buffered = 0
        unsent = sum(m.count for m in left)
        if self.spill is not None:
            if unsent:
                log.warning("stopping with %d events unacknowledged: kept in the spill %s",
                            unsent, self.spill.dir)
            self._to_spill(left)
        elif unsent:
            log.warning("stopping with %d events unacknowledged and no spill: lost", unsent)
            self._loss.add(PUBLISH_FAILED, unsent)

    async def close(self, grace: float = 10.0) -> None:
        """stop_events(grace), then up to `grace` seconds for the reports; the
        reports left go to the spill too."""
        await self.stop_events(grace)
        await self._wait(lambda: not self._reports, grace if self.online else 0)
        await _cancel(self._reporter)
        left = list(self._reports)
        self._reports.clear()
        if self.spill is not None:
            self._to_spill(left)
            self.spill.close()
        else:
            self.reports_lost += len(left)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
