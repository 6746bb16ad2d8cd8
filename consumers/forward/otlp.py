"""`otlp+http(s)://host:4318[/v1/logs]`: OpenTelemetry logs over OTLP/HTTP, protobuf.

Each event or alert is one LogRecord of an `ExportLogsServiceRequest`
(opentelemetry-proto's own messages), grouped by host: one ResourceLogs per
host with `host.name`, `os.type: linux`, `service.name: snoopbus`, and the
scope `snoopbus`. A record carries:

- `time_unix_nano` and `observed_time_unix_nano`: the event's kernel time;
- `severity_number`/`severity_text`: INFO for events; alerts by level
  (informational INFO, low WARN, medium WARN2, high ERROR, critical FATAL);
- `event_name`: `snoopbus.<type>` (`snoopbus.alert` for alerts); `body`:
  the one-line summary the syslog MSG has;
- attributes in the semantic conventions' names where they have one
  (`process.pid`, `process.parent_pid`, `process.executable.path`,
  `process.command_line`, `process.command_args`, `process.user.id`,
  `process.exit.code`, `thread.id`, `container.id`, `file.path`, `file.name`,
  `file.directory`, `file.symbolic_link.target_path`, `file.inode`,
  `log.record.uid` = the event id, `security_rule.*` for an alert's rule), the
  rest as `snoopbus.*` (`snoopbus.type`, `snoopbus.file.old_path`, `snoopbus.ret`,
  `snoopbus.alert.level`, `snoopbus.alert.tags` ...).

Text that was not UTF-8 is shown as `\\xNN` (protobuf strings are UTF-8);
values are length-prefixed, so no value can end a record or add an attribute.

Delivery, as the OTLP/HTTP specification has it: 2xx accepts; 429, 502,
503 and 504 (and connection errors, timeouts) are retried with back-off,
Retry-After honoured; any other status refuses the batch for good (dead
letters, with the answer). A 2xx with `partial_success.rejected_log_records`
is counted (`dropped` in the sink's stats) and logged with the receiver's
message: the receiver does not say which records, so none can be named to
retry. At least once: `log.record.uid` is the key to dedup on.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from ..http import HttpClient, basic_auth
from .alerts import Alert
from .sink import Item, Rendered, Sent, Sink
from .spec import SinkSpec
from .syslog import event_summary
from .text import command_line, display

INFO = 9
SEVERITY = {"informational": 9, "low": 13, "medium": 14, "high": 17, "critical": 21}
SEVERITY_TEXT = {9: "INFO", 13: "WARN", 14: "WARN2", 17: "ERROR", 21: "FATAL"}
# What the OTLP/HTTP specification says may be retried.
RETRYABLE = frozenset({429, 502, 503, 504})
SCOPE = InstrumentationScope(name="snoopbus")
_LOG_RECORDS = ScopeLogs.DESCRIPTOR.fields_by_name["log_records"].number


# LogRecords are written in protobuf's wire format here, field by field (the
# numbers are opentelemetry-proto's, read from its descriptors): building one
# message object per attribute cost 5x the CPU (8k against 40k+ events per
# CPU-second, tests.bench.forward). The envelope too (each host's resource
# and the scope serialised once by the official messages), in field number
# order: the bytes are the official serialiser's, without parsing the records
# back into messages; the tests decode everything with the official definitions.
_LR = LogRecord.DESCRIPTOR.fields_by_name
_KV = KeyValue.DESCRIPTOR.fields_by_name
_AV = AnyValue.DESCRIPTOR.fields_by_name
_ARRAY_VALUES = ArrayValue.DESCRIPTOR.fields_by_name["values"].number


_SMALL = [bytes((i,)) for i in range(128)]


def _varint(n: int) -> bytes:
    if 0 <= n < 128:
        return _SMALL[n]  # most tags and lengths
    n &= 0xFFFFFFFFFFFFFFFF  # negative int64: two's complement, ten bytes
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited protobuf field: tag, varint length, bytes."""
    return _tag(number, 2) + _varint(len(data)) + data


