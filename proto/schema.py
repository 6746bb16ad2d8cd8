"""The event schema, version 1: the validator, and the TypedDicts for type checkers.

Names and types come from the one table of fields (proto/fields.py);
tests/proto/test_proto_fields.py checks the TypedDicts below against it.

Validation runs on every event a consumer reads, so it is one pass over the
keys actually present, driven by tables of key -> expected kind, with the
common case (the value already has the exact expected class) costing one
dict lookup and one identity check.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal, NoReturn, TypedDict, cast

# The contract's tables; `X as X`: re-exported, importers take them from here.
from snoopbus.proto.fields import (
    ALERT_LEVELS as ALERT_LEVELS,
)
from snoopbus.proto.fields import (
    DERIVED_FILE_TYPES as DERIVED_FILE_TYPES,
)
from snoopbus.proto.fields import (
    EVENT_FIELDS,
    REQUIRED,
    within,
)
from snoopbus.proto.fields import (
    EVENT_TYPES as EVENT_TYPES,
)
from snoopbus.proto.fields import (
    FILE_TYPES as FILE_TYPES,
)
from snoopbus.proto.fields import (
    PROC_TYPES as PROC_TYPES,
)
from snoopbus.proto.fields import (
    SUMMARY_TYPES as SUMMARY_TYPES,
)

SCHEMA_VERSION: Final = 1
# Starts a path whose beginning is missing (`*_truncated: true` beside it): real
# paths are absolute, so a path that starts with this is never mistaken for one.
TRUNCATED_PREFIX: Final = "<truncated>"

Family = Literal["proc", "file"]

_FAMILY: Final[dict[str, Family]] = {
    **dict.fromkeys(PROC_TYPES, "proc"),
    **dict.fromkeys(FILE_TYPES + DERIVED_FILE_TYPES + SUMMARY_TYPES, "file"),
}


class Proc(TypedDict, total=False):
    """The process that caused an event. Absent keys mean unknown."""

    pid: int  # thread-group id (what userspace calls the pid)
    tid: int  # thread id
    ppid: int  # pid of the real parent
    uid: int  # real uid
    gid: int  # real gid
    comm: str  # task comm, at most 15 bytes in the kernel
    exe: str  # absolute path of the executable
    argv: list[str]  # whole argv of the image (exec; cached for later events)
    cwd: str  # absolute working directory
    cgroup: int  # cgroup v2 id
    container: str  # container id, when the cgroup maps to one
    # Extensions (optional):
    argv_truncated: bool  # argv was cut: at the collector's size limit, or to fit a message
    exe_truncated: bool  # exe could not be fully resolved, or was cut to fit a message
    cwd_truncated: bool  # cwd could not be fully resolved, or was cut to fit a message
    parent_exe: str  # exe of the parent (exec events), from the collector's process cache
    parent_argv: list[str]  # argv of the parent (exec events), likewise
    script: str  # a #! script the image runs, as the user ran it (exe is the interpreter)
    # Cut to fit a message (the server's max_payload); any text field X so cut has
    # X_truncated beside it, these are the ones that can be long:
    parent_argv_truncated: bool
    parent_exe_truncated: bool
    container_truncated: bool
    script_truncated: bool
    argv_redacted: bool  # secrets in argv/parent_argv were masked by the collector


class FileInfo(TypedDict, total=False):
    """The file an event is about. Absent keys mean unknown."""

    path: str  # absolute, normalised
    old_path: str  # previous path (renamed only)
    flags: int  # open(2) flags (open, create)
    mode: int  # file mode bits (create, mkdir, attrib)
    target: str  # link target (link, symlink)
    inode: int
    dev: int  # st_dev as the kernel encodes it (new_encode_dev)
    # Extensions (optional):
    # path could not be fully resolved (too deep, or the fd was gone), or was cut to
    # fit a message; either way its start is what is missing
    path_truncated: bool
    mnt_ns: int  # mount namespace inode number the path is relative to
    host_path: str  # the same file's path on the host, when mnt_ns is not the host's
    closed_by: str  # close_write not by close(): "exit", "exec" or "close_range"
    tmpfile: bool  # an O_TMPFILE file: before its link, path is its directory
    whiteout: bool  # create: the whiteout renameat2(RENAME_WHITEOUT) left
    ia32: bool  # made by an ia32 syscall (int $0x80, a 32-bit program)
    mapped: bool  # modify: a shared mapping of the file open for writing (mmap)
    node: str  # create by mknod: "regular", "fifo", "socket", "char", "block"
    xattr: str  # attrib of an extended attribute: its name ("security.capability")
    xattr_op: str  # with xattr: "set" or "remove"
    # how a name-based path was found when not from the kernel's dentries:
    # "checked", "unchecked" or "mismatch" (proto/README.md)
    path_resolution: str
    # Cut to fit a message, as path_truncated (their start is what is missing):
    old_path_truncated: bool
    target_truncated: bool
    host_path_truncated: bool


class Event(TypedDict, total=False):
    """One event map on the wire. v, id, ts, host and type are always present."""

    v: int  # schema version
    id: str  # "<instance>-<seq>", unique per host: the dedup key
    ts: int  # ns since the Unix epoch
    host: str
    type: str  # one of EVENT_TYPES, as in the subject
    proc: Proc
    file: FileInfo
    cookie: int  # shared by moved_from/moved_to of one rename; unique per host and boot
    ret: int  # syscall result where the hook sees one (negative errno)
    exit_code: int  # exit
    # Extension (optional):
    signal: int  # exit: the signal that ended the process
    via: str  # "io_uring": the operation was an io_uring request, not a syscall
    io_uring_op: str  # with via: the request's opcode name (IORING_OP_*, lower case)
    # Isolation (proto/README.md): events this one stands for; absent means 1.
    # A file event: it and count - 1 identical ones (same thread, type and file)
    # right before it. A summary: events of type `of` not delivered one by one.
    count: int
    of: str  # summary: the type it counts ("rename": moved_from + moved_to pairs)
    lost: int  # summary: events of type `of` the ring buffer had no room for
    since: int  # summary: start of the span it covers (ns since the Unix epoch)


class SchemaError(ValueError):
    """An event does not match the schema. `field` is a path like "event[2].proc.pid"."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def family(type: str) -> Family:
    """"proc" or "file" for an event type; SchemaError for an unknown one."""
    try:
        return _FAMILY[type]
    except (KeyError, TypeError):
        raise SchemaError("type", f"unknown event type {type!r}") from None


