"""File-operation load: what the collector costs the workload, and whether it keeps up.

    .venv/bin/python -m tests.bench.file_ops [--seconds 5] [--rounds 3] [--cpu 1]
                                             [--before DIR]

Compiles tests/bench/file_load.c with the system cc into a temp dir: one
loop on one CPU doing openat(O_CREAT)+write+close+renameat+unlinkat (5 file
operations per iteration, 6 events: create, modify, close_write,
moved_from, moved_to, delete) for --seconds. Each of --rounds runs it:

1. nobody watching (baseline),
2. with the real collector publishing to a private nats-server (JetStream),
   the events counted from the stream afterwards,
3. with a bpftrace one-liner printing the same operations (system-wide, like
   the collector; it needs tracefs, which this bench mounts for that run only
   when it is not mounted, and unmounts after; the column is skipped with a
   note when bpftrace is missing: `make bench-files` installs it),
4. nobody watching again: the round's baseline is the mean of 1 and 4.

With `--before DIR` (a checkout, e.g. `git archive main | tar -x -C DIR`),
step 3 runs the collector from DIR's code instead of bpftrace: before/after
from one run, the probes' in-kernel cost of each printed per round.

Prints a table per round: ops/s and slowdown against that round's baseline,
events delivered to NATS vs expected, events lost, collector CPU (user+sys
seconds, as % of one CPU over the load) and peak RSS; then the median
slowdowns and the totals. Needs root. This 2-CPU machine is shared and its
speed drifts by 2x within minutes: read ratios within a round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import (
    STREAM_NAME,
    connect,
    decode_batch,
    decode_map,
    events_filter,
    meta_subject,
    stored_filters,
)

HERE = Path(__file__).resolve().parent
OPS_PER_ITER = 5
EVENTS_PER_ITER = 6
TRACEFS = Path("/sys/kernel/tracing")

# The same operations, printed with process and path, as a bpftrace one-liner.
BPFTRACE = (
    't:syscalls:sys_enter_openat { printf("open %d %s %s\\n", pid, comm, str(args->filename)); }'
    " t:syscalls:sys_enter_write /@w[pid, args->fd] == 0/ { @w[pid, args->fd] = 1;"
    ' printf("modify %d %s %d\\n", pid, comm, args->fd); }'
    " t:syscalls:sys_enter_close { delete(@w[pid, args->fd]);"
    ' printf("close %d %s %d\\n", pid, comm, args->fd); }'
    ' t:syscalls:sys_enter_renameat { printf("rename %d %s %s %s\\n", pid, comm,'
    " str(args->oldname), str(args->newname)); }"
    ' t:syscalls:sys_enter_unlinkat { printf("delete %d %s %s\\n", pid, comm,'
    " str(args->pathname)); }"
)


@dataclass
class Run:
    name: str
    iterations: int = 0
    seconds: float = 0.0
    delivered: int | None = None
    by_type: Counter[str] = field(default_factory=Counter)
    # Held back by a fair share, by type: the load's `summary` events' counts.
    summarized: Counter[str] = field(default_factory=Counter)
    lost: dict[str, Any] = field(default_factory=dict)
    cpu_s: float | None = None
    nats_cpu_s: float | None = None  # nats-server, over the same window (collector run)
    bench_cpu_s: float | None = None  # this process, over the same window (collector run)
    rss_kib: int | None = None
    bpf_ns: int | None = None  # in-kernel run time of the probes over the run
    bpf_runs: int | None = None
    note: str = ""

    @property
    def ops_per_s(self) -> float:
        return self.iterations * OPS_PER_ITER / self.seconds if self.seconds else 0.0


def build(tmp: Path) -> Path:
    exe = tmp / "file_load"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("file_ops: no C compiler (cc) found")
    subprocess.run([cc, "-O2", "-o", str(exe), str(HERE / "file_load.c")], check=True)
    return exe


def load(exe: Path, work: Path, seconds: float, cpu: int,
         rate: float = 0) -> tuple[int, float, int]:
    """Runs the generator (at full speed, or `rate` iterations/s); returns
    (iterations, seconds, its pid)."""
    proc = subprocess.Popen([str(exe), str(work), str(seconds), str(cpu), str(rate)],
                            stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=seconds + 60)
    if proc.returncode != 0:
        sys.exit(f"file_ops: the load generator failed ({proc.returncode})")
    n, secs = out.split()
    return int(n), float(secs), proc.pid


STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def bpf_prog_stats(pid: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the BPF programs `pid` holds open
    (fdinfo shows them while kernel.bpf_stats_enabled is 1)."""
    ns = cnt = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        if "prog_type:" not in info:
            continue
        fields = dict(ln.split(":", 1) for ln in info.splitlines() if ":" in ln)
        ns += int(fields.get("run_time_ns", "0"))
        cnt += int(fields.get("run_cnt", "0"))
    return ns, cnt


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def code_from(tree: Path, tmp: Path) -> dict[str, str]:
    """An environment in which `snoopbus` is the code of checkout `tree`: a
    package of links to its top-level folders, first on PYTHONPATH (ahead of
    the editable install's finder)."""
    shim = tmp / "before-code" / "snoopbus"
    if not shim.exists():
        shim.mkdir(parents=True)
        for part in ("proto", "collector", "consumers", "app"):
            if part == "app" and not (tree / part).is_dir():
                continue  # a checkout from before app/ existed
            if not (tree / part).is_dir():
                sys.exit(f"file_ops: --before {tree}: no {part}/ there (give a checkout)")
            (shim / part).symlink_to((tree / part).resolve())
    return {**os.environ, "PYTHONPATH": str(shim.parent)}


