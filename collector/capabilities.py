"""Ask the running kernel which BPF hooks it allows, by trying them.

Kernel config, lockdown, LSMs and container sandboxes all decide what loads, and
none of them can be read reliably from files, so each check loads a two-insn
program ("r0 = 0; exit") through libbpf's low-level API and attaches it for a
moment. `detect()` stays quick (no BCC compile); `check_bcc_compiles()` is the
slow one, for `snoopbus doctor`. `choose_hooks()` is pure: checks in, plan out.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from snoopbus.collector.btf import Btf, BtfError, Kind, errno_detail, libbpf, quiet_libbpf

__all__ = [
    "Check",
    "Choice",
    "HookPlan",
    "check_bcc_compiles",
    "choose_hooks",
    "detect",
]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""  # the next step when not ok


# --- kernel ABI constants (include/uapi/linux/bpf.h, perf_event.h) -----------------

_PROG_KPROBE = 2
_PROG_TRACEPOINT = 5
_PROG_RAW_TRACEPOINT = 17
_PROG_TRACING = 26
_PROG_LSM = 29
_MAP_ARRAY = 2
_MAP_PERF_EVENT_ARRAY = 4
_MAP_RINGBUF = 27
_ATTACH_TRACE_RAW_TP = 23
_ATTACH_TRACE_FENTRY = 24
_ATTACH_LSM_MAC = 27

_PERF_TYPE_TRACEPOINT = 2
_PERF_FLAG_FD_CLOEXEC = 8
_PERF_EVENT_IOC_SET_BPF = 0x40042408  # _IOW('$', 8, __u32)
_PERF_EVENT_OPEN_NR = {"x86_64": 298, "aarch64": 241, "riscv64": 241, "ppc64le": 319}

_CAP_SYS_ADMIN = 21
_CAP_PERFMON = 38
_CAP_BPF = 39

# r0 = 0 (BPF_ALU64|BPF_MOV|BPF_K); exit (BPF_JMP|BPF_EXIT). Valid for every
# program type used here, and a no-op wherever it gets attached.
_RETURN_ZERO = bytes.fromhex("b7000000000000009500000000000000")

_TRACEFS_DIRS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
_KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe/type")
_FSNOTIFY = "fsnotify"
_LSM_HOOK = "bpf_lsm_file_open"


class _ProgLoadOpts(ctypes.Structure):
    """struct bpf_prog_load_opts as of libbpf 1.1; `sz` tells libbpf how much we know."""

    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("attempts", ctypes.c_int),
        ("expected_attach_type", ctypes.c_uint32),
        ("prog_btf_fd", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_ifindex", ctypes.c_uint32),
        ("kern_version", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("attach_prog_fd", ctypes.c_uint32),
        ("attach_btf_obj_fd", ctypes.c_uint32),
        ("fd_array", ctypes.c_void_p),
        ("func_info", ctypes.c_void_p),
        ("func_info_cnt", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("line_info", ctypes.c_void_p),
        ("line_info_cnt", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_char_p),
    )


class _PerfEventAttr(ctypes.Structure):
    """struct perf_event_attr up to PERF_ATTR_SIZE_VER5 (112 bytes)."""

    _fields_ = (
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),  # kprobe_func for the kprobe PMU
        ("config2", ctypes.c_uint64),  # probe_offset
        ("branch_sample_type", ctypes.c_uint64),
        ("sample_regs_user", ctypes.c_uint64),
        ("sample_stack_user", ctypes.c_uint32),
        ("clockid", ctypes.c_int32),
        ("sample_regs_intr", ctypes.c_uint64),
        ("aux_watermark", ctypes.c_uint32),
        ("sample_max_stack", ctypes.c_uint16),
        ("reserved", ctypes.c_uint16),
    )


_ROOT_HINT = "run as root (or grant CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN)"


class _Failed(Exception):
    """A step failed; the message is the Check detail."""


def _check_fd(what: str, ret: int) -> int:
    # libbpf 1.x returns -errno directly.
    if ret < 0:
        raise _Failed(f"{what}: {errno_detail(-ret)}")
    return ret


@contextlib.contextmanager
def _fd(what: str, ret: int) -> Iterator[int]:
    fd = _check_fd(what, ret)
    try:
        yield fd
    finally:
        os.close(fd)


def _prog(
    prog_type: int, what: str, *, attach_type: int = 0, attach_btf_id: int = 0
) -> contextlib.AbstractContextManager[int]:
    log = ctypes.create_string_buffer(4096)
    opts = _ProgLoadOpts(
        sz=ctypes.sizeof(_ProgLoadOpts),
        expected_attach_type=attach_type,
        attach_btf_id=attach_btf_id,
        # log_level 0 with a buffer: libbpf retries with the verifier log on failure.
        log_size=len(log),
        log_buf=ctypes.cast(log, ctypes.c_char_p),
    )
    insns = ctypes.create_string_buffer(_RETURN_ZERO, len(_RETURN_ZERO))
    with quiet_libbpf():
        ret = libbpf().bpf_prog_load(
            prog_type, b"snoopbus_probe", b"GPL", insns, len(_RETURN_ZERO) // 8, ctypes.byref(opts)
        )
    if ret < 0:
        verifier = log.value.decode(errors="replace").strip().splitlines()
        tail = f" (verifier: {verifier[-1]})" if verifier else ""
        raise _Failed(f"{what}: load: {errno_detail(-ret)}{tail}")
    return _fd(what, ret)


def _map(map_type: int, key: int, value: int, entries: int, what: str) -> None:
    with quiet_libbpf():
        ret = libbpf().bpf_map_create(map_type, b"snoopbus_probe", key, value, entries, None)
    with _fd(what, ret):
        pass


def _perf_event_open(attr: _PerfEventAttr, what: str) -> contextlib.AbstractContextManager[int]:
    nr = _PERF_EVENT_OPEN_NR.get(platform.machine())
    if nr is None:
        raise _Failed(f"{what}: perf_event_open syscall number unknown on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    attr.size = ctypes.sizeof(_PerfEventAttr)
    fd = libc.syscall(
        ctypes.c_long(nr),
        ctypes.byref(attr),
        ctypes.c_int(-1),  # any process
        ctypes.c_int(0),  # cpu 0
        ctypes.c_int(-1),  # no group
        ctypes.c_ulong(_PERF_FLAG_FD_CLOEXEC),
    )
    if fd < 0:
        raise _Failed(f"{what}: perf_event_open: {errno_detail(ctypes.get_errno())}")
    return _fd(what, fd)


def _set_bpf(perf_fd: int, prog_fd: int, what: str) -> None:
    try:
        fcntl.ioctl(perf_fd, _PERF_EVENT_IOC_SET_BPF, prog_fd)
    except OSError as exc:
        raise _Failed(f"{what}: PERF_EVENT_IOC_SET_BPF: {errno_detail(exc.errno or 0)}") from exc


def _run(name: str, hint: str, attempt: Callable[[], str], privileged: bool) -> Check:
    try:
        return Check(name, True, attempt())
    except (_Failed, BtfError) as exc:
        # Unprivileged, everything fails with EPERM: the kernel-specific hint would mislead.
        if not privileged:
            return Check(name, False, str(exc), _ROOT_HINT)
        return Check(name, False, refusal(str(exc)), hint)


def lockdown_state() -> str:
    """The kernel lockdown mode in effect, or why it cannot be read."""
    try:
        text = Path("/sys/kernel/security/lockdown").read_text()
    except OSError:
        return "lockdown mode unreadable: securityfs is not mounted"
    chosen = [w.strip("[]") for w in text.split() if w.startswith("[")]
    return f"lockdown: {chosen[0] if chosen else text.strip()}"


def refusal(detail: str) -> str:
    """An EPERM met while privileged says so: it is the kernel refusing (lockdown,
    an LSM, a sandbox), not missing privileges, which BCC's message suggests."""
    detail = detail.replace("refused: Need super-user privileges to run ", "refused ")
    if "EPERM" not in detail and "not permitted" not in detail:
        return detail
    return (f"{detail}: refused by the kernel although running with BPF privileges "
            f"(kernel lockdown, an LSM or a sandbox forbids this program type; "
            f"{lockdown_state()})")  # fmt: skip


