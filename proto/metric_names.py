"""Every snoopbus metric: its name as PromQL sees it, kind, labels, help and former name.

The one place a metric name is written: each process's metrics module
(collector/metrics.py, consumers/metrics.py, app/stack_metrics.py) builds its
families from these, README.md's table lists them (tests/test_metric_names.py
checks both ways), and the Grafana dashboard and Prometheus rules in
collector/deploy/ query them (tests/test_observability.py scrapes a running
stack for each one they use).

Names follow Prometheus' conventions: counters end in `_total`, a gauge ends
in its unit (`_messages`, `_events`, `_bytes`, `_seconds`, `_ratio`) unless it
is a 0/1 state. `renamed_from` keeps the name a metric had before 0.2, for
README's list of renames (dashboards and alerts written against the old
names must be updated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram", "info"]
Component = Literal["collector", "consumer", "up", "all"]


@dataclass(frozen=True)
class Metric:
    name: str  # as queried: counters with _total, info with _info, a histogram's base name
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    component: Component = "all"
    renamed_from: str | None = None

    @property
    def family(self) -> str:
        """The name prometheus_client's families take (it adds `_info` itself)."""
        return self.name.removesuffix("_info") if self.kind == "info" else self.name

    def exposed(self) -> list[str]:
        """The sample names a scrape shows for it."""
        if self.kind == "histogram":
            return [f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count"]
        return [self.name]


# Every process.
BUILD_INFO = Metric(
    "snoopbus_build_info", "info",
    "snoopbus, Python and kernel versions of this process, and which part of snoopbus it is",
    ("version", "python", "kernel", "component"),
)

# The collector (collector/agent.py).
COLLECTOR_READY = Metric(
    "snoopbus_collector_ready", "gauge", "1 once the probes are loaded", component="collector")
EVENTS_LOST = Metric(
    "snoopbus_collector_events_lost_total", "counter", "Events lost, by reason",
    ("reason",), "collector")
KERNEL_RECORDS_LOST = Metric(
    "snoopbus_collector_kernel_records_lost_total", "counter",
    "Records the kernel ring buffer had no room for, by event type", ("type",), "collector",
    renamed_from="snoopbus_collector_kernel_lost_total")
RECORDS_READ = Metric(
    "snoopbus_collector_records_read_total", "counter", "Ring-buffer records read",
    component="collector")
EVENTS_CAPTURED = Metric(
    "snoopbus_collector_events_captured_total", "counter",
    "Events built from records and handed to the publisher, by type", ("type",), "collector")
EVENTS_PUBLISHED = Metric(
    "snoopbus_collector_events_published_total", "counter",
    "Events acknowledged by JetStream, by type", ("type",), "collector")
PUBLISH_BUFFERED = Metric(
    "snoopbus_collector_publish_buffered_events", "gauge", "Events waiting for JetStream",
    component="collector", renamed_from="snoopbus_collector_publish_buffered")
PUBLISH_STALLED = Metric(
    "snoopbus_collector_publish_stalled", "gauge",
    "1 while events were captured and none published for longer than stall_after",
    component="collector")
PUBLISH_STALLED_SECONDS = Metric(
    "snoopbus_collector_publish_stalled_seconds", "gauge",
    "Seconds since the first event captured after the last one published (0: none waits)",
    component="collector")
PUBLISH_LIMIT = Metric(
    "snoopbus_collector_publish_limit_bytes", "gauge",
    "Bytes a message may take: the server's max_payload (or the stream's max_msg_size)",
    component="collector")
RINGBUF_FILL = Metric(
    "snoopbus_collector_ringbuf_fill_ratio", "gauge",
    "Share of the BPF ring buffer written and not yet read (0..1)", component="collector")
PUBLISH_LATENCY = Metric(
    "snoopbus_collector_publish_latency_seconds", "histogram",
    "JetStream publish to ack, per message (a batch of events)", component="collector")

# Each consumer (consumers/runtime.py); labelled by its durable's name.
_C = ("consumer",)
FETCHED = Metric(
    "snoopbus_consumer_messages_fetched_total", "counter", "Messages received from JetStream",
    _C, "consumer", "snoopbus_consumer_fetched_total")
PROCESSED = Metric(
    "snoopbus_consumer_messages_processed_total", "counter", "Messages handled and acked",
    _C, "consumer", "snoopbus_consumer_processed_total")
HANDLER_FAILURES = Metric(
    "snoopbus_consumer_handler_failures_total", "counter",
    "Handler failures, per message and attempt", _C, "consumer",
    "snoopbus_consumer_failed_total")
RETRIED = Metric(
    "snoopbus_consumer_messages_retried_total", "counter", "Messages nak'd for redelivery",
    _C, "consumer", "snoopbus_consumer_retried_total")
MISSED = Metric(
    "snoopbus_consumer_messages_missed_total", "counter",
    "Messages the stream removed (retention) before this consumer read them",
    _C, "consumer", "snoopbus_consumer_missed_total")
DEAD_LETTERED = Metric(
    "snoopbus_consumer_messages_dead_lettered_total", "counter",
    "Messages sent to the dead-letter subject, by kind", ("consumer", "kind"), "consumer",
    "snoopbus_consumer_dead_lettered_total")
LAG = Metric(
    "snoopbus_consumer_lag_messages", "gauge",
    "Messages in the stream not yet delivered to this durable (num_pending)",
    _C, "consumer", "snoopbus_consumer_lag")
ACK_PENDING = Metric(
    "snoopbus_consumer_ack_pending_messages", "gauge", "Delivered, not yet acked",
    _C, "consumer", "snoopbus_consumer_ack_pending")
ALERTS = Metric(
    "snoopbus_alerts_total", "counter",
    "Alerts put on the bus, by Sigma rule id and level (folded summaries count once)",
    ("rule_id", "level"), "consumer")
ALERTS_LOST = Metric(
    "snoopbus_alerts_lost_total", "counter",
    "Alerts made outside the stream (host health, folded summaries) given up unsent, by reason",
    ("reason",), "consumer")
META_IGNORED = Metric(
    "snoopbus_alert_meta_messages_ignored_total", "counter",
    "Malformed collector meta messages the alerter's host watch ignored", (), "consumer")
ALERT_RULE_INFO = Metric(
    "snoopbus_alert_rule_info", "info",
    "The title of each Sigma rule counted in snoopbus_alerts_total, by its id",
    ("rule_id", "title"), "consumer")

# `snoopbus up` (app/stack.py): its children and the stream.
CHILD_RUNNING = Metric(
    "snoopbus_up_child_running", "gauge", "1 while the supervised child runs", ("child",), "up")
CHILD_RESTARTS = Metric(
    "snoopbus_up_child_restarts_total", "counter", "Times the child died and was restarted",
    ("child",), "up")
EVENTS_SEEN = Metric(
    "snoopbus_up_events_seen_total", "counter",
    "Events seen on the bus by up's live view, by type", ("type",), "up")
STREAM_BYTES = Metric(
    "snoopbus_stream_bytes", "gauge", "Bytes the stream holds", component="up")
STREAM_MAX_BYTES = Metric(
    "snoopbus_stream_max_bytes", "gauge", "The stream's max_bytes (-1: none)", component="up")
STREAM_FIRST_SEQ = Metric(
    "snoopbus_stream_first_seq", "gauge", "The stream's first sequence", component="up")
STATE_FREE = Metric(
    "snoopbus_state_free_bytes", "gauge", "Bytes free on the state folder's disk",
    component="up")
STREAM_WARNINGS = Metric(
    "snoopbus_stream_warnings", "gauge",
    "Warnings now: stream near its limit, disk nearly full", component="up")
UP_MISSED = Metric(
    "snoopbus_up_consumer_messages_missed_total", "counter",
    "Messages the stream removed (retention) before the consumer read them", _C, "up",
    "snoopbus_up_consumer_missed_total")

ALL: tuple[Metric, ...] = tuple(v for v in globals().values() if isinstance(v, Metric))

# prometheus_client's ProcessCollector, in every process (Linux: from /proc/self).
PROCESS = ("process_cpu_seconds_total", "process_resident_memory_bytes",
           "process_virtual_memory_bytes", "process_start_time_seconds",
           "process_open_fds", "process_max_fds")  # fmt: skip
