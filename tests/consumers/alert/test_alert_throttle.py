"""Throttling, the alert map and reading it back (pure, no server)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sigma.rule import SigmaRule

from snoopbus.consumers.alert.alerts import build_alert
from snoopbus.consumers.alert.engine import Engine, Hit
from snoopbus.consumers.alert.matcher import compile_rule
from snoopbus.consumers.alert.throttle import Throttle
from snoopbus.consumers.alert.wire import decode_alert
from snoopbus.consumers.lines import format_alert
from snoopbus.proto import encode_map

RULE = compile_rule(
    SigmaRule.from_yaml("""
title: Tmp exec
id: 5c1d9b7e-2f0a-4c8e-9d51-000000000001
level: low
tags: [attack.execution, attack.t1204.002]
logsource: {product: linux, category: process_creation}
detection:
    selection: {Image|startswith: /tmp/}
    condition: selection
"""),
    "process_creation",
)
ENGINE = Engine([RULE])


def hit(exe: str = "/tmp/a", n: int = 1, host: str = "h") -> Hit:
    event = {"v": 1, "id": f"e-{n}", "ts": n, "host": host, "type": "exec",
             "proc": {"pid": n, "exe": exe, "argv": [exe]}}  # fmt: skip
    (h,) = ENGINE.match(event)
    return h


def test_repeats_fold_until_the_window_closes_then_one_summary() -> None:
    t = Throttle(10.0)
    assert t.admit(hit(n=1), now=0.0)
    assert not t.admit(hit(n=2), now=1.0)
    assert not t.admit(hit(n=3), now=2.0)
    assert t.admit(hit("/tmp/b", n=4), now=2.0)  # another key
    assert t.admit(hit(host="other", n=5), now=2.0)  # another host
    assert t.expire(now=9.9) == []
    (summary,) = t.expire(now=10.0)
    assert summary["count"] == 2 and summary["folded"] is True
    assert (summary["first_ts"], summary["last_ts"]) == (2, 3)
    assert summary["event"]["id"] == "e-3" and summary["id"] == f"{RULE.id}:e-3:folded"
    assert t.folded == 2
    assert t.admit(hit(n=6), now=10.5)  # a new window
    assert t.expire(now=100.0) == []  # nothing repeated in it: no summary


def test_a_repeat_after_the_window_opens_a_new_one_and_keeps_the_old_count() -> None:
    t = Throttle(1.0)
    t.admit(hit(n=1), now=0.0)
    t.admit(hit(n=2), now=0.5)
    assert t.admit(hit(n=3), now=1.5)  # sent: the old window closed
    (summary,) = t.expire(now=1.6)
    assert summary["count"] == 1 and summary["event"]["id"] == "e-2"


def test_zero_window_sends_everything_and_eviction_keeps_counts() -> None:
    assert all(Throttle(0).admit(hit(n=i), now=0.0) for i in range(3))
    t = Throttle(60.0, max_keys=2)
    t.admit(hit("/tmp/a", 1), 0.0)
    t.admit(hit("/tmp/a", 2), 0.0)
    t.admit(hit("/tmp/b", 3), 0.0)
    t.admit(hit("/tmp/c", 4), 0.0)  # evicts /tmp/a, summarising its repeat
    assert [s["event"]["proc"]["exe"] for s in t.expire(0.0)] == ["/tmp/a"]
    assert t.expire(0.0, everything=True) == []


def test_a_flood_of_long_distinct_keys_stays_within_the_byte_bound() -> None:
    t = Throttle(60.0, max_keys=10**9, max_bytes=200_000)
    summaries = 0
    for n in range(2000):  # each its own long command line: its own window
        exe = f"/tmp/{n}-" + "x" * 2000
        t.admit(hit(exe, 2 * n), 0.0)
        t.admit(hit(exe, 2 * n + 1), 0.0)  # a repeat: the window keeps its hit
        assert t.nbytes <= 200_000
        summaries += len(t.expire(0.0))
    assert 0 < len(t._open) < 100  # the oldest closed early...
    assert summaries + len(t.expire(0.0, everything=True)) == 2000  # ...their repeats all told
    assert t.nbytes == 0


@pytest.mark.parametrize("exe", ["/tmp/plain", "/tmp/bad\udcffname"])
def test_alert_round_trips_through_msgpack(exe: str) -> None:
    h = hit(exe)
    alert = build_alert(h)
    back = decode_alert(encode_map(alert))
    assert back == alert
    assert back["rule"]["tags"] == ["attack.execution", "attack.t1204.002"]
    assert back["fields"] == {"Image": exe} and back["selections"] == ["selection"]
    line = format_alert(back)
    assert "LOW      Tmp exec [T1204.002] (selection) pid=1:" in line
    assert "\\xff" in line or "bad" not in exe


def test_format_alert_names_the_file_of_a_file_event() -> None:
    alert: dict[str, Any] = {
        "ts": 0, "host": "h", "level": "high", "rule": {"title": "Sudoers Changed", "tags": []},
        "selections": ["selection"], "count": 3, "folded": True,
        "event": {"type": "close_write", "proc": {"pid": 9, "exe": "/usr/bin/vi"},
                  "file": {"path": "/etc/sudoers"}},
    }  # fmt: skip
    line = format_alert(alert)
    assert line.endswith("pid=9: /usr/bin/vi close_write /etc/sudoers (x3 folded)")


def test_a_rule_that_raises_is_counted_and_the_others_still_match(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom(values: Any, low: Any) -> bool:
        raise TypeError("bug")

    broken = dataclasses.replace(RULE, match=boom, rule=RULE.rule)
    engine = Engine([broken, RULE])
    event = hit().event
    assert [h.rule for h in engine.match(event)] == [RULE]
    engine.match(event)
    assert engine.errors[RULE.id] == 2  # same id: both rules are built from one Sigma rule
    assert len([r for r in caplog.records if "raised on event" in r.getMessage()]) == 1


def test_forget_and_requeue_after_a_failed_send() -> None:
    t = Throttle(10.0)
    opened: list[tuple[Any, ...]] = []
    assert t.admit(hit(n=1), 0.0, opened)
    t.forget(opened)  # publishing that alert failed: the event comes back
    assert t.admit(hit(n=1), 0.1)  # and is sent, not folded
    assert not t.admit(hit(n=2), 0.2)
    (summary,) = t.expire(20.0)
    t.requeue([summary])  # could not be sent either
    assert t.expire(20.5) == [summary]
