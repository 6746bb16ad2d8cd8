"""OCSF 1.x events: Process Activity (1007), File System Activity (1001), and
alerts as Detection Finding (2004). Sent as JSON lines (`ocsf+file://`,
`ocsf:-`) or JSON arrays over HTTP (`ocsf+http(s)://`, see webhook.py).

    exec -> 1007 Launch (1), actor = the parent      exit -> 1007 Terminate (2)
    create mkdir link symlink moved_to moved_in -> 1001 Create (1)
    open -> Open (14)    modify close_write -> Update (3)    attrib -> Set Attributes (6)
    delete rmdir moved_from moved_out -> Delete (4)
    renamed -> Rename (5): `file` is the old name, `file_result` the new one

Every record names what its numbers mean, as the schema's captions have
them: `class_name`, `category_name`, `activity_name`, `type_name`,
`severity`, `status`. `metadata.uid` is the event id (the dedup key for a data lake). Times are
milliseconds since the epoch (`timestamp_t`); the nanoseconds are kept in
`metadata.original_time`.
"""

from __future__ import annotations

from typing import Any, Final

from .alerts import Alert
from .sink import Item
from .text import command_line, display

OCSF_VERSION = "1.3.0"
PRODUCT = {"name": "snoopbus", "vendor_name": "snoopbus"}
PROCESS_ACTIVITY, FILE_ACTIVITY, DETECTION_FINDING = 1007, 1001, 2004
PROCESS_ACTIVITY_ID = {"exec": 1, "exit": 2}
FILE_ACTIVITY_ID = {
    "create": 1, "mkdir": 1, "link": 1, "symlink": 1, "moved_to": 1, "moved_in": 1,
    "open": 14, "modify": 3, "close_write": 3, "attrib": 6,
    "delete": 4, "rmdir": 4, "moved_from": 4, "moved_out": 4, "renamed": 5,
    "summary": 99,  # what a process did beyond its fair share, counted (`count`)
}  # fmt: skip
FILE_TYPE_ID = {"mkdir": 2, "rmdir": 2, "symlink": 7}  # else 1, regular file
SEVERITY_ID = {"informational": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
# The schema's captions for the numbers above (ocsf-schema 1.3.0).
CLASS_NAME = {PROCESS_ACTIVITY: "Process Activity", FILE_ACTIVITY: "File System Activity",
              DETECTION_FINDING: "Detection Finding"}  # fmt: skip
CATEGORY_NAME = {1: "System Activity", 2: "Findings"}
ACTIVITY_NAME = {
    PROCESS_ACTIVITY: {1: "Launch", 2: "Terminate"},
    FILE_ACTIVITY: {1: "Create", 3: "Update", 4: "Delete", 5: "Rename", 6: "Set Attributes",
                    14: "Open", 99: "Other"},
    DETECTION_FINDING: {1: "Create"},
}  # fmt: skip
SEVERITY_NAME = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}
STATUS_NAME = {1: "Success", 2: "Failure"}  # an activity's outcome
FINDING_STATUS_NAME = {1: "New"}  # a finding's triage state
# Where each field of proto/fields.py goes: the OCSF attribute its value fills,
# or why it is left out (tests/consumers/forward/test_forward_mapping.py holds these to the
# table and to what event_doc and alert_doc do). Process fields are shown as
# an exec's; a file event has them under `actor.process`.
EVENT_MAPPED: Final = {
    "id": "metadata.uid", "ts": "time", "host": "device.hostname", "type": "activity_id",
    "ret": "status_id", "exit_code": "exit_code",
    "proc.pid": "process.pid", "proc.tid": "process.tid", "proc.ppid": "process.parent_process",
    "proc.uid": "process.user.uid", "proc.comm": "process.name", "proc.exe": "process.file",
    "proc.argv": "process.cmd_line", "proc.parent_exe": "process.parent_process.file",
    "proc.parent_argv": "process.parent_process.cmd_line",
    "file.path": "file.path", "file.old_path": "file.path", "file.inode": "file.uid",
    "count": "count",
}  # fmt: skip
_NOT_SENT = "not sent (no attribute of these classes filled from it)"
EVENT_UNMAPPED: Final = dict.fromkeys((
    "v", "cookie", "signal", "via", "io_uring_op", "proc.gid", "proc.cwd", "proc.cgroup",
    "proc.container", "proc.script", "proc.argv_truncated", "proc.exe_truncated",
    "proc.cwd_truncated", "proc.parent_argv_truncated", "proc.parent_exe_truncated",
    "proc.container_truncated", "proc.script_truncated", "proc.argv_redacted", "file.flags",
    "file.mode", "file.target", "file.dev", "file.path_truncated", "file.mnt_ns",
    "file.host_path", "file.closed_by", "file.tmpfile", "file.whiteout", "file.ia32",
    "file.mapped", "file.node", "file.xattr", "file.xattr_op", "file.path_resolution",
    "file.old_path_truncated", "file.target_truncated", "file.host_path_truncated",
    "of", "lost", "since",
), _NOT_SENT)  # fmt: skip
ALERT_MAPPED: Final = {
    "id": "finding_info.uid", "ts": "time", "host": "device.hostname",
    "rule.id": "finding_info.analytic.uid", "rule.title": "finding_info.title",
    "rule.level": "severity_id", "rule.tags": "finding_info.types",
    "rule.description": "finding_info.desc", "event": "evidences",
}  # fmt: skip
ALERT_UNMAPPED: Final = {
    **dict.fromkeys((
        "v", "rule.source", "rule.status", "rule.author", "rule.references",
        "rule.falsepositives", "category", "selections", "fields", "count", "first_ts",
        "last_ts", "folded", "correlation.type", "correlation.group", "correlation.count",
        "correlation.timespan_s", "correlation.rules", "correlation.events",
    ), _NOT_SENT),
    "level": "rule.level is read first (the alerter sends both)",
}  # fmt: skip


