"""The pairing table on its own: no NATS, just halves in and outcomes out."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from snoopbus.consumers.pairing import (
    NATIVE,
    NS,
    PairTable,
    _fastpair,
    as_event,
    encode_outputs,
    renamed,
    renamed_record,
    unpaired,
    unpaired_record,
)
from snoopbus.proto import decode_batch, encode_batch, validate_event
from snoopbus.proto.fastpath import decode
from tests.support.events import rename_half


def half(
    kind: str, cookie: int | None, host: str = "h1", n: int | None = None, at: float = 0.0
) -> dict:
    """A half at `at` seconds of event time."""
    ident = f"{host}-{kind}-{cookie if n is None else n}"
    return rename_half(kind, cookie, host=host, id=ident, ts=round(at * NS),
                       proc={"pid": 42, "comm": "mv"}, inode=7)


def record(event: dict) -> object:
    """The fast-path record of an event map, as the runtime decodes it."""
    (rec,) = decode(encode_batch([event]), 10, 1 << 20) or [None]
    assert rec is not None
    return rec


def types(outcomes: list) -> list[str | None]:
    return [as_event(o.event)["type"] if o.event is not None else None for o in outcomes]


def test_pairs_in_either_order() -> None:
    for first, second in (("moved_from", "moved_to"), ("moved_to", "moved_from")):
        table = PairTable(window=2, max_pending=10)
        assert table.add(half(first, 1, at=10), "a") == []
        (out,) = table.add(half(second, 1, at=10), "b")
        event = out.event
        assert event is not None
        validate_event(event)
        assert event["type"] == "renamed"
        assert event["file"] == {"path": "/moved_to/1", "old_path": "/moved_from/1", "inode": 7}
        assert event["proc"] == {"pid": 42, "comm": "mv"}
        assert event["id"] == "h1-moved_from-1+h1-moved_to-1"
        assert event["ts"] == 10 * NS
        assert sorted(t for h in out.halves for t in h.tokens) == ["a", "b"]
        assert len(table) == 0


def test_same_cookie_on_two_hosts_does_not_pair() -> None:
    table = PairTable(window=2, max_pending=10)
    assert table.add(half("moved_from", 1, "a"), 1) == []
    assert table.add(half("moved_to", 1, "b"), 2) == []
    table.add(half("moved_to", 9, "a", at=3), 3)
    table.add(half("moved_from", 9, "b", at=3), 4)
    assert types(table.expire(0)) == ["moved_out", "moved_in"]


# -- the watermark: event time and each host's progress decide ---------------


def test_a_lone_half_gives_up_once_its_host_moved_the_window_past_it() -> None:
    """Past it in the stream its partner would come on: the other kind's."""
    table = PairTable(window=2, max_pending=10)
    table.add(half("moved_to", 1, at=100), "a")
    table.add(half("moved_from", 2, at=101), "b")
    assert table.expire(0) == []
    table.add(half("moved_from", 3, at=101.9), "c")  # 1.9 s past the first: not yet
    assert table.expire(0) == [] and table.watermark("h1", "moved_from") == round(101.9 * NS)
    table.add(half("moved_to", 8, at=102.5), "x")  # its own kind's stream: no matter
    assert table.expire(0) == []
    table.add(half("moved_from", 4, at=102), "d")  # exactly 2 s past it
    (first,) = table.expire(0)
    assert first.event["type"] == "moved_in" and first.event["id"] == "h1-moved_to-1+moved_in"
    table.add(half("moved_to", 5, at=103.5), "e")
    assert types(table.expire(0)) == ["moved_out"]  # cookie 2; 3 and 4 still wait
    assert table.stats.moved_in == table.stats.moved_out == 1 and len(table) == 4


def test_one_kind_running_ahead_of_the_other_gives_no_false_outcome() -> None:
    """A collector cuts each subject's buffer on its own: after an outage many
    moved_from messages can come before the first moved_to one."""
    table = PairTable(window=2, max_pending=1000)
    for c in range(300):  # 5 minutes of moved_from
        assert table.add(half("moved_from", c, at=c), c) == []
    assert table.expire(0) == []
    outs = []
    for c in range(300):
        outs += table.add(half("moved_to", c, at=c), 1000 + c)
        outs += table.expire(0)
    assert types(outs) == ["renamed"] * 300


