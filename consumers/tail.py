"""`snoopbus tail`: live events (and alerts) from the bus, for humans and for pipes.

On a terminal each event is one coloured line (renamed events as `old → new`,
alerts highlighted in their level's colour); `--json` prints one JSON object
per line instead. Filters: --type and --host narrow the subscription itself;
--path (glob), --pid and --comm are checked on each event.

It reads the JetStream stream from the moment it starts, through an ordered
consumer (consumers/follow.py), not a core subscription: a slow terminal or
pipe makes it lag, never lose messages; what the stream itself dropped before
tail got to it is counted and said on stderr. Every value shown is escaped
(consumers/printable.py): the terminal obeys no sequence an event carries.
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
from typing import Any, TextIO

from snoopbus.consumers.alert.wire import decode_alert
from snoopbus.consumers.follow import Follower, FollowError
from snoopbus.consumers.lines import (
    colour_alert,
    colour_event,
    format_alert,
    format_event,
    printable,
    submap,
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
    exits,
    local_stack,
    settings_file,
)


def _list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    follower = Follower(nc.jetstream(), subjects)
    reported = 0
    try:
        await follower.start()
        while not stop.is_set():
            msgs = await follower.fetch(wait=0.5)
            text = "".join(render(msg.subject, msg.data, as_json, match, colour) for msg in msgs)
            if text:
                # In a thread: a terminal or pipe that is slow to take the lines
                # holds back the next fetch, never the connection (pings, acks).
                await asyncio.to_thread(_write, sys.stdout, text)
            if follower.stats.missed > reported:
                _say_missed(follower.stats.missed - reported, follower.stats.missed)
                reported = follower.stats.missed
    finally:
        await follower.close()
        await nc.drain()
    if reported:
        print(f"snoopbus tail: missed {reported} messages in all (dropped by the stream "
              "before tail read them)", file=sys.stderr)  # fmt: skip


def render(subject: str, data: bytes, as_json: bool, match: Match, colour: bool) -> str:
    """The lines for one message (empty when nothing matches); bad ones go to stderr."""
    try:
        if subject.startswith(alerts_filter().removesuffix("*.*")):
            alert = decode_alert(data)  # one map per message, not a batch
            if not match(submap(alert, "event")):
                return ""
            line = to_json(alert) if as_json else format_alert(alert)
            return (colour_alert(line, alert) if colour else line) + "\n"
        events = decode_batch(data)
    except (DecodeError, SchemaError) as exc:
        print(printable(f"{subject}: undecodable message: {exc}"), file=sys.stderr)
        return ""
    lines = []
    for ev in events:
        if not match(ev):
            continue
        if as_json:
            lines.append(to_json(ev) + "\n")
        else:
            line = format_event(ev)
            lines.append((colour_event(line, ev) if colour else line) + "\n")
    return "".join(lines)


def _write(out: TextIO, text: str) -> None:
    out.write(text)
    out.flush()


def _say_missed(now: int, total: int) -> None:
    print(f"snoopbus tail: {now} messages were dropped by the stream (its retention limits) "
          f"before tail read them: tail is slower than the events come ({total} in all)",
          file=sys.stderr, flush=True)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    try:
        cfg = local_stack.load_config(args.config, "reader", "tail", args.nats)
        url = cfg.nats.url
        wanted = subjects(args)
        match = Match(tuple(args.path), frozenset(args.pid), frozenset(args.comm))
        asyncio.run(tail(url, wanted, args.json, match, use_colour(args.color, args.json),
                         auth=NatsAuth.from_section(cfg.nats)))
    except (*local_stack.CONFIG_ERRORS, SubjectError, BusUnavailable, FollowError) as exc:
        return exits.fail("tail", exc)
    except BrokenPipeError:
        pass  # `snoopbus tail | head` closed the pipe
    return 0
