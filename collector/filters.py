"""What the collector leaves out, and where (kernel or user space).

In the kernel (BPF maps filled before the probes see a syscall):
- the collector's own process, and excluded comm, uid and cgroup id: checked
  at syscall entry, before anything is saved. Exact.
- include/exclude path prefixes, the nearest (longest) prefix winning, so
  `--include-path /data --exclude-path /data/tmp` works:
  * paths walked from a file (open, create, modify, close_write, fd-based
    attrib): each prefix is resolved once, at start-up, to its directory's
    (inode, device), and the dentry walk looks every ancestor up. Exact, by
    identity rather than by name: a bind mount of an excluded directory is
    excluded too; a prefix missing at start-up is not known to the kernel.
  * names passed as absolute strings (`unlink("/tmp/x")`): the kernel hashes
    the name up to each '/' (FNV-1a) and looks the hashes up. Exact for names
    that need no folding (no "//", "/.", "/..") within PREFIX_SCAN bytes.
  * one plain component relative to a walked base (`unlinkat(dfd, "x")`):
    the base's verdict, for excludes.
- renames and links: left to user space (either name may matter).
In user space, on the final path string (lexically, after join and fold):
the same prefixes again, for everything the kernel could not decide.
Counted separately (`user_filtered` in heartbeats and the final status).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from snoopbus.collector import paths
from snoopbus.collector.resolve import kernel_dev

VERDICT_INCLUDE = 1
VERDICT_EXCLUDE = 2


@dataclass(frozen=True)
class FilterConfig:
    include_paths: tuple[str, ...] = ()
    exclude_paths: tuple[str, ...] = ()
    exclude_comms: tuple[str, ...] = ()
    exclude_uids: tuple[int, ...] = ()
    exclude_cgroups: tuple[int, ...] = ()  # cgroup v2 ids (paths resolved by the caller)
    include_failed: bool = False
    open_events: bool = False

    def __post_init__(self) -> None:
        for p in self.include_paths + self.exclude_paths:
            if not p.startswith("/"):
                raise ValueError(f"path prefix {p!r} must be absolute")
        for c in self.exclude_comms:
            if not c or len(c.encode()) > 15:
                raise ValueError(f"comm {c!r} must be 1 to 15 bytes (the kernel keeps 15)")

    def path_match(self) -> PathMatcher | None:
        if not self.include_paths and not self.exclude_paths:
            return None
        return PathMatcher(self.include_paths, self.exclude_paths)


class PathMatcher:
    """The user-space check: the longest matching prefix decides."""

    def __init__(self, include: tuple[str, ...], exclude: tuple[str, ...]) -> None:
        rules = [(paths.fold(os.fsencode(p)), True) for p in include]
        rules += [(paths.fold(os.fsencode(p)), False) for p in exclude]
        self.rules = sorted(rules, key=lambda r: len(r[0]), reverse=True)
        self.has_includes = bool(include)

    def __call__(self, path: bytes) -> bool:
        for prefix, keep in self.rules:
            if paths.is_under(path, prefix):
                return keep
        return not self.has_includes


def parse_uid(value: str | int) -> int:
    if isinstance(value, int) or value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise ValueError(f"unknown user {value!r}") from None


class DirKey(ctypes.Structure):
    """struct dir_key in snoopbus.bpf.c."""

    _fields_ = [("ino", ctypes.c_uint64), ("dev", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


PREFIX_SCAN = 256  # bytes of an absolute name the kernel hashes (-D PREFIX_SCAN)


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def prefix_hashes(cfg: FilterConfig) -> dict[int, int]:
    """FNV-1a of each folded prefix -> verdict, for names passed as absolute
    strings. Prefixes the kernel cannot scan that far stay with user space."""
    out: dict[int, int] = {}
    for verdict, prefixes in ((VERDICT_INCLUDE, cfg.include_paths),
                              (VERDICT_EXCLUDE, cfg.exclude_paths)):
        for p in prefixes:
            folded = paths.fold(os.fsencode(p))
            if folded != b"/" and len(folded) < PREFIX_SCAN:
                out[fnv1a64(folded)] = verdict
    return out


def dir_keys(cfg: FilterConfig) -> dict[tuple[int, int], int]:
    """(ino, kernel dev) -> verdict for each prefix that exists now."""
    keys: dict[tuple[int, int], int] = {}
    for verdict, prefixes in ((VERDICT_INCLUDE, cfg.include_paths),
                              (VERDICT_EXCLUDE, cfg.exclude_paths)):
        for p in prefixes:
            try:
                st = os.stat(p)
            except OSError:
                continue  # user space still filters it by name
            keys[(st.st_ino, kernel_dev(st.st_dev))] = verdict
    return keys


def fill_maps(bpf: Any, cfg: FilterConfig) -> None:
    """Loads the filters into the probes' maps (before sys_spec is filled)."""
    one = ctypes.c_uint8(1)
    table = bpf[b"f_dir"]
    for (ino, dev), verdict in dir_keys(cfg).items():
        table[DirKey(ino, dev, 0)] = ctypes.c_uint8(verdict)
    hashes = bpf[b"f_prefix"]
    for h, verdict in prefix_hashes(cfg).items():
        hashes[ctypes.c_uint64(h)] = ctypes.c_uint8(verdict)
    comms = bpf[b"f_comm"]
    for c in cfg.exclude_comms:
        key = comms.Key()
        key.comm = c.encode()
        comms[key] = one
    uids = bpf[b"f_uid"]
    for u in cfg.exclude_uids:
        uids[ctypes.c_uint32(u)] = one
    cgroups = bpf[b"f_cgroup"]
    for g in cfg.exclude_cgroups:
        cgroups[ctypes.c_uint64(g)] = one


