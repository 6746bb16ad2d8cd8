"""snoopbus's own JSON form, and the file/stdout transport for every JSON format.

`jsonl+file:///path`, `jsonl:-`; also `ecs+file`, `ocsf+file` (and `:-`).
One JSON document per line, UTF-8, appended. A batch is accepted once it is
written and flushed (and fsync'd with `?fsync=1`). At least once: a crash
between the write and the ack repeats the batch on restart.

snoopbus's own form is the event as the wire contract defines it
(proto/README.md), and only that at the top: a key the schema does not
name (`@timestamp`, `event.kind`, `message` ... that a SIEM would take as
its own) is kept under `extra`, never beside the event's fields.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

from snoopbus.proto import Event

from .sink import Item, Rendered, Sent, Sink, Transient
from .spec import SinkSpec
from .text import dumps

# The wire contract's top-level keys; whatever else an event carries goes under EXTRA.
EVENT_KEYS = frozenset(Event.__annotations__)
EXTRA = "extra"


def native_event(event: dict[str, Any]) -> dict[str, Any]:
    """The event as the contract has it, unknown top-level keys under `extra`.
    (`dumps` makes its text displayable: see text.py.)"""
    unknown = [k for k in event if k not in EVENT_KEYS]
    if not unknown:
        return event  # the common case: sent as it is, no copy
    doc = {k: v for k, v in event.items() if k in EVENT_KEYS}
    doc[EXTRA] = {k: event[k] for k in unknown}
    return doc


def to_native(item: Item) -> dict[str, Any]:
    """An event map as JSON (native_event); an alert as {type, rule, event}."""
    if item.kind == "event":
        return native_event(item.data)
    alert = item.data
    return {
        "type": "alert",
        "rule": {
            "id": alert.rule_id, "title": alert.title, "level": alert.level,
            "tags": list(alert.tags), "description": alert.description,
        },
        "event": native_event(dict(alert.event)),
    }  # fmt: skip


def json_formatter(spec: SinkSpec) -> Callable[[Item], dict[str, Any]]:
    if spec.format in ("ecs", "elastic"):
        from .ecs import ecs_formatter

        return ecs_formatter(spec)
    if spec.format == "ocsf":
        from .ocsf import to_ocsf

        return to_ocsf
    return to_native


class LinesSink(Sink):
    scheme = "jsonl+file"
    delivery = "at least once"

    def __init__(self, spec: SinkSpec) -> None:
        super().__init__(spec)
        self.format = json_formatter(spec)
        self._out: BinaryIO | None = None
        self._lock = asyncio.Lock()  # one writer at a time keeps lines whole

    async def open(self) -> None:
        if self.spec.transport == "stdout":
            self._out = sys.stdout.buffer
        else:
            self._out = await asyncio.to_thread(open, self.spec.path, "ab")

    def render(self, item: Item) -> bytes:
        return dumps(self.format(item)) + b"\n"

    async def send(self, batch: list[Rendered]) -> Sent:
        data = b"".join(line for _, line in batch)
        async with self._lock:
            try:
                await asyncio.to_thread(self._write, data)
            except OSError as exc:  # disk full, gone: try again later
                raise Transient(f"write {self.spec.path or 'stdout'}: {exc}") from None
        return Sent()

    def _write(self, data: bytes) -> None:
        assert self._out is not None
        self._out.write(data)
        self._out.flush()
        if self.spec.fsync and self.spec.transport == "file":
            os.fsync(self._out.fileno())

    async def close(self) -> None:
        if self._out is not None and self.spec.transport == "file":
            self._out.close()
        self._out = None
