"""BTF offsets: the pure resolver over a fake type table, then the real kernel."""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from snoopbus.collector import btf as btf_module
from snoopbus.collector.btf import (
    KERNEL_FIELDS,
    VMLINUX_BTF,
    Btf,
    BtfError,
    Kind,
    Member,
    TypeRecord,
    errno_detail,
    member_offset,
    offsets_cflags,
    resolve,
)


class FakeTable:
    """A TypeTable from a dict, shaped like vmlinux BTF where it matters."""

    def __init__(self, records: dict[int, TypeRecord]) -> None:
        self.records = records

    def type_record(self, type_id: int) -> TypeRecord:
        return self.records[type_id]

    def find_type(self, name: str, kind: int) -> int | None:
        for type_id, record in self.records.items():
            if record.name == name and record.kind == kind:
                return type_id
        return None


def _int(name: str, size: int, bits: int | None = None) -> TypeRecord:
    return TypeRecord(Kind.INT, name, size=size, int_bits=size * 8 if bits is None else bits)


FAKE = FakeTable(
    {
        1: _int("unsigned int", 4),
        2: _int("u64", 8),
        3: TypeRecord(Kind.PTR, ref=0),
        # struct qstr { union { struct { u32 hash; u32 len; }; u64 hash_len; }; const char *name; }
        4: TypeRecord(
            Kind.STRUCT,
            "qstr",
            size=16,
            members=(Member("", 5, 0), Member("name", 3, 64)),
        ),
        5: TypeRecord(Kind.UNION, size=8, members=(Member("", 6, 0), Member("hash_len", 2, 0))),
        6: TypeRecord(Kind.STRUCT, size=8, members=(Member("hash", 1, 0), Member("len", 1, 32))),
        # struct dentry { unsigned int d_flags; struct dentry *d_parent; const qstr_t d_name; }
        8: TypeRecord(
            Kind.STRUCT,
            "dentry",
            size=32,
            members=(Member("d_flags", 1, 0), Member("d_parent", 9, 64), Member("d_name", 10, 128)),
        ),
        9: TypeRecord(Kind.PTR, ref=8),
        10: TypeRecord(Kind.CONST, ref=11),
        11: TypeRecord(Kind.TYPEDEF, "qstr_t", ref=4),
        # kind_flag bitfields: struct flags { unsigned a:1, b:3; unsigned int c; }
        12: TypeRecord(
            Kind.STRUCT,
            "flags",
            size=8,
            members=(Member("a", 1, 0, 1), Member("b", 1, 1, 3), Member("c", 1, 32)),
        ),
        # kind_flag=0 bitfields: the width lives in the INT type
        13: _int("unsigned int", 4, bits=3),
        14: TypeRecord(
            Kind.STRUCT, "legacy", size=8, members=(Member("x", 13, 0), Member("y", 1, 32))
        ),
        # struct mm_struct { int mm_count; struct { ...; u64 arg_start; }; }
        15: TypeRecord(
            Kind.STRUCT,
            "mm_struct",
            size=64,
            members=(Member("mm_count", 1, 0), Member("", 16, 64)),
        ),
        16: TypeRecord(
            Kind.STRUCT,
            size=56,
            members=(Member("mmap_base", 2, 0), Member("", 17, 64)),
        ),
        17: TypeRecord(Kind.UNION, size=16, members=(Member("pad", 2, 0), Member("", 18, 0))),
        18: TypeRecord(
            Kind.STRUCT, size=16, members=(Member("arg_start", 2, 0), Member("arg_end", 2, 64))
        ),
        # a typedef cycle: a malformed table must not hang the resolver
        20: TypeRecord(Kind.TYPEDEF, "loop_a", ref=21),
        21: TypeRecord(Kind.TYPEDEF, "loop_b", ref=20),
        22: TypeRecord(Kind.STRUCT, "looped", size=8, members=(Member("x", 20, 0),)),
        # a union at top level resolves like a struct
        23: TypeRecord(Kind.UNION, "u", size=8, members=(Member("v", 2, 0),)),
    }
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("qstr.hash", 0),
        ("qstr.len", 4),  # struct inside an anonymous union
        ("qstr.hash_len", 0),
        ("qstr.name", 8),
        ("dentry.d_parent", 8),
        ("dentry.d_name", 16),
        ("dentry.d_name.name", 24),  # through const + typedef, then summed
        ("dentry.d_name.len", 20),
        ("mm_struct.arg_start", 16),  # anonymous struct > anonymous union > anonymous struct
        ("mm_struct.arg_end", 24),
        ("flags.c", 4),
        ("legacy.y", 4),
        ("u.v", 0),
    ],
)
def test_member_offset(path: str, expected: int) -> None:
    assert member_offset(FAKE, path) == expected


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("nostruct.x", r"struct nostruct not found"),
        ("dentry.d_nope", r"struct dentry has no member 'd_nope' \(resolving dentry.d_nope\)"),
        ("dentry.d_name.nope", r"dentry.d_name has no member 'nope'"),
        ("flags.a", r"flags.a is a bitfield"),
        ("flags.b", r"flags.b is a bitfield"),
        ("legacy.x", r"legacy.x is a bitfield"),
        ("dentry.d_parent.d_name", r"dentry.d_parent is a ptr, not an embedded struct"),
        ("qstr.len.x", r"qstr.len is a int"),
        ("dentry", r"bad field path 'dentry'"),
        ("dentry..d_name", r"bad field path"),
        ("looped.x", r"too many typedef"),
    ],
)
def test_member_offset_errors(path: str, message: str) -> None:
    with pytest.raises(BtfError, match=message):
        member_offset(FAKE, path)


