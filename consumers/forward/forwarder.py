"""`snoopbus consume forward --to SINK [--to SINK ...]`.

Each sink runs as its own consumer (durable `forward-<name>`, dead letters
on `snoopbus.dlq.forward-<name>`) in its own runtime on the one shared NATS
connection, so a sink that is down or slow holds back only its own backlog.
A sink whose runtime fails is restarted after a delay; the others go on.

Workaround: the runtime runs one durable per consumer, and `forward` needs
one per sink. The `forward` consumer itself therefore only listens on
`snoopbus.meta.*.forward` (nothing is published there today) and starts the
per-sink runtimes in `setup`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
from dataclasses import replace

from nats.js import JetStreamContext

from snoopbus.proto import STREAM_NAME, meta_filter

from ..consumer import Consumer, Context
from ..delivery import Batch
from ..gctune import tune_gc
from ..rename import RenamePairer
from ..runtime import Counters
from ..settings import Settings
from .backoff import Backoff
from .runtime import ForwardRuntime
from .sinks import make_sink
from .spec import SinkSpec, SpecError, parse_spec
from .worker import SINK_SETTINGS, SinkWorker

log = logging.getLogger(__name__)
COUNTED = ("fetched", "processed", "failed", "retried", "dead_lettered", "skipped", "released",
           "missed")


# The rename pairer's durable, whole or one partition of it (Partition.durable).
PAIRER_DURABLE = re.compile(rf"{re.escape(RenamePairer.name)}(-p\d+of\d+)?")


async def pairer_durable(js: JetStreamContext) -> str | None:
    """The name of a rename pairer's durable on the stream, if there is one.

    Its existence is what counts, not whether a pairer runs this minute: the
    stream keeps the halves for it, and the `renamed` events come when it runs.
    """
    offset = 0
    while True:
        try:
            page = await js.consumers_info(STREAM_NAME, offset=offset)
        except Exception as exc:  # cannot tell: forward the halves, lose nothing
            log.warning("forward: cannot list the stream's consumers (%s): "
                        "forwarding rename halves", exc)  # fmt: skip
            return None
        for info in page:
            if PAIRER_DURABLE.fullmatch(info.name or ""):
                return info.name
        if len(page) < 256:  # the server's page size
            return None
        offset += len(page)


def _spec_arg(text: str) -> SinkSpec:
    try:
        return parse_spec(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Forwarder(Consumer):
    name = "forward"
    description = (
        "forward events and alerts to SIEMs: syslog, CEF, ECS _bulk, OCSF, OTLP, Splunk HEC, "
        "webhook, JSON lines"
    )
    filters = (meta_filter(what="forward"),)
    settings = Settings(batch=16, concurrency=1)

    def __init__(
        self, specs: list[SinkSpec], settings: Settings | None = None,
        sink_settings: Settings = SINK_SETTINGS, gc_tuning: bool = False,
    ) -> None:  # fmt: skip
        if not specs:
            raise ValueError("forward: give at least one --to SINK")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"forward: sink names must differ, got {names} (use ?name=)")
        self.settings = settings or type(self).settings
        sink_settings = replace(
            sink_settings, partition=self.settings.partition,
            deliver_new=self.settings.deliver_new, start_time=self.settings.start_time,
        )  # fmt: skip
        self.workers = [SinkWorker(make_sink(spec), sink_settings) for spec in specs]
        self.runtimes: dict[str, ForwardRuntime] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = asyncio.Event()
        self._started = asyncio.Event()  # every sink has a runtime
        self.restart_backoff = Backoff(base=1.0, cap=30.0)
        self.gc_tuning = gc_tuning  # process-wide (gctune.py): on when run as `consume forward`

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--to", dest="sinks", action="append", type=_spec_arg, required=True,
            metavar="SINK", help="where to send, e.g. syslog+tcp://127.0.0.1:514, "
            "elastic+https://es:9200/snoopbus-%%Y.%%m.%%d, jsonl:- (repeatable; "
            "see consumers/forward/docs/README.md)",
        )  # fmt: skip

    @classmethod
    def from_args(cls, args: argparse.Namespace, settings: Settings) -> Consumer:
        # The runtime options given on the command line apply to every sink's
        # runtime too (concurrency is per sink, in its URL).
        given = {
            key: getattr(args, key, None) for key in ("batch", "ack_wait", "max_attempts")
        }
        sink_settings = replace(SINK_SETTINGS, **{k: v for k, v in given.items() if v is not None})
        return cls(list(args.sinks), settings=settings, sink_settings=sink_settings,
                   gc_tuning=True)  # fmt: skip

    async def setup(self, ctx: Context) -> None:
        if self.gc_tuning:
            tune_gc()  # every event becomes a document or a record: thousands of objects a batch
        pairer = await pairer_durable(ctx.js)
        for worker in self.workers:
            worker.choose_halves(pairer)
        for worker in self.workers:
            self._tasks.append(asyncio.create_task(self._supervise(ctx, worker)))

    async def _supervise(self, ctx: Context, worker: SinkWorker) -> None:
        failures = 0
        while not self._closing.is_set():
            runtime = ForwardRuntime(worker, nc=ctx.nc, settings=worker.settings)
            worker.runtime = runtime
            self.runtimes[worker.name] = runtime
            if len(self.runtimes) == len(self.workers):
                self._started.set()
            try:
                await runtime.run()
                return
            except Exception as exc:  # one sink's failure stays its own
                failures += 1
                delay = self.restart_backoff.delay(failures)
                log.error("%s: stopped (%s); restarting in %.1fs", worker.name, exc, delay)
                try:
                    await asyncio.wait_for(self._closing.wait(), delay)
                except TimeoutError:
                    pass

    async def ready(self) -> None:
        """Wait until every sink's durable is bound (tests, embedding)."""
        await self._started.wait()
        await asyncio.gather(*(r.ready.wait() for r in self.runtimes.values()))

    def counters(self, own: Counters) -> Counters:
        """Its own (the control subject) plus every sink's runtime: what was
        forwarded is what the stop log and the metrics report."""
        runtimes = list(self.runtimes.values())
        total = Counters()
        for name in COUNTED:
            setattr(total, name, getattr(own, name) + sum(getattr(r.counters, name)
                                                          for r in runtimes))  # fmt: skip
        for counters in (own, *(r.counters for r in runtimes)):
            total.dead_letter_reasons.update(counters.dead_letter_reasons)
            for gauge in ("pending", "ack_pending"):
                value = getattr(counters, gauge)
                if value is not None:
                    setattr(total, gauge, (getattr(total, gauge) or 0) + value)
        return total

    async def handle(self, batch: Batch) -> None:
        """Nothing is published on the control subject yet: acked unread."""

    async def teardown(self) -> None:
        self._closing.set()
        for runtime in self.runtimes.values():
            runtime.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in self.workers:
            st = worker.stats
            log.info(
                "%s (%s, %s): sent=%d rejected=%d failures=%d acked=%d naked=%d dead_lettered=%d",
                worker.name, worker.sink.spec.scheme, worker.sink.delivery, st.sent, st.rejected,
                st.failures, st.acked, st.naked, st.dead_lettered,
            )  # fmt: skip
