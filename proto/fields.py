"""The wire contract's fields, as one table: every key of an event map and of an alert map.

Plain data. What is built from it: the validator's tables (proto/schema.py),
the msgspec structs (proto/fastpath.py), the archive's columns
(consumers/archive/columns.py) and the alert map's accessors (proto/alert_map.py).
What is checked against it (tests/proto/test_proto_fields.py): the TypedDicts in
schema.py, the tables in proto/README.md, and the ECS and OCSF mappings'
coverage (each field mapped, or listed there as deliberately unmapped).

A field's `name` is its dotted path in the map ("proc.pid"); its `parent` is
the map it sits in ("" for the top level). `type` is the wire type:

    int    msgpack integer, never a bool     uint   int, never negative (u64 in the kernel)
    str    text (bin when not UTF-8)          bool   true or false
    [str]  array of text                      map    a map (its keys are fields of their own,
    float  msgpack float                             or free-form when none are listed)

`on` says which event types carry an event field, and which kinds of alert an
alert field (ALERT_KINDS). Keys not listed are extensions newer than this
table: kept and ignored (proto/README.md "Versioning").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

PROC_TYPES: Final = ("exec", "exit")
FILE_TYPES: Final = (
    "open",
    "create",
    "modify",
    "close_write",
    "delete",
    "moved_from",
    "moved_to",
    "attrib",
    "mkdir",
    "rmdir",
    "link",
    "symlink",
)
# Published by the rename pairer, not the collector.
DERIVED_FILE_TYPES: Final = ("renamed", "moved_in", "moved_out")
# Published by the collector for what a process did beyond its fair share
# (proto/README.md, "Isolation"): a file subject, proc the process, `of` the type.
SUMMARY_TYPES: Final = ("summary",)
EVENT_TYPES: Final = PROC_TYPES + FILE_TYPES + DERIVED_FILE_TYPES + SUMMARY_TYPES
# Lowest first: a level's index is its rank (proto/alert_map.py).
ALERT_LEVELS: Final = ("informational", "low", "medium", "high", "critical")
# Kinds of alert map: a Sigma rule's match, a throttle's summary of several
# (folded), a correlation rule's, and the alerter's own host-health alerts.
ALERT_KINDS: Final = ("match", "folded", "correlation", "health")

TYPES: Final = ("int", "uint", "str", "bool", "[str]", "map", "float")


@dataclass(frozen=True)
class Field:
    name: str  # dotted path in the map: "ts", "proc.pid", "rule.title"
    type: str  # one of TYPES
    on: tuple[str, ...]  # event types (or alert kinds) that carry it
    meaning: str  # one line

    @property
    def parent(self) -> str:
        """The map it sits in: "" (top level), "proc", "file", "rule", ..."""
        return self.name.rpartition(".")[0]

    @property
    def key(self) -> str:
        """Its key within that map."""
        return self.name.rpartition(".")[2]


_ALL: Final = EVENT_TYPES
_FILE: Final = FILE_TYPES + DERIVED_FILE_TYPES + SUMMARY_TYPES
_MOVES: Final = ("moved_from", "moved_to", "renamed", "moved_in", "moved_out")
# File types an io_uring request can make (proto/README.md, "... through io_uring").
_URING: Final = ("open", "create", "modify", "close_write", "delete", "rmdir", "mkdir",
                 "symlink", "link", *_MOVES)  # fmt: skip


def _f(name: str, type: str, on: tuple[str, ...], meaning: str) -> Field:
    return Field(name, type, on, meaning)


# In the order the validator and the decoder's structs take them (proto/fastpath.py).
EVENT_FIELDS: Final = (
    _f("v", "int", _ALL, "schema version, 1"),
    _f("id", "str", _ALL, '"<instance>-<seq>", unique per host: the dedup key'),
    _f("ts", "int", _ALL, "ns since the Unix epoch"),
    _f("host", "str", _ALL, "host name as reported (not the subject token)"),
    _f("type", "str", _ALL, "event type (EVENT_TYPES), as in the subject"),
    _f("proc", "map", _ALL, "the process that caused the event"),
    _f("file", "map", _FILE, "the file the event is about"),
    _f("cookie", "int", _MOVES, "shared by the halves of one rename; unique per host and boot"),
    _f("ret", "int", _FILE, "syscall result where the hook sees one (negative errno)"),
    _f("exit_code", "int", ("exit",), "exit status (128 + signal when killed)"),
    _f("signal", "int", ("exit",), "the signal that ended the process"),
    _f("via", "str", _URING, '"io_uring": the operation was an io_uring request, not a syscall'),
    _f("io_uring_op", "str", _URING, "with via: the opcode (IORING_OP_*, lower case)"),
    _f("count", "int", FILE_TYPES + SUMMARY_TYPES,
       "events this one stands for, absent = 1: a file event and count - 1 identical ones "
       "(same thread, type, file) coalesced in the kernel; a summary: events of type `of`"),
    _f("of", "str", SUMMARY_TYPES, "the type a summary counts"),
    _f("lost", "int", SUMMARY_TYPES, "of those, how many the ring buffer had no room for"),
    _f("since", "int", SUMMARY_TYPES, "start of the span a summary covers (ns since the epoch)"),
    # proc
    _f("proc.pid", "int", _ALL, "thread-group id (what userspace calls the pid)"),
    _f("proc.tid", "int", _ALL, "thread id"),
    _f("proc.ppid", "int", _ALL, "pid of the real parent"),
    _f("proc.uid", "int", _ALL, "real uid"),
    _f("proc.gid", "int", _ALL, "real gid"),
    _f("proc.comm", "str", _ALL, "task comm, at most 15 bytes in the kernel"),
    _f("proc.exe", "str", _ALL, "absolute path of the executable"),
    _f("proc.argv", "[str]", _ALL, "whole argv of the image (exec; cached for later events)"),
    _f("proc.cwd", "str", _ALL, "absolute working directory"),
    _f("proc.cgroup", "uint", _ALL, "cgroup v2 id"),
    _f("proc.container", "str", _ALL, "container id, when the cgroup maps to one"),
    _f("proc.argv_truncated", "bool", _ALL, "argv was cut: at the size limit, or to fit a message"),
    _f("proc.exe_truncated", "bool", _ALL, "exe could not be fully resolved, or was cut to fit"),
    _f("proc.cwd_truncated", "bool", _ALL, "cwd could not be fully resolved, or was cut to fit"),
    _f("proc.parent_exe", "str", ("exec",), "exe of the parent, from the process cache"),
    _f("proc.parent_argv", "[str]", ("exec",), "argv of the parent, likewise"),
    _f("proc.parent_argv_truncated", "bool", ("exec",), "parent_argv was cut to fit a message"),
    _f("proc.parent_exe_truncated", "bool", ("exec",), "parent_exe was cut to fit a message"),
    _f("proc.container_truncated", "bool", _ALL, "container was cut to fit a message"),
    _f("proc.script", "str", _ALL, "a #! script the image runs, as the user ran it"),
    _f("proc.script_truncated", "bool", _ALL, "script was cut to fit a message"),
    _f("proc.argv_redacted", "bool", _ALL, "secrets in argv/parent_argv were masked"),
    # file
    _f("file.path", "str", _FILE, "absolute, normalised path"),
    _f("file.old_path", "str", ("renamed",), "the path before the rename"),
    _f("file.flags", "int", ("open", "create"), "open(2) flags"),
    _f("file.mode", "int", ("create", "mkdir", "attrib"), "file mode bits"),
    _f("file.target", "str", ("link", "symlink"), "link target"),
    _f("file.inode", "uint", _FILE, "inode number"),
    _f("file.dev", "uint", _FILE, "st_dev as the kernel encodes it (new_encode_dev)"),
    _f("file.path_truncated", "bool", _FILE, "path's start is missing (unresolved, or cut to fit)"),
    _f("file.mnt_ns", "uint", _FILE, "mount namespace inode number the path is relative to"),
    _f("file.host_path", "str", _FILE, "the file's path on the host, when mnt_ns is another"),
    _f("file.closed_by", "str", ("close_write",), 'no close(): "exit", "exec" or "close_range"'),
    _f("file.tmpfile", "bool", _FILE, "an O_TMPFILE file: before its link, path is its directory"),
    _f("file.whiteout", "bool", ("create",), "the whiteout renameat2(RENAME_WHITEOUT) left"),
    _f("file.ia32", "bool", _FILE, "made by an ia32 syscall (int $0x80, a 32-bit program)"),
    _f("file.mapped", "bool", ("modify",), "a shared mapping of the file open for writing (mmap)"),
    _f("file.node", "str", ("create",), 'by mknod: "regular", "fifo", "socket", "char", "block"'),
    _f("file.xattr", "str", ("attrib",), 'an extended attribute\'s name ("security.capability")'),
    _f("file.xattr_op", "str", ("attrib",), 'with xattr: "set" or "remove"'),
    _f("file.path_resolution", "str", _FILE, '"checked", "unchecked" or "mismatch"'),
    _f("file.old_path_truncated", "bool", ("renamed",), "old_path was cut to fit a message"),
    _f("file.target_truncated", "bool", ("link", "symlink"), "target was cut to fit a message"),
    _f("file.host_path_truncated", "bool", _FILE, "host_path was cut to fit a message"),
)  # fmt: skip
# Keys every event has.
REQUIRED: Final = ("v", "id", "ts", "host", "type")

_A: Final = ALERT_KINDS
_SIGMA: Final = ("match", "folded", "correlation")
# The alert map the alerter publishes (consumers/alert/alerts.py, hosts.py).
ALERT_FIELDS: Final = (
    _f("v", "int", _A, "alert map version, 1 (ALERT_VERSION)"),
    _f("id", "str", _A, '"<rule id>:<event id>" (+ ":folded" for a summary; health: below)'),
    _f("ts", "int", _A, "ns: the (last) matching event's time; health: when it was raised"),
    _f("host", "str", _A, "the event's host, as reported"),
    _f("level", "str", _A, "one of ALERT_LEVELS, as in the subject"),
    _f("rule", "map", _A, "the rule that fired"),
    _f("rule.id", "str", _A, "rule id (Sigma id, or a snoopbus-host-* id)"),
    _f("rule.title", "str", _A, "rule title"),
    _f("rule.level", "str", _A, "the rule's own level"),
    _f("rule.tags", "[str]", _A, "tags as written (attack.t1059.004, snoopbus.health)"),
    _f("rule.source", "str", _A, 'where the rule came from: a file, or "builtin"'),
    _f("rule.description", "str", _A, "rule description"),
    _f("rule.status", "str", _SIGMA, "Sigma status (stable, test, ...)"),
    _f("rule.author", "str", _SIGMA, "rule author"),
    _f("rule.references", "[str]", _SIGMA, "rule references (URLs)"),
    _f("rule.falsepositives", "[str]", _SIGMA, "known false positives"),
    _f("category", "str", _A, "Sigma log source category the event was matched as"),
    _f("selections", "[str]", _A, "the named detections that held; health: the condition"),
    _f("fields", "map", _A, "{Sigma field: value} of the fields the rule reads; health: details"),
    _f("event", "map", _A, "the matching event, whole (an event map); health: empty"),
    _f("count", "int", _A, "events this alert stands for (1, or N for a summary)"),
    _f("first_ts", "int", _A, "ns: the first event counted"),
    _f("last_ts", "int", _A, "ns: the last event counted"),
    _f("folded", "bool", ("folded",), "true on a throttle summary"),
    _f("correlation", "map", ("correlation",), "the correlation that fired"),
    _f("correlation.type", "str", ("correlation",), "event_count, value_count or temporal"),
    _f("correlation.group", "map", ("correlation",), "{group-by field: value}"),
    _f("correlation.count", "int", ("correlation",), "what was counted"),
    _f("correlation.timespan_s", "float", ("correlation",), "the rule's window, seconds"),
    _f("correlation.rules", "[str]", ("correlation",), "the base rules' ids"),
    _f("correlation.events", "[str]", ("correlation",), "ids of the events counted"),
)  # fmt: skip
# Keys every alert the alerter sends has (a third party's may lack them: readers fall back).
ALERT_REQUIRED: Final = ("v", "id", "ts", "host", "level", "rule", "rule.id")


def by_name(fields: tuple[Field, ...]) -> dict[str, Field]:
    return {f.name: f for f in fields}


def within(fields: tuple[Field, ...], parent: str) -> tuple[Field, ...]:
    """The fields of one map ("" for the top level), in table order."""
    return tuple(f for f in fields if f.parent == parent)


def markdown_table(fields: tuple[Field, ...]) -> str:
    """The fields as a table for proto/README.md, which holds the alert map's
    (tests/proto/test_proto_fields.py checks it is this, and prints it when not)."""
    lines = ["| Key | Type | Carried by | Meaning |", "|---|---|---|---|"]
    for f in fields:
        on = "all" if f.on == ALERT_KINDS or f.on == EVENT_TYPES else ", ".join(f.on)
        meaning = f.meaning.replace("|", "\\|")
        lines.append(f"| `{f.name}` | {f.type} | {on} | {meaning} |")
    return "\n".join(lines) + "\n"
