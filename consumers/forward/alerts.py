"""Alerts as the forwarder sees them, whatever shape the alerter settles on.

Alerts are one msgpack map per message on `snoopbus.alerts.<host>.<level>`.
The alerter's map (proto/alert_map.py, proto/fields.py ALERT_FIELDS) is `{v, id, ts, host, level,
rule: {id, title, level, tags, description, ...}, event, count, ...}`. A flat
rule (`rule_id`, `title`, `tags` at the top) is read too; the level falls
back to the subject's, id/ts/host to ones derived from the event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from snoopbus.proto import ALERT_LEVELS
from snoopbus.proto.alert_map import LEVEL_RANK, level_rank


class AlertError(ValueError):
    pass


@dataclass(frozen=True)
class Alert:
    rule_id: str
    title: str
    level: str
    tags: tuple[str, ...]
    event: Mapping[str, Any]  # the event that matched; may be empty
    description: str = ""
    alert_id: str = ""
    alert_ts: int | None = None
    alert_host: str = ""
    count: int = 1
    category: str = ""  # the Sigma log source category the event was matched as
    references: tuple[str, ...] = ()
    author: str = ""

    @property
    def host(self) -> str:
        return self.alert_host or str(self.event.get("host", ""))

    @property
    def ts(self) -> int | None:
        if self.alert_ts is not None:
            return self.alert_ts
        ts = self.event.get("ts")
        return ts if isinstance(ts, int) else None

    @property
    def id(self) -> str:
        """Stable per rule and event, so a re-sent alert dedups like an event."""
        return self.alert_id or f"{self.rule_id}:{self.event.get('id', '')}"

    @property
    def rank(self) -> int:
        return level_rank(self.level)


def parse_alert(obj: Mapping[Any, Any], subject_level: str | None = None) -> Alert:
    rule = obj.get("rule")
    src: Mapping[Any, Any] = rule if isinstance(rule, Mapping) else obj
    rule_id = src.get("id") if src is rule else obj.get("rule_id")
    if rule_id is None or rule_id == "":
        raise AlertError("alert: no rule id (rule.id or rule_id)")
    level = src.get("level", obj.get("level", subject_level))
    if not isinstance(level, str) or level not in LEVEL_RANK:
        raise AlertError(f"alert: level {level!r} is not one of {', '.join(ALERT_LEVELS)}")
    tags = src.get("tags", obj.get("tags")) or ()
    if not isinstance(tags, list | tuple):
        raise AlertError("alert: tags must be a list")
    references = src.get("references") or ()
    if isinstance(references, str):
        references = [references]
    elif not isinstance(references, list | tuple):
        raise AlertError("alert: references must be a list")
    event = obj.get("event") or {}
    if not isinstance(event, Mapping):
        raise AlertError("alert: event must be a map")
    return Alert(
        rule_id=str(rule_id),
        title=str(src.get("title", obj.get("title", rule_id))),
        level=str(level),
        tags=tuple(str(t) for t in tags),
        event=event,
        description=str(src.get("description", obj.get("description", "")) or ""),
        alert_id=str(obj["id"]) if src is rule and obj.get("id") else "",
        alert_ts=obj["ts"] if isinstance(obj.get("ts"), int) else None,
        alert_host=str(obj.get("host") or ""),
        count=obj["count"] if isinstance(obj.get("count"), int) else 1,
        category=str(obj.get("category") or ""),
        references=tuple(str(r) for r in references if r),
        author=str(src.get("author") or ""),
    )
