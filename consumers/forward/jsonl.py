"""snoopbus's own JSON form, and the file/stdout transport for every JSON format.

`jsonl+file:///path`, `jsonl:-`; also `ecs+file`, `ocsf+file` (and `:-`).
One JSON document per line, UTF-8, appended. A batch is accepted once it is
written and flushed (and fsync'd with `?fsync=1`). At least once: a crash
between the write and the ack repeats the batch on restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

from .sink import Item, Sent, Sink, Transient, render_each
from .spec import SinkSpec
from .text import jsonable


def to_native(item: Item) -> dict[str, Any]:
    """An event map as JSON (text made displayable); an alert as {type, rule, event}."""
    if item.kind == "event":
        return jsonable(item.data)
    alert = item.data
    return {
        "type": "alert",
        "rule": {
            "id": alert.rule_id, "title": alert.title, "level": alert.level,
            "tags": list(alert.tags), "description": alert.description,
        },
        "event": jsonable(dict(alert.event)),
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
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


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
