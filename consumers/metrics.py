"""A consumer process's /metrics: its runtime's counters and lag, and the consumer's
own (the alerter's alerts by rule) (the generic endpoint is proto/metrics_server.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.registry import Collector

from snoopbus.proto import metric_names as names
from snoopbus.proto.metrics_server import MetricsServer, family, new_registry

if TYPE_CHECKING:
    from snoopbus.consumers.runtime import Runtime


class ConsumerStats(Collector):
    """One consumer runtime's counters, its lag, and the consumer's own metrics
    (Consumer.metrics(): the alerter's alerts by rule)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Any]:
        c = self.runtime.consumer.counters(self.runtime.counters)
        label = [self.runtime.durable]
        for metric, n in ((names.FETCHED, c.fetched), (names.PROCESSED, c.processed),
                          (names.HANDLER_FAILURES, c.failed), (names.RETRIED, c.retried),
                          (names.MISSED, c.missed)):  # fmt: skip
            yield family(metric, (label, n))
        yield family(names.DEAD_LETTERED, *(
            ([*label, kind], n) for kind, n in sorted(c.dead_letter_reasons.items())))
        for metric, samples in self.runtime.consumer.metrics():
            yield family(metric, *samples)
        if c.pending is not None:
            yield family(names.LAG, (label, c.pending))
            yield family(names.ACK_PENDING, (label, c.ack_pending or 0))


def serve_consumer(runtime: Runtime, port: int, address: str) -> MetricsServer:
    """/metrics and /healthz of one consumer process; MetricsError if the port is taken."""
    registry = new_registry("consumer")
    registry.register(ConsumerStats(runtime))

    def health() -> tuple[bool, str]:
        return (True, "ok") if runtime.ready.is_set() else (False, "starting: binding durable")

    server = MetricsServer(registry, health)
    server.start(port, address)
    return server
