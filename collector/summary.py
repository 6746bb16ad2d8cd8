"""What a process did beyond its fair share, from the kernel's overflow map.

The probes count, per (tgid, record kind), the file records they did not
write because the source was over its share while the ring buffer filled
(`summarized`) or because the ring buffer was full (`lost`): see "Isolation"
in bpf/snoopbus.bpf.c. The counters only grow; each drain turns their growth
since the last one into `summary` events (proto/README.md), so every count is
reported exactly once. An entry whose process is gone is deleted once its
last growth is reported (no increment can follow: it has no threads left).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from snoopbus.collector.events import EventBuilder
from snoopbus.proto import Event


@dataclass(frozen=True)
class Overflow:
    """One map entry's cumulative counts."""

    tgid: int
    kind: int
    summarized: int
    lost: int
    first_ts: int  # boot ns
    last_ts: int
    ino: int
    dev: int
    uid: int


@dataclass
class _Seen:
    summarized: int = 0
    lost: int = 0
    last_ts: int = 0
    dead: bool = False  # its process was gone at the last drain


class SummaryDrain:
    """Growth of the overflow counters -> summary events, exactly once."""

    def __init__(self, builder: EventBuilder, alive: Callable[[int], bool] | None = None) -> None:
        self._builder = builder
        self._alive = alive or (lambda pid: Path(f"/proc/{pid}").exists())
        self._seen: dict[tuple[int, int], _Seen] = {}
        self.summarized = 0  # reported so far, all processes
        self.lost = 0

    def drain(self, entries: Iterable[Overflow]) -> tuple[list[tuple[str, Event]],
                                                           list[tuple[int, int]]]:
        """(the summary events of the growth, the keys to delete). A key is
        deleted at the drain after the one that found its process gone: what
        this drain read of it was written before it was gone, so it is final."""
        out: list[tuple[str, Event]] = []
        gone: list[tuple[int, int]] = []
        for e in entries:
            key = (e.tgid, e.kind)
            seen = self._seen.get(key)
            if seen is None:
                seen = self._seen[key] = _Seen(last_ts=e.first_ts)
            more, lost = e.summarized - seen.summarized, e.lost - seen.lost
            if more or lost:
                out.append(self._builder.summary(e.tgid, e.uid, e.kind, more, lost, seen.last_ts,
                                                 e.last_ts, e.ino, e.dev))
                seen.summarized, seen.lost, seen.last_ts = e.summarized, e.lost, e.last_ts
                self.summarized += more
                self.lost += lost
            if seen.dead:
                gone.append(key)
                del self._seen[key]
            elif not self._alive(e.tgid):
                seen.dead = True
        return out, gone


def read_overflow(table: object) -> list[Overflow]:
    """Every entry of the probes' `overflow` map (a BCC table)."""
    out = []
    for k, v in table.items():  # type: ignore[attr-defined]
        out.append(Overflow(k.tgid, k.kind, v.summarized, v.lost, v.first_ts, v.last_ts, v.ino,
                            v.dev, v.uid))
    return out


def delete_overflow(table: object, keys: Iterable[tuple[int, int]]) -> None:
    for tgid, kind in keys:
        try:
            del table[table.Key(tgid, kind)]  # type: ignore[attr-defined]
        except KeyError:
            pass