def test_errno_detail_names_the_errno() -> None:
    assert errno_detail(errno.EPERM) == "EPERM: operation not permitted"
    assert errno_detail(errno.ENOENT).startswith("ENOENT: no such file")


def test_missing_vmlinux_btf_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "vmlinux"
    monkeypatch.setattr(btf_module, "VMLINUX_BTF", missing)
    with pytest.raises(BtfError) as info:
        Btf.load()
    message = str(info.value)
    assert f"no kernel BTF at {missing}" in message
    assert "CONFIG_DEBUG_INFO_BTF" in message
    assert "use a kernel with BTF" in message


def test_missing_btf_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(BtfError, match=rf"no BTF at {tmp_path}/nope: no such file"):
        Btf.load(str(tmp_path / "nope"))


def test_garbage_btf_is_a_clear_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not BTF at all\n" * 4)
    with pytest.raises(BtfError, match=r"cannot parse BTF at .*garbage: libbpf error"):
        Btf.load(str(garbage))


# --- the running kernel ---------------------------------------------------------

vmlinux = pytest.mark.skipif(not VMLINUX_BTF.exists(), reason="no kernel BTF")


@pytest.fixture(scope="module")
def kbtf() -> Iterator[Btf]:
    if not VMLINUX_BTF.exists():
        pytest.skip("no kernel BTF")
    with Btf.load() as loaded:
        yield loaded


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.kernel
@vmlinux
def test_kernel_invariants(kbtf: Btf) -> None:
    assert kbtf.offset("task_struct.tgid") == kbtf.offset("task_struct.pid") + 4
    assert kbtf.offset("qstr.name") == 8
    assert kbtf.offset("path.mnt") == 0
    assert kbtf.offset("path.dentry") == 8
    arg_start = kbtf.offset("mm_struct.arg_start")  # inside an anonymous struct on 6.x
    assert arg_start > 0 and arg_start % 8 == 0
    assert kbtf.offset("mm_struct.arg_end") == arg_start + 8
    assert kbtf.offset("dentry.d_name.name") == kbtf.offset("dentry.d_name") + 8
    assert kbtf.offset("dentry.d_name.len") == kbtf.offset("dentry.d_name") + 4
    assert kbtf.offset("qstr.len") == 4  # anonymous struct in an anonymous union
    assert kbtf.size("path") == 16
    assert kbtf.size("qstr") == 16


