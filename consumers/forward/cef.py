"""`cef+tcp|udp|tls://host:port`: ArcSight CEF as the MSG of an RFC 5424 message.

    CEF:0|snoopbus|snoopbus|<version>|<signature id>|<name>|<severity>|<extension>

Escaping, as the CEF specification (Implementing ArcSight CEF, rev. 25) has it:

- header fields: `\\` -> `\\\\` and `|` -> `\\|`;
- extension values: `\\` -> `\\\\` and `=` -> `\\=`; a `|` needs no escape there.

Before that, in both, every control, format and line separator character
(CR and LF included, which the spec would send as `\\r` `\\n` and a
receiver would turn back into a line break) and each byte that is not
UTF-8 is shown as text, `\\xNN` or `\\uXXXX` (consumers/printable.py), so its
backslash is escaped in turn: `\\\\x0a`. A value can never end the record,
add an extension key, or reorder what a screen shows.

The syslog envelope has MSGID `CEF`, no structured data, and no BOM before
the MSG (CEF receivers do not expect one). Delivery as for syslog.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from snoopbus.consumers.printable import printable

from .alerts import Alert
from .sink import Item
from .syslog import EVENT_SEVERITY, SEVERITY, message
from .text import bounded_escaped, command_line, escaped_fields

try:
    VERSION = version("snoopbus")
except PackageNotFoundError:  # running from a source tree
    VERSION = "0"
CEF_SEVERITY = {"informational": 1, "low": 3, "medium": 5, "high": 8, "critical": 10}
EVENT_CEF_SEVERITY = 1

_HEADER_SPECIAL = re.compile(r"[\\|]")
_EXT_SPECIAL = re.compile(r"[\\=]")


def header(value: object) -> str:
    text = printable(value if isinstance(value, str) else str(value))
    return _HEADER_SPECIAL.sub(lambda m: "\\" + m.group(), text)


def _ext_escape(text: str) -> str:
    return _EXT_SPECIAL.sub(lambda m: "\\" + m.group(), text)


def ext_value(value: object, limit: int = 8192) -> str:
    return bounded_escaped(value, limit, _EXT_SPECIAL, _ext_escape)


def extension(pairs: list[tuple[str, Any]], limit: int) -> str:
    return " ".join(escaped_fields(pairs, limit, _EXT_SPECIAL, ext_value, "", "=", ""))


def _event_pairs(event: dict[str, Any]) -> list[tuple[str, Any]]:
    proc = event.get("proc") or {}
    file = event.get("file") or {}
    ts = event.get("ts")
    argv = proc.get("argv")
    pairs: list[tuple[str, Any]] = [
        ("rt", ts // 1_000_000 if isinstance(ts, int) else None),
        ("dvchost", event.get("host")),
        ("externalId", event.get("id")),
        ("act", event.get("type")),
        ("spid", proc.get("pid")),
        ("sproc", proc.get("comm")),
        ("suid", proc.get("uid")),
        ("filePath", file.get("path")),
        ("oldFilePath", file.get("old_path")),
        ("fileId", file.get("inode")),
        ("cs1Label", "commandLine" if argv is not None else None),
        ("cs1", command_line(argv) if argv is not None else None),
        ("cs2Label", "exe" if proc.get("exe") is not None else None),
        ("cs2", proc.get("exe")),
        ("cs3Label", "cwd" if proc.get("cwd") is not None else None),
        ("cs3", proc.get("cwd")),
        ("cn1Label", "ppid" if proc.get("ppid") is not None else None),
        ("cn1", proc.get("ppid")),
        ("cn2Label", "exitCode" if event.get("exit_code") is not None else None),
        ("cn2", event.get("exit_code")),
    ]
    return pairs


def render_cef(item: Item, limit: int = 8192) -> str:
    if item.kind == "alert":
        alert: Alert = item.data
        event = dict(alert.event)
        pairs = _event_pairs(event)
        pairs[2] = ("externalId", alert.id)
        pairs += [
            ("cs4Label", "tags"), ("cs4", ",".join(alert.tags) or None),
            ("cs5Label", "eventId"), ("cs5", event.get("id")), ("cnt", alert.count),
        ]  # fmt: skip
        if alert.ts is not None:
            pairs[0] = ("rt", alert.ts // 1_000_000)
        sig, name, sev = alert.rule_id, alert.title, CEF_SEVERITY[alert.level]
    else:
        event = item.data
        head = _event_head(event.get("type"))
        return f"{head}|{extension(_event_pairs(event), limit)}"
    return f"{_head(sig, name, sev)}|{extension(pairs, limit)}"


def _head(sig: str, name: str, severity: int) -> str:
    return "|".join(["CEF:0", "snoopbus", "snoopbus", header(VERSION), header(sig), header(name),
                     str(severity)])  # fmt: skip


_HEADS: dict[str, str] = {}  # an event type's header: the types are few


def _event_head(type_: object) -> str:
    head = _HEADS.get(type_) if type(type_) is str else None
    if head is None:
        head = _head(f"snoopbus:{type_}", f"{type_}", EVENT_CEF_SEVERITY)
        if type(type_) is str and len(_HEADS) < 256:  # a hostile event's own types stay out
            _HEADS[type_] = head
    return head


def render_cef_syslog(item: Item, limit: int = 8192) -> str:
    if item.kind == "alert":
        alert: Alert = item.data
        severity, ts, host = SEVERITY[alert.level], alert.ts, alert.host
        pid = (alert.event.get("proc") or {}).get("pid")
    else:
        event = item.data
        severity, ts, host = EVENT_SEVERITY, event.get("ts"), event.get("host", "")
        pid = (event.get("proc") or {}).get("pid")
    return message(
        severity=severity, ts=ts, host=host, procid=pid, msgid="CEF", sd="-",
        msg=render_cef(item, limit), bom=False,
    )  # fmt: skip
