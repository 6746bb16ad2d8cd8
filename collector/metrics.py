"""Prometheus /metrics and /healthz, served by every snoopbus process.

Each process owns one `CollectorRegistry` (not the global default, so tests
can build several in one interpreter) and serves it from a small threaded
HTTP server on `[metrics] address:port`. Values are read from the live
objects at scrape time (custom collectors), so the hot paths only bump the
plain integers they already keep; the publish-latency histogram is the one
thing observed as it happens (once per NATS message, not per event).

Ring-buffer fill: `(producer_pos - consumer_pos) / size`, read at scrape time
from the collector's own mapping of the ring buffer (collector/ringbuf.py),
which BCC does not expose.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from snoopbus.collector import exits, privileges
from snoopbus.proto.msgid import ID_HEADER, id_count

if TYPE_CHECKING:
    from snoopbus.consumers.runtime import Runtime

# (healthy, one line saying why) -- /healthz answers 200 or 503 with that line.
Health = Callable[[], tuple[bool, str]]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class MetricsError(RuntimeError):
    """The metrics endpoint could not be served; the message says what to do."""

    exit_code = exits.BUSY


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def service_actions(self) -> None:
        # Every turn of serve_forever, before it starts a request's thread:
        # this thread began before the collector dropped its privileges.
        privileges.follow()


class MetricsServer:
    """GET /metrics (Prometheus text) and /healthz, in a daemon thread."""

    def __init__(self, registry: CollectorRegistry, health: Health) -> None:
        self.registry = registry
        self.health = health
        self._httpd: ThreadingHTTPServer | None = None
        self.port = 0

    def start(self, port: int, address: str = "127.0.0.1") -> int:
        """Bind and serve; the port actually bound (port 0 picks a free one)."""
        handler = _handler(self.registry, self.health)
        try:
            self._httpd = _Server((address, port), handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise MetricsError(
                    f"metrics port {port} on {address} is in use: pick another with "
                    "--metrics-port or [metrics] port (0 turns metrics off)"
                ) from None
            raise MetricsError(
                f"cannot serve metrics on {address}:{port}: {exc.strerror}"
            ) from None
        self.port = self._httpd.server_address[1]
        # A short poll: service_actions (privileges.follow) runs at least this often.
        threading.Thread(target=self._httpd.serve_forever, args=(0.1,), name="metrics",
                         daemon=True).start()
        return self.port

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def _handler(registry: CollectorRegistry, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok, why = health()
                self._answer(200 if ok else 503, f"{why}\n".encode(), "text/plain")
            else:
                self._answer(404, b"try /metrics or /healthz\n", "text/plain")

        def _answer(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds is not news

    return Handler


def publish_latency(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "snoopbus_collector_publish_latency_seconds",
        "JetStream publish to ack, per message (a batch of events)",
        buckets=LATENCY_BUCKETS, registry=registry,
    )


def subject_type(subject: str) -> str:
    return subject.rsplit(".", 1)[-1]


class PublishCounter:
    """Stands in for the JetStream context the publisher is given: counts what
    is acknowledged, by subject, and times each publish to its ack. Also wraps
    the reader's hand-over to count what was captured. Keeps the publisher
    itself free of metrics code."""

    def __init__(self, js: Any, latency: Callable[[float], None] | None) -> None:
        self._js = js
        self._latency = latency
        self.captured: dict[str, int] = {}
        self.published: dict[str, int] = {}

    def bind(self, js: Any) -> PublishCounter:
        """Stand in for `js` (the collector may reach NATS only after it started)."""
        self._js = js
        return self

    def counting(
        self, submit: Callable[[list[tuple[str, Any]]], None]
    ) -> Callable[[list[tuple[str, Any]]], None]:
        captured = self.captured

        def counted(batch: list[tuple[str, Any]]) -> None:
            for subject, _ in batch:
                captured[subject] = captured.get(subject, 0) + 1
            submit(batch)

        return counted

    async def publish(self, subject: str, payload: bytes, **kwargs: Any) -> Any:
        started = time.monotonic()
        ack = await self._js.publish(subject, payload, **kwargs)
        if self._latency is not None:
            self._latency(time.monotonic() - started)
        # The publisher's message ids end in "+<events in the message>".
        n = id_count((kwargs.get("headers") or {}).get(ID_HEADER, ""))
        self.published[subject] = self.published.get(subject, 0) + n
        return ack

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)


class CollectorStats(Collector):
    """The collector's counters, read from the running agent at scrape time."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent  # snoopbus.collector.agent.Collector (duck-typed: no BCC import)

    def collect(self) -> Iterator[Any]:
        a = self.agent
        ready = GaugeMetricFamily("snoopbus_collector_ready", "1 once the probes are loaded")
        ready.add_metric([], 1.0 if a.reader is not None else 0.0)
        yield ready
        yield _counter(
            "snoopbus_collector_events_lost", "Events lost, by reason", "reason", a.loss.dropped
        )
        yield _counter(
            "snoopbus_collector_kernel_lost",
            "Records the kernel ring buffer had no room for, by event type", "type",
            {type_: sum(per_cpu) for type_, per_cpu in a.loss.kernel.items()},
        )
        pub, reader, counts = a.publisher, a.reader, a.publishing
        if pub is None or reader is None or counts is None:
            return
        yield CounterMetricFamily(
            "snoopbus_collector_records_read", "Ring-buffer records read", value=reader.records
        )
        yield _counter(
            "snoopbus_collector_events_captured",
            "Events built from records and handed to the publisher, by type", "type",
            _by_type(counts.captured),
        )
        yield _counter(
            "snoopbus_collector_events_published", "Events acknowledged by JetStream, by type",
            "type", _by_type(counts.published),
        )
        yield GaugeMetricFamily(
            "snoopbus_collector_publish_buffered", "Events waiting for JetStream",
            value=pub.buffered,
        )
        yield GaugeMetricFamily(
            "snoopbus_collector_publish_stalled",
            "1 while events were captured and none published for longer than stall_after",
            value=1.0 if pub.stalled else 0.0,
        )
        yield GaugeMetricFamily(
            "snoopbus_collector_publish_stalled_seconds",
            "Seconds since the first event captured after the last one published (0: none waits)",
            value=pub.stalled_for(),
        )
        yield GaugeMetricFamily(
            "snoopbus_collector_publish_limit_bytes",
            "Bytes a message may take: the server's max_payload (or the stream's max_msg_size)",
            value=pub.payload_limit(),
        )
        if a.reader is not None and a.reader.alive:  # the mapping goes when it stops
            yield GaugeMetricFamily(
                "snoopbus_collector_ringbuf_fill_ratio",
                "Share of the BPF ring buffer written and not yet read (0..1)",
                value=a.reader.ring.fill_ratio(),
            )


