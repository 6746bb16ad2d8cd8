"""A consumer working through a backlog: the shared part of the consumer benchmarks.

A private nats-server is filled first (`fill`), then a consumer runs as its
own process, `python -m snoopbus.consumers NAME ...` as a user runs it,
pinned to one CPU, and is timed from the moment its durable exists (start-up
and rule loading excluded) until the server has nothing pending or unacked
for it. Reported: events/s, CPU seconds per event (the process's own
utime+stime over the same span: less sensitive to a shared machine than the
wall clock), and the peak RSS (VmHWM, read before it stops).

The same run can measure another revision of snoopbus side by side
(`Tree.checkout("main")`): a temporary git worktree, imported through a
`snoopbus` package of links to its folders put first on PYTHONPATH, so it
runs on this venv's interpreter and libraries. The durable is deleted after
each run, so the next one reads the same stored messages from the start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import STREAM_NAME, connect, ensure_stream

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("proto", "collector", "consumers")  # pyproject's package-dir
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Tree:
    """Where a revision's code is; `env` makes a subprocess import it."""

    label: str
    root: Path
    shim: Path | None = None  # a dir holding `snoopbus/` links; None: this venv's install

    @classmethod
    def current(cls) -> Tree:
        return cls("this branch", REPO)

    @classmethod
    def checkout(cls, ref: str) -> Tree:
        """A revision (a temporary git worktree), or a directory holding one's
        code (e.g. `git archive main | tar -x -C DIR`), used as it is."""
        base = Path(tempfile.mkdtemp(prefix="snoopbus-bench-tree-"))
        if Path(ref).is_dir():
            root = Path(ref).resolve()
        else:
            root = base / "tree"
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(root), ref],
                check=True,
            )
        shim = base / "shim"
        (shim / "snoopbus").mkdir(parents=True)
        (shim / "snoopbus" / "__init__.py").write_text("")
        for folder in FOLDERS:
            (shim / "snoopbus" / folder).symlink_to(root / folder)
        return cls(ref, root, shim)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.shim is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.shim),
                                                              env.get("PYTHONPATH")]))  # fmt: skip
        return env

    def remove(self) -> None:
        if self.shim is None:
            return
        if self.root.parent == self.shim.parent:  # a worktree of ours, not a directory given
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(self.root)], check=False)  # fmt: skip
        subprocess.run(["rm", "-rf", str(self.shim.parent)], check=False)


@asynccontextmanager
async def stored(
    work: Path, messages: Iterable[tuple[str, bytes]], total: int
) -> AsyncIterator[tuple[JetStreamContext, str]]:
    """A private nats-server holding `messages` (`total` events): (js, its url)."""
    server = NatsServer(state_dir=work / "nats")
    server.start()
    try:
        nc = await connect(server.url, name="bench-backlog")
        js = nc.jetstream(publish_async_max_pending=2000)
        await ensure_stream(js)
        start = time.perf_counter()
        count, size = await fill(js, messages)
        print(f"stored {total:,} events in {count:,} messages ({size / total:.0f} B/event) "
              f"in {time.perf_counter() - start:.0f}s", flush=True)  # fmt: skip
        try:
            yield js, server.url
        finally:
            await nc.close()
    finally:
        server.stop()


# Every event id of a benchmark's backlog holds this slot: copy k of the
# distinct events has it rewritten in place to `-r{k:03d}-` (same length, so
# the msgpack stays valid), so a 10M-event backlog is made from 500k made
# one by one (making and encoding 10M dicts takes longer than consuming them).
SLOT = "-r000-"
MOST_DISTINCT = 500_000


