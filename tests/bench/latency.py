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
the rate reached: what the load made (the machine may not allow the target:
the table says so) and what the subscriber got, with events per message.
For this tree's collector it also prints, per stage, where each message's
oldest event spent its time (collector/stagetrace.py: kernel ts -> ring
drain -> built -> cut into a message -> handed to nats-py -> received here),
this subscriber's own loop lag, and how long each process (collector,
nats-server, alerter, this bench) sat runnable waiting for a CPU, per
second of load: on a shared machine that wait, not batching, is the tail.
With `--archive-roll S` (default 5; 0: off) the archive
consumer runs too, rolling its Parquet files every S seconds: a watcher notes
when each file appears in its final place (queryable: DuckDB and pyarrow read
it from then on), and each row's visibility is that moment - the event's `ts`,
which the roll interval bounds (printed in seconds). With `--before DIR` the
same harness runs the code in DIR (a checkout of another commit) and this
tree's, one after the other (`--rounds N`: N times, alternately), and prints
each.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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
from snoopbus.proto.msgid import ID_HEADER
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
# collector/stagetrace.py's variable, spelled here: a --before tree may not have that module
TRACE_ENV = "SNOOPBUS_LATENCY_TRACE"
WATCH_EVERY_S = 0.05  # the archive watcher's polling period: the resolution of visibility


def build(work: Path) -> Path:
    exe = work / "rate_load"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("latency: needs a C compiler (apt-get install gcc)")
    subprocess.run([cc, "-O2", "-o", str(exe), str(HERE / "rate_load.c")], check=True)
    return exe


def run_delay(pids: dict[str, int]) -> dict[str, int]:
    """ns each process's threads have spent runnable but waiting for a CPU
    (/proc/<pid>/task/*/schedstat, field 2): the machine's share of a latency."""
    out: dict[str, int] = {}
    for name, pid in pids.items():
        total = 0
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(stat.read_text().split()[1])
            except (OSError, IndexError, ValueError):
                pass  # a thread that ended meanwhile
        out[name] = total
    return out


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


