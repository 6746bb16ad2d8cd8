"""Which syscalls the file probes watch, and where each keeps its arguments.

The kernel side is table-driven: sys_enter looks the syscall number up in the
`sys_spec` map filled from SPECS, saves the arguments, and sys_exit builds
the record from the spec (files.h, struct sc_spec). SPECS has x86-64's
numbers; IA32 the numbers the same calls have as ia32 syscalls (int $0x80,
32-bit programs), which the kernel side finds at NR_IA32_BASE + nr.
"""

from __future__ import annotations

import ctypes
import platform
from dataclasses import dataclass, replace

from snoopbus.collector import records as R

SHAPE_FDRET = 1
SHAPE_FD = 2
SHAPE_NAME = 3
SHAPE_CLOSE = 4
SHAPE_ARGS = 5  # no file: a record of the arguments, for user space's bookkeeping
SHAPE_MMAP = 6  # mmap: a shared mapping of a file open for writing
SHAPE_SCAN = 7  # close_range: the fd table scanned at enter (bpf/closes.h)
SHAPE_NEWFD = 8  # dup, fcntl(F_DUPFD*): the returned number names another file

NR_IA32_BASE = 512  # files.h: sys_spec keys of ia32 syscalls start here

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
        ("ia32", ctypes.c_uint8),
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
    how: int = 0  # 1 (openat2): the open flags are read from its struct open_how
    const_flags: int = 0

    def to_c(self, ia32: bool = False) -> ScSpec:
        return ScSpec(self.shape, self.kind, self.fd, self.dfd, self.name, self.dfd2,
                      self.name2, self.target, self.flags, self.mode, int(self.how), int(ia32),
                      self.const_flags)


def _fdret(nr: int, **kw: int) -> Spec:
    return Spec(nr, SHAPE_FDRET, R.KIND_CREATE, **kw)


def _fd(nr: int, kind: int, fd: int = 0, **kw: int) -> Spec:
    return Spec(nr, SHAPE_FD, kind, fd=fd, **kw)


def _name(nr: int, kind: int, **kw: int) -> Spec:
    return Spec(nr, SHAPE_NAME, kind, **kw)


SPECS: dict[str, Spec] = {
    # fd-returning: create (FMODE_CREATED) or open
    "open": _fdret(2, name=0, flags=1, mode=2),
    "openat": _fdret(257, dfd=0, name=1, flags=2, mode=3),
    "openat2": _fdret(437, dfd=0, name=1, flags=2, how=1),
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
    # close_range(first, last, flags): close_write for the open files it releases
    "close_range": Spec(436, SHAPE_SCAN, R.KIND_CLOSE_WRITE),
    # the number they return loses its "written" mark (no event)
    "dup": Spec(32, SHAPE_NEWFD, R.KIND_CLOSE_WRITE),
    "fcntl": Spec(72, SHAPE_NEWFD, R.KIND_CLOSE_WRITE, flags=1),  # F_DUPFD, F_DUPFD_CLOEXEC
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
    # size changes are modifies, as inotify has them (IN_MODIFY)
    "truncate": _name(76, R.KIND_MODIFY, name=0),
    "ftruncate": _fd(77, R.KIND_MODIFY),
    "fallocate": _fd(285, R.KIND_MODIFY),
    # shared mappings of files open for writing (prot 2, flags 3, fd 4)
    "mmap": Spec(9, SHAPE_MMAP, R.KIND_MODIFY, fd=4, flags=3, mode=2),
    # mknod/mknodat: any node, mode with its type (S_IFIFO, S_IFREG ...)
    "mknod": _name(133, R.KIND_CREATE, name=0, mode=1),
    "mknodat": _name(259, R.KIND_CREATE, dfd=0, name=1, mode=2),
    # extended attributes: attrib with the attribute's name (as a symlink's target)
    "setxattr": _name(188, R.KIND_XATTR, name=0, target=1),
    "lsetxattr": _name(189, R.KIND_XATTR, name=0, target=1),
    "fsetxattr": _fd(190, R.KIND_XATTR, target=1),
    "removexattr": _name(197, R.KIND_XATTR, name=0, target=1),
    "lremovexattr": _name(198, R.KIND_XATTR, name=0, target=1),
    "fremovexattr": _fd(199, R.KIND_XATTR, target=1),
    # (dfd, path, at_flags, name, ...): since Linux 6.13, the same number on ia32
    "setxattrat": _name(463, R.KIND_XATTR, dfd=0, name=1, flags=2, target=3),
    "removexattrat": _name(466, R.KIND_XATTR, dfd=0, name=1, flags=2, target=3),
}

