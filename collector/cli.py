"""The `snoopbus` command: one parser, subcommands registered by their modules."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from snoopbus.collector import doctor, probes
from snoopbus.collector.agent import CollectorConfig, CollectorError, run_collector
from snoopbus.collector.bcc_import import BccUnavailable
from snoopbus.collector.btf import BtfError
from snoopbus.collector.cgroups import CgroupIndex
from snoopbus.collector.filters import FilterConfig, load_config, parse_uid
from snoopbus.collector.stack import DEFAULT_STATE_DIR, EMBEDDED_PORT, StackConfig, run_stack
from snoopbus.consumers import cli as consumers_cli
from snoopbus.consumers import tail
from snoopbus.consumers.archive import query_cli as archive_query
from snoopbus.proto import BusUnavailable, nats_url_from_env

# Conditions the user can fix: one line saying what to do, no traceback.
USER_ERRORS = (
    CollectorError, BusUnavailable, BtfError, BccUnavailable, probes.ProbeError, ValueError
)


def _add_collect(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "collect",
        help="run the collector: kernel probes -> events on NATS",
        description="Load the eBPF probes and publish every exec and exit (and file change) "
        "of this host as events on NATS JetStream. Needs root.",
    )
    p.add_argument("--nats", default=nats_url_from_env(), help="NATS URL(s), comma-separated "
                   "(default: $SNOOPBUS_NATS_URL or %(default)s)")
    p.add_argument("--host", default=socket.gethostname(), help="host name in subjects and events")
    p.add_argument(
        "--argv-max",
        type=int,
        default=probes.ProbeLimits.argv_max,
        help="bytes of argv kept per exec, a power of two (default %(default)s)",
    )
    p.add_argument(
        "--ringbuf-pages",
        type=int,
        default=probes.ProbeLimits.ringbuf_pages,
        help="ring buffer size in 4 KiB pages, a power of two (default %(default)s)",
    )
    f = p.add_argument_group(
        "filters", "applied in the kernel where it can decide (see collector/filters.py); "
        "repeat a flag for several values"
    )
    f.add_argument("--include-path", action="append", default=None, metavar="DIR",
                   help="report only files under DIR (the nearest prefix wins)")
    f.add_argument("--exclude-path", action="append", default=None, metavar="DIR",
                   help="never report files under DIR")
    f.add_argument("--exclude-comm", action="append", default=None, metavar="COMM",
                   help="ignore processes with this comm (15 bytes at most)")
    f.add_argument("--exclude-uid", action="append", default=None, metavar="UID",
                   help="ignore processes of this uid or user name")
    f.add_argument("--exclude-cgroup", action="append", default=None, metavar="CGROUP",
                   help="ignore processes in this cgroup v2 (id, or path below the cgroup2 mount)")
    f.add_argument("--include-failed", action="store_true", default=None,
                   help="also report failed operations, with ret = -errno")
    f.add_argument("--open-events", action="store_true", default=None,
                   help="report every open (off by default: read-only opens are noisy)")
    p.add_argument("--config", type=Path, default=None, metavar="PATH",
                   help="TOML file with a [collector] section; flags override it")
    p.add_argument("--ebpf", action="store_true",
                   help="print the BPF program as it would be compiled, and exit")
    p.add_argument("--heartbeat-interval", type=float, default=30.0, metavar="S",
                   help="seconds between heartbeat reports (default %(default)s)")
    p.set_defaults(func=_collect)


def _setting(args: argparse.Namespace, config: dict[str, Any], key: str, default: Any) -> Any:
    """flag, else config file, else default (lists from flags replace the file's)."""
    value = getattr(args, key, None)
    if value is not None and value != default:
        return value
    return config.get(key, default if value is None else value)


def collect_settings(args: argparse.Namespace) -> tuple[dict[str, Any], FilterConfig]:
    """Flags over the config file over defaults -> (plain settings, filters)."""
    config = load_config(args.config) if args.config else {}
    s = {k: _setting(args, config, k, d) for k, d in (
        ("nats", nats_url_from_env()), ("host", socket.gethostname()),
        ("argv_max", probes.ProbeLimits.argv_max),
        ("ringbuf_pages", probes.ProbeLimits.ringbuf_pages),
    )}
    lists = {k: [str(v) for v in _setting(args, config, k, None) or []] for k in (
        "include_path", "exclude_path", "exclude_comm", "exclude_uid", "exclude_cgroup")}
    cgroups = CgroupIndex() if lists["exclude_cgroup"] else None
    filters = FilterConfig(
        include_paths=tuple(lists["include_path"]),
        exclude_paths=tuple(lists["exclude_path"]),
        exclude_comms=tuple(lists["exclude_comm"]),
        exclude_uids=tuple(parse_uid(u) for u in lists["exclude_uid"]),
        exclude_cgroups=tuple(
            int(g) if g.isdigit() else cgroups.id_of(g)  # type: ignore[union-attr]
            for g in lists["exclude_cgroup"]
        ),
        include_failed=bool(_setting(args, config, "include_failed", False)),
        open_events=bool(_setting(args, config, "open_events", False)),
    )
    return s, filters


def _collect(args: argparse.Namespace) -> int:
    try:
        s, filters = collect_settings(args)
        limits = probes.ProbeLimits(argv_max=s["argv_max"], ringbuf_pages=s["ringbuf_pages"])
        if args.ebpf:
            print(probes.dump_program(limits, probes.proc_offsets(), filters))
            return 0
        return run_collector(CollectorConfig(
            nats_url=s["nats"], host=s["host"], limits=limits, filters=filters,
            heartbeat_interval=args.heartbeat_interval,
        ))
    except USER_ERRORS as exc:
        print(f"snoopbus collect: {exc}", file=sys.stderr)
        return 2


def _add_up(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "up",
        help="run everything on this host: nats-server, collector, consumers",
        description="Start a private nats-server with JetStream, the collector and the "
        "built-in consumers; Ctrl-C stops them all.",
    )
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                   help="where the embedded NATS keeps its data (default %(default)s)")
    p.add_argument("--port", type=int, default=EMBEDDED_PORT,
                   help="loopback port for the embedded NATS (default %(default)s)")
    p.add_argument("--host", default=None, help="host name in subjects and events")
    p.set_defaults(func=lambda a: run_stack(StackConfig(a.state_dir, a.port, a.host)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snoopbus",
        description="eBPF file-and-process monitoring, published on NATS.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_up(sub)
    _add_collect(sub)
    tail.register(sub)
    consumers_cli.register(sub)
    archive_query.register(sub)
    doctor.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
