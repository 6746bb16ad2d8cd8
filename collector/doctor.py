"""`snoopbus doctor`: what this kernel allows, which hooks the collector will
use, and whether it can run here at all (exit 0) or not (exit 1).

Everything is measured by trying (capabilities.detect), plus one real BCC
compile, and the struct offsets the probe programs need are resolved from BTF,
so a doctor that says "ok" means the collector's own prerequisites hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import nats.errors

from snoopbus.collector import coverage, doctor_bus, native, uring
from snoopbus.collector.btf import KERNEL_FIELDS, Btf, BtfError
from snoopbus.collector.capabilities import (
    Check,
    HookPlan,
    check_bcc_compiles,
    check_fsnotify_program,
    choose_hooks,
    detect,
)
from snoopbus.collector.uring import Coverage
from snoopbus.proto import BusUnavailable, NatsAuth, exits, local_stack, settings_file
from snoopbus.proto.native import disabled

__all__ = ["Report", "blockers", "build_report", "main", "program_fields", "register", "run"]


@dataclass(frozen=True)
class Report:
    checks: list[Check]
    plan: HookPlan
    offsets: dict[str, int]
    offset_errors: dict[str, str] = field(default_factory=dict)
    btf_path: str = ""
    techniques: list[coverage.Coverage] = field(default_factory=list)
    # io_uring operations the probes see here (collector/uring.py), and who may use rings
    uring: list[Coverage] = field(default_factory=list)
    uring_users: str = ""

    @property
    def problems(self) -> list[str]:
        return blockers(self.checks, self.plan, self.offset_errors)

    def to_json(self) -> dict[str, Any]:
        roles = {
            "exec": self.plan.exec_source,
            "file": self.plan.file_source,
            "fsnotify": self.plan.fsnotify,
            "transport": self.plan.transport,
        }
        return {
            "ok": not self.problems,
            "problems": self.problems,
            "kernel": platform.release(),
            "machine": platform.machine(),
            "checks": [asdict(c) for c in self.checks],
            "hooks": {role: asdict(choice) for role, choice in roles.items()},
            "offsets": {
                "btf": self.btf_path,
                "fields": self.offsets,
                "errors": self.offset_errors,
            },
            "techniques": [{"name": c.technique.name, "status": c.status, "detail": c.detail}
                           for c in self.techniques],
            "io_uring": {
                "users": self.uring_users,
                "unhooked": dict(uring.UNHOOKED),
                "operations": {c.op.name: {"seen": c.seen, "events": c.op.events,
                                           "path": c.op.how, "why_not": c.detail}
                               for c in self.uring},
            },
        }


def blockers(
    checks: Sequence[Check], plan: HookPlan, offset_errors: Mapping[str, str]
) -> list[str]:
    """Why the collector cannot run here; empty when it can. Pure."""
    by_name = {c.name: c for c in checks}
    problems = []
    for name, what in (
        ("privileges", "not running as root"),
        ("btf", "no kernel BTF"),
        ("bcc_compile", "BCC cannot compile"),
    ):
        check = by_name.get(name)
        if check is None or not check.ok:
            problems.append(what)
    if plan.exec_source.hook is None or plan.file_source.hook is None:
        problems.append("raw tracepoints cannot be attached")
    if plan.transport.hook is None:
        problems.append("neither ring buffer nor perf buffer works")
    if offset_errors:
        problems.append(f"{len(offset_errors)} struct offsets do not resolve from BTF")
    return problems


def program_fields() -> dict[str, str]:
    """-D name -> BTF member path for every field the probe programs read: the
    *_OFFSETS tables of the probes module, or btf.KERNEL_FIELDS without it."""
    fields: dict[str, str] = {}
    try:
        from snoopbus.collector import probes
    except ImportError:
        return dict(KERNEL_FIELDS)
    for attr, value in vars(probes).items():
        if attr.endswith("_OFFSETS") and isinstance(value, Mapping):
            fields.update({str(k): str(v) for k, v in value.items()})
    return fields or dict(KERNEL_FIELDS)


def _resolve_offsets(
    fields: Mapping[str, str],
) -> tuple[dict[str, int], dict[str, str], str, set[str]]:
    """Offsets, errors, the BTF's path, and which coverage.TECHNIQUES
    functions it has."""
    funcs = {t.kernel_func for t in coverage.TECHNIQUES if t.kernel_func}
    try:
        with Btf.load() as btf:
            offsets, errors = {}, {}
            for name, path in fields.items():
                try:
                    offsets[name] = btf.offset(path)
                except BtfError as exc:
                    errors[name] = str(exc)
            return offsets, errors, str(btf.path), {f for f in funcs if btf.has_func(f)}
    except BtfError as exc:  # the btf check already says why
        return {}, dict.fromkeys(fields, str(exc)), "", funcs  # unknown: assume present


def check_close_write() -> Check:
    """close_write per open file (bpf/closes.h): the reference count to read,
    and the tracepoint at exec's point of no return."""
    from snoopbus.collector import probes

    try:
        refs = probes.file_ref_offsets()
    except BtfError as exc:
        return Check("close_write_per_file", False, str(exc),
                     "close_write then comes at every close of an fd open for writing")
    where = "file.f_ref" if refs["FILE_REF_BIASED"] else "file.f_count"
    if probes.has_tracepoint("sched_prepare_exec"):
        return Check("close_write_per_file", True,
                     f"last reference from {where}; exit, exec and close_range scanned")
    return Check("close_write_per_file", True,
                 f"last reference from {where}; exit and close_range scanned, not exec "
                 "(no sched_prepare_exec before 6.10: close-on-exec fds close unseen)")


