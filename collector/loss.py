"""Loss is data: counted by reason, reported on the bus and in the log."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Why an event can be lost, as reported under "dropped" in loss reports.
KERNEL_RINGBUF_FULL = "kernel_ringbuf_full"  # the probe found no room in the ring buffer
UNDECODABLE = "undecodable_record"  # a record user space could not decode
# NATS too slow or away, and the memory bound and then the spill bound were hit
PUBLISH_BACKLOG = "publish_backlog"
PUBLISH_FAILED = "publish_failed"  # a publish that still failed when the collector stopped
SPILL_TORN = "spill_torn"  # events in a spill frame a crash had cut short, found at start
SPILL_IO_ERROR = "spill_io_error"  # events the spill could not write (disk error)
# Coalesced repeats (isolation) whose first event user space no longer knew
# (collector/events.py keeps the last of LAST_PER_THREAD threads)
REPEAT_ORPHANED = "repeat_orphaned"
# Permanent publish errors (collector/publisher.py): retried a bounded number of
# times, then the message is counted here and the queue moves on.
PUBLISH_TOO_LARGE = "publish_too_large"  # an event over max_payload even with its text cut
PUBLISH_DENIED = "publish_denied"  # the server's permissions refuse the subject
PUBLISH_NO_STREAM = "publish_no_stream"  # no stream captures the subject (deleted?)
PUBLISH_BAD_SUBJECT = "publish_bad_subject"  # the client refused the subject
PUBLISH_REJECTED = "publish_rejected"  # JetStream answered with an error (stream full, ...)
UNENCODABLE = "unencodable_event"  # an event msgpack could not encode
# The stream already held the Nats-Msg-Id of a message sent for the first time:
# dropped as a duplicate (another publisher used the id first: proto/msgid.py)
DUPLICATE_ID = "duplicate_id"

# Every reason above: /metrics shows each from the start, at 0, so that
# Prometheus' increase() sees the first loss of a kind (a series born at N
# has no increase).
REASONS = (KERNEL_RINGBUF_FULL, UNDECODABLE, PUBLISH_BACKLOG, PUBLISH_FAILED, SPILL_TORN,
           SPILL_IO_ERROR, PUBLISH_TOO_LARGE, PUBLISH_DENIED, PUBLISH_NO_STREAM,
           PUBLISH_BAD_SUBJECT, PUBLISH_REJECTED, UNENCODABLE, DUPLICATE_ID,
           REPEAT_ORPHANED)  # fmt: skip


@dataclass
class LossCounters:
    dropped: Counter[str] = field(default_factory=Counter)
    # kernel: event type -> per-CPU counts, as read from the probes' `lost` map
    kernel: dict[str, list[int]] = field(default_factory=dict)

    def add(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n

    def set_kernel(self, by_type: dict[str, list[int]]) -> None:
        self.kernel = by_type
        self.dropped[KERNEL_RINGBUF_FULL] = sum(sum(v) for v in by_type.values())

    @property
    def total(self) -> int:
        return sum(self.dropped.values())

    def report(self, host: str, instance: str) -> dict[str, Any]:
        """The payload of snoopbus.meta.<host>.loss."""
        return {
            "v": 1,
            "host": host,
            "instance": instance,
            "ts": time.time_ns(),
            "total": self.total,
            "dropped": {k: v for k, v in self.dropped.items() if v},
            "kernel_per_cpu": {k: list(v) for k, v in self.kernel.items()},
        }

    def summary(self) -> str:
        if not self.total:
            return "no events lost"
        parts = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items()) if v)
        return f"{self.total} events lost ({parts})"
