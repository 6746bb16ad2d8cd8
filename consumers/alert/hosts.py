"""Which hosts went quiet, stalled or started losing events: pure logic, no I/O.

Fed with every meta report a collector publishes (snoopbus.meta.<host>.<what>:
status, heartbeat, loss) and asked now and then (`check`), `HostHealth`
returns the alerts to publish, each once per episode:

- silent   no report for `silent_after` s (killed, network cut, host down)
- stalled  the collector says it captures events and cannot publish them
- loss     the count of lost events rose by `loss_jump` or more within `loss_window` s
- stopped  the collector said it stopped (a clean stop, by whoever)
- back     a report from a host that was silent, stalled or stopped: the
           recovery note, at level low, naming what it recovers from

Times are seconds on any clock that does not go back, given by the caller:
the alerter uses time.monotonic(), `snoopbus fleet` wall-clock seconds. The
host is the subject's token (the bus lets a collector publish its own host's
subjects only), never the report's body.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from snoopbus.proto.subjects import REPORTS

from .wire import ALERT_VERSION  # not .alerts: this module needs no pySigma

SILENT_AFTER: Final = 60.0
LOSS_JUMP: Final = 1000
LOSS_WINDOW: Final = 60.0
CATEGORY: Final = "snoopbus_host"
TAGS: Final = ["snoopbus.health"]

# condition -> (rule id, title, level, description)
RULES: Final[dict[str, tuple[str, str, str, str]]] = {
    "silent": ("snoopbus-host-silent", "snoopbus host silent", "high",
               "No heartbeat, status or loss report from this host's collector for longer "
               "than silent_after: it was killed, its network was cut, or the host is down."),
    "stalled": ("snoopbus-collector-stalled", "snoopbus collector stalled", "high",
                "The collector captures events and has published none for stall_after "
                "seconds: they wait in memory or in the spill, and may be lost."),
    "loss": ("snoopbus-events-lost", "snoopbus events lost", "high",
             "The collector's count of lost events rose by loss_jump or more within "
             "loss_window seconds (a flood can hide activity in the loss)."),
    "stopped": ("snoopbus-collector-stopped", "snoopbus collector stopped", "medium",
                "The collector reported a clean stop: nothing is watched on this host "
                "until it starts again."),
    "back": ("snoopbus-host-back", "snoopbus host reporting again", "low",
             "The host's collector reports again after it was silent, stalled or stopped."),
}  # fmt: skip


@dataclass(frozen=True)
class HealthConfig:
    silent_after: float = SILENT_AFTER  # s; 0 turns the silence check off
    loss_jump: int = LOSS_JUMP  # lost events; 0 turns the loss check off
    loss_window: float = LOSS_WINDOW  # s

    def __post_init__(self) -> None:
        if self.silent_after < 0 or self.loss_jump < 0 or self.loss_window <= 0:
            raise ValueError("host health: silent_after and loss_jump must be >= 0 "
                             "(0: off), loss_window > 0")  # fmt: skip


@dataclass
class HostView:
    """What is known of one host: its last reports and its open conditions."""

    host: str
    last_seen: float = 0.0  # caller's clock, at the last report
    last_ts: int = 0  # ns, the last report's own timestamp (the collector's clock)
    last_what: str = ""
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)  # what -> last body
    stalled: bool = False
    stopped: bool = False
    instance: str = ""
    # (time, lost total) of this collector instance, within loss_window
    losses: deque[tuple[float, int]] = field(default_factory=deque)
    last_loss_alert: float | None = None
    open: set[str] = field(default_factory=set)  # conditions alerted and not recovered
    since: float = 0.0  # the last report before the oldest open condition

    def state(self, now: float, silent_after: float) -> str:
        """running, stalled, stopped or silent."""
        if self.stopped:
            return "stopped"
        if silent_after > 0 and now - self.last_seen >= silent_after:
            return "silent"
        return "stalled" if self.stalled else "running"

    @property
    def lost(self) -> int:
        return self.losses[-1][1] if self.losses else (_lost_of(self.reports) or 0)

    @property
    def version(self) -> str:
        return next((str(r["version"]) for r in self._newest_first() if r.get("version")), "")

    def _newest_first(self) -> list[dict[str, Any]]:
        return sorted(self.reports.values(), key=lambda r: _int(r.get("ts")), reverse=True)


class HostHealth:
    """Per-host state and the alerts it calls for."""

    def __init__(self, config: HealthConfig | None = None) -> None:
        self.config = config or HealthConfig()
        self.hosts: dict[str, HostView] = {}

    def observe(
        self, host: str, what: str, body: Mapping[str, Any], now: float
    ) -> list[dict[str, Any]]:
        """A report from `host` (its subject token) seen at `now`; the alerts it raises."""
        view = self.hosts.get(host)
        if view is None:
            view = self.hosts[host] = HostView(host)
        if now < view.last_seen:  # an older report (a seed read after a live one)
            return []
        view.last_seen, view.last_what = now, what
        view.last_ts = _int(body.get("ts")) or view.last_ts
        if what in REPORTS:
            view.reports[what] = dict(body)
        instance = str(body.get("instance") or "")
        if instance != view.instance:  # a new collector: its loss count starts again
            view.instance = instance
            view.losses.clear()
        alerts: list[dict[str, Any]] = []
        state = body.get("state") if what == "status" else None
        view.stopped = state == "stopped"
        if view.stopped:
            view.stalled = False
            alerts += self._raise(view, "stopped", now)
            return alerts
        if state in ("ready", "running", "stalled") or (what == "heartbeat" and "stalled" in body):
            view.stalled = state == "stalled" or bool(body.get("stalled"))
        back = [c for c in ("silent", "stopped") if c in view.open]
        if "stalled" in view.open and not view.stalled:
            back.append("stalled")
        if back:
            alerts.append(self._alert(view, "back", now, recovered=sorted(back)))
            view.open -= set(back)
        if view.stalled:
            alerts += self._raise(view, "stalled", now)
        alerts += self._loss(view, what, body, now)
        return alerts

    def check(self, now: float) -> list[dict[str, Any]]:
        """Alerts for hosts that went silent by `now`."""
        alerts: list[dict[str, Any]] = []
        for view in self.hosts.values():
            if view.state(now, self.config.silent_after) == "silent":
                alerts += self._raise(view, "silent", now)
        return alerts

    # -- helpers -----------------------------------------------------------

    def _raise(self, view: HostView, condition: str, now: float) -> list[dict[str, Any]]:
        if condition in view.open:
            return []
        if not view.open:  # the episode began with the last report (or with this one)
            view.since = view.last_seen
        view.open.add(condition)
        return [self._alert(view, condition, now)]

    def _loss(
        self, view: HostView, what: str, body: Mapping[str, Any], now: float
    ) -> list[dict[str, Any]]:
        total = _lost_of({what: dict(body)}) if what in ("loss", "heartbeat", "status") else None
        if total is None or self.config.loss_jump <= 0:
            return []
        window = self.config.loss_window
        losses = view.losses
        if losses and total < losses[-1][1]:  # counted anew (same instance restarted)
            losses.clear()
        losses.append((now, total))
        while len(losses) > 1 and losses[1][0] <= now - window:
            losses.popleft()  # keep one sample at or before the window's start
        rose = total - losses[0][1]
        recent = view.last_loss_alert is not None and now - view.last_loss_alert < window
        if rose < self.config.loss_jump or recent:
            return []
        view.last_loss_alert = now
        return [self._alert(view, "loss", now, lost=total, rose=rose,
                            over_s=round(now - losses[0][0], 1))]  # fmt: skip

    def _alert(self, view: HostView, condition: str, now: float, **extra: Any) -> dict[str, Any]:
        rule_id, title, level, description = RULES[condition]
        quiet = now - view.last_seen
        fields: dict[str, Any] = {
            "condition": condition,
            "last_report": view.last_what,
            "last_report_ts": view.last_ts or None,
            "silent_s": round(quiet, 1),
            "instance": view.instance or None,
            "version": view.version or None,
            **extra,
        }
        if condition == "silent":
            fields["silent_after"] = self.config.silent_after
        if condition == "stalled":
            beat = view.reports.get("status") or view.reports.get("heartbeat") or {}
            fields["stalled_s"] = beat.get("stalled_s")
            fields["last_error"] = beat.get("last_error")
        if condition == "back":
            fields["down_s"] = round(now - view.since, 1)
        ts = time.time_ns()
        return {
            "v": ALERT_VERSION,
            # The same for every alerter that sees this episode: the stream's
            # duplicate window drops the copies of alerters sharing a durable.
            "id": f"{rule_id}:{view.host}:{view.last_ts}:{view.instance}",
            "ts": ts,
            "host": view.host,
            "level": level,
            "rule": {"id": rule_id, "title": title, "level": level, "tags": list(TAGS),
                     "description": description, "source": "builtin"},
            "category": CATEGORY,
            "selections": [condition],
            "fields": {k: v for k, v in fields.items() if v is not None},
            "event": {},
            "count": 1,
            "first_ts": ts,
            "last_ts": ts,
        }


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _lost_of(reports: Mapping[str, Mapping[str, Any]]) -> int | None:
    """The collector's lost total from its newest report that counts it."""
    counts = [(_int(r.get("ts")), r.get("total", r.get("lost"))) for w, r in reports.items()
              if w in REPORTS]  # fmt: skip
    counts = [(ts, n) for ts, n in counts if isinstance(n, int) and not isinstance(n, bool)]
    return max(counts)[1] if counts else None
