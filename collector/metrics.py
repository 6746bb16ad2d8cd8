"""The collector's /metrics: its counters read from the running agent at scrape time,
and the publish-latency histogram, the one thing observed as it happens (once per
NATS message, not per event). The endpoint itself is proto/metrics_server.py.

Ring-buffer fill: `(producer_pos - consumer_pos) / size`, read at scrape time
from the collector's own mapping of the ring buffer (collector/ringbuf.py),
which BCC does not expose.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.registry import Collector

from snoopbus.collector import loss
from snoopbus.proto import metric_names as names
from snoopbus.proto.metrics_server import counter, value
from snoopbus.proto.msgid import ID_HEADER, id_count

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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
        yield counter(names.EVENTS_LOST, {**dict.fromkeys(loss.REASONS, 0), **a.loss.dropped})
        yield counter(
            names.KERNEL_RECORDS_LOST,
            {type_: sum(per_cpu) for type_, per_cpu in a.loss.kernel.items()},
        )
        pub, reader, counts = a.publisher, a.reader, a.publishing
        if pub is None or reader is None or counts is None:
            return
        yield value(names.RECORDS_READ, reader.records)
        yield counter(names.EVENTS_CAPTURED, _by_type(counts.captured))
        yield counter(names.EVENTS_PUBLISHED, _by_type(counts.published))
        yield value(names.PUBLISH_BUFFERED, pub.buffered)
        yield value(names.PUBLISH_STALLED, 1.0 if pub.stalled else 0.0)
        yield value(names.PUBLISH_STALLED_SECONDS, pub.stalled_for())
        yield value(names.PUBLISH_LIMIT, pub.payload_limit())
        if a.reader is not None and a.reader.alive:  # the mapping goes when it stops
            yield value(names.RINGBUF_FILL, a.reader.ring.fill_ratio())


def _by_type(per_subject: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for subject, n in per_subject.items():
        t = subject_type(subject)
        out[t] = out.get(t, 0) + n
    return dict(sorted(out.items()))
