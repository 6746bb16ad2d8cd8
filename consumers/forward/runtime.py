"""The consumer runtime, taught two things a forwarder needs.

Works around what `snoopbus.consumers.runtime.Runtime` does not offer (yet):

- alerts are one msgpack map per message, not an event array; the base
  runtime would dead-letter them as undecodable. Here a message on an alert
  subject becomes a delivery whose one "event" is the alert map.
- a worker waiting out a back-off must give up at once on stop (`closing`);
- a sink's permanent "no" must reach the dead-letter subject at once, with
  the sink's answer, not after `max_attempts` redeliveries: `dead_letter()`.
"""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg

from snoopbus.proto import DecodeError, decode_map, parse_subject

from ..delivery import Delivery, State
from ..runtime import Runtime

ALERTS = "alerts"


def is_alert(subject: str) -> bool:
    return subject.split(".", 2)[1:2] == [ALERTS]


class ForwardRuntime(Runtime):
    async def _admit(self, msgs: list[Msg]) -> list[Delivery]:
        events = [m for m in msgs if not is_alert(m.subject)]
        out = await super()._admit(events) if events else []
        s = self.settings
        for msg in msgs:
            if not is_alert(msg.subject):
                continue
            self.counters.fetched += 1
            if s.partition.count > 1 and not s.partition.owns(parse_subject(msg.subject).host):
                await msg.ack()
                self.counters.skipped += 1
                continue
            try:
                alert = decode_map(msg.data)
            except DecodeError as exc:
                await self._dead_letter(msg, "decode", str(exc))
                continue
            out.append(Delivery(msg, [alert], self))  # type: ignore[list-item]
        return out

    def stop(self) -> None:
        super().stop()
        # A worker backing off from a dead sink would hold up the shutdown.
        closing = getattr(self.consumer, "closing", None)
        if isinstance(closing, asyncio.Event):
            closing.set()

    async def dead_letter(self, delivery: Delivery, kind: str, reason: str) -> None:
        """Give up on one delivery now, filing it with `reason`."""
        if delivery.settled:
            return
        self._held.pop(delivery, None)
        delivery.state = State.DEAD
        self.counters.failed += 1
        await self._dead_letter(delivery.msg, kind, reason)
