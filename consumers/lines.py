"""One readable line per event, for `snoopbus tail` (pure, unit-tested)."""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Mapping
from typing import Any

# Control characters and surrogate-escaped bytes would corrupt a terminal line.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\udc80-\udcff]")


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group()
    code = ord(ch) - 0xDC00 if ch >= "\udc80" else ord(ch)
    return f"\\x{code:02x}"


def printable(text: str) -> str:
    return _UNPRINTABLE.sub(_escape_char, text)


def command_line(argv: list[str]) -> str:
    return " ".join(shlex.quote(printable(a)) for a in argv)


def clock(ts_ns: int) -> str:
    secs, ns = divmod(ts_ns, 1_000_000_000)
    return time.strftime("%H:%M:%S", time.localtime(secs)) + f".{ns // 1_000_000:03d}"


def format_event(ev: Mapping[str, Any]) -> str:
    proc = ev.get("proc") or {}
    file = ev.get("file") or {}
    type_ = ev.get("type", "?")
    who = f"pid={proc.get('pid', '?')} comm={printable(str(proc.get('comm', '?')))}"
    head = f"{clock(int(ev.get('ts', 0)))} {ev.get('host', '?')} {type_:<11} {who}"
    if type_ == "exec":
        argv = proc.get("argv") or []
        cmd = command_line(argv) if argv else printable(proc.get("exe", "?"))
        trunc = " [argv truncated]" if proc.get("argv_truncated") else ""
        exe, cwd = printable(proc.get("exe", "?")), printable(proc.get("cwd", "?"))
        return (
            f"{head} ppid={proc.get('ppid', '?')} uid={proc.get('uid', '?')} "
            f"{exe}: {cmd}{trunc} (cwd {cwd})"
        )
    if type_ == "exit":
        sig = f" signal={ev['signal']}" if "signal" in ev else ""
        return f"{head} code={ev.get('exit_code', '?')}{sig} {printable(proc.get('exe', ''))}"
    path = printable(str(file.get("path", "?")))
    if "old_path" in file:
        path = f"{printable(str(file['old_path']))} → {path}"
    if "target" in file:
        path = f"{path} -> {printable(str(file['target']))}"
    extra = f" cookie={ev['cookie']}" if "cookie" in ev else ""
    if "ret" in ev and ev["ret"] < 0:
        extra += f" ret={ev['ret']}"
    return f"{head} {path}{extra}"


def to_json(ev: Mapping[str, Any]) -> str:
    # Non-UTF-8 bytes stay as surrogate escapes (\udcXX): lossless, valid JSON.
    return json.dumps(ev, ensure_ascii=True, separators=(",", ":"), default=repr)


def format_alert(alert: Mapping[str, Any]) -> str:
    """One line per alert: time, host, level, rule, ATT&CK ids, what matched, the process."""
    rule = alert.get("rule") or {}
    event = alert.get("event") or {}
    proc = event.get("proc") or {}
    file = event.get("file") or {}
    attack = [t.removeprefix("attack.").upper() for t in rule.get("tags", [])
              if t.startswith("attack.t")]  # fmt: skip
    what = command_line(proc["argv"]) if proc.get("argv") else printable(str(proc.get("exe", "?")))
    if file.get("path"):
        what = f"{printable(str(proc.get('exe', '?')))} {event.get('type', '?')} "
        what += printable(str(file["path"]))
    count = alert.get("count", 1)
    return (
        f"{clock(int(alert.get('ts', 0)))} {alert.get('host', '?')} "
        f"{str(alert.get('level', '?')).upper():<8} {rule.get('title', '?')}"
        f"{' [' + ','.join(attack) + ']' if attack else ''}"
        f" ({', '.join(alert.get('selections', []))})"
        f" pid={proc.get('pid', '?')}: {what}"
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
