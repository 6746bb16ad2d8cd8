"""Benchmark: the highest rate of the unique-file mix the collector takes with zero loss.

    .venv/bin/python -m tests.bench.file_rate [--seconds 5] [--steps 4] [--cpu 1]
                                              [--before DIR]

The load of tests.bench.file_ops (each iteration creates a new file, writes,
closes, renames and unlinks it: 5 operations, 6 events) on one CPU, with the
collector alone (a private nats-server, no consumers) free to run on the
others. First at full speed; when anything is lost there, the load is paced
(file_load.c's RATE) and the rate bisected between 0 and the full-speed one
for --steps more runs. A run is clean when every one of its events is in the
stream and the collector counted nothing lost. Prints each run, then the
highest clean rate in file ops/s and events/s, and the bare full-speed rate
beside it. With --before DIR (a checkout), the same search for DIR's
collector follows in the same run. Needs root.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from tests.bench.file_ops import (
    EVENTS_PER_ITER,
    OPS_PER_ITER,
    Run,
    build,
    file_load,
    load,
    with_collector,
)


def clean(run: Run) -> bool:
    return not run.lost.get("total") and run.delivered == run.iterations * EVENTS_PER_ITER


def describe(run: Run, asked: float | None) -> str:
    pace = "full speed" if asked is None else f"paced at {asked * OPS_PER_ITER:,.0f} ops/s"
    return (f"  {pace:<26} {run.ops_per_s:>10,.0f} ops/s  "
            f"{run.delivered} / {run.iterations * EVENTS_PER_ITER} events in the stream, "
            f"{run.lost.get('total', 0)} records counted lost"
            f"{'  clean' if clean(run) else ''}")


def search(exe: Path, work: Path, tmp: Path, seconds: float, cpu: int, steps: int,
           tree: Path | None) -> Run | None:
    """The fastest clean run of the search (None: none was clean)."""
    def watched(rate: float) -> Run:
        return asyncio.run(with_collector(file_load(exe, work, seconds, cpu, rate), tmp, tree))

    full = watched(0)
    print(describe(full, None), flush=True)
    if clean(full):
        return full
    best: Run | None = None
    lo, hi = 0.0, full.iterations / full.seconds  # iterations/s: lo clean, hi not
    for _ in range(steps):
        mid = (lo + hi) / 2
        run = watched(mid)
        print(describe(run, mid), flush=True)
        if clean(run):
            lo = mid
            if best is None or run.ops_per_s > best.ops_per_s:
                best = run
        else:
            hi = mid
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="each load's length")
    parser.add_argument("--steps", type=int, default=4,
                        help="paced runs of the bisection when full speed loses events")
    parser.add_argument("--cpu", type=int, default=1, help="CPU the load runs on")
    parser.add_argument("--before", type=Path, default=None,
                        help="a checkout whose collector is searched too, after this one")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("file_rate: needs root (it loads the collector's probes)")
    with tempfile.TemporaryDirectory(prefix="snoopbus-file-rate-") as tmp_s:
        tmp = Path(tmp_s)
        work = tmp / "work"
        work.mkdir()
        exe = build(tmp)
        print(f"file_rate: {args.seconds:g} s per load on CPU {args.cpu}, {OPS_PER_ITER} ops "
              f"and {EVENTS_PER_ITER} events per iteration")
        bare_before = load(exe, work, args.seconds, args.cpu)
        trees: list[tuple[str, Path | None]] = [("collector", None)]
        if args.before is not None:
            trees.append(("collector (before)", args.before))
        results = []
        for name, tree in trees:
            print(f"{name}:", flush=True)
            results.append((name, search(exe, work, tmp, args.seconds, args.cpu, args.steps,
                                         tree)))
        bare_after = load(exe, work, args.seconds, args.cpu)
    # Bare: before and after the searches, the machine's speed drifts.
    bare = (bare_before[0] + bare_after[0]) * OPS_PER_ITER / (bare_before[1] + bare_after[1])
    print(f"bare full speed (mean of a load before and one after): {bare:,.0f} ops/s")
    for name, best in results:
        if best is None:
            print(f"{name}: no run without loss")
        else:
            events = best.ops_per_s * EVENTS_PER_ITER / OPS_PER_ITER
            print(f"{name}: highest rate with zero loss {best.ops_per_s:,.0f} ops/s "
                  f"({events:,.0f} events/s, {best.ops_per_s / bare:.2f} of bare full speed)")


if __name__ == "__main__":
    main()