# A load: runs once, returns (iterations, seconds, which events are its own).
Load = Callable[[], tuple[int, float, Callable[[dict[str, Any]], bool]]]


def file_load(exe: Path, work: Path, seconds: float, cpu: int, rate: float = 0) -> Load:
    """The generator as a Load: its events are its process's."""
    def run() -> tuple[int, float, Callable[[dict[str, Any]], bool]]:
        n, secs, pid = load(exe, work, seconds, cpu, rate)
        return n, secs, lambda ev: ev.get("proc", {}).get("pid") == pid
    return run


def pin(pid: int, cpu: int | None) -> None:
    """Every thread of `pid` (a Go server's and BCC's included) onto `cpu`; None: left be."""
    if cpu is not None:
        subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip


async def with_collector(
    work: Load, tmp: Path, tree: Path | None = None, stack_cpu: int | None = None
) -> Run:
    """`work` under the collector (of `tree`, else this one) publishing to its own
    nats-server; `stack_cpu`: both run on that CPU only (the load's is another)."""
    run = Run("collector" if tree is None else "collector (before)")
    server = NatsServer(state_dir=tmp / "nats")
    server.start()
    assert server.process is not None
    pin(server.process.pid, stack_cpu)
    host = f"bench{secrets.token_hex(3)}"
    nc = await connect(server.url, name="file-ops-bench")
    js = nc.jetstream()
    status = await nc.subscribe(meta_subject(host, "status"))
    losses: list[dict[str, Any]] = []

    async def on_loss(msg: Msg) -> None:
        losses.append(decode_map(msg.data))

    # Events are read back from the stream after the run, not subscribed to
    # during it: the bench's own reading would take CPU from the collector.
    await nc.subscribe(meta_subject(host, "loss"), cb=on_loss)
    await nc.flush()
    log = (tmp / "collector.log").open("wb")
    collector = subprocess.Popen(
        [sys.executable, "-m", "snoopbus.app", "collect", "--nats", server.url,
         "--host", host, "--spill-dir", str(tmp / "spill")], stdout=log, stderr=subprocess.STDOUT,
        env=None if tree is None else code_from(tree, tmp))
    final: dict[str, Any] = {}
    try:
        await status.next_msg(timeout=120)  # ready
        pin(collector.pid, stack_cpu)
        cpu0 = cpu_seconds(collector.pid), cpu_seconds(server.process.pid), own_cpu()
        stats_before = STATS.read_text().strip()
        STATS.write_text("1")  # per-program run time, for this run only
        try:
            ns0, cnt0 = bpf_prog_stats(collector.pid)
            n, secs, own = await asyncio.to_thread(work)
            ns1, cnt1 = bpf_prog_stats(collector.pid)
        finally:
            STATS.write_text(stats_before)
        run.iterations, run.seconds = n, secs
        run.bpf_ns, run.bpf_runs = ns1 - ns0, cnt1 - cnt0
        # Until the collector has published what it read: the stream stops growing
        # (or a minute passed: on a shared host, others' file activity never stops).
        last, still, waited = -1, 0.0, 0.0
        while still < 2.0 and waited < 60:
            waited += 0.25
            stored = (await js.stream_info(STREAM_NAME)).state.messages
            still = still + 0.25 if stored == last else 0.0
            last = stored
            await asyncio.sleep(0.25)
        cpu1 = cpu_seconds(collector.pid), cpu_seconds(server.process.pid), own_cpu()
        run.cpu_s, run.nats_cpu_s, run.bench_cpu_s = (b - a for a, b in zip(cpu0, cpu1,
                                                                             strict=True))
        run.rss_kib = peak_rss_kib(collector.pid)
        collector.send_signal(2)
        while final.get("state") != "stopped":
            final = decode_map((await status.next_msg(timeout=60)).data)
        collector.wait(30)
        run.by_type, run.summarized = await stored_types(js, host, own)
    finally:
        if collector.poll() is None:
            collector.kill()
            collector.wait()
        log.close()
        await nc.close()
        server.stop()
    run.delivered = sum(run.by_type.values())
    run.lost = {"total": final.get("lost", 0), "by_type": final.get("lost_by_type", {}),
                "reasons": losses[-1].get("dropped", {}) if losses else {}}
    return run


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


