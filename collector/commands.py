"""The collector's commands: `snoopbus collect` and `snoopbus config show`.

Registered in the entry point group `snoopbus.commands` (app/main.py builds the parser).
"""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path
from typing import Any

from snoopbus.collector import probes
from snoopbus.collector.agent import CollectorConfig, CollectorError, run_collector
from snoopbus.collector.bcc_import import BccUnavailable
from snoopbus.collector.btf import BtfError
from snoopbus.collector.cgroups import CgroupIndex
from snoopbus.collector.filters import FilterConfig, parse_uid
from snoopbus.collector.publisher import PublisherConfig
from snoopbus.collector.redact import RedactConfig
from snoopbus.collector.spill import SpillError
from snoopbus.proto import BusUnavailable, NatsAuth, exits, local_stack, settings_file
from snoopbus.proto.metrics_server import MetricsError
from snoopbus.proto.settings_file import CollectorSection, Config
from snoopbus.proto.stream_limits import StreamLimits

# Conditions the user can fix: one line saying what to do, no traceback.
USER_ERRORS = (CollectorError, BusUnavailable, MetricsError, ValueError, SpillError)
# This host cannot run the probes (exits.KERNEL).
KERNEL_ERRORS = (BtfError, BccUnavailable, probes.ProbeError)


def register_collect(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "collect",
        help="run the collector: kernel probes -> events on NATS",
        description="Load the eBPF probes and publish every exec and exit (and file change) "
        "of this host as events on NATS JetStream. Needs root.",
    )
    settings_file.add_nats_flag(p)
    p.add_argument("--host", default=None, help="host name in subjects and events "
                   "(default: this machine's)")
    p.add_argument(
        "--argv-max", type=int, default=None,
        help=f"bytes of argv kept per exec, a power of two (default {CollectorSection.argv_max})",
    )  # fmt: skip
    p.add_argument(
        "--ringbuf-pages", type=int, default=None,
        help="ring buffer size in 4 KiB pages, a power of two "
        f"(default {CollectorSection.ringbuf_pages})",
    )  # fmt: skip
    p.add_argument(
        "--source-rate", type=int, default=None, metavar="N",
        help="file records/s one source (a non-root uid, or a root process) may write "
        "while the ring buffer fills; past it they are summarized; 0 = no fair share "
        f"(default {CollectorSection.source_rate})",
    )  # fmt: skip
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
    settings_file.add_config_flag(p)
    settings_file.add_metrics_flag(p)
    p.add_argument("--ebpf", action="store_true",
                   help="print the BPF program as it would be compiled, and exit")
    p.add_argument("--buffer-events", type=int, default=None, metavar="N",
                   help="events held in memory while NATS is slow or away "
                   f"({CollectorSection.buffer_events})")
    p.add_argument("--spill-dir", default=None, metavar="DIR",
                   help="where events wait while NATS is away, once memory is full "
                   f"(default {CollectorSection.spill_dir}; '' = memory only)")
    p.add_argument("--require-nats", action="store_true", default=None,
                   help="exit (status 2) if NATS is unreachable at start, instead of collecting "
                   "into memory and the spill until it answers")
    p.add_argument("--spill-max-mb", type=int, default=None, metavar="MB",
                   help="bound of the spill; past it events are dropped and counted "
                   f"({CollectorSection.spill_max_mb})")
    p.add_argument("--no-redact", dest="redact", action="store_false", default=None,
                   help="send argv as it is (by default secrets in it become ***)")
    p.add_argument("--redact-pattern", action="append", default=None, metavar="REGEX",
                   help="also mask this (its group `secret`, or the whole match); repeatable")
    p.add_argument("--keep-privileges", dest="drop_privileges", action="store_false",
                   default=None, help="keep every capability after loading the probes "
                   "(by default only CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH stay)")
    p.add_argument("--heartbeat-interval", type=float, default=None, metavar="S",
                   help="seconds between heartbeat reports "
                   f"(default {CollectorSection.heartbeat_interval:g})")
    p.add_argument("--stall-after", type=float, default=None, metavar="S",
                   help="report the collector as stalled when it captured events and "
                   f"published none for this long (default {CollectorSection.stall_after:g})")
    p.set_defaults(func=_collect)


