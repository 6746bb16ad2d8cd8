"""Isolation under a flood: what a quiet process gets delivered while another floods.

    .venv/bin/python -m tests.bench.flood [--seconds 5] [--modes same,unique,children,threads]
                                          [--before DIR]

Compiles tests/bench/flood_load.c: as `nobody`, on CPU 0, one of
  same      open(O_WRONLY) + close of one file (close_write each time)
  unique    create + close + unlink of a new name each time
  children  the same as unique from a short-lived child after another
  threads   same, from 4 threads at once
while a victim (root, CPU 1) makes a directory every 5 ms and runs /bin/true
every 20 ms. For each mode it runs the flooder bare, then under the collector
of this tree, then (with --before DIR, a checkout such as `git archive main |
tar -x -C DIR`) under DIR's collector, each with its own nats-server, then
under a bpftrace one-liner printing every open, close and unlink (skipped
when bpftrace is missing: `make bpftrace`; --no-bpftrace leaves it out), and
prints:
  - the victim's delivery: mkdirs, execs and exits delivered / made;
  - the flooder's accounting per type: generated (counted by the flooder),
    delivered (events), coalesced (their `count` beyond 1), summarized and
    lost (summary events; for a tree without them, the kernel's loss count
    for that type, of every process);
  - the flooder's ops/s bare, under each collector and under bpftrace (with
    the lines bpftrace printed for the flooder and its own loss count).
Needs root. The machine is shared: compare within one run.
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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import (
    STREAM_NAME,
    Event,
    connect,
    decode_batch,
    decode_map,
    events_filter,
    meta_subject,
    stored_filters,
)
from tests.bench.file_ops import Run, TraceLoad, with_bpftrace

HERE = Path(__file__).resolve().parent
NOBODY = 65534
FLOOD_CPU, VICTIM_CPU = 0, 1

# The victim: a mkdir every 5 ms, /bin/true every 20 ms, on its own CPU.
# Prints its pid, then the directories and the children's pids it made.
VICTIM = r"""
import json, os, sys, time
work, seconds, cpu = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
os.sched_setaffinity(0, {cpu})
dirs, kids = [], []
start = time.monotonic()
next_exec = start
while time.monotonic() - start < seconds:
    d = os.path.join(work, f"v{len(dirs)}")
    os.mkdir(d)
    dirs.append(d)
    if time.monotonic() >= next_exec:
        next_exec += 0.02
        pid = os.posix_spawn("/bin/true", ["true"], os.environ)
        os.waitpid(pid, 0)
        kids.append(pid)
    time.sleep(0.005)