# --- the checks -------------------------------------------------------------------


def _cap_names(cap_eff: int) -> list[str]:
    names = {_CAP_SYS_ADMIN: "CAP_SYS_ADMIN", _CAP_PERFMON: "CAP_PERFMON", _CAP_BPF: "CAP_BPF"}
    return [n for bit, n in sorted(names.items()) if cap_eff >> bit & 1]


def _check_privileges() -> Check:
    cap_eff = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                cap_eff = int(line.split()[1], 16)
    held = _cap_names(cap_eff)
    enough = bool(cap_eff >> _CAP_SYS_ADMIN & 1) or (
        bool(cap_eff >> _CAP_BPF & 1) and bool(cap_eff >> _CAP_PERFMON & 1)
    )
    held_text = ", ".join(held) or "none of CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN"
    detail = f"euid {os.geteuid()}, effective capabilities: {held_text}"
    return Check(
        "privileges",
        enough,
        detail,
        "" if enough else _ROOT_HINT,
    )


def _check_btf(btf: Btf | BtfError) -> Check:
    if isinstance(btf, BtfError):
        return Check("btf", False, str(btf), "use a kernel built with CONFIG_DEBUG_INFO_BTF=y")
    return Check("btf", True, f"{btf.path}, task_struct is {btf.size('task_struct')} bytes")