_STRING = _tag(_AV["string_value"].number, 2)
_INT = _tag(_AV["int_value"].number, 0)
_BOOL = _tag(_AV["bool_value"].number, 0)
_DOUBLE = _tag(_AV["double_value"].number, 1)
_ARRAY_VALUE = _tag(_ARRAY_VALUES, 2)


def _value(value: Any) -> bytes:
    """An AnyValue, serialised."""
    if type(value) is str:  # most values, and every argv element
        text = (value if value.isascii() else display(value)).encode("utf-8")
        return _STRING + _varint(len(text)) + text
    if isinstance(value, bool):
        return _BOOL + (b"\x01" if value else b"\x00")
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return _INT + _varint(value)
    if isinstance(value, float):
        return _DOUBLE + struct.pack("<d", value)
    if isinstance(value, list | tuple):
        array = b"".join(_ARRAY_VALUE + _varint(len(v)) + v for v in map(_value, value))
        return _field(_AV["array_value"].number, array)
    text = display(value).encode("utf-8")
    return _STRING + _varint(len(text)) + text


_KEY, _VALUE = _KV["key"].number, _KV["value"].number
_ATTRIBUTE = _LR["attributes"].number


@functools.lru_cache(maxsize=256)
def _key(key: str) -> bytes:
    return _field(_KEY, key.encode())


_ATTRIBUTE_TAG, _VALUE_TAG = _tag(_ATTRIBUTE, 2), _tag(_VALUE, 2)
# Keys whose values are new in almost every record: not worth a cache slot.
_UNIQUE = frozenset({"log.record.uid", "snoopbus.event.id", "file.path", "file.name",
                     "file.inode", "snoopbus.alert.count"})  # fmt: skip


def _attribute(key: str, v: Any) -> bytes:
    """One KeyValue as a LogRecord's attributes field."""
    value = _value(v)
    body = _key(key) + _VALUE_TAG + _varint(len(value)) + value
    return _ATTRIBUTE_TAG + _varint(len(body)) + body


# Most attributes repeat from record to record (type, uid, comm, exe, cwd,
# argv, parent, directory): each is encoded once and kept, while small, in a
# cache cleared when full (bounded by entries and their size, not by traffic).
_CACHE: dict[tuple[str, type, Any], bytes] = {}
_CACHE_ENTRIES, _CACHE_LARGEST = 4096, 1024


def _repeated_attribute(key: str, v: Any) -> bytes:
    slot = (key, type(v), v)  # the type: True and 1 are equal, encoded differently
    try:
        out = _CACHE.get(slot)  # a miss is common: no KeyError to raise and catch
    except TypeError:  # unhashable
        return _attribute(key, v)
    if out is not None:
        return out
    out = _attribute(key, v)
    if len(out) <= _CACHE_LARGEST:
        if len(_CACHE) >= _CACHE_ENTRIES:
            _CACHE.clear()
        _CACHE[slot] = out
    return out


def _attributes(pairs: Sequence[tuple[str, Any]]) -> bytes:
    return b"".join(
        _attribute(key, v) if key in _UNIQUE else _repeated_attribute(key, v)
        for key, v in pairs if v is not None
    )  # fmt: skip


def _event_pairs(event: dict[str, Any]) -> list[tuple[str, Any]]:
    proc = event.get("proc") or {}
    file = event.get("file") or {}
    argv = proc.get("argv")
    pairs: list[tuple[str, Any]] = [
        ("log.record.uid", event.get("id")), ("snoopbus.type", event.get("type")),
        ("snoopbus.ret", event.get("ret")),
        ("process.pid", proc.get("pid")), ("thread.id", proc.get("tid")),
        ("process.parent_pid", proc.get("ppid")), ("process.user.id", proc.get("uid")),
        ("snoopbus.proc.gid", proc.get("gid")), ("process.executable.name", proc.get("comm")),
        ("process.executable.path", proc.get("exe")),
        ("process.working_directory", proc.get("cwd")),
        ("process.command_line", command_line(argv) if argv is not None else None),
        ("process.command_args", tuple(argv) if argv is not None else None),
        ("snoopbus.proc.parent_exe", proc.get("parent_exe")),
        ("container.id", proc.get("container")), ("process.exit.code", event.get("exit_code")),
    ]  # fmt: skip
    if file:
        path = display(file["path"]) if file.get("path") is not None else None
        directory, _, name = (path or "").rpartition("/")
        pairs += [
            ("file.path", path), ("file.name", name if path else None),
            ("file.directory", (directory or "/") if path else None),
            ("snoopbus.file.old_path", file.get("old_path")),
            ("file.symbolic_link.target_path", file.get("target")),
            ("file.inode", str(file["inode"]) if file.get("inode") is not None else None),
        ]  # fmt: skip
    return pairs