print(json.dumps({"pid": os.getpid(), "dirs": dirs, "kids": kids}))
"""


def build(tmp: Path) -> Path:
    exe = tmp / "flood_load"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc)")
    subprocess.run([cc, "-O2", "-pthread", "-o", str(exe), str(HERE / "flood_load.c")],
                   check=True)
    exe.chmod(0o755)
    return exe


@dataclass
class Flood:
    iterations: int
    seconds: float
    generated: Counter[str]

    @property
    def ops_per_s(self) -> float:
        return self.iterations / self.seconds if self.seconds else 0.0


def start_flood(exe: Path, work: Path, mode: str, seconds: float) -> subprocess.Popen[str]:
    """The flooder as nobody (it cannot change uid: one source), on FLOOD_CPU."""
    work.mkdir()
    work.chmod(0o777)
    return subprocess.Popen(
        ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
         str(exe), str(work), mode, str(seconds), str(FLOOD_CPU)],
        stdout=subprocess.PIPE, text=True)


def finish_flood(proc: subprocess.Popen[str], timeout: float) -> Flood:
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the flooder failed ({proc.returncode})")
    lines = out.split("\n")
    n, secs = lines[0].split()
    gen: Counter[str] = Counter()
    for ln in lines[1:]:
        if ln.strip():
            t, c = ln.split()
            if int(c):
                gen[t] = int(c)
    return Flood(int(n), float(secs), gen)


def run_victim(work: Path, seconds: float) -> dict[str, Any]:
    import json

    work.mkdir()
    out = subprocess.run([sys.executable, "-I", "-c", VICTIM, str(work), str(seconds),
                          str(VICTIM_CPU)], capture_output=True, text=True, check=True,
                         timeout=seconds + 60)
    return json.loads(out.stdout)


@dataclass
class Tally:
    """What the bus got, for one flood: the victim's events and the flooder's."""

    mkdirs: int = 0
    execs: int = 0
    exits: int = 0
    delivered: Counter[str] = field(default_factory=Counter)  # flooder events by type
    coalesced: Counter[str] = field(default_factory=Counter)  # their count beyond 1
    summarized: Counter[str] = field(default_factory=Counter)
    lost: Counter[str] = field(default_factory=Counter)

    def accounted(self, type_: str) -> int:
        return (self.delivered[type_] + self.coalesced[type_] + self.summarized[type_]
                + self.lost[type_])


def tally(events: list[Event], victim: dict[str, Any], flood_dir: Path,
          flood_exe: Path | None = None) -> Tally:
    """`flood_exe`: count only the summaries of processes of that image (or of
    none known): another nobody process on the host has its own."""
    t = Tally()
    dirs, kids = set(victim["dirs"]), set(victim["kids"])
    prefix = str(flood_dir) + "/"
    for ev in events:
        type_ = ev["type"]
        proc: dict[str, Any] = ev.get("proc", {})  # type: ignore[assignment]
        path = ev.get("file", {}).get("path", "")
        if type_ == "mkdir" and path in dirs:
            t.mkdirs += 1
        elif type_ == "exec" and proc.get("pid") in kids and proc.get("ppid") == victim["pid"]:
            t.execs += 1
        elif type_ == "exit" and proc.get("pid") in kids:
            t.exits += 1
        elif type_ == "summary" and proc.get("uid") == NOBODY and (
                flood_exe is None or proc.get("exe") in (None, str(flood_exe))):
            of = ev["of"]  # type: ignore[typeddict-item]
            t.summarized[of] += ev["count"]  # type: ignore[typeddict-item]
            t.lost[of] += ev.get("lost", 0)  # type: ignore[misc]
        elif proc.get("uid") == NOBODY and path.startswith(prefix):
            t.delivered[type_] += 1
            t.coalesced[type_] += ev.get("count", 1) - 1  # type: ignore[operator]
    return t


async def settle(js: JetStreamContext, quiet_s: float = 2.0, most_s: float = 120.0) -> None:
    """Until the collector has published what it read: the stream stops growing
    (stopping it with a backlog would leave that in its spill, not the stream)."""
    last, still, waited = -1, 0.0, 0.0
    while still < quiet_s and waited < most_s:
        stored = (await js.stream_info(STREAM_NAME)).state.messages
        still = still + 0.25 if stored == last else 0.0
        last = stored
        await asyncio.sleep(0.25)
        waited += 0.25


async def stored_events(js: JetStreamContext, host: str) -> list[Event]:
    """Every event of `host` in the stream."""
    out: list[Event] = []
    sub = await js.pull_subscribe(stored_filters(events_filter(host=host))[0], durable=None)
    try:
        while True:
            try:
                msgs = await sub.fetch(512, timeout=2)
            except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either
                return out
            for msg in msgs:
                out.extend(decode_batch(msg.data, validate=False))
                await msg.ack()
    finally:
        await sub.unsubscribe()


@dataclass
class Result:
    name: str
    flood: Flood
    victim: dict[str, Any]
    tally: Tally
    kernel_lost: dict[str, int] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)  # the collector's last


async def under_collector(name: str, exe: Path, tmp: Path, mode: str, seconds: float,
                          env: dict[str, str] | None, extra: list[str],
                          module: str = "snoopbus.app") -> Result:
    run_dir = Path(tempfile.mkdtemp(prefix=f"flood-{name}-", dir=tmp))
    run_dir.chmod(0o755)
    server = NatsServer(state_dir=run_dir / "nats")
    server.start()
    host = f"flood{secrets.token_hex(3)}"
    nc = await connect(server.url, name="flood-bench")
    status = await nc.subscribe(meta_subject(host, "status"))
    await nc.flush()
    log = (run_dir / "collector.log").open("wb")
    collector = subprocess.Popen(
        [sys.executable, "-m", module, "collect", "--nats", server.url,
         "--host", host, "--spill-dir", str(run_dir / "spill"), *extra], stdout=log,
        stderr=subprocess.STDOUT, env=env)
    try:
        await status.next_msg(timeout=120)  # ready
        flood_dir = run_dir / "flood"
        flooder = start_flood(exe, flood_dir, mode, seconds)
        await asyncio.sleep(min(0.5, seconds / 4))  # the flood is at full speed
        victim = await asyncio.to_thread(run_victim, run_dir / "victim", seconds / 2)
        flood = await asyncio.to_thread(finish_flood, flooder, seconds + 60)
        await settle(nc.jetstream())
        collector.send_signal(2)
        final: dict[str, Any] = {}
        while final.get("state") != "stopped":
            final = decode_map((await status.next_msg(timeout=120)).data)
        collector.wait(60)
        events = await stored_events(nc.jetstream(), host)
    finally:
        if collector.poll() is None:
            collector.kill()
            collector.wait()
        log.close()
        await nc.close()
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    return Result(name, flood, victim, tally(events, victim, flood_dir, exe),
                  final.get("lost_by_type", {}), final)


def bare(exe: Path, tmp: Path, mode: str, seconds: float) -> Flood:
    run_dir = Path(tempfile.mkdtemp(prefix="flood-bare-", dir=tmp))
    run_dir.chmod(0o755)
    try:
        return finish_flood(start_flood(exe, run_dir / "flood", mode, seconds), seconds + 60)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


# What the flooder does, printed with the process's name (its children and
# threads share it) and the path or fd, as a bpftrace one-liner.
BPFTRACE = (
    't:syscalls:sys_enter_openat { printf("open %s %s\\n", comm, str(args->filename)); }'
    ' t:syscalls:sys_enter_close { printf("close %s %d\\n", comm, args->fd); }'
    ' t:syscalls:sys_enter_unlinkat { printf("unlink %s %s\\n", comm, str(args->pathname)); }'
)


def flood_trace_load(exe: Path, tmp: Path, mode: str, seconds: float) -> TraceLoad:
    """The flooder under BPFTRACE: its lines name it (comm) second."""
    def run() -> tuple[int, float, Callable[[list[str]], bool]]:
        flood = bare(exe, tmp, mode, seconds)
        return flood.iterations, flood.seconds, lambda words: (
            len(words) > 2 and words[1] == exe.name)
    return run


def trace_line(base: Flood, r: Run) -> str:
    if not r.seconds:
        return f"  bpftrace {r.note}"
    per_s = r.iterations / r.seconds
    slow = base.ops_per_s / per_s if per_s else 0.0
    return (f"  bpftrace flooder {per_s:,.0f}/s ({slow:.2f}x slower); printed "
            f"{r.delivered or 0:,} lines for it, its own lost {r.lost.get('total', 0)}")


def report(mode: str, base: Flood, results: list[Result], trace: Run | None = None) -> str:
    lines = [f"mode {mode}: flooder bare {base.ops_per_s:,.0f} iterations/s"]
    for r in results:
        v, t = r.victim, r.tally
        slow = base.ops_per_s / r.flood.ops_per_s if r.flood.ops_per_s else 0.0
        lines.append(
            f"  {r.name:<8} flooder {r.flood.ops_per_s:,.0f}/s ({slow:.2f}x slower); victim: "
            f"mkdir {t.mkdirs}/{len(v['dirs'])}, exec {t.execs}/{len(v['kids'])}, "
            f"exit {t.exits}/{len(v['kids'])}; collector lost {r.status.get('lost', 0)}, "
            f"spilled {r.status.get('spilled_total', 0)}")
        for type_, gen in sorted(r.flood.generated.items()):
            lost = t.lost[type_] if t.summarized or t.lost else r.kernel_lost.get(type_, 0)
            total = t.delivered[type_] + t.coalesced[type_] + t.summarized[type_] + lost
            lines.append(
                f"    {type_:<12} generated {gen:>9,}  delivered {t.delivered[type_]:>8,}  "
                f"coalesced {t.coalesced[type_]:>9,}  summarized {t.summarized[type_]:>9,}  "
                f"lost {lost:>8,}  sum {total:>9,}  {'exact' if total == gen else 'MISSING'}")
    if trace is not None:
        lines.append(trace_line(base, trace))
    return "\n".join(lines)


def code_env(tree: Path, tmp: Path) -> tuple[dict[str, str], str]:
    """(an environment in which `snoopbus` is checkout `tree`'s code, the
    module of its collector command): links to its top-level folders in a
    package first on PYTHONPATH, ahead of the editable install's finder."""
    shim = tmp / "before-code" / "snoopbus"
    shim.mkdir(parents=True, exist_ok=True)
    for part in ("proto", "collector", "consumers", "app"):
        if (tree / part).is_dir() and not (shim / part).exists():
            (shim / part).symlink_to((tree / part).resolve())
    module = "snoopbus.app" if (tree / "app").is_dir() else "snoopbus.collector.cli"
    return {**os.environ, "PYTHONPATH": str(shim.parent)}, module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--modes", default="same,unique,children,threads")
    parser.add_argument("--before", type=Path, help="a checkout to compare with (main)")
    parser.add_argument("--no-bpftrace", action="store_true", help="no bpftrace column")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("flood: needs root")
    with tempfile.TemporaryDirectory(prefix="snoopbus-flood-") as tmp_s:
        tmp = Path(tmp_s)
        tmp.chmod(0o755)
        exe = build(tmp)
        for mode in args.modes.split(","):
            base = bare(exe, tmp, mode, args.seconds)
            results = [asyncio.run(under_collector("after", exe, tmp, mode, args.seconds,
                                                   None, []))]
            if args.before is not None:
                env, module = code_env(args.before, tmp)
                results.insert(0, asyncio.run(under_collector(
                    "before", exe, tmp, mode, args.seconds, env, [], module)))
            trace = None if args.no_bpftrace else with_bpftrace(
                BPFTRACE, flood_trace_load(exe, tmp, mode, args.seconds), tmp)
            print(report(mode, base, results, trace), flush=True)
            time.sleep(0.5)


if __name__ == "__main__":
    main()
