"""Folding repeats: the same rule on the same key fields within a window.

The first alert of a key is sent at once. Repeats inside the window are
counted, not sent; when the window closes, one summary alert (`folded`,
`count` = the repeats, `first_ts`..`last_ts`, the last event) is sent, and
the next repeat opens a new window. Counts live in memory: a crash loses
the repeats not yet summarised (their first alert was sent), and a batch
redelivered after a failed publish may count its repeats twice. A first
alert is never folded away by a failure: its window is forgotten
(`forget`), so the redelivered event opens it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .alerts import build_alert
from .engine import Hit

DEFAULT_KEY_FIELDS = ("Image", "CommandLine", "ParentImage", "TargetFilename", "User")


@dataclass
class _Window:
    opened: float
    repeats: int = 0
    last: Hit | None = None
    first_ts: int = 0


class Throttle:
    def __init__(
        self, window: float, key_fields: Sequence[str] = DEFAULT_KEY_FIELDS,
        max_keys: int = 100_000,
    ) -> None:  # fmt: skip
        self.window = window
        self.key_fields = tuple(key_fields)
        self.max_keys = max_keys  # bounds memory under a flood of distinct keys
        self.folded = 0  # repeats not sent on their own
        self._open: dict[tuple[Any, ...], _Window] = {}
        self._summaries: list[dict[str, Any]] = []  # closed windows not yet collected

    def key(self, hit: Hit) -> tuple[Any, ...]:
        host = hit.event.get("host")
        return (hit.rule.id, host, *(hit.values.get(f) for f in self.key_fields))

    def admit(self, hit: Hit, now: float, opened: list[tuple[Any, ...]] | None = None) -> bool:
        """True: send this alert now (its window's key is added to `opened`).
        False: counted as a repeat."""
        if self.window <= 0:
            return True
        key = self.key(hit)
        open_ = self._open.get(key)
        if open_ is None or now - open_.opened >= self.window:
            if open_ is not None:
                self._close(open_)
            elif len(self._open) >= self.max_keys:
                self._close(self._open.pop(next(iter(self._open))))  # oldest first
            self._open[key] = _Window(opened=now)
            if opened is not None:
                opened.append(key)
            return True
        if not open_.repeats:
            open_.first_ts = int(hit.event.get("ts", 0))
        open_.repeats += 1
        open_.last = hit
        self.folded += 1
        return False

    def expire(self, now: float, everything: bool = False) -> list[dict[str, Any]]:
        """Summaries of the windows that closed (all of them if `everything`)."""
        for key, open_ in list(self._open.items()):
            if everything or now - open_.opened >= self.window:
                del self._open[key]
                self._close(open_)
        out, self._summaries = self._summaries, []
        return out

    def forget(self, keys: list[tuple[Any, ...]]) -> None:
        """Undo windows whose first alert could not be sent: when the events come
        back, their alert is sent then instead of being folded away."""
        for key in keys:
            self._open.pop(key, None)

    def requeue(self, summaries: list[dict[str, Any]]) -> None:
        """Summaries that could not be sent: try again at the next expire()."""
        self._summaries[:0] = summaries

    def _close(self, window: _Window) -> None:
        if window.repeats and window.last is not None:
            self._summaries.append(build_alert(window.last, window.repeats, window.first_ts))
