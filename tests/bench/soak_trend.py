"""The soak benchmark's verdicts, from its samples: pure functions, unit-tested.

Growth that does not level off (memory per process: its anonymous RSS, what
a leak grows; RSS for samples that have none). Memory is judged on its
floor: the lowest sample in each window of FLOOR_WINDOW_S (or a twelfth of
the run, if longer). A process that holds a batch and frees it draws a
sawtooth whose peaks wander; a least-squares line through every sample
follows the peaks, but a leak is what the frees leave behind, and that
raises the floor. The floors after the warm-up (the first WARMUP of the run:
imports, caches, the stream's first blocks) are cut in two halves by time,
and each half gets a least-squares slope in MB/hour. A process is
**growing** when, in the last half, all of these hold:
- the slope is over LEAK_MB_PER_H (5 MB/h: 3.6 GB in a month),
- the growth it makes over the last half (slope x its span) is over
  max(MIN_GROWTH_MB, MIN_GROWTH_FRACTION of its mean RSS): a short run's
  noise (an allocator's sawtooth, a batch held before it is written) is not a
  trend,
- it is at least LEVEL_RATIO (half) of the first half's slope: a slope that
  halved is levelling off (reported, not failed).

A run shorter than MIN_RUN_S (10 minutes) is too short to tell a trend
from start-up (nats-server's caches fill as the stream grows from nothing):
its slopes are shown, not judged.

Lag (messages pending or unacknowledged, per durable) is **unbounded** when
it grows as memory does above (LAG_MIN_GROWTH messages over the last half,
at least LEVEL_RATIO of the first half's slope) while the load runs, or when
the durable has not drained to DRAINED_LAG after the load stopped and the
soak's drain time passed.

Loss is **not counted** when the load's events that did not reach the bus
(per type: generated minus delivered) outnumber the loss the collector
counted and reported (loss reports on snoopbus.meta.<host>.loss, summed over
its instances); an event delivered more often than it was generated (a
duplicate, or one the load did not make) fails the accounting too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

WARMUP = 0.1  # of the run, left out of the trends
LEAK_MB_PER_H = 5.0
MIN_GROWTH_MB = 2.0
MIN_GROWTH_FRACTION = 0.02
LEVEL_RATIO = 0.5
LAG_MIN_GROWTH = 1000.0
DRAINED_LAG = 0
MIN_RUN_S = 600.0
FLOOR_WINDOW_S = 300.0

Series = Sequence[tuple[float, float]]  # (seconds since the start, value)


def slope_per_hour(points: Series) -> float:
    """Least-squares slope of value over time, per hour; 0 for fewer than two times."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mt) * (v - mv) for t, v in points) / var * 3600.0


@dataclass(frozen=True)
class Trend:
    first: float  # slope over the first half after the warm-up, per hour
    last: float  # slope over the last half, per hour
    last_span_h: float  # hours the last half spans
    last_mean: float  # mean value over the last half
    run_s: float = 0.0  # seconds the samples span, warm-up included

    @property
    def last_growth(self) -> float:
        return self.last * self.last_span_h

    @property
    def judged(self) -> bool:
        return self.run_s >= MIN_RUN_S

    @property
    def levelling(self) -> bool:
        return self.last < LEVEL_RATIO * self.first


def trend(points: Series, warmup: float = WARMUP) -> Trend:
    """Slopes of the two halves of `points` after the first `warmup` of their time span."""
    if len(points) < 2:
        return Trend(0.0, 0.0, 0.0, points[0][1] if points else 0.0, 0.0)
    t0, t1 = points[0][0], points[-1][0]
    begin = t0 + (t1 - t0) * warmup
    kept = [p for p in points if p[0] >= begin]
    middle = begin + (t1 - begin) / 2
    first = [p for p in kept if p[0] <= middle]
    last = [p for p in kept if p[0] >= middle]
    mean = sum(v for _, v in last) / len(last) if last else 0.0
    span = (last[-1][0] - last[0][0]) / 3600.0 if last else 0.0
    return Trend(slope_per_hour(first), slope_per_hour(last), span, mean, t1 - t0)


