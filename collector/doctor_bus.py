"""`snoopbus doctor --nats URL`: what a running collector last reported.

The stream keeps every collector's meta messages (snoopbus.meta.<host>.*), so
the last status, heartbeat and loss report of a host can be read back from it
at any time, even while that collector is down: its state (`stalled` when it
captured events and published none for `stall_after` seconds), how much it
published, and what it lost, by reason and by event type.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import nats.js.errors
from nats.js import JetStreamContext

from snoopbus.collector.stream_watch import StreamView, read_stream
from snoopbus.proto import (
    STREAM_NAME,
    DecodeError,
    NatsAuth,
    connect,
    decode_map,
    meta_subject,
)
from snoopbus.proto.bus import last_stored
from snoopbus.proto.stream_limits import human_bytes
from snoopbus.proto.subjects import REPORTS


@dataclass
class BusReport:
    """The last meta report of each kind, by what: None if the stream has none."""

    host: str
    url: str
    reports: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    error: str = ""  # NATS could not be asked; the reason
    stream: StreamView | None = None  # its fill and limit, each durable's lag and missed

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "url": self.url, "error": self.error or None,
                "reports": self.reports,
                "stream": asdict(self.stream) if self.stream is not None else None}


async def last_reports(
    url: str, host: str, auth: NatsAuth | None = None, warn_percent: float = 80.0
) -> BusReport:
    out = BusReport(host, url)
    nc = await connect(url, name="snoopbus-doctor", auth=auth)
    try:
        js = nc.jetstream(timeout=3)
        for what in REPORTS:
            out.reports[what] = await _last(js, meta_subject(host, what))
        try:
            durables = [c.config.durable_name for c in await js.consumers_info(STREAM_NAME)
                        if c.config.durable_name]  # fmt: skip
            out.stream = await read_stream(js, durables, warn_percent=warn_percent, timeout=3)
        except nats.js.errors.NotFoundError:
            pass  # no stream: the reports above say so
    finally:
        await nc.close()
    return out


async def _last(js: JetStreamContext, subject: str) -> dict[str, Any] | None:
    msg = await last_stored(js, subject)
    if msg is None:
        return None
    try:
        return decode_map(msg.data or b"")
    except DecodeError as exc:
        return {"undecodable": str(exc)}


def _ago(ts_ns: object) -> str:
    if not isinstance(ts_ns, int):
        return ""
    return f" ({max(0.0, time.time() - ts_ns / 1e9):.0f} s ago)"


def render(report: BusReport) -> list[str]:
    lines = [f"Collector on {report.host}, as reported on {report.url}:"]
    if report.error:
        return [*lines, f"  could not ask NATS: {report.error}"]
    return _collector_lines(report, lines) + _stream_lines(report.stream)


def _stream_lines(s: StreamView | None) -> list[str]:
    if s is None:
        return []
    lines = [f"Stream {STREAM_NAME}: {s.messages} messages, {human_bytes(s.bytes)} of "
             f"{human_bytes(s.max_bytes)} (first sequence {s.first_seq})"]
    lines += [f"  WARNING: {w}" for w in s.warnings]
    for name in sorted(s.lag):
        pending, acking = s.lag[name]
        missed = s.missed.get(name, 0)
        lines.append(f"  consumer {name}: lag {pending}, unacked {acking}, missed "
                     + (f"{missed} (removed by retention before it read them)" if missed
                        else "none"))
    return lines


def _collector_lines(report: BusReport, lines: list[str]) -> list[str]:
    status, beat, loss = (report.reports.get(w) for w in REPORTS)
    if status is None and beat is None:
        return [*lines, f"  no report from host {report.host!r} in stream {STREAM_NAME} "
                        "(no collector with that --host has published there)"]
    latest = _newest(status, beat)
    assert latest is not None
    state = latest.get("state", "running (heartbeat)")
    if latest.get("stalled") and state != "stopped":
        state = "stalled"
    lines.append(f"  state: {state}{_ago(latest.get('ts'))}")
    if state == "stalled":
        lines.append(f"    events captured and none published for {latest.get('stalled_s', '?')} s"
                     f"; last error: {latest.get('last_error') or 'none'}")
    silent = _silent_for(latest)
    if silent is not None and state != "stopped":
        lines.append(f"    no report for {silent:.0f} s (one was due every "
                     f"{latest['interval']:g} s): the collector is down, or cannot publish")
    stats = _newest(*(r for r in (status, beat) if r is not None and "published" in r))
    for key in ("captured", "published", "records", "buffered", "spilled"):
        if stats is not None and key in stats:
            lines.append(f"  {key}: {stats[key]}")
    # The loss report is sent whenever the count changes; stats only now and then.
    counted = _newest(stats, loss)
    if counted is None:
        lines.append("  lost: not reported yet (the first heartbeat or loss report says)")
        return lines
    lost = counted.get("total", counted.get("lost", 0))
    lines.append(f"  lost: {lost or 'none'}{_ago(counted.get('ts'))}")
    if lost and stats is not None and stats.get("lost_by_type"):
        by_type = ", ".join(f"{k}={v}" for k, v in sorted(stats["lost_by_type"].items()))
        lines.append(f"    in the kernel, by type: {by_type}")
    if lost and loss is not None and loss.get("dropped"):
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(loss["dropped"].items()))
        lines.append(f"    by reason: {reasons}")
    return lines


def _silent_for(report: dict[str, Any]) -> float | None:
    """Seconds since `report`, when that is over three heartbeat intervals; else None."""
    ts, interval = report.get("ts"), report.get("interval")
    if not isinstance(ts, int) or not isinstance(interval, int | float) or interval <= 0:
        return None
    age = time.time() - ts / 1e9
    return age if age > 3 * interval else None


def _newest(*reports: dict[str, Any] | None) -> dict[str, Any] | None:
    present = [r for r in reports if r is not None]
    return max(present, key=lambda r: r.get("ts", 0) if isinstance(r.get("ts"), int) else 0,
               default=None)