def _need(btf: Btf | BtfError) -> Btf:
    if isinstance(btf, BtfError):
        raise _Failed(f"needs kernel BTF: {btf}")
    return btf


def _check_bpf_syscall() -> str:
    _map(_MAP_ARRAY, 4, 4, 1, "bpf(BPF_MAP_CREATE, array)")
    return "bpf() works (array map created)"


def _check_ringbuf() -> str:
    _map(_MAP_RINGBUF, 0, 0, os.sysconf("SC_PAGESIZE"), "ring buffer map")
    return "BPF_MAP_TYPE_RINGBUF created"


def _check_perf_buffer() -> str:
    cpus = os.cpu_count() or 1
    _map(_MAP_PERF_EVENT_ARRAY, 4, 4, cpus, "perf event array map")
    return "BPF_MAP_TYPE_PERF_EVENT_ARRAY created"


def _mounted_tracefs() -> Path | None:
    for root in _TRACEFS_DIRS:
        try:
            if (root / "events").is_dir():
                return root
        except PermissionError:  # mounted, for root only (0700): what reads it says so
            return root
    return None


def _check_tracefs() -> Check:
    root = _mounted_tracefs()
    if root is not None:
        return Check("tracefs", True, f"mounted at {root}")
    return Check(
        "tracefs",
        False,
        "tracefs is not mounted: BCC cannot attach classic tracepoints (raw ones still work)",
        "mount -t tracefs nodev /sys/kernel/tracing",
    )


# Run in a child so the tracefs mount lives and dies in its private mount namespace.
_PRIVATE_TRACEFS_ID = textwrap.dedent(
    """
    import ctypes, sys
    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x20000, 0x4000, 0x40000
    if libc.unshare(CLONE_NEWNS) or libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None):
        sys.exit("unshare/mount: errno %d" % ctypes.get_errno())
    if libc.mount(b"nodev", b"/sys/kernel/tracing", b"tracefs", 0, None):
        sys.exit("mount tracefs: errno %d" % ctypes.get_errno())
    print(open("/sys/kernel/tracing/events/%s/%s/id" % (sys.argv[1], sys.argv[2])).read())
    """
)


