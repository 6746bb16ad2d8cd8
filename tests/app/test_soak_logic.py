"""The soak benchmark's pure parts: trends, verdicts, accounting, its load's bookkeeping."""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.bench.soak import duration
from tests.bench.soak_load import CYCLE, EVENTS_PER_OP, Load, expected_events, run
from tests.bench.soak_report import report
from tests.bench.soak_trend import (
    Accounting,
    floors,
    lag_verdict,
    memory_verdict,
    slope_per_hour,
    trend,
)

HOUR = 3600.0


def series(f: Any, seconds: float = HOUR, every: float = 10.0) -> list[tuple[float, float]]:
    n = int(seconds / every) + 1
    return [(i * every, float(f(i * every))) for i in range(n)]


def test_slope_is_per_hour_and_exact_on_a_line() -> None:
    assert slope_per_hour(series(lambda t: 100 + 12 * t / HOUR)) == pytest.approx(12.0)
    assert slope_per_hour(series(lambda t: 7.0)) == 0.0
    assert slope_per_hour([(5.0, 1.0)]) == 0.0
    assert slope_per_hour([(5.0, 1.0), (5.0, 9.0)]) == 0.0  # no time elapsed: no slope


def test_trend_leaves_out_the_warm_up() -> None:
    # A jump in the first 10 % (imports, caches), flat after: both halves flat.
    tr = trend(series(lambda t: 50.0 if t < 300 else 200.0))
    assert tr.first == pytest.approx(0.0) and tr.last == pytest.approx(0.0)
    assert tr.last_mean == pytest.approx(200.0)
    assert tr.last_span_h == pytest.approx(0.45, abs=0.01)


def test_a_steady_leak_fails() -> None:
    bad, line = memory_verdict("archive", series(lambda t: 200 + 20 * t / HOUR))
    assert bad and line.startswith("FAIL archive") and "+20.0 then +20.0 MB/h" in line


def test_growth_that_starts_late_fails() -> None:
    bad, _ = memory_verdict("x", series(lambda t: 100 + max(0.0, t - 1800) / HOUR * 40))
    assert bad


def test_growth_that_levels_off_passes_and_says_so() -> None:
    # Towards a ceiling (caches filling): the last half's slope is under half the first's.
    grow = series(lambda t: 50 + 200 * (1 - math.exp(-t / 900)))
    bad, line = memory_verdict("nats-server", grow)
    assert not bad and "levels off" in line
    # A square root slows too, but not enough to call it bounded within an hour.
    assert memory_verdict("nats-server", series(lambda t: 50 + 300 * math.sqrt(t / HOUR)))[0]


def test_noise_and_a_sawtooth_are_not_a_trend() -> None:
    # The archive holds a batch before it writes it: +-10 MB teeth every 5 minutes.
    bad, line = memory_verdict("archive", series(lambda t: 250 + 10 * ((t % 300) / 300)))
    assert not bad and "flat" in line
    # Within its floor (2 % of its RSS over the last half): not judged a leak.
    bad, _ = memory_verdict("alert", series(lambda t: 56 + 2 * t / HOUR))
    assert not bad


def test_a_sawtooth_whose_peaks_wander_is_judged_on_its_floor() -> None:
    # The archive in soak6: anonymous memory back to ~75 MB after every write, peaks
    # 85-95 MB, the high ones late. A line through every sample reads a leak.
    def teeth(t: float) -> float:
        peak = 10.0 if t < 2400 else 20.0
        return 75 + peak * ((t % 180) / 180)

    raw = series(teeth)
    assert trend(raw).last > 5.0  # what the verdict read before it judged floors
    bad, line = memory_verdict("archive", raw)
    assert not bad and "flat" in line, line
    # The same teeth on a floor that rises 20 MB/h: a leak under the noise.
    bad, line = memory_verdict("archive", series(lambda t: teeth(t) + 20 * t / HOUR))
    assert bad and "grows without levelling off" in line, line


def test_floors_are_the_lowest_sample_of_each_window() -> None:
    pts = series(lambda t: 100 - t / 100, seconds=1800)  # a sample every 10 s
    low = floors(pts, window=600)
    # 0-590 s, 600-1190 s, and 1200-1800 s: the last sample joins the last window.
    assert low == [(300.0, 94.1), (900.0, 88.1), (1500.0, 82.0)]
    assert floors(pts[:5], window=600) == pts[:5]  # under two windows: kept as they are
    # An hour in windows of a twelfth: twelve floors.
    assert len(floors(series(lambda t: 1.0), window=60)) == 12


def test_a_short_run_is_not_judged_for_trends_but_must_drain() -> None:
    short = series(lambda t: 20 + t, seconds=60, every=1)  # +3600 MB/h: start-up
    bad, line = memory_verdict("nats-server", short)
    assert not bad and "too short to judge" in line
    assert not lag_verdict("archive", short, after_drain=0)[0]
    assert lag_verdict("archive", short, after_drain=3)[0]


def test_a_leak_under_the_floor_passes() -> None:
    assert not memory_verdict("up", series(lambda t: 48 + 3 * t / HOUR))[0]  # 3 MB/h


def test_lag_that_keeps_growing_fails_even_if_it_drains() -> None:
    bad, line = lag_verdict("archive", series(lambda t: 10 * t), after_drain=0)
    assert bad and "keeps growing" in line


def test_bounded_lag_that_drains_passes() -> None:
    bad, line = lag_verdict("alert", series(lambda t: 500 + 400 * math.sin(t / 60)), 0)
    assert not bad and "bounded and drained" in line


