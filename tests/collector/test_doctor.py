"""`snoopbus doctor`: verdict logic and rendering (pure), then real runs."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from snoopbus.collector import coverage, doctor
from snoopbus.collector.capabilities import Check, choose_hooks
from snoopbus.collector.doctor import Report, blockers, program_fields, register, render
from tests.support.kernel import CAPABILITY_CHECKS

NAMES = (*CAPABILITY_CHECKS, "bcc_compile")  # every detect() check, and the compile doctor adds


def checks(*failing: str) -> list[Check]:
    return [
        Check(n, n not in failing, f"{n} broke" if n in failing else "fine", f"fix {n}")
        for n in NAMES
    ]


def report(*failing: str, offset_errors: dict[str, str] | None = None) -> Report:
    measured = checks(*failing)
    return Report(
        measured, choose_hooks(measured), {"OFF_X": 8}, offset_errors or {}, "/btf/vmlinux"
    )


def test_blockers_empty_when_the_collector_can_run() -> None:
    measured = checks("kprobe", "fentry", "lsm", "tracefs")  # this machine
    assert blockers(measured, choose_hooks(measured), {}) == []


@pytest.mark.parametrize(
    ("failing", "problem"),
    [
        (("privileges",), "not running as root"),
        (("btf",), "no kernel BTF"),
        (("bcc_compile",), "BCC cannot compile"),
        (("raw_tracepoint",), "raw tracepoints cannot be attached"),
        (("ringbuf", "perf_buffer"), "neither ring buffer nor perf buffer works"),
    ],
)
def test_blockers_name_the_problem(failing: tuple[str, ...], problem: str) -> None:
    measured = checks(*failing)
    assert blockers(measured, choose_hooks(measured), {}) == [problem]


def test_unresolved_offsets_block() -> None:
    measured = checks()
    problems = blockers(measured, choose_hooks(measured), {"OFF_Y": "no member"})
    assert problems == ["1 struct offsets do not resolve from BTF"]


def test_render_shows_checks_next_steps_and_hooks() -> None:
    text = render(report("fentry", "kprobe", "btf"))
    assert "  ok    privileges" in text
    # optional hooks: not red, said so; their next step only with --verbose
    assert re.search(r"  --    fentry +not available \(optional\): fentry broke", text)
    assert "FAIL  fentry" not in text and "next: fix fentry" not in text
    assert "  FAIL  btf" in text and "next: fix btf" in text  # required: FAIL and what to do
    assert "next: fix privileges" not in text  # no next step for what works
    assert "Hook set:\n  exec: raw_tracepoint:sched_process_exec" in text
    assert "OFF_X = 8" not in text and "1 resolved, 0 failed (--verbose lists them)" in text
    verbose = render(report("fentry", "kprobe"), verbose=True)
    assert "OFF_X = 8" in verbose and "next: fix fentry" in verbose
    assert verbose.endswith("The collector can run here.")


def test_a_refusal_as_root_is_named_for_what_it_is() -> None:
    from snoopbus.collector.capabilities import refusal

    said = refusal("fentry fsnotify: load: EPERM: operation not permitted")
    assert "refused by the kernel although running with BPF privileges" in said
    assert "lockdown" in said
    bcc = refusal("fentry: load refused: Need super-user privileges to run (bpf: EPERM)")
    assert "super-user" not in bcc


def test_render_as_non_root_says_run_as_root() -> None:
    text = render(report("privileges", "bpf_syscall", "raw_tracepoint", "tracepoint"))
    assert "Not running as root: run as root" in text
    assert "The collector cannot run here: not running as root; " in text


def test_json_is_machine_readable() -> None:
    data = json.loads(json.dumps(report("fentry").to_json()))
    assert data["ok"] is True and data["problems"] == []
    assert {c["name"] for c in data["checks"]} == set(NAMES)
    assert data["hooks"]["fsnotify"]["hook"] == "kprobe:fsnotify"
    assert data["offsets"] == {"btf": "/btf/vmlinux", "fields": {"OFF_X": 8}, "errors": {}}


def test_program_fields_are_member_paths() -> None:
    fields = program_fields()
    assert fields
    for name, path in fields.items():
        assert name.isidentifier() and name.isupper()
        assert len(path.split(".")) >= 2, path


def test_register_adds_the_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="snoopbus")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["doctor", "--json"])
    assert args.func is doctor.run
    assert args.json is True
    assert parser.parse_args(["doctor"]).json is False


# --- real runs -----------------------------------------------------------------------

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF")


@pytest.mark.kernel
@as_root
def test_run_as_root_can_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert doctor.run(argparse.Namespace(json=False)) == 0
    out = capsys.readouterr().out
    assert "Hook set:" in out
    assert "exec: raw_tracepoint:sched_process_exec" in out
    assert out.rstrip().endswith("The collector can run here.")


@pytest.mark.kernel
@as_root
def test_run_json_resolves_the_program_offsets(capsys: pytest.CaptureFixture[str]) -> None:
    assert doctor.run(argparse.Namespace(json=True)) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    assert data["hooks"]["transport"]["hook"] == "ringbuf"
    assert data["offsets"]["errors"] == {}
    assert set(data["offsets"]["fields"]) == set(program_fields())
    assert any(c["name"] == "bcc_compile" and c["ok"] for c in data["checks"])
    # this kernel: ia32 emulation compiled in, no x32, setxattrat there (6.13+),
    # raw tracepoints work
    techniques = {t["name"]: t["status"] for t in data["techniques"]}
    assert techniques.pop("x32 system calls (bit 30 set)") == "absent"
    assert set(techniques.values()) == {"seen"}, techniques
    assert len(techniques) == len(coverage.TECHNIQUES) - 1


def test_coverage_says_seen_unseen_or_absent() -> None:
    rows = coverage.coverage(lambda check: check != "raw_tracepoint",
                             lambda func: func != "__x64_sys_setxattrat")
    by = {c.technique.name: c for c in rows}
    ia32 = by["ia32 system calls (int $0x80, 32-bit programs)"]
    assert (ia32.status, ia32.detail) == ("unseen", "needs raw_tracepoint")
    at = by["setxattrat, removexattrat (Linux 6.13)"]
    assert (at.status, at.detail) == ("absent", "no __x64_sys_setxattrat in this kernel")
    rows = coverage.coverage(lambda check: True, lambda func: True)
    assert {c.status for c in rows} == {"seen"}
    assert rows[0].detail == coverage.TECHNIQUES[0].event
    assert "seen    ia32 system calls" in "\n".join(coverage.lines(rows))


def _module(*args: str, user: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(user or []), sys.executable, "-m", "snoopbus.collector.doctor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.kernel
@as_root
def test_module_entry_point_json() -> None:
    done = _module("--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True


@pytest.mark.kernel
@as_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) missing")
@pytest.mark.parametrize("tracefs", ["mounted", "unmounted"])
def test_non_root_is_told_to_run_as_root(tracefs: str) -> None:
    # Either way, in a mount namespace of its own: mounted, tracefs is root's alone (0700),
    # and reading it as nobody once ended the doctor in a traceback.
    state = {"mounted": "mountpoint -q {t} || mount -t tracefs nodev {t}",
             "unmounted": "while mountpoint -q {t}; do umount {t}; done"}[tracefs]
    nobody = ["unshare", "-m", "--propagation", "private", "sh", "-c",
              state.format(t="/sys/kernel/tracing") + ' && exec "$@"', "sh",
              "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    done = _module(user=nobody)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stdout + done.stderr
    assert "run as root" in done.stdout
    assert "  FAIL  privileges" in done.stdout
    assert "EPERM: operation not permitted" in done.stdout
    assert "The collector cannot run here: not running as root" in done.stdout
