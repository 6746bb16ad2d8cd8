"""How big and how old the JetStream stream may grow, and what a reader lost to that.

Limits-based retention removes the oldest messages once the stream passes its
max_bytes or a message passes max_age: storage stays bounded, and a reader
that fell further behind than that loses what was removed before it got to
it. `removed_unread` counts that loss from stream sequences alone (a reader
jumped from `low` to `high`, and the stream now starts at `first_seq`), the
one computation `tail`, the consumer runtime, `up` and `doctor --nats` share.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from nats.js.api import StoreCompression, StreamConfig

log = logging.getLogger(__name__)

FALLBACK_MAX_BYTES: Final = 10 << 30  # auto outside `up`: no state folder to measure
DEFAULT_MAX_AGE_S: Final = 7 * 86400.0
COMPRESSIONS: Final = ("s2", "none")
# Keys of [stream] that, once set by the user (or by `up`), are applied to an existing stream.
ENFORCED_KEYS: Final = ("max_age_days", "max_mb", "compression")


class StreamLimitsError(ValueError):
    """A [stream] value that cannot be used: the message says which and why."""


@dataclass(frozen=True)
class StreamLimits:
    """The limits a process wants the stream to have.

    max_bytes <= 0 means none; max_age_s 0 means none. `enforce`: apply them
    to an existing stream that differs (they were chosen, not defaulted), else
    an existing stream keeps the limits its operator gave it.
    """

    max_age_s: float = DEFAULT_MAX_AGE_S
    max_bytes: int = FALLBACK_MAX_BYTES
    compression: str = "s2"
    enforce: bool = False

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise StreamLimitsError(
                f"[stream] compression must be one of {', '.join(COMPRESSIONS)}, "
                f"got {self.compression!r}"
            )
        if self.max_age_s < 0:
            raise StreamLimitsError("[stream] max_age_days must be >= 0 (0: no age limit)")

    @classmethod
    def from_section(cls, section: Any, sources: Mapping[str, str] | None = None) -> StreamLimits:
        """From the [stream] section; `sources` ("stream.key" -> where it came from)
        tells which values the user chose (those are enforced)."""
        chosen = any((sources or {}).get(f"stream.{k}", "default") != "default"
                     for k in ENFORCED_KEYS)  # fmt: skip
        mb = int(section.max_mb)
        return cls(
            max_age_s=float(section.max_age_days) * 86400.0,
            max_bytes=mb << 20 if mb > 0 else FALLBACK_MAX_BYTES,
            compression=str(section.compression).lower(),
            enforce=chosen,
        )

    def apply(self, config: StreamConfig) -> None:
        config.max_age = self.max_age_s or None
        config.max_bytes = self.max_bytes if self.max_bytes > 0 else -1
        config.compression = StoreCompression(self.compression)

    def differences(self, config: StreamConfig) -> list[str]:
        """What `config` has that these limits change, as "key old -> new" texts."""
        have_age = float(config.max_age or 0)
        have_bytes = config.max_bytes if config.max_bytes and config.max_bytes > 0 else -1
        want_bytes = self.max_bytes if self.max_bytes > 0 else -1
        have_comp = "s2" if config.compression == StoreCompression.S2 else "none"
        out = []
        if abs(have_age - self.max_age_s) > 0.5:
            out.append(f"max_age {_age(have_age)} -> {_age(self.max_age_s)}")
        if have_bytes != want_bytes:
            out.append(f"max_bytes {human_bytes(have_bytes)} -> {human_bytes(want_bytes)}")
        if have_comp != self.compression:
            out.append(f"compression {have_comp} -> {self.compression}")
        return out


def unbounded(config: StreamConfig) -> bool:
    """A stream with neither an age nor a size limit (made by an earlier snoopbus)."""
    return not config.max_age and not (config.max_bytes and config.max_bytes > 0)


def auto_max_bytes(free_bytes: int, stream_bytes: int, fraction: float) -> int:
    """`fraction` of what the stream may use on its disk: what is free plus what it holds."""
    if not 0 < fraction <= 1:
        raise StreamLimitsError(f"[stream] disk_fraction must be in (0, 1], got {fraction}")
    return max(1 << 20, int((free_bytes + stream_bytes) * fraction))


def removed_unread(low: int, high: int, first_seq: int) -> int:
    """Of stream sequences low..high that a reader skipped, how many the stream
    removed before it read them (those before its first sequence)."""
    return max(0, min(high, first_seq - 1) - low + 1)


@dataclass
class MissedCounter:
    """Counts messages retention removed before a reader got to them.

    `skip(low, high)` records a jump over sequences; `count(first_seq)` then
    adds those the stream no longer holds. Exact when the reader's filter takes
    every message in the jump; otherwise messages it would not have read count
    too (an upper bound: once gone, their subjects cannot be told).
    """

    missed: int = 0
    _skipped: list[tuple[int, int]] | None = None

    def skip(self, low: int, high: int) -> None:
        if high >= low:
            if self._skipped is None:
                self._skipped = []
            self._skipped.append((low, high))

    @property
    def pending(self) -> bool:
        return bool(self._skipped)

    def count(self, first_seq: int) -> int:
        """Adds (and returns) what was removed unread among the skipped ranges."""
        added = sum(removed_unread(lo, hi, first_seq) for lo, hi in self._skipped or ())
        self._skipped = None
        self.missed += added
        return added


# A durable's metadata key: the messages retention removed before its runtime read them.
MISSED_KEY: Final = "snoopbus.missed"


def missed_of(metadata: dict[str, str] | None) -> int:
    """The missed count a runtime recorded in its durable's metadata (0 if none)."""
    try:
        return int((metadata or {}).get(MISSED_KEY, 0))
    except ValueError:
        return 0


def fill_warning(stream_bytes: int, max_bytes: int, warn_percent: float) -> str | None:
    """A warning once the stream holds warn_percent of its max_bytes, else None."""
    if max_bytes <= 0 or stream_bytes < max_bytes * warn_percent / 100:
        return None
    return (f"stream holds {human_bytes(stream_bytes)} of its {human_bytes(max_bytes)} limit "
            f"({100 * stream_bytes / max_bytes:.0f}%): the oldest events are removed from now "
            "on; a consumer behind by more loses them (raise [stream] max_mb, or add disk)")


def disk_warning(
    free_bytes: int, total_bytes: int, path: str, min_percent: float = 5.0
) -> str | None:
    """A warning when the state folder's disk is nearly full, else None."""
    if total_bytes <= 0 or free_bytes >= total_bytes * min_percent / 100:
        return None
    return (f"disk of {path} nearly full: {human_bytes(free_bytes)} free of "
            f"{human_bytes(total_bytes)}; the stream, spill and archive need room")


def human_bytes(n: int) -> str:
    if n < 0:
        return "unlimited"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _age(seconds: float) -> str:
    if seconds <= 0:
        return "unlimited"
    return f"{seconds / 86400:g}d" if seconds >= 86400 else f"{seconds:g}s"