def test_wall_clock_alone_never_gives_a_half_up() -> None:
    """However long it sits, a half waits while its host's stream stands still
    and the pairer is not caught up (a backlog being read)."""
    table = PairTable(window=2, max_pending=10, idle_after=30)
    table.add(half("moved_from", 1, at=5), "a")
    for now in (0.0, 10.0, 1000.0, 10_000.0):
        table.tick(now, caught_up=False)
        assert table.expire(now) == []
    (out,) = table.add(half("moved_to", 1, at=5), "b")  # minutes later by the wall clock
    assert out.event["type"] == "renamed"


def test_another_hosts_progress_does_not_give_a_half_up() -> None:
    table = PairTable(window=2, max_pending=10)
    table.add(half("moved_from", 1, "quiet", at=5), "a")
    table.add(half("moved_from", 1, "busy", at=5), "b")
    table.add(half("moved_to", 2, "busy", at=60), "c")
    assert types(table.expire(0)) == ["moved_out"]  # busy's cookie 1 only
    (out,) = table.add(half("moved_to", 1, "quiet", at=5), "d")
    assert out.event["type"] == "renamed"


def test_a_half_arriving_behind_its_hosts_watermark_still_gets_the_window() -> None:
    """A half older than the watermark (a collector restarted with its clock
    stepped back, a late message) waits for the stream to move on from where
    it was when the half came, not from the half's own time."""
    table = PairTable(window=2, max_pending=10)
    table.add(half("moved_from", 1, at=1000), "a")
    assert types(table.add(half("moved_to", 1, at=1000), "b")) == ["renamed"]
    table.add(half("moved_from", 2, at=400), "c")  # 600 s behind the watermark
    assert table.expire(0) == []
    table.add(half("moved_to", 3, at=401), "d")  # the stream's new times: still behind
    assert table.expire(0) == []
    (late,) = table.add(half("moved_to", 2, at=400), "e")
    assert late.event["type"] == "renamed"
    table.add(half("moved_from", 4, at=1002), "f")  # 2 s past the watermark cookie 3 saw
    assert types(table.expire(0)) == ["moved_in"]  # cookie 3 (cookie 2 was paired)


def test_the_quiet_clock_runs_only_while_caught_up() -> None:
    table = PairTable(window=2, max_pending=10, idle_after=30)
    table.tick(0.0, caught_up=False)
    table.add(half("moved_from", 1, "h1", at=5), "a")
    table.tick(100.0, caught_up=True)  # behind until now: 100 s of backlog count for nothing
    assert table.quiet == 0.0 and table.expire(100.0) == []
    table.tick(110.0, caught_up=False)
    table.tick(200.0, caught_up=True)  # behind again for 90 s
    table.add(half("moved_to", 2, "h2", at=5), "b")
    table.tick(219.0, caught_up=True)
    assert table.quiet == 29.0 and table.expire(219.0) == []
    table.tick(220.0, caught_up=True)
    assert types(table.expire(220.0)) == ["moved_out"]  # 30 s of quiet since it came
    table.tick(250.0, caught_up=True)
    assert types(table.expire(250.0)) == ["moved_in"]
    assert table.stats.quiet == 2


def test_nothing_gives_up_before_hold_until() -> None:
    table = PairTable(window=2, max_pending=10, idle_after=100)
    table.hold_until = 50.0
    table.add(half("moved_from", 1, at=0), "a")
    table.add(half("moved_to", 2, at=10), "b")
    table.tick(0.0, True)
    table.tick(49.0, True)
    assert table.expire(49.0) == []
    assert types(table.expire(50.0)) == ["moved_out"]


def test_idle_after_must_cover_the_window() -> None:
    try:
        PairTable(window=5, max_pending=10, idle_after=4)
    except ValueError as exc:
        assert "idle_after" in str(exc)
    else:
        raise AssertionError("accepted idle_after below the window")


# -- duplicates, bounds, cookies ------------------------------------------------


