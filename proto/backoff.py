"""Exponential back-off: the one formula every retry loop of snoopbus uses.

After `failures` consecutive failures the wait is base, 2*base, 4*base ...
up to `cap`; with `jitter`, drawn from [d/2, d] ("equal jitter": spread out,
yet never a tight loop), for many senders retrying against one sink. Each
caller keeps its own base and cap (a publisher's ack retry is not a child
process's restart).
"""

from __future__ import annotations

import random


def backoff_delay(
    failures: int,
    base: float,
    cap: float,
    *,
    jitter: bool = False,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after `failures` consecutive failures (0 after none)."""
    if failures <= 0:
        return 0.0
    ceiling = min(cap, base * 2 ** min(failures - 1, 64))  # 2**64 * base is past any cap
    return (rng or random).uniform(ceiling / 2, ceiling) if jitter else ceiling
