"""The collector process: probes -> ring-buffer reader on the loop -> publisher -> JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import mmap
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamInfo

from snoopbus.collector import privileges, probes, sd_notify
from snoopbus.collector.cgroups import CgroupIndex
from snoopbus.collector.events import EventBuilder
from snoopbus.collector.filters import FilterConfig
from snoopbus.collector.loss import REPEAT_ORPHANED, UNDECODABLE, LossCounters
from snoopbus.collector.metrics import CollectorStats, PublishCounter, publish_latency
from snoopbus.collector.mounts import HostPaths
from snoopbus.collector.proc_cache import ProcCache
from snoopbus.collector.publisher import Publisher, PublisherConfig
from snoopbus.collector.reader import RingReader
from snoopbus.collector.records import (
    FILE_KIND_NAMES,
    KIND_EXEC,
    KIND_EXIT,
    KIND_FORK,
    KIND_RENAME,
    LOST_INFLIGHT_FULL,
)
from snoopbus.collector.redact import RedactConfig, Redactor
from snoopbus.collector.ringbuf import RingBuffer
from snoopbus.collector.stagetrace import StageTrace
from snoopbus.collector.summary import SummaryDrain, delete_overflow, read_overflow
from snoopbus.proto import (
    BusUnavailable,
    NatsAuth,
    connect,
    connect_eventually,
    encode_map,
    ensure_stream,
    exits,
    host_token,
    meta_subject,
)
from snoopbus.proto.build_info import version
from snoopbus.proto.metrics_server import MetricsServer, new_registry
from snoopbus.proto.settings_file import CollectorSection, MetricsSection
from snoopbus.proto.stream_limits import StreamLimits

log = logging.getLogger("snoopbus.collector")

# Loss is reported by event type; a lost rename record is both its halves.
KIND_NAMES = {
    KIND_EXEC: "exec",
    KIND_EXIT: "exit",
    **FILE_KIND_NAMES,
    KIND_RENAME: "moved_from+moved_to",
    KIND_FORK: "fork(process_attribution)",
    LOST_INFLIGHT_FULL: "any_file_event(inflight_map_full)",
}


class CollectorError(RuntimeError):
    """A condition the user must fix; the message says how."""


class NotRoot(CollectorError):
    exit_code = exits.PRIVILEGE


@dataclass(frozen=True)
class CollectorConfig:
    nats_url: str
    host: str = field(default_factory=socket.gethostname)
    limits: probes.ProbeLimits = field(default_factory=probes.ProbeLimits)
    publisher: PublisherConfig = field(default_factory=PublisherConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    loss_report_interval: float = 2.0  # s between loss checks (reported when changed)
    heartbeat_interval: float = CollectorSection.heartbeat_interval
    nats_auth: NatsAuth | None = None  # None: from SNOOPBUS_NATS_* (proto/bus.py)
    redact: RedactConfig = field(default_factory=RedactConfig)
    # After loading: keep CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (privileges.py).
    drop_privileges: bool = CollectorSection.drop_privileges
    metrics_port: int = MetricsSection.port  # /metrics and /healthz; 0 = off
    metrics_address: str = MetricsSection.address
    # exit at start if NATS is unreachable, instead of spilling
    require_nats: bool = CollectorSection.require_nats
    stream_limits: StreamLimits = field(default_factory=StreamLimits)  # [stream]


def tune_gc() -> None:
    """Every record makes a few short-lived dicts; with the default gen-0
    threshold (700) the collector spent ~20% of its time in the cycle
    collector (measured on file_ops records). What exists now is kept."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def check_privileges() -> None:
    if os.geteuid() != 0:
        raise NotRoot(
            "the collector loads eBPF probes and must run as root "
            "(try: sudo snoopbus collect ...; `snoopbus doctor` checks this host)"
        )


