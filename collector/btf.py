"""Struct member offsets from the running kernel's BTF, through libbpf's BTF API.

The probe programs read kernel structs at offsets passed in as `-D` constants,
so they stay right when the installed kernel headers belong to another kernel
(BCC compiles against whatever headers it finds). Two layers:

- pure resolution over a `TypeTable` (type records by id): walks paths like
  "dentry.d_name.name" through nested and anonymous struct/union members;
  unit-testable with a small fake table, no root, no libbpf.
- `Btf`, a `TypeTable` backed by libbpf.so.1 via ctypes, reading the raw
  `struct btf_type` / `struct btf_member` records libbpf hands back.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Protocol, Self

__all__ = [
    "KERNEL_FIELDS",
    "VMLINUX_BTF",
    "Btf",
    "BtfError",
    "Kind",
    "Member",
    "TypeRecord",
    "TypeTable",
    "errno_detail",
    "libbpf",
    "member_offset",
    "offsets_cflags",
    "quiet_libbpf",
    "resolve",
]

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

# Fields the probe programs read, as -D names. The BPF loader may pass its own
# mapping to offsets_cflags(); this one is what `snoopbus doctor` reports.
KERNEL_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "OFF_TASK_REAL_PARENT": "task_struct.real_parent",
        "OFF_TASK_PID": "task_struct.pid",
        "OFF_TASK_TGID": "task_struct.tgid",
        "OFF_TASK_MM": "task_struct.mm",
        "OFF_TASK_FS": "task_struct.fs",
        "OFF_TASK_FILES": "task_struct.files",
        "OFF_TASK_EXIT_CODE": "task_struct.exit_code",
        "OFF_TASK_NSPROXY": "task_struct.nsproxy",
        "OFF_MM_ARG_START": "mm_struct.arg_start",
        "OFF_MM_ARG_END": "mm_struct.arg_end",
        "OFF_MM_EXE_FILE": "mm_struct.exe_file",
        "OFF_DENTRY_PARENT": "dentry.d_parent",
        "OFF_DENTRY_NAME": "dentry.d_name.name",
        "OFF_DENTRY_NAME_LEN": "dentry.d_name.len",
        "OFF_DENTRY_INODE": "dentry.d_inode",
        "OFF_QSTR_NAME": "qstr.name",
        "OFF_QSTR_LEN": "qstr.len",
        "OFF_MOUNT_MNT": "mount.mnt",
        "OFF_MOUNT_PARENT": "mount.mnt_parent",
        "OFF_MOUNT_MOUNTPOINT": "mount.mnt_mountpoint",
        "OFF_VFSMOUNT_ROOT": "vfsmount.mnt_root",
        "OFF_FS_PWD": "fs_struct.pwd",
        "OFF_FS_ROOT": "fs_struct.root",
        "OFF_PATH_DENTRY": "path.dentry",
        "OFF_PATH_MNT": "path.mnt",
        "OFF_FILE_PATH": "file.f_path",
        "OFF_FILES_FDT": "files_struct.fdt",
        "OFF_FDTABLE_FD": "fdtable.fd",
        "OFF_NSPROXY_MNT_NS": "nsproxy.mnt_ns",
        "OFF_MNT_NS_INUM": "mnt_namespace.ns.inum",
        "OFF_INODE_INO": "inode.i_ino",
        "OFF_INODE_SB": "inode.i_sb",
        "OFF_SB_DEV": "super_block.s_dev",
    }
)


class BtfError(RuntimeError):
    """BTF missing or unreadable, or a struct/member path that does not resolve."""


class Kind(IntEnum):
    """BTF_KIND_* from include/uapi/linux/btf.h."""

    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


# Kinds that only qualify or rename another type: skip them to reach the real one.
_MODIFIERS = frozenset({Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG})
_COMPOSITES = frozenset({Kind.STRUCT, Kind.UNION})


@dataclass(frozen=True, slots=True)
class Member:
    name: str  # "" for an anonymous struct/union member
    type_id: int
    bit_offset: int
    bitfield_size: int = 0  # non-zero only for kind_flag bitfields


@dataclass(frozen=True, slots=True)
class TypeRecord:
    kind: int
    name: str = ""
    size: int = 0  # STRUCT/UNION/INT/ENUM size in bytes
    ref: int = 0  # referenced type id for PTR/TYPEDEF/CONST/... ; 0 otherwise
    members: tuple[Member, ...] = ()
    int_bits: int = 0  # INT only: width in bits (a kind_flag=0 bitfield has bits < 8*size)
    int_offset: int = 0  # INT only: bit offset inside the storage (legacy bitfields)


class TypeTable(Protocol):
    def type_record(self, type_id: int) -> TypeRecord: ...

    def find_type(self, name: str, kind: int) -> int | None: ...


# --- pure resolution ----------------------------------------------------------


def skip_modifiers(table: TypeTable, type_id: int) -> int:
    # Bounded: a malformed table with a typedef cycle must not hang the collector.
    for _ in range(64):
        record = table.type_record(type_id)
        if record.kind not in _MODIFIERS:
            return type_id
        type_id = record.ref
    raise BtfError(f"BTF type {type_id}: too many typedef/const/volatile levels")


def find_composite(table: TypeTable, name: str) -> int:
    for kind in (Kind.STRUCT, Kind.UNION):
        type_id = table.find_type(name, kind)
        if type_id is not None:
            return type_id
    raise BtfError(f"struct {name} not found in BTF")


def _find_member(table: TypeTable, type_id: int, name: str) -> tuple[int, Member] | None:
    """Bit offset of member `name` within composite `type_id`, looking through
    anonymous struct/union members (mm_struct keeps its fields in one since 6.x)."""
    record = table.type_record(type_id)
    for member in record.members:
        if member.name == name:
            return member.bit_offset, member
    for member in record.members:
        if member.name:
            continue
        inner = skip_modifiers(table, member.type_id)
        if table.type_record(inner).kind not in _COMPOSITES:
            continue
        found = _find_member(table, inner, name)
        if found is not None:
            return member.bit_offset + found[0], found[1]
    return None


def _is_bitfield(table: TypeTable, member: Member, bit_offset: int) -> bool:
    if member.bitfield_size or bit_offset % 8:
        return True
    # kind_flag=0 encoding: the width lives in the member's INT type.
    record = table.type_record(skip_modifiers(table, member.type_id))
    return record.kind == Kind.INT and (
        record.int_offset != 0 or record.int_bits != record.size * 8
    )


def member_offset(table: TypeTable, path: str) -> int:
    """Byte offset of "struct.member[.member...]", descending into embedded
    (not pointed-to) structs and through anonymous struct/union members."""
    parts = path.split(".")
    if len(parts) < 2 or not all(parts):
        raise BtfError(f"bad field path {path!r}: expected struct.member[.member...]")
    type_id = find_composite(table, parts[0])
    where = f"struct {parts[0]}"
    total_bits = 0
    for i, name in enumerate(parts[1:], start=1):
        found = _find_member(table, type_id, name)
        if found is None:
            raise BtfError(f"{where} has no member {name!r} (resolving {path})")
        bit_offset, member = found
        if _is_bitfield(table, member, bit_offset):
            raise BtfError(
                f"{'.'.join(parts[: i + 1])} is a bitfield: it has no byte offset "
                f"(resolving {path})"
            )
        total_bits += bit_offset
        type_id = skip_modifiers(table, member.type_id)
        if i + 1 < len(parts):
            record = table.type_record(type_id)
            if record.kind not in _COMPOSITES:
                raise BtfError(
                    f"{'.'.join(parts[: i + 1])} is a {Kind(record.kind).name.lower()}, not an "
                    f"embedded struct or union: cannot descend into {parts[i + 1]!r} "
                    f"(resolving {path})"
                )
            where = ".".join(parts[: i + 1])
    return total_bits // 8


# --- libbpf via ctypes ----------------------------------------------------------


_LIBBPF_ERRNO_BASE = 4000


def errno_detail(err: int) -> str:
    """'EPERM: operation not permitted' — errno name first, so logs grep well."""
    if err >= _LIBBPF_ERRNO_BASE:  # libbpf's own codes, e.g. 4001 for a bad format
        buf = ctypes.create_string_buffer(128)
        libbpf().libbpf_strerror(err, buf, len(buf))
        return f"libbpf error {err}: {buf.value.decode(errors='replace')}"
    name = errno.errorcode.get(err, f"errno {err}")
    text = os.strerror(err)
    return f"{name}: {text[:1].lower()}{text[1:]}"


class _BtfType(ctypes.Structure):
    _fields_ = (
        ("name_off", ctypes.c_uint32),
        ("info", ctypes.c_uint32),
        ("size_or_type", ctypes.c_uint32),
    )


class _BtfMember(ctypes.Structure):
    _fields_ = (
        ("name_off", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("offset", ctypes.c_uint32),
    )


@functools.cache
def libbpf() -> ctypes.CDLL:
    """libbpf.so.1 with the prototypes snoopbus uses declared (wrong implicit
    int return types would truncate pointers)."""
    try:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError as exc:
        raise BtfError(
            f"libbpf.so.1 not found ({exc}): install libbpf1 (apt-get install libbpf1)"
        ) from exc
    vp, cp, u32, i32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_int
    protos: dict[str, tuple[object, list[object]]] = {
        "btf__parse": (vp, [cp, vp]),
        "btf__free": (None, [vp]),
        "btf__find_by_name_kind": (i32, [vp, cp, u32]),
        "btf__type_by_id": (vp, [vp, u32]),
        "btf__type_cnt": (u32, [vp]),
        "btf__name_by_offset": (cp, [vp, u32]),
        "libbpf_set_print": (vp, [vp]),
        "libbpf_strerror": (i32, [i32, cp, ctypes.c_size_t]),
        # low-level bpf() wrappers, for capabilities.py; libbpf 1.x returns -errno
        "bpf_prog_load": (i32, [u32, cp, cp, vp, ctypes.c_size_t, vp]),
        "bpf_map_create": (i32, [u32, cp, u32, u32, u32, vp]),
        "bpf_raw_tracepoint_open": (i32, [cp, i32]),
        "bpf_link_create": (i32, [i32, i32, u32, vp]),
    }
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


@contextlib.contextmanager
def quiet_libbpf() -> Iterator[ctypes.CDLL]:
    """libbpf with its logger off for the duration: its default prints to stderr,
    and our errors carry the errno instead. Restored after, because libbcc
    shares this libbpf.so.1 and its messages matter to whoever uses BCC."""
    lib = libbpf()
    previous = lib.libbpf_set_print(None)
    try:
        yield lib
    finally:
        lib.libbpf_set_print(previous)


class Btf:
    """Parsed BTF (by default the running kernel's). Use as a context manager, or
    call close(); the libbpf object holds memory, not file descriptors."""

    def __init__(self, handle: int, path: Path) -> None:
        self._handle: int | None = handle
        self.path = path
        self._records: dict[int, TypeRecord] = {}
        self._offsets: dict[str, int] = {}

    @classmethod
    def load(cls, path: str | None = None) -> Btf:
        if path is None:
            btf_path = VMLINUX_BTF
            if not btf_path.exists():
                raise BtfError(
                    f"no kernel BTF at {btf_path}: this kernel was built without "
                    "CONFIG_DEBUG_INFO_BTF; snoopbus needs it to read struct offsets "
                    "(use a kernel with BTF, e.g. any current distribution kernel)"
                )
        else:
            btf_path = Path(path)
            if not btf_path.exists():
                raise BtfError(f"no BTF at {btf_path}: no such file")
        with quiet_libbpf() as lib:
            handle = lib.btf__parse(os.fsencode(btf_path), None)
            err = ctypes.get_errno() or errno.EINVAL
        if not handle:
            raise BtfError(
                f"cannot parse BTF at {btf_path}: {errno_detail(err)} (is it raw BTF or an "
                "ELF file with a .BTF section? is libbpf1 older than the kernel's BTF?)"
            )
        return cls(handle, btf_path)

    def close(self) -> None:
        if self._handle is not None:
            libbpf().btf__free(self._handle)
            self._handle = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _ptr(self) -> int:
        if self._handle is None:
            raise BtfError(f"BTF from {self.path} is closed")
        return self._handle

    # TypeTable -----------------------------------------------------------------

    def _name(self, offset: int) -> str:
        raw = libbpf().btf__name_by_offset(self._ptr(), offset)
        return raw.decode(errors="surrogateescape") if raw else ""

    def type_record(self, type_id: int) -> TypeRecord:
        cached = self._records.get(type_id)
        if cached is not None:
            return cached
        address = libbpf().btf__type_by_id(self._ptr(), type_id)
        if not address:
            raise BtfError(f"BTF type id {type_id} out of range in {self.path}")
        raw = _BtfType.from_address(address)
        vlen = raw.info & 0xFFFF
        kind = (raw.info >> 24) & 0x1F
        kind_flag = raw.info >> 31
        name = self._name(raw.name_off)
        tail = address + ctypes.sizeof(_BtfType)  # kind-specific data follows the header
        record: TypeRecord
        if kind in _COMPOSITES:
            members = []
            for m in (_BtfMember * vlen).from_address(tail):
                if kind_flag:  # offset packs bitfield size (bits 24..31) and bit offset
                    members.append(
                        Member(self._name(m.name_off), m.type, m.offset & 0xFFFFFF, m.offset >> 24)
                    )
                else:
                    members.append(Member(self._name(m.name_off), m.type, m.offset))
            record = TypeRecord(kind, name, size=raw.size_or_type, members=tuple(members))
        elif kind == Kind.INT:
            encoding = ctypes.c_uint32.from_address(tail).value
            record = TypeRecord(
                kind,
                name,
                size=raw.size_or_type,
                int_bits=encoding & 0xFF,
                int_offset=(encoding >> 16) & 0xFF,
            )
        elif kind in (Kind.ENUM, Kind.ENUM64, Kind.FLOAT, Kind.DATASEC):
            record = TypeRecord(kind, name, size=raw.size_or_type)
        elif kind in (Kind.ARRAY, Kind.FWD, Kind.FUNC_PROTO, Kind.UNKN):
            record = TypeRecord(kind, name)
        else:  # PTR, modifiers, FUNC, VAR, DECL_TAG: the third word is a type id
            record = TypeRecord(kind, name, ref=raw.size_or_type)
        self._records[type_id] = record
        return record

    def find_type(self, name: str, kind: int) -> int | None:
        type_id = libbpf().btf__find_by_name_kind(self._ptr(), name.encode(), kind)
        return type_id if type_id > 0 else None

    # Public queries ----------------------------------------------------------------

    def offset(self, path: str) -> int:
        """Byte offset of "struct.member[.member...]", e.g. "dentry.d_name.name"."""
        cached = self._offsets.get(path)
        if cached is None:
            cached = self._offsets[path] = member_offset(self, path)
        return cached

    def size(self, struct_name: str) -> int:
        return self.type_record(find_composite(self, struct_name)).size

    def type_id(self, name: str, kind: int) -> int:
        type_id = self.find_type(name, kind)
        if type_id is None:
            raise BtfError(f"{Kind(kind).name.lower()} {name} not found in BTF at {self.path}")
        return type_id

    def has_func(self, name: str) -> bool:
        """A BTF_KIND_FUNC exists, i.e. `name` is a candidate fentry/fexit target."""
        return self.find_type(name, Kind.FUNC) is not None

    def func_id(self, name: str) -> int:
        return self.type_id(name, Kind.FUNC)


def offsets_cflags(btf: Btf, wanted: Mapping[str, str]) -> list[str]:
    """["-DNAME=123", ...] for {"NAME": "struct.member.path"}: how the probe
    programs get their offsets."""
    return [f"-D{name}={btf.offset(path)}" for name, path in wanted.items()]


@functools.cache
def _vmlinux() -> Btf:
    # Kept for the life of the process: parsing vmlinux BTF takes tens of ms.
    return Btf.load()


def resolve(wanted: Mapping[str, str]) -> dict[str, int]:
    """{"NAME": offset} from the running kernel's BTF, parsed once per process."""
    btf = _vmlinux()
    return {name: btf.offset(path) for name, path in wanted.items()}
