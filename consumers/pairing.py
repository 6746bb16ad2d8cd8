"""The rename pairer's state, free of NATS: halves waiting for a partner.

A half is keyed by (host token, cookie). `add` either pairs it with the
waiting half of the other kind, or parks it until `window` seconds pass; the
table holds at most `max_pending` halves, and past that the oldest give up
early (evicted, counted). Each half carries opaque `tokens` (the runtime's
deliveries) that the caller settles once the outcome is published.

Halves already resolved (paired or given up) are remembered, boundedly, by
(host token, event id), so a duplicate delivery of one yields no output.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from snoopbus.proto import SCHEMA_VERSION, Event, host_token

FROM, TO = "moved_from", "moved_to"
HALF_TYPES = (FROM, TO)
UNPAIRED = {FROM: "moved_out", TO: "moved_in"}  # as inotify says across a watch boundary

Key = tuple[str, Any]  # (host token, cookie)
HalfId = tuple[str, str]  # (host token, event id)


@dataclass(slots=True)
class Half:
    event: Event
    host: str  # subject token of event["host"]
    deadline: float
    tokens: list[Hashable] = field(default_factory=list)

    @property
    def id(self) -> HalfId:
        return (self.host, self.event["id"])


@dataclass(slots=True)
class Outcome:
    """What to publish (None: a duplicate, nothing to publish) and which halves it settles."""

    event: Event | None
    halves: list[Half]
    evicted: bool = False


@dataclass
class PairStats:
    paired: int = 0
    moved_out: int = 0
    moved_in: int = 0
    evicted: int = 0  # gave up before the window because max_pending was reached
    duplicates: int = 0  # deliveries of a half that was pending or already resolved
    cookieless: int = 0  # halves without a cookie: cannot pair, given up at once


class PairTable:
    def __init__(self, window: float, max_pending: int, remember: int = 65_536) -> None:
        if window <= 0 or max_pending < 1 or remember < 1:
            raise ValueError("pairing: window, max_pending and remember must be positive")
        self.window = window
        self.max_pending = max_pending
        self.remember = remember
        self.stats = PairStats()
        # No half gives up before this (monotonic) time: after a crash, while
        # the halves the dead instance held are still to be redelivered.
        self.hold_until = 0.0
        # Insertion order is deadline order (one window, hold_until only ever
        # lifts early deadlines to one value): so oldest first.
        self._pending: OrderedDict[Key, Half] = OrderedDict()
        self._resolved: OrderedDict[HalfId, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, event: Event, token: Hashable, now: float) -> list[Outcome]:
        host = host_token(event["host"])
        half = Half(event, host, max(now + self.window, self.hold_until), [token])
        if half.id in self._resolved:
            self.stats.duplicates += 1
            return [Outcome(None, [half])]
        cookie = event.get("cookie")
        if cookie is None:
            self.stats.cookieless += 1
            return [self._give_up(half)]
        key = (host, cookie)
        waiting = self._pending.get(key)
        if waiting is None:
            self._pending[key] = half
            return self._evict_over_limit()
        if waiting.event["id"] == event["id"]:
            waiting.tokens.append(token)  # same half again: settle both together
            self.stats.duplicates += 1
            return []
        del self._pending[key]
        if waiting.event["type"] == event["type"]:
            # A cookie reused for the same kind: the older half lost its chance.
            self._pending[key] = half
            return [self._give_up(waiting), *self._evict_over_limit()]
        return [self._pair(waiting, half)]

    def expire(self, now: float) -> list[Outcome]:
        out: list[Outcome] = []
        while self._pending:
            key, half = next(iter(self._pending.items()))
            if half.deadline > now:
                break
            del self._pending[key]
            out.append(self._give_up(half))
        return out

    def mark_resolved(self, host: str, event_id: str) -> None:
        """Seen already (e.g. in output published before a restart)."""
        self._remember((host, event_id))

    def unresolve(self, outcome: Outcome) -> None:
        """Its publish failed: let a redelivery of its halves count again."""
        for half in outcome.halves:
            self._resolved.pop(half.id, None)

    def _evict_over_limit(self) -> list[Outcome]:
        out = []
        while len(self._pending) > self.max_pending:
            _, half = self._pending.popitem(last=False)
            self.stats.evicted += 1
            outcome = self._give_up(half)
            outcome.evicted = True
            out.append(outcome)
        return out

    def _remember(self, half_id: HalfId) -> None:
        self._resolved[half_id] = None
        if len(self._resolved) > self.remember:
            self._resolved.popitem(last=False)

    def _pair(self, a: Half, b: Half) -> Outcome:
        src, dst = (a, b) if a.event["type"] == FROM else (b, a)
        self._remember(src.id)
        self._remember(dst.id)
        self.stats.paired += 1
        return Outcome(renamed(src.event, dst.event), [src, dst])

    def _give_up(self, half: Half) -> Outcome:
        self._remember(half.id)
        kind = UNPAIRED[half.event["type"]]
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)
        return Outcome(unpaired(half.event), [half])


def renamed(src: Event, dst: Event) -> Event:
    """One `renamed` event from a moved_from (`src`) and moved_to (`dst`) half.

    Its id is derived from both halves' ids, so pairing the same two halves
    again (after a redelivery) gives the same id, hence the same Nats-Msg-Id.
    """
    file = {**src.get("file", {}), **dst.get("file", {})}
    file["old_path"] = src.get("file", {}).get("path", "")
    event: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "id": derived_id(src["id"], dst["id"]),
        "ts": min(src["ts"], dst["ts"]),
        "host": src["host"],
        "type": "renamed",
        "file": file,
        "cookie": src.get("cookie"),
    }
    proc = src.get("proc") or dst.get("proc")  # the process that called rename
    if proc:
        event["proc"] = proc
    if "ret" in dst or "ret" in src:
        event["ret"] = dst.get("ret", src.get("ret"))
    return event  # type: ignore[return-value]


def unpaired(half: Event) -> Event:
    """A half with no partner, as moved_out (from) or moved_in (to)."""
    kind = UNPAIRED[half["type"]]
    return {**half, "type": kind, "id": derived_id(half["id"], kind)}  # type: ignore[typeddict-item]


MAX_ID = 1024  # proto/schema.py: ids are 1 to 1024 printable ASCII characters


def derived_id(*parts: str) -> str:
    """"a+b": readable, and the same for the same parts (JetStream dedup); a
    digest of them when that would be longer than an id may be."""
    joined = "+".join(parts)
    if len(joined) <= MAX_ID:
        return joined
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()
