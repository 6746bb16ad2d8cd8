"""Benchmark: latency from the kernel's timestamp to a NATS subscriber and to an alert.

    .venv/bin/python -m tests.bench.latency                  # 1k, 10k, 50k events/s
    git worktree add /tmp/lat-before main
    .venv/bin/python -m tests.bench.latency --before /tmp/lat-before   # before/after, one run

Needs root (the collector loads its probes). Starts its own nats-server, a
real collector (watching only the load's folder) and the alert consumer with
one Sigma rule that matches a marker file; then, for each rate, runs
tests/bench/rate_load.c (creat + write + close + unlink, 4 events an
iteration, paced every millisecond; every so often on the marker, ~50
alerts/s) for --seconds, and measures, for every event a plain core
subscriber receives, now - the event's `ts` (the kernel's clock), and for
every alert, now - the alerting event's `ts`. Prints p50/p99/max in ms and
the rate reached. With `--before DIR` the same harness runs the code in DIR
(a checkout of another commit) and this tree's, one after the other, and
prints both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import nats

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import alerts_filter, ensure_stream, events_filter, meta_subject
from tests.bench.forward import code_path

HERE = Path(__file__).resolve().parent
MARK = "snoopbus-latency-mark"
RULE = f"""title: snoopbus latency marker
id: 6d1f2b9e-0a51-4c36-9a3e-3c7e5e2b8f10
status: test
logsource:
    product: linux
    category: file_event
detection:
    selection:
        TargetFilename|endswith: /{MARK}
    condition: selection
