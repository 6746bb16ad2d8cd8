"""Hook choice (pure) and what this kernel allows (measured, as root)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from snoopbus.collector import btf as btf_module
from snoopbus.collector.capabilities import (
    Check,
    HookPlan,
    check_bcc_compiles,
    choose_hooks,
    detect,
)
from tests.support.kernel import CAPABILITY_CHECKS


def checks(*failing: str) -> list[Check]:
    """Every check ok except `failing`, whose detail says why."""
    return [Check(n, n not in failing, f"{n} broke" if n in failing else "fine")
            for n in CAPABILITY_CHECKS]


def test_everything_works() -> None:
    plan = choose_hooks(checks())
    assert plan.exec_source.hook == "raw_tracepoint:sched_process_exec"
    assert plan.file_source.hook == "raw_tracepoint:raw_syscalls:sys_{enter,exit}"
    assert plan.fsnotify.hook == "fentry:fsnotify"
    assert plan.transport.hook == "ringbuf"
    assert plan.runnable


def test_this_machine() -> None:
    """Measured on the dev/CI VM: no kprobes, fentry EPERM, tracefs not mounted."""
    plan = choose_hooks(checks("kprobe", "fentry", "lsm", "tracefs"))
    assert plan.exec_source.hook == "raw_tracepoint:sched_process_exec"
    assert plan.file_source.hook == "raw_tracepoint:raw_syscalls:sys_{enter,exit}"
    assert plan.fsnotify.hook is None
    assert "fentry broke" in plan.fsnotify.reason and "kprobe broke" in plan.fsnotify.reason
    assert plan.transport.hook == "ringbuf"
    assert plan.runnable


@pytest.mark.parametrize(
    ("failing", "fsnotify"),
    [
        ((), "fentry:fsnotify"),
        (("kprobe",), "fentry:fsnotify"),
        (("fentry",), "kprobe:fsnotify"),
        (("fentry", "kprobe"), None),
    ],
)
def test_fsnotify_preference(failing: tuple[str, ...], fsnotify: str | None) -> None:
    plan = choose_hooks(checks(*failing))
    assert plan.fsnotify.hook == fsnotify
    assert plan.runnable  # deep hooks are optional
    if "fentry" in failing:
        assert "fentry broke" in plan.fsnotify.reason


RAW_EXEC = "raw_tracepoint:sched_process_exec"
RAW_FILES = "raw_tracepoint:raw_syscalls:sys_{enter,exit}"


# The plan is the program's (collector/bpf/snoopbus.bpf.c): raw tracepoints only.
@pytest.mark.parametrize(
    ("failing", "exec_hook", "file_hook"),
    [
        ((), RAW_EXEC, RAW_FILES),
        (("raw_tracepoint",), None, None),
        (("tracepoint",), RAW_EXEC, RAW_FILES),
        (("tracefs",), RAW_EXEC, RAW_FILES),
        (("raw_tracepoint", "tracefs"), None, None),
    ],
)
def test_tracepoint_preference(
    failing: tuple[str, ...], exec_hook: str | None, file_hook: str | None
) -> None:
    plan = choose_hooks(checks(*failing))
    assert plan.exec_source.hook == exec_hook
    assert plan.file_source.hook == file_hook
    assert plan.runnable == (exec_hook is not None)
    for choice in (plan.exec_source, plan.file_source):
        if choice.hook is None:  # the reason quotes what failed
            assert any(f"{name} broke" in choice.reason for name in failing), choice


@pytest.mark.parametrize(
    ("failing", "transport"),
    [((), "ringbuf"), (("ringbuf",), "perf_buffer"), (("ringbuf", "perf_buffer"), None)],
)
def test_transport_preference(failing: tuple[str, ...], transport: str | None) -> None:
    plan = choose_hooks(checks(*failing))
    assert plan.transport.hook == transport
    assert plan.runnable == (transport is not None)
    if failing:
        assert "ringbuf broke" in plan.transport.reason


def test_nothing_checked_means_nothing_chosen() -> None:
    plan = choose_hooks([])
    assert not plan.runnable
    for choice in (plan.exec_source, plan.file_source, plan.fsnotify, plan.transport):
        assert choice.hook is None
        assert "not checked" in choice.reason


def test_plan_renders_one_line_per_choice_and_is_frozen() -> None:
    plan = choose_hooks(checks("fentry", "kprobe"))
    lines = plan.lines()
    assert [line.split(":")[0] for line in lines] == ["exec", "files", "fsnotify", "transport"]
    assert all(" — " in line and "\n" not in line for line in lines)
    assert "fsnotify: none — " in lines[2]
    assert str(plan) == "\n".join(lines)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.transport = plan.exec_source  # type: ignore[misc]
    assert isinstance(plan, HookPlan)


# --- the running kernel (root) -----------------------------------------------------

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to load BPF")


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module")
def measured() -> dict[str, Check]:
    if os.geteuid() != 0:
        pytest.skip("needs root to load BPF")
    return {c.name: c for c in detect()}


@pytest.mark.kernel
@as_root
def test_detect_runs_every_check_quickly(measured: dict[str, Check]) -> None:
    assert tuple(measured) == CAPABILITY_CHECKS  # and no BCC compile: that is check_bcc_compiles()
    for check in measured.values():
        assert check.detail
        assert check.ok or check.hint, check


@pytest.mark.kernel
@as_root
def test_measured_facts_of_the_ci_machine(measured: dict[str, Check]) -> None:
    """DESIGN.md, "What the development and CI machines allow (measured)"."""
    for name in ("privileges", "btf", "bpf_syscall", "ringbuf", "perf_buffer"):
        assert measured[name].ok, measured[name]
    for name in ("tracepoint", "raw_tracepoint", "tp_btf"):
        assert measured[name].ok, measured[name]
    assert not measured["kprobe"].ok
    assert "CONFIG_KPROBES" in measured["kprobe"].detail
    assert not measured["fentry"].ok
    assert "EPERM: operation not permitted" in measured["fentry"].detail
    assert not measured["lsm"].ok
    plan = choose_hooks(measured.values())
    assert plan.exec_source.hook == "raw_tracepoint:sched_process_exec"
    assert plan.transport.hook == "ringbuf"
    assert plan.fsnotify.hook is None
    assert plan.runnable


@pytest.mark.kernel
@as_root
def test_detect_leaks_no_fds() -> None:
    detect()  # first call may open lasting library handles (libbpf, libbcc)
    before = _fds()
    detect()
    assert _fds() == before


@pytest.mark.kernel
@as_root
def test_detect_without_btf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(btf_module, "VMLINUX_BTF", tmp_path / "vmlinux")
    measured = {c.name: c for c in detect()}
    assert not measured["btf"].ok
    assert "CONFIG_DEBUG_INFO_BTF" in measured["btf"].detail
    for name in ("tp_btf", "fentry", "lsm"):
        assert "needs kernel BTF" in measured[name].detail
    assert measured["raw_tracepoint"].ok  # BTF-free hooks do not care


@pytest.mark.kernel
@as_root
def test_bcc_compiles() -> None:
    before = _fds()
    check = check_bcc_compiles()
    assert check.ok, check
    assert _fds() == before