class ArchiveWatch:
    """When each archive file became visible in its final place, and its rows' `ts`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rows: list[tuple[int, int]] = []  # (event ts, visible at), ns
        self._seen: set[Path] = set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.scan()
            try:
                await asyncio.wait_for(stop.wait(), WATCH_EVERY_S)
            except TimeoutError:
                pass
        self.scan()

    def scan(self) -> None:
        import pyarrow.parquet as pq  # the archive extra: only when the archive runs

        for path in sorted((self.root / "events").glob("*/*/*.parquet")):
            if path in self._seen:
                continue
            seen = time.time_ns()
            self._seen.add(path)
            ts = pq.read_table(path, columns=["ts"]).column("ts").cast("int64").to_pylist()
            self.rows += [(t, seen) for t in ts]

    def between(self, start_ns: int, end_ns: int) -> list[float]:
        """Visibility in seconds of the rows whose event falls in [start, end)."""
        return [(seen - ts) / 1e9 for ts, seen in self.rows if start_ns <= ts < end_ns]


async def measure(nc: Any, host: str, exe: Path, load: Path, rate: int,
                  seconds: float, pids: dict[str, int], archive: ArchiveWatch | None = None,
                  roll: float = 0.0) -> dict[str, Any]:
    events: list[float] = []
    alerts: list[float] = []
    types: Counter[str] = Counter()
    # per message received: (Nats-Msg-Id, received at, its oldest event's ts), for stages()
    received: list[tuple[str, int, int]] = []
    start_ns = time.time_ns() + int(WARMUP_S * 1e9)

    async def on_events(msg: Any) -> None:
        now = time.time_ns()
        oldest = 0
        for ev in msgpack.unpackb(msg.data):
            ts = ev.get("ts", 0)
            if ts >= start_ns:
                events.append((now - ts) / 1e6)
                types[ev.get("type", "?")] += 1
                oldest = min(oldest, ts) if oldest else ts
        if oldest and msg.headers:
            received.append((msg.headers.get(ID_HEADER, ""), now, oldest))

    async def on_alert(msg: Any) -> None:
        now = time.time_ns()
        ts = (msgpack.unpackb(msg.data).get("event") or {}).get("ts", 0)
        if ts >= start_ns:
            alerts.append((now - ts) / 1e6)

    lags: list[float] = []  # this process's loop: how late a 1 ms sleep wakes (ms)

    async def watch_lag() -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.001)
            lags.append((loop.time() - t - 0.001) * 1e3)

    lag_task = asyncio.create_task(watch_lag())
    gc.freeze()  # this process's own pauses are not the pipeline's: none while measuring
    gc.disable()
    subs = [await nc.subscribe(events_filter(host=host), cb=on_events),
            await nc.subscribe(alerts_filter(host=host), cb=on_alert)]
    iterations = rate / EVENTS_PER_ITERATION
    mark_every = max(1, int(iterations / ALERTS_PER_S))
    waited_from = run_delay(pids)
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        str(exe), str(load), str(seconds + WARMUP_S), str(iterations), str(mark_every), MARK,
        stdout=subprocess.PIPE)  # fmt: skip
    out, _ = await proc.communicate()
    end_ns = time.time_ns()
    done, took = out.split()  # iterations made, in seconds
    waited = {name: (ns - waited_from[name]) / 1e6 / (time.monotonic() - began)
              for name, ns in run_delay(pids).items()}  # fmt: skip
    # The last events and alerts arrive; with the archive, its last file rolls.
    await asyncio.sleep(2.0 + (roll + 1.0 if archive is not None else 0.0))
    for sub in subs:
        await sub.unsubscribe()
    lag_task.cancel()
    gc.enable()
    visible = archive.between(start_ns, end_ns) if archive is not None else []
    window = (end_ns - start_ns) / 1e9  # the load's time after the warm-up
    return {"rate": rate, "made": int(done) * EVENTS_PER_ITERATION / float(took),
            "reached": len(events) / window,  # what the subscriber got
            "per_msg": len(events) / max(1, len(received)),
            "events": percentiles(events), "alerts": percentiles(alerts), "types": types,
            "archive": percentiles(visible), "roll": roll, "received": received,
            "lag": percentiles(lags), "waited": waited}


STAGES = ("ring", "build", "buffer", "queue", "bus")


def stages(received: list[tuple[str, int, int]], trace: dict[str, list[int]]) -> dict[str, Any]:
    """Per message, its oldest event's time in each stage (ms): kernel ts -> drain
    start (ring), -> built (build), -> cut into a message (buffer), -> handed to
    nats-py (queue), -> received here (bus: nats-py, the server, this subscriber);
    percentiles of each, and each stage's mean share of the slowest 1% of messages."""
    rows: list[tuple[float, ...]] = []
    for msg_id, got, ts in received:
        t = trace.get(msg_id)
        if t is None:
            continue
        read, built, cut, handed = t
        rows.append(tuple((b - a) / 1e6 for a, b in
                          ((ts, read), (read, built), (built, cut), (cut, handed), (handed, got),
                           (ts, got))))  # fmt: skip
    out: dict[str, Any] = {name: percentiles([r[i] for r in rows]) for i, name in
                           enumerate(STAGES)}  # fmt: skip
    out["total"] = percentiles([r[-1] for r in rows])
    slow = sorted(rows, key=lambda r: r[-1])[-max(1, len(rows) // 100):] if rows else []
    out["tail"] = {name: sum(r[i] for r in slow) / len(slow) if slow else float("nan")
                   for i, name in enumerate(STAGES)}  # fmt: skip
    return out


def read_trace(path: Path) -> dict[str, list[int]]:
    trace: dict[str, list[int]] = {}
    if path.exists():  # an older tree (--before) writes none
        for line in path.read_text().splitlines():
            msg_id, *stamps = line.split()
            trace[msg_id] = [int(s) for s in stamps]
    return trace


async def bench(rates: list[int], seconds: float, roll: float) -> list[dict[str, Any]]:
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
            trace = work / "stages.trace"
            with log.open("wb") as f:
                procs.append(subprocess.Popen(
                    cli("collect", "--nats", url, "--host", host, "--include-path", str(load),
                        "--spill-dir", str(work / "spill")), stdout=f, stderr=f,
                    env={**os.environ, TRACE_ENV: str(trace)}))  # fmt: skip
            await wait_ready(nc, host, procs[0], log)
            with (work / "alert.log").open("wb") as f:
                procs.append(subprocess.Popen(
                    cli("consume", "alert", "--nats", url, "--rules", str(work / "rules"),
                        "--throttle", "0"), stdout=f, stderr=f))  # fmt: skip
            durables = ["alert"]
            archive: ArchiveWatch | None = None
            if roll > 0:
                archive = ArchiveWatch(work / "archive")
                with (work / "archive.log").open("wb") as f:
                    procs.append(subprocess.Popen(
                        cli("consume", "archive", "--nats", url, "--dir", str(archive.root),
                            "--roll-seconds", str(roll)), stdout=f, stderr=f))  # fmt: skip
                durables.append("archive")
            js = nc.jetstream()
            for durable in durables:
                for _ in range(300):  # the consumers' durables, bound
                    try:
                        await js.consumer_info("SNOOPBUS", durable)
                        break
                    except Exception:
                        await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            stop = asyncio.Event()
            watcher = asyncio.create_task(archive.run(stop)) if archive is not None else None
            try:
                assert server.process is not None
                pids = {"collector": procs[0].pid, "nats-server": server.process.pid,
                        "alerter": procs[1].pid, "bench": os.getpid()}
                rows = [await measure(nc, host, exe, load, rate, seconds, pids, archive, roll)
                        for rate in rates]  # fmt: skip
            finally:
                stop.set()
                if watcher is not None:
                    await watcher
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
        stamps = read_trace(trace)  # complete once the collector has stopped
        for row in rows:
            row["stages"] = stages(row.pop("received"), stamps)
        return rows


def run_child(tree: Path | None, rates: list[int], seconds: float, roll: float,
              work: Path) -> list[dict[str, Any]]:
    env = dict(os.environ)
    here = str(HERE.parents[1])
    env["PYTHONPATH"] = code_path(tree, work) if tree is not None else here
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.latency", "--json", "--seconds", str(seconds),
         "--rates", ",".join(map(str, rates)), "--archive-roll", str(roll)],
        env=env, capture_output=True, text=True,
        timeout=1800, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"latency ({tree or 'this tree'}): {proc.stderr[-3000:]}")
    rows: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return rows


