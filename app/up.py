"""`snoopbus up`: its flags; the stack it runs is app/stack.py."""

from __future__ import annotations

import argparse

from snoopbus.app.stack import StackConfig, run_stack
from snoopbus.collector.commands import load_config
from snoopbus.proto import exits, log_setup, settings_file

UP_FLAGS = {
    "state_dir": "up.state_dir", "port": "up.port", "host": "collector.host",
    "live": "up.live", "metrics_port": "metrics.port",
}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "up",
        help="run everything on this host: nats-server, collector, consumers",
        description="Start a private nats-server with JetStream, the collector and the "
        "built-in consumers; Ctrl-C stops them all.",
    )
    p.add_argument("--state-dir", default=None,
                   help="where the embedded NATS and the archive keep their data "
                   "([up] state_dir; default /var/lib/snoopbus)")
    p.add_argument("--port", type=int, default=None,
                   help="loopback port for the embedded NATS ([up] port; default 4222)")
    p.add_argument("--host", default=None, help="host name in subjects and events")
    p.add_argument("--live", choices=("auto", "on", "off"), default=None,
                   help="the live view: auto (when stdout is a terminal), on, off")
    settings_file.add_config_flag(p)
    settings_file.add_metrics_flag(p)
    p.set_defaults(func=_up)


def _up(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args, UP_FLAGS)
    except settings_file.ConfigError as exc:
        return exits.fail("up", exc)
    log_setup.export()  # every child logs as `up` does
    return run_stack(StackConfig.from_config(cfg))
