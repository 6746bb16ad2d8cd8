"""`snoopbus consume NAME [options]` and `snoopbus consume --list`.

Options after NAME are parsed once NAME is known, so each consumer adds its
own (`snoopbus consume rename --help`). `python -m snoopbus.consumers` is the
same command on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from snoopbus.consumers.metrics import serve_consumer
from snoopbus.proto import BusUnavailable, NatsAuth, exits, log_setup, settings_file
from snoopbus.proto.local_stack import CONFIG_ERRORS, load_config
from snoopbus.proto.metrics_server import MetricsError, MetricsServer
from snoopbus.proto.settings_file import Config, ConfigError
from snoopbus.proto.stream_limits import StreamLimits

from . import plugin
from .consumer import Consumer
from .runtime import Runtime, hold_sighup, serve
from .settings import Partition, Settings
from .times import TimeError, parse_when


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "consume",
        help="run a consumer (built-in or plugin)",
        description="Run a consumer until SIGINT/SIGTERM. Options after NAME "
        "belong to that consumer: see `consume NAME --help`.",
    )
    add_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list", action="store_true", help="list installed consumers")
    settings_file.add_nats_flag(parser)
    settings_file.add_config_flag(parser)
    parser.add_argument("name", nargs="?", metavar="NAME", help="consumer to run")
    parser.add_argument("options", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    if not args.name:
        print("snoopbus consume: give a consumer NAME, or --list", file=sys.stderr)
        return exits.USAGE
    try:
        target = plugin.load(args.name)
    except (plugin.UnknownConsumer, plugin.BadPlugin, ImportError) as exc:
        return exits.fail("consume", exc)
    try:
        # --config is read before the consumer's flags: its [consumer.NAME] sets their defaults.
        config, args.options = take_config(args.options)
        args.config = config or args.config
        cfg = load_config(args.config, args.name, f"consume {args.name}", args.nats)
        parser = _consumer_parser(args.name, target, cfg.nats.url)
        apply_config(parser, args.name, cfg)
    except CONFIG_ERRORS as exc:
        return exits.fail("consume", exc)
    opts = parser.parse_args(args.options)
    hold_sighup()  # building the consumer may take seconds (the alerter's rules)
    try:
        # After the consumer's own flags: `consume NAME -v` is debug logging.
        log_setup.configure(_log_flags(args, opts))
        consumer = target.from_args(opts, _settings(opts, target.settings))
    except (ValueError, OSError) as exc:
        return exits.fail(f"consume {args.name}", exc)
    port = cfg.metrics.port if opts.metrics_port is None else opts.metrics_port
    servers: list[MetricsServer] = []

    def start_metrics(runtime: Runtime) -> None:
        if port:
            servers.append(serve_consumer(runtime, port, cfg.metrics.address))

    try:
        runtime = asyncio.run(
            serve(consumer, opts.nats, settings=consumer.settings, on_start=start_metrics,
                  auth=NatsAuth.from_section(cfg.nats),
                  stream_limits=StreamLimits.from_section(cfg.stream, cfg.sources))
        )
    except (BusUnavailable, MetricsError) as exc:
        return exits.fail("consume", exc)
    finally:
        for server in servers:
            server.stop()
    _summary(runtime)
    return 0


def _list() -> int:
    for name, entry in plugin.plugins().items():
        try:
            description = entry.load().description
        except Exception as exc:  # one broken plugin must not hide the others
            description = f"(cannot load: {exc})"
        print(f"{name:<16} {description}  [{entry.source}]")
    return 0


def take_config(options: list[str]) -> tuple[Path | None, list[str]]:
    """`--config PATH` given after NAME, and the options without it."""
    path: Path | None = None
    rest: list[str] = []
    it = iter(options)
    for arg in it:
        if arg == "--":
            rest += [arg, *it]
        elif arg == "--config":
            value = next(it, None)
            if value is None:
                raise ConfigError("--config needs a PATH")
            path = Path(value)
        elif arg.startswith("--config="):
            path = Path(arg.partition("=")[2])
        else:
            rest.append(arg)
    return path, rest


def apply_config(parser: argparse.ArgumentParser, name: str, cfg: Config) -> None:
    """[consumer.NAME] options become this consumer's flag defaults; flags still win.

    Keys are flag names with '_' for '-' (`roll_seconds` for --roll-seconds).
    """
    options = cfg.consumer_options(name)
    actions = {
        opt.removeprefix("--").replace("-", "_"): a
        for a in parser._actions if a.dest not in ("help", "nats", "config")
        for opt in a.option_strings if opt.startswith("--")
    }  # fmt: skip
    where = f"config {cfg.path}"
    for key, value in options.items():
        action = actions.get(key)
        if action is None:
            known = ", ".join(sorted(actions))
            raise ConfigError(f"{where}: unknown key {key!r} in [consumer.{name}] (known: {known})")
        expected = _expected_type(action)
        if expected is not None and not _fits(value, expected, action):
            what = expected.__name__ + (" list" if _is_list(action) else "")
            raise ConfigError(
                f"{where}: [consumer.{name}] {key} must be {what}, got {type(value).__name__}"
            )
        if action.required:
            action.required = False  # the file provides it
        convert = action.type  # None, or a callable (argparse's type names are not used)
        if isinstance(value, list) and callable(convert):
            try:
                value = [convert(v) if isinstance(v, str) else v for v in value]
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise ConfigError(f"{where}: [consumer.{name}] {key}: {exc}") from None
        parser.set_defaults(**{action.dest: value})


def _is_list(action: argparse.Action) -> bool:
    return action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction)


def _expected_type(action: argparse.Action) -> type | None:
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return bool
    if action.type in (int, float):
        return action.type
    if action.type is None or callable(action.type):
        return str  # Path, Partition.parse and friends take text
    return None


def _fits(value: object, expected: type, action: argparse.Action) -> bool:
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) != _is_list(action):
        return False
    for v in items:
        if isinstance(v, bool) != (expected is bool):
            return False
        if expected is float and not isinstance(v, int | float):
            return False
        if expected in (int, str) and not isinstance(v, expected):
            return False
    return True


def _consumer_parser(
    name: str, target: Consumer | type[Consumer], nats: str
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"snoopbus consume {name}", description=target.description or None
    )
    common = parser.add_argument_group("runtime")
    settings_file.add_nats_flag(common, default=nats)
    common.add_argument(
        "--partition", type=Partition.parse, default=None, metavar="I/N",
        help="run partition I of N, N <= 64 (hosts are split by their bucket; one durable "
             "per partition)",
    )  # fmt: skip
    common.add_argument("--batch", type=int, metavar="N", help="messages per fetch")
    common.add_argument("--concurrency", type=int, metavar="N", help="batches handled at once")
    common.add_argument(
        "--max-attempts", type=int, metavar="N", help="deliveries before dead-lettering"
    )
    common.add_argument(
        "--ack-wait", type=float, metavar="SECONDS", help="server redelivers unacked after this"
    )
    common.add_argument(
        "--start", type=parse_start, default=None, metavar="new|all|TIME",
        help="where a new durable starts: all (the oldest message the stream holds; the "
        "default), new (messages from now on), or a time (ISO 8601, or an age such as 2h); "
        "an existing durable goes on from where it is",
    )  # fmt: skip
    settings_file.add_metrics_flag(common)
    settings_file.add_config_flag(common)  # taken out before parsing (take_config): for --help
    log_setup.add_flags(common, top=True)
    target.add_arguments(parser)
    return parser


def _log_flags(args: argparse.Namespace, opts: argparse.Namespace) -> argparse.Namespace:
    """The logging flags given before NAME, with those after it winning."""
    keys = ("log_format", "log_level", "verbose")
    merged = {k: getattr(opts, k, None) or getattr(args, k, None) for k in keys}
    return argparse.Namespace(**merged)


def parse_start(text: str) -> str | datetime:
    if text in ("new", "all"):
        return text
    try:
        return parse_when(text)
    except TimeError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use new, all, or a time (ISO 8601 such as 2026-11-20T14:00, or an age "
            "such as 2h)"
        ) from None


def _settings(opts: argparse.Namespace, base: Settings) -> Settings:
    start = opts.start
    if start is not None:  # the consumer's own default otherwise
        base = replace(base, deliver_new=start == "new",
                       start_time=start if isinstance(start, datetime) else None)  # fmt: skip
    changes = {
        key: value
        for key, value in (
            ("partition", opts.partition),
            ("batch", opts.batch),
            ("concurrency", opts.concurrency),
            ("max_attempts", opts.max_attempts),
            ("ack_wait", opts.ack_wait),
        )
        if value is not None
    }
    return replace(base, **changes)


def _summary(runtime: Runtime) -> None:
    c = runtime.consumer.counters(runtime.counters)
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(c.dead_letter_reasons.items()))
    logging.getLogger(__name__).info(
        "%s stopped: processed=%d failed=%d dead_lettered=%d%s released=%d",
        runtime.durable, c.processed, c.failed, c.dead_lettered,
        f" ({reasons})" if reasons else "", c.released,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m snoopbus.consumers", description="Run a snoopbus consumer."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
