"""Where an event's time goes inside the collector: stage timestamps per message.

A diagnostic for tests/bench/latency.py, off unless SNOOPBUS_LATENCY_TRACE
names a file. Then, for messages the publisher hands to nats-py, a line

    <Nats-Msg-Id> <read> <built> <cut> <handed>

(wall-clock ns) follows the message's oldest event: when the drain that took
its record from the ring started, when that drain's events were built, when
the flush cut the message from the subject's buffer, and when it was first
handed to nats-py. The bench joins these lines on the id with the kernel's
`ts` and the moment its subscriber received the message. Only the first
message cut from a buffer in a flush has a line: it holds that buffer's
oldest event, whose drain the stamps are; later ones hold later drains'.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Final

ENV: Final = "SNOOPBUS_LATENCY_TRACE"


class StageTrace:
    def __init__(self, path: Path) -> None:
        self._out: IO[str] = path.open("w", buffering=1 << 16)
        self._drain = (0, 0)  # (read, built) of the drain being delivered
        self._first: dict[str, tuple[int, int]] = {}  # subject -> its oldest buffered event's
        self._cut: dict[str, tuple[int, int, int]] = {}  # msg id -> (read, built, cut)

    @classmethod
    def from_env(cls) -> StageTrace | None:
        path = os.environ.get(ENV)
        return cls(Path(path)) if path else None

    def drained(self, read_ns: int, built_ns: int) -> None:
        """The reader's drain that started at `read_ns` was built by `built_ns`."""
        self._drain = (read_ns, built_ns)

    def submitted(self, subjects: Iterable[str]) -> None:
        """Events on `subjects` from the current drain entered the buffers."""
        first, drain = self._first, self._drain
        for subject in subjects:
            if subject not in first:
                first[subject] = drain

    def cut(self, messages: Iterable[tuple[str, str]]) -> None:
        """(subject, msg id) of the messages one flush made from the buffers."""
        now = time.time_ns()
        first = self._first
        for subject, msg_id in messages:
            stamp = first.pop(subject, None)  # the first message only: it has the oldest
            if stamp is not None:
                self._cut[msg_id] = (*stamp, now)
        first.clear()  # a flush empties every buffer

    def handed(self, msg_id: str) -> None:
        stamps = self._cut.pop(msg_id, None)  # a retry: handed already
        if stamps is not None:
            self._out.write(f"{msg_id} {stamps[0]} {stamps[1]} {stamps[2]} {time.time_ns()}\n")

    def close(self) -> None:
        self._out.close()