def test_duplicates_settle_together_and_after_resolution_yield_nothing() -> None:
    table = PairTable(window=2, max_pending=10)
    table.add(half("moved_from", 1), "a")
    assert table.add(half("moved_from", 1), "a2") == []  # same id while pending
    (out,) = table.add(half("moved_to", 1), "b")
    assert sorted(t for h in out.halves for t in h.tokens) == ["a", "a2", "b"]
    (late,) = table.add(half("moved_to", 1), "b2")  # after the pair
    assert late.event is None and late.halves[0].tokens == ["b2"]
    assert table.stats.duplicates == 2 and table.stats.paired == 1
    table.add(half("moved_from", 99, at=100), "z")
    assert types(table.expire(0)) == []


def test_a_flood_of_lone_halves_stays_bounded_and_counts_evictions() -> None:
    table = PairTable(window=60, max_pending=100)
    given_up = []
    for cookie in range(1000):
        given_up += table.add(half("moved_from", cookie), cookie)
    assert len(table) == 100
    assert len(given_up) == 900 and all(o.evicted for o in given_up)
    assert [o.halves[0].event["cookie"] for o in given_up[:3]] == [0, 1, 2]  # oldest first
    assert table.stats.evicted == 900


def test_a_flooding_host_gives_up_its_own_halves_not_the_others() -> None:
    table = PairTable(window=60, max_pending=100)
    for cookie in range(10):
        table.add(half("moved_from", cookie, "quiet"), cookie)
    given_up = []
    for cookie in range(500):
        given_up += table.add(half("moved_from", cookie, "flood"), cookie)
    assert {o.halves[0].host for o in given_up} == {"flood"} and len(given_up) == 410
    for cookie in range(10):
        (out,) = table.add(half("moved_to", cookie, "quiet"), cookie)
        assert out.event["type"] == "renamed"


def test_without_a_cookie_a_half_cannot_wait() -> None:
    table = PairTable(window=2, max_pending=10)
    assert types(table.add(half("moved_from", None), "a")) == ["moved_out"]
    assert table.stats.cookieless == 1


def test_a_reused_cookie_retires_the_older_half() -> None:
    table = PairTable(window=2, max_pending=10)
    table.add(half("moved_from", 1, n=1), "a")
    assert types(table.add(half("moved_from", 1, n=2), "b")) == ["moved_out"]
    (out,) = table.add(half("moved_to", 1), "c")
    assert out.event is not None and out.event["id"] == "h1-moved_from-2+h1-moved_to-1"


def test_unresolve_lets_a_redelivery_count_again() -> None:
    table = PairTable(window=2, max_pending=10)
    table.add(half("moved_from", 1), "a")
    (out,) = table.add(half("moved_to", 1), "b")
    table.unresolve(out)  # its publish failed
    table.add(half("moved_from", 1), "a2")
    assert types(table.add(half("moved_to", 1), "b2")) == ["renamed"]


def test_a_message_of_halves_at_once() -> None:
    """add_many: the halves of one message (one host, one kind) under one token."""
    table = PairTable(window=2, max_pending=100)
    out: list = []
    table.add_many(out, [record(half("moved_from", c)) for c in range(5)], "F", "h1")
    assert out == [] and len(table) == 5
    tos = [record(half("moved_to", c)) for c in (4, 3, 3, 9)]  # 3 twice, 9 lone
    table.add_many(out, tos, "T", "h1")
    assert types(out) == ["renamed", "renamed", None] and len(table) == 4  # None: 3 again
    assert [t for o in out for h in o.halves for t in h.tokens] == ["F", "T", "F", "T", "T"]
    assert table.stats.duplicates == 1
    table.add_many(out, [record(half("moved_to", 7, at=3))], "T2", "h1")
    table.add_many(out, [record(half("moved_from", 8, at=3))], "F2", "h1")
    assert sorted(types(table.expire(0))) == ["moved_in", "moved_out", "moved_out",
                                               "moved_out"]  # fmt: skip


def test_renamed_id_is_deterministic() -> None:
    a, b = half("moved_from", 5), half("moved_to", 5)
    assert renamed(a, b) == renamed(dict(a), dict(b))


# -- records (the fast path) give the same events as maps -------------------------