async def stored_types(js: JetStreamContext, host: str,
                       own: Callable[[dict[str, Any]], bool]) -> tuple[Counter[str], Counter[str]]:
    """The load's own file events in the stream, by type (exec and exit left out),
    and what its own `summary` events say fair shares held back, by type."""
    seen: Counter[str] = Counter()
    summarized: Counter[str] = Counter()
    sub = await js.pull_subscribe(stored_filters(events_filter(host=host))[0], durable=None)
    try:
        while True:
            try:
                msgs = await sub.fetch(512, timeout=2)
            except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either
                return seen, summarized
            for msg in msgs:
                for ev in decode_batch(msg.data, validate=False):
                    if not own(ev):
                        continue
                    if ev["type"] == "summary":
                        summarized[ev["of"]] += ev["count"]
                    elif ev["type"] not in ("exec", "exit"):
                        seen[ev["type"]] += 1
                await msg.ack()
    finally:
        await sub.unsubscribe()


# A load for bpftrace: (iterations, seconds, which printed lines are its own).
TraceLoad = Callable[[], tuple[int, float, Callable[[list[str]], bool]]]


def file_trace_load(exe: Path, work: Path, seconds: float, cpu: int) -> TraceLoad:
    """The generator under BPFTRACE: its lines carry its pid second."""
    def run() -> tuple[int, float, Callable[[list[str]], bool]]:
        n, secs, pid = load(exe, work, seconds, cpu)
        return n, secs, lambda words: len(words) > 2 and words[1] == str(pid)
    return run