level: low
"""
EVENTS_PER_ITERATION = 4  # create, modify, close_write, delete
ALERTS_PER_S = 50
WARMUP_S = 1.0  # events stamped earlier are not counted: the pipeline settles first


def build(work: Path) -> Path:
    exe = work / "rate_load"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("latency: needs a C compiler (apt-get install gcc)")
    subprocess.run([cc, "-O2", "-o", str(exe), str(HERE / "rate_load.c")], check=True)
    return exe


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    values = sorted(values)
    return {"n": len(values), "p50": values[len(values) // 2],
            "p99": values[min(len(values) - 1, int(len(values) * 0.99))], "max": values[-1]}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "snoopbus.app", *args]


async def wait_ready(nc: Any, host: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    sub = await nc.subscribe(meta_subject(host, "status"))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"collector exited:\n{log.read_text()[-2000:]}")
            try:
                msg = await sub.next_msg(timeout=1)
            except nats.errors.TimeoutError:
                continue
            if msgpack.unpackb(msg.data).get("state") == "ready":
                return
        raise SystemExit(f"collector not ready:\n{log.read_text()[-2000:]}")
    finally:
        await sub.unsubscribe()


async def measure(nc: Any, host: str, exe: Path, load: Path, rate: int,
                  seconds: float) -> dict[str, Any]:
    events: list[float] = []
    alerts: list[float] = []
    types: Counter[str] = Counter()
    start_ns = time.time_ns() + int(WARMUP_S * 1e9)

    async def on_events(msg: Any) -> None:
        now = time.time_ns()
        for ev in msgpack.unpackb(msg.data):
            ts = ev.get("ts", 0)
            if ts >= start_ns:
                events.append((now - ts) / 1e6)
                types[ev.get("type", "?")] += 1

    async def on_alert(msg: Any) -> None:
        now = time.time_ns()
        ts = (msgpack.unpackb(msg.data).get("event") or {}).get("ts", 0)
        if ts >= start_ns:
            alerts.append((now - ts) / 1e6)

    subs = [await nc.subscribe(events_filter(host=host), cb=on_events),
            await nc.subscribe(alerts_filter(host=host), cb=on_alert)]
    iterations = rate / EVENTS_PER_ITERATION
    mark_every = max(1, int(iterations / ALERTS_PER_S))
    proc = await asyncio.create_subprocess_exec(
        str(exe), str(load), str(seconds + WARMUP_S), str(iterations), str(mark_every), MARK,
        stdout=subprocess.DEVNULL)  # fmt: skip
    await proc.communicate()
    await asyncio.sleep(2.0)  # the last events and alerts arrive
    for sub in subs:
        await sub.unsubscribe()
    return {"rate": rate, "reached": len(events) / seconds,  # what the subscriber got
            "events": percentiles(events), "alerts": percentiles(alerts), "types": types}


async def bench(rates: list[int], seconds: float) -> list[dict[str, Any]]:
    if os.geteuid() != 0:
        raise SystemExit("latency: run as root (the collector loads eBPF probes)")
    with tempfile.TemporaryDirectory(prefix="snoopbus-lat-") as tmp:
        work = Path(tmp)
        load = work / "load"
        load.mkdir()
        (work / "rules").mkdir()
        (work / "rules" / "mark.yml").write_text(RULE)
        exe = build(work)
        server = NatsServer(state_dir=work / "nats")
        url = server.start()
        procs: list[subprocess.Popen[bytes]] = []
        nc = await nats.connect(url)
        try:
            await ensure_stream(nc.jetstream())
            host = f"lat{secrets.token_hex(3)}"
            log = work / "collector.log"
            with log.open("wb") as f:
                procs.append(subprocess.Popen(
                    cli("collect", "--nats", url, "--host", host, "--include-path", str(load),
                        "--spill-dir", str(work / "spill")), stdout=f, stderr=f))  # fmt: skip
            await wait_ready(nc, host, procs[0], log)
            with (work / "alert.log").open("wb") as f:
                procs.append(subprocess.Popen(
                    cli("consume", "alert", "--nats", url, "--rules", str(work / "rules"),
                        "--throttle", "0"), stdout=f, stderr=f))  # fmt: skip
            js = nc.jetstream()
            for _ in range(300):  # the alerter's durable, bound
                try:
                    await js.consumer_info("SNOOPBUS", "alert")
                    break
                except Exception:
                    await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            return [await measure(nc, host, exe, load, rate, seconds) for rate in rates]
        finally:
            await nc.close()
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            server.stop()


def run_child(tree: Path | None, rates: list[int], seconds: float, work: Path) -> list[dict]:
    env = dict(os.environ)
    here = str(HERE.parents[1])
    env["PYTHONPATH"] = code_path(tree, work) if tree is not None else here
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.latency", "--json", "--seconds", str(seconds),
         "--rates", ",".join(map(str, rates))], env=env, capture_output=True, text=True,
        timeout=1800, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"latency ({tree or 'this tree'}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(label: str, rows: list[dict[str, Any]]) -> None:
    print(f"{label:<7} {'target/s':>9} {'events/s':>10} | {'events p50':>10} {'p99':>7} "
          f"{'max':>7} {'n':>8} | {'alerts p50':>10} {'p99':>7} {'max':>7} {'n':>5}  (ms)")
    for r in rows:
        e, a = r["events"], r["alerts"]
        print(f"{label:<7} {r['rate']:>9,} {r['reached']:>10,.0f} | {e['p50']:>10.1f} "
              f"{e['p99']:>7.1f} {e['max']:>7.1f} {e['n']:>8,} | {a['p50']:>10.1f} "
              f"{a['p99']:>7.1f} {a['max']:>7.1f} {a['n']:>5,}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,10000,50000", help="events/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="per rate, after a 1 s warm-up")
    parser.add_argument("--before", type=Path, metavar="DIR",
                        help="also run the code in DIR (a checkout) and print both")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    if args.json:
        print(json.dumps(asyncio.run(bench(rates, args.seconds))))
        return
    if args.before is None:
        table("after", asyncio.run(bench(rates, args.seconds)))
        return
    with tempfile.TemporaryDirectory(prefix="snoopbus-lat-shim-") as tmp:
        before = run_child(args.before.resolve(), rates, args.seconds, Path(tmp))
        after = run_child(None, rates, args.seconds, Path(tmp))
    print(f"latency, kernel ts -> subscriber / alert; before = {args.before}, after = this tree")
    table("before", before)
    table("after", after)


if __name__ == "__main__":
    main()