# ia32 syscall name -> (its number, the SPECS entry whose argument layout it has).
# From arch/x86/entry/syscalls/syscall_32.tbl; old_mmap (90, arguments in a
# struct in user memory) is not decoded: 32-bit C libraries use mmap2.
IA32: dict[str, tuple[int, str]] = {
    "open": (5, "open"), "openat": (295, "openat"), "openat2": (437, "openat2"),
    "creat": (8, "creat"),
    "write": (4, "write"), "pwrite64": (181, "pwrite64"), "writev": (146, "writev"),
    "pwritev": (334, "pwritev"), "pwritev2": (379, "pwritev2"),
    "sendfile": (187, "sendfile"), "sendfile64": (239, "sendfile"),
    "splice": (313, "splice"), "copy_file_range": (377, "copy_file_range"),
    "close": (6, "close"), "dup2": (63, "dup2"), "dup3": (330, "dup3"),
    "close_range": (436, "close_range"),
    "dup": (41, "dup"), "fcntl": (55, "fcntl"), "fcntl64": (221, "fcntl"),
    "mount": (21, "mount"), "umount": (22, "umount2"), "umount2": (52, "umount2"),
    "pivot_root": (217, "pivot_root"), "move_mount": (429, "move_mount"),
    "mount_setattr": (442, "mount_setattr"),
    "chdir": (12, "chdir"), "fchdir": (133, "fchdir"),
    "unlink": (10, "unlink"), "unlinkat": (301, "unlinkat"), "rmdir": (40, "rmdir"),
    "mkdir": (39, "mkdir"), "mkdirat": (296, "mkdirat"),
    "rename": (38, "rename"), "renameat": (302, "renameat"), "renameat2": (353, "renameat2"),
    "link": (9, "link"), "linkat": (303, "linkat"),
    "symlink": (83, "symlink"), "symlinkat": (304, "symlinkat"),
    "chmod": (15, "chmod"), "fchmod": (94, "fchmod"), "fchmodat": (306, "fchmodat"),
    "fchmodat2": (452, "fchmodat2"),
    "lchown": (16, "lchown"), "fchown": (95, "fchown"), "chown": (182, "chown"),
    "lchown32": (198, "lchown"), "fchown32": (207, "fchown"), "chown32": (212, "chown"),
    "fchownat": (298, "fchownat"),
    "utime": (30, "utime"), "utimes": (271, "utimes"), "futimesat": (299, "futimesat"),
    "utimensat": (320, "utimensat"), "utimensat_time64": (412, "utimensat"),
    "truncate": (92, "truncate"), "ftruncate": (93, "ftruncate"),
    "truncate64": (193, "truncate"), "ftruncate64": (194, "ftruncate"),
    "fallocate": (324, "fallocate"),
    "mmap2": (192, "mmap"),
    "mknod": (14, "mknod"), "mknodat": (297, "mknodat"),
    "setxattr": (226, "setxattr"), "lsetxattr": (227, "lsetxattr"),
    "fsetxattr": (228, "fsetxattr"), "removexattr": (235, "removexattr"),
    "lremovexattr": (236, "lremovexattr"), "fremovexattr": (237, "fremovexattr"),
    "setxattrat": (463, "setxattrat"), "removexattrat": (466, "removexattrat"),
}

# sys_spec key (a record's nr) -> syscall name; ia32 ones as "ia32:<name>".
NAMES_BY_NR: dict[int, str] = {
    **{s.nr: name for name, s in SPECS.items()},
    **{NR_IA32_BASE + nr: f"ia32:{name}" for name, (nr, _) in IA32.items()},
}


def kernel_table() -> dict[int, ScSpec]:
    """sys_spec's contents: key -> spec. The slot of a 64-bit number also says
    whether an ia32 syscall has that number (sys_enter reads TS_COMPAT only then)."""
    ia32_nrs = {nr for nr, _ in IA32.values()}
    table = {s.nr: s.to_c(ia32=s.nr in ia32_nrs) for s in SPECS.values()}
    for nr in ia32_nrs - table.keys():
        table[nr] = ScSpec(ia32=1)
    for nr, base in IA32.values():
        table[NR_IA32_BASE + nr] = replace(SPECS[base], nr=nr).to_c()
    return table


def check_arch() -> None:
    machine = platform.machine()
    if machine != "x86_64":
        raise ValueError(f"file probes know x86-64 syscall numbers only, not {machine}")