def floors(points: Series, window: float = FLOOR_WINDOW_S) -> list[tuple[float, float]]:
    """(middle of the window, lowest value in it) per window of `window` seconds, or of a
    twelfth of the span if that is longer; a run of one window is returned as it is."""
    if len(points) < 2:
        return list(points)
    t0, t1 = points[0][0], points[-1][0]
    width = max(window, (t1 - t0) / 12)
    if t1 - t0 < 2 * width:
        return list(points)
    n = int((t1 - t0) // width)  # windows; a stub at the end joins the last one
    low: dict[int, float] = {}
    for t, v in points:
        i = min(int((t - t0) // width), n - 1)
        low[i] = min(v, low.get(i, v))

    def middle(i: int) -> float:
        return (t0 + i * width + (t1 if i == n - 1 else t0 + (i + 1) * width)) / 2

    return [(middle(i), v) for i, v in sorted(low.items())]


def memory_verdict(name: str, rss_mb: Series) -> tuple[bool, str]:
    """(failed, the line to print) for one process's RSS in MB, judged on its floors."""
    tr = replace(trend(floors(rss_mb)), run_s=rss_mb[-1][0] - rss_mb[0][0] if rss_mb else 0.0)
    floor = max(MIN_GROWTH_MB, MIN_GROWTH_FRACTION * tr.last_mean)
    shown = f"{tr.first:+.1f} then {tr.last:+.1f} MB/h"
    if not tr.judged:
        return False, f"ok   {name}: run too short to judge memory ({shown})"
    if tr.last > LEAK_MB_PER_H and tr.last_growth > floor and not tr.levelling:
        return True, (f"FAIL {name}: memory grows without levelling off ({shown}, "
                      f"+{tr.last_growth:.1f} MB over the last half)")  # fmt: skip
    if tr.last > LEAK_MB_PER_H and tr.last_growth > floor:
        return False, f"ok   {name}: memory growth levels off ({shown})"
    return False, f"ok   {name}: memory flat ({shown})"


def lag_verdict(durable: str, lag: Series, after_drain: int | None) -> tuple[bool, str]:
    """(failed, line) for one durable: `lag` while the load ran, what was left after the drain."""
    tr = trend(lag)
    peak = max((v for _, v in lag), default=0)
    shown = f"peak {peak:.0f}, {tr.first:+.0f} then {tr.last:+.0f} msgs/h"
    if tr.judged and tr.last_growth > LAG_MIN_GROWTH and not tr.levelling:
        return True, f"FAIL {durable}: lag keeps growing ({shown})"
    if after_drain is None or after_drain > DRAINED_LAG:
        return True, f"FAIL {durable}: lag {after_drain} left after the load stopped ({shown})"
    return False, f"ok   {durable}: lag bounded and drained ({shown})"


@dataclass(frozen=True)
class Accounting:
    expected: Mapping[str, int]
    delivered: Mapping[str, int]
    counted_lost: int  # the collector's, host-wide

    @property
    def missing(self) -> int:
        return sum(max(0, n - self.delivered.get(t, 0)) for t, n in self.expected.items())

    @property
    def extra(self) -> int:
        """Delivered beyond what the load generated: duplicates, or events it did not make."""
        return sum(max(0, n - self.expected.get(t, 0)) for t, n in self.delivered.items())

    def verdict(self) -> tuple[bool, str]:
        total = sum(self.expected.values())
        got = sum(self.delivered.values())
        shown = (f"generated {total}, delivered {got}, missing {self.missing}, "
                 f"extra {self.extra}, counted lost {self.counted_lost}")  # fmt: skip
        if self.extra:
            return True, f"FAIL accounting: events delivered that were not generated ({shown})"
        if self.missing > self.counted_lost:
            return True, f"FAIL accounting: loss not counted ({shown})"
        return False, f"ok   accounting: generated = delivered + counted lost ({shown})"
