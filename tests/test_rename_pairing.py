"""The pairing table on its own: no NATS, just halves in and outcomes out."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from snoopbus.consumers.pairing import PairTable, renamed, unpaired
from snoopbus.proto import SCHEMA_VERSION, validate_event


def half(kind: str, cookie: int | None, host: str = "h1", n: int | None = None) -> dict:
    ident = f"{host}-{kind}-{cookie if n is None else n}"
    event = {
        "v": SCHEMA_VERSION, "id": ident, "ts": 10 if kind == "moved_from" else 11, "host": host,
        "type": kind, "file": {"path": f"/{kind}/{cookie}", "inode": 7},
        "proc": {"pid": 42, "comm": "mv"},
    }  # fmt: skip
    if cookie is not None:
        event["cookie"] = cookie
    return event


def types(outcomes: list) -> list[str | None]:
    return [o.event["type"] if o.event else None for o in outcomes]


def test_pairs_in_either_order() -> None:
    for first, second in (("moved_from", "moved_to"), ("moved_to", "moved_from")):
        table = PairTable(window=2, max_pending=10)
        assert table.add(half(first, 1), "a", 0) == []
        (out,) = table.add(half(second, 1), "b", 0.5)
        event = out.event
        assert event is not None
        validate_event(event)
        assert event["type"] == "renamed"
        assert event["file"] == {"path": "/moved_to/1", "old_path": "/moved_from/1", "inode": 7}
        assert event["proc"] == {"pid": 42, "comm": "mv"}
        assert event["id"] == "h1-moved_from-1+h1-moved_to-1"
        assert event["ts"] == 10
        assert sorted(t for h in out.halves for t in h.tokens) == ["a", "b"]
        assert len(table) == 0


def test_same_cookie_on_two_hosts_does_not_pair() -> None:
    table = PairTable(window=2, max_pending=10)
    assert table.add(half("moved_from", 1, "a"), 1, 0) == []
    assert table.add(half("moved_to", 1, "b"), 2, 0) == []
    assert types(table.expire(3)) == ["moved_out", "moved_in"]


def test_a_lone_half_gives_up_after_the_window_oldest_first() -> None:
    table = PairTable(window=2, max_pending=10)
    table.add(half("moved_to", 1), "a", 0)
    table.add(half("moved_from", 2), "b", 1)
    assert table.expire(1.9) == []
    (first,) = table.expire(2.0)
    assert first.event is not None and first.event["type"] == "moved_in"
    assert first.event["id"] == "h1-moved_to-1+moved_in"
    assert types(table.expire(3.0)) == ["moved_out"]
    assert table.stats.moved_in == table.stats.moved_out == 1


def test_duplicates_settle_together_and_after_resolution_yield_nothing() -> None:
    table = PairTable(window=2, max_pending=10)
    table.add(half("moved_from", 1), "a", 0)
    assert table.add(half("moved_from", 1), "a2", 0) == []  # same id while pending
    (out,) = table.add(half("moved_to", 1), "b", 0)
    assert sorted(t for h in out.halves for t in h.tokens) == ["a", "a2", "b"]
    (late,) = table.add(half("moved_to", 1), "b2", 1)  # after the pair
    assert late.event is None and late.halves[0].tokens == ["b2"]
    assert table.stats.duplicates == 2 and table.stats.paired == 1
    assert table.expire(10) == []


def test_a_flood_of_lone_halves_stays_bounded_and_counts_evictions() -> None:
    table = PairTable(window=60, max_pending=100)
    given_up = []
    for cookie in range(1000):
        given_up += table.add(half("moved_from", cookie), cookie, 0)
    assert len(table) == 100
    assert len(given_up) == 900 and all(o.evicted for o in given_up)
    assert [o.halves[0].event["cookie"] for o in given_up[:3]] == [0, 1, 2]  # oldest first
    assert table.stats.evicted == 900


def test_without_a_cookie_a_half_cannot_wait() -> None:
    table = PairTable(window=2, max_pending=10)
    assert types(table.add(half("moved_from", None), "a", 0)) == ["moved_out"]
    assert table.stats.cookieless == 1


def test_a_reused_cookie_retires_the_older_half() -> None:
    table = PairTable(window=2, max_pending=10)
    table.add(half("moved_from", 1, n=1), "a", 0)
    assert types(table.add(half("moved_from", 1, n=2), "b", 0)) == ["moved_out"]
    (out,) = table.add(half("moved_to", 1), "c", 0)
    assert out.event is not None and out.event["id"] == "h1-moved_from-2+h1-moved_to-1"


def test_unresolve_lets_a_redelivery_count_again() -> None:
    table = PairTable(window=2, max_pending=10)
    table.add(half("moved_from", 1), "a", 0)
    (out,) = table.add(half("moved_to", 1), "b", 0)
    table.unresolve(out)  # its publish failed
    table.add(half("moved_from", 1), "a2", 1)
    assert types(table.add(half("moved_to", 1), "b2", 1)) == ["renamed"]


def test_renamed_id_is_deterministic() -> None:
    a, b = half("moved_from", 5), half("moved_to", 5)
    assert renamed(a, b) == renamed(dict(a), dict(b))


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.integers(0, 30),
    lone=st.lists(st.sampled_from(["moved_from", "moved_to"]), max_size=10),
    dups=st.lists(st.integers(0, 200), max_size=20),
    seed=st.randoms(use_true_random=False),
)
def test_every_half_is_resolved_exactly_once(pairs, lone, dups, seed) -> None:
    halves = [half(k, c) for c in range(pairs) for k in ("moved_from", "moved_to")]
    halves += [half(k, 1000 + i) for i, k in enumerate(lone)]
    halves += [halves[d % len(halves)] for d in dups] if halves else []
    seed.shuffle(halves)
    table = PairTable(window=2, max_pending=1000)
    outcomes = []
    for i, h in enumerate(halves):
        outcomes += table.add(h, i, 0)
    outcomes += table.expire(5)
    published = [o.event for o in outcomes if o.event]
    assert sorted(e["type"] for e in published) == sorted(
        ["renamed"] * pairs + ["moved_out" if k == "moved_from" else "moved_in" for k in lone]
    )
    assert len({e["id"] for e in published}) == len(published)
    settled = sorted(t for o in outcomes for h in o.halves for t in h.tokens)
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