def _counter(name: str, doc: str, label: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    """A counter family with one label: a sample per key, in key order."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, n in sorted(counts.items()):
        family.add_metric([key], n)
    return family


def _by_type(per_subject: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for subject, n in per_subject.items():
        t = subject_type(subject)
        out[t] = out.get(t, 0) + n
    return dict(sorted(out.items()))


class ConsumerStats(Collector):
    """One consumer runtime's counters, its lag, and alerts by rule where it raises them."""

    def __init__(self, runtime: Runtime, alerts_by_rule: dict[str, int] | None = None) -> None:
        self.runtime = runtime
        self.alerts_by_rule = alerts_by_rule

    def collect(self) -> Iterator[Any]:
        c = self.runtime.consumer.counters(self.runtime.counters)
        label = [self.runtime.durable]

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            m = CounterMetricFamily(f"snoopbus_consumer_{name}", doc, labels=["consumer"])
            m.add_metric(label, value)
            return m

        yield counter("fetched", "Messages received from JetStream", c.fetched)
        yield counter("processed", "Messages handled and acked", c.processed)
        yield counter("failed", "Handler failures, per message and attempt", c.failed)
        yield counter("retried", "Messages nak'd for redelivery", c.retried)
        yield counter("missed", "Messages the stream removed (retention) before this consumer "
                      "read them", c.missed)
        dead = CounterMetricFamily(
            "snoopbus_consumer_dead_lettered", "Messages sent to the dead-letter subject",
            labels=["consumer", "kind"],
        )
        for kind, n in sorted(c.dead_letter_reasons.items()):
            dead.add_metric([*label, kind], n)
        yield dead
        if c.pending is not None:
            lag = GaugeMetricFamily(
                "snoopbus_consumer_lag",
                "Messages in the stream not yet delivered to this durable (num_pending)",
                labels=["consumer"],
            )
            lag.add_metric(label, c.pending)
            yield lag
            ack = GaugeMetricFamily(
                "snoopbus_consumer_ack_pending", "Delivered, not yet acked", labels=["consumer"]
            )
            ack.add_metric(label, c.ack_pending or 0)
            yield ack
        if self.alerts_by_rule is not None:
            alerts = CounterMetricFamily(
                "snoopbus_alerts", "Alerts raised, by rule and level", labels=["rule", "level"]
            )
            for key, n in sorted(self.alerts_by_rule.items()):
                rule, _, level = key.rpartition("|")
                alerts.add_metric([rule, level], n)
            yield alerts


def count_alerts(consumer: object) -> dict[str, int] | None:
    """For the alert consumer: an output that tallies what it sends, by "rule|level".

    It is appended after the NATS output, which raises on failure, so only
    alerts that reached the bus are counted. None for other consumers.
    """
    extra = getattr(consumer, "extra_outputs", None)
    if not isinstance(extra, list):
        return None
    from snoopbus.consumers.alert.outputs import Output  # only alert processes need it

    tally: dict[str, int] = {}

    class RuleCounter(Output):
        name = "metrics"

        async def send(self, alerts: Any) -> None:
            for alert in alerts:
                key = f"{(alert.get('rule') or {}).get('title', '?')}|{alert.get('level', '?')}"
                tally[key] = tally.get(key, 0) + 1

    extra.append(RuleCounter())
    return tally


def serve_consumer(runtime: Runtime, port: int, address: str) -> MetricsServer:
    """/metrics and /healthz of one consumer process; MetricsError if the port is taken."""
    registry = CollectorRegistry()
    registry.register(ConsumerStats(runtime, count_alerts(runtime.consumer)))

    def health() -> tuple[bool, str]:
        return (True, "ok") if runtime.ready.is_set() else (False, "starting: binding durable")

    server = MetricsServer(registry, health)
    server.start(port, address)
    return server


class StackStats(Collector):
    """`snoopbus up` itself: its children, and the events it sees on the bus."""

    def __init__(self, children: list[Any], seen: dict[str, int],
                 stream: Callable[[], Any] | None = None) -> None:
        self.children = children  # collector.stack.Child (duck-typed)
        self.seen = seen
        self.stream = stream  # -> the last stream_watch.StreamView, or None

    def collect(self) -> Iterator[Any]:
        running = GaugeMetricFamily(
            "snoopbus_up_child_running", "1 while the supervised child runs", labels=["child"]
        )
        restarts = CounterMetricFamily(
            "snoopbus_up_child_restarts", "Times the child died and was restarted",
            labels=["child"],
        )
        for child in self.children:
            running.add_metric([child.name], 1.0 if child.pid else 0.0)
            restarts.add_metric([child.name], child.deaths)
        yield running
        yield restarts
        yield _counter(
            "snoopbus_up_events_seen", "Events seen on the bus by up's live view, by type",
            "type", self.seen,
        )
        reading = self.stream() if self.stream is not None else None
        if reading is None:
            return
        for name, doc, value in (
            ("stream_bytes", "Bytes the stream holds", reading.bytes),
            ("stream_max_bytes", "The stream's max_bytes (-1: none)", reading.max_bytes),
            ("stream_first_seq", "The stream's first sequence", reading.first_seq),
            ("state_free_bytes", "Bytes free on the state folder's disk", reading.free),
            ("stream_warnings", "Warnings now: stream near its limit, disk nearly full",
             len(reading.warnings)),
        ):
            yield GaugeMetricFamily(f"snoopbus_{name}", doc, value=value)
        missed = CounterMetricFamily(
            "snoopbus_up_consumer_missed",
            "Messages the stream removed (retention) before the consumer read them",
            labels=["consumer"],
        )
        for name, n in sorted(reading.missed.items()):
            missed.add_metric([name], n)
        yield missed


def serve_stack(
    children: list[Any], seen: dict[str, int], port: int, address: str,
    stream: Callable[[], Any] | None = None,
) -> MetricsServer:
    registry = CollectorRegistry()
    registry.register(StackStats(children, seen, stream))

    def health() -> tuple[bool, str]:
        down = [c.name for c in children if not c.pid]
        return (False, "restarting: " + ", ".join(down)) if down else (True, "ok")

    server = MetricsServer(registry, health)
    server.start(port, address)
    return server
