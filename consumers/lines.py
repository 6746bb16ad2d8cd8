"""One readable line per event, for `snoopbus tail` (pure, unit-tested).

Every value that came from the bus goes through `printable` (consumers/printable.py)
before it reaches the line: host names, alert titles and levels, paths,
argv, comm. Only the numbers and the colours added here are not escaped.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Mapping
from typing import Any

from snoopbus.consumers.printable import printable

__all__ = ["clock", "colour_alert", "colour_event", "command_line", "format_alert",
           "format_event", "printable", "shown", "submap", "to_json"]  # fmt: skip


def shown(value: object) -> str:
    """Any value as it may appear on a line: text escaped, numbers as they are."""
    return printable(value if isinstance(value, str) else str(value))


def submap(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """obj[key] when it is a map, else {}: an alert has no schema to vouch for it."""
    value = obj.get(key)
    return value if isinstance(value, Mapping) else {}


def command_line(argv: list[Any]) -> str:
    return " ".join(shlex.quote(shown(a)) for a in argv)


def clock(ts_ns: object) -> str:
    if not isinstance(ts_ns, int):
        return "??:??:??.???"
    secs, ns = divmod(ts_ns, 1_000_000_000)
    try:
        day = time.strftime("%H:%M:%S", time.localtime(secs))
    except (OverflowError, OSError, ValueError):  # a forged time far out of range
        return "??:??:??.???"
    return f"{day}.{ns // 1_000_000:03d}"


def format_event(ev: Mapping[str, Any]) -> str:
    proc = ev.get("proc") or {}
    file = ev.get("file") or {}
    type_ = shown(ev.get("type", "?"))
    who = f"pid={shown(proc.get('pid', '?'))} comm={shown(proc.get('comm', '?'))}"
    head = f"{clock(ev.get('ts', 0))} {shown(ev.get('host', '?'))} {type_:<11} {who}"
    if type_ == "exec":
        argv = proc.get("argv") or []
        cmd = command_line(argv) if argv else shown(proc.get("exe", "?"))
        trunc = " [argv truncated]" if proc.get("argv_truncated") else ""
        exe, cwd = shown(proc.get("exe", "?")), shown(proc.get("cwd", "?"))
        return (
            f"{head} ppid={shown(proc.get('ppid', '?'))} uid={shown(proc.get('uid', '?'))} "
            f"{exe}: {cmd}{trunc} (cwd {cwd})"
        )
    if type_ == "exit":
        sig = f" signal={shown(ev['signal'])}" if "signal" in ev else ""
        return f"{head} code={shown(ev.get('exit_code', '?'))}{sig} {shown(proc.get('exe', ''))}"
    path = shown(file.get("path", "?"))
    if "old_path" in file:
        path = f"{shown(file['old_path'])} → {path}"
    if "target" in file:
        path = f"{path} -> {shown(file['target'])}"
    extra = f" cookie={shown(ev['cookie'])}" if "cookie" in ev else ""
    if isinstance(ev.get("ret"), int) and ev["ret"] < 0:
        extra += f" ret={ev['ret']}"
    return f"{head} {path}{extra}"


def to_json(ev: Mapping[str, Any]) -> str:
    # Non-UTF-8 bytes stay as surrogate escapes (\udcXX): lossless, valid JSON.
    # ensure_ascii also escapes every control and format character (ESC, U+2028,
    # bidi overrides): a JSON line printed on a terminal is as safe as a text line.
    return json.dumps(ev, ensure_ascii=True, separators=(",", ":"), default=repr)


def format_alert(alert: Mapping[str, Any]) -> str:
    """One line per alert: time, host, level, rule, ATT&CK ids, what matched, the process."""
    rule, event = submap(alert, "rule"), submap(alert, "event")
    if alert.get("category") == "snoopbus_host":  # host health: no event, the host's state
        f = submap(alert, "fields")
        why = (f"down {shown(f.get('down_s', '?'))}s, recovered from "
               f"{', '.join(shown(c) for c in f.get('recovered', []))}"
               if f.get("condition") == "back" else
               f"last report {shown(f.get('silent_s', '?'))}s ago")  # fmt: skip
        return (f"{clock(alert.get('ts', 0))} {shown(alert.get('host', '?'))} "
                f"{shown(alert.get('level', '?')).upper():<8} {shown(rule.get('title', '?'))}"
                f": {why}")
    proc, file = submap(event, "proc"), submap(event, "file")
    attack = [shown(t).removeprefix("attack.").upper() for t in rule.get("tags", [])
              if str(t).startswith("attack.t")]  # fmt: skip
    what = command_line(proc["argv"]) if proc.get("argv") else shown(proc.get("exe", "?"))
    if file.get("path"):
        what = f"{shown(proc.get('exe', '?'))} {shown(event.get('type', '?'))} "
        what += shown(file["path"])
    count = shown(alert.get("count", 1))
    selections = ", ".join(shown(s) for s in alert.get("selections", []))
    return (
        f"{clock(alert.get('ts', 0))} {shown(alert.get('host', '?'))} "
        f"{shown(alert.get('level', '?')).upper():<8} {shown(rule.get('title', '?'))}"
        f"{' [' + ','.join(attack) + ']' if attack else ''}"
        f" ({selections})"
        f" pid={shown(proc.get('pid', '?'))}: {what}"
        f"{f' (x{count} folded)' if alert.get('folded') else ''}"
    )


# -- colour, for a terminal ----------------------------------------------------------

_RESET = "\x1b[0m"
TYPE_COLOURS = {
    "exec": "\x1b[1;32m", "exit": "\x1b[2m",
    "create": "\x1b[32m", "mkdir": "\x1b[32m", "link": "\x1b[32m", "symlink": "\x1b[32m",
    "modify": "\x1b[33m", "close_write": "\x1b[33m", "attrib": "\x1b[35m", "open": "\x1b[34m",
    "delete": "\x1b[31m", "rmdir": "\x1b[31m",
    "renamed": "\x1b[1;36m", "moved_from": "\x1b[36m", "moved_to": "\x1b[36m",
    "moved_in": "\x1b[36m", "moved_out": "\x1b[36m",
}  # fmt: skip
LEVEL_COLOURS = {
    "critical": "\x1b[1;97;41m", "high": "\x1b[1;31m", "medium": "\x1b[1;33m",
    "low": "\x1b[36m", "informational": "\x1b[2m",
}  # fmt: skip


def colour_event(line: str, ev: Mapping[str, Any]) -> str:
    """`format_event`'s line with its type coloured (and a rename's arrow bold).

    Safe on any line: `printable` already escaped every ESC in the data, so
    the only escape sequences are the ones added here.
    """
    type_ = str(ev.get("type", "?"))
    colour = TYPE_COLOURS.get(type_)
    if colour is None:
        return line
    padded = f" {type_:<11} "
    line = line.replace(padded, f" {colour}{type_:<11}{_RESET} ", 1)
    return line.replace(" → ", f" \x1b[1m→{_RESET} ", 1)


def colour_alert(line: str, alert: Mapping[str, Any]) -> str:
    """An alert line in its level's colour, from end to end: it must stand out."""
    colour = LEVEL_COLOURS.get(str(alert.get("level", "")), "\x1b[1m")
    return f"{colour}{line}{_RESET}"
