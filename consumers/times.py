"""Times as users write them: ISO 8601 or an age (90s, 15m, 2h, 7d, 1w).

Used by `snoopbus query --since` and a consumer's `--start TIME`; free of
pyarrow, so a collector-only install reads them too.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class TimeError(ValueError):
    """Text that is no time: the message says the forms accepted."""


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (UTC unless it says otherwise), `now`, `today`, or an age ago."""
    now = now or datetime.now(UTC)
    t = text.strip()
    m = _RELATIVE.match(t)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    if t == "now":
        return now
    if t == "today":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        when = datetime.fromisoformat(t.replace("Z", "+00:00") if t.endswith("Z") else t)
    except ValueError:
        raise TimeError(
            f"cannot read time {text!r}: use ISO 8601 (2026-11-20T14:00) or an age (2h, 7d)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def to_ns(when: datetime) -> int:
    return int(when.timestamp()) * 10**9 + when.microsecond * 1000
