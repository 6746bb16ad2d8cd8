"""Which class serves which `--to` scheme."""

from __future__ import annotations

from .sink import Sink
from .spec import SinkSpec


def make_sink(spec: SinkSpec) -> Sink:
    # Imported here so a sink's optional dependencies load only when used.
    if spec.format in ("syslog", "cef"):
        from .syslog import SyslogSink

        return SyslogSink(spec)
    if spec.format == "elastic":
        from .ecs import BulkSink

        return BulkSink(spec)
    if spec.format == "otlp":
        from .otlp import OtlpSink

        return OtlpSink(spec)
    if spec.format == "splunk":
        from .splunk import HecSink

        return HecSink(spec)
    if spec.format == "webhook" or (spec.format == "ocsf" and spec.transport in ("http", "https")):
        from .webhook import WebhookSink

        return WebhookSink(spec)
    from .jsonl import LinesSink

    return LinesSink(spec)