def _tracepoint_id(category: str, event: str) -> tuple[int, str]:
    root = _mounted_tracefs()
    if root is not None:
        id_file = root / "events" / category / event / "id"
        try:
            return int(id_file.read_text()), f"id from {id_file}"
        except (OSError, ValueError) as exc:
            raise _Failed(f"{category}:{event}: cannot read {id_file}: {exc}") from exc
    if os.geteuid() != 0:  # only root may mount, even in a private namespace
        raise _Failed(f"{category}:{event}: tracefs is not mounted, so no tracepoint id")
    # Ids are global, so one read in a private namespace is as good as a mount here.
    try:
        child = subprocess.run(
            [sys.executable, "-c", _PRIVATE_TRACEFS_ID, category, event],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise _Failed(
            f"{category}:{event}: tracefs not mounted, and no child to mount it: {exc}"
        ) from exc
    if child.returncode != 0:
        raise _Failed(
            f"{category}:{event}: tracefs not mounted, and mounting it privately failed: "
            f"{child.stderr.strip().splitlines()[-1:] or child.returncode}"
        )
    return int(child.stdout), "id from a private tracefs mount: tracefs is not mounted here"


def _check_tracepoint() -> str:
    category, event = "sched", "sched_process_exec"
    tp_id, source = _tracepoint_id(category, event)
    what = f"tracepoint {category}:{event}"
    attr = _PerfEventAttr(type=_PERF_TYPE_TRACEPOINT, config=tp_id, sample_period=1)
    with (
        _prog(_PROG_TRACEPOINT, what) as prog_fd,
        _perf_event_open(attr, what) as perf_fd,
    ):
        _set_bpf(perf_fd, prog_fd, what)
    return f"{what} attached ({source})"


def _check_raw_tracepoint(event: str = "sched_process_exec") -> str:
    what = f"raw tracepoint {event}"
    with _prog(_PROG_RAW_TRACEPOINT, what) as prog_fd:
        ret = libbpf().bpf_raw_tracepoint_open(event.encode(), prog_fd)
        with _fd(f"{what}: attach", ret):
            pass
    return f"{what} attached"


def check_raw_tracepoint_attach(event: str) -> Check:
    """Whether a trivial program attaches to raw tracepoint `event` (doctor's
    io_uring coverage: collector/uring.py)."""
    privileged = _check_privileges().ok
    return _run(f"raw_tracepoint {event}", "this kernel has no such tracepoint",
                functools.partial(_check_raw_tracepoint, event), privileged)


def _check_tp_btf(btf: Btf | BtfError) -> str:
    what = "tp_btf sched_process_exec"
    btf_id = _need(btf).type_id("btf_trace_sched_process_exec", Kind.TYPEDEF)
    with _prog(
        _PROG_TRACING, what, attach_type=_ATTACH_TRACE_RAW_TP, attach_btf_id=btf_id
    ) as prog_fd:
        # A NULL name attaches a BTF-typed program where its attach_btf_id says.
        with _fd(f"{what}: attach", libbpf().bpf_raw_tracepoint_open(None, prog_fd)):
            pass
    return f"{what} loaded and attached"


def _check_kprobe() -> str:
    what = f"kprobe {_FSNOTIFY}"
    try:
        pmu_type = int(_KPROBE_PMU.read_text())
    except (OSError, ValueError) as exc:
        raise _Failed(
            f"no kprobe PMU ({_KPROBE_PMU} missing): kernel built without CONFIG_KPROBES"
        ) from exc
    func = ctypes.create_string_buffer(_FSNOTIFY.encode())
    attr = _PerfEventAttr(type=pmu_type, config1=ctypes.addressof(func), sample_period=1)
    with _prog(_PROG_KPROBE, what) as prog_fd, _perf_event_open(attr, what) as perf_fd:
        _set_bpf(perf_fd, prog_fd, what)
    return f"{what} attached"


def _check_btf_func_attach(
    btf: Btf | BtfError, what: str, func: str, prog_type: int, attach_type: int
) -> Callable[[], str]:
    def attempt() -> str:
        func_id = _need(btf).func_id(func)
        with (
            _prog(prog_type, what, attach_type=attach_type, attach_btf_id=func_id) as prog_fd,
            _fd(f"{what}: attach", libbpf().bpf_link_create(prog_fd, 0, attach_type, None)),
        ):
            pass
        return f"{what} loaded and attached"

    return attempt


def _check_kernel_headers() -> Check:
    release = platform.release()
    build = Path("/lib/modules") / release / "build"
    if (build / "include").is_dir():
        headers_release = ""
        with contextlib.suppress(OSError):
            headers_release = (build / "include/config/kernel.release").read_text().strip()
        if headers_release and headers_release != release:
            note = (
                f"headers are for {headers_release}, kernel is {release}: enough for BCC to "
                "compile; struct offsets come from BTF"
            )
        else:
            note = "headers match the kernel"
        return Check("kernel_headers", True, f"{build.resolve()} ({note})")
    kheaders = Path("/sys/kernel/kheaders.tar.xz")
    if kheaders.exists():
        return Check("kernel_headers", True, f"{kheaders} (CONFIG_IKHEADERS; BCC unpacks it)")
    return Check(
        "kernel_headers",
        False,
        f"no {build}/include and no {kheaders}: BCC cannot compile",
        "make up installs kernel headers (or apt-get install linux-headers-amd64 and link "
        f"them as {build})",
    )


def _check_bcc_import() -> Check:
    from snoopbus.collector.bcc_import import BccUnavailable, import_bcc

    try:
        bcc = import_bcc()
    except BccUnavailable as exc:
        return Check("bcc", False, str(exc), "install python3-bpfcc (or run make up)")
    version = getattr(bcc, "__version__", "unknown version")
    return Check("bcc", True, f"BCC {version} from {Path(bcc.__file__ or '?').parent}")


def detect() -> list[Check]:
    """Every check, in dependency order. Quick: loads tiny programs, compiles nothing."""
    btf: Btf | BtfError
    try:
        btf = Btf.load()
    except BtfError as exc:
        btf = exc
    with contextlib.ExitStack() as stack:
        if isinstance(btf, Btf):
            stack.enter_context(btf)
        return _detect(btf)


def _detect(btf: Btf | BtfError) -> list[Check]:
    privileges = _check_privileges()
    attempts: list[tuple[str, str, Callable[[], str]]] = [
        (
            "bpf_syscall",
            "the kernel or a sandbox (seccomp, lockdown, container) blocks bpf(): "
            "run on the host as root",
            _check_bpf_syscall,
        ),
        ("ringbuf", "needs Linux 5.8+ (the perf buffer is used instead)", _check_ringbuf),
        ("perf_buffer", "only needed when the ring buffer fails", _check_perf_buffer),
        ("tracepoint", "unused by the collector (raw tracepoints are)", _check_tracepoint),
        (
            "raw_tracepoint",
            "needs Linux 4.17+ (classic tracepoints are used instead)",
            _check_raw_tracepoint,
        ),
        ("tp_btf", "optional: needs BTF and Linux 5.5+", functools.partial(_check_tp_btf, btf)),
        ("kprobe", "optional (fsnotify hooks): needs CONFIG_KPROBES=y", _check_kprobe),
        (
            "fentry",
            "optional (fsnotify hooks): needs BPF trampolines and no lockdown",
            _check_btf_func_attach(
                btf, f"fentry {_FSNOTIFY}", _FSNOTIFY, _PROG_TRACING, _ATTACH_TRACE_FENTRY
            ),
        ),
        (
            "lsm",
            "optional, unused: needs CONFIG_BPF_LSM and bpf in lsm=",
            _check_btf_func_attach(
                btf, f"BPF LSM {_LSM_HOOK}", _LSM_HOOK, _PROG_LSM, _ATTACH_LSM_MAC
            ),
        ),
    ]
    checks = [privileges, _check_btf(btf)]
    checks += [_run(name, hint, fn, privileges.ok) for name, hint, fn in attempts]
    checks.insert(5, _check_tracefs())  # next to the tracepoint check it explains
    checks += [_check_kernel_headers(), _check_bcc_import()]
    return checks


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    # BCC's compiler reports on fd 2 directly, below Python: swap the fd itself.
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "wb") as sink:
            os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_bcc_compiles() -> Check:
    """Compile (and so load nothing but the compiler) a trivial program with BCC.
    Slow (LLVM): for `snoopbus doctor`, not for every collector start."""
    from snoopbus.collector.bcc_import import BccUnavailable, import_bcc

    hint = "make up installs kernel headers and BCC (python3-bpfcc)"
    try:
        bcc = import_bcc()
    except BccUnavailable as exc:
        return Check("bcc_compile", False, str(exc), hint)
    with tempfile.TemporaryDirectory(prefix="snoopbus-doctor-") as tmp:
        log = Path(tmp) / "bcc.stderr"
        try:
            with _stderr_to(log):
                program = bcc.BPF(text=b"int snoopbus_probe(void *ctx) { return 0; }")
            program.cleanup()
        except Exception as exc:  # BCC raises bare Exception on compile errors
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            why = "; ".join(lines[-3:]) or str(exc)
            return Check("bcc_compile", False, f"BCC cannot compile: {why}", hint)
    return Check("bcc_compile", True, "BCC compiled a trivial program")


