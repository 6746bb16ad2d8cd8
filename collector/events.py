"""Decoded kernel records -> public events of the wire contract (proto/)."""

from __future__ import annotations

import itertools
import time
from typing import Any

from snoopbus.collector.proc_cache import ProcCache, ProcInfo
from snoopbus.collector.records import (
    F_ARGV_TRUNC,
    F_CWD_TRUNC,
    F_EXE_TRUNC,
    ExecRecord,
    ExitRecord,
    Header,
    Record,
)
from snoopbus.proto import SCHEMA_VERSION, Event, event_subject


def boot_to_epoch_offset() -> int:
    """ns to add to CLOCK_BOOTTIME (what the probes stamp) to get Unix time."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class EventBuilder:
    """Turns records into (subject, event), keeping the process cache current."""

    def __init__(self, host: str, instance: str, cache: ProcCache) -> None:
        self.host = host
        self.instance = instance
        self.cache = cache
        self._seq = itertools.count(1)
        self._subjects: dict[str, str] = {}
        self.clock_offset = boot_to_epoch_offset()

    def subject(self, type_: str) -> str:
        subject = self._subjects.get(type_)
        if subject is None:
            subject = self._subjects[type_] = event_subject(self.host, type_)
        return subject

    def _base(self, hdr: Header, type_: str) -> dict[str, Any]:
        return {
            "v": SCHEMA_VERSION,
            "id": f"{self.instance}-{next(self._seq)}",
            "ts": hdr.ts_boot + self.clock_offset,
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
            if info.exe is not None:
                proc["exe"] = info.exe
            if info.argv is not None:
                proc["argv"] = info.argv
            if info.cwd is not None:
                proc["cwd"] = info.cwd
        return proc

    def build(self, rec: Record) -> tuple[str, Event]:
        if isinstance(rec, ExecRecord):
            return self._exec(rec)
        return self._exit(rec)

    def _exec(self, rec: ExecRecord) -> tuple[str, Event]:
        info = ProcInfo(exe=rec.exe, argv=rec.argv, cwd=rec.cwd)
        self.cache.put(rec.hdr.pid, info)
        ev = self._base(rec.hdr, "exec")
        proc = self._proc(rec.hdr, info)
        flags = rec.hdr.flags
        if flags & F_ARGV_TRUNC:
            proc["argv_truncated"] = True
        if flags & F_EXE_TRUNC:
            proc["exe_truncated"] = True
        if flags & F_CWD_TRUNC:
            proc["cwd_truncated"] = True
        parent = self.cache.get(rec.hdr.ppid)
        if parent is not None:
            # Rules on parent/child chains (shell spawned by a web server) need these.
            if parent.exe is not None:
                proc["parent_exe"] = parent.exe
            if parent.argv is not None:
                proc["parent_argv"] = parent.argv
        ev["proc"] = proc
        return self.subject("exec"), ev  # type: ignore[return-value]

    def _exit(self, rec: ExitRecord) -> tuple[str, Event]:
        info = self.cache.pop(rec.hdr.pid)
        ev = self._base(rec.hdr, "exit")
        ev["proc"] = self._proc(rec.hdr, info)
        ev["exit_code"] = rec.exit_code
        if rec.signal:
            ev["signal"] = rec.signal
        return self.subject("exit"), ev  # type: ignore[return-value]
