"""The rename pairer's state, free of NATS: halves waiting for a partner.

A half is keyed by (host token, cookie). `add` either pairs it with the
waiting half of the other kind, or parks it. A parked half gives up (becomes
moved_out/moved_in) when the first of these holds:

- **event time:** its host's stream has moved `window` seconds past it. Each
  host has a watermark, the greatest event `ts` seen of it; a half gives up
  once that watermark is `window` beyond where it stood just after the half
  arrived (so beyond the half's own ts too). Reading a backlog of minutes,
  fast or slow, gives the same answer as reading live.
- **quiet time:** `idle_after` seconds of the pairer's *quiet clock* passed
  since it arrived. That clock runs only while the pairer is caught up (told
  by `tick`), so a host that went quiet still gets its last halves out, and
  a backlog being read stops it.

Neither rule gives a half up before `hold_until` (monotonic), set after a
crash while the dead instance's messages are still to be redelivered. The
table holds at most `max_pending` halves; past that, the host holding the
most gives up its oldest early (evicted, counted), so one flooding host
cannot push out the others' halves.

Halves are fast-path records (proto/fastpath.py structs) or, for what took
the reference path, event maps; outputs are of the same kind (`renamed`,
`unpaired`; `as_event` makes a map of either). Each half carries opaque
`tokens` (the runtime's deliveries: `token`, and `more` for repeats) that
the caller settles once the outcome is published. Halves already resolved
(paired or given up) are remembered, boundedly (the last `remember`/2 at
least, `remember` and one message's more at most), by (host token, event
id), so a duplicate delivery of one yields no output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final, cast

import msgspec

from snoopbus.proto import SCHEMA_VERSION, Event, encode_batch, host_token
from snoopbus.proto.fastpath import EMPTY, FIELDS, _Event, to_events
from snoopbus.proto.native import disabled, optional_extension

FROM, TO = "moved_from", "moved_to"
HALF_TYPES = (FROM, TO)
UNPAIRED = {FROM: "moved_out", TO: "moved_in"}  # as inotify says across a watch boundary

HalfId = tuple[str, str]  # (host token, event id)
NS = 1_000_000_000


# Half and Outcome are made per half and per output: msgspec structs, made in C
# and not tracked by the garbage collector (a full table is 100,000 of them).
# A cycle through one would never be collected: what they hold (events,
# the runtime's deliveries) lives no longer than the process's pairer anyway.
class Half(msgspec.Struct, gc=False):
    event: Any  # a fast-path record, or an event map; None once paired (the output has it)
    host: str  # subject token of the event's host
    id: str
    type: str
    deadline: int  # event time (ns): gives up once its host's watermark reaches it
    quiet: float  # the quiet clock when it arrived
    token: Hashable  # of the delivery that brought it
    more: list[Hashable] | None = None  # of deliveries that brought it again (duplicates)

    @property
    def tokens(self) -> list[Hashable]:
        return [self.token] if self.more is None else [self.token, *self.more]


class Outcome(msgspec.Struct, gc=False):
    """What to publish (None: a duplicate, nothing to publish) and which halves it settles."""

    event: Any  # a record or an event map, or None (also once the pairer encoded it)
    halves: list[Half]
    evicted: bool = False


@dataclass
class PairStats:
    paired: int = 0
    moved_out: int = 0
    moved_in: int = 0
    evicted: int = 0  # gave up early because max_pending was reached
    duplicates: int = 0  # deliveries of a half that was pending or already resolved
    cookieless: int = 0  # halves without a cookie: cannot pair, given up at once
    quiet: int = 0  # gave up by the quiet clock (the host's stream did not move on)


def default_idle_after(window: float) -> float:
    """Much longer than the window: 30 s, or 4 windows when that is longer."""
    return max(30.0, 4 * window)


class _Host:
    """One host's progress and waiting halves, per kind (0: moved_from, 1: moved_to)."""

    __slots__ = ("marks", "waiting")

    def __init__(self) -> None:
        # The greatest event ts seen of each kind: the two kinds come on two
        # subjects, each in order, but one can run ahead of the other (a
        # collector cuts each subject's buffer into messages on its own).
        self.marks = [-1, -1]
        self.waiting: tuple[dict[Any, Half], dict[Any, Half]] = ({}, {})  # cookie -> half

    def __len__(self) -> int:
        return len(self.waiting[0]) + len(self.waiting[1])


