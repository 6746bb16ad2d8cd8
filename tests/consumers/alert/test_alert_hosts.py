"""The host-health detector (consumers/alert/hosts.py): pure logic, a clock given by the test."""

from __future__ import annotations

from typing import Any

import pytest

from snoopbus.consumers.alert.hosts import HealthConfig, HostHealth
from snoopbus.consumers.forward.alerts import parse_alert
from snoopbus.consumers.lines import format_alert

CFG = HealthConfig(silent_after=3.0, loss_jump=100, loss_window=10.0)


def beat(ts: int, **extra: Any) -> dict[str, Any]:
    return {"v": 1, "host": "ignored", "instance": "i1", "ts": ts, "stalled": False,
            "lost": 0, "interval": 1.0, "version": "0.1.0", **extra}  # fmt: skip


def titles(alerts: list[dict[str, Any]]) -> list[str]:
    return [a["rule"]["title"] for a in alerts]


def test_a_host_that_stops_reporting_is_silent_once_then_back() -> None:
    h = HostHealth(CFG)
    assert h.observe("web1", "heartbeat", beat(1), now=100.0) == []
    assert h.check(102.9) == []
    silent = h.check(103.0)
    assert titles(silent) == ["snoopbus host silent"]
    a = silent[0]
    assert (a["host"], a["level"], a["category"]) == ("web1", "high", "snoopbus_host")
    assert a["fields"]["condition"] == "silent" and a["fields"]["silent_s"] == 3.0
    assert a["fields"]["version"] == "0.1.0" and a["fields"]["last_report_ts"] == 1
    assert h.check(200.0) == []  # once per episode
    assert h.hosts["web1"].state(200.0, CFG.silent_after) == "silent"
    back = h.observe("web1", "heartbeat", beat(2), now=201.0)
    assert titles(back) == ["snoopbus host reporting again"]
    assert back[0]["level"] == "low"
    assert back[0]["fields"]["recovered"] == ["silent"]
    assert back[0]["fields"]["down_s"] == 101.0  # since the last heartbeat
    assert h.hosts["web1"].state(201.0, CFG.silent_after) == "running"
    assert titles(h.check(204.0)) == ["snoopbus host silent"]  # a new episode


def test_the_host_is_the_subject_token_not_the_body() -> None:
    h = HostHealth(CFG)
    h.observe("web1", "heartbeat", beat(1, host="db9"), now=0.0)
    assert set(h.hosts) == {"web1"}
    assert h.check(5.0)[0]["host"] == "web1"


def test_stalled_raises_and_recovers() -> None:
    h = HostHealth(CFG)
    h.observe("web1", "status", {"state": "ready", "ts": 1, "instance": "i1"}, now=0.0)
    stalled = h.observe("web1", "status", beat(2, state="stalled", stalled=True, stalled_s=61.0,
                                               last_error="timeout"), now=1.0)  # fmt: skip
    assert titles(stalled) == ["snoopbus collector stalled"]
    assert stalled[0]["fields"]["stalled_s"] == 61.0
    assert stalled[0]["fields"]["last_error"] == "timeout"
    assert h.observe("web1", "heartbeat", beat(3, stalled=True), now=2.0) == []
    assert h.hosts["web1"].state(2.0, CFG.silent_after) == "stalled"
    back = h.observe("web1", "status", beat(4, state="running"), now=3.0)
    assert titles(back) == ["snoopbus host reporting again"]
    assert back[0]["fields"]["recovered"] == ["stalled"]


def test_a_loss_jump_within_the_window_raises_once_per_window() -> None:
    h = HostHealth(CFG)
    h.observe("web1", "loss", {"ts": 1, "instance": "i1", "total": 10}, now=0.0)
    # +90 within the window: under the threshold of 100
    assert h.observe("web1", "loss", {"ts": 2, "instance": "i1", "total": 100}, now=5.0) == []
    # +95 since the count known 10 s ago (10, at 0 s): still under
    assert h.observe("web1", "loss", {"ts": 3, "instance": "i1", "total": 105}, now=12.0) == []
    jump = h.observe("web1", "loss", {"ts": 4, "instance": "i1", "total": 300}, now=13.0)
    assert titles(jump) == ["snoopbus events lost"]
    assert jump[0]["fields"]["lost"] == 300 and jump[0]["fields"]["rose"] == 290
    assert h.observe("web1", "heartbeat", beat(5, lost=900), now=14.0) == []  # same window
    again = h.observe("web1", "heartbeat", beat(6, lost=2000), now=24.0)
    assert titles(again) == ["snoopbus events lost"]


def test_a_slow_steady_loss_and_a_restarted_count_raise_nothing() -> None:
    h = HostHealth(CFG)
    for i in range(20):  # 50 per 10 s, forever: under 100 in any window
        assert h.observe("web1", "loss", {"ts": i, "instance": "i1", "total": 25 * i},
                         now=5.0 * i) == []  # fmt: skip
    # a new collector instance starts counting at 0, then loses a little
    assert h.observe("web1", "loss", {"ts": 99, "instance": "i2", "total": 3}, now=101.0) == []
    assert h.hosts["web1"].lost == 3


def test_a_clean_stop_is_said_once_and_is_not_silence() -> None:
    h = HostHealth(CFG)
    h.observe("web1", "heartbeat", beat(1), now=0.0)
    stop = h.observe("web1", "status", beat(2, state="stopped"), now=1.0)
    assert titles(stop) == ["snoopbus collector stopped"] and stop[0]["level"] == "medium"
    assert h.check(100.0) == []
    assert h.hosts["web1"].state(100.0, CFG.silent_after) == "stopped"
    back = h.observe("web1", "status", {"state": "ready", "ts": 3, "instance": "i2"}, now=101.0)
    assert back[0]["fields"]["recovered"] == ["stopped"]


def test_silence_off_and_older_reports_ignored() -> None:
    h = HostHealth(HealthConfig(silent_after=0))
    h.observe("web1", "heartbeat", beat(5), now=10.0)
    assert h.check(1e9) == []
    h2 = HostHealth(CFG)
    h2.observe("web1", "heartbeat", beat(5), now=10.0)
    h2.observe("web1", "heartbeat", beat(4, version="old"), now=9.0)  # a late seed
    assert h2.hosts["web1"].last_ts == 5 and h2.hosts["web1"].version == "0.1.0"


def test_health_alerts_read_like_any_alert() -> None:
    """The forwarder (and so every sink) parses them as it parses Sigma alerts."""
    h = HostHealth(CFG)
    h.observe("web1", "heartbeat", beat(1), now=0.0)
    alert = parse_alert(h.check(10.0)[0], "high")
    assert (alert.rule_id, alert.level, alert.host) == ("snoopbus-host-silent", "high", "web1")


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="loss_window"):
        HealthConfig(loss_window=0)


def test_health_alerts_print_as_one_line_about_the_host() -> None:
    h = HostHealth(CFG)
    h.observe("web1", "heartbeat", beat(1), now=0.0)
    line = format_alert(h.check(10.0)[0])
    assert "web1 HIGH     snoopbus host silent: last report 10.0s ago" in line
    back = format_alert(h.observe("web1", "heartbeat", beat(2), now=12.0)[0])
    assert back.endswith("snoopbus host reporting again: down 12.0s, recovered from silent")
