"""Decoded kernel records -> public events of the wire contract (proto/)."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

from snoopbus.collector import native
from snoopbus.collector.mounts import HostPaths
from snoopbus.collector.proc_cache import ProcCache, ProcInfo
from snoopbus.collector.records import (
    F_ARGV_TRUNC,
    F_CWD_TRUNC,
    F_EXE_TRUNC,
    F_TMPFILE,
    FILE_KIND_NAMES,
    KIND_CHDIR,
    KIND_CLOSE_WRITE,
    KIND_CREATE,
    KIND_EXEC,
    KIND_EXIT,
    KIND_FORK,
    KIND_LINK,
    KIND_MODIFY,
    KIND_MOUNT,
    KIND_OPEN,
    KIND_RENAME,
    KIND_REPEAT,
    KIND_SYMLINK,
    KIND_XATTR,
    ExecRecord,
    ExitRecord,
    FileRecord,
    ForkRecord,
    Header,
    Record,
    RepeatRecord,
    decode,
    decode_header,
)
from snoopbus.collector.resolve import UNCHECKED, resolve_after
from snoopbus.collector.syscalls import NAMES_BY_NR, NR_IA32_BASE
from snoopbus.collector.uring import OP_NAMES
from snoopbus.proto import (
    SCHEMA_VERSION,
    Event,
    FileInfo,
    Proc,
    encode_map,
    event_subject,
    text_from_kernel,
)

RENAME_WHITEOUT = 1 << 2  # renameat2 flag (include/uapi/linux/fs.h)
# Records whose syscall adds to the file map (_syscall_notes), which the native
# builder leaves to this one: every ia32 one, mmap's modify, mknod's create.
_NOTED_NRS = frozenset(
    nr for nr, name in NAMES_BY_NR.items()
    if nr >= NR_IA32_BASE or name in ("mmap", "mknod", "mknodat")
)
_NODE_TYPES = {0o010000: "fifo", 0o020000: "char", 0o060000: "block", 0o100000: "regular",
               0o140000: "socket", 0: "regular"}  # mknod's mode 0 makes a regular file
# Kinds no repeat stands on (what fastbuild.c's remember() skips too).
_NOT_FILE_KINDS = (KIND_EXEC, KIND_EXIT, KIND_FORK, KIND_REPEAT)
# Threads whose last file record is kept for its repeats (as the kernel's
# coal map: bpf/snoopbus.bpf.c).
LAST_PER_THREAD = 65536


def encode_dev(kdev: int) -> int:
    """Kernel dev_t (major << 20 | minor) -> st_dev as stat(2) reports it."""
    major, minor = kdev >> 20, kdev & 0xFFFFF
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def boot_to_epoch_offset() -> int:
    """ns to add to CLOCK_BOOTTIME (what the probes stamp) to get Unix time."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class EventBuilder:
    """Turns records into (subject, event), keeping the process cache current."""

    def __init__(
        self,
        host: str,
        instance: str,
        cache: ProcCache,
        path_filter: Callable[[bytes], bool] | None = None,
        redact: Callable[[list[str]], list[str] | None] | None = None,
        host_paths: HostPaths | None = None,
        use_native: bool = True,  # False: the Python path for every record (tests, benches)
    ) -> None:
        self.host = host
        self.instance = instance
        self.cache = cache
        # User-space backstop for paths the kernel could not filter exactly.
        self.path_filter = path_filter
        self._filtered = 0
        # Secrets in argv never leave the host (collector/redact.py); the cache keeps
        # the real argv, every event gets the masked one. One process's argv list
        # is shown by its exec, its exit and its children's parent_argv: masked
        # once, remembered by identity (the entry holds the list, so its id is not
        # reused while remembered).
        self.redact = redact
        self._masked: dict[int, tuple[list[str], list[str] | None]] = {}
        # Paths seen in another mount namespace, placed on the host (collector/mounts.py).
        self.host_paths = host_paths
        # proc maps of file events, shared by a thread's consecutive events:
        # key -> (the ProcInfo it was built from, the map)
        self._procs: dict[tuple[int, ...], tuple[ProcInfo | None, dict[str, Any]]] = {}
        # (dev, inode) of O_TMPFILE files -> the name linkat gave them
        self._tmpfile_names: dict[tuple[int, int], bytes] = {}
        # pid -> the proc map of its exit event: the close_write of the files
        # its exit released follow it (the cache has forgotten the process).
        self._exited: dict[int, dict[str, Any]] = {}
        # (pid, io_uring fixed slot as a record's fd) -> (file map, proc map) of
        # the slot's last open or write: the kernel cannot name a slot a linked
        # open filled when its close completes (bpf/uring.h)
        self._uring_slots: dict[tuple[int, int], tuple[FileInfo, Proc]] = {}
        # Names are resolved after the fact only in our own mount namespace.
        self.own_ns = (host_paths.own_ns if host_paths is not None
                       else os.stat("/proc/self/ns/mnt").st_ino)
        # tid -> its last file record as read, or (kind, its events) once a
        # repeat built them: a KIND_REPEAT record says that record happened
        # `count` more times (coalesced in the kernel).
        self._last: dict[int, bytes | tuple[int, list[tuple[str, Event]]]] = {}
        self.orphan_repeats = 0  # repeats whose base was forgotten: counted as lost
        self._subjects: dict[str, str] = {}
        self.clock_offset = boot_to_epoch_offset()
        # The common file records at C speed, when this install has it; it
        # numbers the events of both paths (one id sequence).
        self._native = native.make(
            host, instance, tuple(self.subject(t) for t in native.TYPES), cache.table(),
            self._proc_section, path_filter, host_paths.own_ns if host_paths is not None else None,
            _NOTED_NRS, RENAME_WHITEOUT, self._last, LAST_PER_THREAD, _NOT_FILE_KINDS,
        ) if use_native else None
        self._seq: Iterator[int] = (self._native if self._native is not None
                                    else itertools.count(1))

    def subject(self, type_: str) -> str:
        subject = self._subjects.get(type_)
        if subject is None:
            subject = self._subjects[type_] = event_subject(self.host, type_)
        return subject

    def _base(self, ts_boot: int, type_: str) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "id": f"{self.instance}-{next(self._seq)}",
            "ts": ts_boot + self.clock_offset,
            "host": self.host,
            "type": type_,
        }

    def _proc(self, hdr: Header, info: ProcInfo | None) -> dict[str, Any]:
        proc: dict[str, Any] = {
            "pid": hdr.pid,
            "tid": hdr.tid,
            "ppid": hdr.ppid,
            "uid": hdr.uid,
            "gid": hdr.gid,
            "comm": hdr.comm,
            "cgroup": hdr.cgroup,
        }
        if info is not None:
            if info.container is not None:
                proc["container"] = info.container
            if info.exe is not None:
                proc["exe"] = info.exe
            if info.argv is not None:
                self._put_argv(proc, "argv", info.argv)
            if info.cwd is not None:
                proc["cwd"] = info.cwd
            if info.script is not None:
                proc["script"] = info.script
        return proc

    def _put_argv(self, proc: dict[str, Any], key: str, argv: list[str]) -> None:
        masked = None
        if self.redact is not None:
            known = self._masked.get(id(argv))
            if known is not None and known[0] is argv:
                masked = known[1]
            else:
                masked = self.redact(argv)
                if len(self._masked) >= 1024:  # 8 KiB argvs: at most ~8 MiB kept
                    self._masked.clear()
                self._masked[id(argv)] = (argv, masked)
        if masked is None:
            proc[key] = argv
        else:
            proc[key] = masked
            proc["argv_redacted"] = True

    def build_all(self, rec: Record) -> list[tuple[str, Event]]:
        """Every event of a record: a rename makes two, an exchange four; a
        fork none (the child gets its parent's image in the process cache)."""
        pid = rec.hdr.pid
        if isinstance(rec, ForkRecord):
            self.cache.forked(pid, rec.hdr.ppid, rec.hdr.cgroup, rec.child)
            return []
        if isinstance(rec, FileRecord):
            if rec.hdr.kind == KIND_CHDIR:
                if (rec.ret is None or rec.ret >= 0) and rec.path is not None:
                    info = self.cache.lookup(pid, rec.hdr.ppid, rec.hdr.cgroup)
                    if info is not None:
                        self.cache.put(pid, info.with_cwd(text_from_kernel(rec.path)))
                return []
            if rec.hdr.kind == KIND_MOUNT:
                if self.host_paths is not None and (rec.ret is None or rec.ret >= 0):
                    self.host_paths.forget(rec.mnt_ns)
                return []
            if rec.via_uring:
                return self._uring(rec)
            return self._file(rec)
        if isinstance(rec, ExitRecord):
            return [self._exit(rec)]
        if isinstance(rec, RepeatRecord):
            return self.repeat(rec)
        return [self._exec(rec)]

    def _cached_proc(
        self, key: tuple[int, ...], info: ProcInfo | None, comm: str
    ) -> dict[str, Any] | None:
        cached = self._procs.get(key)
        if cached is not None and cached[0] is info and cached[1]["comm"] == comm:
            return cached[1]
        return None

    def _shared_proc(self, hdr: Header, info: ProcInfo | None) -> dict[str, Any]:
        """The proc map for a file event, reused while nothing in it changed
        (events are encoded, never mutated, after they are built)."""
        key = (hdr.tid, hdr.pid, hdr.ppid, hdr.uid, hdr.gid, hdr.cgroup)
        cached = self._cached_proc(key, info, hdr.comm)
        if cached is not None:
            return cached
        if len(self._procs) >= 8192:
            self._procs.clear()
        proc = self._proc(hdr, info)
        self._procs[key] = (info, proc)
        return proc

    def _file_event(
        self, rec: FileRecord, type_: str, path: bytes | None, truncated: bool,
        info: ProcInfo | None, raw: bytes | None = None,
    ) -> tuple[str, Event]:
        """One event of `rec` naming `path`; `raw`, when the name had a directory
        part, is resolved again after the fact (collector/resolve.py)."""
        hdr = rec.hdr
        how = None
        if raw is not None:
            if rec.mnt_ns != self.own_ns:
                how = UNCHECKED  # another mount namespace: our lookup is not the process's
            else:
                path, how = resolve_after(raw, rec.touched, type_ != "attrib")
        f = self._file_map(type_, path, truncated, rec.ino, rec.dev, rec.mnt_ns, hdr.pid,
                           rec.oflags, rec.mode)
        if how is not None:
            f["path_resolution"] = how
        return self._event(type_, hdr.ts_boot, self._shared_proc(hdr, info), f, rec.ret)

    def _event(self, type_: str, ts_boot: int, proc: dict[str, Any], f: dict[str, Any],
               ret: int | None) -> tuple[str, Event]:
        ev = self._base(ts_boot, type_)
        ev["proc"] = proc
        ev["file"] = f
        if ret is not None:
            ev["ret"] = ret
        return self._subjects.get(type_) or self.subject(type_), cast(Event, ev)

    def _file_map(
        self, type_: str, path: bytes | None, truncated: bool, ino: int, dev: int, mnt_ns: int,
        pid: int, oflags: int, mode: int,
    ) -> dict[str, Any]:
        f: dict[str, Any] = {"mnt_ns": mnt_ns}
        if path is not None:
            f["path"] = text_from_kernel(path)
            hp = self.host_paths
            if hp is not None and mnt_ns != hp.own_ns:
                placed = hp.lookup(mnt_ns, pid, f["path"], ino, encode_dev(dev) if ino else 0)
                if placed is not None:
                    f["host_path"] = placed
        if truncated:
            f["path_truncated"] = True
        if ino:
            f["inode"] = ino
            f["dev"] = encode_dev(dev)
        if type_ in ("open", "create"):
            f["flags"] = oflags
        if mode and type_ in ("create", "mkdir", "attrib"):
            f["mode"] = mode & 0o7777
        return f

    def build_raw(self, buf: bytes) -> list[tuple[str, Event]]:
        """Every event of one ring-buffer record, as maps; RecordError if it is
        malformed. The reference path: build_many takes the common records
        natively when it can, and makes the same events, encoded."""
        rec = decode(buf)
        # (The native builder's drain has kept it already: the same again.)
        if rec.hdr.kind not in _NOT_FILE_KINDS:
            self._remember(rec.hdr.tid, buf)
        return self.build_all(rec)

    def build_many(
        self, raw: list[bytes], one: Callable[[bytes], list[tuple[str, Event]]] | None = None,
    ) -> list[tuple[str, Event | bytes]]:
        """Every event of a drain's records, in order. With the native builder
        (collector/native.py) the common file records come out encoded (bytes,
        spliced into the batch by encode_batch), the others through `one`
        (default build_raw: the caller may wrap it to count malformed records);
        without it, every record goes through `one`. Either way each thread's
        last file record is kept as read (in C by the native builder), for a
        KIND_REPEAT record (the kernel coalesced that many more) to stand on."""
        one = one or self.build_raw
        if self._native is not None:  # the ignore: the C extension's result is untyped
            return self._native.drain(raw, self.clock_offset, one)  # type: ignore[no-any-return]
        out: list[tuple[str, Event | bytes]] = []
        for buf in raw:
            out.extend(one(buf))
        return out

    def _remember(self, tid: int, buf: bytes) -> None:
        """As fastbuild.c's remember(): the dict's order is recency."""
        last = self._last
        if tid in last:
            del last[tid]
        elif len(last) >= LAST_PER_THREAD:
            del last[next(iter(last))]
        last[tid] = buf

    def repeat(self, rec: RepeatRecord) -> list[tuple[str, Event]]:
        """The thread's last file record's events once more, standing for
        `count` identical ones (none when that record made none: filtered)."""
        known = self._last.get(rec.hdr.tid)
        if isinstance(known, bytes):  # kept as read: its events once, for every repeat
            base_rec = decode(known)
            known = self._last[rec.hdr.tid] = (base_rec.hdr.kind, self.build_all(base_rec))
        if known is None or known[0] != rec.of_kind:
            self.orphan_repeats += rec.count
            return []
        base = known[1]
        out: list[tuple[str, Event]] = []
        for subject, ev in base:
            again = self._base(rec.hdr.ts_boot, ev["type"])
            again.update({k: v for k, v in ev.items() if k not in again})
            again["count"] = rec.count
            out.append((subject, cast(Event, again)))
        return out

    def summary(self, pid: int, uid: int, kind: int, count: int, lost: int, since_boot: int,
                until_boot: int, ino: int, dev: int) -> tuple[str, Event]:
        """A `summary` event: `count` file events of type `of` by `pid` over
        its fair share (and `lost` the ring buffer had no room for), not
        delivered one by one, between `since` and `ts` (proto/README.md)."""
        ev = self._base(until_boot, "summary")
        info = self.cache.get(pid)
        exited = self._exited.get(pid)
        if info is None and exited is not None:
            proc = dict(exited)
            proc.pop("tid", None)
        else:
            proc = {"pid": pid, "uid": uid}
            if info is not None:
                proc.update({k: v for k, v in self._proc(
                    Header(0, 0, pid, pid, 0, uid, 0, 0, 0, ""), info).items()
                    if k not in ("tid", "ppid", "gid", "comm", "cgroup")})
        ev["proc"] = proc
        f: dict[str, Any] = {}
        if ino:
            f["inode"] = ino
            f["dev"] = encode_dev(dev)
        ev["file"] = f
        ev["of"] = FILE_KIND_NAMES.get(kind, str(kind))
        ev["count"] = count
        if lost:
            ev["lost"] = lost
        ev["since"] = since_boot + self.clock_offset
        return self.subject("summary"), ev  # type: ignore[return-value]


    @property
    def native(self) -> bool:
        """Whether the native builder takes the common records."""
        return self._native is not None

    @property
    def filtered_in_user(self) -> int:
        return self._filtered + (self._native.filtered if self._native is not None else 0)

    def _proc_section(self, buf: bytes) -> tuple[ProcInfo | None, bytes]:
        """The native builder's proc section for a record it has not seen the
        process of: the map the Python path makes, encoded."""
        hdr = decode_header(buf)
        info = self.cache.lookup(hdr.pid, hdr.ppid, hdr.cgroup)
        return info, encode_map(self._shared_proc(hdr, info))

    def _wanted(self, *paths_: bytes | None) -> bool:
        if self.path_filter is None:
            return True
        if any(p is not None and self.path_filter(p) for p in paths_):
            return True
        self._filtered += 1
        return False

    def _uring(self, rec: FileRecord) -> list[tuple[str, Event]]:
        """A request submitted through io_uring (nr is its opcode): the
        event(s) the syscall would make, marked via and io_uring_op."""
        kind, key = rec.hdr.kind, (rec.hdr.pid, rec.fd)
        slot = rec.fd < -1  # URING_SLOT_FD: a fixed file slot, not a process fd
        if kind == KIND_CLOSE_WRITE and rec.path is None:
            # A written slot's close: named from that slot's write (or open).
            known = self._uring_slots.pop(key, None)
            if known is None:
                return []
            built = self._base(rec.hdr.ts_boot, "close_write")
            built["file"], built["proc"] = dict(known[0]), known[1]
            out = [(self.subject("close_write"), cast(Event, built))]
        else:
            out = self._file_events(rec)
            if slot and kind == KIND_CLOSE_WRITE:
                self._uring_slots.pop(key, None)
            elif slot and out and kind in (KIND_CREATE, KIND_OPEN, KIND_MODIFY):
                if len(self._uring_slots) >= 4096:
                    self._uring_slots.clear()
                _, ev = out[0]
                self._uring_slots[key] = (ev["file"], ev["proc"])
        op = OP_NAMES.get(rec.nr, str(rec.nr))
        for _, ev in out:
            ev["via"] = "io_uring"
            ev["io_uring_op"] = op
        return out

    def _file(self, rec: FileRecord) -> list[tuple[str, Event]]:
        out = self._file_events(rec)
        if rec.nr in _NOTED_NRS or rec.hdr.kind == KIND_XATTR:
            for _, ev in out:
                ev["file"] = {**ev["file"], **_syscall_notes(rec)}
        return out

    def _file_events(self, rec: FileRecord) -> list[tuple[str, Event]]:
        info = self.cache.lookup(rec.hdr.pid, rec.hdr.ppid, rec.hdr.cgroup)
        kind = rec.hdr.kind
        if kind == KIND_RENAME:
            if not self._wanted(rec.path, rec.path2):
                return []
            one = (rec.path, rec.path_truncated, rec.raw_path)
            two = (rec.path2, rec.path2_truncated, rec.raw_path2)
            pairs = [(one, two), (two, one)] if rec.exchange else [(one, two)]
            out = []
            for i, (src, dst) in enumerate(pairs):
                cookie = (rec.cookie << 1) | i
                for type_, (p, t, raw) in (("moved_from", src), ("moved_to", dst)):
                    subject, ev = self._file_event(rec, type_, p, t, info, raw)
                    ev["cookie"] = cookie
                    out.append((subject, ev))
            if rec.oflags & RENAME_WHITEOUT and not rec.exchange and (rec.ret or 0) >= 0:
                # The file system left a whiteout (a 0/0 character device) at the
                # old name; inotify reports nothing for it.
                subject, ev = self._file_event(rec, "create", rec.path, rec.path_truncated, info,
                                               rec.raw_path)
                ev["file"]["whiteout"] = True
                ev["file"].pop("flags", None)  # renameat2's flags, not open(2)'s
                out.append((subject, ev))
            return out
        if rec.hdr.flags & F_TMPFILE:
            return self._tmpfile(rec, info)
        if kind == KIND_LINK:
            if not self._wanted(rec.path2):
                return []
            subject, ev = self._file_event(rec, "link", rec.path2, rec.path2_truncated, info,
                                           rec.raw_path2)
            if rec.path is not None:
                ev["file"]["target"] = text_from_kernel(rec.path)
            return [(subject, ev)]
        if not self._wanted(rec.path):
            return []
        closed_by = rec.closed_by if kind == KIND_CLOSE_WRITE else None
        if closed_by == "exit":
            # The file is released as the process ends: its exit event came first.
            proc = self._exited.get(rec.hdr.pid)
            if proc is not None and proc["tid"] == rec.hdr.tid:
                subject, ev = self._event("close_write", rec.hdr.ts_boot, proc, self._file_map(
                    "close_write", rec.path, rec.path_truncated, rec.ino, rec.dev, rec.mnt_ns,
                    rec.hdr.pid, rec.oflags, rec.mode), None)
                ev["file"]["closed_by"] = closed_by
                return [(subject, ev)]
        subject, ev = self._file_event(
            rec, FILE_KIND_NAMES[kind], rec.path, rec.path_truncated, info, rec.raw_path
        )
        if closed_by is not None:
            ev["file"]["closed_by"] = closed_by
        if kind == KIND_SYMLINK and rec.target is not None:
            ev["file"]["target"] = text_from_kernel(rec.target)
        return [(subject, ev)]

    def _tmpfile(self, rec: FileRecord, info: ProcInfo | None) -> list[tuple[str, Event]]:
        """An O_TMPFILE file has no name until linkat gives it one: its open
        makes no event (as inotify), its link is its create under that name,
        and its events before carry its directory as path (tmpfile: true)."""
        kind = rec.hdr.kind
        key = (rec.dev, rec.ino)
        if kind == KIND_LINK:
            if rec.path2 is not None and rec.ret is not None and rec.ret >= 0:
                if len(self._tmpfile_names) >= 4096:
                    self._tmpfile_names.clear()
                self._tmpfile_names[key] = rec.path2
            if not self._wanted(rec.path2):
                return []
            subject, ev = self._file_event(rec, "create", rec.path2, rec.path2_truncated, info,
                                           rec.raw_path2)
        elif kind in (KIND_CREATE, KIND_OPEN):
            return []
        else:
            path = self._tmpfile_names.get(key)
            if path is None and rec.path is not None:
                path = rec.path.rpartition(b"/")[0] or b"/"  # the made-up leaf "#ino" goes
            if not self._wanted(path):
                return []
            subject, ev = self._file_event(rec, FILE_KIND_NAMES[kind], path,
                                           rec.path_truncated, info)
            closed_by = rec.closed_by if kind == KIND_CLOSE_WRITE else None
            if closed_by is not None:
                ev["file"]["closed_by"] = closed_by
                exited = self._exited.get(rec.hdr.pid) if closed_by == "exit" else None
                if exited is not None and exited["tid"] == rec.hdr.tid:
                    ev["proc"] = cast(Proc, exited)
        ev["file"]["tmpfile"] = True
        return [(subject, ev)]

    def _exec(self, rec: ExecRecord) -> tuple[str, Event]:
        info = ProcInfo(
            exe=rec.exe, argv=rec.argv, cwd=rec.cwd,
            container=self.cache.container_of(rec.hdr.cgroup), script=rec.script,
        )
        self.cache.put(rec.hdr.pid, info)
        ev = self._base(rec.hdr.ts_boot, "exec")
        proc = self._proc(rec.hdr, info)
        flags = rec.hdr.flags
        if flags & F_ARGV_TRUNC:
            proc["argv_truncated"] = True
        if flags & F_EXE_TRUNC:
            proc["exe_truncated"] = True
        if flags & F_CWD_TRUNC:
            proc["cwd_truncated"] = True
        # The parent may have forked without exec (a subshell): the fork record
        # gave it its own parent's image.
        parent = self.cache.get(rec.hdr.ppid)
        if parent is not None:
            # Rules on parent/child chains (shell spawned by a web server) need these.
            if parent.exe is not None:
                proc["parent_exe"] = parent.exe
            if parent.argv is not None:
                self._put_argv(proc, "parent_argv", parent.argv)
        ev["proc"] = proc
        return self.subject("exec"), cast(Event, ev)

    def _exit(self, rec: ExitRecord) -> tuple[str, Event]:
        info = self.cache.pop(rec.hdr.pid)
        ev = self._base(rec.hdr.ts_boot, "exit")
        ev["proc"] = self._proc(rec.hdr, info)
        if len(self._exited) >= 1024:
            self._exited.clear()
        self._exited[rec.hdr.pid] = ev["proc"]
        ev["exit_code"] = rec.exit_code
        if rec.signal:
            ev["signal"] = rec.signal
        return self.subject("exit"), cast(Event, ev)


def _syscall_notes(rec: FileRecord) -> FileInfo:
    """What the file map says beyond its type about the syscall that made it:
    made by an ia32 syscall, a shared mapping, the node mknod made, the
    extended attribute set or removed."""
    notes: FileInfo = {}
    name = NAMES_BY_NR.get(rec.nr, "")
    if name.startswith("ia32:"):
        notes["ia32"] = True
        name = name[5:]
    if name in ("mmap", "mmap2"):
        notes["mapped"] = True
    elif name in ("mknod", "mknodat") and rec.hdr.kind == KIND_CREATE:
        notes["node"] = _NODE_TYPES.get(rec.mode & 0o170000, "other")
    if rec.hdr.kind == KIND_XATTR and rec.target is not None:
        notes["xattr"] = text_from_kernel(rec.target)
        notes["xattr_op"] = "remove" if "remove" in name else "set"
    return notes
