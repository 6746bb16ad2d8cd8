"""The `snoopbus` command: one parser, subcommands registered by their modules."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path

from snoopbus.collector import doctor, probes
from snoopbus.collector.agent import CollectorConfig, CollectorError, run_collector
from snoopbus.collector.bcc_import import BccUnavailable
from snoopbus.collector.btf import BtfError
from snoopbus.collector.stack import DEFAULT_STATE_DIR, EMBEDDED_PORT, StackConfig, run_stack
from snoopbus.consumers import cli as consumers_cli
from snoopbus.consumers import tail
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
    p.add_argument("--ebpf", action="store_true",
                   help="print the BPF program as it would be compiled, and exit")
    p.set_defaults(func=_collect)


def _collect(args: argparse.Namespace) -> int:
    try:
        limits = probes.ProbeLimits(argv_max=args.argv_max, ringbuf_pages=args.ringbuf_pages)
        if args.ebpf:
            print(probes.dump_program(limits, probes.proc_offsets()))
            return 0
        return run_collector(CollectorConfig(nats_url=args.nats, host=args.host, limits=limits))
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