class _Resolved:
    """Ids of resolved halves by host token, in two generations of up to
    `generation` each (cheaper than one ordered map): the newer fills, then
    replaces the older. Sets of a host's ids, not (host, id) pairs: a
    message's halves are checked and added at once, without a tuple each."""

    __slots__ = ("count", "generation", "new", "old")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.new: dict[str, set[str]] = {}
        self.old: dict[str, set[str]] = {}
        self.count = 0  # ids in `new`

    def __contains__(self, half_id: HalfId) -> bool:
        host, eid = half_id
        ids = self.new.get(host)
        if ids is not None and eid in ids:
            return True
        ids = self.old.get(host)
        return ids is not None and eid in ids

    def of(self, host: str) -> tuple[set[str] | None, set[str] | None]:
        """The resolved ids of `host`, newer and older generation (None: none)."""
        return self.new.get(host), self.old.get(host)

    def update(self, host: str, eids: list[str]) -> None:
        ids = self.new.get(host)
        if ids is None:
            ids = self.new[host] = set()
        before = len(ids)
        ids.update(eids)
        self.count += len(ids) - before
        if self.count >= self.generation:
            self.old, self.new, self.count = self.new, {}, 0

    def discard(self, host: str, eid: str) -> None:
        for generation in (self.new, self.old):
            ids = generation.get(host)
            if ids is not None and eid in ids:
                ids.discard(eid)
                if generation is self.new:
                    self.count -= 1


_KIND = {FROM: 0, TO: 1}
# A record's fields, mapped over a message's records in C.
_ID, _TS, _TYPE, _COOKIE = (attrgetter(f) for f in ("id", "ts", "type", "cookie"))


