"""Prometheus /metrics and /healthz, served by every snoopbus process.

Each process owns one `CollectorRegistry` (not the global default, so tests
can build several in one interpreter) and serves it from a small threaded
HTTP server on `[metrics] address:port`. Values are read from the live
objects at scrape time (custom collectors), so the hot paths only bump the
plain integers they already keep; the publish-latency histogram is the one
thing observed as it happens (once per NATS message, not per event).

Every name, kind, label set and help text comes from collector/metric_names.py;
each registry also carries snoopbus_build_info and prometheus_client's
process_* figures (CPU, memory, file descriptors of this process).

Ring-buffer fill: `(producer_pos - consumer_pos) / size`, read at scrape time
from the collector's own mapping of the ring buffer (collector/ringbuf.py),
which BCC does not expose.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from snoopbus.collector import build_info, exits, loss, privileges
from snoopbus.collector import metric_names as names
from snoopbus.collector.metric_names import Component, Metric
from snoopbus.proto.msgid import ID_HEADER, id_count

if TYPE_CHECKING:
    from snoopbus.consumers.runtime import Runtime

# (healthy, one line saying why) -- /healthz answers 200 or 503 with that line.
Health = Callable[[], tuple[bool, str]]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


Family = CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily


def family(metric: Metric, *samples: tuple[list[str], float]) -> Family:
    """The family of a catalogued metric (collector/metric_names.py), with its samples."""
    labels = list(metric.labels)
    if metric.kind == "counter":
        out: CounterMetricFamily | GaugeMetricFamily = CounterMetricFamily(
            metric.family, metric.help, labels=labels
        )
    elif metric.kind == "gauge":
        out = GaugeMetricFamily(metric.family, metric.help, labels=labels)
    else:
        raise ValueError(f"{metric.name}: a {metric.kind} is not built at scrape time")
    for values, value in samples:
        out.add_metric(values, value)
    return out


def value(metric: Metric, v: float) -> Family:
    """A catalogued metric without labels, with its one value."""
    return family(metric, ([], v))


class BuildInfo(Collector):
    def __init__(self, component: Component) -> None:
        self.labels = build_info.labels(component)

    def collect(self) -> Iterator[Any]:
        info = InfoMetricFamily(names.BUILD_INFO.family, names.BUILD_INFO.help)
        info.add_metric([], self.labels)
        yield info


def new_registry(component: Component) -> CollectorRegistry:
    """A process's registry: its build and its process_* figures (CPU, memory, fds)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(BuildInfo(component))
    return registry


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
    m = names.PUBLISH_LATENCY
    return Histogram(m.name, m.help, buckets=LATENCY_BUCKETS, registry=registry,
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
        yield value(names.COLLECTOR_READY, 1.0 if a.reader is not None else 0.0)
        yield _counter(names.EVENTS_LOST, {**dict.fromkeys(loss.REASONS, 0), **a.loss.dropped})
        yield _counter(
            names.KERNEL_RECORDS_LOST,
            {type_: sum(per_cpu) for type_, per_cpu in a.loss.kernel.items()},
        )
        pub, reader, counts = a.publisher, a.reader, a.publishing
        if pub is None or reader is None or counts is None:
            return
        yield value(names.RECORDS_READ, reader.records)
        yield _counter(names.EVENTS_CAPTURED, _by_type(counts.captured))
        yield _counter(names.EVENTS_PUBLISHED, _by_type(counts.published))
        yield value(names.PUBLISH_BUFFERED, pub.buffered)
        yield value(names.PUBLISH_STALLED, 1.0 if pub.stalled else 0.0)
        yield value(names.PUBLISH_STALLED_SECONDS, pub.stalled_for())
        yield value(names.PUBLISH_LIMIT, pub.payload_limit())
        if a.reader is not None and a.reader.alive:  # the mapping goes when it stops
            yield value(names.RINGBUF_FILL, a.reader.ring.fill_ratio())


def _counter(metric: Metric, counts: Mapping[str, int]) -> Family:
    """A family with one label: a sample per key, in key order."""
    return family(metric, *(([key], n) for key, n in sorted(counts.items())))


def _by_type(per_subject: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for subject, n in per_subject.items():
        t = subject_type(subject)
        out[t] = out.get(t, 0) + n
    return dict(sorted(out.items()))


@dataclass
class AlertTally:
    """What the alert consumer put on the bus: counts by (rule id, level), and each
    counted rule's title (for snoopbus_alert_rule_info)."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)

    def add(self, alert: Mapping[str, Any]) -> None:
        rule = alert.get("rule") or {}
        rule_id = str(rule.get("id") or "?")
        key = (rule_id, str(alert.get("level", "?")))
        self.counts[key] = self.counts.get(key, 0) + 1
        self.titles[rule_id] = str(rule.get("title") or "")


class ConsumerStats(Collector):
    """One consumer runtime's counters, its lag, and alerts by rule where it raises them."""

    def __init__(self, runtime: Runtime, alerts: AlertTally | None = None) -> None:
        self.runtime = runtime
        self.alerts = alerts

    def collect(self) -> Iterator[Any]:
        c = self.runtime.consumer.counters(self.runtime.counters)
        label = [self.runtime.durable]
        for metric, n in ((names.FETCHED, c.fetched), (names.PROCESSED, c.processed),
                          (names.HANDLER_FAILURES, c.failed), (names.RETRIED, c.retried),
                          (names.MISSED, c.missed)):  # fmt: skip
            yield family(metric, (label, n))
        yield family(names.DEAD_LETTERED, *(
            ([*label, kind], n) for kind, n in sorted(c.dead_letter_reasons.items())))
        if c.pending is not None:
            yield family(names.LAG, (label, c.pending))
            yield family(names.ACK_PENDING, (label, c.ack_pending or 0))
        if self.alerts is not None:
            tally = sorted(self.alerts.counts.items())
            yield family(names.ALERTS, *(([rule_id, level], n) for (rule_id, level), n in tally))
            rules = InfoMetricFamily(names.ALERT_RULE_INFO.family, names.ALERT_RULE_INFO.help)
            for rule_id, title in sorted(self.alerts.titles.items()):
                rules.add_metric([], {"rule_id": rule_id, "title": title})
            yield rules


def count_alerts(consumer: object) -> AlertTally | None:
    """For the alert consumer: an output that tallies what it sends, by (rule id, level).

    The id, not the title: titles are not unique and may change between rule
    versions; snoopbus_alert_rule_info gives a dashboard the title to join on.

    It is appended after the NATS output, which raises on failure, so only
    alerts that reached the bus are counted. None for other consumers.
    """
    extra = getattr(consumer, "extra_outputs", None)
    if not isinstance(extra, list):
        return None
    from snoopbus.consumers.alert.outputs import Output  # only alert processes need it

    tally = AlertTally()

    class RuleCounter(Output):
        name = "metrics"

        async def send(self, alerts: Any) -> None:
            for alert in alerts:
                tally.add(alert)

    extra.append(RuleCounter())
    return tally


def serve_consumer(runtime: Runtime, port: int, address: str) -> MetricsServer:
    """/metrics and /healthz of one consumer process; MetricsError if the port is taken."""
    registry = new_registry("consumer")
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
        yield family(names.CHILD_RUNNING, *(
            ([child.name], 1.0 if child.pid else 0.0) for child in self.children))
        yield family(names.CHILD_RESTARTS, *(([c.name], c.deaths) for c in self.children))
        yield _counter(names.EVENTS_SEEN, self.seen)
        reading = self.stream() if self.stream is not None else None
        if reading is None:
            return
        for metric, v in (
            (names.STREAM_BYTES, reading.bytes),
            (names.STREAM_MAX_BYTES, reading.max_bytes),
            (names.STREAM_FIRST_SEQ, reading.first_seq),
            (names.STATE_FREE, reading.free),
            (names.STREAM_WARNINGS, len(reading.warnings)),
        ):
            yield value(metric, v)
        yield _counter(names.UP_MISSED, reading.missed)


def serve_stack(
    children: list[Any], seen: dict[str, int], port: int, address: str,
    stream: Callable[[], Any] | None = None,
) -> MetricsServer:
    registry = new_registry("up")
    registry.register(StackStats(children, seen, stream))

    def health() -> tuple[bool, str]:
        down = [c.name for c in children if not c.pid]
        return (False, "restarting: " + ", ".join(down)) if down else (True, "ok")

    server = MetricsServer(registry, health)
    server.start(port, address)
    return server
