"""Elastic Common Schema documents, and `elastic+http(s)://host:9200[/INDEX]` (`_bulk`).

Mapping (ECS 8.11): exec/exit -> `process.*` with `event.category: process`
and `event.type: start|end`; file events -> `file.*` with `event.category:
file` and `event.type: creation|deletion|change|access`; `event.action` is
the snoopbus type; `host.*` (with `host.os.type: linux`, which Elastic's
Linux rules select on), `user.id`, `group.id`, `container.id`. Alerts
become `event.kind: alert` with `rule.*`, `tags` and `event.severity`, plus
the matched event's fields. A rename's old path has no ECS field: it is in
`message`. Every field emitted is an ECS field of the ECS type (checked by
tests/consumers/forward/test_forward_ecs.py against the ECS reference).

Where documents go: by default the data streams `logs-snoopbus.events-default`
and `logs-snoopbus.alerts-default` (`namespace=` changes the last part),
with `data_stream.*` and `event.dataset` set to match, as Elastic's index
templates for `logs-*-*` expect. An INDEX of the form `logs-DATASET-NAMESPACE`
takes every document, fields set to match; any other INDEX is a plain index
(it may hold strftime codes, filled from the event's time in UTC) and the
documents carry no `data_stream.*`.

`_bulk` uses `create` with `_id` = the event id (alerts: the alert id), so
a batch sent twice stores each document once: a 409 on `create` counts as
accepted. Per-document 429/5xx are retried alone; other per-document errors
(mapping errors ...) dead-letter the message with Elasticsearch's answer.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from ..http import HttpClient, basic_auth
from .alerts import Alert
from .sink import Item, Permanent, Rendered, Sent, Sink, Transient
from .spec import SinkSpec
from .syslog import event_summary
from .text import command_line, display, dumps

ECS_VERSION = "8.11.0"
EVENT_TYPE = {
    "exec": "start", "exit": "end",
    "create": "creation", "mkdir": "creation", "link": "creation", "symlink": "creation",
    "moved_to": "creation", "moved_in": "creation",
    "delete": "deletion", "rmdir": "deletion", "moved_from": "deletion", "moved_out": "deletion",
    "modify": "change", "close_write": "change", "attrib": "change", "renamed": "change",
    "open": "access",
}  # fmt: skip
FILE_TYPE = {"mkdir": "dir", "rmdir": "dir", "symlink": "symlink"}
# Where each field of proto/fields.py goes: the ECS field its value fills, or
# why it is left out. tests/consumers/forward/test_forward_mapping.py holds these to the table
# and to what event_doc and alert_doc do.
EVENT_MAPPED: Final = {
    "id": "event.id", "ts": "@timestamp", "host": "host.name", "type": "event.action",
    "ret": "event.outcome", "exit_code": "process.exit_code",
    "proc.pid": "process.pid", "proc.tid": "process.thread.id", "proc.ppid": "process.parent.pid",
    "proc.uid": "user.id", "proc.gid": "group.id", "proc.comm": "process.name",
    "proc.exe": "process.executable", "proc.argv": "process.args",
    "proc.cwd": "process.working_directory", "proc.container": "container.id",
    "proc.parent_exe": "process.parent.executable", "proc.parent_argv": "process.parent.args",
    "file.path": "file.path", "file.old_path": "message", "file.mode": "file.mode",
    "file.target": "file.target_path", "file.inode": "file.inode", "file.dev": "file.device",
}  # fmt: skip
_NO_ECS = "no ECS field for it"
_MARK = "a snoopbus detail; the event's own fields say what happened"
EVENT_UNMAPPED: Final = {
    "v": "the schema's version, not the event's", "cookie": _NO_ECS, "signal": _NO_ECS,
    "via": _NO_ECS, "io_uring_op": _NO_ECS, "proc.cgroup": _NO_ECS, "proc.script": _NO_ECS,
    "count": _NO_ECS, "of": _NO_ECS, "lost": _NO_ECS, "since": _NO_ECS,
    "proc.argv_truncated": _MARK, "proc.exe_truncated": _MARK, "proc.cwd_truncated": _MARK,
    "proc.parent_argv_truncated": _MARK, "proc.parent_exe_truncated": _MARK,
    "proc.container_truncated": _MARK, "proc.script_truncated": _MARK,
    "proc.argv_redacted": _MARK, "file.flags": _NO_ECS, "file.path_truncated": _MARK,
    "file.mnt_ns": _NO_ECS, "file.host_path": _NO_ECS, "file.closed_by": _NO_ECS,
    "file.tmpfile": _MARK, "file.whiteout": _MARK, "file.ia32": _MARK, "file.mapped": _MARK,
    "file.node": _NO_ECS, "file.xattr": _NO_ECS, "file.xattr_op": _NO_ECS,
    "file.path_resolution": _MARK, "file.old_path_truncated": _MARK,
    "file.target_truncated": _MARK, "file.host_path_truncated": _MARK,
}  # fmt: skip
ALERT_MAPPED: Final = {
    "id": "event.id", "ts": "@timestamp", "host": "host.name", "rule.id": "rule.id",
    "rule.title": "rule.name", "rule.level": "event.severity", "rule.tags": "tags",
    "rule.description": "rule.description", "rule.references": "rule.reference",
    "rule.author": "rule.author", "category": "rule.category", "event": "process",
}  # fmt: skip
ALERT_UNMAPPED: Final = {
    "v": "the alert map's version", "level": "rule.level is read first (the alerter sends both)",
    "rule.source": _NO_ECS, "rule.status": _NO_ECS, "rule.falsepositives": _NO_ECS,
    "selections": _NO_ECS, "fields": "the event's fields are sent whole", "count": _NO_ECS,
    "first_ts": _NO_ECS, "last_ts": _NO_ECS, "folded": _NO_ECS,
    "correlation.type": _NO_ECS, "correlation.group": _NO_ECS, "correlation.count": _NO_ECS,
    "correlation.timespan_s": _NO_ECS, "correlation.rules": _NO_ECS,
    "correlation.events": _NO_ECS,
}  # fmt: skip
OS = {"type": "linux"}  # the ECS allowed value for every host snoopbus runs on
DATA_STREAM_NAME = re.compile(r"logs-([^-]+)-([^-]+)")


@dataclass(frozen=True)
class DataStream:
    """The data streams documents go to: `logs-<dataset>-<namespace>`."""

    events: str = "snoopbus.events"  # dataset of events
    alerts: str = "snoopbus.alerts"  # dataset of alerts
    namespace: str = "default"

    def dataset(self, kind: str) -> str:
        return self.alerts if kind == "alert" else self.events

    def name(self, kind: str) -> str:
        return f"logs-{self.dataset(kind)}-{self.namespace}"

    def fields(self, kind: str) -> dict[str, str]:
        return {"type": "logs", "dataset": self.dataset(kind), "namespace": self.namespace}


DEFAULT_STREAM = DataStream()


def data_stream_for(index: str, namespace: str | None) -> DataStream | None:
    """The data stream an INDEX names (none: the default ones); None for a plain index."""
    if not index:
        return DataStream(namespace=namespace or "default")
    match = DATA_STREAM_NAME.fullmatch(index)
    return DataStream(match[1], match[1], match[2]) if match else None


# Elastic's own scale for rule severities (Elastic Security detection rules).
SEVERITY = {"informational": 1, "low": 21, "medium": 47, "high": 73, "critical": 99}


@functools.lru_cache(maxsize=64)
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def iso_time(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    return f"{_second(seconds)}.{rest:09d}Z"


def _shown(value: str) -> str:
    """display(value), its common case (ASCII, shown as it is) without a call."""
    return value if value.isascii() else display(value)


def _args(argv: list[Any]) -> tuple[list[Any], str]:
    """`args` and `command_line` of an argv: one check of it all for the common case."""
    try:
        joined = " ".join(argv)
    except TypeError:  # an element that is not text
        joined = ""
    else:
        if joined.isascii():
            return list(argv), joined
    return [display(a) for a in argv], command_line(argv)


def _process(proc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for src, dst in (("pid", "pid"), ("comm", "name"), ("exe", "executable"),
                     ("cwd", "working_directory")):  # fmt: skip
        v = proc.get(src)
        if v is not None:
            out[dst] = (v if v.isascii() else display(v)) if isinstance(v, str) else v
    tid = proc.get("tid")
    if tid is not None:
        out["thread"] = {"id": tid}
    argv = proc.get("argv")
    if argv is not None:
        args, line = _args(argv)
        out["args"] = args
        out["args_count"] = len(argv)
        out["command_line"] = line
    parent: dict[str, Any] = {}
    if proc.get("ppid") is not None:
        parent["pid"] = proc["ppid"]
    if proc.get("parent_exe") is not None:
        parent["executable"] = display(proc["parent_exe"])
        parent["name"] = parent["executable"].rpartition("/")[2]  # what Elastic's rules match
    if proc.get("parent_argv") is not None:
        parent["args"] = [display(a) for a in proc["parent_argv"]]
        parent["args_count"] = len(proc["parent_argv"])
        parent["command_line"] = command_line(proc["parent_argv"])
    if parent:
        out["parent"] = parent
    return out


def _file(event: dict[str, Any]) -> dict[str, Any]:
    file = event.get("file") or {}
    out: dict[str, Any] = {}
    if file.get("path") is not None:
        path = display(file["path"])
        directory, _, name = path.rpartition("/")
        out.update(path=path, name=name, directory=directory or "/")
        if "." in name.strip("."):
            out["extension"] = name.rsplit(".", 1)[1]
    if file.get("target") is not None:
        out["target_path"] = display(file["target"])
    if file.get("inode") is not None:
        out["inode"] = str(file["inode"])
    if file.get("mode") is not None:
        out["mode"] = f"{file['mode'] & 0o7777:04o}"
    if file.get("dev") is not None:
        out["device"] = str(file["dev"])
    out["type"] = FILE_TYPE.get(event.get("type", ""), "file")
    return out


def event_doc(event: dict[str, Any], stream: DataStream | None = DEFAULT_STREAM) -> dict[str, Any]:
    type_ = str(event.get("type", ""))
    proc = event.get("proc") or {}
    is_proc = type_ in ("exec", "exit")
    host = display(event.get("host", ""))
    ev: dict[str, Any] = {
        "kind": "event", "category": ["process" if is_proc else "file"],
        "type": [EVENT_TYPE.get(type_, "info")], "action": type_, "id": str(event.get("id", "")),
        "module": "snoopbus", "dataset": stream.events if stream else "snoopbus.events",
    }  # fmt: skip
    if isinstance(event.get("ret"), int):
        ev["outcome"] = "failure" if event["ret"] < 0 else "success"
    doc: dict[str, Any] = {
        "@timestamp": iso_time(int(event.get("ts", 0))),
        "ecs": {"version": ECS_VERSION},
        "event": ev,
        "host": {"name": host, "hostname": host, "os": OS},
        "message": _shown(event_summary(event)),
    }
    if stream is not None:
        doc["data_stream"] = stream.fields("event")
    process = _process(proc)
    if type_ == "exit" and event.get("exit_code") is not None:
        process["exit_code"] = event["exit_code"]
    if process:
        doc["process"] = process
    if proc.get("uid") is not None:
        doc["user"] = {"id": str(proc["uid"])}
    if proc.get("gid") is not None:
        doc["group"] = {"id": str(proc["gid"])}
    if proc.get("container"):
        doc["container"] = {"id": display(proc["container"])}
    if not is_proc:
        doc["file"] = _file(event)
    return doc


def alert_doc(alert: Alert, stream: DataStream | None = DEFAULT_STREAM) -> dict[str, Any]:
    event = dict(alert.event)
    doc: dict[str, Any] = (
        event_doc(event, stream) if event else {"ecs": {"version": ECS_VERSION}, "event": {}}
    )
    if alert.ts is not None:
        doc["@timestamp"] = iso_time(alert.ts)
    doc["host"] = {"name": display(alert.host), "hostname": display(alert.host), "os": OS}
    doc["event"].update(kind="alert", id=alert.id, severity=SEVERITY[alert.level],
                        dataset=stream.alerts if stream else "snoopbus.alerts",
                        module="snoopbus")  # fmt: skip
    if stream is not None:
        doc["data_stream"] = stream.fields("alert")
    doc["rule"] = {"id": display(alert.rule_id), "name": display(alert.title), "ruleset": "sigma"}
    if alert.description:
        doc["rule"]["description"] = display(alert.description)
    if alert.category:
        doc["rule"]["category"] = display(alert.category)
    if alert.references:
        doc["rule"]["reference"] = [display(r) for r in alert.references]
    if alert.author:
        doc["rule"]["author"] = [display(alert.author)]
    if alert.tags:
        doc["tags"] = [display(t) for t in alert.tags]
    doc["message"] = display(f"{alert.level} alert: {alert.title}")
    return doc


def to_ecs(item: Item, stream: DataStream | None = DEFAULT_STREAM) -> dict[str, Any]:
    return alert_doc(item.data, stream) if item.kind == "alert" else event_doc(item.data, stream)


def ecs_formatter(spec: SinkSpec) -> Callable[[Item], dict[str, Any]]:
    """ECS documents for where this sink sends them (ecs+file: the default streams)."""
    index = spec.path.strip("/") if spec.format == "elastic" else ""
    stream = data_stream_for(index, spec.options.get("namespace"))
    return lambda item: to_ecs(item, stream)


def _loads(body: bytes) -> Any:
    """A _bulk answer (an item per document sent): orjson reads one in half the
    time json does (0.9 against 1.8 us an item, measured); what orjson refuses
    (a lone surrogate escaped in an error's reason) the standard library reads."""
    try:
        return orjson.loads(body)
    except ValueError:  # orjson.JSONDecodeError is a ValueError
        return json.loads(body)


class BulkSink(Sink):
    scheme = "elastic+http"
    delivery = "exactly once (create with _id = event id; a data stream: within a backing index)"

    def __init__(self, spec: SinkSpec) -> None:
        super().__init__(spec)
        headers = {}
        if spec.api_key:
            headers["Authorization"] = f"ApiKey {spec.api_key}"
        elif spec.username is not None:
            headers["Authorization"] = basic_auth(spec.username, spec.password or "")
        self.index = spec.path.strip("/")
        self.stream = data_stream_for(self.index, spec.options.get("namespace"))
        self.http = HttpClient(
            spec.base_url, ssl_context=spec.ssl_context(), size=spec.concurrency,
            timeout=spec.timeout, headers=headers, proxy=spec.proxy,
        )  # fmt: skip

    def index_for(self, item: Item, doc: dict[str, Any]) -> str:
        if self.stream is not None:
            return self.stream.name(item.kind)
        if "%" not in self.index:
            return self.index
        return self._index_at(doc["@timestamp"][:19])

    @functools.lru_cache(maxsize=256)  # noqa: B019 -- one sink per process lifetime
    def _index_at(self, second: str) -> str:
        return datetime.strptime(second, "%Y-%m-%dT%H:%M:%S").strftime(self.index)

    def render(self, item: Item) -> bytes:
        doc = to_ecs(item, self.stream)
        action = {"create": {"_index": self.index_for(item, doc), "_id": display(item.id)}}
        return dumps(action) + b"\n" + dumps(doc) + b"\n"

    async def send(self, batch: list[Rendered]) -> Sent:
        body = b"".join(lines for _, lines in batch)
        response = await self.http.post("/_bulk", body, "application/x-ndjson")
        response.raise_for_status()
        try:
            answer = _loads(response.body)
            results = answer["items"]
        except (ValueError, KeyError, TypeError):
            raise Transient(f"_bulk answer is not JSON with items: {response.text(200)}") from None
        if len(results) != len(batch):
            raise Permanent(f"_bulk answered {len(results)} items for {len(batch)} sent")
        sent = Sent()
        if not answer.get("errors"):
            return sent
        for index, result in enumerate(results):
            (outcome,) = result.values()
            status = int(outcome.get("status", 500))
            if status < 300 or status == 409:  # 409 on create: stored already
                continue
            error = outcome.get("error") or {}
            why = f"HTTP {status} {error.get('type', '')}: {error.get('reason', '')}".strip()
            if status == 429 or status >= 500:
                sent.retry[index] = why
            else:
                sent.rejected[index] = why
        return sent

    async def close(self) -> None:
        await self.http.close()
