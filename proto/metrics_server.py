"""Prometheus /metrics and /healthz, served by every snoopbus process.

Each process owns one `CollectorRegistry` (not the global default, so tests
can build several in one interpreter) and serves it from a small threaded
HTTP server on `[metrics] address:port`. Values are read from the live
objects at scrape time (custom collectors), so the hot paths only bump the
plain integers they already keep.

Every name, kind, label set and help text comes from proto/metric_names.py;
each registry also carries snoopbus_build_info and prometheus_client's
process_* figures (CPU, memory, file descriptors of this process). What each
process serves is beside it: collector/metrics.py, consumers/metrics.py,
app/stack_metrics.py.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from snoopbus.proto import build_info, exits
from snoopbus.proto import metric_names as names
from snoopbus.proto.metric_names import Component, Metric

# (healthy, one line saying why) -- /healthz answers 200 or 503 with that line.
Health = Callable[[], tuple[bool, str]]

Family = CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily


def family(metric: Metric, *samples: tuple[list[str], float]) -> Family:
    """The family of a catalogued metric (proto/metric_names.py), with its samples."""
    labels = list(metric.labels)
    if metric.kind == "info":  # each sample's label values, its value ignored (1)
        info = InfoMetricFamily(metric.family, metric.help)
        for values, _ in samples:
            info.add_metric([], dict(zip(labels, values, strict=True)))
        return info
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


def counter(metric: Metric, counts: Mapping[str, int]) -> Family:
    """A family with one label: a sample per key, in key order."""
    return family(metric, *(([key], n) for key, n in sorted(counts.items())))


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
    each_turn: Callable[[], None] | None = None

    def service_actions(self) -> None:
        # Every turn of serve_forever, before it starts a request's thread.
        if self.each_turn is not None:
            self.each_turn()


class MetricsServer:
    """GET /metrics (Prometheus text) and /healthz, in a daemon thread.

    each_turn runs in the server's thread before each request is handed on (the
    collector's privileges.follow: this thread began before it dropped them)."""

    def __init__(self, registry: CollectorRegistry, health: Health,
                 each_turn: Callable[[], None] | None = None) -> None:
        self.registry = registry
        self.health = health
        self.each_turn = each_turn
        self._httpd: _Server | None = None
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
        self._httpd.each_turn = self.each_turn
        self.port = self._httpd.server_address[1]
        # A short poll: service_actions (each_turn) runs at least this often.
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