def varied(kind: str, cookie: int, variant: int) -> dict:
    """Halves with and without proc, file fields, ret, on either side."""
    event = half(kind, cookie, at=cookie)
    if variant & 1:
        event["ret"] = -2 if kind == "moved_to" else 0
    if variant & 2:
        event["proc"] = {}
    if variant & 4:
        del event["file"]
    if variant & 8:
        event["file"] = {"path_truncated": True, "dev": 3, "mnt_ns": 9}
    if variant & 16 and kind == "moved_to":
        event.pop("proc", None)
    return event


def test_records_give_the_same_outputs_as_maps() -> None:
    for a in range(32):
        for b in range(32):
            src, dst = varied("moved_from", 1, a), varied("moved_to", 1, b)
            from_maps = renamed(src, dst)
            from_records = renamed_record(record(src), record(dst))
            assert as_event(from_records) == from_maps, (a, b)
            validate_event(as_event(from_records))
            if _fastpair is not None:  # fastpair.c's, the same struct
                assert _fastpair.renamed(record(src), record(dst)) == from_records, (a, b)
    for event in (varied("moved_from", 2, 1), varied("moved_to", 2, 12)):
        assert as_event(unpaired_record(record(event))) == unpaired(event)


def test_output_payloads_decode_to_the_same_events_either_way() -> None:
    maps = [renamed(half("moved_from", c), half("moved_to", c)) for c in range(5)]
    recs = [renamed_record(record(half("moved_from", c)), record(half("moved_to", c)))
            for c in range(5)]  # fmt: skip
    assert decode_batch(encode_outputs(recs)) == decode_batch(encode_batch(maps)) == maps
    mixed = [maps[0], *recs[1:]]
    assert decode_batch(encode_outputs(mixed)) == maps
    assert isinstance(msgspec.msgpack.decode(encode_outputs(recs)), list)


def test_a_pair_of_a_record_and_a_map_is_renamed_as_maps() -> None:
    table = PairTable(window=2, max_pending=10)
    table.add(record(half("moved_from", 1)), "a")
    (out,) = table.add(half("moved_to", 1), "b")
    assert out.event == renamed(half("moved_from", 1), half("moved_to", 1))


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.integers(0, 30),
    lone=st.lists(st.sampled_from(["moved_from", "moved_to"]), max_size=10),
    dups=st.lists(st.integers(0, 200), max_size=20),
    as_records=st.booleans(),
    seed=st.randoms(use_true_random=False),
)
def test_every_half_is_resolved_exactly_once(pairs, lone, dups, as_records, seed) -> None:
    halves = [half(k, c) for c in range(pairs) for k in ("moved_from", "moved_to")]
    halves += [half(k, 1000 + i) for i, k in enumerate(lone)]
    halves += [halves[d % len(halves)] for d in dups] if halves else []
    seed.shuffle(halves)
    table = PairTable(window=2, max_pending=1000)
    outcomes = []
    for i, h in enumerate(halves):
        outcomes += table.add(record(h) if as_records else h, i)
    for kind in ("moved_from", "moved_to"):  # both streams move on
        outcomes += table.add(half(kind, 5000 + len(kind), at=10), -1)
    outcomes += table.expire(0)
    published = [as_event(o.event) for o in outcomes if o.event is not None]
    published = [e for e in published if e["cookie"] < 5000]
    assert sorted(e["type"] for e in published) == sorted(
        ["renamed"] * pairs + ["moved_out" if k == "moved_from" else "moved_in" for k in lone]
    )
    assert len({e["id"] for e in published}) == len(published)
    settled = sorted(t for o in outcomes for h in o.halves for t in h.tokens if t != -1)
    assert settled == list(range(len(halves)))  # every delivery settled exactly once


def test_derived_ids_stay_valid_ids_however_long_the_halves_ids() -> None:
    src, dst = half("moved_from", 1), half("moved_to", 1)
    assert renamed(src, dst)["id"] == f"{src['id']}+{dst['id']}"
    src["id"], dst["id"] = "f" * 1024, "t" * 1024  # each at the limit
    first = renamed(src, dst)
    validate_event(first)
    assert first["id"] == renamed(src, dst)["id"]  # still the same for the same halves
    assert first["id"] != renamed(src, {**dst, "id": "u" * 1024})["id"]
    validate_event(unpaired(src))


# -- a message's halves at once (the fast path) and one at a time agree ------------------


