"""Building the alert map published on `snoopbus.alerts.<host>.<level>` (msgpack,
`encode_map`): its keys, types and meanings are proto/fields.py's ALERT_FIELDS
(tabled in proto/README.md "Alert map"), its shape proto/alert_map.py's AlertMap.
"""

from __future__ import annotations

from typing import Any

from snoopbus.proto import ALERT_LEVELS, ALERT_VERSION

from .correlate import Fired
from .engine import Hit


def rule_info(hit: Hit) -> dict[str, Any]:
    rule = hit.rule
    sigma = rule.rule
    info: dict[str, Any] = {"id": rule.id, "title": rule.title, "level": rule.level,
                            "tags": rule.tags, "source": rule.source}  # fmt: skip
    optional = {
        "description": sigma.description,
        "status": str(sigma.status) if sigma.status else None,
        "author": sigma.author,
        "references": list(sigma.references) or None,
        "falsepositives": list(sigma.falsepositives) or None,
    }
    info.update({k: v for k, v in optional.items() if v})
    return info


def build_alert(hit: Hit, count: int = 1, first_ts: int | None = None) -> dict[str, Any]:
    event = hit.event
    ts = int(event.get("ts", 0))
    level = hit.rule.level if hit.rule.level in ALERT_LEVELS else "medium"
    alert: dict[str, Any] = {
        "v": ALERT_VERSION,
        "id": f"{hit.rule.id}:{event.get('id', '?')}",
        "ts": ts,
        "host": str(event.get("host", "")),
        "level": level,
        "rule": rule_info(hit),
        "category": hit.rule.category,
        "selections": list(hit.selections),
        "fields": {k: v for k, v in hit.values.items() if k in hit.rule.fields},
        "event": dict(event),
        "count": count,
        "first_ts": ts if first_ts is None else first_ts,
        "last_ts": ts,
    }
    if count > 1 or first_ts is not None:
        alert["folded"] = True
        alert["id"] += ":folded"
    return alert


def build_correlation_alert(fired: Fired) -> dict[str, Any]:
    """A correlation rule fired: its rule, the group, the count, the last base hit's
    event. `id` is `<correlation id>:<last event id>` (a redelivery re-fires the same)."""
    c, hit = fired.correlation, fired.hit
    event = hit.event
    ts = int(event.get("ts", 0))
    sigma = c.rule
    info: dict[str, Any] = {"id": c.id, "title": c.title, "level": c.level, "tags": c.tags,
                            "source": c.source}  # fmt: skip
    optional = {"description": sigma.description, "author": sigma.author,
                "status": str(sigma.status) if sigma.status else None,
                "references": list(sigma.references) or None,
                "falsepositives": list(sigma.falsepositives) or None}  # fmt: skip
    info.update({k: v for k, v in optional.items() if v})
    return {
        "v": ALERT_VERSION,
        "id": f"{c.id}:{event.get('id', '?')}",
        "ts": ts,
        "host": str(event.get("host", "")),
        "level": c.level if c.level in ALERT_LEVELS else "medium",
        "rule": info,
        "category": hit.rule.category,
        "selections": list(hit.selections),
        "fields": dict(fired.group),
        "event": dict(event),
        "count": fired.count,
        "first_ts": fired.first_ts,
        "last_ts": ts,
        "correlation": {"type": c.kind, "group": dict(fired.group), "count": fired.count,
                        "timespan_s": c.window_ns / 1e9, "rules": list(c.bases),
                        "events": fired.events},
    }
