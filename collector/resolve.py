"""Names resolved again after the fact, for name-based calls the probes saw
only as strings (unlink, rename, mkdir, ... of "a/b/c").

The kernel follows symlinks inside such a string, and `..` after a symlink
goes to the symlink target's parent: folding the string by text
(paths.join) can name another file than the one the kernel changed (a
decoy). The probes walk the real dentries of the base (cwd or dirfd) but
cannot resolve the rest of the string in the kernel on this kernel (no
kprobes, fentry or LSM to reach the lookup). So user space resolves the
string's directory part itself, symlinks and all, as soon as the record
arrives, and checks the result against the inodes the kernel reported the
call changed (bpf: name_touched): the directory it resolves to (or the file
itself) must be one of them.

`path_resolution` on the event says how the path was found:
  absent       the kernel's own dentries named the file (exact).
  "checked"    resolved after the fact, and the kernel changed that directory
               or file: the path is the one the kernel acted on.
  "unchecked"  resolved after the fact with nothing to check it against (the
               call failed, the filesystem reports no timestamps, the
               directory is gone already, another mount namespace).
  "mismatch"   resolved after the fact to a directory the kernel did not
               change: the names changed in between (a race) or the process
               sees another root; the path is a guess, not the file the
               kernel acted on.
"""

from __future__ import annotations

import os
from typing import Final

from snoopbus.collector import paths

CHECKED: Final = "checked"
UNCHECKED: Final = "unchecked"
MISMATCH: Final = "mismatch"

Touched = frozenset[tuple[int, int]]  # (kernel dev_t, inode) pairs


def kernel_dev(st_dev: int) -> int:
    """st_dev -> the kernel's dev_t, as the probes read it from the super block."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def needs_resolution(name: bytes) -> bool:
    """Whether a name string has a directory part the kernel resolved by lookup
    (more than one component); one component in a walked base is exact."""
    return b"/" in name.rstrip(b"/").lstrip(b"/")


def unfolded(base: bytes, name: bytes) -> bytes:
    """The string as the kernel walks it: absolute, nothing folded."""
    return name if name.startswith(b"/") else base + b"/" + name


def _identity(path: bytes, follow: bool) -> tuple[int, int] | None:
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return None
    return kernel_dev(st.st_dev), st.st_ino


def resolve_after(raw: bytes, touched: Touched, in_dir: bool = True) -> tuple[bytes, str]:
    """(path of the file, how it was found) for the unfolded string `raw`,
    checked against the (dev, inode) pairs the kernel reported changed: the
    directory's when the call changed the directory (`in_dir`: create, delete,
    rename, link), else (attrib) the file's own."""
    head, _, last = raw.rstrip(b"/").rpartition(b"/")
    if last in (b".", b".."):  # the call acted on the directory itself
        head, last = raw, b""
    real_dir = os.path.realpath(head or b"/")
    path = paths.fold(real_dir + b"/" + last) if last else paths.fold(real_dir)
    if not touched:
        return path, UNCHECKED
    seen = _identity(real_dir, True) if in_dir else _identity(path, False)
    if seen is None:
        return path, UNCHECKED  # gone before we looked: nothing to compare
    return path, CHECKED if seen in touched else MISMATCH
