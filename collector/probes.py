"""Compiles and attaches the probe programs in bpf/ with BCC.

Everything the C code needs from the running kernel or the user arrives as
-D constants (struct offsets from BTF, limits, filters): the .bpf.c files
are never edited as text.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from snoopbus.collector import btf, syscalls, uring
from snoopbus.collector.bcc_import import import_bcc
from snoopbus.collector.filters import FilterConfig, fill_maps
from snoopbus.collector.filters import defines as filter_defines
from snoopbus.proto.settings_file import CollectorSection

log = logging.getLogger(__name__)

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
    "OFF_TASK_PID": "task_struct.pid",
    "OFF_BPRM_FILENAME": "linux_binprm.filename",
    "OFF_BPRM_INTERP": "linux_binprm.interp",
}

FILE_OFFSETS = {
    "OFF_TASK_FILES": "task_struct.files",
    "OFF_FILES_FDT": "files_struct.fdt",
    "OFF_FDTABLE_FD": "fdtable.fd",
    "OFF_FDTABLE_MAX_FDS": "fdtable.max_fds",
    "OFF_FDTABLE_CLOSE_ON_EXEC": "fdtable.close_on_exec",
    "OFF_FILE_F_INODE": "file.f_inode",
    "OFF_FILE_F_MODE": "file.f_mode",
    "OFF_FILE_F_FLAGS": "file.f_flags",
    "OFF_INODE_I_INO": "inode.i_ino",
    "OFF_INODE_I_SB": "inode.i_sb",
    "OFF_INODE_I_MODE": "inode.i_mode",
    "OFF_INODE_I_DENTRY": "inode.i_dentry",
    "OFF_SB_S_DEV": "super_block.s_dev",
    "OFF_DENTRY_D_INODE": "dentry.d_inode",
    "OFF_TASK_NSPROXY": "task_struct.nsproxy",
    "OFF_NSPROXY_MNT_NS": "nsproxy.mnt_ns",
    "OFF_MNT_NS_INUM": "mnt_namespace.ns.inum",
    # x86-64 syscall arguments in struct pt_regs, and the syscall number
    "OFF_REGS_ARG0": "pt_regs.di",
    "OFF_REGS_ARG1": "pt_regs.si",
    "OFF_REGS_ARG2": "pt_regs.dx",
    "OFF_REGS_ARG3": "pt_regs.r10",
    "OFF_REGS_ARG4": "pt_regs.r8",
    "OFF_REGS_ARG5": "pt_regs.r9",
    "OFF_REGS_ORIG_AX": "pt_regs.orig_ax",
    # ia32 syscall arguments (int $0x80, 32-bit programs)
    "OFF_REGS32_ARG0": "pt_regs.bx",
    "OFF_REGS32_ARG1": "pt_regs.cx",
    "OFF_REGS32_ARG2": "pt_regs.dx",
    "OFF_REGS32_ARG3": "pt_regs.si",
    "OFF_REGS32_ARG4": "pt_regs.di",
    "OFF_REGS32_ARG5": "pt_regs.bp",
    "OFF_TASK_TI_STATUS": "task_struct.thread_info.status",  # TS_COMPAT: ia32 syscall
    # fd-table scans at exit, exec and close_range (bpf/closes.h)
    "OFF_FILES_COUNT": "files_struct.count",
    "OFF_FDTABLE_OPEN_FDS": "fdtable.open_fds",
    "OFF_SIGNAL_NR_THREADS": "signal_struct.nr_threads",
}

NAME_SZ = 256  # NAME_MAX + NUL
PATH_MAX_LEN = 4096


@dataclass(frozen=True)
class ProbeLimits:
    """Sizes the kernel side works within; documented in the README."""

    # defaults: [collector] (proto/settings_file.py)
    argv_max: int = CollectorSection.argv_max  # bytes of argv per exec; longer is truncated
    path_depth_max: int = 128  # path components (and mount crossings) walked
    ringbuf_pages: int = CollectorSection.ringbuf_pages  # pages of 4 KiB, a power of two
    # A CPU wakes the reader when its last wake-up is this old (or every 64 records):
    # the latency of a record under light load, the cost of wake-ups under heavy load.
    wakeup_us: int = 1000
    # Isolation (bpf/snoopbus.bpf.c, proto/README.md "Isolation"):
    # Ring buffer pages file records leave to exec, exit and fork records.
    reserve_pages: int = 256
    coalesce_ms: int = 1000  # a chain of identical records is reported at least this often
    # Records/s each source may write while the ring buffer fills (0: no fair
    # share), after a burst of source_burst_ms' worth. A few times what a busy
    # legitimate process makes (a build, a `tar x`: hundreds to a few thousand
    # files/s) and a small part of what the reader takes, so one flooder cannot
    # crowd out the rest; nothing is withheld while there is room.
    source_rate: int = CollectorSection.source_rate
    source_burst_ms: int = 500

    def __post_init__(self) -> None:
        if self.argv_max < NAME_SZ or self.argv_max & (self.argv_max - 1):
            raise ValueError(f"argv_max must be a power of two >= {NAME_SZ}, got {self.argv_max}")
        if self.ringbuf_pages < 1 or self.ringbuf_pages & (self.ringbuf_pages - 1):
            raise ValueError(f"ringbuf_pages must be a power of two, got {self.ringbuf_pages}")
        if min(self.source_rate, self.coalesce_ms, self.source_burst_ms, self.reserve_pages) < 0:
            raise ValueError("source_rate, coalesce_ms, source_burst_ms and reserve_pages must "
                             "not be negative")
        if not 1 <= self.path_depth_max <= 1024:
            raise ValueError(f"path_depth_max must be within 1..1024, got {self.path_depth_max}")

    @property
    def reserve_bytes(self) -> int:
        # Room file records leave to exec, exit, fork: at most a quarter of the ring.
        return min(self.reserve_pages * 4096, self.ringbuf_pages * 4096 // 4)

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


def defines(
    limits: ProbeLimits, offsets: dict[str, int], filters: FilterConfig | None = None,
    self_tgid: int | None = None, task_storage: bool = True,
) -> dict[str, int]:
    return {
        **offsets,
        **filter_defines(filters or FilterConfig()),
        "SELF_TGID": os.getpid() if self_tgid is None else self_tgid,
        # Syscall arguments in task storage (5.11+), else a map keyed by thread id.
        "TASK_STORAGE": int(task_storage),
        "MAX_CPUS": possible_cpus(),
        "DATA_SIZE": limits.data_size,
        # A user string (up to PATH_MAX_LEN) may start anywhere below DATA_SIZE.
        "SLACK": max(limits.argv_max, PATH_MAX_LEN),
        "NAME_SZ": NAME_SZ,
        "PATH_MAX_LEN": PATH_MAX_LEN,
        "PATH_DEPTH_MAX": limits.path_depth_max,
        "RINGBUF_PAGES": limits.ringbuf_pages,
        "ARGV_MAX": limits.argv_max,
        "WAKEUP_NS": limits.wakeup_us * 1000,
        "RINGBUF_BYTES": limits.ringbuf_pages * 4096,
        "RESERVE_BYTES": limits.reserve_bytes,
        # Seeds the coalescing hash (bpf/snoopbus.bpf.c rec_hash): unknown to the
        # processes whose records it compares.
        "COAL_SEED": int.from_bytes(os.urandom(8), "little") >> 1,
        "COALESCE_NS": limits.coalesce_ms * 1_000_000,
        "COALESCE_MAX": 1 << 30,
        "SOURCE_RATE": limits.source_rate,
        "SOURCE_BURST_NS": limits.source_burst_ms * 1_000_000,
        # Fair shares apply past half the room file records may take: below it a
        # legitimate burst the reader is briefly behind on goes whole (an eighth
        # summarized 5-15 % of a `tar x`); above it the flooder is held back.
        "PRESSURE_BYTES": (limits.ringbuf_pages * 4096 - limits.reserve_bytes) // 2,
    }


def cflags(defs: dict[str, int]) -> list[str]:
    return [f"-D{name}={value}" for name, value in sorted(defs.items())] + [f"-I{bpf_dir()}"]


def program_text(name: str = "snoopbus.bpf.c") -> str:
    return (bpf_dir() / name).read_text()


def dump_program(
    limits: ProbeLimits, offsets: dict[str, int], filters: FilterConfig | None = None
) -> str:
    """The program exactly as BCC gets it: constants, then source (for --ebpf)."""
    defs = defines(limits, offsets, filters)
    head = "".join(f"#define {k} {v}\n" for k, v in sorted(defs.items()))
    return f"/* cflags: {' '.join(cflags(defs))} */\n{head}\n" + program_text()


def file_ref_offsets() -> dict[str, int]:
    """Where an open file's reference count is: file_ref_t f_ref (6.13+,
    biased: it holds count - 1) or atomic_long_t f_count before."""
    try:
        return {"OFF_FILE_F_REF": btf.resolve({"f": "file.f_ref"})["f"], "FILE_REF_BIASED": 1}
    except btf.BtfError:
        return {"OFF_FILE_F_REF": btf.resolve({"f": "file.f_count"})["f"], "FILE_REF_BIASED": 0}


def has_tracepoint(name: str) -> bool:
    """The running kernel has raw tracepoint `name` (its BTF has btf_trace_<name>)."""
    try:
        with btf.Btf.load() as table:
            return table.find_type(f"btf_trace_{name}", btf.Kind.TYPEDEF) is not None
    except btf.BtfError:
        return False


def proc_offsets() -> dict[str, int]:
    """Every offset the module needs (process and file probes share it)."""
    offsets = btf.resolve({**COMMON_OFFSETS, **PROC_OFFSETS, **FILE_OFFSETS})
    offsets.update(file_ref_offsets())
    # sched_prepare_exec (6.10+): close_write of the close-on-exec fds
    offsets["HAVE_PREPARE_EXEC"] = int(has_tracepoint("sched_prepare_exec"))
    args = [offsets[f"OFF_REGS{abi}_ARG{i}"] for abi in ("", "32") for i in range(6)]
    lo = min(args)
    # sys_enter reads them all at once (ARGS_WINDOW u64s in snoopbus.bpf.c)
    if max(args) - lo > 88 or any((a - lo) % 8 for a in args):
        raise ProbeError(f"syscall argument registers not within 96 bytes of pt_regs: {args}")
    offsets["OFF_REGS_ARGS_LO"] = lo
    return offsets


def uring_offsets() -> dict[str, int]:
    """The io_uring probes' offsets plus URING=1; only URING=0 when one of the
    (kernel-internal) io_uring fields does not resolve: the rest still runs."""
    try:
        with btf.Btf.load() as table:
            offsets, errors = uring.resolve(table)
    except btf.BtfError as exc:
        errors = {"btf": str(exc)}
    if errors:
        log.warning("io_uring requests will not be seen: %s",
                    "; ".join(f"{k}: {v}" for k, v in errors.items()))
        return {"URING": 0}
    return {**offsets, "URING": 1}


class ProbeError(RuntimeError):
    """The probes could not be compiled or attached on this kernel."""


@dataclass
class LoadedProbes:
    bpf: Any  # bcc.BPF
    # Timestamp tracepoints name_touched is attached to (empty: names resolved
    # after the fact cannot be checked against the kernel on this one).
    name_check: list[str] = field(default_factory=list)
    # What loaded of what this kernel offers: a fallback (logged) loses either.
    uring: bool = False  # the io_uring hooks
    task_storage: bool = False  # syscall arguments in task storage (else a map by thread id)

    def lost_by_kind(self) -> dict[int, list[int]]:
        """Records the ring buffer had no room for: kind -> count per CPU."""
        table = self.bpf[b"lost"]
        out: dict[int, list[int]] = {}
        for key, per_cpu in table.items():
            counts = [int(v) for v in per_cpu]
            if any(counts):
                out[key.value] = counts
        return out

    def consumer_position(self) -> Callable[[int], None]:
        """Stores the file ring buffer's consumer position where the probes
        read it (ring_pos[1]): how they tell the ring buffer is filling."""
        table = self.bpf[b"ring_pos"]
        key = ctypes.c_int(1)
        last = -1

        def store(pos: int) -> None:
            nonlocal last
            if pos != last:
                table[key] = ctypes.c_uint64(pos)
                last = pos

        return store

    def kernel_stats(self) -> dict[str, int]:
        """What the kernel side filtered out, summed over CPUs (KS_* in files.h)."""
        table = self.bpf[b"kstats"]
        names = ("filtered_task", "filtered_path", "failed_skipped", "close_scan_cut",
                 "overflow_table_full")
        return {name: sum(int(v) for v in table[ctypes.c_int(i)]) for i, name in enumerate(names)}

    def close(self) -> None:
        self.bpf.cleanup()


# Tail programs, by their slot in the `tails` prog array.
TAIL_PROGRAMS = {0: "exit_second_name", 1: "close_at_enter", 2: "exit_first_name"}
# The fd-table scans' (bpf/closes.h), in `scan_tails`.
SCAN_TAIL_PROGRAMS = {0: "scan_count", 1: "scan_emit"}
# The io_uring block's own (bpf/uring.h), in `uring_tails`.
URING_TAIL_PROGRAMS = {0: "uring_first_name", 1: "uring_second_name"}


def _compile(defs: dict[str, int]) -> Any:
    """Compiles and loads snoopbus.bpf.c with `defs`, tail programs in place."""
    bcc = import_bcc()
    b = None
    try:
        b = bcc.BPF(text=program_text().encode(), cflags=cflags(defs))
        tails = b[b"tails"]
        for slot, name in TAIL_PROGRAMS.items():
            fn = b.load_func(name.encode(), bcc.BPF.RAW_TRACEPOINT)
            tails[ctypes.c_int(slot)] = ctypes.c_int(fn.fd)
        scan_tails = b[b"scan_tails"]
        for slot, name in SCAN_TAIL_PROGRAMS.items():
            fn = b.load_func(name.encode(), bcc.BPF.RAW_TRACEPOINT)
            scan_tails[ctypes.c_int(slot)] = ctypes.c_int(fn.fd)
        if defs.get("URING"):
            uring_tails = b[b"uring_tails"]
            for slot, name in URING_TAIL_PROGRAMS.items():
                fn = b.load_func(name.encode(), bcc.BPF.RAW_TRACEPOINT)
                uring_tails[ctypes.c_int(slot)] = ctypes.c_int(fn.fd)
    except Exception as exc:  # BCC raises bare Exception for compile and load errors
        if b is not None:
            b.cleanup()  # its raw tracepoints are attached already
        raise ProbeError(
            f"BCC could not compile or load the probes ({exc}); "
            "`snoopbus doctor` shows what this kernel allows"
        ) from exc
    return b


def load(
    limits: ProbeLimits, filters: FilterConfig | None = None, task_storage: bool = True
) -> LoadedProbes:
    """Compiles snoopbus.bpf.c against this kernel's offsets and attaches it.

    BCC attaches the raw tracepoints while compiling; sys_enter does nothing
    until sys_spec names a syscall, so that map is filled last, after the
    tail programs and the filters are in place."""
    filters = filters or FilterConfig()
    syscalls.check_arch()
    offsets = {**proc_offsets(), **uring_offsets()}
    try:
        return _load(limits, offsets, filters, task_storage)
    except ProbeError as exc:
        if not offsets["URING"]:
            raise
        # The io_uring block reads kernel-internal structs: it must never
        # cost the syscall probes.
        log.warning("probes with the io_uring hooks did not load (%s); "
                    "io_uring requests will not be seen", exc)
        return _load(limits, {**offsets, "URING": 0}, filters, task_storage)


def _load(limits: ProbeLimits, offsets: dict[str, int], filters: FilterConfig,
          task_storage: bool) -> LoadedProbes:
    try:
        b = _compile(defines(limits, offsets, filters, task_storage=task_storage))
    except ProbeError as exc:
        if not task_storage:
            raise
        # Kernels before 5.11 have no task storage for tracing programs.
        log.warning("probes with task storage did not load (%s); using a map keyed by "
                    "thread id for syscall arguments", exc)
        task_storage = False
        b = _compile(defines(limits, offsets, filters, task_storage=False))
    loaded = _finish(b, filters)
    loaded.uring, loaded.task_storage = bool(offsets["URING"]), task_storage
    return loaded


def _finish(b: Any, filters: FilterConfig) -> LoadedProbes:
    fill_maps(b, filters)
    # BCC cannot map the s8 fields of struct sc_spec: give it the ctypes mirror.
    spec_map = b.get_table(b"sys_spec", keytype=ctypes.c_int, leaftype=syscalls.ScSpec)
    name_check = attach_name_check(b)
    for key, spec in syscalls.kernel_table().items():
        spec_map[ctypes.c_int(key)] = spec
    return LoadedProbes(b, name_check)


# The kernel's inode timestamp tracepoints (6.13+): name_touched on each.
NAME_CHECK_TRACEPOINTS = ("ctime_ns_xchg", "ctime_xchg_skip", "inode_set_ctime_to_ts")


def attach_name_check(b: Any) -> list[str]:
    """Attaches name_touched where this kernel has the tracepoints; which did."""
    attached = []
    for tp in NAME_CHECK_TRACEPOINTS:
        try:
            b.attach_raw_tracepoint(tp=tp.encode(), fn_name=b"name_touched")
        except Exception as exc:  # BCC raises bare Exception when the tracepoint is absent
            log.info("no %s tracepoint (%s): names resolved after the fact go unchecked",
                     tp, exc)
            continue
        attached.append(tp)
    return attached