def _message(kind: str, halves: list[tuple[int | None, int, int]], host: str) -> list:
    """Records of one message: (cookie, id number, ts in ms) per half. Ids do not
    name the kind: a moved_from and a moved_to may share one (a broken collector)."""
    events = [rename_half(kind, c, host=host, id=f"{host}-{n}", ts=ms * 1_000_000,
                          proc={"pid": 42, "comm": "mv"}, inode=7)
              for c, n, ms in halves]  # fmt: skip
    records = decode(encode_batch(events), 1000, 1 << 20)
    assert records is not None
    return records


def _summary(outcomes: list) -> list:
    return [(None if o.event is None else as_event(o.event), o.evicted,
             [(h.id, h.tokens) for h in o.halves]) for o in outcomes]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    messages=st.lists(
        st.tuples(
            st.sampled_from(["moved_from", "moved_to"]),
            st.sampled_from(["h1", "h2"]),
            st.lists(
                st.tuples(st.one_of(st.none(), st.integers(0, 12)), st.integers(0, 15),
                          st.integers(0, 4000)),
                min_size=1, max_size=6,
            ),
            st.booleans(),  # as maps (the reference path)
        ),
        max_size=25,
    ),
    max_pending=st.integers(1, 12),
)
def test_a_message_at_once_gives_what_one_half_at_a_time_gives(messages, max_pending) -> None:
    """add_many takes a message's records in one pass when nothing is unusual (no
    duplicate, reused or missing cookie, room in the table) and otherwise one half
    at a time: the outcomes, counts and what is left waiting are the same."""
    # The message loop in Python, in C (fastpair.c) when built, and one half at a time.
    tables = [PairTable(window=1, max_pending=max_pending, native=native)
              for native in (False, *((True,) if NATIVE else ()), False)]  # fmt: skip
    slow = tables[-1]
    slow._add_records = lambda *args: False  # type: ignore[method-assign]  # one at a time
    got: list[list] = [[] for _ in tables]
    for token, (kind, host, halves, maps) in enumerate(messages):
        records = _message(kind, halves, host)
        for table, out in zip(tables, got, strict=True):
            table.add_many(out, [as_event(r) for r in records] if maps else records, token, host)
    for table, out in zip(tables, got, strict=True):
        out += table.expire(0)  # whatever the watermarks gave up
    for fast, out in zip(tables[:-1], got, strict=False):
        assert _summary(out) == _summary(got[-1])
        assert fast.stats == slow.stats and len(fast) == len(slow)
        assert [h.marks for h in fast._hosts.values()] == [h.marks for h in slow._hosts.values()]


def test_a_half_whose_id_a_pairing_just_resolved_is_a_duplicate_either_way() -> None:
    """A moved_to sharing the id of the moved_from that a half before it in its
    message paired with: one at a time, that id is resolved by then."""
    for one_at_a_time in (False, True):
        table = PairTable(window=1, max_pending=10)
        if one_at_a_time:
            table._add_records = lambda *args: False  # type: ignore[method-assign]
        out: list = []
        table.add_many(out, _message("moved_from", [(1, 5, 0)], "h1"), "F", "h1")
        table.add_many(out, _message("moved_to", [(1, 6, 0), (2, 5, 0)], "h1"), "T", "h1")
        assert types(out) == ["renamed", None] and table.stats.duplicates == 1


def test_a_paired_half_keeps_no_record_in_either_loop() -> None:
    """Its record is freed at once (the output holds what it needs); a waiting
    half keeps its own, to give up with."""
    for native in (False, *((True,) if NATIVE else ())):
        table = PairTable(window=1, max_pending=10, native=native)
        out: list = []
        table.add_many(out, _message("moved_from", [(1, 1, 0), (2, 2, 0)], "h1"), "F", "h1")
        table.add_many(out, _message("moved_to", [(1, 3, 0)], "h1"), "T", "h1")
        (paired,) = out
        assert [h.event for h in paired.halves] == [None, None]
        assert as_event(paired.event)["file"]["old_path"] == "/moved_from/1"
        (waiting,) = [h for w in table._hosts["h1"].waiting for h in w.values()]
        assert waiting.event is not None and waiting.id == "h1-2"
