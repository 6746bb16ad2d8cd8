"""The soak's table and verdicts, from its results (a dict, as --samples writes it)."""

from __future__ import annotations

from typing import Any

from tests.bench.soak_trend import (
    Accounting,
    floors,
    lag_verdict,
    memory_verdict,
    slope_per_hour,
    trend,
)

SILENT = ("load",)  # sampled and shown, but not judged


def report(r: dict[str, Any]) -> tuple[bool, str]:
    """(failed, the text to print)."""
    seconds = float(r["load_seconds"]) or 1.0
    load = r.get("load", {})
    failed = False
    ops = sum(load.get("done", {}).values())
    lines = [f"\nsoak: {seconds:.0f}s of load at {r['rate']:g} ops/s asked, "
             f"{ops / seconds:.0f} done (done {load.get('done')}, failed {load.get('failed')})",
             f"{'process':<12} {'pids':>5} {'RSS start':>10} {'end':>8} {'peak':>8} "
             f"{'MB/h 1st':>9} {'MB/h 2nd':>9} {'anon end':>9} {'MB/h 1st':>9} {'MB/h 2nd':>9} "
             f"{'CPU %':>6}"]  # fmt: skip
    verdicts: list[str] = []
    for name, p in r["processes"].items():
        rss = [tuple(x) for x in p["rss_mb"]]
        if not rss:
            if name not in SILENT:
                failed = True
                verdicts.append(f"FAIL {name}: never sampled (not running?)")
            continue
        # Judged on anonymous memory (what a leak grows) where it was sampled;
        # samples from before it was, on RSS.
        anon = [tuple(x) for x in p.get("anon_mb", [])]
        tt, ta = trend(floors(rss)), trend(floors(anon))  # as the verdict judges them
        cpu = float(p["cpu_s"]) / seconds * 100
        shown = f"{anon[-1][1]:>9.1f} {ta.first:>+9.1f} {ta.last:>+9.1f}" if anon else f"{'-':>29}"
        lines.append(f"{name:<12} {len(p['pids']):>5} {rss[0][1]:>10.1f} {rss[-1][1]:>8.1f} "
                     f"{max(v for _, v in rss):>8.1f} {tt.first:>+9.1f} {tt.last:>+9.1f} "
                     f"{shown} {cpu:>6.1f}")  # fmt: skip
        if name in SILENT:
            continue
        bad, line = memory_verdict(name, anon or rss)
        verdicts.append(line)
        if len(p["pids"]) > 1:
            bad = True
            verdicts.append(f"FAIL {name}: restarted {len(p['pids']) - 1} times "
                            f"(pids {p['pids']})")  # fmt: skip
        failed |= bad
    lines.append(f"\n{'durable':<12} {'peak lag':>9} {'after drain':>12} {'missed':>7}")
    missed = r.get("missed", {})
    for name, series in r["lag"].items():
        peak = max((v for _, v in series), default=0)
        left = r["after_drain"].get(name)
        lines.append(f"{name:<12} {peak:>9.0f} {left!s:>12} {missed.get(name, 0):>7}")
        bad, line = lag_verdict(name, [tuple(x) for x in series], left)
        verdicts.append(line)
        failed |= bad
    sb = [tuple(x) for x in r["stream_mb"]]
    spill = max((v for _, v in r["spill_mb"]), default=0.0)
    if sb:
        lines.append(f"\nstream: {sb[0][1]:.1f} -> {sb[-1][1]:.1f} MB "
                     f"({slope_per_hour(sb):+.0f} MB/h), {r['messages']} messages; "
                     f"spill peak {spill:.1f} MB")  # fmt: skip
    lines += [f"stream warning: {w}" for w in r.get("warnings", [])]
    if r.get("loadavg"):  # others' work on a shared machine: read the figures with it
        la = [v for _, v in r["loadavg"]]
        lines.append(f"host load average (1 min) over the load: mean {sum(la) / len(la):.1f}, "
                     f"max {max(la):.1f}, on {r.get('cpus')} CPUs")
    expected = {k: int(v) for k, v in load.get("expected", {}).items()}
    delivered = {k: int(v) for k, v in r["delivered"].items()}
    acc = Accounting(expected, delivered, int(r["collector_lost"]))
    bad, line = acc.verdict()
    verdicts.append(line)
    failed |= bad
    if load.get("failed"):
        failed = True
        verdicts.append(f"FAIL load: operations failed: {load.get('first_error')}")
    lines.append(f"events per type: generated {dict(sorted(expected.items()))}")
    lines.append(f"                 delivered {dict(sorted(delivered.items()))}")
    lines.append(f"loss counted: collector {r['collector_lost']}, consumers missed "
                 f"{sum(missed.values())}; load {sum(expected.values()) / seconds:.0f} events/s")
    if r.get("failed_reads"):
        lines.append(f"stream not read at {len(r['failed_reads'])} samples "
                     f"(first: {r['failed_reads'][0]})")
    if r.get("count_restarts"):
        lines.append(f"the soak's count started over {len(r['count_restarts'])} times "
                     f"(exact still; first: {r['count_restarts'][0]})")
    text = "\n".join(lines) + "\n\n" + "\n".join(verdicts)
    return failed, text + ("\nsoak: FAILED" if failed else "\nsoak: passed")
