"""Printing query results: a readable table (rich when installed), JSON lines, CSV.

Text that was not UTF-8 is shown with `\\xNN` for each bad byte in tables and
CSV; JSON keeps it exactly as `\\udcNN` escapes (what Python's surrogateescape
produces, so `json.loads` gives back the original str). Tables and trees go
to a terminal: every control, format and separator character there is
escaped too (consumers/printable.py), and rich gets cells as Text, never
markup, so a file named `[red]x` or `\\e]2;...` is shown as written.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any

from snoopbus.consumers.printable import printable

_SURROGATE = re.compile(r"[\udc80-\udcff]")
TABLE_COLUMNS = ("time", "host", "type", "pid", "ppid", "comm", "what", "ret")


def iso_ns(ns: int) -> str:
    """2026-11-20T14:03:07.123456789Z"""
    secs, frac = divmod(ns, 10**9)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def shown(text: str) -> str:
    """Text for a terminal: each bad byte as \\xNN, controls and the like escaped."""
    return printable(text)


def _csv_text(text: str) -> str:
    """CSV keeps text exact (it quotes what needs it); bad bytes as \\xNN."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def command(row: dict[str, Any]) -> str:
    argv = row.get("proc_argv")
    if argv:
        return shlex.join(shown(a) for a in argv)
    return shown(row.get("proc_exe") or row.get("proc_comm") or "?")


def what(row: dict[str, Any]) -> str:
    """The one cell that says what happened."""
    kind = row.get("type")
    if kind == "exec":
        return command(row)
    if kind == "exit":
        sig = row.get("signal")
        return f"exit {row.get('exit_code')}" + (f" (signal {sig})" if sig else "")
    path = shown(row.get("file_path") or "")
    if row.get("file_old_path"):
        path = f"{shown(row['file_old_path'])} -> {path}"
    if row.get("file_target"):
        path += f" -> {shown(row['file_target'])}"
    return path


def table_cells(row: dict[str, Any]) -> list[str]:
    def s(v: Any) -> str:
        return "" if v is None else str(v)

    return [
        iso_ns(row["ts"]), shown(s(row.get("host"))), shown(s(row.get("type") or row.get("level"))),
        s(row.get("proc_pid")), s(row.get("proc_ppid")), shown(s(row.get("proc_comm"))),
        what(row) if "type" in row else shown(s(row.get("title"))), s(row.get("ret")),
    ]  # fmt: skip


def write_table(rows: list[dict[str, Any]], out: IO[str], plain: bool = False) -> None:
    cells = [table_cells(r) for r in rows]
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
            from rich.text import Text
        except ImportError:
            plain = True
    if not plain:
        table = Table(*TABLE_COLUMNS, box=None, header_style="bold", pad_edge=False)
        for c in cells:
            table.add_row(*(Text(v) for v in c))  # Text: never read as markup
        # Wide enough that paths are not folded; a terminal's own width when it is wider.
        width = max(200, shutil.get_terminal_size((200, 24)).columns)
        Console(file=out, width=width).print(table)
        return
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(TABLE_COLUMNS)]
    widths[-2] = 0  # the last text column is not padded
    for line in ([*TABLE_COLUMNS], *cells):
        out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")


def _json_text(obj: Any) -> str:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def json_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if v is not None}
    if "ts" in out:
        out["ts_ns"] = out["ts"]
        out["ts"] = iso_ns(out["ts"])
    return out


def write_json(rows: Iterable[dict[str, Any]], out: IO[str]) -> None:
    for row in rows:
        out.write(_json_text(json_row(row)) + "\n")


def write_csv(rows: list[dict[str, Any]], out: IO[str]) -> None:
    columns: list[str] = []
    for row in rows:
        for k in row:
            if k not in columns:
                columns.append(k)
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        line = []
        for c in columns:
            v = row.get(c)
            if v is None:
                line.append("")
            elif c == "ts":
                line.append(iso_ns(v))
            elif isinstance(v, list):
                line.append(json.dumps([_csv_text(x) if isinstance(x, str) else x for x in v]))
            elif isinstance(v, str):
                line.append(_csv_text(v))
            else:
                line.append(str(v))
        writer.writerow(line)
