"""`snoopbus tail`: prints live events from the bus as they arrive."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from snoopbus.consumers.alert.wire import decode_alert
from snoopbus.consumers.lines import format_alert, format_event, to_json
from snoopbus.proto import (
    BusUnavailable,
    DecodeError,
    SchemaError,
    alerts_filter,
    connect,
    decode_batch,
    events_filter,
    settings_file,
)
from snoopbus.proto.settings_file import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "tail",
        help="print live events as they happen",
        description="Print live events from the bus, one readable line each (or JSON lines).",
    )
    p.add_argument("--nats", default=None, help="NATS URL(s), comma-separated "
                   "(default: [nats] url, $SNOOPBUS_NATS_URL)")
    settings_file.add_config_flag(p)
    p.add_argument(
        "--subject", default=events_filter(), help="subject filter (default: %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--alerts", action="store_true",
                   help=f"print alerts instead of events (subject {alerts_filter()})")
    p.set_defaults(func=run)


async def tail(url: str, subject: str, as_json: bool, alerts: bool = False) -> None:
    nc = await connect(url, name="snoopbus-tail")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    out = sys.stdout

    async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
        try:
            if alerts:  # one map per message, not a batch
                alert = decode_alert(msg.data)
                out.write((to_json(alert) if as_json else format_alert(alert)) + "\n")
                out.flush()
                return
            events = decode_batch(msg.data)
        except (DecodeError, SchemaError) as exc:
            print(f"{msg.subject}: undecodable message: {exc}", file=sys.stderr)
            return
        for ev in events:
            out.write((to_json(ev) if as_json else format_event(ev)) + "\n")
        out.flush()

    await nc.subscribe(subject, cb=on_msg)
    await stop.wait()
    await nc.drain()


def run(args: argparse.Namespace) -> int:
    try:
        subject = args.subject
        if args.alerts and subject == events_filter():
            subject = alerts_filter()
        url = settings_file.load(args.config, flags={"nats.url": args.nats}).nats.url
        asyncio.run(tail(url, subject, args.json, args.alerts))
    except ConfigError as exc:
        print(f"snoopbus tail: {exc}", file=sys.stderr)
        return 2
    except BusUnavailable as exc:
        print(f"snoopbus tail: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        pass  # `snoopbus tail | head` closed the pipe
    return 0
