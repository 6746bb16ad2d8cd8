"""What a consumer author writes: a name, subject filters and a batch handler.

Two ways, same result. A function:

    @consumer("exec-printer", filters=[events_filter(family="proc", type="exec")])
    async def exec_printer(batch: Batch) -> None:
        for event in batch.events:
            print(event["proc"]["comm"])

or a `Consumer` subclass when it needs options, state, or setup/teardown.
Either is registered under the entry point group `snoopbus.consumers`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nats.aio.client import Client
from nats.js import JetStreamContext

from snoopbus.proto.metric_names import Metric

from .delivery import Batch, BatchDecoder
from .settings import Settings

if TYPE_CHECKING:
    from .runtime import Counters

Handler = Callable[[Batch], Awaitable[None]]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """Handed to `Consumer.setup`: the runtime's one connection and identity."""

    nc: Client
    js: JetStreamContext
    durable: str
    settings: Settings


class Consumer:
    """Base class. `name` names the durable and the dead-letter subject."""

    name: str = ""
    description: str = ""
    filters: Sequence[str] = ()
    settings: Settings = Settings()
    tick_every: float = 0.0  # seconds between tick() calls while consuming; 0: never
    # Decodes a batch's event payloads the consumer's own way (delivery.py);
    # None: the runtime's decoding, events as maps or records.
    batch_decoder: BatchDecoder | None = None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add this consumer's own command-line options."""

    @classmethod
    def from_args(cls, args: argparse.Namespace, settings: Settings) -> Consumer:
        """Build an instance from parsed options; `settings` carries the common ones."""
        instance = cls()
        instance.settings = settings
        return instance

    async def setup(self, ctx: Context) -> None:
        """Called once connected, before the first fetch."""

    async def handle(self, batch: Batch) -> None:
        raise NotImplementedError

    async def teardown(self) -> None:
        """Called after the last batch, before held messages are released."""

    async def tick(self) -> None:
        """Every `tick_every` seconds while consuming (batches may be in flight
        meanwhile), never after the stop began. For work due by time rather than
        by events: flush a window, publish a summary. An exception is logged and
        counted (`tick_failures`); the next tick still comes."""

    def reload(self) -> None:
        """SIGHUP (`systemctl reload`), on the event loop: re-read what may change
        while running (the alerter: its rules). It must not block: start a task
        for slow work. By default there is nothing to reload, and SIGHUP is only
        logged (never the end of the process, as its default action would be)."""
        log.info("%s: SIGHUP: nothing to reload", self.name)

    def metrics(self) -> Iterable[tuple[Metric, list[tuple[list[str], float]]]]:
        """Metrics of the consumer's own beyond the runtime's, each with its samples
        (label values, value), read at each scrape. None by default."""
        return ()

    def counters(self, own: Counters) -> Counters:
        """The tallies to report (stop log, metrics): the runtime's own, unless
        the consumer runs runtimes of its own (forward: one per sink)."""
        return own


class FunctionConsumer(Consumer):
    """A consumer made by the `consumer` decorator around one handler."""

    def __init__(
        self, name: str, filters: Sequence[str], handler: Handler, settings: Settings,
        description: str,
    ) -> None:  # fmt: skip
        self.name = name
        self.filters = tuple(filters)
        self.settings = settings
        self.description = description
        self._handler = handler

    # An instance is what the decorator registers, so its from_args is an
    # instance method where the base's is a classmethod: callers use either alike.
    def from_args(self, args: argparse.Namespace, settings: Settings) -> Consumer:  # type: ignore[override]
        return FunctionConsumer(self.name, self.filters, self._handler, settings, self.description)

    async def handle(self, batch: Batch) -> None:
        await self._handler(batch)


def consumer(
    name: str,
    *,
    filters: Sequence[str],
    settings: Settings | None = None,
    description: str = "",
) -> Callable[[Handler], FunctionConsumer]:
    """Turn an `async def handler(batch)` into a registrable consumer."""
    if not filters:
        raise ValueError(f"consumer {name!r}: needs at least one subject filter")

    def wrap(handler: Handler) -> FunctionConsumer:
        text = description or next(iter((handler.__doc__ or "").strip().splitlines()), "")
        return FunctionConsumer(name, filters, handler, settings or Settings(), text)

    return wrap
