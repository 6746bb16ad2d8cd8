"""When the publisher cuts its per-subject buffers into messages (pure, for tests).

Measured (tests/bench/latency.py, stage "buffer"): with one fixed interval
(20 ms) for partial batches, at 10k events/s the sender was seldom idle by
the old test (few acks out) because every drain makes a message per subject,
so events waited out the interval: p99 of that stage ~40 ms. Now:

- idle sender (nothing queued, fewer than `eager_inflight` acks out): at once;
- a buffer holding a full batch: at once;
- sender keeping up (nothing queued, acks out): after `linger` from the oldest
  buffered event, a few ms: a short wait that still gathers a drain or two;
- sender behind (messages queued): after `flush_interval`; what is cut now
  would only wait in the queue, so batches fill up instead (throughput).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    max_batch: int
    eager_inflight: int
    linger: float  # s
    flush_interval: float  # s

    def wait(self, *, age: float, fullest: int, queued: int, inflight: int) -> float | None:
        """Seconds until the buffers are due to be cut (0: now), given the age
        in s of the oldest buffered event, the largest buffer's size, the
        messages queued and the acks in flight; None when nothing is buffered."""
        if fullest <= 0:
            return None
        if fullest >= self.max_batch or (not queued and inflight < self.eager_inflight):
            return 0.0
        bound = self.flush_interval if queued else self.linger
        return max(0.0, bound - age)
