"""Decoding kernel records: pure, from bytes laid out as the C structs are."""

from __future__ import annotations

import pytest

from snoopbus.collector.records import (
    EXEC_TAIL,
    EXIT_TAIL,
    F_ARGV_TRUNC,
    HDR,
    KIND_EXEC,
    KIND_EXIT,
    ExecRecord,
    ExitRecord,
    RecordError,
    decode,
    join_path,
    split_argv,
)


def header(kind: int, flags: int = 0, comm: bytes = b"ls") -> bytes:
    return HDR.pack(123, 9, 100, 101, 1, 1000, 1001, kind, flags, comm)


def names(*leaf_first: bytes) -> bytes:
    return b"".join(n + b"\0" for n in leaf_first)


def exec_record(exe: bytes, cwd: bytes, argv: bytes, flags: int = 0) -> bytes:
    tail = EXEC_TAIL.pack(len(exe), len(cwd), len(argv))
    return header(KIND_EXEC, flags) + tail + exe + cwd + argv


def test_exec_record_decodes_every_field() -> None:
    raw = exec_record(names(b"ls", b"bin", b"usr"), names(b"tmp"), b"ls\0-la\0\0x y\0")
    rec = decode(raw)
    assert isinstance(rec, ExecRecord)
    h = rec.hdr
    ids = (h.ts_boot, h.cgroup, h.pid, h.tid, h.ppid, h.uid, h.gid)
    assert ids == (123, 9, 100, 101, 1, 1000, 1001)
    assert h.comm == "ls"
    assert rec.exe == "/usr/bin/ls"
    assert rec.cwd == "/tmp"
    assert rec.argv == ["ls", "-la", "", "x y"]


def test_root_and_non_utf8_names() -> None:
    assert join_path(b"") == "/"
    path = join_path(names(b"\xff\xfe", b"d ir"))
    assert path == "/d ir/\udcff\udcfe"
    assert path.encode("utf-8", "surrogateescape") == b"/d ir/\xff\xfe"


def test_argv_keeps_empty_args_and_a_truncated_tail() -> None:
    assert split_argv(b"a\0\0b\0", truncated=False) == ["a", "", "b"]
    assert split_argv(b"a\0bcd", truncated=True) == ["a", "bcd"]
    assert split_argv(b"", truncated=False) == []
    rec = decode(exec_record(b"", b"", b"a\0bc", flags=F_ARGV_TRUNC))
    assert isinstance(rec, ExecRecord) and rec.argv == ["a", "bc"]


@pytest.mark.parametrize(
    ("status", "code", "signal"),
    [(0, 0, 0), (7 << 8, 7, 0), (9, 137, 9), (0x80 | 11, 139, 11)],
)
def test_exit_status(status: int, code: int, signal: int) -> None:
    rec = decode(header(KIND_EXIT) + EXIT_TAIL.pack(status, 0))
    assert isinstance(rec, ExitRecord)
    assert (rec.exit_code, rec.signal) == (code, signal)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\0" * 10, "shorter than its header"),
        (header(99), "unknown record kind 99"),
        (header(KIND_EXEC), "exec record shorter"),
        (header(KIND_EXEC) + EXEC_TAIL.pack(50, 0, 0), "run past its end"),
        (header(KIND_EXIT), "exit record shorter"),
    ],
)
def test_malformed_records_raise_record_error(raw: bytes, reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        decode(raw)
