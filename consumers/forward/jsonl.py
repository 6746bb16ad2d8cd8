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
import json
import os
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

from snoopbus.proto import Event

from .sink import Item, Sent, Sink, Transient, render_each
from .spec import SinkSpec
from .text import json_line, jsonable

# The wire contract's top-level keys; whatever else an event carries goes under EXTRA.
EVENT_KEYS = frozenset(Event.__annotations__)
EXTRA = "extra"


def native_event(event: dict[str, Any]) -> dict[str, Any]:
    """The event as JSON (text made displayable), unknown top-level keys under `extra`."""
    doc = jsonable(event)
    extra = {k: doc.pop(k) for k in [k for k in doc if k not in EVENT_KEYS]}
    if extra:
        doc[EXTRA] = extra
    return doc  # type: ignore[no-any-return]


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
        from .ecs import to_ecs

        return to_ecs
    if spec.format == "ocsf":
        from .ocsf import to_ocsf

        return to_ocsf
    return to_native


def dumps(doc: Any) -> bytes:
    """One line of JSON: nothing in it that any line reader takes as a break."""
    return json_line(json.dumps(doc, ensure_ascii=False, separators=(",", ":"))).encode("utf-8")


class LinesSink(Sink):
    scheme = "jsonl+file"
    delivery = "at least once"

    def __init__(self, spec: SinkSpec) -> None:
        super().__init__(spec)
        self.render = json_formatter(spec)
        self._out: BinaryIO | None = None
        self._lock = asyncio.Lock()  # one writer at a time keeps lines whole

    async def open(self) -> None:
        if self.spec.transport == "stdout":
            self._out = sys.stdout.buffer
        else:
            self._out = await asyncio.to_thread(open, self.spec.path, "ab")

    async def send(self, items: list[Item]) -> Sent:
        rendered, refused = render_each(items, self.render)
        data = b"".join(dumps(doc) + b"\n" for _, doc in rendered)
        async with self._lock:
            try:
                await asyncio.to_thread(self._write, data)
            except OSError as exc:  # disk full, gone: try again later
                raise Transient(f"write {self.spec.path or 'stdout'}: {exc}") from None
        return Sent(rejected=refused)

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