def table(label: str, rows: list[dict[str, Any]]) -> None:
    print(f"{label:<7} {'target/s':>9} {'made/s':>8} {'got/s':>8} {'ev/msg':>6} | "
          f"{'events p50':>10} {'p99':>7} {'max':>7} {'n':>8} | {'alerts p50':>10} "
          f"{'p99':>7} {'max':>7} {'n':>5}  (ms)")
    for r in rows:
        e, a = r["events"], r["alerts"]
        print(f"{label:<7} {r['rate']:>9,} {r.get('made', 0):>8,.0f} {r['reached']:>8,.0f} "
              f"{r['per_msg']:>6.1f} | "
              f"{e['p50']:>10.1f} {e['p99']:>7.1f} {e['max']:>7.1f} {e['n']:>8,} | "
              f"{a['p50']:>10.1f} {a['p99']:>7.1f} {a['max']:>7.1f} {a['n']:>5,}")  # fmt: skip
    short = [r for r in rows if r["made"] < 0.95 * r["rate"]]
    for r in short:
        print(f"{label:<7} {r['rate']:>9,}: the load generator made only {r['made']:,.0f} "
              "events/s on this machine")
    if any(r.get("stages", {}).get("total", {}).get("n") for r in rows):
        print(f"{label:<7} {'target/s':>9} stage p50/p99/max per message's oldest event (ms); "
              "tail = mean ms in the slowest 1%")
        for r in rows:
            st = r["stages"]
            cells = "  ".join(f"{name} {st[name]['p50']:.1f}/{st[name]['p99']:.1f}/"
                              f"{st[name]['max']:.1f}" for name in (*STAGES, "total"))
            tail = " ".join(f"{name} {st['tail'][name]:.1f}" for name in STAGES)
            lag = r["lag"]
            print(f"{label:<7} {r['rate']:>9,}  {cells}  | tail: {tail}  "
                  f"({st['total']['n']:,} msgs; this subscriber's loop late by "
                  f"{lag['p50']:.1f}/{lag['p99']:.1f}/{lag['max']:.1f})")
    if any(r.get("waited") for r in rows):
        print(f"{label:<7} {'target/s':>9} ms per s each process sat runnable waiting for a CPU "
              "(run queue)")
        for r in rows:
            print(f"{label:<7} {r['rate']:>9,}  " + "  ".join(
                f"{name} {ms:.0f}" for name, ms in r.get("waited", {}).items()))
    if any(r.get("roll") for r in rows):  # an older tree (--before) has no archive figures
        print(f"{label:<7} {'target/s':>9} {'roll s':>10} | {'archive p50':>11} {'p99':>6} "
              f"{'max':>7} {'rows':>8}  (s, event ts -> file queryable)")
        for r in rows:
            v = r.get("archive") or percentiles([])
            print(f"{label:<7} {r['rate']:>9,} {r.get('roll', 0):>10g} | {v['p50']:>11.2f} "
                  f"{v['p99']:>6.2f} {v['max']:>7.2f} {v['n']:>8,}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,10000,50000", help="events/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="per rate, after a 1 s warm-up")
    parser.add_argument("--archive-roll", type=float, default=5.0, metavar="S",
                        help="run the archive rolling every S seconds and print how soon "
                        "rows are queryable (0: no archive)")
    parser.add_argument("--before", type=Path, metavar="DIR",
                        help="also run the code in DIR (a checkout) and print both")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --before: before, after, before, after ... this many times")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    if args.json:
        print(json.dumps(asyncio.run(bench(rates, args.seconds, args.archive_roll))))
        return
    if args.before is None:
        table("after", asyncio.run(bench(rates, args.seconds, args.archive_roll)))
        return
    # Alternately, round by round: the machine's load drifts within minutes.
    tables: list[tuple[str, list[dict[str, Any]]]] = []
    with tempfile.TemporaryDirectory(prefix="snoopbus-lat-shim-") as tmp:
        for n in range(1, args.rounds + 1):
            for label, tree in (("before", args.before.resolve()), ("after", None)):
                rows = run_child(tree, rates, args.seconds, args.archive_roll, Path(tmp))
                tables.append((f"{label}{n}" if args.rounds > 1 else label, rows))
    print(f"latency, kernel ts -> subscriber / alert; before = {args.before}, after = this tree")
    for label, rows in tables:
        table(label, rows)


if __name__ == "__main__":
    main()
