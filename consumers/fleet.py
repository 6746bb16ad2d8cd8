"""`snoopbus fleet [--json]`: every host the stream has heard of, and how its collector is.

Read from the stream (consumers/host_reports.py), with the reader's rights:
the hosts with meta reports or events, each host's last status, heartbeat
and loss report, and the time of its newest event. Its state is the one the
alerter's host-health check gives (consumers/alert/hosts.py) at
--silent-after: running, stalled, stopped, silent, or "no reports" for a
host that published events but never a report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors

from snoopbus.proto import BusUnavailable, NatsAuth, connect, exits, local_stack, settings_file

from .alert.hosts import SILENT_AFTER, HealthConfig, HostHealth
from .host_reports import hosts_in_stream, last_event_time, last_reports
from .lines import printable


class FleetError(RuntimeError):
    """The stream could not be read; the message says why."""


@dataclass(frozen=True)
class HostRow:
    host: str
    state: str  # running | stalled | stopped | silent | no reports
    last_event: str | None  # ISO 8601 UTC, when the stream stored its newest event
    last_heartbeat: str | None  # ... its last heartbeat
    last_report: str | None  # ... its last report of any kind (status, heartbeat, loss)
    lost: int | None  # events the collector counted lost (this run of it)
    lost_by_reason: dict[str, int]
    version: str | None  # the collector's snoopbus version
    instance: str | None


async def read_fleet(
    url: str, auth: NatsAuth | None = None, silent_after: float = SILENT_AFTER
) -> list[HostRow]:
    nc = await connect(url, name="snoopbus-fleet", auth=auth)
    try:
        js = nc.jetstream(timeout=5)
        try:
            hosts = await hosts_in_stream(js, events=True)
            now = time.time()
            health = HostHealth(HealthConfig(silent_after=silent_after))
            rows = []
            for host in sorted(hosts):
                reports = await last_reports(js, host)
                for r in reports:
                    health.observe(host, r.what, r.body, r.stored)
                rows.append(_row(host, health, reports, await last_event_time(js, host), now))
            return rows
        except nats.js.errors.NotFoundError:
            raise FleetError("no stream SNOOPBUS on this server: no collector has "
                             "published there yet") from None  # fmt: skip
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise FleetError(f"could not read the stream: {exc}") from None
    finally:
        await nc.close()


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _row(host: str, health: HostHealth, reports: list[Any], event: float | None,
         now: float) -> HostRow:  # fmt: skip
    stored = {r.what: r.stored for r in reports}
    view = health.hosts.get(host)
    if view is None:
        return HostRow(host, "no reports", _iso(event), None, None, None, {}, None, None)
    loss = view.reports.get("loss") or {}
    dropped = loss.get("dropped") if loss.get("instance") == view.instance else None
    return HostRow(
        host=host,
        state=view.state(now, health.config.silent_after),
        last_event=_iso(event),
        last_heartbeat=_iso(stored.get("heartbeat")),
        last_report=_iso(max(stored.values())),
        lost=view.lost,
        lost_by_reason={str(k): int(v) for k, v in (dropped or {}).items()
                        if isinstance(v, int)},
        version=view.version or None,
        instance=view.instance or None,
    )


def _ago(iso: str | None, now: float) -> str:
    if iso is None:
        return "-"
    s = max(0, int(now - datetime.fromisoformat(iso).timestamp()))
    return f"{s}s ago" if s < 120 else f"{s // 60}m ago" if s < 7200 else f"{s // 3600}h ago"


def render(rows: list[HostRow], now: float | None = None) -> str:
    now = time.time() if now is None else now
    head = ("HOST", "STATE", "LAST EVENT", "LAST HEARTBEAT", "LOST", "VERSION")
    table = [head] + [
        (printable(r.host), r.state, _ago(r.last_event, now), _ago(r.last_heartbeat, now),
         "-" if r.lost is None else str(r.lost), printable(r.version or "-"))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in table]  # fmt: skip
    if not rows:
        lines.append("(no host has published on this stream)")
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "fleet",
        help="list every host seen on the bus, and how its collector is",
        description="Every host the stream holds reports or events of: state (running, "
        "stalled, stopped, silent), last event, last heartbeat, events lost, collector version.",
    )
    settings_file.add_nats_flag(p)
    settings_file.add_config_flag(p)
    p.add_argument("--json", action="store_true", help="a JSON list, one object per host")
    p.add_argument("--silent-after", type=float, default=None, metavar="SECONDS",
                   help="a host with no report for this long is silent (default: "
                   f"[consumer.alert] silent_after, else {SILENT_AFTER:g})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = local_stack.load_config(args.config, "reader", "fleet", args.nats)
        silent_after = args.silent_after
        if silent_after is None:
            silent_after = float(cfg.consumer_options("alert").get("silent_after", SILENT_AFTER))
        rows = asyncio.run(read_fleet(cfg.nats.url, NatsAuth.from_section(cfg.nats),
                                      silent_after))  # fmt: skip
    except (*local_stack.CONFIG_ERRORS, BusUnavailable, FleetError, ValueError) as exc:
        return exits.fail("fleet", exc)
    if args.json:
        json.dump([asdict(r) for r in rows], sys.stdout, indent=2)
        print()
    else:
        print(render(rows))
    return 0
