"""io_uring coverage: the fields the io_uring probes read (bpf/uring.h), and
which operations snoopbus reports on this kernel (`snoopbus doctor`).

The io_uring structs are internal to the kernel and change between versions,
so these fields are optional: when one does not resolve from BTF the probes
load without the io_uring hooks (URING=0) and doctor says which operations
go unseen, rather than the collector refusing to run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from snoopbus.collector.btf import Btf, BtfError, Kind

# -D name -> BTF member path (offsets within the request's command data are
# relative to io_kiocb.cmd, where io_kiocb_to_cmd() puts them).
URING_FIELDS: Mapping[str, str] = {
    "OFF_REQ_CMD": "io_kiocb.cmd",
    "OFF_REQ_OPCODE": "io_kiocb.opcode",
    "OFF_REQ_FLAGS": "io_kiocb.flags",
    "OFF_REQ_CQE_FD": "io_kiocb.cqe.fd",
    "OFF_REQ_CTX": "io_kiocb.ctx",
    "OFF_CTX_FILES_NR": "io_ring_ctx.file_table.data.nr",
    "OFF_CTX_FILES_NODES": "io_ring_ctx.file_table.data.nodes",
    "OFF_RSRC_NODE_FILE_PTR": "io_rsrc_node.file_ptr",
    "OFF_FILENAME_NAME": "filename.name",
    "OFF_CQE_RES": "io_uring_cqe.res",
    "OFF_TASK_FLAGS": "task_struct.flags",
    "OFF_TASK_GROUP_LEADER": "task_struct.group_leader",
    "OFF_TASK_COMM": "task_struct.comm",
    "OFF_IO_OPEN_DFD": "io_open.dfd",
    "OFF_IO_OPEN_SLOT": "io_open.file_slot",
    "OFF_IO_OPEN_FILENAME": "io_open.filename",
    "OFF_IO_OPEN_FLAGS": "io_open.how.flags",
    "OFF_IO_OPEN_MODE": "io_open.how.mode",
    "OFF_IO_CLOSE_FD": "io_close.fd",
    "OFF_IO_CLOSE_SLOT": "io_close.file_slot",
    "OFF_IO_RENAME_OLD_DFD": "io_rename.old_dfd",
    "OFF_IO_RENAME_NEW_DFD": "io_rename.new_dfd",
    "OFF_IO_RENAME_OLDPATH": "io_rename.oldpath",
    "OFF_IO_RENAME_NEWPATH": "io_rename.newpath",
    "OFF_IO_RENAME_FLAGS": "io_rename.flags",
    "OFF_IO_UNLINK_DFD": "io_unlink.dfd",
    "OFF_IO_UNLINK_FLAGS": "io_unlink.flags",
    "OFF_IO_UNLINK_FILENAME": "io_unlink.filename",
    "OFF_IO_MKDIR_DFD": "io_mkdir.dfd",
    "OFF_IO_MKDIR_MODE": "io_mkdir.mode",
    "OFF_IO_MKDIR_FILENAME": "io_mkdir.filename",
    "OFF_IO_LINK_OLD_DFD": "io_link.old_dfd",
    "OFF_IO_LINK_NEW_DFD": "io_link.new_dfd",
    "OFF_IO_LINK_OLDPATH": "io_link.oldpath",
    "OFF_IO_LINK_NEWPATH": "io_link.newpath",
    "OFF_IO_LINK_FLAGS": "io_link.flags",
}

# The raw tracepoints the probes attach to (BTF names them btf_trace_<tp>).
TRACEPOINTS = ("io_uring_submit_req", "io_uring_complete")


@dataclass(frozen=True)
class Op:
    name: str  # IORING_OP_<NAME>, lower case
    opcode: int  # enum io_uring_op (uapi: stable)
    events: str  # what snoopbus reports
    how: str  # where the path comes from
    fields: tuple[str, ...]  # the -D names it needs beyond the request's own


_REQ = ("OFF_REQ_CMD", "OFF_REQ_OPCODE", "OFF_REQ_FLAGS", "OFF_FILENAME_NAME")
_FD = ("OFF_REQ_CQE_FD", "OFF_REQ_CTX", "OFF_CTX_FILES_NR", "OFF_CTX_FILES_NODES",
       "OFF_RSRC_NODE_FILE_PTR")
_OPEN = ("OFF_IO_OPEN_DFD", "OFF_IO_OPEN_SLOT", "OFF_IO_OPEN_FILENAME", "OFF_IO_OPEN_FLAGS",
         "OFF_IO_OPEN_MODE", "OFF_CQE_RES", *_FD)
_LINK = ("OFF_IO_LINK_OLD_DFD", "OFF_IO_LINK_NEW_DFD", "OFF_IO_LINK_OLDPATH",
         "OFF_IO_LINK_NEWPATH", "OFF_IO_LINK_FLAGS")
_WRITE_HOW = "the file its fd or fixed slot names at submit; first write per fd"

OPS: tuple[Op, ...] = (
    Op("openat", 18, "create / open", "the opened file at completion (fd or fixed slot)", _OPEN),
    Op("openat2", 28, "create / open", "the opened file at completion (fd or fixed slot)", _OPEN),
    Op("write", 23, "modify", _WRITE_HOW, _FD),
    Op("writev", 2, "modify", _WRITE_HOW, _FD),
    Op("write_fixed", 5, "modify", _WRITE_HOW, _FD),
    Op("writev_fixed", 61, "modify", _WRITE_HOW, _FD),
    Op("fallocate", 17, "modify", _WRITE_HOW, _FD),
    Op("ftruncate", 55, "modify", _WRITE_HOW, _FD),
    Op("splice", 30, "modify (output file)", _WRITE_HOW, _FD),
    Op("tee", 33, "modify (output file)", _WRITE_HOW, _FD),
    Op("close", 19, "close_write", "the fd or fixed slot's file at submit",
       ("OFF_IO_CLOSE_FD", "OFF_IO_CLOSE_SLOT", *_FD)),
    Op("renameat", 35, "moved_from + moved_to", "the request's two names (struct filename)",
       ("OFF_IO_RENAME_OLD_DFD", "OFF_IO_RENAME_NEW_DFD", "OFF_IO_RENAME_OLDPATH",
        "OFF_IO_RENAME_NEWPATH", "OFF_IO_RENAME_FLAGS")),
    Op("unlinkat", 36, "delete / rmdir", "the request's name (struct filename)",
       ("OFF_IO_UNLINK_DFD", "OFF_IO_UNLINK_FLAGS", "OFF_IO_UNLINK_FILENAME")),
    Op("mkdirat", 37, "mkdir", "the request's name (struct filename)",
       ("OFF_IO_MKDIR_DFD", "OFF_IO_MKDIR_MODE", "OFF_IO_MKDIR_FILENAME")),
    Op("symlinkat", 38, "symlink", "the request's link name and target (struct filename)",
       _LINK),
    Op("linkat", 39, "link", "the request's two names (struct filename)", _LINK),
)
OP_NAMES = {op.opcode: op.name for op in OPS}
# Operations that change files and are not hooked: doctor lists them as unseen.
UNHOOKED: tuple[tuple[str, str], ...] = (
    ("setxattr", "attrib: not hooked (io_uring's xattr requests make no event)"),
    ("fsetxattr", "attrib: not hooked (io_uring's xattr requests make no event)"),
)


@dataclass(frozen=True)
class Coverage:
    op: Op
    seen: bool
    detail: str  # why not, when not seen


def resolve(btf: Btf) -> tuple[dict[str, int], dict[str, str]]:
    """URING_FIELDS' offsets, and the error of each that does not resolve."""
    offsets, errors = {}, {}
    for name, path in URING_FIELDS.items():
        try:
            offsets[name] = btf.offset(path)
        except BtfError as exc:
            errors[name] = str(exc)
    return offsets, errors


