"""The consumer runtime, with the one thing a forwarder adds: a worker waiting
out a back-off from a dead sink gives up at once when the runtime stops."""

from __future__ import annotations

import asyncio

from ..runtime import Runtime


class ForwardRuntime(Runtime):
    def stop(self) -> None:
        super().stop()
        # A worker backing off from a dead sink would hold up the shutdown.
        closing = getattr(self.consumer, "closing", None)
        if isinstance(closing, asyncio.Event):
            closing.set()