class Collector:
    def __init__(self, config: CollectorConfig) -> None:
        self.cfg = config
        self.instance = secrets.token_hex(4)
        self.loss = LossCounters()
        self._stop = asyncio.Event()
        self._nc: Client | None = None
        # The loop's default executor until privileges are dropped (see run).
        self._executor = ThreadPoolExecutor(thread_name_prefix="snoopbus-pool")
        # Read by the metrics endpoint (collector/metrics.py); set once running.
        self.publisher: Publisher | None = None
        self.reader: RingReader | None = None
        self.publishing: PublishCounter | None = None
        self.latency: Callable[[float], None] | None = None
        self._trace = StageTrace.from_env()  # the latency bench's stage stamps; None: off

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        check_privileges()
        started = time.monotonic()
        # The spill first: a refused spill folder is one line before minutes of loading.
        self.publisher = self._publisher()
        try:
            await self._run(started)
        finally:  # closed by the publisher once serving; before that (refused, failed), here
            if self.publisher.spill is not None:
                self.publisher.spill.close()

    async def _run(self, started: float) -> None:
        # Our own default executor, so it can be replaced once privileges are
        # dropped: its threads (resolving the NATS host name) start before that.
        asyncio.get_running_loop().set_default_executor(self._executor)
        name = f"snoopbus-collector-{self.cfg.host}"
        js: JetStreamContext | None = None
        stream: StreamInfo | None = None
        try:
            self._nc = await connect(self.cfg.nats_url, name=name, auth=self.cfg.nats_auth,
                                     error_cb=self._on_nats_error)
            js = self._nc.jetstream()
            stream = await ensure_stream(js, limits=self.cfg.stream_limits)
        except BusUnavailable as exc:
            if self.cfg.require_nats or not exc.unreachable:
                raise
            # Boot order or an outage: the kernel's events are not worth less for it.
            log.warning("%s\nCollecting anyway: events wait in memory%s and are sent when "
                        "NATS answers (--require-nats exits instead).", exc,
                        " and then in the spill" if self.cfg.publisher.spill_dir else "")
            js = None
        try:
            # Its own thread, ended right after: a pooled thread would keep every
            # capability past drop_to() (capabilities are per thread).
            with ThreadPoolExecutor(1, thread_name_prefix="snoopbus-load") as pool:
                loaded = await asyncio.get_running_loop().run_in_executor(
                    pool, probes.load, self.cfg.limits, self.cfg.filters
                )
            try:
                await self._serve(js, stream, loaded, started)
            finally:
                loaded.close()
        finally:
            if self._nc is not None:
                try:
                    await self._nc.drain()
                except Exception as exc:  # NATS gone at shutdown: what was unacked is counted
                    log.warning("could not drain the NATS connection: %s", exc)

    async def _on_nats_error(self, err: Exception) -> None:
        if self.publisher is not None:  # a permissions violation fails its publishes now
            self.publisher.note_error(err)

    async def _attach_when_reachable(self, publisher: Publisher) -> None:
        """Connects, makes sure of the stream, then lets the publisher send."""
        name = f"snoopbus-collector-{self.cfg.host}"
        self._nc = await connect_eventually(self.cfg.nats_url, name=name, auth=self.cfg.nats_auth,
                                            error_cb=self._on_nats_error)
        js = self._nc.jetstream()
        while True:
            try:
                stream = await ensure_stream(js, limits=self.cfg.stream_limits)
                break
            except Exception as exc:  # e.g. JetStream still electing a leader
                log.warning("NATS reachable but the stream is not ready (%s); retrying", exc)
                await asyncio.sleep(2)
        log.warning("NATS reachable at last: sending %d buffered and %d spilled events",
                    publisher.buffered, publisher.spilled)
        self._attach(publisher, js, stream)

    async def _feed_watchdog(self, reader: RingReader) -> None:
        """WATCHDOG=1 while the ring buffer reader lives and this loop turns: a
        collector wedged or with a dead reader is restarted by systemd."""
        every = sd_notify.watchdog_interval()
        while every is not None and not self._stop.is_set() and reader.alive:
            sd_notify.notify("WATCHDOG=1")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), every)

    def _publisher(self) -> Publisher:
        pub_cfg = self.cfg.publisher
        if pub_cfg.spill_dir is not None:  # one spill per host name: test hosts share a machine
            pub_cfg = replace(pub_cfg, spill_dir=pub_cfg.spill_dir / host_token(self.cfg.host))
        return Publisher(None, self.loss, pub_cfg, trace=self._trace)

    async def _serve(
        self, js: JetStreamContext | None, stream: StreamInfo | None,
        loaded: probes.LoadedProbes, started: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        cache = ProcCache(cgroups=CgroupIndex())
        cache.scan()
        if self.cfg.drop_privileges:
            privileges.drop_to(privileges.KEEP_AFTER_LOAD)
            # Threads made before keep what they had: new ones from now on.
            loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="snoopbus-pool"))
            self._executor.shutdown(wait=False)
        tune_gc()
        builder = EventBuilder(
            self.cfg.host, self.instance, cache, path_filter=self.cfg.filters.path_match(),
            redact=Redactor(self.cfg.redact) if self.cfg.redact.enabled else None,
            host_paths=HostPaths(),
        )
        submit: Callable[[list[Any]], None]
        # Counted per type, and the publish latency.
        publishing = PublishCounter(None, self.latency) if self.cfg.metrics_port else None
        self.publishing = publishing
        publisher = self.publisher
        assert publisher is not None
        attach: asyncio.Task[None] | None = None
        if js is not None:
            self._attach(publisher, js, stream)
        else:
            attach = asyncio.create_task(self._attach_when_reachable(publisher))
        submit = publisher.submit
        if publishing is not None:
            submit = publishing.counting(publisher.submit)
        ring = RingBuffer(loaded.bpf[b"events"].map_fd,
                          self.cfg.limits.ringbuf_pages * mmap.PAGESIZE)
        # The batches hold encoded events (bytes) too, which the publisher's types
        # have yet to say.
        reader = RingReader(ring, builder, submit,  # type: ignore[arg-type]  # Event | bytes
                            consumed=loaded.consumer_position(), trace=self._trace)
        summaries = SummaryDrain(builder)
        self.reader = reader
        flusher = asyncio.create_task(publisher.run())
        reader.start(loop)
        startup_s = time.monotonic() - started
        self._publish_meta("status", {"state": "ready", "startup_s": startup_s})
        log.info(
            "collector ready on %s in %.2fs (instance %s, %d processes known)",
            self.cfg.host, startup_s, self.instance, len(cache),
        )
        sd_notify.notify(f"READY=1\nSTATUS=probes loaded in {startup_s:.1f}s, publishing")
        watchdog = asyncio.create_task(self._feed_watchdog(reader))
        reported_total = 0
        last_heartbeat = time.monotonic()
        stalled = False
        try:
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(self._stop.wait(), min(
                        self.cfg.loss_report_interval, self.cfg.heartbeat_interval))
                except TimeoutError:
                    pass
                if not reader.alive:
                    raise CollectorError("the ring buffer reader stopped; see the log above")
                if attach is not None and attach.done():
                    attach.result()  # a refusal (credentials, certificate) ends the collector
                    attach = None
                if attach is None and self._nc is not None and self._nc.is_closed:
                    # nats-py gives up for good on some server errors: connect anew.
                    log.warning("the NATS connection was closed (%s); connecting again",
                                self._nc.last_error or "no reason given")
                    attach = asyncio.create_task(self._attach_when_reachable(publisher))
                self._summarize(loaded, summaries, submit)
                reported_total = self._report_loss(loaded, reader, reported_total)
                if publisher.stalled != stalled:
                    stalled = publisher.stalled
                    stats = self._stats(reader, publisher, loaded, builder)
                    if stalled:
                        log.warning("publishing stalled: events captured, none published for "
                                    "%.0fs (last error: %s)", publisher.stalled_for(),
                                    publisher.last_error or "none")
                    else:
                        log.warning("publishing again")
                    self._publish_meta("status", {"state": "stalled" if stalled else "running",
                                                  **stats})
                if time.monotonic() - last_heartbeat >= self.cfg.heartbeat_interval:
                    last_heartbeat = time.monotonic()
                    self._publish_meta(
                        "heartbeat", self._stats(reader, publisher, loaded, builder)
                    )
        finally:
            sd_notify.notify("STOPPING=1")
            watchdog.cancel()
            reader.stop()  # the mapping stays until the metrics server is gone (run_collector)
            if attach is not None:
                attach.cancel()
                await asyncio.gather(attach, return_exceptions=True)
            # What NATS did not take goes to the spill, or is counted: before the
            # last reports, so that they account for it.
            if reader.alive:
                self._summarize(loaded, summaries, submit)
            await publisher.stop_events()
            self._report_loss(loaded, reader, reported_total, final=True)
            stats = self._stats(reader, publisher, loaded, builder)
            self._publish_meta("status", {"state": "stopped", **stats})
            await publisher.close(grace=5.0)
            if self._trace is not None:
                self._trace.close()
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            log.info(
                "collector stopped: %d records read, %d events published, %s",
                reader.records, publisher.published_events, self.loss.summary(),
            )

    def _attach(
        self, publisher: Publisher, js: JetStreamContext, stream: StreamInfo | None
    ) -> None:
        publisher.attach(
            self.publishing.bind(js) if self.publishing is not None else js,
            self._nc, stream.config.max_msg_size if stream is not None else None,
        )

    def _stats(
        self, reader: RingReader, publisher: Publisher, loaded: probes.LoadedProbes,
        builder: EventBuilder,
    ) -> dict[str, object]:
        return {
            "records": reader.records,
            "captured": publisher.submitted_events,
            "published": publisher.published_events,
            "buffered": publisher.buffered,
            "spilled": publisher.spilled,
            "spilled_total": publisher.spilled_total,
            "lost": self.loss.total,
            "lost_by_type": {k: sum(v) for k, v in self.loss.kernel.items()},
            # what never reached the ring buffer, and what user space dropped after it
            "kernel_filtered": loaded.kernel_stats(),
            "user_filtered": builder.filtered_in_user,
            # captured and not published for longer than stall_after (publisher.py)
            "stalled": publisher.stalled,
            "stalled_s": round(publisher.stalled_for(), 1),
            "last_error": publisher.last_error,
            "payload_limit": publisher.payload_limit(),
            "cut_batches": publisher.cut_batches,  # batches over it, split to fit
            "truncated_events": publisher.truncated_events,  # events over it alone, cut
            "duplicate_ids": publisher.duplicate_ids,  # first sends the stream had seen
            "interval": self.cfg.heartbeat_interval,
        }

    def _summarize(self, loaded: probes.LoadedProbes, summaries: SummaryDrain,
                   submit: Callable[[list[Any]], None]) -> None:
        """Summary events for what processes did beyond their fair share."""
        table = loaded.bpf[b"overflow"]
        events, gone = summaries.drain(read_overflow(table))
        if events:
            submit(events)
        delete_overflow(table, gone)

    def _report_loss(
        self,
        loaded: probes.LoadedProbes,
        reader: RingReader,
        reported: int,
        final: bool = False,
    ) -> int:
        by_kind = loaded.lost_by_kind()
        self.loss.set_kernel({KIND_NAMES.get(k, str(k)): v for k, v in by_kind.items()})
        self.loss.dropped[UNDECODABLE] = sum(reader.undecodable.values())
        self.loss.dropped[REPEAT_ORPHANED] = reader.builder.orphan_repeats
        if self.loss.total != reported or (final and self.loss.total):
            by_type = ", ".join(f"{k}={sum(v)}" for k, v in sorted(self.loss.kernel.items()))
            log.warning("loss: %s%s", self.loss.summary(),
                        f"; in the kernel, by type: {by_type}" if by_type else "")
            self._publish_meta("loss", self.loss.report(self.cfg.host, self.instance))
        return self.loss.total

    def _publish_meta(self, what: str, body: dict[str, object]) -> None:
        """Queued behind the events read so far; spilled with them during an outage."""
        assert self.publisher is not None
        payload = {"v": 1, "host": self.cfg.host, "instance": self.instance,
                   "ts": time.time_ns(), **body, "version": version()}
        subject = meta_subject(self.cfg.host, what)
        # count 0: a message of no events
        msg_id = self.publisher.message_id(subject, 0)
        self.publisher.submit_meta(subject, msg_id, encode_map(payload))


def serve_metrics(collector: Collector) -> MetricsServer | None:
    """/metrics and /healthz on the configured port; MetricsError if it is taken."""
    cfg = collector.cfg
    if not cfg.metrics_port:
        return None
    registry = new_registry("collector")
    registry.register(CollectorStats(collector))
    collector.latency = publish_latency(registry).observe

    def health() -> tuple[bool, str]:
        if collector.reader is None:
            return False, "starting: loading probes"
        if collector.reader is not None and not collector.reader.alive:
            return False, "ring buffer reader stopped"
        return True, "ok"

    # The server's thread began before the probes were loaded and privileges dropped.
    server = MetricsServer(registry, health, each_turn=privileges.follow)
    server.start(cfg.metrics_port, cfg.metrics_address)
    log.info("metrics on http://%s:%d/metrics", cfg.metrics_address, server.port)
    return server


def run_collector(config: CollectorConfig) -> int:
    collector = Collector(config)
    metrics = serve_metrics(collector)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, collector.request_stop)
        await collector.run()

    try:
        asyncio.run(main())
    finally:
        if metrics is not None:
            metrics.stop()  # it reads the ring buffer's fill from the mapping
        if collector.reader is not None:
            collector.reader.ring.close()
    return 0