# An event's LogRecord is written by straight-line code (`_event_attributes`),
# with the common values (short text, small non-negative ints, argv of short
# text) framed directly: every length then fits one byte. Anything else goes
# through `_attribute`, and alerts through `_event_pairs`/`_attributes`, which
# is also what tests/consumers/forward/test_forward_otlp.py holds the writer
# to, byte for byte. Measured (render alone, tests.bench.forward's events, one
# run): 13.9 us a record before, 6.7 after.
_HEAD: dict[str, bytes] = {}  # key -> the KeyValue's key field and value tag


def _head(key: str) -> bytes:
    head = _HEAD.get(key)
    if head is None:
        head = _HEAD[key] = _key(key) + _VALUE_TAG
    return head


def _attr(key: str, v: Any) -> bytes:
    """`_attribute(key, v)`, its common cases framed here."""
    if type(v) is str:
        text = (v if v.isascii() else display(v)).encode("utf-8")
        head = _head(key)
        n = len(text)
        size = len(head) + n + 3  # the KeyValue: head, value length, string tag, length, text
        if size < 128:
            return b"".join((_ATTRIBUTE_TAG, _SMALL[size], head, _SMALL[n + 2], _STRING,
                             _SMALL[n], text))  # fmt: skip
    elif type(v) is int and 0 <= v < 2**63:
        value = _INT + _varint(v)
        head = _head(key)
        size = len(head) + len(value) + 1
        if size < 128:
            return b"".join((_ATTRIBUTE_TAG, _SMALL[size], head, _SMALL[len(value)], value))
    return _attribute(key, v)


_ARRAY = _tag(_AV["array_value"].number, 2)


def _args_attr(key: str, argv: list[Any]) -> bytes:
    """`_attribute(key, tuple(argv))`, for argv of short text framed here."""
    parts: list[bytes] = []
    for arg in argv:
        if type(arg) is not str:
            return _attribute(key, tuple(argv))
        text = arg.encode("utf-8") if arg.isascii() else display(arg).encode("utf-8")
        n = len(text)
        if n > 123:
            return _attribute(key, tuple(argv))
        parts += (_ARRAY_VALUE, _SMALL[n + 2], _STRING, _SMALL[n], text)
    array = b"".join(parts)
    value = _ARRAY + _varint(len(array)) + array
    body = _head(key) + _varint(len(value)) + value
    return _ATTRIBUTE_TAG + _varint(len(body)) + body


# Values that repeat from record to record (a process's uid, name, executable,
# directory ...): each key's written attributes kept, while few, by value.
_SEEN: dict[str, dict[str | int, bytes]] = {}
_SEEN_MAX = 1024  # per key; cleared when full: bounded by entries, not by traffic


def _seen_attr(key: str, v: Any) -> bytes:
    """`_attr(key, v)`, kept for the next record with the same value."""
    if type(v) is not str and type(v) is not int:  # True == 1, written apart: not kept
        return _attr(key, v)
    seen = _SEEN.get(key)
    if seen is None:
        seen = _SEEN[key] = {}
    out = seen.get(v)
    if out is None:
        out = _attr(key, v)
        if len(out) <= 256:
            if len(seen) >= _SEEN_MAX:
                seen.clear()
            seen[v] = out
    return out


