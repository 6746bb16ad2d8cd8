"""Forwarding to SIEMs: `snoopbus consume forward --to SINK ...`.

One module per sink format (syslog, cef, ecs, ocsf, otlp, splunk, webhook,
jsonl) over a shared core (spec, worker, backoff, runtime) and the consumers' HTTP
client (consumers/http.py). See docs/README.md.
"""

from .alerts import Alert, parse_alert
from .backoff import Backoff, Gate
from .forwarder import Forwarder
from .sink import Item, Permanent, Sent, Sink, Transient
from .spec import SinkSpec, SpecError, parse_spec
from .worker import SinkStats, SinkWorker

__all__ = [
    "Alert",
    "Backoff",
    "Forwarder",
    "Gate",
    "Item",
    "Permanent",
    "Sent",
    "Sink",
    "SinkSpec",
    "SinkStats",
    "SinkWorker",
    "SpecError",
    "Transient",
    "parse_alert",
    "parse_spec",
]
