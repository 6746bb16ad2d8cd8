"""Stand-ins for a NATS message and JetStream, for driving the runtime's admission
and a consumer's handler without a server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from snoopbus.consumers import dlq


class Msg:
    """What the runtime and the handlers read from a nats Msg, and a record of
    every settling call made on it."""

    def __init__(self, subject: str, data: bytes, seq: int) -> None:
        self.subject = subject
        self.data = data
        self.headers: dict[str, str] | None = None
        self.metadata = SimpleNamespace(
            num_delivered=1, num_pending=0, timestamp=datetime.now(UTC),
            sequence=SimpleNamespace(stream=seq, consumer=seq),
        )  # fmt: skip
        self.calls: list[str] = []

    async def ack(self) -> None:
        self.calls.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.calls.append("nak")

    async def term(self) -> None:
        self.calls.append("term")

    async def in_progress(self) -> None:
        self.calls.append("in_progress")


@dataclass
class Stored:
    subject: str
    data: bytes
    headers: dict[str, str]


class Bus:
    """JetStream as the consumers use it: publish (dedup by Nats-Msg-Id), and the
    two look-ups the rename pairer makes at setup (an empty durable)."""

    def __init__(self) -> None:
        self.stored: list[Stored] = []
        self._ids: set[str] = set()

    def _store(self, subject: str, payload: bytes, headers: dict[str, str] | None) -> Any:
        headers = dict(headers or {})
        for value in headers.values():
            value.encode()  # nats-py sends header values as UTF-8: this is where it would fail
        msg_id = headers.get("Nats-Msg-Id")
        duplicate = msg_id is not None and msg_id in self._ids
        if not duplicate:
            if msg_id is not None:
                self._ids.add(msg_id)
            self.stored.append(Stored(subject, bytes(payload), headers))
        return SimpleNamespace(stream="SNOOPBUS", seq=len(self.stored), duplicate=duplicate)

    async def publish(
        self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None, **_: Any
    ) -> Any:
        return self._store(subject, payload, headers)

    async def publish_async(
        self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None, **_: Any
    ) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        future.set_result(self._store(subject, payload, headers))
        return future

    async def consumer_info(self, stream: str, durable: str) -> Any:
        return SimpleNamespace(num_ack_pending=0, ack_floor=SimpleNamespace(stream_seq=0))

    async def stream_info(self, stream: str) -> Any:
        return SimpleNamespace(state=SimpleNamespace(last_seq=0))

    def letters(self) -> dict[int, Stored]:
        """Dead letters by the original's stream sequence."""
        out: dict[int, Stored] = {}
        for s in self.stored:
            if s.subject.startswith("snoopbus.dlq."):
                seq = int(s.headers[dlq.STREAM_SEQ])
                assert seq not in out, f"seq {seq} dead-lettered twice"
                out[seq] = s
        return out

    def outputs(self) -> list[Stored]:
        return [s for s in self.stored if not s.subject.startswith("snoopbus.dlq.")]