def with_bpftrace(
    program: str, work: TraceLoad, tmp: Path, stack_cpu: int | None = None
) -> Run:
    run = Run("bpftrace")
    bpftrace = shutil.which("bpftrace")
    if bpftrace is None:
        run.note = "skipped: bpftrace not installed (make bench-files installs it)"
        return run
    mounted_here = False
    if not os.path.ismount(TRACEFS):
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=True)
        mounted_here = True
    out_path = tmp / "bpftrace.out"
    try:
        with out_path.open("wb") as out:
            proc = subprocess.Popen([bpftrace, "-e", program], stdout=out,
                                    stderr=subprocess.STDOUT)
            try:
                # bpftrace prints "Attaching N probes..." once it is live.
                deadline = time.monotonic() + 60
                while b"Attaching" not in out_path.read_bytes():
                    if proc.poll() is not None or time.monotonic() > deadline:
                        run.note = "bpftrace failed: " + out_path.read_text(errors="replace")[-300:]
                        return run
                    time.sleep(0.2)
                time.sleep(0.5)
                pin(proc.pid, stack_cpu)
                cpu0 = cpu_seconds(proc.pid)
                run.iterations, run.seconds, own = work()
                time.sleep(1.0)
                run.cpu_s = cpu_seconds(proc.pid) - cpu0
                run.rss_kib = peak_rss_kib(proc.pid)
            finally:
                proc.send_signal(2)
                proc.wait(60)
        text = out_path.read_bytes().decode(errors="replace")
        lines = Counter(words[0] for words in map(str.split, text.splitlines())
                        if words and own(words))
        run.by_type = lines
        run.delivered = sum(lines.values())
        lost = sum(int(m) for m in re.findall(r"Lost (\d+) events", text))
        run.lost = {"total": lost, "reasons": {"perf_buffer_full": lost} if lost else {}}
        run.note = "printed lines to a file; bpftrace's own 'Lost N events' lines are its loss"
    finally:
        if mounted_here:
            subprocess.run(["umount", str(TRACEFS)], check=False)
    return run


def table(runs: list[Run], base: Run) -> str:
    rows = [("run", "ops/s", "slowdown", "events seen / expected", "lost", "CPU s (%1cpu)",
             "peak RSS")]
    for r in runs:
        if not r.seconds:
            rows.append((r.name, "-", "-", r.note, "-", "-", "-"))
            continue
        slow = f"{(1 - r.ops_per_s / base.ops_per_s) * 100:.1f}%" if r is not base else "-"
        per_iter = OPS_PER_ITER if r.name == "bpftrace" else EVENTS_PER_ITER
        seen = "-" if r.delivered is None else f"{r.delivered} / {r.iterations * per_iter}"
        lost = "-" if not r.lost else str(r.lost["total"])
        cpu = "-" if r.cpu_s is None else f"{r.cpu_s:.2f} ({r.cpu_s / r.seconds * 100:.0f}%)"
        rss = "-" if r.rss_kib is None else f"{r.rss_kib / 1024:.0f} MiB"
        rows.append((r.name, f"{r.ops_per_s:,.0f}", slow, seen, lost, cpu, rss))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                     for row in rows)


def one_round(exe: Path, work: Path, tmp: Path, seconds: float, cpu: int,
              bpftrace_first: bool, tree: Path | None = None) -> list[Run]:
    """[baseline (mean of one load before and one after), collector, bpftrace
    (or the collector of `tree`)]. The two watched loads swap places from
    round to round: on this machine a load run later in a round tends to run
    slower."""
    def other() -> Run:
        if tree is not None:
            return asyncio.run(with_collector(file_load(exe, work, seconds, cpu), tmp, tree))
        return with_bpftrace(BPFTRACE, file_trace_load(exe, work, seconds, cpu), tmp)

    before = Run("no collector")
    before.iterations, before.seconds, _ = load(exe, work, seconds, cpu)
    if bpftrace_first:
        trace = other()
        coll = asyncio.run(with_collector(file_load(exe, work, seconds, cpu), tmp))
    else:
        coll = asyncio.run(with_collector(file_load(exe, work, seconds, cpu), tmp))
        trace = other()
    after = Run("no collector")
    after.iterations, after.seconds, _ = load(exe, work, seconds, cpu)
    base = Run("no collector (mean)", before.iterations + after.iterations,
               before.seconds + after.seconds)
    base.note = f"{before.ops_per_s:,.0f} before, {after.ops_per_s:,.0f} after"
    return [base, coll, trace]