@pytest.mark.kernel
@vmlinux
def test_every_listed_field_resolves_inside_its_struct(kbtf: Btf) -> None:
    paths = {
        *KERNEL_FIELDS.values(),
        "mount.mnt",
        "mnt_namespace.ns.inum",
        "super_block.s_dev",
    }
    for path in paths:
        offset = kbtf.offset(path)
        assert 0 <= offset < kbtf.size(path.split(".")[0]), path
    pointer_fields = ["task_struct.real_parent", "fdtable.fd", "files_struct.fdt", "inode.i_sb"]
    for path in pointer_fields:
        assert kbtf.offset(path) % 8 == 0, path


@pytest.mark.kernel
@vmlinux
def test_kernel_errors_name_what_is_missing(kbtf: Btf) -> None:
    with pytest.raises(BtfError, match=r"struct task_struct has no member 'no_such_member'"):
        kbtf.offset("task_struct.no_such_member")
    with pytest.raises(BtfError, match=r"struct snoopbus_no_such_struct not found"):
        kbtf.offset("snoopbus_no_such_struct.x")
    with pytest.raises(BtfError, match=r"task_struct.real_parent is a ptr"):
        kbtf.offset("task_struct.real_parent.pid")


@pytest.mark.kernel
@vmlinux
def test_kernel_bitfield_is_refused(kbtf: Btf) -> None:
    # Find any kind_flag bitfield in task_struct, so the test does not depend on
    # one kernel version's choice of bitfields.
    record = kbtf.type_record(kbtf.type_id("task_struct", Kind.STRUCT))
    bitfields = [m.name for m in record.members if m.name and m.bitfield_size]
    if not bitfields:
        pytest.skip("no named bitfield in this kernel's task_struct")
    with pytest.raises(BtfError, match=rf"task_struct.{bitfields[0]} is a bitfield"):
        kbtf.offset(f"task_struct.{bitfields[0]}")


@pytest.mark.kernel
@vmlinux
def test_funcs_and_type_ids(kbtf: Btf) -> None:
    assert kbtf.has_func("fsnotify")
    assert not kbtf.has_func("snoopbus_no_such_function")
    assert kbtf.func_id("fsnotify") > 0
    assert kbtf.type_id("btf_trace_sched_process_exec", Kind.TYPEDEF) > 0
    with pytest.raises(BtfError, match=r"func snoopbus_nope not found"):
        kbtf.func_id("snoopbus_nope")


@pytest.mark.kernel
@vmlinux
def test_offsets_cflags_and_resolve(kbtf: Btf) -> None:
    wanted = {"OFF_A": "path.dentry", "OFF_B": "qstr.name"}
    assert offsets_cflags(kbtf, wanted) == ["-DOFF_A=8", "-DOFF_B=8"]
    resolved = resolve(KERNEL_FIELDS)
    assert resolved == {name: kbtf.offset(path) for name, path in KERNEL_FIELDS.items()}
    assert btf_module._vmlinux() is btf_module._vmlinux()  # parsed once per process


@pytest.mark.kernel
@vmlinux
def test_load_and_close_leak_no_fds() -> None:
    before = _fds()
    for _ in range(3):
        with Btf.load() as loaded:
            loaded.offset("path.dentry")
    assert _fds() == before
    with pytest.raises(BtfError, match="closed"):
        loaded.offset("qstr.len")


def _bpftool_members(struct: str) -> dict[str, int]:
    """Direct members of `struct` as bpftool prints them: name -> byte offset."""
    out = subprocess.run(
        ["bpftool", "btf", "dump", "file", str(VMLINUX_BTF), "format", "raw"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = iter(out.splitlines())
    for line in lines:
        if re.match(rf"\[\d+\] STRUCT '{struct}' ", line):
            break
    members = {}
    for line in lines:
        m = re.match(r"\s+'(\w+)' type_id=\d+ bits_offset=(\d+)", line)
        if not m:
            break
        members[m.group(1)] = int(m.group(2)) // 8
    return members


@pytest.mark.kernel
@vmlinux
def test_matches_bpftool(kbtf: Btf) -> None:
    for struct, member in [("path", "dentry"), ("task_struct", "tgid"), ("fs_struct", "pwd")]:
        assert kbtf.offset(f"{struct}.{member}") == _bpftool_members(struct)[member]
