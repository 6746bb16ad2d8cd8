"""Fork+exec storm: how the collector keeps up, and what it costs.

    make bench-exec        (or: .venv/bin/python -m tests.bench.exec_storm [--execs N])

Starts a private nats-server and the real collector, then runs a C load
generator that fork+execs /bin/true as fast as it can (one loop by default,
--workers N for more), first with no collector (baseline) and then with it.
Prints execs/s generated and seen on NATS, events lost by reason, the
collector's CPU and memory,
its start-up time, and the in-kernel cost of each probe (kernel BPF run
stats, switched on for the storm only). Needs root. Figures are from one run on a shared
machine: compare the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import (
    connect,
    decode_batch,
    decode_map,
    events_filter,
    meta_subject,
    stored_filters,
)

STORM_C = r"""
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
extern char **environ;
/* storm MARKER COUNT WORKERS: fork+exec /bin/true MARKER, COUNT times in all. */
int main(int argc, char **argv) {
    long count = atol(argv[2]), workers = atol(argv[3]);
    char *args[] = {"/bin/true", argv[1], NULL};
    for (long w = 0; w < workers; w++) {
        if (fork() == 0) {
            for (long i = w; i < count; i += workers) {
                pid_t pid;
                if (posix_spawn(&pid, "/bin/true", NULL, NULL, args, environ) == 0)
                    waitpid(pid, NULL, 0);
            }
            _exit(0);
        }
    }
    while (wait(NULL) > 0) {}
    return 0;
}
"""


def build_storm(workdir: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("exec_storm needs a C compiler (apt-get install gcc)")
    src, exe = workdir / "storm.c", workdir / "storm"
    src.write_text(STORM_C)
    subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def run_storm(storm: Path, marker: str, count: int, workers: int) -> float:
    """Seconds the storm took."""
    start = time.perf_counter()
    subprocess.run([str(storm), marker, str(count), str(workers)], check=True)
    return time.perf_counter() - start


class Measured(NamedTuple):
    startup_s: float
    storm_s: float
    seen: int
    busy_s: float
    cpu: float
    peak: float
    steady: float
    before: list[tuple[int, int]]
    after: list[tuple[int, int]]
    losses: list[dict]


BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def bpf_prog_stats(pid: int) -> list[tuple[int, int]]:
    """(run_time_ns, run_cnt) of each BPF program the process holds (kernel stats)."""
    out = []
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            info = dict(
                line.split(":", 1) for line in fdinfo.read_text().splitlines() if ":" in line
            )
        except OSError:
            continue
        if "prog_type" in info and "run_cnt" in info:
            out.append((int(info["run_time_ns"]), int(info["run_cnt"])))
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> tuple[float, float]:
    """Peak and current resident memory."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(status["VmHWM"].split()[0]) / 1024, int(status["VmRSS"].split()[0]) / 1024


async def count_in_stream(
    js: JetStreamContext, host: str, marker: str, expected: int
) -> tuple[int, int]:
    """Storm execs stored in the stream, and when the last one was stored (ns).

    Reads until all are there or nothing new arrived for 3 s.
    """
    sub = await js.subscribe(
        stored_filters(events_filter(host=host, type="exec"))[0], ordered_consumer=True
    )
    seen, last_ns, quiet_since = 0, 0, time.monotonic()
    try:
        while seen < expected and time.monotonic() - quiet_since < 3:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except NatsTimeout:
                continue
            quiet_since = time.monotonic()
            last_ns = max(last_ns, msg.metadata.timestamp.timestamp() * 1e9)
            for ev in decode_batch(msg.data, validate=False):
                argv = ev.get("proc", {}).get("argv") or []
                if argv[:2] == ["/bin/true", marker]:
                    seen += 1
    finally:
        await sub.unsubscribe()
    return seen, int(last_ns)