def slowdown(r: Run, base: Run) -> float:
    return 1 - r.ops_per_s / base.ops_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="each load's length")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of (no collector, collector, bpftrace, no collector)")
    parser.add_argument("--cpu", type=int, default=1, help="CPU the load runs on")
    parser.add_argument("--before", type=Path, default=None,
                        help="a checkout whose collector runs in bpftrace's place")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("file_ops: needs root (it loads the collector's probes)")
    rounds: list[list[Run]] = []
    with tempfile.TemporaryDirectory(prefix="snoopbus-file-ops-") as tmp_s:
        tmp = Path(tmp_s)
        work = tmp / "work"
        work.mkdir()
        exe = build(tmp)
        for i in range(args.rounds):
            rounds.append(one_round(exe, work, tmp, args.seconds, args.cpu, i % 2 == 1,
                                    args.before))
    print(f"file_ops: {args.rounds} rounds, {args.seconds:g} s per load on CPU {args.cpu}, "
          f"{OPS_PER_ITER} ops and {EVENTS_PER_ITER} events per iteration; each slowdown is "
          "against its own round's baseline (the machine is shared: read the ratios)\n")
    for i, (base, coll, trace) in enumerate(rounds, 1):
        other = "bpftrace" if args.before is None else "collector (before)"
        order = f"{other}, then collector" if i % 2 == 0 else f"collector, then {other}"
        print(f"round {i} ({order}; baseline {base.note} ops/s)")
        print(table([base, coll, trace], base))
        print()
    colls = [r[1] for r in rounds]
    traces = [r[2] for r in rounds if r[2].seconds]
    slow_c = statistics.median(slowdown(r[1], r[0]) for r in rounds)
    line = f"median slowdown: collector {slow_c * 100:.1f}%"
    if traces:
        slow_t = statistics.median(slowdown(r[2], r[0]) for r in rounds if r[2].seconds)
        line += f", {'bpftrace' if args.before is None else 'collector (before)'} " \
                f"{slow_t * 100:.1f}%"
    print(line)
    seen = sum(r.delivered or 0 for r in colls)
    expected = sum(r.iterations * EVENTS_PER_ITER for r in colls)
    lost = sum(r.lost.get("total", 0) for r in colls)
    # Loss is counted in records; a lost rename record ("moved_from+moved_to") is two events.
    lost_events = sum(n * (2 if "+" in t else 1)
                      for r in colls for t, n in r.lost.get("by_type", {}).items())
    reasons = sum((Counter(r.lost.get("reasons", {})) for r in colls), Counter())
    print(f"collector, all rounds: {seen} of {expected} events in the stream, {lost} records "
          f"counted lost = {lost_events} events (by reason: {dict(reasons)}); in the stream + "
          f"counted lost {'==' if seen + lost_events == expected else '!='} generated")
    clean = [r for r in colls
             if not r.lost.get("total") and r.delivered == r.iterations * EVENTS_PER_ITER]
    if clean:
        best = max(clean, key=lambda r: r.ops_per_s)
        print(f"fastest round with every event delivered and none lost: {best.ops_per_s:,.0f} "
              f"ops/s ({best.ops_per_s * EVENTS_PER_ITER / OPS_PER_ITER:,.0f} events/s)")
    watched = [(i, r[1]) for i, r in enumerate(rounds, 1)]
    watched += [(i, r[2]) for i, r in enumerate(rounds, 1) if args.before]
    for i, coll in watched:
        if coll.nats_cpu_s is not None and coll.bench_cpu_s is not None:
            print(f"round {i} beside the {coll.name} (load start until the stream stopped "
                  f"growing): nats-server {coll.nats_cpu_s:.2f} CPU s, this bench "
                  f"{coll.bench_cpu_s:.2f} CPU s")
        if coll.bpf_ns is not None and coll.bpf_runs:
            print(f"round {i} {coll.name} probes in the kernel: {coll.bpf_runs} runs, "
                  f"{coll.bpf_ns / coll.bpf_runs:.0f} ns per run, "
                  f"{coll.bpf_ns / max(coll.iterations * OPS_PER_ITER, 1):.0f} ns per file op "
                  f"(all programs, every syscall on the host)")
    print(f"collector events by type (last round): {dict(colls[-1].by_type)}")
    if traces:
        print(f"{traces[-1].name} by op (last round): {dict(traces[-1].by_type)}  "
              f"{traces[-1].note}")
    else:
        print(rounds[-1][2].note)


if __name__ == "__main__":
    main()
