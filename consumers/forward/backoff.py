"""Exponential back-off with jitter, shared by everything sending to one sink.

The formula is proto/backoff.py's, with jitter: delays grow base, 2*base,
4*base ... up to `cap`, each drawn from [d/2, d]. `Backoff` holds a sink's
base and cap; one `Gate` per sink makes
every worker of that sink wait after a failure, so N concurrent batches do
not hammer a sink that is down N times over.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from snoopbus.proto.backoff import backoff_delay


@dataclass(frozen=True)
class Backoff:
    base: float = 0.2
    cap: float = 30.0

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        return backoff_delay(failures, self.base, self.cap, jitter=True, rng=rng)


class Gate:
    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self.failures = 0  # consecutive
        self._not_before = 0.0

    async def wait(self, abort: asyncio.Event | None = None) -> bool:
        """Sleep until the next try is due; False if `abort` was set first."""
        # Another failure may push the time out while we sleep: look again.
        while (left := self._not_before - time.monotonic()) > 0:
            if abort is None:
                await asyncio.sleep(left)
                continue
            try:
                await asyncio.wait_for(abort.wait(), left)
            except TimeoutError:
                continue
            return False
        return not (abort is not None and abort.is_set())

    def failed(self, retry_after: float | None = None) -> float:
        """Record a failure; the delay before the next try."""
        self.failures += 1
        delay = self.backoff.delay(self.failures)
        if retry_after is not None:  # the sink's own hint wins, within the cap
            delay = max(delay, min(retry_after, self.backoff.cap))
        self._not_before = max(self._not_before, time.monotonic() + delay)
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self._not_before = 0.0

    @property
    def down(self) -> bool:
        return self.failures > 0