def defines(cfg: FilterConfig) -> dict[str, int]:
    return {
        "INCLUDE_FAILED": int(cfg.include_failed),
        "OPEN_EVENTS": int(cfg.open_events),
        "PATH_FILTERS": int(bool(cfg.include_paths or cfg.exclude_paths)),
        "PREFIX_SCAN": PREFIX_SCAN,
        "HAVE_INCLUDES": int(bool(cfg.include_paths)),
        "COMM_FILTER": int(bool(cfg.exclude_comms)),
        "UID_FILTER": int(bool(cfg.exclude_uids)),
        "CGROUP_FILTER": int(bool(cfg.exclude_cgroups)),
    }


# ---- the config file: TOML, section [collector] ----

# key -> (type check, how it lands in the flag namespace)
CONFIG_KEYS: dict[str, type] = {
    "nats": str,
    "host": str,
    "argv_max": int,
    "ringbuf_pages": int,
    "include_path": list,
    "exclude_path": list,
    "exclude_comm": list,
    "exclude_uid": list,
    "exclude_cgroup": list,
    "include_failed": bool,
    "open_events": bool,
}


def load_config(path: Path) -> dict[str, Any]:
    """The [collector] section of a TOML file, checked key by key."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config {path}: not valid TOML ({exc})") from None
    for section in data:
        if section != "collector":
            raise ValueError(f"config {path}: unknown section [{section}] (known: [collector])")
    section = data.get("collector", {})
    if not isinstance(section, dict):
        raise ValueError(f"config {path}: collector must be a table")
    for key, value in section.items():
        kind = CONFIG_KEYS.get(key)
        if kind is None:
            known = ", ".join(sorted(CONFIG_KEYS))
            raise ValueError(f"config {path}: unknown key {key!r} in [collector] (known: {known})")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(
                f"config {path}: [collector] {key} must be {kind.__name__}, "
                f"got {type(value).__name__}"
            )
        if isinstance(value, list) and not all(isinstance(v, (str, int)) for v in value):
            raise ValueError(f"config {path}: [collector] {key} must be a list of str or int")
    return dict(section)


def field_names() -> list[str]:
    return [f.name for f in fields(FilterConfig)]