def check_fsnotify_program() -> Check:
    """Compile bpf/fsnotify.bpf.c and load each variant without attaching: whether
    the deep-hook program itself is sound here, whatever the hooks allow."""
    from snoopbus.collector.bcc_import import BccUnavailable

    try:
        from snoopbus.collector import fsnotify

        results = [fsnotify.trial_load(v) for v in fsnotify.VARIANTS]
    except (BccUnavailable, BtfError) as exc:
        return Check("fsnotify_program", False, str(exc))
    detail = "; ".join(f"{r.variant}: {r.detail}" for r in results)
    if os.geteuid() == 0:
        detail = refusal(detail)
    ok = any(r.loaded for r in results)
    return Check("fsnotify_program", ok, detail,
                 "" if ok else "the fsnotify program did not load in any variant")


# --- choosing hooks ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Choice:
    hook: str | None  # None: nothing usable for this role
    reason: str


@dataclass(frozen=True, slots=True)
class HookPlan:
    exec_source: Choice
    file_source: Choice
    fsnotify: Choice
    transport: Choice

    @property
    def runnable(self) -> bool:
        """The collector can run: something for exec, files, and getting data out.
        (fsnotify deep hooks are an optional extra.)"""
        return all(c.hook for c in (self.exec_source, self.file_source, self.transport))

    def lines(self) -> list[str]:
        rows = (
            ("exec", self.exec_source),
            ("files", self.file_source),
            ("fsnotify", self.fsnotify),
            ("transport", self.transport),
        )
        return [f"{role}: {c.hook or 'none'} — {c.reason}" for role, c in rows]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def choose_hooks(checks: Iterable[Check]) -> HookPlan:
    """Best hook per role from what the kernel allowed. Pure: checks in, plan out.
    A check that is absent counts as failed."""
    by_name = {c.name: c for c in checks}

    def ok(name: str) -> bool:
        check = by_name.get(name)
        return check is not None and check.ok

    def why_not(name: str) -> str:
        check = by_name.get(name)
        return check.detail if check is not None else f"{name} not checked"

    # The collector's program (collector/bpf/snoopbus.bpf.c) is raw tracepoints alone:
    # sched_process_exec/exit, and raw_syscalls sys_enter/sys_exit filtered in BPF
    # against its table of file syscalls. Classic tracepoints are not a fallback.
    if ok("raw_tracepoint"):
        exec_source = Choice(
            "raw_tracepoint:sched_process_exec",
            "raw tracepoints work; no tracefs needed, and the new image's mm is in place",
        )
        file_source = Choice(
            "raw_tracepoint:raw_syscalls:sys_{enter,exit}",
            "raw tracepoints work; each syscall is filtered in BPF against the table of file "
            "syscalls (no tracefs needed)",
        )
    else:
        why = f"the collector's probes are raw tracepoints: {why_not('raw_tracepoint')}"
        exec_source = file_source = Choice(None, why)

    if ok("fentry"):
        fsnotify = Choice("fentry:fsnotify", "fentry works: reads fsnotify's 7th arg (the cookie)")
    elif ok("kprobe"):
        fsnotify = Choice(
            "kprobe:fsnotify",
            f"fentry fails ({why_not('fentry')}); kprobe reads the cookie from the stack",
        )
    else:
        fsnotify = Choice(
            None,
            f"no fentry ({why_not('fentry')}) and no kprobe ({why_not('kprobe')}): "
            "renames are paired from syscall tracepoints instead of fsnotify cookies",
        )

    program = by_name.get("fsnotify_program")
    if program is not None:  # doctor loaded the program itself (not attached)
        fsnotify = Choice(fsnotify.hook, f"{fsnotify.reason}; program: {program.detail}")

    if ok("ringbuf"):
        transport = Choice("ringbuf", "BPF ring buffer works: ordered, shared by all CPUs")
    elif ok("perf_buffer"):
        transport = Choice("perf_buffer", f"ring buffer fails ({why_not('ringbuf')})")
    else:
        transport = Choice(None, f"neither ring buffer nor perf buffer ({why_not('ringbuf')})")
    return HookPlan(exec_source, file_source, fsnotify, transport)
