"""The fsnotify deep hooks (bpf/fsnotify.bpf.c): signature check and trial loads.

Where kprobes or fentry work, fsnotify() shows changes that no syscall names
and carries the kernel's own rename cookie as its 7th argument. This module
checks that signature in BTF and compiles and loads each variant WITHOUT
attaching, so `snoopbus doctor` and the tests can say exactly what this
kernel does with them.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from snoopbus.collector import btf as btf_mod
from snoopbus.collector import probes
from snoopbus.collector.bcc_import import import_bcc

FSNOTIFY_OFFSETS = {
    "OFF_INODE_I_INO": "inode.i_ino",
    "OFF_INODE_I_SB": "inode.i_sb",
    "OFF_SB_S_DEV": "super_block.s_dev",
    # x86-64 kprobe: arguments in registers (the kernel's calling convention;
    # pt_regs.r10 is the syscall ABI's 4th, so the function ABI's 4th is cx)
    "OFF_REGS_ARG0": "pt_regs.di",
    "OFF_REGS_ARG1": "pt_regs.si",
    "OFF_REGS_ARG2": "pt_regs.dx",
    "OFF_REGS_ARG3": "pt_regs.cx",
    "OFF_REGS_ARG4": "pt_regs.r8",
    "OFF_REGS_ARG5": "pt_regs.r9",
    "OFF_REGS_SP": "pt_regs.sp",
}

EXPECTED_PARAMS = ["mask", "data", "data_type", "dir", "file_name", "inode", "cookie"]
VARIANTS = ("kprobe", "fentry")


class _BtfParam(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32)]


def params(name: str = "fsnotify") -> list[str]:
    """Parameter names of a kernel function, from its BTF FUNC_PROTO."""
    with btf_mod.Btf.load() as b:
        func = b.type_record(b.func_id(name))
        lib = btf_mod.libbpf()
        address = lib.btf__type_by_id(b._ptr(), func.ref)
        raw = btf_mod._BtfType.from_address(address)
        vlen = raw.info & 0xFFFF
        tail = address + ctypes.sizeof(btf_mod._BtfType)
        return [b._name(p.name_off) for p in (_BtfParam * vlen).from_address(tail)]


@dataclass(frozen=True)
class TrialLoad:
    variant: str
    compiled: bool
    loaded: bool
    detail: str


def _stderr_captured() -> tuple[int, int]:
    saved = os.dup(2)
    r, w = os.pipe()
    os.dup2(w, 2)
    os.close(w)
    return saved, r


def _restore(saved: int, r: int) -> str:
    os.dup2(saved, 2)
    os.close(saved)
    with open(r, "rb", closefd=True) as f:
        return f.read().decode(errors="replace")


def trial_load(variant: str) -> TrialLoad:
    """Compiles the variant and loads its program into the kernel, never attaching."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown fsnotify variant {variant!r}")
    saved, r = _stderr_captured()  # BCC prints verifier logs and libbpf errors there
    try:
        result = _trial(variant)
    finally:
        err = _restore(saved, r)
    if not result.loaded:
        # The kernel's own words (errno, verifier) are in BCC's stderr.
        why = [ln.strip() for ln in err.splitlines()
               if "error" in ln.lower() or "permitted" in ln or "failed" in ln.lower()]
        if why:
            result = TrialLoad(result.variant, result.compiled, False,
                               f"{result.detail} ({'; '.join(why[:3])})")
    return result


def _trial(variant: str) -> TrialLoad:
    bcc = import_bcc()
    offsets = btf_mod.resolve({**probes.COMMON_OFFSETS, **probes.PROC_OFFSETS,
                               **FSNOTIFY_OFFSETS})
    defs = probes.defines(probes.ProbeLimits(), offsets)
    flags = [*probes.cflags(defs), f"-DFSNOTIFY_{variant.upper()}=1"]
    text = probes.program_text("fsnotify.bpf.c").encode()  # BCC warns on str
    if variant == "kprobe":
        try:
            b = bcc.BPF(text=text, cflags=flags)
        except Exception as exc:
            return TrialLoad(variant, False, False, f"compile failed: {exc}")
        try:
            fn = b.load_func(b"fsnotify_kprobe", bcc.BPF.KPROBE)
            return TrialLoad(variant, True, True,
                             f"compiled and verified (loaded, fd {fn.fd} closed); not attached")
        except Exception as exc:
            return TrialLoad(variant, True, False, f"load refused: {exc}")
        finally:
            b.cleanup()
    # fentry: BCC loads a KFUNC_PROBE, with its attach_btf_id, while constructing
    # BPF(), and attaches it right after; it compiled if the failure is the load.
    try:
        b = bcc.BPF(text=text, cflags=flags)
    except Exception as exc:
        compiled = "Failed to compile" not in str(exc)
        return TrialLoad(variant, compiled, False,
                         f"{'load refused' if compiled else 'compile failed'}: {exc}")
    try:
        return TrialLoad(variant, True, True, "compiled, verified and attached (then detached)")
    finally:
        b.cleanup()
