"""A consumer process's /metrics: its runtime's counters and lag, and alerts by rule
where it raises them (the generic endpoint is proto/metrics_server.py)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client.core import InfoMetricFamily
from prometheus_client.registry import Collector

from snoopbus.proto import metric_names as names
from snoopbus.proto.metrics_server import MetricsServer, family, new_registry

if TYPE_CHECKING:
    from snoopbus.consumers.runtime import Runtime


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
        for metric, samples in self.runtime.consumer.metrics():
            yield family(metric, *samples)
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