def copies_of(total: int, most: int = MOST_DISTINCT) -> tuple[int, int]:
    """(distinct, copies) for a backlog of about `total` events: distinct * copies."""
    copies = max(1, -(-total // most))
    if copies > 999:
        raise ValueError(f"a backlog of {total:,} events needs more than 999 copies")
    return total // copies, copies


def relabelled(messages: Iterable[tuple[str, bytes]], copies: int) -> Iterator[tuple[str, bytes]]:
    """`messages` (their ids holding SLOT), then copies 1.. with unique ids."""
    made = list(messages)
    yield from made
    slot = SLOT.encode()
    for k in range(1, copies):
        label = b"-r%03d-" % k
        for subject, payload in made:
            yield subject, payload.replace(slot, label)


async def fill(js: JetStreamContext, messages: Iterable[tuple[str, bytes]]) -> tuple[int, int]:
    """Store every (subject, payload); (messages, bytes)."""
    count = size = 0
    for subject, payload in messages:
        await js.publish_async(subject, payload)
        count += 1
        size += len(payload)
    await js.publish_async_completed()
    return count, size


@dataclass
class Result:
    label: str
    events: int
    seconds: float
    cpu_s: float
    peak_rss_mb: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s / self.events * 1e6


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _durable(js: JetStreamContext, name: str) -> AsyncIterator[tuple[int, int]]:
    while True:
        try:
            info = await js.consumer_info(STREAM_NAME, name)
        except NotFoundError:
            yield -1, -1
            continue
        yield info.num_pending, info.num_ack_pending


async def drain(
    js: JetStreamContext, url: str, tree: Tree, name: str, args: Sequence[str], events: int,
    work: Path, *, cpu: int | None = None, durable: str | None = None, timeout: float = 7200.0,
) -> Result:  # fmt: skip
    """Run consumer `name` of `tree` over the stored backlog until it is drained."""
    durable = durable or name
    config = work / "empty.toml"
    config.write_text("")
    log_path = work / f"{name}-{tree.label.replace(' ', '_').replace('/', '_')}.log"
    cmd = [sys.executable, "-m", "snoopbus.consumers", "--config", str(config), "--nats", url,
           name, *args]  # fmt: skip

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, env=tree.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=pin, cwd=work,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        start = cpu0 = None
        peak_seen = 0.0
        report_every = 30.0
        report_at = time.monotonic() + report_every
        async for pending, ack_pending in _durable(js, durable):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} ({tree.label}) exited early; see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} ({tree.label}) not drained in {timeout}s")
            if pending >= 0 and start is None:
                start, cpu0 = time.perf_counter(), _cpu_s(proc.pid)
            rss = _status_mb(proc.pid, "VmRSS")
            peak_seen = max(peak_seen, rss)
            if start is not None and time.monotonic() >= report_at:
                # The trend through a long backlog: RSS must level off, not grow with it.
                report_at = time.monotonic() + report_every
                print(f"  {name} ({tree.label}): {pending:,} messages pending, "
                      f"{time.perf_counter() - start:,.0f}s, RSS {rss:,.0f} MB "
                      f"(peak {peak_seen:,.0f})", flush=True)  # fmt: skip
            if start is not None and pending == 0 and ack_pending == 0:
                break
            await asyncio.sleep(0.05 if start is None else 0.2)
        assert start is not None and cpu0 is not None
        seconds = time.perf_counter() - start
        cpu_s = _cpu_s(proc.pid) - cpu0
        peak = max(peak_seen, _status_mb(proc.pid, "VmHWM"))
    finally:
        _stop(proc)
        try:
            await js.delete_consumer(STREAM_NAME, durable)
        except NotFoundError:
            pass
    return Result(tree.label, events, seconds, cpu_s, peak)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def add_flags(parser: argparse.ArgumentParser, consumer: str) -> None:
    """The backlog run's flags, the same for every consumer's benchmark."""
    parser.add_argument("--nats-events", type=int, default=1_000_000,
                        help="events of the backlog stored in NATS for the consumer runs "
                        "(default 1M; the issue's figure is 10M; 0 skips)")  # fmt: skip
    parser.add_argument("--before", default="main", metavar="REF",
                        help=f"also run this git revision's {consumer} on the same backlog, "
                        "first (default main; '' for this branch only)")  # fmt: skip
    parser.add_argument("--dir", type=Path,
                        help="work here (kept); default: a temporary folder")  # fmt: skip


def consumer_cpu() -> int | None:
    """The CPU to pin consumers to: the last one this process may use."""
    if os.environ.get("SNOOPBUS_BENCH_NO_PIN"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[-1] if len(cpus) > 1 else None


def table(results: Sequence[Result], title: str, *, compare: bool = True) -> str:
    rows = [("", "events/s", "CPU µs/event", "peak RSS MB", "seconds")]
    for r in results:
        rows.append((r.label, f"{r.rate:,.0f}", f"{r.cpu_us_per_event:.2f}",
                     f"{r.peak_rss_mb:,.0f}", f"{r.seconds:,.1f}"))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [title]
    for row in rows:
        lines.append("  ".join([row[0].ljust(widths[0])]
                               + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]))
    if compare and len(results) >= 2:  # the first run against the last
        a, b = results[0], results[-1]
        lines.append(f"{b.label} / {a.label}: {b.rate / a.rate:.2f}x events/s, "
                     f"{a.cpu_s / b.cpu_s:.2f}x less CPU per event")  # fmt: skip
    return "\n".join(lines)
