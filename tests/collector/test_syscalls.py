"""The syscall tables the kernel side is filled from (64-bit and ia32), and
what a record's syscall adds to its event: pure, no root."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from snoopbus.collector import records as R
from snoopbus.collector import syscalls
from snoopbus.collector.syscalls import IA32, NR_IA32_BASE, SPECS, kernel_table
from tests.support.records import builder, header

UAPI = Path("/usr/include/x86_64-linux-gnu/asm")


def uapi_numbers(name: str) -> dict[str, int]:
    path = UAPI / name
    if not path.exists():
        pytest.skip(f"{path} missing (linux-libc-dev)")
    return {m[1]: int(m[2]) for m in re.finditer(r"#define __NR_(\w+) (\d+)", path.read_text())}


def test_numbers_match_the_kernel_headers() -> None:
    """Numbers the installed headers know (they may be older than the newest
    calls) are the ones the tables use, for both ABIs."""
    x64, ia32 = uapi_numbers("unistd_64.h"), uapi_numbers("unistd_32.h")
    checked = 0
    for name, spec in SPECS.items():
        if name in x64:
            assert spec.nr == x64[name], name
            checked += 1
    for name, (nr, _) in IA32.items():
        if name in ia32:
            assert nr == ia32[name], name
            checked += 1
    assert checked > 100


def test_kernel_table_places_ia32_calls_past_the_64_bit_ones() -> None:
    table = kernel_table()
    assert max(s.nr for s in SPECS.values()) < NR_IA32_BASE
    for name, (nr, base) in IA32.items():
        spec = table[NR_IA32_BASE + nr]
        want = SPECS[base]
        assert (spec.shape, spec.kind, spec.fd, spec.name, spec.name2, spec.target) == (
            want.shape, want.kind, want.fd, want.name, want.name2, want.target), name
        assert table[nr].ia32 == 1, name  # sys_enter reads TS_COMPAT for this number
    # ia32's 3 is read and 4 write: x86-64's close (3) slot only says "ia32 has one"
    assert table[3].shape == syscalls.SHAPE_CLOSE and table[3].ia32 == 0
    assert table[4].shape == 0 and table[4].ia32 == 1
    assert table[NR_IA32_BASE + 4].kind == R.KIND_MODIFY
    assert table[NR_IA32_BASE + 6].shape == syscalls.SHAPE_CLOSE  # ia32 close
    assert all(key < 2 * NR_IA32_BASE for key in table)  # sys_spec's size
    assert syscalls.NAMES_BY_NR[NR_IA32_BASE + 5] == "ia32:open"


def record(kind: int, nr: int, segs: list[bytes], mode: int = 0, fd: int = 3,
           ret: int = 0) -> bytes:
    tail = R.FILE_TAIL.pack(ret, 0, 42, (8 << 20) | 1, 4026531840, nr, 0, mode, fd,
                            *[len(s) for s in segs])
    return header(kind) + tail + b"".join(segs)


def events(raw: bytes) -> list[dict]:
    b = builder()
    direct = b.build_raw(raw)
    layered = builder().build_all(R.decode(raw))
    def same(e: dict) -> dict:  # each builder has its own ids and clock offset
        return {k: v for k, v in e.items() if k not in ("id", "ts")}
    assert [same(e) for _, e in direct] == [same(e) for _, e in layered]
    return [e for _, e in direct]


def test_xattr_records_are_attribs_with_the_attribute_name() -> None:
    [ev] = events(record(R.KIND_XATTR, SPECS["setxattr"].nr,
                         [b"w\0", b"f\0", b"", b"security.capability\0"], fd=-1))
    assert ev["type"] == "attrib" and ev["file"]["path"] == "/w/f"
    assert (ev["file"]["xattr"], ev["file"]["xattr_op"]) == ("security.capability", "set")
    assert "target" not in ev["file"]
    [ev] = events(record(R.KIND_XATTR, NR_IA32_BASE + IA32["fremovexattr"][0],
                         [b"f\0w\0", b"", b"", b"user.x\0"]))
    assert (ev["file"]["path"], ev["file"]["xattr"], ev["file"]["xattr_op"]) == (
        "/w/f", "user.x", "remove")
    assert ev["file"]["ia32"] is True


def test_mmap_mknod_and_ia32_notes() -> None:
    [ev] = events(record(R.KIND_MODIFY, SPECS["mmap"].nr, [b"f\0w\0", b"", b"", b""]))
    assert ev["type"] == "modify" and ev["file"]["mapped"] is True and "ia32" not in ev["file"]
    [ev] = events(record(R.KIND_CREATE, SPECS["mknodat"].nr, [b"w\0", b"p\0", b"", b""],
                         mode=0o010640, fd=-1))
    assert (ev["file"]["node"], ev["file"]["mode"]) == ("fifo", 0o640)
    [ev] = events(record(R.KIND_MODIFY, NR_IA32_BASE + IA32["write"][0],
                         [b"f\0w\0", b"", b"", b""]))
    assert ev["file"]["ia32"] is True and "mapped" not in ev["file"]
    [ev] = events(record(R.KIND_MODIFY, SPECS["write"].nr, [b"f\0w\0", b"", b"", b""]))
    assert not {"ia32", "mapped", "node", "xattr"} & ev["file"].keys()

