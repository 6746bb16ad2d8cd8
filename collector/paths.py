"""Joining and folding paths the kernel hands over in pieces. Pure functions.

A name-based syscall arrives as the walked base directory (cwd or dirfd: the
real dentries, so symlinks and mounts in the base are already resolved) and
the string the process passed. The string is folded lexically here: `.` and
`..` in it are resolved by name, not by lookup, so a symlinked directory
*inside the string* followed by `..` folds to where the name points, not to
where the kernel went. Names with a directory part are therefore resolved
again, by lookup, in collector/resolve.py; the base is exact.
"""

from __future__ import annotations

from snoopbus.proto import TRUNCATED_PREFIX

# A path whose start the kernel walk could not reach (too deep, too long) begins
# with this instead of "/": it must never pass for a real absolute path.
TRUNCATED = TRUNCATED_PREFIX.encode()


def fold(path: bytes) -> bytes:
    """Absolute path with `.`, `..` and repeated slashes folded; `..` stops at /."""
    out: list[bytes] = []
    for part in path.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if out:
                out.pop()
            continue
        out.append(part)
    return b"/" + b"/".join(out)


def join(base: bytes, name: bytes) -> bytes:
    """The path `name` names relative to directory `base` (absolute), folded."""
    if name.startswith(b"/"):
        return fold(name)
    return fold(base + b"/" + name)


def names_to_path(names: bytes) -> bytes:
    """Leaf-first NUL-terminated names, as the kernel walk writes them -> b"/a/b"."""
    if not names:
        return b"/"
    parts = names.split(b"\0")
    if parts[-1] == b"":
        parts.pop()
    return b"/" + b"/".join(reversed(parts))


def mark_truncated(path: bytes) -> bytes:
    """`path` (what was reached of it, from the leaf up) marked as missing its start."""
    return path if path.startswith(TRUNCATED) else TRUNCATED + path


def user_string(raw: bytes) -> bytes:
    """A string read with bpf_probe_read_user_str: up to its NUL."""
    return raw.split(b"\0", 1)[0]


def is_under(path: bytes, prefix: bytes) -> bool:
    """Whether `path` is `prefix` or inside it (component-wise, both folded)."""
    if prefix == b"/":
        return True
    return path == prefix or path.startswith(prefix + b"/")