class PairTable:
    def __init__(
        self, window: float, max_pending: int, remember: int = 65_536,
        idle_after: float | None = None, native: bool | None = None,
    ) -> None:  # fmt: skip
        if window <= 0 or max_pending < 1 or remember < 1:
            raise ValueError("pairing: window, max_pending and remember must be positive")
        idle_after = default_idle_after(window) if idle_after is None else idle_after
        if idle_after < window:
            raise ValueError(
                f"pairing: idle_after ({idle_after}s) must be at least the window ({window}s)"
            )
        if native and _fastpair is None:
            raise ValueError(f"pairing: the native pairing loop is {MISSING}")
        # fastpair.c's loop (None: when built and not SNOOPBUS_NATIVE=0), else _pair_records.
        self._check_batch: Callable[..., Any] = _check_records
        self._pair_batch: Callable[..., Any] = _pair_records
        if (NATIVE if native is None else native) and _fastpair is not None:
            self._check_batch, self._pair_batch = _fastpair.check_records, _fastpair.add_records
        self.window = window
        self.window_ns = round(window * NS)
        self.idle_after = idle_after
        self.max_pending = max_pending
        self.remember = remember
        self._generation = max(1, remember // 2)
        self.stats = PairStats()
        # No half gives up before this (monotonic) time: after a crash, while
        # the halves the dead instance held are still to be redelivered.
        self.hold_until = 0.0
        self.quiet = 0.0  # seconds the pairer has spent caught up
        self._caught_up = False
        self._last_tick: float | None = None
        self._hosts: dict[str, _Host] = {}
        self._count = 0
        self._tokens: dict[str, str] = {}  # event host -> host token
        self._resolved = _Resolved(self._generation)

    def __len__(self) -> int:
        return self._count

    def watermark(self, host: str, kind: str) -> int | None:
        """The greatest event ts seen of `host` (a host token) and `kind`, or None."""
        h = self._hosts.get(host)
        return None if h is None or h.marks[_KIND[kind]] < 0 else h.marks[_KIND[kind]]

    @property
    def caught_up(self) -> bool:
        """As the last tick said."""
        return self._caught_up

    def tick(self, now: float, caught_up: bool) -> None:
        """Advance the quiet clock to `now` (monotonic) by the time since the
        last tick if the pairer was caught up then; `caught_up` is from now on."""
        if self._last_tick is not None and self._caught_up and now > self._last_tick:
            self.quiet += now - self._last_tick
        self._last_tick = now
        self._caught_up = caught_up

    def add(self, event: Any, token: Hashable, host: str | None = None) -> list[Outcome]:
        """Take one half (a record or a map) of `host` (its token; derived from
        the event when not given); what it resolved."""
        out: list[Outcome] = []
        self.add_many(out, [event], token, host)
        return out

    def add_many(
        self, out: list[Outcome], events: list[Any], token: Hashable, host: str | None = None
    ) -> None:
        """Take the halves of one message, all of one host and kind (as a
        subject holds them), appending what they resolved to `out`."""
        first = events[0]
        maps = type(first) is dict
        if host is None:
            name = first["host"] if maps else first.host
            host = self._tokens.get(name)
            if host is None:
                host = self._tokens[name] = host_token(name)
        h = self._hosts.get(host)
        if h is None:
            h = self._hosts[host] = _Host()
        if maps or not self._add_records(out, events, token, host, h):
            self._add_each(out, events, token, host, h, maps)

    def _add_records(
        self, out: list[Outcome], records: list[Any], token: Hashable, host: str, h: _Host
    ) -> bool:
        """The common case at a message's pace: fast-path records of one kind,
        none a duplicate, none without a cookie or reusing one, room for all.
        False, having changed nothing, for anything else (then `_add_each`,
        which gives the same outcomes one half at a time: test_rename_pairing.py).
        The checks run over the whole message at once (_check_records)."""
        n = len(records)
        if self._count + n > self.max_pending:
            return False
        got = self._check_batch(records, _KIND, h.waiting, *self._resolved.of(host))
        if got is None:
            return False
        k, kind, ids, tss, cookies, own, top = got
        same = h.waiting[k]
        marks = h.marks
        if top > marks[k]:
            marks[k] = top
        # The other kind's mark does not move within the message: each half's
        # deadline as _add_each computes it.
        done: list[str] = []
        parked, stop = self._pair_batch(
            out, records, ids, tss, cookies, same, h.waiting[1 - k], own, host, kind, k,
            marks[1 - k], self.window_ns, self.quiet, token, done,
        )  # fmt: skip
        self._settle_records(host, done, parked)
        if stop >= 0 and stop < n:  # a later half of this message may now be a duplicate
            self._add_each(out, records[stop:], token, host, h, False)
        return True

    def _settle_records(self, host: str, done: list[str], parked: int) -> None:
        """_add_records' counts, and the halves it paired (their ids) remembered."""
        paired = len(done) // 2
        self._count += parked - paired
        self.stats.paired += paired
        if done:
            self._resolved.update(host, done)

    def _add_each(
        self, out: list[Outcome], events: list[Any], token: Hashable, host: str, h: _Host,
        maps: bool,
    ) -> None:  # fmt: skip
        """add_many one half at a time: any mix, duplicates, reused cookies, eviction."""
        marks, window, quiet = h.marks, self.window_ns, self.quiet
        for event in events:
            if maps:
                eid, kind, ts, cookie = event["id"], event["type"], event["ts"], event.get("cookie")
            else:
                eid, kind, ts, cookie = event.id, event.type, event.ts, event.cookie
            k = _KIND[kind]
            if ts > marks[k]:
                marks[k] = ts
            # It gives up once the other kind's stream, where its partner would
            # come from, is `window` past it, and past where that stream stood now.
            other = marks[1 - k]
            half = Half(event, host, eid, kind, (ts if ts > other else other) + window, quiet,
                        token)  # fmt: skip
            half_id = (host, eid)
            if half_id in self._resolved:
                self.stats.duplicates += 1
                out.append(Outcome(None, [half]))
                continue
            if cookie is None:
                self.stats.cookieless += 1
                out.append(self._give_up(half))
                continue
            partner = h.waiting[1 - k].pop(cookie, None)
            if partner is not None:
                self._count -= 1
                out.append(self._pair(partner, half))
                continue
            same = h.waiting[k]
            waiting = same.get(cookie)
            if waiting is None:
                same[cookie] = half
                self._count += 1
                if self._count > self.max_pending:
                    out += self._evict_over_limit()
                continue
            if waiting.id == eid:
                if waiting.more is None:  # same half again: settle both together
                    waiting.more = [token]
                else:
                    waiting.more.append(token)
                self.stats.duplicates += 1
                continue
            # A cookie reused for the same kind: the older half lost its chance.
            del same[cookie]
            same[cookie] = half
            out.append(self._give_up(waiting))

    def expire(self, now: float) -> list[Outcome]:
        """Give up the halves whose partner's stream moved `window` past them,
        or that waited `idle_after` of quiet time; none before hold_until."""
        if now < self.hold_until:
            return []
        out: list[Outcome] = []
        quiet_due = self.quiet - self.idle_after
        for h in self._hosts.values():
            for k in (0, 1):
                waiting = h.waiting[k]
                if not waiting:
                    continue
                mark = h.marks[1 - k]
                # Oldest first; arrival quiet times only grow, deadlines nearly
                # (a half stopping the scan holds later ones back, never the reverse).
                done = []
                for cookie, half in waiting.items():
                    if half.deadline <= mark:
                        done.append(cookie)
                    elif half.quiet <= quiet_due:
                        done.append(cookie)
                        self.stats.quiet += 1
                    else:
                        break
                for cookie in done:
                    out.append(self._give_up(waiting.pop(cookie)))
                self._count -= len(done)
        return out

    def mark_resolved(self, host: str, event_id: str) -> None:
        """Seen already (e.g. in output published before a restart)."""
        self._remember((host, event_id))

    def unresolve(self, outcome: Outcome) -> None:
        """Its publish failed: let a redelivery of its halves count again."""
        for half in outcome.halves:
            self._resolved.discard(half.host, half.id)

    def _evict_over_limit(self) -> list[Outcome]:
        out = []
        while self._count > self.max_pending:
            fullest = max(self._hosts.values(), key=len)
            waiting = max(fullest.waiting, key=len)
            half = waiting.pop(next(iter(waiting)))
            self._count -= 1
            self.stats.evicted += 1
            outcome = self._give_up(half)
            outcome.evicted = True
            out.append(outcome)
        return out

    def _remember(self, half_id: HalfId) -> None:
        self._resolved.update(half_id[0], [half_id[1]])

    def _pair(self, a: Half, b: Half) -> Outcome:
        src, dst = (a, b) if a.type == FROM else (b, a)
        self._resolved.update(src.host, [src.id])
        self._resolved.update(dst.host, [dst.id])
        self.stats.paired += 1
        s, d = src.event, dst.event
        if type(s) is dict or type(d) is dict:  # one took the reference path: maps
            event = renamed(as_event(s), as_event(d))
        else:
            event = renamed_record(s, d)
        return Outcome(event, [src, dst])

    def _give_up(self, half: Half) -> Outcome:
        self._remember((half.host, half.id))
        kind = UNPAIRED[half.type]
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)
        event = half.event
        if type(event) is dict:  # a map (the reference path), else a fast-path record
            return Outcome(unpaired(cast(Event, event)), [half])
        return Outcome(unpaired_record(event), [half])