def coverage(errors: Mapping[str, str], attach_errors: Mapping[str, str]) -> list[Coverage]:
    """Per operation: whether the probes see it, and if not, why. `errors`:
    URING_FIELDS that did not resolve (resolve()); `attach_errors`: the
    TRACEPOINTS a program could not attach to, with why. Pure."""
    out = []
    for op in OPS:
        bad = [f"{URING_FIELDS[f]}: {errors[f]}" for f in (*_REQ, *op.fields) if f in errors]
        if attach_errors:
            out.append(Coverage(op, False, "; ".join(attach_errors.values())))
        elif errors:
            # One missing field leaves the whole io_uring block out (URING=0).
            out.append(Coverage(op, False, "; ".join(bad) or
                                f"the io_uring hooks are off: {len(errors)} fields "
                                "do not resolve from BTF"))
        else:
            out.append(Coverage(op, True, ""))
    return out


def kernel_coverage() -> tuple[list[Coverage], str]:
    """coverage() measured on this kernel, and who may use io_uring at all
    (the kernel.io_uring_disabled sysctl)."""
    from snoopbus.collector.capabilities import check_raw_tracepoint_attach

    try:
        with Btf.load() as btf:
            _, errors = resolve(btf)
            missing = {tp: f"no tracepoint {tp} in BTF" for tp in TRACEPOINTS
                       if btf.find_type(f"btf_trace_{tp}", Kind.TYPEDEF) is None}
    except BtfError as exc:
        errors, missing = dict.fromkeys(URING_FIELDS, str(exc)), {}
    attach = {tp: check for tp in TRACEPOINTS if tp not in missing
              for check in [check_raw_tracepoint_attach(tp)]}
    attach_errors = {**missing, **{tp: c.detail for tp, c in attach.items() if not c.ok}}
    return coverage(errors, attach_errors), io_uring_users()


def io_uring_users() -> str:
    """kernel.io_uring_disabled, in words (absent before Linux 6.6: everyone)."""
    try:
        value = Path("/proc/sys/kernel/io_uring_disabled").read_text().strip()
    except OSError:
        return "every user may create io_uring rings (no kernel.io_uring_disabled)"
    return {
        "0": "every user may create io_uring rings (kernel.io_uring_disabled=0)",
        "1": "only root and the kernel.io_uring_group may create rings "
             "(kernel.io_uring_disabled=1)",
        "2": "io_uring is disabled for everyone (kernel.io_uring_disabled=2)",
    }.get(value, f"kernel.io_uring_disabled={value}")
