"""Alerts a send failed to deliver, kept to be tried again, within bounds.

Host-health alerts and folded summaries are made outside the event stream, so
no redelivery brings them back: the alerter keeps them and tries again on its
next tick. A send that keeps failing (a permission the alert role lacks, an
output that is gone) must not grow memory or retry forever: an alert is given
up `give_up_after` seconds after its first failure, and the oldest are given up
first beyond `max_alerts`. Each one given up is counted by reason and logged.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

log = logging.getLogger(__name__)

# Reasons an alert was given up (the `reason` label of snoopbus_alerts_lost_total).
GAVE_UP = "send_failed"  # still failing give_up_after seconds after the first failure
QUEUE_FULL = "resend_full"  # more than max_alerts waiting: the oldest go
STOPPED = "stopped"  # still unsent when the alerter stopped
REASONS = (GAVE_UP, QUEUE_FULL, STOPPED)


class Resend:
    def __init__(self, what: str, lost: Counter[str], *, max_alerts: int = 10_000,
                 give_up_after: float = 600.0) -> None:  # fmt: skip
        self.what = what  # "host alerts", "folded summaries": for the log
        self.lost = lost  # shared by the alerter's senders: one count per reason
        self.max_alerts = max_alerts
        self.give_up_after = give_up_after
        # (time of the first failure, alert), oldest first
        self._waiting: list[tuple[float, dict[str, Any]]] = []

    def __len__(self) -> int:
        return len(self._waiting)

    def take(self) -> list[tuple[float, dict[str, Any]]]:
        """Everything waiting, to be sent with what is new; `failed` puts back what fails."""
        waiting, self._waiting = self._waiting, []
        return waiting

    def failed(self, alerts: list[tuple[float | None, dict[str, Any]]], now: float) -> None:
        """`alerts` could not be sent at `now` (None: failed for the first time)."""
        kept = [(now if first is None else first, alert) for first, alert in alerts]
        fresh = [(t, a) for t, a in kept if now - t < self.give_up_after]
        self._give_up(len(kept) - len(fresh), GAVE_UP)
        self._waiting = sorted(fresh + self._waiting, key=lambda pair: pair[0])
        excess = len(self._waiting) - self.max_alerts
        if excess > 0:
            del self._waiting[:excess]
            self._give_up(excess, QUEUE_FULL)

    def _give_up(self, n: int, reason: str) -> None:
        if n:
            self.lost[reason] += n
            log.error("alert: %d %s given up (%s); %d lost so far", n, self.what, reason,
                      sum(self.lost.values()))  # fmt: skip
