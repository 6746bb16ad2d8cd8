"""`snoopbus up`'s own /metrics: its children, and what it sees on the bus."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.registry import Collector

from snoopbus.proto import metric_names as names
from snoopbus.proto.metrics_server import MetricsServer, counter, family, new_registry, value


class StackStats(Collector):
    """`snoopbus up` itself: its children, and the events it sees on the bus."""

    def __init__(self, children: list[Any], seen: dict[str, int],
                 stream: Callable[[], Any] | None = None) -> None:
        self.children = children  # app.stack.Child (duck-typed)
        self.seen = seen
        self.stream = stream  # -> the last stream_watch.StreamView, or None

    def collect(self) -> Iterator[Any]:
        yield family(names.CHILD_RUNNING, *(
            ([child.name], 1.0 if child.pid else 0.0) for child in self.children))
        yield family(names.CHILD_RESTARTS, *(([c.name], c.deaths) for c in self.children))
        yield counter(names.EVENTS_SEEN, self.seen)
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
        yield counter(names.UP_MISSED, reading.missed)


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
