"""Decoding of kernel ring-buffer records: pure, table-driven, no root needed.

Mirrors bpf/common.h, bpf/proc.h and bpf/files.h. Layers: kernel struct -> these decoded
records -> public events (events.py). A record of an unknown kind, or one
too short for its kind, raises RecordError so the reader can count it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from snoopbus.collector import paths, resolve
from snoopbus.proto import text_from_kernel

KIND_EXEC = 1
KIND_EXIT = 2
# File kinds (bpf/files.h), one per event type; a rename record makes two events.
KIND_OPEN = 3
KIND_CREATE = 4
KIND_MODIFY = 5
KIND_CLOSE_WRITE = 6
KIND_DELETE = 7
KIND_RENAME = 8
KIND_ATTRIB = 9
KIND_MKDIR = 10
KIND_RMDIR = 11
KIND_LINK = 12
KIND_SYMLINK = 13
# 14 was close_range's record: the kernel reports what it closes itself now.
KIND_MOUNT = 15  # no event: the caller's namespace has other mounts now
KIND_XATTR = 20  # attrib of an extended attribute, its name as `target`
KIND_FORK = 24  # no event: a new process, its parent's image until it execs
KIND_CHDIR = 25  # no event: the process's cwd is now the record's path
KIND_REPEAT = 26  # the thread's last file record `count` more times (coalesced in the kernel)
LOST_INFLIGHT_FULL = 30  # lost-map slot, not a record kind

FILE_KIND_NAMES = {
    KIND_OPEN: "open",
    KIND_CREATE: "create",
    KIND_MODIFY: "modify",
    KIND_CLOSE_WRITE: "close_write",
    KIND_DELETE: "delete",
    KIND_RENAME: "rename",
    KIND_ATTRIB: "attrib",
    KIND_MKDIR: "mkdir",
    KIND_RMDIR: "rmdir",
    KIND_LINK: "link",
    KIND_SYMLINK: "symlink",
    KIND_MOUNT: "mount",
    KIND_XATTR: "attrib",
    KIND_CHDIR: "chdir",
}
# Kinds whose seg[3] is a string as given (no second path): a symlink's
# target, an extended attribute's name.
TARGET_KINDS = frozenset({KIND_SYMLINK, KIND_XATTR})

# Record flags: bpf/common.h's table, in its order (tests/collector/test_record_constants.py).
F_EXE_TRUNC = 1 << 0
F_CWD_TRUNC = 1 << 1
F_ARGV_TRUNC = 1 << 2
F_PATH_TRUNC = 1 << 3
F_PATH2_TRUNC = 1 << 4
F_FD_GONE = 1 << 5
F_NO_RET = 1 << 6
F_EXCHANGE = 1 << 7
F_TOUCHED = 1 << 9  # name-based: the inodes the call changed follow the segments
F_SCRIPT = 1 << 10  # exec: the #! script's name as given follows argv
# An O_TMPFILE file (bpf/closes.h): the walked name is made up; on a link,
# the record's inode is the linked file's
F_TMPFILE = 1 << 11
# close_write: what released the open file when no close() did (bpf/closes.h SCAN_*)
F_CLOSED_BY_SHIFT = 12
F_CLOSED_BY_MASK = 3 << F_CLOSED_BY_SHIFT
CLOSED_BY = {1: "exit", 2: "exec", 3: "close_range"}
F_URING = 1 << 15  # submitted through io_uring (bpf/uring.h): nr is the opcode
TOUCHED = struct.Struct("<QI")  # one of them: inode, kernel dev_t

# struct rec_hdr: ts, cgroup, pid, tid, ppid, uid, gid, kind, flags, comm[16]
HDR = struct.Struct("<QQIIIIIHH16s")
EXEC_TAIL = struct.Struct("<HHI")  # exe_len, cwd_len, argv_len
EXIT_TAIL = struct.Struct("<II")  # exit_code (wait status), pad
FORK_TAIL = struct.Struct("<II")  # child tgid, pad
REPEAT_TAIL = struct.Struct("<IHH")  # count, of_kind, pad
# struct file_rec after the header: ret, cookie, ino, dev, mnt_ns, nr, oflags, mode, fd, seg[4]
FILE_TAIL = struct.Struct("<qQQIIIIIi4H")


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
    script: str | None = None  # a #! script: its path (the exe is the interpreter)


@dataclass(slots=True)
class ForkRecord:
    hdr: Header  # the parent
    child: int  # the new process's pid


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


@dataclass(slots=True)
class FileRecord:
    """A file operation. `path` is absolute and folded; `path2` is the second
    name (rename: the new name; link: the new link), `target` a symlink's
    target as given (xattr records: the attribute's name). Paths are bytes
    here; events.py decodes them."""

    hdr: Header
    ret: int | None  # None: reported before the call returned (close)
    cookie: int
    ino: int
    dev: int  # kernel dev_t (major << 20 | minor)
    mnt_ns: int
    nr: int
    oflags: int
    mode: int
    fd: int
    path: bytes | None  # None: not resolvable (fd gone)
    path_truncated: bool
    path2: bytes | None = None
    path2_truncated: bool = False
    target: bytes | None = None
    # Name-based: the strings as the kernel walked them (absolute, unfolded) when
    # they have a directory part (collector/resolve.py), and what the call changed.
    raw_path: bytes | None = None
    raw_path2: bytes | None = None
    touched: frozenset[tuple[int, int]] = frozenset()

    @property
    def exchange(self) -> bool:
        return bool(self.hdr.flags & F_EXCHANGE)

    @property
    def closed_by(self) -> str | None:
        """close_write: "exit", "exec" or "close_range" released the file; None: a close()."""
        return CLOSED_BY.get((self.hdr.flags & F_CLOSED_BY_MASK) >> F_CLOSED_BY_SHIFT)

    @property
    def via_uring(self) -> bool:
        return bool(self.hdr.flags & F_URING)


@dataclass(slots=True)
class RepeatRecord:
    hdr: Header  # the thread's; ts: when the last of the repeats was seen
    count: int  # records identical to the thread's last one, not written
    of_kind: int


Record = ExecRecord | ExitRecord | FileRecord | ForkRecord | RepeatRecord


def join_path(names: bytes, truncated: bool = False) -> str:
    """Leaf-first NUL-terminated names, as the kernel walk writes them -> "/a/b";
    marked (paths.TRUNCATED) when the walk did not reach the root."""
    path = paths.names_to_path(names)
    return text_from_kernel(paths.mark_truncated(path) if truncated else path)


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


_COMMS: dict[bytes, str] = {}  # the raw comm field -> text: few distinct values


def comm_text(raw: bytes) -> str:
    text = _COMMS.get(raw)
    if text is None:
        if len(_COMMS) >= 4096:
            _COMMS.clear()
        text = _COMMS[raw] = text_from_kernel(raw.split(b"\0", 1)[0])
    return text


def decode_header(buf: bytes) -> Header:
    if len(buf) < HDR.size:
        raise RecordError(f"record of {len(buf)} bytes is shorter than its header ({HDR.size})")
    ts, cg, pid, tid, ppid, uid, gid, kind, flags, comm = HDR.unpack_from(buf)
    return Header(ts, cg, pid, tid, ppid, uid, gid, kind, flags, comm_text(comm))


def _decode_exec(hdr: Header, buf: bytes) -> ExecRecord:
    end = HDR.size + EXEC_TAIL.size
    if len(buf) < end:
        raise RecordError("exec record shorter than its fixed part")
    exe_len, cwd_len, argv_len = EXEC_TAIL.unpack_from(buf, HDR.size)
    if end + exe_len + cwd_len + argv_len > len(buf):
        raise RecordError("exec record lengths run past its end")
    exe = join_path(buf[end : end + exe_len], bool(hdr.flags & F_EXE_TRUNC))
    end += exe_len
    cwd_names = buf[end : end + cwd_len]
    cwd = join_path(cwd_names, bool(hdr.flags & F_CWD_TRUNC))
    end += cwd_len
    argv = split_argv(buf[end : end + argv_len], bool(hdr.flags & F_ARGV_TRUNC))
    script = None
    if hdr.flags & F_SCRIPT:
        name = paths.user_string(buf[end + argv_len :])
        if not name.startswith(b"/") and hdr.flags & F_CWD_TRUNC:
            script = text_from_kernel(paths.mark_truncated(paths.join(b"", name)))
        else:
            script = text_from_kernel(paths.join(paths.names_to_path(cwd_names), name))
    return ExecRecord(hdr, exe, cwd, argv, script)


def _decode_fork(hdr: Header, buf: bytes) -> ForkRecord:
    if len(buf) < HDR.size + FORK_TAIL.size:
        raise RecordError("fork record shorter than its fixed part")
    child, _ = FORK_TAIL.unpack_from(buf, HDR.size)
    return ForkRecord(hdr, child)


def _decode_exit(hdr: Header, buf: bytes) -> ExitRecord:
    if len(buf) < HDR.size + EXIT_TAIL.size:
        raise RecordError("exit record shorter than its fixed part")
    status, _ = EXIT_TAIL.unpack_from(buf, HDR.size)
    return ExitRecord(hdr, status)


def _resolve(walked: bytes, name: bytes | None, gone: bool) -> bytes | None:
    """(walked base or file, user string) -> absolute folded path; None if unknown."""
    if name is None:  # the path came from a file: already absolute and real
        return None if gone and not walked else paths.names_to_path(walked)
    if name.startswith(b"/"):
        return paths.fold(name)
    if gone:
        return None  # relative to a dirfd that did not resolve: never guess
    return paths.join(paths.names_to_path(walked), name)


# (walked, user string, fd gone) -> _resolve's answer. A host's file activity
# keeps naming the same few paths (one file written, renamed, deleted; a log
# appended to), and resolving costs more than the rest of a record's decoding.
_RESOLVED: dict[tuple[bytes, bytes, bool], bytes | None] = {}
_RESOLVED_MAX = 8192


def _resolve_segments(walked: bytes, raw_name: bytes, gone: bool) -> bytes | None:
    """_resolve for a record's segments; raw_name empty: no user string."""
    key = (walked, raw_name, gone)
    path = _RESOLVED.get(key, b"")
    if path == b"":  # never a resolved path (they start with '/'): not seen yet
        name = paths.user_string(raw_name) if raw_name else None
        path = _resolve(walked, name, gone)
        if len(_RESOLVED) >= _RESOLVED_MAX:
            _RESOLVED.clear()
        _RESOLVED[key] = path
    return path


FILE_NAMES_AT = HDR.size + FILE_TAIL.size  # where a file record's four segments begin


def file_paths(
    buf: bytes, kind: int, flags: int, s0: int, s1: int, s2: int, s3: int
) -> tuple[bytes | None, bytes | None]:
    """A file record's first and second path from its segments (lengths s0..s3,
    checked against the record by the caller); no second path for symlinks
    and xattrs, whose seg[3] is the target or attribute name as given."""
    e0 = FILE_NAMES_AT + s0
    e1 = e0 + s1
    e2 = e1 + s2
    gone = bool(flags & F_FD_GONE)
    # seg[1] empty and seg[0] set: a path walked from the file itself.
    if not s1 and not s0 and not gone and kind != KIND_CLOSE_WRITE:
        path1: bytes | None = None if flags & F_PATH_TRUNC else b"/"
    else:
        path1 = _resolve_segments(buf[FILE_NAMES_AT:e0], buf[e0:e1], gone)
    if path1 is not None and flags & F_PATH_TRUNC:
        path1 = paths.mark_truncated(path1)
    path2 = None
    if kind not in TARGET_KINDS and (s2 or s3):
        # A second name always has its string (empty when the probe read none).
        path2 = _resolve_segments(buf[e1:e2], buf[e2 : e2 + s3] or b"\0", False)
        # None: relative to a dirfd that did not resolve (nothing to mark).
        if path2 is not None and flags & F_PATH2_TRUNC:
            path2 = paths.mark_truncated(path2)
    return path1, path2


def name_strings(
    buf: bytes, kind: int, flags: int, s0: int, s1: int, s2: int, s3: int
) -> tuple[bytes | None, bytes | None]:
    """The record's name strings that need resolve.resolve_after (a directory
    part the kernel looked up), unfolded; None for the others."""
    e0 = FILE_NAMES_AT + s0
    e1 = e0 + s1
    e2 = e1 + s2
    out: list[bytes | None] = [None, None]
    segs = [(buf[FILE_NAMES_AT:e0], buf[e0:e1], bool(flags & F_FD_GONE))]
    if kind not in TARGET_KINDS:
        segs.append((buf[e1:e2], buf[e2 : e2 + s3], False))
    for i, (walked, raw_name, gone) in enumerate(segs):
        if not raw_name or flags & (F_PATH_TRUNC, F_PATH2_TRUNC)[i]:
            continue
        name = paths.user_string(raw_name)
        if not resolve.needs_resolution(name) or (gone and not name.startswith(b"/")):
            continue
        out[i] = resolve.unfolded(paths.names_to_path(walked), name)
    return out[0], out[1]


def touched_of(buf: bytes, end: int, flags: int) -> frozenset[tuple[int, int]]:
    """(kernel dev_t, inode) of each inode the call changed (F_TOUCHED trailer)."""
    if not flags & F_TOUCHED:
        return frozenset()
    return frozenset((dev, ino) for ino, dev in TOUCHED.iter_unpack(
        buf[end : end + (len(buf) - end) // TOUCHED.size * TOUCHED.size]))


def _decode_file(hdr: Header, buf: bytes) -> FileRecord:
    if len(buf) < FILE_NAMES_AT:
        raise RecordError("file record shorter than its fixed part")
    ret, cookie, ino, dev, mnt_ns, nr, oflags, mode, fd, s0, s1, s2, s3 = FILE_TAIL.unpack_from(
        buf, HDR.size
    )
    end = FILE_NAMES_AT + s0 + s1 + s2 + s3
    if end > len(buf):
        raise RecordError("file record lengths run past its end")
    flags = hdr.flags
    path1, path2 = file_paths(buf, hdr.kind, flags, s0, s1, s2, s3)
    target = paths.user_string(buf[end - s3 : end]) if hdr.kind in TARGET_KINDS else None
    return FileRecord(
        hdr,
        None if flags & F_NO_RET else ret,
        cookie, ino, dev, mnt_ns, nr, oflags, mode, fd,
        path1,
        bool(flags & F_PATH_TRUNC) or path1 is None,
        path2,
        bool(flags & F_PATH2_TRUNC),
        target,
        *name_strings(buf, hdr.kind, flags, s0, s1, s2, s3),
        touched_of(buf, end, flags),
    )


def _decode_repeat(hdr: Header, buf: bytes) -> RepeatRecord:
    if len(buf) < HDR.size + REPEAT_TAIL.size:
        raise RecordError("repeat record too short")
    count, of_kind, _ = REPEAT_TAIL.unpack_from(buf, HDR.size)
    return RepeatRecord(hdr, count, of_kind)


DECODERS: dict[int, Callable[[Header, bytes], Record]] = {
    KIND_REPEAT: _decode_repeat,
    KIND_EXEC: _decode_exec,
    KIND_EXIT: _decode_exit,
    KIND_FORK: _decode_fork,
    **dict.fromkeys(FILE_KIND_NAMES, _decode_file),
}


def decode(buf: bytes) -> Record:
    hdr = decode_header(buf)
    decoder = DECODERS.get(hdr.kind)
    if decoder is None:
        raise RecordError(f"unknown record kind {hdr.kind}")
    return decoder(hdr, buf)
