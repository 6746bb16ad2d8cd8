"""`snoopbus tail`: live events (and alerts) from the bus, for humans and for pipes.

On a terminal each event is one coloured line (renamed events as `old → new`,
alerts highlighted in their level's colour); `--json` prints one JSON object
per line instead. Filters: --type and --host narrow the subscription itself;
--path (glob), --pid and --comm are checked on each event.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from snoopbus.consumers.alert.wire import decode_alert
from snoopbus.consumers.lines import (
    colour_alert,
    colour_event,
    format_alert,
    format_event,
    to_json,
)
from snoopbus.proto import (
    EVENT_TYPES,
    BusUnavailable,
    DecodeError,
    NatsAuth,
    SchemaError,
    SubjectError,
    alerts_filter,
    connect,
    decode_batch,
    events_filter,
    settings_file,
)
from snoopbus.proto.settings_file import ConfigError


def _list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "tail",
        help="print live events as they happen",
        description="Print live events from the bus, one readable line each (or JSON lines). "
        "Alerts are printed too, highlighted. Repeat a filter, or give a comma-separated list, "
        "for several values.",
    )
    settings_file.add_nats_flag(p)
    settings_file.add_config_flag(p)
    p.add_argument("--subject", default=None,
                   help="raw subject filter, instead of the filters below "
                   f"(e.g. {events_filter()})")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--alerts", action="store_true",
                   help=f"print alerts only (subject {alerts_filter()})")
    p.add_argument("--no-alerts", action="store_true", help="print events only")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour the lines: auto = on a terminal unless $NO_COLOR is set")
    f = p.add_argument_group("filters")
    f.add_argument("--type", action="extend", type=_list, default=[], metavar="TYPE",
                   help=f"event types ({', '.join(EVENT_TYPES)})")
    f.add_argument("--host", action="extend", type=_list, default=[], metavar="HOST",
                   help="host names")
    f.add_argument("--path", action="extend", type=_list, default=[], metavar="GLOB",
                   help="file path glob, e.g. '/etc/*' ('*' also crosses '/'); a rename "
                   "matches on either name")
    f.add_argument("--pid", action="extend", type=lambda t: [int(x) for x in _list(t)],
                   default=[], metavar="PID", help="process ids")
    f.add_argument("--comm", action="extend", type=_list, default=[], metavar="COMM",
                   help="process names (comm, as in ps)")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class Match:
    """The per-event filters (type and host are in the subscription)."""

    paths: tuple[str, ...] = ()
    pids: frozenset[int] = frozenset()
    comms: frozenset[str] = frozenset()

    def __call__(self, ev: Mapping[str, Any]) -> bool:
        proc = ev.get("proc") or {}
        if self.pids and proc.get("pid") not in self.pids:
            return False
        if self.comms and proc.get("comm") not in self.comms:
            return False
        if self.paths:
            file = ev.get("file") or {}
            names = [str(n) for n in (file.get("path"), file.get("old_path")) if n]
            if not any(fnmatch.fnmatchcase(n, g) for n in names for g in self.paths):
                return False
        return True


def subjects(args: argparse.Namespace) -> list[str]:
    """What to subscribe to: events (by host and type) and, unless told not to, alerts."""
    if args.subject:
        return [args.subject]
    hosts = args.host or ["*"]
    out: list[str] = []
    if not args.alerts:
        out += [events_filter(host=h, type=t) for h in hosts for t in (args.type or ["*"])]
    if not args.no_alerts:
        out += [alerts_filter(host=h) for h in hosts]
    return out


def use_colour(mode: str, as_json: bool) -> bool:
    if as_json or mode == "never":
        return False
    return mode == "always" or (sys.stdout.isatty() and not os.environ.get("NO_COLOR"))


async def tail(
    url: str, subjects: list[str], as_json: bool, match: Match = Match(), colour: bool = False,
    auth: NatsAuth | None = None,
) -> None:
    nc = await connect(url, name="snoopbus-tail", auth=auth)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    out = sys.stdout

    async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
        try:
            if msg.subject.startswith(alerts_filter().removesuffix("*.*")):
                alert = decode_alert(msg.data)  # one map per message, not a batch
                if match(alert.get("event") or {}):
                    line = to_json(alert) if as_json else format_alert(alert)
                    out.write((colour_alert(line, alert) if colour else line) + "\n")
                    out.flush()
                return
            events = decode_batch(msg.data)
        except (DecodeError, SchemaError) as exc:
            print(f"{msg.subject}: undecodable message: {exc}", file=sys.stderr)
            return
        for ev in events:
            if not match(ev):
                continue
            if as_json:
                out.write(to_json(ev) + "\n")
            else:
                line = format_event(ev)
                out.write((colour_event(line, ev) if colour else line) + "\n")
        out.flush()

    for subject in subjects:
        await nc.subscribe(subject, cb=on_msg)
    await stop.wait()
    await nc.drain()


def run(args: argparse.Namespace) -> int:
    try:
        cfg = settings_file.load(args.config, flags={"nats.url": args.nats})
        url = cfg.nats.url
        wanted = subjects(args)
        match = Match(tuple(args.path), frozenset(args.pid), frozenset(args.comm))
        asyncio.run(tail(url, wanted, args.json, match, use_colour(args.color, args.json),
                         auth=NatsAuth.from_section(cfg.nats)))
    except (ConfigError, SubjectError) as exc:
        print(f"snoopbus tail: {exc}", file=sys.stderr)
        return 2
    except BusUnavailable as exc:
        print(f"snoopbus tail: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        pass  # `snoopbus tail | head` closed the pipe
    return 0
