"""The alerter's fast paths against running every rule on every event map.

Engine.match runs only the rules the index (consumers/alert/index.py) cannot
rule out, on records made by generated code; Engine.match_record does the
same from the decoder's typed records. On the packaged rules plus the SigmaHQ
corpus and a mix of events, some made to meet each rule's indexed tests, both
must give exactly the hits of every rule run through its getters.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from snoopbus.consumers.alert.engine import Engine, Hit
from snoopbus.consumers.alert.fields import DEFAULT_FIELD_MAP
from snoopbus.consumers.alert.index import RuleIndex, necessary
from snoopbus.consumers.alert.loader import default_rules_dir, load_rules
from snoopbus.consumers.alert.logsources import EVENT_TYPES
from snoopbus.consumers.alert.values import Lowered, Values
from snoopbus.proto import decode_batch, decode_records, encode_batch
from tests.bench.alerter import CORPUS, iter_events
from tests.support import sigma_corpus

RULES = load_rules([default_rules_dir(), CORPUS]).rules if CORPUS.is_dir() else []


class EveryRule(Engine):
    """The reference: each getter on its own, every rule of the category, in order."""

    def match(self, event: Any) -> list[Hit]:
        hits: list[Hit] = []
        if event.get("ret", 0) < 0:
            return hits
        for category in self._by_type.get(event.get("type", ""), ()):
            values: Values = {}
            low: Lowered = {}
            for name, get in category.getters:
                value = get(event)
                if value is not None:
                    values[name] = value
                    low[name] = value.lower() if isinstance(value, str) else str(value).lower()
            for rule in category.rules:
                if rule.match(values, low):
                    hits.append(Hit(rule, event, values, rule.matched_selections(values, low)))
        return hits


def summary(hits: list[Hit]) -> list[tuple[str, list[str], dict[str, Any], str]]:
    return [(h.rule.id, h.selections, h.values, h.event["id"]) for h in hits]


def targeted_events(seed: int = 3) -> Iterator[dict[str, Any]]:
    """Events whose fields meet the indexed tests of the rules, one or two at a time."""
    rng = random.Random(seed)
    atoms = [(rule.category, atom) for rule in RULES for atom in rule.needs or ()]
    paths = {cat: {f: spec for f, spec in fields.items() if "(" not in spec}
             for cat, fields in DEFAULT_FIELD_MAP.items()}  # fmt: skip
    for n in range(3 * len(atoms)):
        chosen = [rng.choice(atoms)]
        chosen += [a for a in atoms if a[0] == chosen[0][0] and rng.random() < 2 / len(atoms)]
        category = chosen[0][0]
        type_ = EVENT_TYPES[category][0]
        ev: dict[str, Any] = {
            "v": 1, "id": f"t-{n}", "ts": 1_700_000_000_000_000_000 + n, "host": "h1",
            "type": type_, "proc": {"pid": 1, "exe": "/usr/bin/true", "argv": ["true"]},
        }  # fmt: skip
        if category != "process_creation":
            ev["file"] = {"path": "/tmp/x"}
        for _, (kind, field, const) in chosen:
            spec = paths[category].get(field)
            if spec is None:
                continue
            value = {"in": const, "pre": const + "/x", "suf": "/opt/x" + const,
                     "sub": "a " + const + " b"}[kind]  # fmt: skip
            if rng.random() < 0.5:
                value = value.upper()  # Sigma matches case-insensitively
            within, key = spec.split(".")
            ev.setdefault(within, {})[key] = [value] if key.endswith("argv") else value
        yield ev


def test_indexed_matching_gives_every_hit_of_running_every_rule() -> None:
    sigma_corpus.require()
    fast, reference = Engine(RULES), EveryRule(RULES)
    events = list(iter_events(4000, seed=5)) + list(targeted_events())
    hits = 0
    skipped = ran = 0
    for i in range(0, len(events), 50):
        batch = events[i : i + 50]
        data = encode_batch(batch)
        records = decode_records(data)
        assert records is not None
        for event, record in zip(decode_batch(data), records, strict=True):
            want = summary(reference.match(event))
            assert summary(fast.match(event)) == want, event
            assert summary(fast.match_record(record)) == want, event
            hits += len(want)
            for category in fast._by_type.get(event["type"], ()):
                _, low = category.record(event)
                ran += len(category.index.candidates(low))
                skipped += len(category.rules)
    assert not fast.errors and not reference.errors
    assert hits > 500, "the mix meets many rules"
    assert ran < skipped / 4, "the index runs a fraction of the rules"


def test_a_rule_with_no_necessary_test_runs_on_every_event() -> None:
    index = RuleIndex([None, [("suf", "Image", "/nc")], [("sub", "CommandLine", " -e ")]])
    assert list(index.candidates({})) == [0]
    assert list(index.candidates({"Image": "/usr/bin/nc"})) == [0, 1]
    assert list(index.candidates({"Image": "/usr/bin/ncat"})) == [0]
    assert list(index.candidates({"CommandLine": "nc -e /bin/sh", "Image": "/bin/nc"})) == [0, 1, 2]


def test_necessary_tests_follow_and_or_not() -> None:
    from snoopbus.consumers.alert.values import _direct, all_of, any_of, not_

    a = _direct("Image", "suf", ("/nc",))
    b = _direct("CommandLine", "sub", (" -e ", " -c "))
    c = _direct("User", "in", frozenset({"root"}))
    assert necessary(all_of([a, b])) == [("suf", "Image", "/nc")]  # the cheaper child
    assert sorted(necessary(any_of([a, c])) or []) == [("in", "User", "root"),
                                                       ("suf", "Image", "/nc")]  # fmt: skip
    assert necessary(any_of([a, not_(c)])) is None  # one branch needs nothing
    assert necessary(not_(a)) is None
    assert necessary(_direct("Image", "sub", ("",))) is None  # "" is in every value


def test_text_that_is_not_utf8_is_scanned_too() -> None:
    index = RuleIndex([[("sub", "CommandLine", f"needle{i}")] for i in range(20)])
    low = {"CommandLine": "x \udcff needle7 needle12"}
    assert list(index.candidates(low)) == [1, 7, 12]  # "needle1" is in "needle12"


def _messages(events: list[dict[str, Any]], size: int = 50) -> Iterator[list[Any]]:
    for i in range(0, len(events), size):
        records = decode_records(encode_batch(events[i : i + size]))
        assert records is not None
        yield records


def test_kept_outcomes_give_the_hits_of_matching_afresh(monkeypatch: Any) -> None:
    """A record key's matches are kept (bounded): a repeat, a key pushed out
    and matched again, and a new key all give the reference's hits."""
    sigma_corpus.require()
    import snoopbus.consumers.alert.engine as engine_module

    monkeypatch.setattr(engine_module, "SEEN_MAX", 16)  # evictions within the mix
    fast, reference = Engine(RULES), EveryRule(RULES)
    events = list(iter_events(1500, seed=11)) + list(targeted_events())[:300]
    events += events  # every key again, most of them pushed out meanwhile
    got = [h for records in _messages(events) for h in fast.match_records(records)]
    want = [h for event in events for h in reference.match(event)]
    assert summary(got) == summary(want)
    assert len(want) > 200
    for category in fast.categories.values():
        assert len(category.seen) <= 16
        assert category.seen_bytes == sum(o[3] for o in category.seen.values())


def test_a_rule_that_raises_is_counted_per_event_when_its_outcome_is_kept() -> None:
    sigma_corpus.require()
    from dataclasses import replace

    def broken(values: Values, low: Lowered) -> bool:
        raise ValueError("broken")

    first = next(i for i, r in enumerate(RULES) if r.category == "process_creation")
    rules = list(RULES)
    rules[first] = replace(rules[first], match=broken, needs=None)
    engine = Engine(rules)
    execs = [e for e in iter_events(400, seed=2) if e["type"] == "exec"][:60]
    for records in _messages(execs, size=20):
        engine.match_records(records)
    assert engine.errors == {rules[first].id: 60}  # each event, though most were repeats