# flag dest -> config key; flags left unset (None) fall through to env, file, default.
COLLECT_FLAGS = {
    "nats": "nats.url", "host": "collector.host", "argv_max": "collector.argv_max",
    "ringbuf_pages": "collector.ringbuf_pages", "source_rate": "collector.source_rate",
    "include_path": "collector.include_path",
    "exclude_path": "collector.exclude_path", "exclude_comm": "collector.exclude_comm",
    "exclude_uid": "collector.exclude_uid", "exclude_cgroup": "collector.exclude_cgroup",
    "include_failed": "collector.include_failed", "open_events": "collector.open_events",
    "heartbeat_interval": "collector.heartbeat_interval", "metrics_port": "metrics.port",
    "buffer_events": "collector.buffer_events", "spill_dir": "collector.spill_dir",
    "spill_max_mb": "collector.spill_max_mb", "require_nats": "collector.require_nats",
    "redact": "collector.redact", "redact_pattern": "collector.redact_pattern",
    "drop_privileges": "collector.drop_privileges", "stall_after": "collector.stall_after",
}


def load_config(args: argparse.Namespace, mapping: dict[str, str]) -> Config:
    """The effective config for a command: its flags over env over file over defaults."""
    flags = {key: getattr(args, dest, None) for dest, key in mapping.items()}
    return settings_file.load(getattr(args, "config", None), flags=flags)


def collect_settings(args: argparse.Namespace) -> tuple[dict[str, Any], FilterConfig]:
    """Flags over env over the config file over defaults -> (plain settings, filters)."""
    cfg = load_config(args, COLLECT_FLAGS)
    c = cfg.collector
    s: dict[str, Any] = {
        "nats": cfg.nats.url, "host": c.host or socket.gethostname(),
        "argv_max": c.argv_max, "ringbuf_pages": c.ringbuf_pages, "source_rate": c.source_rate,
        "heartbeat_interval": c.heartbeat_interval, "config": cfg,
    }  # fmt: skip
    groups = [str(g) for g in c.exclude_cgroup]
    cgroup_ids: tuple[int, ...] = ()
    if groups:  # an index only when there are names to look up
        cgroups = CgroupIndex()
        cgroup_ids = tuple(int(g) if g.isdigit() else cgroups.id_of(g) for g in groups)
    filters = FilterConfig(
        include_paths=c.include_path,
        exclude_paths=c.exclude_path,
        exclude_comms=c.exclude_comm,
        exclude_uids=tuple(parse_uid(str(u)) for u in c.exclude_uid),
        exclude_cgroups=cgroup_ids,
        include_failed=c.include_failed,
        open_events=c.open_events,
    )
    return s, filters


def security_settings(cfg: Config) -> dict[str, Any]:
    """CollectorConfig fields for NATS auth, the spill and argv redaction."""
    c = cfg.collector
    return {
        "nats_auth": NatsAuth.from_section(cfg.nats),
        "publisher": PublisherConfig(
            max_buffered=c.buffer_events, spill_dir=Path(c.spill_dir) if c.spill_dir else None,
            spill_max_bytes=c.spill_max_mb << 20, stall_after=c.stall_after,
        ),
        "redact": RedactConfig(enabled=c.redact, patterns=c.redact_pattern),
        "drop_privileges": c.drop_privileges,
        "require_nats": c.require_nats,
        "stream_limits": StreamLimits.from_section(cfg.stream, cfg.sources),
    }


def _collect(args: argparse.Namespace) -> int:
    try:
        s, filters = collect_settings(args)
        limits = probes.ProbeLimits(argv_max=s["argv_max"], ringbuf_pages=s["ringbuf_pages"],
                                    source_rate=s["source_rate"])
        if args.ebpf:
            print(probes.dump_program(limits, {**probes.proc_offsets(), **probes.uring_offsets()},
                                      filters))
            return 0
        return run_collector(CollectorConfig(
            nats_url=s["nats"], host=s["host"], limits=limits, filters=filters,
            heartbeat_interval=s["heartbeat_interval"],
            metrics_port=s["config"].metrics.port, metrics_address=s["config"].metrics.address,
            **security_settings(s["config"]),
        ))
    except KERNEL_ERRORS as exc:
        exits.fail("collect", exc)
        return exits.KERNEL
    except USER_ERRORS as exc:
        return exits.fail("collect", exc)


def register_config(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "config",
        help="show the effective configuration and where each value came from",
        description="Defaults, then the TOML file, then SNOOPBUS_<SECTION>_<KEY> "
        "environment variables, then flags.",
    )
    sub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = sub.add_parser("show", help="print the effective config, each value with its source")
    show.add_argument("--json", action="store_true", help="as JSON: {section: {key: "
                      "{value, source}}}")
    settings_file.add_config_flag(show)
    show.set_defaults(func=_config_show)


def _config_show(args: argparse.Namespace) -> int:
    try:
        cfg = local_stack.load_config(args.config, "reader", "config show")
    except local_stack.CONFIG_ERRORS as exc:
        return exits.fail("config", exc)
    if args.json:
        print(json.dumps(settings_file.as_dict(cfg), indent=2))
    else:
        print(settings_file.format_toml(cfg))
    return 0