class _Nested:
    """A kind of value that needs more than a class check."""

    def __init__(self, name: str) -> None:
        self.name = name


# Each table maps key -> kind. A scalar's kind is the exact class a valid value
# has (int, str, bool), so the common case is `value.__class__ is kind`.
# Nested kinds never match a class and take the slower path.
_TEXT_LIST: Final = _Nested("array of str")
_PROC: Final = _Nested("map")
_FILE: Final = _Nested("map")
_Kind = type | _Nested

_SCALAR: Final[dict[str, _Kind]] = {
    "int": int, "uint": int, "str": str, "bool": bool, "[str]": _TEXT_LIST,
}  # fmt: skip
_MAPS: Final[dict[str, _Kind]] = {"proc": _PROC, "file": _FILE}


def _table(parent: str) -> dict[str, _Kind]:
    """key -> kind of one map's fields (proto/fields.py), in the table's order."""
    return {
        f.key: _MAPS[f.key] if f.type == "map" else _SCALAR[f.type]
        for f in within(EVENT_FIELDS, parent)
    }


_TOP_FIELDS: Final = _table("")
_PROC_FIELDS: Final = _table("proc")
_FILE_FIELDS: Final = _table("file")
_REQUIRED: Final = REQUIRED
_ID: Final = re.compile(r"[!-~]{1,1024}")

# Python classes as msgpack calls them, for error messages.
_WIRE_NAMES: Final = {
    int: "int",
    bool: "bool",
    str: "str",
    bytes: "bin",
    bytearray: "bin",
    float: "float",
    list: "array",
    tuple: "array",
    dict: "map",
    type(None): "nil",
}


def _wire_name(value: object) -> str:
    return _WIRE_NAMES.get(type(value)) or type(value).__name__


# Error paths are built only when raising: the valid case allocates nothing for them.