async def measure(
    server: NatsServer, workdir: Path, storm: Path, execs: int, workers: int
) -> Measured:
    """Starts the collector, runs the storm, reads the figures; stops the collector."""
    host = f"bench{secrets.token_hex(3)}"
    marker = f"storm-{secrets.token_hex(4)}"
    nc = await connect(server.url, name="bench")
    js = nc.jetstream()
    losses: list[dict] = []

    async def on_loss(msg: Msg) -> None:
        losses.append(decode_map(msg.data))

    ready = await nc.subscribe(meta_subject(host, "status"))
    await nc.subscribe(meta_subject(host, "loss"), cb=on_loss)
    spawned = time.perf_counter()
    with (workdir / "collector.log").open("wb") as log:
        collector = subprocess.Popen(
            [sys.executable, "-m", "snoopbus.app", "collect",
             "--nats", server.url, "--host", host, "--spill-dir", str(workdir / "spill")],
            stderr=log,
        )
    try:
        try:
            await ready.next_msg(timeout=120)
        except NatsTimeout:
            sys.exit(f"the collector did not get ready:\n{(workdir / 'collector.log').read_text()}")
        startup_s = time.perf_counter() - spawned
        cpu0 = cpu_seconds(collector.pid)
        storm_start_ns = time.time_ns()
        stats_was = BPF_STATS.read_text()
        BPF_STATS.write_text("1")  # per-program run time, for the in-kernel cost
        try:
            before = bpf_prog_stats(collector.pid)
            storm_s = await asyncio.to_thread(run_storm, storm, marker, execs, workers)
            after = bpf_prog_stats(collector.pid)
        finally:
            BPF_STATS.write_text(stats_was)
        # Count from the stream once the storm is over, so that counting
        # does not compete with the collector for the cores.
        seen, last_ns = await count_in_stream(js, host, marker, execs)
        busy_s = (last_ns - storm_start_ns) / 1e9
        cpu = cpu_seconds(collector.pid) - cpu0
        peak, steady = rss_mib(collector.pid)
    finally:
        collector.terminate()
        collector.wait(30)
    await asyncio.sleep(0.3)  # the final loss report, if any
    await nc.drain()
    return Measured(startup_s, storm_s, seen, busy_s, cpu, peak, steady, before, after, losses)


async def bench(execs: int, workers: int) -> None:
    if os.geteuid() != 0:
        sys.exit("exec_storm loads eBPF probes: run it as root")
    with tempfile.TemporaryDirectory(prefix="snoopbus-bench-") as tmp:
        workdir = Path(tmp)
        storm = build_storm(workdir)
        baseline_s = run_storm(storm, "warmup", execs, workers)
        server = NatsServer(state_dir=workdir / "nats")
        server.start()
        try:
            measured = await measure(server, workdir, storm, execs, workers)
        finally:
            server.stop()  # also when the collector never got ready
        # Baseline again, after: the machine is shared, and drift shows here.
        baseline_s = (baseline_s + run_storm(storm, "warmup", execs, workers)) / 2

    (startup_s, storm_s, seen, busy_s, cpu, peak, steady, before, after, losses) = measured
    lost = losses[-1]["dropped"] if losses else {}
    per_run = [
        f"{(t1 - t0) / max(n1 - n0, 1) / 1000:.1f} µs x {n1 - n0}"
        for (t0, n0), (t1, n1) in zip(before, after, strict=True)
        if n1 > n0
    ]
    rows = [
        ("execs in the storm", f"{execs}"),
        ("storm rate, no collector (before/after)", f"{execs / baseline_s:,.0f} execs/s"),
        ("storm rate, with collector", f"{execs / storm_s:,.0f} execs/s"
         f"  (x{baseline_s / storm_s:.2f} of baseline)"),
        ("exec events seen on NATS", f"{seen} ({seen / execs:.2%})"),
        ("execs/s stored in JetStream", f"{seen / busy_s:,.0f} events/s"),
        ("events lost (by reason)", ", ".join(f"{k}={v}" for k, v in lost.items()) or "none"),
        ("in-kernel cost per probe run", ", ".join(per_run)),
        ("collector CPU during storm", f"{cpu:.2f} s = {100 * cpu / busy_s:.0f}% of one core"),
        ("collector RSS: peak (BCC compile), after", f"{peak:.0f} MiB, {steady:.0f} MiB"),
        ("collector start-up (spawn to ready)", f"{startup_s:.2f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"exec storm: {workers} worker(s) on a {os.cpu_count()}-core machine")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--execs", type=int, default=20_000, help="execs in the storm")
    parser.add_argument(
        "--workers", type=int, default=1,
        help="parallel fork+exec loops (default 1: leaves a core for collector and NATS)",
    )
    args = parser.parse_args()
    asyncio.run(bench(args.execs, args.workers))


if __name__ == "__main__":
    main()
