"""Compiles and attaches the probe programs in bpf/ with BCC.

Everything the C code needs from the running kernel or the user arrives as
-D constants (struct offsets from BTF, limits, filters): the .bpf.c files
are never edited as text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from snoopbus.collector import btf
from snoopbus.collector.bcc_import import import_bcc

# Offsets every program uses: name of the -D constant -> BTF member path.
COMMON_OFFSETS = {
    "OFF_TASK_REAL_PARENT": "task_struct.real_parent",
    "OFF_TASK_TGID": "task_struct.tgid",
    "OFF_PATH_DENTRY": "path.dentry",
    "OFF_PATH_MNT": "path.mnt",
    "OFF_DENTRY_D_PARENT": "dentry.d_parent",
    "OFF_DENTRY_D_NAME": "dentry.d_name",
    "OFF_QSTR_NAME": "qstr.name",
    "OFF_VFSMOUNT_MNT_ROOT": "vfsmount.mnt_root",
    "OFF_MOUNT_MNT": "mount.mnt",
    "OFF_MOUNT_MNT_PARENT": "mount.mnt_parent",
    "OFF_MOUNT_MNT_MOUNTPOINT": "mount.mnt_mountpoint",
}

PROC_OFFSETS = {
    "OFF_TASK_MM": "task_struct.mm",
    "OFF_TASK_FS": "task_struct.fs",
    "OFF_TASK_SIGNAL": "task_struct.signal",
    "OFF_TASK_EXIT_CODE": "task_struct.exit_code",
    "OFF_SIGNAL_STRUCT_LIVE": "signal_struct.live",
    "OFF_MM_EXE_FILE": "mm_struct.exe_file",
    "OFF_MM_ARG_START": "mm_struct.arg_start",
    "OFF_MM_ARG_END": "mm_struct.arg_end",
    "OFF_FILE_F_PATH": "file.f_path",
    "OFF_FS_PWD": "fs_struct.pwd",
    "OFF_FS_ROOT": "fs_struct.root",
}

NAME_SZ = 256  # NAME_MAX + NUL
PATH_MAX_LEN = 4096


@dataclass(frozen=True)
class ProbeLimits:
    """Sizes the kernel side works within; documented in the README."""

    argv_max: int = 8192  # bytes of argv kept per exec; longer is flagged truncated
    path_depth_max: int = 128  # path components (and mount crossings) walked
    ringbuf_pages: int = 4096  # 16 MiB ring buffer (pages of 4 KiB, a power of two)

    def __post_init__(self) -> None:
        if self.argv_max < NAME_SZ or self.argv_max & (self.argv_max - 1):
            raise ValueError(f"argv_max must be a power of two >= {NAME_SZ}, got {self.argv_max}")
        if self.ringbuf_pages < 1 or self.ringbuf_pages & (self.ringbuf_pages - 1):
            raise ValueError(f"ringbuf_pages must be a power of two, got {self.ringbuf_pages}")
        if not 1 <= self.path_depth_max <= 1024:
            raise ValueError(f"path_depth_max must be within 1..1024, got {self.path_depth_max}")

    @property
    def data_size(self) -> int:
        # Room for an exe path, a cwd path and argv, rounded up to a power of two.
        need = 2 * (PATH_MAX_LEN + 2 * NAME_SZ) + self.argv_max + 128
        return 1 << (need - 1).bit_length()


def bpf_dir() -> Path:
    return Path(str(resources.files("snoopbus.collector") / "bpf"))


def possible_cpus() -> int:
    """Highest possible CPU id + 1 (what BPF_ARRAY indexed by CPU must cover)."""
    try:
        spec = Path("/sys/devices/system/cpu/possible").read_text().strip()
        return int(spec.replace("-", ",").split(",")[-1]) + 1
    except (OSError, ValueError):
        return os.cpu_count() or 1


def defines(limits: ProbeLimits, offsets: dict[str, int]) -> dict[str, int]:
    return {
        **offsets,
        "MAX_CPUS": possible_cpus(),
        "DATA_SIZE": limits.data_size,
        "SLACK": max(limits.argv_max, NAME_SZ),
        "NAME_SZ": NAME_SZ,
        "PATH_MAX_LEN": PATH_MAX_LEN,
        "PATH_DEPTH_MAX": limits.path_depth_max,
        "RINGBUF_PAGES": limits.ringbuf_pages,
        "ARGV_MAX": limits.argv_max,
    }


def cflags(defs: dict[str, int]) -> list[str]:
    return [f"-D{name}={value}" for name, value in sorted(defs.items())] + [f"-I{bpf_dir()}"]


def program_text(name: str = "snoopbus.bpf.c") -> str:
    return (bpf_dir() / name).read_text()


def dump_program(limits: ProbeLimits, offsets: dict[str, int]) -> str:
    """The program exactly as BCC gets it: constants, then source (for --ebpf)."""
    head = "".join(f"#define {k} {v}\n" for k, v in sorted(defines(limits, offsets).items()))
    return f"/* cflags: {' '.join(cflags(defines(limits, offsets)))} */\n{head}\n" + program_text()


def proc_offsets() -> dict[str, int]:
    return btf.resolve({**COMMON_OFFSETS, **PROC_OFFSETS})


class ProbeError(RuntimeError):
    """The probes could not be compiled or attached on this kernel."""


@dataclass
class LoadedProbes:
    bpf: Any  # bcc.BPF

    def lost_by_kind(self) -> dict[int, list[int]]:
        """Records the ring buffer had no room for: kind -> count per CPU."""
        table = self.bpf["lost"]
        out: dict[int, list[int]] = {}
        for key, per_cpu in table.items():
            counts = [int(v) for v in per_cpu]
            if any(counts):
                out[key.value] = counts
        return out

    def close(self) -> None:
        self.bpf.cleanup()


def load(limits: ProbeLimits) -> LoadedProbes:
    """Compiles proc.bpf.c against this kernel's offsets and attaches it."""
    bcc = import_bcc()
    flags = cflags(defines(limits, proc_offsets()))
    try:
        b = bcc.BPF(text=program_text(), cflags=flags)
    except Exception as exc:  # BCC raises bare Exception for compile and load errors
        raise ProbeError(
            f"BCC could not compile or load the probes ({exc}); "
            "`snoopbus doctor` shows what this kernel allows"
        ) from exc
    return LoadedProbes(b)