def _path(index: int | None, where: str) -> str:
    return ("event" if index is None else f"event[{index}]") + where


def _fail(index: int | None, where: str, key: str, reason: str) -> NoReturn:
    raise SchemaError(f"{_path(index, where)}.{key}", reason)


def _wrong(index: int | None, where: str, key: str, kind: _Kind, value: object) -> NoReturn:
    expected = kind.name if isinstance(kind, _Nested) else _WIRE_NAMES[kind]
    _fail(index, where, key, f"must be {expected}, got {_wire_name(value)}")


def _text(value: object, index: int | None, where: str, key: str) -> str:
    """A text value that is not exactly str: bin from the wire becomes str (surrogateescape)."""
    if isinstance(value, bytes | bytearray):
        return str(value, "utf-8", "surrogateescape")
    if isinstance(value, str):  # a str subclass
        return str(value)
    _wrong(index, where, key, str, value)


def _check_map(
    obj: dict[Any, Any], table: dict[str, _Kind], index: int | None, where: str
) -> None:
    """Check, and where needed convert in place, every known key of one map."""
    converted: list[tuple[str, object]] | None = None
    for key, value in obj.items():
        kind = table.get(key)
        if value.__class__ is kind or kind is None:
            continue  # valid scalar, or an unknown key: kept, ignored (forward compatibility)
        new: object
        if kind is _TEXT_LIST:
            if value.__class__ is not list:
                _wrong(index, where, key, kind, value)
            _check_text_list(value, index, where, key)
            continue
        if kind is _PROC or kind is _FILE:
            if value.__class__ is not dict:
                _wrong(index, where, key, kind, value)
            if kind is _PROC:
                _check_map(value, _PROC_FIELDS, index, ".proc")
            else:
                _check_map(value, _FILE_FIELDS, index, ".file")
            continue
        # A subclass, bin for text, or a wrong type.
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            new = int(value)
        elif kind is str:
            new = _text(value, index, where, key)
        else:
            _wrong(index, where, key, kind, value)
        if converted is None:
            converted = []
        converted.append((key, new))
    if converted:
        obj.update(converted)  # after the loop: no mutation while iterating


def _check_text_list(items: list[Any], index: int | None, where: str, key: str) -> None:
    for i, item in enumerate(items):
        if item.__class__ is not str:
            items[i] = _text(item, index, where, f"{key}[{i}]")


def validate_event(obj: object, *, index: int | None = None) -> Event:
    """Check `obj` against schema version 1 and return it as an Event.

    Known keys must have their documented types; unknown keys are kept and
    ignored, so additions in newer minor revisions do not break older
    consumers. Text that arrives as bytes (msgpack bin: not UTF-8 on the host)
    is converted to str with surrogateescape, in place. Errors are SchemaError
    naming the field, under "event[<index>]" when `index` is given, else "event".
    """
    if not isinstance(obj, dict):
        raise SchemaError(_path(index, ""), f"must be a map, got {_wire_name(obj)}")
    # The version first: a newer event may differ in anything else.
    v = obj.get("v")
    if v.__class__ is not int:
        if v is None and "v" not in obj:
            _fail(index, "", "v", "required key is missing")
        if not isinstance(v, int) or isinstance(v, bool):
            _wrong(index, "", "v", int, v)
    if v != SCHEMA_VERSION:
        if v > SCHEMA_VERSION:
            _fail(
                index,
                "",
                "v",
                f"schema version {v} is newer than this snoopbus understands "
                f"({SCHEMA_VERSION}): upgrade snoopbus",
            )
        _fail(index, "", "v", f"schema version {v} is not valid (versions start at 1)")
    _check_map(obj, _TOP_FIELDS, index, "")
    for key in _REQUIRED:
        if key not in obj:
            _fail(index, "", key, "required key is missing")
    if obj["type"] not in _FAMILY:
        _fail(index, "", "type", f"unknown event type {obj['type']!r}")
    if not _ID.fullmatch(obj["id"]):
        _fail(index, "", "id", "must be 1 to 1024 printable ASCII characters without spaces "
              "(it travels in NATS headers as the dedup key)")
    if not obj["host"]:
        _fail(index, "", "host", "must not be empty")
    return cast(Event, obj)  # checked above
