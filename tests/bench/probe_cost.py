"""The probes' in-kernel cost, per program, without NATS: this tree against another.

    .venv/bin/python -m tests.bench.probe_cost --before DIR [--seconds 2] [--execs 500] [--rounds 2]

DIR is a checkout (e.g. `git archive main | tar -x -C DIR`). Each round loads
the probes of DIR, then of this tree (each in its own process, which drains
the ring buffer as the collector would, without decoding), and runs the same
load under each: tests/bench/file_load.c for --seconds (open+write+close+
rename+unlink) and --execs fork+execs of /bin/true (what exits and execs
cost). kernel.bpf_stats_enabled gives each program's run time and runs; a
tail program's time counts in the program that called it.
Prints ns per run and total ms per program and load, per round: compare the
two trees within a round (the machine is shared); then, per program and load,
the median over the rounds of each tree's ns per run. Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.file_ops import STATS, build, code_from, load

CHILD = r"""
import json, os, sys, threading, time
from pathlib import Path
from snoopbus.collector import probes
loaded = probes.load(probes.ProbeLimits())
b = loaded.bpf
b[b"events"].open_ring_buffer(lambda ctx, data, size: 0)
# A tree with isolation is told how far the reader got, as the collector does
# (or its probes would see the ring buffer fill and refuse file records).
try:
    pos = b[b"ring_pos"]
except KeyError:
    pos = None
import ctypes
def drain():
    while not stop:
        b.ring_buffer_poll(100)
        if pos is not None:
            pos[ctypes.c_int(1)] = pos[ctypes.c_int(0)]  # all written was read
stop = False
threading.Thread(target=drain, daemon=True).start()
names = {}
for fn in b.funcs.values():
    try:
        names[fn.fd] = fn.name.decode()
    except Exception:
        pass
def tagged():
    res = {}
    for fd, name in names.items():
        f = dict(ln.split(":", 1) for ln in Path(f"/proc/self/fdinfo/{fd}").read_text()
                 .splitlines() if ":" in ln)
        res[name] = (int(f.get("run_time_ns", 0)), int(f.get("run_cnt", 0)))
    return res
print("ready", flush=True)
for line in sys.stdin:
    print(json.dumps(tagged()), flush=True)
stop = True
"""


def execs(n: int) -> None:
    for _ in range(n):
        subprocess.run(["/bin/true"], check=True)


def measure(tree: Path | None, tmp: Path, exe: Path, work: Path, seconds: float,
            n_execs: int, cpu: int) -> dict[str, dict[str, tuple[int, int]]]:
    env = None if tree is None else code_from(tree, tmp)
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdin is not None and child.stdout is not None
    try:
        if child.stdout.readline().strip() != "ready":
            sys.exit("probe_cost: the probes did not load")

        def snap() -> dict[str, tuple[int, int]]:
            child.stdin.write("x\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]
            return {k: tuple(v) for k, v in json.loads(child.stdout.readline()).items()}  # type: ignore[union-attr,misc]

        out = {}
        s0 = snap()
        load(exe, work, seconds, cpu)
        s1 = snap()
        execs(n_execs)
        s2 = snap()
        for label, a, b in (("file ops", s0, s1), ("execs", s1, s2)):
            out[label] = {k: (b[k][0] - a[k][0], b[k][1] - a[k][1]) for k in b if k in a}
        return out
    finally:
        child.stdin.close()
        child.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout to compare with")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--execs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cpu", type=int, default=1)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("probe_cost: needs root")
    old = STATS.read_text().strip()
    STATS.write_text("1")
    try:
        with tempfile.TemporaryDirectory(prefix="snoopbus-probe-cost-") as tmp_s:
            tmp = Path(tmp_s)
            work = tmp / "work"
            work.mkdir()
            exe = build(tmp)
            per_run: dict[tuple[str, str, str], list[float]] = {}  # (load, program, tree)
            for r in range(1, args.rounds + 1):
                runs = {label: measure(tree, tmp, exe, work, args.seconds, args.execs, args.cpu)
                        for label, tree in (("before", args.before), ("after", None))}
                print(f"round {r}: {args.seconds:g} s of file ops, {args.execs} execs")
                for load_name in ("file ops", "execs"):
                    progs = sorted(set(runs["before"][load_name]) | set(runs["after"][load_name]))
                    print(f"  {load_name:<9} {'program':<28} {'before ns/run':>14} "
                          f"{'after ns/run':>13} {'before ms':>10} {'after ms':>9}")
                    for p in progs:
                        cells = []
                        for label in ("before", "after"):
                            ns, n = runs[label][load_name].get(p, (0, 0))
                            if n:
                                per_run.setdefault((load_name, p, label), []).append(ns / n)
                            cells.append((f"{ns / n:.0f}" if n else "-", f"{ns / 1e6:.1f}"))
                        print(f"  {'':<9} {p:<28} {cells[0][0]:>14} {cells[1][0]:>13} "
                              f"{cells[0][1]:>10} {cells[1][1]:>9}")
                    for label in ("before", "after"):
                        total = sum(ns for ns, _ in runs[label][load_name].values())
                        print(f"  {'':<9} {'total ' + label:<28} {total / 1e6:>10.1f} ms")
                time.sleep(0.1)
            print(f"median over {args.rounds} rounds, ns per run (before -> after)")
            for load_name, p in sorted({(ld, p) for ld, p, _ in per_run}):
                b, a = (per_run.get((load_name, p, t)) for t in ("before", "after"))
                cell = [f"{statistics.median(v):.0f}" if v else "-" for v in (b, a)]
                ratio = f"  ({statistics.median(a) / statistics.median(b):.2f}x)" if a and b else ""
                print(f"  {load_name:<9} {p:<36} {cell[0]:>6} -> {cell[1]:>6}{ratio}")
    finally:
        STATS.write_text(old)


if __name__ == "__main__":
    main()