def _file(path: str, type_id: int = 1) -> dict[str, Any]:
    shown = display(path)
    parent, _, name = shown.rpartition("/")
    return {"name": name or shown, "path": shown, "parent_folder": parent or "/",
            "type_id": type_id}  # fmt: skip


def _process(proc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if proc.get("pid") is not None:
        out["pid"] = proc["pid"]
    if proc.get("tid") is not None:
        out["tid"] = proc["tid"]
    if proc.get("comm") is not None:
        out["name"] = display(proc["comm"])
    if proc.get("argv") is not None:
        out["cmd_line"] = command_line(proc["argv"])
    if proc.get("exe") is not None:
        out["file"] = _file(proc["exe"])
    if proc.get("uid") is not None:
        out["user"] = {"uid": str(proc["uid"])}
    if proc.get("ppid") is not None:  # a process object needs a pid (or a uid)
        parent: dict[str, Any] = {"pid": proc["ppid"]}
        if proc.get("parent_exe") is not None:
            parent["file"] = _file(proc["parent_exe"])
        if proc.get("parent_argv") is not None:
            parent["cmd_line"] = command_line(proc["parent_argv"])
        out["parent_process"] = parent
    return out


def _head(class_uid: int, activity_id: int) -> dict[str, Any]:
    """What a record of this class and activity always starts with."""
    class_name, activity_name = CLASS_NAME[class_uid], ACTIVITY_NAME[class_uid][activity_id]
    return {
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": class_uid // 1000,
        "category_name": CATEGORY_NAME[class_uid // 1000],
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": f"{class_name}: {activity_name}",
        "severity_id": 1,
        "severity": SEVERITY_NAME[1],
    }


# Made once: copied into each record (its first keys), never shared.
_HEADS = {(c, a): _head(c, a) for c, activities in ACTIVITY_NAME.items() for a in activities}


def _base(class_uid: int, activity_id: int, event: dict[str, Any]) -> dict[str, Any]:
    ts = int(event.get("ts", 0))
    doc: dict[str, Any] = {
        **_HEADS[class_uid, activity_id],
        "time": ts // 1_000_000,
        "metadata": {"version": OCSF_VERSION, "product": PRODUCT,
                     "uid": display(event.get("id", "")), "original_time": str(ts)},
        "device": {"hostname": display(event.get("host", "")), "type_id": 0},
    }  # fmt: skip
    if isinstance(event.get("count"), int):  # coalesced: OCSF's count of a logical group
        doc["count"] = event["count"]
    if isinstance(event.get("ret"), int):
        doc["status_id"] = 2 if event["ret"] < 0 else 1
        doc["status"] = STATUS_NAME[doc["status_id"]]
    return doc


def event_doc(event: dict[str, Any]) -> dict[str, Any]:
    type_ = str(event.get("type", ""))
    proc = event.get("proc") or {}
    if type_ in PROCESS_ACTIVITY_ID:
        doc = _base(PROCESS_ACTIVITY, PROCESS_ACTIVITY_ID[type_], event)
        process = _process(proc)
        doc["process"] = process
        if type_ == "exec":  # the parent launched it
            doc["actor"] = {"process": process.get("parent_process", {})}
        else:
            doc["actor"] = {"process": dict(process)}
            if event.get("exit_code") is not None:
                doc["exit_code"] = event["exit_code"]
        if not doc["actor"]["process"]:
            doc["actor"] = {"user": {"uid": str(proc.get("uid", ""))}}
        return doc
    if type_ not in FILE_ACTIVITY_ID:
        raise ValueError(f"no OCSF class for event type {type_!r}")
    file = event.get("file") or {}
    doc = _base(FILE_ACTIVITY, FILE_ACTIVITY_ID[type_], event)
    type_id = FILE_TYPE_ID.get(type_, 1)
    if type_ == "renamed" and file.get("old_path") is not None:
        doc["file"] = _file(file["old_path"], type_id)
        doc["file_result"] = _file(file.get("path", ""), type_id)
    else:
        doc["file"] = _file(file.get("path", ""), type_id)
    if file.get("inode") is not None:
        doc["file"]["uid"] = str(file["inode"])
    actor = _process(proc)
    doc["actor"] = {"process": actor} if actor else {"user": {"uid": str(proc.get("uid", ""))}}
    return doc


def alert_doc(alert: Alert) -> dict[str, Any]:
    event = dict(alert.event)
    doc = _base(DETECTION_FINDING, 1, {**event, "id": alert.id, "host": alert.host,
                                        "ts": alert.ts or event.get("ts", 0)})  # fmt: skip
    doc["severity_id"] = SEVERITY_ID[alert.level]
    doc["severity"] = SEVERITY_NAME[doc["severity_id"]]
    doc["status_id"] = 1  # for a finding this is its triage state: New
    doc["status"] = FINDING_STATUS_NAME[1]
    doc["finding_info"] = {
        "uid": display(alert.id), "title": display(alert.title),
        "analytic": {"uid": display(alert.rule_id), "name": display(alert.title), "type_id": 1},
        "types": [display(t) for t in alert.tags],
    }  # fmt: skip
    if alert.description:
        doc["finding_info"]["desc"] = display(alert.description)
    if event:
        doc["evidences"] = [{"process": _process(event.get("proc") or {})}]
    return doc


def to_ocsf(item: Item) -> dict[str, Any]:
    return alert_doc(item.data) if item.kind == "alert" else event_doc(item.data)
