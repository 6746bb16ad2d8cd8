"""Folding repeats: the same rule on the same key fields within a window.

The first alert of a key is sent at once. Repeats inside the window are
counted, not sent; when the window closes, one summary alert (`folded`,
`count` = the repeats, `first_ts`..`last_ts`, the last event) is sent, and
the next repeat opens a new window. Open windows are bounded by count and by
bytes (a flood of distinct keys, each a long command line): past either, the
oldest close early and send their summaries. Counts live in memory: a crash loses
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
    cost: int  # bytes it keeps alive, roughly (its key; its last hit once repeated)
    repeats: int = 0
    last: Hit | None = None
    first_ts: int = 0


def _text_bytes(values: Any) -> int:
    return sum(len(v) for v in values if isinstance(v, str))


def _key_cost(key: tuple[Any, ...]) -> int:
    return 200 + _text_bytes(key)


def _hit_cost(hit: Hit) -> int:
    """The hit's record and its event map (whose argv the record joined), roughly."""
    return 1000 + 2 * _text_bytes(hit.values.values())


class Throttle:
    def __init__(
        self, window: float, key_fields: Sequence[str] = DEFAULT_KEY_FIELDS,
        max_keys: int = 100_000, max_bytes: int = 32 << 20,
    ) -> None:  # fmt: skip
        self.window = window
        self.key_fields = tuple(key_fields)
        # Bound memory under a flood of distinct keys (each long command line its
        # own): past either, the oldest windows close early, their summaries sent.
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self.nbytes = 0  # what the open windows keep alive, roughly
        self.folded = 0  # repeats not sent on their own
        self._open: dict[tuple[Any, ...], _Window] = {}
        self._summaries: list[dict[str, Any]] = []  # closed windows not yet collected

    def key(self, hit: Hit) -> tuple[Any, ...]:
        host = hit.host
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
                self._close(self._open.pop(key))
            cost = _key_cost(key)
            self._shrink(cost, keys=1)
            self._open[key] = _Window(opened=now, cost=cost)
            self.nbytes += cost
            if opened is not None:
                opened.append(key)
            return True
        if not open_.repeats:
            open_.first_ts = hit.ts
            # Counted once: the repeats of one key are about the same size.
            cost = _key_cost(key) + _hit_cost(hit)
            self.nbytes += cost - open_.cost
            open_.cost = cost
        open_.repeats += 1
        open_.last = hit
        self.folded += 1
        self._shrink(0)  # this window may be the oldest: then its summary has this repeat
        return False

    def _shrink(self, more: int, keys: int = 0) -> None:
        """Close the oldest windows until `more` bytes and `keys` windows fit."""
        while self._open and (len(self._open) + keys > self.max_keys
                              or self.nbytes + more > self.max_bytes):  # fmt: skip
            self._close(self._open.pop(next(iter(self._open))))

    def expire(self, now: float, everything: bool = False) -> list[dict[str, Any]]:
        """Summaries of the windows that closed (all of them if `everything`)."""
        for key, open_ in list(self._open.items()):
            if everything or now - open_.opened >= self.window:
                self._close(self._open.pop(key))
        out, self._summaries = self._summaries, []
        return out

    def forget(self, keys: list[tuple[Any, ...]]) -> None:
        """Undo windows whose first alert could not be sent: when the events come
        back, their alert is sent then instead of being folded away."""
        for key in keys:
            open_ = self._open.pop(key, None)
            if open_ is not None:
                self.nbytes -= open_.cost

    def requeue(self, summaries: list[dict[str, Any]]) -> None:
        """Summaries that could not be sent: try again at the next expire()."""
        self._summaries[:0] = summaries

    def _close(self, window: _Window) -> None:
        """`window`, already out of `_open`, ends: its summary if it folded repeats."""
        self.nbytes -= window.cost
        if window.repeats and window.last is not None:
            self._summaries.append(build_alert(window.last, window.repeats, window.first_ts))