_PROC_ATTRIBUTES = (("process.pid", "pid", _attr), ("thread.id", "tid", _attr),
                    ("process.parent_pid", "ppid", _seen_attr),
                    ("process.user.id", "uid", _seen_attr),
                    ("snoopbus.proc.gid", "gid", _seen_attr),
                    ("process.executable.name", "comm", _seen_attr),
                    ("process.executable.path", "exe", _seen_attr),
                    ("process.working_directory", "cwd", _seen_attr))  # fmt: skip


def _event_attributes(event: dict[str, Any]) -> bytes:
    """`_attributes(_event_pairs(event))`, written directly."""
    proc = event.get("proc") or {}
    file = event.get("file") or {}
    out = []
    v = event.get("id")
    if v is not None:
        out.append(_attr("log.record.uid", v))
    v = event.get("type")
    if v is not None:
        out.append(_seen_attr("snoopbus.type", v))
    v = event.get("ret")
    if v is not None:
        out.append(_attr("snoopbus.ret", v))
    for key, name, write in _PROC_ATTRIBUTES:
        v = proc.get(name)
        if v is not None:
            out.append(write(key, v))
    argv = proc.get("argv")
    if argv is not None:
        out.append(_attr("process.command_line", command_line(argv)))
        out.append(_args_attr("process.command_args", argv))
    for key, v in (("snoopbus.proc.parent_exe", proc.get("parent_exe")),
                   ("container.id", proc.get("container")),
                   ("process.exit.code", event.get("exit_code"))):  # fmt: skip
        if v is not None:
            out.append(_seen_attr(key, v))
    if file:
        raw = file.get("path")
        if raw is not None:
            path = display(raw)
            out.append(_attr("file.path", path))
            if path:
                directory, _, name = path.rpartition("/")
                out += (_attr("file.name", name), _seen_attr("file.directory", directory or "/"))
        for key, v in (("snoopbus.file.old_path", file.get("old_path")),
                       ("file.symbolic_link.target_path", file.get("target"))):  # fmt: skip
            if v is not None:
                out.append(_attr(key, v))
        if file.get("inode") is not None:
            out.append(_attr("file.inode", str(file["inode"])))
    return b"".join(out)


_TIME = _tag(_LR["time_unix_nano"].number, 1)
_OBSERVED_TIME = _tag(_LR["observed_time_unix_nano"].number, 1)
_SEVERITY = {
    severity: _tag(_LR["severity_number"].number, 0) + _varint(severity)
    + _field(_LR["severity_text"].number, text.encode())
    for severity, text in SEVERITY_TEXT.items()
}  # fmt: skip
_BODY = _LR["body"].number
_EVENT_NAME = _LR["event_name"].number
_NAMES: dict[str, bytes] = {}  # event type -> its event_name field


def _event_name(type_: str) -> bytes:
    name = _NAMES.get(type_)
    if name is None:
        name = _field(_EVENT_NAME, display(f"snoopbus.{display(type_)}").encode())
        if len(_NAMES) < 256:  # the types are few; a hostile event's own stay out
            _NAMES[type_] = name
    return name


def log_record(item: Item) -> bytes:
    """One LogRecord, serialised."""
    if item.kind == "alert":
        alert: Alert = item.data
        event = dict(alert.event)
        pairs = _event_pairs(event) if event else []
        pairs[:1] = [("log.record.uid", alert.id), ("snoopbus.event.id", event.get("id"))]
        pairs += [
            ("security_rule.uuid", alert.rule_id), ("security_rule.name", alert.title),
            ("security_rule.ruleset.name", "sigma"),
            ("security_rule.description", alert.description or None),
            ("security_rule.category", alert.category or None),
            ("security_rule.reference", ", ".join(alert.references) or None),
            ("snoopbus.alert.level", alert.level), ("snoopbus.alert.tags", tuple(alert.tags)),
            ("snoopbus.alert.count", alert.count),
        ]  # fmt: skip
        severity, ts = SEVERITY[alert.level], alert.ts
        body = f"{alert.level} alert: {alert.title}"
        attributes = _attributes(pairs)
        name = _field(_EVENT_NAME, b"snoopbus.alert")
    else:
        event = item.data
        severity, ts, body = INFO, event.get("ts"), event_summary(event)
        attributes = _event_attributes(event)
        type_ = event.get("type", "")
        name = _event_name(type_) if type(type_) is str else _field(
            _EVENT_NAME, display(f"snoopbus.{display(type_)}").encode())  # fmt: skip
    ts = ts if isinstance(ts, int) and 0 <= ts < 2**64 else 0
    fixed = struct.pack("<Q", ts)
    value = _value(body)
    return b"".join((  # in field number order, as protobuf's own serialiser writes them
        _TIME, fixed, _SEVERITY[severity],
        _tag(_BODY, 2), _varint(len(value)), value,
        attributes,
        _OBSERVED_TIME, fixed, name,
    ))  # fmt: skip


