"""The alert map on `snoopbus.alerts.<host>.<level>`: its version, the levels'
ranking, its shape for type checkers, and where readers find its parts.

The keys are proto/fields.py's ALERT_FIELDS (tests/proto/test_proto_fields.py holds
the TypedDicts below to them). Alerts are not validated as events are: a
reader takes what it understands and falls back where a part is missing or
spelled flat (`rule_id`, `title` at the top, as a bare publisher may send).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, TypedDict

from snoopbus.proto.fields import ALERT_LEVELS

ALERT_VERSION: Final = 1  # the map's `v`
# informational 0 ... critical 4: the one ranking of levels.
LEVEL_RANK: Final[Mapping[str, int]] = {level: rank for rank, level in enumerate(ALERT_LEVELS)}


def level_rank(level: object) -> int:
    """A level's rank; 0 (informational) for anything that is not a level."""
    return LEVEL_RANK.get(level, 0) if isinstance(level, str) else 0


class AlertRule(TypedDict, total=False):
    id: str
    title: str
    level: str
    tags: list[str]
    source: str
    description: str
    status: str
    author: str
    references: list[str]
    falsepositives: list[str]


class Correlation(TypedDict, total=False):
    type: str
    group: dict[str, Any]
    count: int
    timespan_s: float
    rules: list[str]
    events: list[str]


class AlertMap(TypedDict, total=False):
    v: int
    id: str
    ts: int
    host: str
    level: str
    rule: AlertRule
    category: str
    selections: list[str]
    fields: dict[str, Any]
    event: dict[str, Any]  # an event map (schema.Event), or empty
    count: int
    first_ts: int
    last_ts: int
    folded: bool
    correlation: Correlation


# Where a part of an alert is found, first match wins: where the alerter puts
# it, then the flat spelling.
Path = tuple[str, ...]
RULE_ID: Final[tuple[Path, ...]] = (("rule", "id"), ("rule_id",))
TITLE: Final[tuple[Path, ...]] = (("rule", "title"), ("title",))
CATEGORY: Final[tuple[Path, ...]] = (("category",), ("rule", "category"))
EVENT_ID: Final[tuple[Path, ...]] = (("event", "id"), ("event_id",))


def dig(obj: Any, path: Path) -> Any:
    """The value at `path` in nested maps; None where any step is missing or not a map."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def find(alert: Mapping[Any, Any], paths: tuple[Path, ...]) -> Any:
    """The first of `paths` that holds a value (not None) in `alert`; None if none does."""
    for path in paths:
        value = dig(alert, path)
        if value is not None:
            return value
    return None