def test_lag_left_after_the_drain_fails() -> None:
    assert lag_verdict("rename", series(lambda t: 5.0), after_drain=12)[0]
    assert lag_verdict("rename", series(lambda t: 5.0), after_drain=None)[0]  # never read


def test_accounting_holds_when_every_missing_event_is_counted() -> None:
    expected = {"create": 100, "delete": 50}
    assert not Accounting(expected, dict(expected), 0).verdict()[0]
    ok = Accounting(expected, {"create": 97, "delete": 50}, counted_lost=3)
    assert ok.missing == 3 and not ok.verdict()[0]


def test_accounting_fails_on_loss_not_counted() -> None:
    acc = Accounting({"create": 100, "exec": 10}, {"create": 95}, counted_lost=4)
    assert acc.missing == 15
    bad, line = acc.verdict()
    assert bad and "loss not counted" in line


def test_accounting_fails_on_duplicates() -> None:
    acc = Accounting({"create": 100}, {"create": 101}, counted_lost=1000)
    assert acc.extra == 1 and acc.verdict()[0]
    assert Accounting({"create": 1}, {"create": 1, "attrib": 1}, 0).verdict()[0]


def test_one_cycle_makes_the_events_it_declares_and_leaves_nothing(tmp_path: Path) -> None:
    load = Load(tmp_path, "soak-test")
    for _ in range(2 * len(CYCLE)):
        load.step()
    assert not load.failed, load.first_error
    assert load.done == Counter({"exec": 4, "write": 6, "rename": 6, "delete": 4})
    assert sum(expected_events(load.done).values()) == 2 * 19
    assert expected_events(Counter({"write": 2})) == Counter(
        {"create": 2, "modify": 2, "close_write": 2})
    assert not list((tmp_path / "src").iterdir()) and not list((tmp_path / "obj").iterdir())
    assert set(EVENTS_PER_OP) == {op for op, _, _ in CYCLE}


def test_the_load_ends_on_time_even_when_it_cannot_keep_up(tmp_path: Path) -> None:
    # A rate no machine reaches: always behind, it must still stop at the end.
    t0 = time.monotonic()
    out = run(tmp_path, seconds=0.5, rate=1e6, marker="soak-test")
    took = time.monotonic() - t0
    assert 0.5 <= took < 5, took
    done = out["done"]
    assert isinstance(done, dict) and sum(done.values()) % len(CYCLE) == 0  # whole cycles
    assert out["failed"] == {}
    assert not list((tmp_path / "src").iterdir()) and not list((tmp_path / "obj").iterdir())


def test_durations() -> None:
    assert duration("1h") == 3600 and duration("90m") == 5400 and duration("20s") == 20
    assert duration("1h30m") == 5400 and duration("2.5") == 2.5
    for bad in ("", "1d", "h", "1h 2m", "-3"):
        with pytest.raises(argparse.ArgumentTypeError):
            duration(bad)


def results(**over: Any) -> dict[str, Any]:
    flat = series(lambda t: 100.0)
    r: dict[str, Any] = {
        "rate": 200.0, "load_seconds": HOUR,
        "load": {"expected": {"create": 10}, "done": {"write": 10}, "failed": {}},
        "processes": {n: {"pids": [1], "rss_mb": flat, "cpu_s": 36.0}
                      for n in ("up", "nats-server", "collector", "archive")},
        "stream_mb": series(lambda t: t / 10), "messages": 99, "spill_mb": [(0.0, 0.0)],
        "lag": {"archive": series(lambda t: 50.0)}, "missed": {"archive": 0},
        "after_drain": {"archive": 0}, "warnings": [],
        "delivered": {"create": 10}, "collector_lost": 0,
        "loadavg": [(0.0, 1.0), (10.0, 3.0)], "cpus": 2,
    }  # fmt: skip
    r.update(over)
    return r


def test_report_passes_a_quiet_run_and_shows_the_figures() -> None:
    failed, text = report(results())
    assert not failed, text
    assert text.endswith("soak: passed")
    assert "collector" in text and "1.0" in text  # CPU %: 36 s over an hour
    assert "stream: 0.0 -> 360.0 MB (+360 MB/h)" in text
    assert "load average (1 min) over the load: mean 2.0, max 3.0, on 2 CPUs" in text


def test_report_fails_a_restart_a_missing_process_a_leak_and_a_loss() -> None:
    r = results()
    r["processes"]["alert"] = {"pids": [], "rss_mb": [], "cpu_s": 0.0}
    r["processes"]["collector"]["pids"] = [1, 2]
    r["processes"]["archive"]["rss_mb"] = series(lambda t: 100 + 30 * t / HOUR)
    r["delivered"] = {"create": 9}
    failed, text = report(r)
    assert failed and text.endswith("soak: FAILED")
    fails = [ln for ln in text.splitlines() if ln.startswith("FAIL")]
    assert [f.split(":")[0] for f in fails] == [
        "FAIL collector", "FAIL archive", "FAIL alert", "FAIL accounting"], fails


def test_memory_is_judged_on_anonymous_pages_when_sampled() -> None:
    # RSS that grows by file pages (libraries, the page cache) is no leak;
    # anonymous memory that grows is, whatever RSS shows.
    r = results()
    r["processes"]["archive"]["rss_mb"] = series(lambda t: 100 + 30 * t / HOUR)
    r["processes"]["archive"]["anon_mb"] = series(lambda t: 60.0)
    failed, text = report(r)
    assert not failed, text
    assert "ok   archive: memory flat" in text
    r["processes"]["collector"]["anon_mb"] = series(lambda t: 60 + 30 * t / HOUR)
    failed, text = report(r)
    assert failed and "FAIL collector: memory grows" in text