_Checked = tuple[int, str, list[str], list[int], list[Any], set[str], int]


def _check_records(
    records: list[Any], kinds: dict[str, int], waiting: tuple[dict[Any, Half], dict[Any, Half]],
    new_ids: set[str] | None, old_ids: set[str] | None,
) -> _Checked | None:  # fmt: skip
    """None unless the records are of one kind (its index in `waiting` by
    `kinds`), each with a cookie, none reused or waiting already, their ids
    unique and none in new_ids or old_ids (resolved); else the kind's index,
    the kind, ids, tss, cookies, the ids as a set, and the greatest ts. The
    reference of fastpair.c's check_records; checks over the whole message in
    C (map, set operations)."""
    types = set(map(_TYPE, records))
    if len(types) != 1:
        return None
    (kind,) = types
    k = kinds.get(kind)
    if k is None:
        return None
    n = len(records)
    cookies = list(map(_COOKIE, records))
    if None in cookies or len(set(cookies)) != n or not waiting[k].keys().isdisjoint(cookies):
        return None
    ids = list(map(_ID, records))
    own = set(ids)
    if len(own) != n or not ((new_ids is None or new_ids.isdisjoint(own))
                             and (old_ids is None or old_ids.isdisjoint(own))):  # fmt: skip
        return None
    tss = list(map(_TS, records))
    return k, kind, ids, tss, cookies, own, max(tss)


