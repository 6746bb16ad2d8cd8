"""The fleet simulation's load: one recorded mix of events, replayed as N hosts.

The recording is made once by the bench itself (`record`): a busy host's mix
from the alerter bench's generators (everyday execs with 1% attacks; creates,
writes, attribute changes, deletes) plus renames as moved_from/moved_to pairs
sharing a cookie, written as msgpack to a file (`--recording` reuses one).
Every simulated host replays it from its own offset, under its own name (in
the subject and in each event), with ids, times and cookies of its own; a
rename pair is never split between two sends.

Hosts send as a collector batches: what a host captured since its last send,
one message per type (at most MAX_BATCH events), every `flush_s`; hosts are
spread over FRAMES phases of that interval, so the aggregate flow is smooth.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack

from snoopbus.proto import SCHEMA_VERSION, encode_batch, event_subject
from snoopbus.proto.msgid import MessageIds

from .alerter import iter_events

MAX_BATCH: Final = 256  # the collector's PublisherConfig.max_batch
FRAMES: Final = 10  # send phases per flush interval
RENAME_SHARE: Final = 0.10  # of the recording's events: halves of rename pairs
RENAME_TYPES: Final = ("moved_from", "moved_to")


def record(path: Path, events: int = 5000, seed: int = 11) -> None:
    """Writes a recording of about `events` events (host-less templates) to `path`."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    source = iter_events(events, seed)
    while len(out) < events:
        if rng.random() < RENAME_SHARE / 2:  # two halves per pair
            cookie = len(out)
            pid = 4000 + cookie % 97
            proc = {"pid": pid, "tid": pid, "ppid": 1, "uid": 1000, "gid": 1000,
                    "comm": "rsync", "exe": "/usr/bin/rsync", "cwd": "/srv"}
            for kind, name in (("moved_from", f".f{cookie}.tmp"), ("moved_to", f"f{cookie}")):
                out.append({"v": SCHEMA_VERSION, "type": kind, "cookie": cookie, "proc": proc,
                            "file": {"path": f"/srv/data/{name}", "inode": cookie, "dev": 2049}})
        else:
            event = next(source, None)
            if event is None:
                source = iter_events(events, rng.randrange(1 << 30))
                continue
            if event["type"] in RENAME_TYPES:  # a lone half: renames come as pairs here
                continue
            for key in ("id", "ts", "host"):
                event.pop(key)
            out.append(event)
    path.write_bytes(msgpack.packb(out))


def load(path: Path) -> list[dict[str, Any]]:
    events = msgpack.unpackb(path.read_bytes())
    assert isinstance(events, list) and events
    return events


@dataclass(frozen=True, slots=True)
class Sent:
    """One message of the load: what it carries, for the accounting."""

    subject: str
    payload: bytes
    host: int  # index into the fleet's host names
    type: str
    events: int
    msg_id: str  # Nats-Msg-Id, as a collector makes it (proto/msgid.py)


class Fleet:
    """N hosts replaying one recording, each from its own place in it."""

    def __init__(self, recording: list[dict[str, Any]], hosts: int, prefix: str = "sim") -> None:
        self.recording = recording
        self.names = [f"{prefix}-{i:04d}" for i in range(hosts)]
        step = max(1, len(recording) // max(hosts, 1))
        # each host starts at its own place, never on the second half of a pair
        self._cursor = [self._pair_start((i * step) % len(recording)) for i in range(hosts)]
        self._serial = [0] * hosts  # per host: ids and cookies of its own
        self._owed = [0.0] * hosts  # fractional events carried to the next send
        self.pairs = 0  # rename pairs sent so far
        self._ids = MessageIds()

    def _pair_start(self, i: int) -> int:
        return (i + 1) % len(self.recording) if self.recording[i]["type"] == "moved_to" else i

    def frames(self, rate: float, seconds: float, flush_s: float,
               t0_ns: int) -> Iterator[list[Sent]]:  # fmt: skip
        """The messages to send at each frame (every flush_s / FRAMES), in order."""
        frame_s = flush_s / FRAMES
        per_send = rate / len(self.names) * flush_s
        for f in range(round(seconds / frame_s)):
            ts = t0_ns + round(f * frame_s * 1e9)
            out: list[Sent] = []
            for h in range(f % FRAMES, len(self.names), FRAMES):
                self._owed[h] += per_send
                n = int(self._owed[h])
                if n:
                    self._owed[h] -= n
                    out += self._send(h, n, ts)
            yield out

    def _send(self, h: int, n: int, ts: int) -> list[Sent]:
        host, rec = self.names[h], self.recording
        by_type: dict[str, list[dict[str, Any]]] = {}
        i, taken = self._cursor[h], 0
        while taken < n or rec[i]["type"] == "moved_to":  # a pair is never split
            template = rec[i]
            serial = self._serial[h] = self._serial[h] + 1
            event = {**template, "id": f"{host}-{serial}", "ts": ts + taken, "host": host}
            if template["type"] == "moved_from":
                self.pairs += 1
                event["cookie"] = serial
            elif template["type"] == "moved_to":
                event["cookie"] = serial - 1
            by_type.setdefault(template["type"], []).append(event)
            taken += 1
            i = (i + 1) % len(rec)
        self._cursor[h] = i
        out = []
        for kind, events in by_type.items():
            subject = event_subject(host, kind)
            for j in range(0, len(events), MAX_BATCH):
                batch = events[j : j + MAX_BATCH]
                out.append(Sent(subject, encode_batch(batch), h, kind, len(batch),
                                self._ids.new(subject, len(batch))))  # fmt: skip
        return out
