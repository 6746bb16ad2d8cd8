"""What a handler receives: a batch of deliveries, one per NATS message.

Each message carries an array of events, so a delivery has `events`; the
batch also offers them flattened. Settling rules, in one place:

- handler returns: every delivery it did not settle or `hold()` is acked;
- handler raises: a batch of several is retried one delivery at a time, so
  one bad message cannot fail its neighbours; a delivery that still fails
  (held ones included) is nak'd with back-off, or dead-lettered once out of
  attempts;
- `dead_letter(reason)`: the handler gives up on it now, for a reason no
  retry will change (a sink's permanent refusal);
- on an alert subject a delivery's `events` is the one alert map
  (`is_alert`), so a consumer can take events and alerts from one durable;
- `hold()`: the handler settles it later with `ack()`/`nak()`; until then
  the runtime keeps it alive (in-progress acks) and naks it at shutdown so
  another instance or a restart gets it again.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, overload

from snoopbus.proto import Event, SubjectError, alerts_filter, decode_batch, parse_subject
from snoopbus.proto.fastpath import to_events as events_from_records

if TYPE_CHECKING:
    from nats.aio.msg import Msg


class State(enum.Enum):
    OPEN = "open"
    HELD = "held"
    ACKED = "acked"
    NAKED = "naked"
    DEAD = "dead"  # dead-lettered, then taken out of the stream's redelivery


class Span(Protocol):
    """One message's events as rows of its batch's columns (BatchDecoder)."""

    @property
    def host(self) -> str: ...  # every event's, as sent
    @property
    def type(self) -> str: ...  # every event's
    @property
    def count(self) -> int: ...


class Columns(Protocol):
    """What a BatchDecoder made of a batch's payloads: spans[i] for payload i,
    None for one it left to the runtime's own decoding."""

    @property
    def spans(self) -> Sequence[Span | None]: ...


class BatchDecoder(Protocol):
    """A consumer's own decoder of a whole batch's event payloads, straight
    into its own form (the archive: Arrow columns). It takes only payloads the
    runtime's decoding would accept unchanged, of one host and one type each;
    the runtime still checks those against the subject."""

    def decode(self, payloads: Sequence[bytes]) -> Columns: ...


class Settler(Protocol):
    """The runtime side of a delivery: where acks, naks and holds go."""

    async def ack(self, delivery: Delivery) -> None: ...
    async def nak(self, delivery: Delivery, reason: str, delay: float | None) -> None: ...
    def hold(self, delivery: Delivery) -> None: ...
    async def dead_letter(self, delivery: Delivery, kind: str, reason: str) -> None: ...


def is_alert_subject(subject: str) -> bool:
    if not subject.startswith(_ALERTS):  # every event message: no full parse
        return False
    try:
        return parse_subject(subject).kind == "alerts"
    except SubjectError:
        return False


_ALERTS = alerts_filter().split("*", 1)[0]  # "snoopbus.alerts."


class Delivery:
    """One JetStream message and the events decoded from it.

    `events` are maps. When the payload took the decoder's fast path, the same
    events are also `records`, typed structs (attributes named as the keys,
    absent ones None), and the maps are made only when `events` is first
    read: a consumer that reads records only never pays for them. When the
    consumer's BatchDecoder took it, its rows are `span` of `columns`, and
    the maps are decoded from the payload only if `events` is read.
    """

    __slots__ = ("_events", "_settler", "columns", "msg", "records", "span", "state")

    def __init__(
        self, msg: Msg, events: list[Event] | None, settler: Settler,
        records: list[Any] | None = None, *, span: Span | None = None,
        columns: Columns | None = None,
    ) -> None:  # fmt: skip
        if events is None and records is None and span is None:
            raise ValueError("a delivery needs its events, their records or their span")
        self.msg = msg
        self._events = events
        self.records = records
        self.span = span
        self.columns = columns
        self.state = State.OPEN
        self._settler = settler

    @property
    def events(self) -> list[Event]:
        if self._events is None:
            if self.records is not None:
                self._events = events_from_records(self.records)
            elif self.span is not None:
                self._events = decode_batch(self.msg.data)
            else:
                # Never an empty list: a handler run again on it would ack it unread.
                raise RuntimeError(f"{self.subject}: the events of this delivery were released")
        return self._events

    @property
    def count(self) -> int:
        """Events in the message (without making their maps)."""
        if self._events is None and self.records is not None:
            return len(self.records)
        if self._events is None and self.span is not None:
            return self.span.count
        return len(self.events)  # the maps made already, or the error of a released one

    def release(self) -> None:
        """Free the decoded events and the payload of a held message whose
        handler keeps what it needs elsewhere (the archive: its rows as
        columns): held, it then costs a few hundred bytes. Reading `events`
        afterwards is an error; it can still be acked or nak'd, and is never
        dead-lettered (the runtime naks it instead: the server has the payload)."""
        self._events = self.records = self.span = self.columns = None
        self.msg.data = b""

    @property
    def released(self) -> bool:
        return self._events is None and self.records is None and self.span is None

    @property
    def subject(self) -> str:
        return self.msg.subject

    @property
    def is_alert(self) -> bool:
        """On an alert subject `events` holds the one alert map instead."""
        return is_alert_subject(self.msg.subject)

    @property
    def attempt(self) -> int:
        """1 on first delivery, higher on redeliveries."""
        return self.msg.metadata.num_delivered

    @property
    def stream_seq(self) -> int:
        return self.msg.metadata.sequence.stream

    @property
    def settled(self) -> bool:
        return self.state in (State.ACKED, State.NAKED, State.DEAD)

    def hold(self) -> None:
        """Keep this message unacked past the handler's return."""
        if self.state is State.OPEN:
            self._settler.hold(self)

    async def ack(self) -> None:
        if not self.settled:
            await self._settler.ack(self)

    async def nak(self, reason: str = "nak by handler", delay: float | None = None) -> None:
        """Ask for redelivery (after the back-off delay unless `delay` is given);
        past the attempt limit this dead-letters instead."""
        if not self.settled:
            await self._settler.nak(self, reason, delay)

    async def dead_letter(self, reason: str, kind: str = "rejected") -> None:
        """Give up on this message now: it goes to the dead-letter subject with
        `reason`, without the redeliveries a nak would cost."""
        await self._settler.dead_letter(self, kind, reason)

    def __repr__(self) -> str:
        n = "released" if self.released else self.count
        return f"<Delivery {self.subject} events={n} {self.state.value}>"


class Batch(Sequence[Delivery]):
    """The deliveries of one fetch that decoded cleanly (and that this
    instance's partition owns)."""

    __slots__ = ("deliveries",)

    def __init__(self, deliveries: list[Delivery]) -> None:
        self.deliveries = deliveries

    @property
    def events(self) -> list[Event]:
        return [event for delivery in self.deliveries for event in delivery.events]

    @overload
    def __getitem__(self, index: int) -> Delivery: ...
    @overload
    def __getitem__(self, index: slice) -> list[Delivery]: ...
    def __getitem__(self, index: int | slice) -> Delivery | list[Delivery]:
        return self.deliveries[index]

    def __len__(self) -> int:
        return len(self.deliveries)

    def __iter__(self) -> Iterator[Delivery]:
        return iter(self.deliveries)