def _pair_records(
    out: list[Outcome], records: list[Any], ids: list[str], tss: list[int],
    cookies: list[Any], same: dict[Any, Half], partners: dict[Any, Half], own: set[str],
    host: str, kind: str, k: int, other: int, window: int, quiet: float, token: Hashable,
    done: list[str],
) -> tuple[int, int]:  # fmt: skip
    """PairTable._add_records' loop over checked records (the reference of
    fastpair.c's add_records): each half parked in `same` or paired with its
    partner from `partners`, the pairs' event ids added to `done`. The count
    parked, and the index after a pairing whose partner's id is one of this
    message's own (-1 if none): the rest must then go one at a time."""
    parked = 0
    for i, (event, eid, ts, cookie) in enumerate(zip(records, ids, tss, cookies, strict=True)):
        deadline = (ts if ts > other else other) + window
        partner = partners.pop(cookie, None)
        if partner is None:
            same[cookie] = Half(event, host, eid, kind, deadline, quiet, token)
            parked += 1
            continue
        # A paired half keeps no record: the output holds what it needs, and the
        # records are freed now, while still in the cache, not once it is stored.
        half = Half(None, host, eid, kind, deadline, quiet, token)
        done.append(eid)
        done.append(partner.id)
        src, dst = (partner.event, event) if k else (event, partner.event)
        partner.event = None
        pair = [partner, half] if k else [half, partner]
        if type(src) is dict or type(dst) is dict:  # the partner took the reference path
            out.append(Outcome(_renamed_maps(src, dst), pair))
        else:
            out.append(Outcome(renamed_record(src, dst), pair))
        if partner.id in own:
            return parked, i + 1
    return parked, -1


def _renamed_maps(src: Any, dst: Any) -> Event:
    return renamed(as_event(src), as_event(dst))


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
    return cast(Event, event)  # built as a plain map: "cookie" may be None


def unpaired(half: Event) -> Event:
    """A half with no partner, as moved_out (from) or moved_in (to)."""
    kind = UNPAIRED[half["type"]]
    return {**half, "type": kind, "id": derived_id(half["id"], kind)}


# The same two on fast-path records, without making maps: tests/consumers/test_rename_pairing.py
# holds them to the map versions above (as_event of the result is the same map).
_FILE = type(EMPTY["file"])
_EVENT = _Event  # positional: the fields in this order, then exit_code and signal
assert FIELDS[None][:9] == ("v", "id", "ts", "host", "type", "proc", "file", "cookie", "ret")
_NO_FILE = EMPTY["file"]
_NO_PROC = EMPTY["proc"]
_replace = msgspec.structs.replace
_to_builtins = msgspec.to_builtins


def renamed_record(src: Any, dst: Any) -> Any:
    sf, df = src.file, dst.file
    rid = f"{src.id}+{dst.id}"
    if len(rid) > MAX_ID:
        rid = derived_id(src.id, dst.id)
    if df is None:
        file = _replace(sf or _NO_FILE, old_path=(sf and sf.path) or "")
    elif sf is None:
        file = _replace(df, old_path="")
    elif _replace(df, path=sf.path) == sf:  # the collector's halves: src adds nothing
        file = _replace(df, old_path=sf.path or "")
    else:  # dst's fields where it has them, src's elsewhere
        file = _FILE(**{**_to_builtins(sf), **_to_builtins(df), "old_path": sf.path or ""})
    proc = src.proc
    if proc is None or proc == _NO_PROC:
        proc = dst.proc
        if proc == _NO_PROC:
            proc = None
    ret = dst.ret
    return _EVENT(
        dst.v, rid, src.ts if src.ts < dst.ts else dst.ts, src.host, "renamed", proc,
        file, src.cookie, src.ret if ret is None else ret,
    )  # fmt: skip


def unpaired_record(half: Any) -> Any:
    kind = UNPAIRED[half.type]
    return _replace(half, type=kind, id=derived_id(half.id, kind))


def as_event(event: Any) -> Event:
    """An output or half as an event map, whichever it is."""
    return cast(Event, event) if type(event) is dict else to_events([event])[0]


_ENCODER = msgspec.msgpack.Encoder()


def encode_outputs(events: list[Any]) -> bytes:
    """One message payload of outputs: records encoded directly, anything
    else (maps from the reference path) as codec.encode_batch does."""
    if dict not in set(map(type, events)):
        return _ENCODER.encode(events)
    return encode_batch([as_event(e) for e in events])


MAX_ID = 1024  # proto/schema.py: ids are 1 to 1024 printable ASCII characters


def derived_id(*parts: str) -> str:
    """"a+b": readable, and the same for the same parts (JetStream dedup); a
    digest of them when that would be longer than an id may be."""
    joined = "+".join(parts)
    if len(joined) <= MAX_ID:
        return joined
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()


# fastpair.c: _pair_records and renamed_record's common case in C, when built
# (setup.py; without a C compiler the install goes on without it).
_fastpair, MISSING = optional_extension("snoopbus.consumers._fastpair")
if _fastpair is not None:
    _fastpair.setup(
        Half, Outcome, _EVENT, _replace, _NO_PROC, renamed_record, _renamed_maps, MAX_ID
    )
NATIVE: Final = _fastpair is not None and not disabled()