def check_native_builder() -> Check:
    """Whether this install has the native event builder (a C compiler at install)."""
    return Check("native_builder", native.MISSING is None and not disabled(),
                 native.status(),
                 "install gcc and the Python headers, then reinstall snoopbus (make setup): "
                 "the Python path makes the same events, ~5x slower")


def build_report(fields: Mapping[str, str] | None = None) -> Report:
    checks = detect()
    checks.append(check_bcc_compiles())
    checks.append(check_fsnotify_program())
    checks.append(check_close_write())
    checks.append(check_native_builder())
    offsets, errors, btf_path, funcs = _resolve_offsets(
        program_fields() if fields is None else fields)
    passed = {c.name for c in checks if c.ok}
    techniques = coverage.coverage(passed.__contains__, funcs.__contains__)
    uring_ops, users = uring.kernel_coverage()
    return Report(checks, choose_hooks(checks), offsets, errors, btf_path, techniques,
                  uring_ops, users)


def render_uring(report: Report) -> list[str]:
    """Per io_uring operation: seen or not here, as what, and why not."""
    if not report.uring:
        return []
    seen = sum(c.seen for c in report.uring)
    lines = ["", f"io_uring requests ({seen} of {len(report.uring)} operations seen; "
             f"{report.uring_users}):"]
    width = max(len(c.op.name) for c in report.uring)
    for c in report.uring:
        if c.seen:
            lines.append(f"  ok    {c.op.name:<{width}}  {c.op.events}: {c.op.how}")
        else:
            lines.append(f"  MISS  {c.op.name:<{width}}  not seen: {c.detail}")
    lines += [f"  MISS  {name:<{width}}  {why}" for name, why in uring.UNHOOKED]
    return lines


# Checks whose failure stops the collector; any other is an optional hook or a
# fallback, shown as not available (the summary still says if nothing is left).
REQUIRED = frozenset({"privileges", "btf", "bpf_syscall", "kernel_headers", "bcc",
                      "bcc_compile"})  # fmt: skip


def render(report: Report, verbose: bool = False) -> str:
    width = max(len(c.name) for c in report.checks)
    lines = [f"snoopbus doctor: Linux {platform.release()} {platform.machine()}", ""]
    problems = report.problems
    if "not running as root" in problems:
        lines += ["Not running as root: run as root (sudo snoopbus doctor).", ""]
    for check in report.checks:
        required = check.name in REQUIRED
        status = "ok  " if check.ok else "FAIL" if required else "--  "
        detail = check.detail if check.ok or required else (
            f"not available (optional): {check.detail}")
        lines.append(f"  {status}  {check.name:<{width}}  {detail}")
        if not check.ok and check.hint and (required or verbose):
            lines.append(f"        {'':<{width}}  next: {check.hint}")
    lines += ["", "Hook set:"]
    lines += [f"  {line}" for line in report.plan.lines()]
    lines += ["", "Ways to change files, and whether snoopbus sees them here:"]
    lines += [f"  {line}" for line in coverage.lines(report.techniques)]
    where = report.btf_path or "unavailable"
    if verbose:
        lines += ["", f"Struct offsets from BTF ({where}):"]
        lines += [f"  {name} = {value}" for name, value in sorted(report.offsets.items())]
    else:
        lines += ["", f"Struct offsets from BTF ({where}): {len(report.offsets)} resolved, "
                  f"{len(report.offset_errors)} failed (--verbose lists them)"]
    lines += [f"  {name}: FAIL {why}" for name, why in sorted(report.offset_errors.items())]
    lines += render_uring(report)
    lines.append("")
    if problems:
        lines.append(f"The collector cannot run here: {'; '.join(problems)}.")
    else:
        lines.append("The collector can run here.")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        bus = _bus_report(args)
    except local_stack.CONFIG_ERRORS as exc:
        return exits.fail("doctor", exc)
    report = build_report()
    if getattr(args, "json", False):
        out = report.to_json()
        if bus is not None:
            out["collector"] = bus.to_json()
        print(json.dumps(out, indent=2))
    else:
        print(render(report, verbose=bool(getattr(args, "verbose", False))))
        if bus is not None:
            print("\n" + "\n".join(doctor_bus.render(bus)))
    return 1 if report.problems else 0


def _bus_report(args: argparse.Namespace) -> doctor_bus.BusReport | None:
    """The running collector's last reports, when --nats or --host asks for them."""
    if getattr(args, "nats", None) is None and getattr(args, "host", None) is None:
        return None
    cfg = local_stack.load_config(getattr(args, "config", None), "reader", "doctor --nats",
                                  args.nats or None)
    host = args.host or cfg.collector.host or socket.gethostname()
    try:
        return asyncio.run(doctor_bus.last_reports(cfg.nats.url, host,
                                                   NatsAuth.from_section(cfg.nats),
                                                   cfg.stream.warn_percent))
    except (BusUnavailable, OSError, TimeoutError, nats.errors.Error) as exc:
        return doctor_bus.BusReport(host, cfg.nats.url, error=str(exc) or type(exc).__name__)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output: checks, chosen hooks, resolved struct offsets",
    )
    settings_file.add_nats_flag(parser, optional=True)
    parser.add_argument(
        "--host", default=None, metavar="NAME",
        help="also show what the collector of this host last reported on NATS "
        "(status, counts, loss by reason and type; default: this machine, with --nats)",
    )  # fmt: skip
    settings_file.add_config_flag(parser)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also the struct offsets, the next step for optional hooks, and "
                        "debug logging")  # fmt: skip
    parser.set_defaults(func=run)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `doctor` to the CLI's subcommands."""
    parser = subparsers.add_parser(
        "doctor",
        help="check what this kernel allows and which hooks the collector will use",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="snoopbus doctor", description=__doc__)
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
