"""Which syscalls the file probes watch, and where each keeps its arguments.

The kernel side is table-driven: sys_enter looks the syscall number up in the
`sys_spec` map filled from SPECS, saves the arguments, and sys_exit builds
the record from the spec (files.h, struct sc_spec). Numbers are x86-64's.
"""

from __future__ import annotations

import ctypes
import platform
from dataclasses import dataclass

from snoopbus.collector import records as R

SHAPE_FDRET = 1
SHAPE_FD = 2
SHAPE_NAME = 3
SHAPE_CLOSE = 4
SHAPE_ARGS = 5  # no file: a record of the arguments, for user space's bookkeeping

NONE = -1
O_CREAT_WRONLY_TRUNC = 0o100 | 0o1 | 0o1000  # what creat(2) implies


class ScSpec(ctypes.Structure):
    """struct sc_spec in files.h."""

    _fields_ = [
        ("shape", ctypes.c_uint8),
        ("kind", ctypes.c_uint8),
        ("fd", ctypes.c_int8),
        ("dfd", ctypes.c_int8),
        ("name", ctypes.c_int8),
        ("dfd2", ctypes.c_int8),
        ("name2", ctypes.c_int8),
        ("target", ctypes.c_int8),
        ("flags", ctypes.c_int8),
        ("mode", ctypes.c_int8),
        ("how", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8),
        ("const_flags", ctypes.c_uint32),
    ]


@dataclass(frozen=True)
class Spec:
    nr: int
    shape: int
    kind: int
    fd: int = NONE
    dfd: int = NONE
    name: int = NONE
    dfd2: int = NONE
    name2: int = NONE
    target: int = NONE
    flags: int = NONE
    mode: int = NONE
    how: bool = False
    const_flags: int = 0

    def to_c(self) -> ScSpec:
        return ScSpec(self.shape, self.kind, self.fd, self.dfd, self.name, self.dfd2,
                      self.name2, self.target, self.flags, self.mode, int(self.how), 0,
                      self.const_flags)


def _fdret(nr: int, **kw: int | bool) -> Spec:
    return Spec(nr, SHAPE_FDRET, R.KIND_CREATE, **kw)  # type: ignore[arg-type]


def _fd(nr: int, kind: int, fd: int = 0, **kw: int) -> Spec:
    return Spec(nr, SHAPE_FD, kind, fd=fd, **kw)


def _name(nr: int, kind: int, **kw: int) -> Spec:
    return Spec(nr, SHAPE_NAME, kind, **kw)


SPECS: dict[str, Spec] = {
    # fd-returning: create (FMODE_CREATED) or open
    "open": _fdret(2, name=0, flags=1, mode=2),
    "openat": _fdret(257, dfd=0, name=1, flags=2, mode=3),
    "openat2": _fdret(437, dfd=0, name=1, flags=2, how=True),
    "creat": _fdret(85, name=0, mode=1, const_flags=O_CREAT_WRONLY_TRUNC),
    # first write through an fd
    "write": _fd(1, R.KIND_MODIFY),
    "pwrite64": _fd(18, R.KIND_MODIFY),
    "writev": _fd(20, R.KIND_MODIFY),
    "pwritev": _fd(296, R.KIND_MODIFY),
    "pwritev2": _fd(328, R.KIND_MODIFY),
    "sendfile": _fd(40, R.KIND_MODIFY),
    "splice": _fd(275, R.KIND_MODIFY, fd=2),
    "copy_file_range": _fd(326, R.KIND_MODIFY, fd=2),
    "close": Spec(3, SHAPE_CLOSE, R.KIND_CLOSE_WRITE, fd=0),
    # dup2/dup3 close their target fd (arg 1) when it is open
    "dup2": Spec(33, SHAPE_CLOSE, R.KIND_CLOSE_WRITE, fd=1),
    "dup3": Spec(292, SHAPE_CLOSE, R.KIND_CLOSE_WRITE, fd=1),
    # close_range(first, last, flags): which of them were written, user space knows
    "close_range": Spec(436, SHAPE_ARGS, R.KIND_CLOSE_RANGE, fd=0, mode=1, flags=2),
    # mount table changes: the namespace's mounts are read again (collector/mounts.py)
    "mount": Spec(165, SHAPE_ARGS, R.KIND_MOUNT),
    "umount2": Spec(166, SHAPE_ARGS, R.KIND_MOUNT),
    "pivot_root": Spec(155, SHAPE_ARGS, R.KIND_MOUNT),
    "move_mount": Spec(429, SHAPE_ARGS, R.KIND_MOUNT),
    "mount_setattr": Spec(442, SHAPE_ARGS, R.KIND_MOUNT),
    # the cwd changed: file events name the current one (events.py)
    "chdir": Spec(80, SHAPE_ARGS, R.KIND_CHDIR),
    "fchdir": Spec(81, SHAPE_ARGS, R.KIND_CHDIR),
    # delete / rmdir
    "unlink": _name(87, R.KIND_DELETE, name=0),
    "unlinkat": _name(263, R.KIND_DELETE, dfd=0, name=1, flags=2),  # AT_REMOVEDIR: rmdir
    "rmdir": _name(84, R.KIND_RMDIR, name=0),
    "mkdir": _name(83, R.KIND_MKDIR, name=0, mode=1),
    "mkdirat": _name(258, R.KIND_MKDIR, dfd=0, name=1, mode=2),
    # renames: first name is the old one
    "rename": _name(82, R.KIND_RENAME, name=0, name2=1),
    "renameat": _name(264, R.KIND_RENAME, dfd=0, name=1, dfd2=2, name2=3),
    "renameat2": _name(316, R.KIND_RENAME, dfd=0, name=1, dfd2=2, name2=3, flags=4),
    # links: first name is the existing file, second the new link
    "link": _name(86, R.KIND_LINK, name=0, name2=1),
    "linkat": _name(265, R.KIND_LINK, dfd=0, name=1, dfd2=2, name2=3, flags=4),
    "symlink": _name(88, R.KIND_SYMLINK, target=0, name=1),
    "symlinkat": _name(266, R.KIND_SYMLINK, target=0, dfd=1, name=2),
    # attrib
    "chmod": _name(90, R.KIND_ATTRIB, name=0, mode=1),
    "fchmod": _fd(91, R.KIND_ATTRIB, mode=1),
    "fchmodat": _name(268, R.KIND_ATTRIB, dfd=0, name=1, mode=2),
    "fchmodat2": _name(452, R.KIND_ATTRIB, dfd=0, name=1, mode=2, flags=3),
    "chown": _name(92, R.KIND_ATTRIB, name=0),
    "fchown": _fd(93, R.KIND_ATTRIB),
    "lchown": _name(94, R.KIND_ATTRIB, name=0),
    "fchownat": _name(260, R.KIND_ATTRIB, dfd=0, name=1, flags=4),
    "utime": _name(132, R.KIND_ATTRIB, name=0),
    "utimes": _name(235, R.KIND_ATTRIB, name=0),
    "futimesat": _name(261, R.KIND_ATTRIB, dfd=0, name=1),
    "utimensat": _name(280, R.KIND_ATTRIB, dfd=0, name=1, flags=3),  # NULL name: the fd
    "truncate": _name(76, R.KIND_ATTRIB, name=0),
    "ftruncate": _fd(77, R.KIND_ATTRIB),
}

NAMES_BY_NR: dict[int, str] = {s.nr: name for name, s in SPECS.items()}


def check_arch() -> None:
    machine = platform.machine()
    if machine != "x86_64":
        raise ValueError(f"file probes know x86-64 syscall numbers only, not {machine}")
