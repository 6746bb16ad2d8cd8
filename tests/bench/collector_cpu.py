"""Benchmark: the collector's user-space cost per event, stage by stage.

    .venv/bin/python -m tests.bench.collector_cpu [--iterations 20000] [--rounds 5]

No root, no kernel, no NATS: kernel records are made as the probes lay them
out (collector/records.py), in the mix tests/bench/file_ops.py generates
(create, write, close, rename, unlink: five records, six events per
iteration), from a process the cache knows with a realistic argv. Each round
runs them, a drain's worth at a time, through the stages the collector runs
for every record:

    build    bytes -> events            (EventBuilder.build_many, as the reader)
    encode   events -> NATS payloads    (the publisher's batching and encode_batch)

and prints µs per event for each stage and the events per second one core
would sustain through both, best round of --rounds. Times are the thread's
CPU time (time.thread_time): on a shared machine, wall time would count the
waits for a CPU too. Two builders take the same records in the same rounds,
interleaved: the collector's (the native builder, collector/fastbuild.c,
where this install has it) and the Python path alone (records.decode ->
build_all, the reference the native one is tested against); the line after
says how many times faster the first is. "dir names": names the collector
resolves again after the fact, which both leave to Python. This is the
ceiling the ring-buffer reader and publisher overheads come on top of;
file_ops.py measures the whole collector against the real kernel.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Iterator

from snoopbus.collector import records as R
from snoopbus.collector.agent import tune_gc
from snoopbus.collector.events import EventBuilder
from snoopbus.collector.native import status
from snoopbus.collector.proc_cache import ProcCache, ProcInfo
from snoopbus.proto import Event, encode_batch

PID = 4242
BATCH = 256  # the publisher's max_batch
BASE = b"work\0snoopbus-file-ops-3f9a2c\0tmp\0"  # walked /tmp/snoopbus-file-ops-3f9a2c/work


def record(kind: int, segs: list[bytes], flags: int = 0, ret: int = 0, cookie: int = 0,
           oflags: int = 0, mode: int = 0, fd: int = 3) -> bytes:
    hdr = R.HDR.pack(time.monotonic_ns(), 7, PID, PID, 1, 0, 0, kind, flags,
                     b"file_load".ljust(16, b"\0"))
    tail = R.FILE_TAIL.pack(ret, cookie, 1234567, (8 << 20) | 1, 4026531840, 257, oflags, mode,
                            fd, *[len(s) for s in segs])
    return hdr + tail + b"".join(segs)


PARENT = b"snoopbus-file-ops-3f9a2c\0tmp\0"  # BASE's parent
BASE_DIR = "/tmp/snoopbus-file-ops-3f9a2c/work"


def iteration(i: int, dir_names: bool = False) -> Iterator[bytes]:
    """One loop of tests/bench/file_load.c, as the probes report it; with
    `dir_names`, the rename and unlink name the files as "work/bench.tmp"
    from the parent directory: names with a directory part, which the
    collector resolves again after the fact (collector/resolve.py)."""
    leaf = b"bench.tmp\0" + BASE
    base, pre = (PARENT, b"work/") if dir_names else (BASE, b"")
    yield record(R.KIND_CREATE, [leaf, b"", b"", b""], ret=3, oflags=0o1101, mode=0o644)
    yield record(R.KIND_MODIFY, [leaf, b"", b"", b""], ret=64)
    yield record(R.KIND_CLOSE_WRITE, [leaf, b"", b"", b""], flags=R.F_NO_RET, oflags=0o101)
    yield record(R.KIND_RENAME, [base, pre + b"bench.tmp\0", base, pre + b"bench.done\0"],
                 cookie=i + 1)
    yield record(R.KIND_DELETE, [base, pre + b"bench.done\0", b"", b""])


def one_round(raw: list[bytes], builder: EventBuilder, chunk: int) -> list[float]:
    """[events, build s, encode s] with `chunk` records per ring-buffer drain,
    built as the collector's reader does (build_many: natively where the
    builder has the native path)."""
    totals = [0.0, 0.0, 0.0]
    for start in range(0, len(raw), chunk):
        t0 = time.thread_time()
        events = builder.build_many(raw[start : start + chunk])
        t1 = time.thread_time()
        by_subject: dict[str, list[Event | bytes]] = defaultdict(list)
        for subject, ev in events:
            by_subject[subject].append(ev)
        for evs in by_subject.values():
            for i in range(0, len(evs), BATCH):
                encode_batch(evs[i : i + BATCH])
        t2 = time.thread_time()
        totals[0] += len(events)
        totals[1] += t1 - t0
        totals[2] += t2 - t1
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=2048,
                        help="records per ring-buffer drain (one 20 ms flush at ~100k/s)")
    parser.add_argument("--processes", type=int, default=2000,
                        help="other processes in the cache, as a /proc scan at start fills it")
    args = parser.parse_args()
    raw = [buf for i in range(args.iterations) for buf in iteration(i)]
    raw_dirs = [buf for i in range(args.iterations) for buf in iteration(i, True)]
    made = not os.path.isdir(BASE_DIR)
    os.makedirs(BASE_DIR, exist_ok=True)  # resolved names look up real directories
    cache = ProcCache()
    for pid in range(10_000, 10_000 + args.processes):
        cache.put(pid, ProcInfo(f"/usr/bin/prog{pid}", [f"prog{pid}", "--flag", "value"], "/"))
    cache.put(PID, ProcInfo("/usr/local/bin/file_load",
                            ["/usr/local/bin/file_load", "/tmp/snoopbus-file-ops-3f9a2c/work",
                             "5", "1"], "/root"))
    fast = EventBuilder("bench-host", "a1b2c3d4", cache)
    python = EventBuilder("bench-host", "a1b2c3d4", cache, use_native=False)
    tune_gc()  # as the collector does once its probes are loaded
    best: dict[str, list[float]] = {}
    native = "native" if fast.native else "native MISSING, Python"
    collector, reference = f"{native} (the collector)", "Python path (reference)"
    variants = {collector: (raw, fast), reference: (raw, python),
                f"{native}, dir names": (raw_dirs, fast),
                "Python path, dir names": (raw_dirs, python)}
    try:
        for _ in range(args.rounds):
            for name, (records, builder) in variants.items():  # interleaved: same machine
                r = one_round(records, builder, args.chunk)
                if name not in best or sum(r[1:]) < sum(best[name][1:]):
                    best[name] = r
    finally:
        if made:
            os.rmdir(BASE_DIR)
            os.rmdir(os.path.dirname(BASE_DIR))
    first = best[collector]
    print(f"collector_cpu: {len(raw)} records -> {first[0]:.0f} events in drains of "
          f"{args.chunk}, best of {args.rounds} rounds; {status()}")
    rate = {}
    for name in variants:
        n, build, enc = best[name]
        total = build + enc
        rate[name] = n / total
        print(f"  {name:<30} build {build / n * 1e6:5.2f}  encode {enc / n * 1e6:5.2f}  "
              f"total {total / n * 1e6:5.2f} µs/event: {n / total:,.0f} events/s on one core")
    print(f"  native / Python, same run: {rate[collector] / rate[reference]:.1f}x (dir names: "
          f"{rate[f'{native}, dir names'] / rate['Python path, dir names']:.1f}x)")


if __name__ == "__main__":
    main()
