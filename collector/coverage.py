"""Which ways of changing files snoopbus sees on this kernel: one row per
technique (issue 14's list), shown by `snoopbus doctor`.

A technique is seen when the hooks it needs attach here (the doctor's
checks); one the kernel lacks altogether (no function for it in BTF) is
nothing to hide with. Add a row when a probe learns a new technique.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Technique:
    name: str
    event: str  # what snoopbus reports for it
    hooks: tuple[str, ...]  # doctor checks that must pass for the probes to see it
    kernel_func: str = ""  # a BTF function the kernel has when the technique exists


TECHNIQUES: tuple[Technique, ...] = (
    Technique("ia32 system calls (int $0x80, 32-bit programs)",
              "the same events as 64-bit calls, file.ia32", ("raw_tracepoint",), "__ia32_sys_open"),
    Technique("x32 system calls (bit 30 set)",
              "the 64-bit calls' events; x32's own writev, pwritev, pwritev2 (516, 535, 547) "
              "are not decoded", ("raw_tracepoint",), "x32_sys_call"),
    Technique("truncate, ftruncate, fallocate, open with O_TRUNC", "modify",
              ("raw_tracepoint",)),
    Technique("mmap MAP_SHARED of a file open for writing", "modify, file.mapped",
              ("raw_tracepoint",)),
    Technique("mknod, mknodat (regular files, FIFOs, sockets, devices)", "create, file.node",
              ("raw_tracepoint",)),
    Technique("setxattr, removexattr families (setcap, ACLs, labels)",
              "attrib, file.xattr and xattr_op", ("raw_tracepoint",)),
    Technique("setxattrat, removexattrat (Linux 6.13)", "attrib, file.xattr and xattr_op",
              ("raw_tracepoint",), "__x64_sys_setxattrat"),
    Technique("files released by exit, exec (close-on-exec) or close_range, never closed",
              "close_write per open file, file.closed_by",
              ("raw_tracepoint", "close_write_per_file")),
    Technique("O_TMPFILE, then linkat", "create under the linked name, file.tmpfile",
              ("raw_tracepoint",)),
    Technique("renameat2 RENAME_WHITEOUT", "create, file.whiteout", ("raw_tracepoint",)),
)


@dataclass(frozen=True)
class Coverage:
    technique: Technique
    status: str  # "seen", "unseen" (hooks fail) or "absent" (this kernel has no such thing)
    detail: str


def coverage(ok: Callable[[str], bool], has_func: Callable[[str], bool],
             techniques: Iterable[Technique] = TECHNIQUES) -> list[Coverage]:
    """Each technique's status from the checks that passed (`ok`) and the
    kernel's BTF functions (`has_func`). Pure."""
    out = []
    for t in techniques:
        failed = [h for h in t.hooks if not ok(h)]
        if t.kernel_func and not has_func(t.kernel_func):
            out.append(Coverage(t, "absent", f"no {t.kernel_func} in this kernel"))
        elif failed:
            out.append(Coverage(t, "unseen", f"needs {', '.join(failed)}"))
        else:
            out.append(Coverage(t, "seen", t.event))
    return out


def lines(rows: Iterable[Coverage]) -> list[str]:
    return [f"{c.status:<6}  {c.technique.name}: {c.detail}" for c in rows]
