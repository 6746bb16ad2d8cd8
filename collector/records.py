"""Decoding of kernel ring-buffer records: pure, table-driven, no root needed.

Mirrors bpf/common.h and bpf/proc.h. Layers: kernel struct -> these decoded
records -> public events (events.py). A record of an unknown kind, or one
too short for its kind, raises RecordError so the reader can count it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from snoopbus.proto import text_from_kernel

KIND_EXEC = 1
KIND_EXIT = 2

F_EXE_TRUNC = 1 << 0
F_CWD_TRUNC = 1 << 1
F_ARGV_TRUNC = 1 << 2
F_PATH_TRUNC = 1 << 3
F_PATH2_TRUNC = 1 << 4

# struct rec_hdr: ts, cgroup, pid, tid, ppid, uid, gid, kind, flags, comm[16]
HDR = struct.Struct("<QQIIIIIHH16s")
EXEC_TAIL = struct.Struct("<HHI")  # exe_len, cwd_len, argv_len
EXIT_TAIL = struct.Struct("<II")  # exit_code (wait status), pad


class RecordError(ValueError):
    """A ring-buffer record that cannot be decoded (the reason is the message)."""


@dataclass(slots=True)
class Header:
    ts_boot: int  # CLOCK_BOOTTIME ns
    cgroup: int
    pid: int
    tid: int
    ppid: int
    uid: int
    gid: int
    kind: int
    flags: int
    comm: str


@dataclass(slots=True)
class ExecRecord:
    hdr: Header
    exe: str
    cwd: str
    argv: list[str]


@dataclass(slots=True)
class ExitRecord:
    hdr: Header
    status: int  # raw wait status

    @property
    def signal(self) -> int:
        return self.status & 0x7F

    @property
    def exit_code(self) -> int:
        # Shell convention for a process killed by a signal: 128 + signal.
        return 128 + self.signal if self.signal else (self.status >> 8) & 0xFF


Record = ExecRecord | ExitRecord


def join_path(names: bytes) -> str:
    """Leaf-first NUL-terminated names, as the kernel walk writes them -> "/a/b"."""
    if not names:
        return "/"
    parts = names.split(b"\0")
    if parts[-1] == b"":
        parts.pop()
    return "/" + "/".join(text_from_kernel(p) for p in reversed(parts))


def split_argv(raw: bytes, truncated: bool) -> list[str]:
    """argv as the kernel lays it out: each argument NUL-terminated.

    Empty arguments survive; only the terminator after the last one is dropped.
    A truncated tail (no terminator) is kept as the partial last argument.
    """
    if not raw:
        return []
    parts = raw.split(b"\0")
    if parts[-1] == b"" and not (truncated and len(parts) == 1):
        parts.pop()
    return [text_from_kernel(p) for p in parts]


def decode_header(buf: bytes) -> Header:
    if len(buf) < HDR.size:
        raise RecordError(f"record of {len(buf)} bytes is shorter than its header ({HDR.size})")
    ts, cg, pid, tid, ppid, uid, gid, kind, flags, comm = HDR.unpack_from(buf)
    return Header(
        ts, cg, pid, tid, ppid, uid, gid, kind, flags, text_from_kernel(comm.split(b"\0", 1)[0])
    )


def _decode_exec(hdr: Header, buf: bytes) -> ExecRecord:
    end = HDR.size + EXEC_TAIL.size
    if len(buf) < end:
        raise RecordError("exec record shorter than its fixed part")
    exe_len, cwd_len, argv_len = EXEC_TAIL.unpack_from(buf, HDR.size)
    if end + exe_len + cwd_len + argv_len > len(buf):
        raise RecordError("exec record lengths run past its end")
    exe = join_path(buf[end : end + exe_len])
    end += exe_len
    cwd = join_path(buf[end : end + cwd_len])
    end += cwd_len
    argv = split_argv(buf[end : end + argv_len], bool(hdr.flags & F_ARGV_TRUNC))
    return ExecRecord(hdr, exe, cwd, argv)


def _decode_exit(hdr: Header, buf: bytes) -> ExitRecord:
    if len(buf) < HDR.size + EXIT_TAIL.size:
        raise RecordError("exit record shorter than its fixed part")
    status, _ = EXIT_TAIL.unpack_from(buf, HDR.size)
    return ExitRecord(hdr, status)


DECODERS: dict[int, Callable[[Header, bytes], Record]] = {
    KIND_EXEC: _decode_exec,
    KIND_EXIT: _decode_exit,
}


def decode(buf: bytes) -> Record:
    hdr = decode_header(buf)
    decoder = DECODERS.get(hdr.kind)
    if decoder is None:
        raise RecordError(f"unknown record kind {hdr.kind}")
    return decoder(hdr, buf)
