"""How a consumer talks to JetStream: batch size, attempts, back-off, ack window."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime

from snoopbus.proto.subjects import BUCKETS, host_bucket


@dataclass(frozen=True)
class Partition:
    """This instance's share of the hosts: `index` of `count` partitions.

    A host belongs to exactly one partition: the one its bucket falls in (the
    stream stores the bucket in the subject, proto/subjects.py), so per-host
    state such as a half-finished rename never splits between instances, and
    the server sends each partition's durable only its own buckets. Each
    partition has its own durable.
    """

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"partition: need 0 <= index < count, got {self.index}/{self.count}")
        if self.count > BUCKETS:
            raise ValueError(f"partition: at most {BUCKETS} partitions (the stream's host "
                             f"buckets), got {self.count}")

    @classmethod
    def parse(cls, text: str) -> Partition:
        """`"I/N"`, as given on the command line."""
        index, sep, count = text.partition("/")
        if not sep:
            raise ValueError(f"partition: expected I/N, got {text!r}")
        return cls(int(index), int(count))

    @property
    def buckets(self) -> list[int] | None:
        """The host buckets this partition owns; None when it owns every one."""
        if self.count == 1:
            return None
        return list(range(self.index, BUCKETS, self.count))

    def owns(self, host_token: str, stored: bool = True) -> bool:
        """Whether the host's messages are this partition's. Those a stream stored
        before it partitioned (`stored` False) reach every partition and keep the
        rule they had then (crc32 of the token), so that none is handled twice or
        never while consumers move from that rule to the buckets."""
        if self.count == 1:
            return True
        if not stored:
            return zlib.crc32(host_token.encode()) % self.count == self.index
        return host_bucket(host_token) % self.count == self.index

    def durable(self, name: str) -> str:
        # Unpartitioned keeps the plain name, so adding --partition later is a
        # deliberate move to new durables rather than a silent rename.
        return name if self.count == 1 else f"{name}-p{self.index}of{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Settings:
    """Per-consumer knobs; the defaults suit a handler doing modest I/O."""

    batch: int = 256  # messages per fetch; the client default of 1 is slow
    # Bytes per fetch at most (never below the server's max_payload): a backlog of
    # large messages comes in as many small batches, not `batch` huge ones.
    fetch_bytes: int = 8 << 20
    # Payload bytes per handler call at most (None: the whole fetch), each run
    # decoded just before it is handled: a handler that is CPU work on what was
    # just decoded finds it still in the CPU's cache (the pairer, the alerter).
    handle_bytes: int | None = None
    fetch_timeout: float = 1.0  # also bounds how long a shutdown waits for a fetch
    concurrency: int = 4  # batches handled at once (asyncio-pool size)
    max_attempts: int = 5  # deliveries before a failing message is dead-lettered
    backoff: tuple[float, ...] = (0.5, 2.0, 10.0)  # nak delay by attempt; last repeats
    ack_wait: float = 30.0  # seconds the server waits for an ack before redelivering
    # Unacked messages the server lets one durable have out; must exceed what a
    # handler holds plus what is in flight. None: 4 full rounds of batches.
    max_ack_pending: int | None = None
    # Where a new durable starts (--start): the stream head (all), new messages, or a
    # time; a durable that exists keeps its place.
    deliver_new: bool = False
    start_time: datetime | None = None  # set: the first message at or after it
    partition: Partition = field(default_factory=Partition)

    def __post_init__(self) -> None:
        if self.batch < 1 or self.concurrency < 1 or self.max_attempts < 1 or self.fetch_bytes < 1:
            raise ValueError(
                "settings: batch, fetch_bytes, concurrency and max_attempts must be >= 1"
            )
        if self.handle_bytes is not None and self.handle_bytes < 1:
            raise ValueError("settings: handle_bytes must be >= 1 (or None: a whole fetch)")
        if not self.backoff:
            raise ValueError("settings: backoff needs at least one delay")

    def delay_after(self, attempt: int) -> float:
        return self.backoff[min(max(attempt, 1), len(self.backoff)) - 1]

    @property
    def ack_pending_limit(self) -> int:
        if self.max_ack_pending is not None:
            return self.max_ack_pending
        return max(1000, 4 * self.batch * self.concurrency)