def _host(item: Item) -> str:
    return item.data.host if item.kind == "alert" else str(item.data.get("host", ""))


_RESOURCE_LOGS = _tag(ExportLogsServiceRequest.DESCRIPTOR.fields_by_name["resource_logs"].number, 2)
_RL = ResourceLogs.DESCRIPTOR.fields_by_name
_RESOURCE_ATTRIBUTE = Resource.DESCRIPTOR.fields_by_name["attributes"].number
_SCOPE = _field(ScopeLogs.DESCRIPTOR.fields_by_name["scope"].number, SCOPE.SerializeToString())
_LOG_RECORD = _tag(_LOG_RECORDS, 2)


@functools.lru_cache(maxsize=256)
def _resource(host: str) -> bytes:
    """A host's ResourceLogs.resource field, serialised by the official messages."""
    resource = Resource(attributes=[
        KeyValue(key=key, value=AnyValue(string_value=value))
        for key, value in (("host.name", host), ("os.type", "linux"),
                           ("service.name", "snoopbus"))
    ])  # fmt: skip
    return _field(_RL["resource"].number, resource.SerializeToString())


def request(batch: list[Rendered]) -> bytes:
    """The ExportLogsServiceRequest for rendered LogRecords: one ResourceLogs a host.
    Written as the official messages would serialise it (fields in number
    order), without parsing the records back into message objects."""
    by_host: dict[str, list[bytes]] = {}
    for item, record in batch:
        by_host.setdefault(display(_host(item)), []).append(record)
    out = []
    for host, records in by_host.items():
        scope = _SCOPE + b"".join(_LOG_RECORD + _varint(len(r)) + r for r in records)
        logs = _resource(host) + _field(_RL["scope_logs"].number, scope)
        out.append(_RESOURCE_LOGS + _varint(len(logs)) + logs)
    return b"".join(out)


class OtlpSink(Sink):
    scheme = "otlp+http"
    delivery = "at least once (log.record.uid = event id)"

    def __init__(self, spec: SinkSpec) -> None:
        super().__init__(spec)
        headers = {}
        if spec.username is not None:
            headers["Authorization"] = basic_auth(spec.username, spec.password or "")
        self.path = spec.path or "/v1/logs"
        self.http = HttpClient(
            spec.base_url, ssl_context=spec.ssl_context(), size=spec.concurrency,
            timeout=spec.timeout, headers=headers, proxy=spec.proxy,
        )  # fmt: skip

    def render(self, item: Item) -> bytes:
        return log_record(item)

    async def send(self, batch: list[Rendered]) -> Sent:
        response = await self.http.post(self.path, request(batch), "application/x-protobuf")
        response.raise_for_status(transient=RETRYABLE)
        sent = Sent()
        answer = ExportLogsServiceResponse()
        try:
            answer.ParseFromString(response.body)
        except DecodeError:
            return sent  # accepted; an answer we cannot read says nothing more
        partial = answer.partial_success
        if partial.rejected_log_records:
            sent.dropped = min(int(partial.rejected_log_records), len(batch))
            sent.dropped_why = display(partial.error_message)[:500] or "no reason given"
        return sent

    async def close(self) -> None:
        await self.http.close()
