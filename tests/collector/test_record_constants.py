"""The kernel side's record constants (collector/bpf/*.h) and their Python
mirrors agree, and none collide: one flag table, one kind per number, one
shape per number. Four branches added to these tables at once (issue 14)."""

from __future__ import annotations

import re
from pathlib import Path

from snoopbus.collector import records as R
from snoopbus.collector import syscalls

BPF = Path(R.__file__).parent / "bpf"
DEFINE = re.compile(
    r"^#define\s+((?:F|KIND|SHAPE|SCAN)_[A-Z0-9_]+)\s+\(?\s*(.+?)\s*\)?\s*(?:/\*.*)?$")


def c_defines() -> dict[str, int]:
    """NAME -> value of every F_/KIND_/SHAPE_/SCAN_ define in the headers that
    evaluates to an integer (bit shifts included)."""
    out: dict[str, int] = {}
    for header in sorted(BPF.glob("*.h")):
        for line in header.read_text().splitlines():
            m = DEFINE.match(line)
            if not m:
                continue
            name, expr = m.groups()
            if not re.fullmatch(r"[0-9x<>()\sA-Z_]+", expr):
                continue
            assert name not in out, f"{name} defined twice (again in {header.name})"
            try:
                out[name] = int(eval(expr, {}, dict(out)))  # our own headers
            except NameError:
                continue
    return out


def test_record_flags_agree_and_do_not_overlap() -> None:
    c = c_defines()
    flags = {n: v for n, v in c.items() if n.startswith("F_") and not n.endswith("_SHIFT")
             and not n.endswith("_V")}
    # Not record flags: values of syscall arguments, io_uring or kernel bits.
    flags = {n: v for n, v in flags.items() if hasattr(R, n)}
    assert len(flags) == 13, flags  # a new flag: add it to both tables
    for name, value in flags.items():
        assert getattr(R, name) == value, name
    seen: dict[int, str] = {}
    for name, value in flags.items():
        for bit in range(16):
            if value & (1 << bit):
                assert bit not in seen, f"{name} and {seen[bit]} share bit {bit}"
                seen[bit] = name
    assert max(seen) < 16  # rec_hdr.flags is a u16


def test_record_kinds_agree_and_are_unique() -> None:
    c = c_defines()
    kinds = {n: v for n, v in c.items() if n.startswith("KIND_") and n != "KIND_MAX"}
    assert len(set(kinds.values())) == len(kinds), kinds
    assert all(v < c["KIND_MAX"] for v in kinds.values())
    for name, value in kinds.items():
        assert getattr(R, name) == value, name
    assert R.LOST_INFLIGHT_FULL not in kinds.values()


def test_syscall_shapes_agree_and_are_unique() -> None:
    c = c_defines()
    shapes = {n: v for n, v in c.items() if n.startswith("SHAPE_")}
    assert len(set(shapes.values())) == len(shapes), shapes
    for name, value in shapes.items():
        assert getattr(syscalls, name) == value, name


def test_closed_by_values_are_the_scan_modes() -> None:
    c = c_defines()
    assert R.CLOSED_BY == {c["SCAN_EXIT"]: "exit", c["SCAN_EXEC"]: "exec",
                           c["SCAN_RANGE"]: "close_range"}
    assert R.F_CLOSED_BY_MASK >> R.F_CLOSED_BY_SHIFT >= max(R.CLOSED_BY)
