"""The archive's table schemas: the wire contract flattened into columns.

`proc.pid` becomes `proc_pid`, `file.path` becomes `file_path`, argv stays a
list column. Two deliberate departures from the wire names:

- the event's `host` is stored as `host_name`: the folder key `host=` holds
  the subject token (`host_token`), and readers such as DuckDB and pyarrow
  would otherwise see two different columns called `host`;
- text that is not UTF-8 (a kernel path with a 0xff byte, decoded with
  surrogateescape) cannot be a Parquet string. Such a value is stored twice:
  readable in its string column (each bad byte shown as U+FFFD) and exactly
  in the companion `<column>_raw` binary column (list<binary> for argv),
  which is null whenever the text was valid UTF-8. Readers take `_raw` when
  present; `snoopbus query` does, so such names round-trip exactly.

Keys the archive does not know (extensions newer than this code) are kept as
JSON in `extra`, so nothing a publisher sent is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa

TEXT, TEXTS, INT, UINT, BOOL = "text", "texts", "int", "uint", "bool"
_ARROW: Final = {
    TEXT: pa.string(), TEXTS: pa.list_(pa.string()), INT: pa.int64(), UINT: pa.uint64(),
    BOOL: pa.bool_(),
}  # fmt: skip
_RAW_ARROW: Final = {TEXT: pa.binary(), TEXTS: pa.list_(pa.binary())}
_INT_RANGE: Final = {INT: (-(2**63), 2**63 - 1), UINT: (0, 2**64 - 1)}
TS_TYPE: Final = pa.timestamp("ns", tz="UTC")
RAW_SUFFIX: Final = "_raw"
NS_PER_DAY: Final = 86_400 * 10**9


class RowError(ValueError):
    """An event that is valid on the wire but cannot be stored (e.g. an int past 64 bits)."""


@dataclass(frozen=True)
class Field:
    column: str
    key: str  # key in the event map, or in its `proc`/`file` map
    kind: str
    within: str | None = None  # "proc", "file" or None (top level)

    @property
    def has_raw(self) -> bool:
        return self.kind in (TEXT, TEXTS) and self.column not in ("type", "level")


def _sub(within: str, spec: str) -> tuple[Field, ...]:
    out = []
    for item in spec.split():
        key, kind = item.split(":")
        out.append(Field(f"{within}_{key}", key, kind, within))
    return tuple(out)


# Top-level keys; `ts` and `host` are handled on their own.
_TOP: Final = (
    Field("id", "id", TEXT), Field("type", "type", TEXT), Field("v", "v", INT),
    Field("cookie", "cookie", INT), Field("ret", "ret", INT),
    Field("exit_code", "exit_code", INT), Field("signal", "signal", INT),
)  # fmt: skip
_PROC: Final = _sub(
    "proc",
    "pid:int tid:int ppid:int uid:int gid:int comm:text exe:text argv:texts cwd:text "
    "cgroup:uint container:text argv_truncated:bool cwd_truncated:bool exe_truncated:bool "
    "parent_exe:text parent_argv:texts",
)
_FILE: Final = _sub(
    "file",
    "path:text old_path:text flags:int mode:int target:text inode:uint dev:uint "
    "path_truncated:bool mnt_ns:uint",
)
EVENT_FIELDS: Final = (*_TOP, *_PROC, *_FILE)
_KNOWN: Final = {
    None: {"id", "type", "v", "cookie", "ret", "exit_code", "signal", "ts", "host", "proc", "file"},
    "proc": {f.key for f in _PROC},
    "file": {f.key for f in _FILE},
}


def _schema(fields: tuple[Field, ...], head: list[pa.Field], tail: list[pa.Field]) -> pa.Schema:
    cols = list(head)
    for f in fields:
        cols.append(pa.field(f.column, _ARROW[f.kind]))
        if f.has_raw:
            cols.append(pa.field(f.column + RAW_SUFFIX, _RAW_ARROW[f.kind]))
    return pa.schema([*cols, *tail])


_HOST: Final = [pa.field("host_name", pa.string()), pa.field("host_name_raw", pa.binary())]
EVENT_SCHEMA: Final = _schema(
    EVENT_FIELDS, [pa.field("ts", TS_TYPE), *_HOST], [pa.field("extra", pa.string())]
)

# Alerts have no fixed map in the contract yet: the common keys as columns,
# the whole map as JSON in `data`.
_ALERT_FIELDS: Final = (
    Field("id", "id", TEXT), Field("level", "level", TEXT), Field("title", "title", TEXT),
    Field("rule_id", "rule_id", TEXT), Field("event_id", "event_id", TEXT),
)  # fmt: skip
ALERT_SCHEMA: Final = _schema(
    _ALERT_FIELDS,
    [pa.field("ts", TS_TYPE), *_HOST],
    [pa.field("stream_seq", pa.uint64()), pa.field("data", pa.string())],
)
TEXT_COLUMNS: Final = frozenset(
    f.column for f in (*EVENT_FIELDS, *_ALERT_FIELDS) if f.has_raw
) | {"host_name"}


def text_cell(value: str) -> tuple[str, bytes | None]:
    """(string cell, raw cell): raw only when the text is not valid UTF-8."""
    if value.isascii():
        return value, None
    try:
        value.encode("utf-8")
        return value, None
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogateescape")
        return raw.decode("utf-8", "replace"), raw


def texts_cell(values: list[str]) -> tuple[list[str], list[bytes] | None]:
    cells = [text_cell(v) for v in values]
    if all(raw is None for _, raw in cells):
        return values, None
    return [s for s, _ in cells], [v.encode("utf-8", "surrogateescape") for v in values]


def restore_text(value: str | None, raw: bytes | None) -> str | None:
    """The exact original str: from `_raw` when the archive needed it."""
    if raw is not None:
        return raw.decode("utf-8", "surrogateescape")
    return value


def restore_texts(values: list[str] | None, raw: list[bytes] | None) -> list[str] | None:
    if raw is not None:
        return [b.decode("utf-8", "surrogateescape") for b in raw]
    return values


def _json_default(obj: object) -> object:
    if isinstance(obj, bytes | bytearray):
        return obj.decode("utf-8", "surrogateescape")
    raise TypeError(f"cannot store {type(obj).__name__}")


def to_json(obj: object) -> str:
    # ensure_ascii escapes lone surrogates as \udcXX, so non-UTF-8 text survives.
    return json.dumps(obj, default=_json_default, separators=(",", ":"))


class ColumnBuffer:
    """Rows of one table being gathered column by column (cheap appends)."""

    __slots__ = ("cols", "rows", "schema")

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.cols: dict[str, list[Any]] = {name: [] for name in schema.names}
        self.rows = 0

    def table(self) -> pa.Table:
        return pa.Table.from_pydict(self.cols, schema=self.schema)

    def ids(self) -> list[str]:
        return self.cols["id"]


def _cell(f: Field, value: Any, where: str) -> tuple[Any, Any]:
    kind = f.kind
    if kind == TEXT:
        if not isinstance(value, str):
            raise RowError(f"{where}: expected text, got {type(value).__name__}")
        return text_cell(value)
    if kind == TEXTS:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RowError(f"{where}: expected a list of text")
        return texts_cell(value)
    if kind == BOOL:
        if not isinstance(value, bool):
            raise RowError(f"{where}: expected a bool, got {type(value).__name__}")
        return value, None
    if not isinstance(value, int) or isinstance(value, bool):
        raise RowError(f"{where}: expected an int, got {type(value).__name__}")
    low, high = _INT_RANGE[kind]
    if not low <= value <= high:
        raise RowError(f"{where}: {value} does not fit a {64}-bit {kind} column")
    return value, None


def _extra(event: Mapping[str, Any]) -> str | None:
    extra: dict[str, Any] = {k: v for k, v in event.items() if k not in _KNOWN[None]}
    for within in ("proc", "file"):
        sub = event.get(within)
        if isinstance(sub, Mapping):
            extra.update({f"{within}.{k}": v for k, v in sub.items() if k not in _KNOWN[within]})
    return to_json(extra) if extra else None


def append_event(buf: ColumnBuffer, event: Mapping[str, Any], where: str = "event") -> None:
    """One event as one row. All-or-nothing: a RowError leaves `buf` as it was."""
    ts = event.get("ts")
    host = event.get("host")
    if not isinstance(ts, int) or not isinstance(host, str):
        raise RowError(f"{where}: needs int ts and str host")
    if not -(2**63) <= ts < 2**63:
        raise RowError(f"{where}.ts: {ts} does not fit a 64-bit timestamp")
    proc, file = event.get("proc"), event.get("file")
    sources = {None: event, "proc": proc if isinstance(proc, Mapping) else {},
               "file": file if isinstance(file, Mapping) else {}}
    # Every cell first, so a bad one cannot leave a half-appended row.
    cells: list[tuple[Field, Any, Any]] = []
    for f in EVENT_FIELDS:
        value = sources[f.within].get(f.key)
        if value is None:
            cells.append((f, None, None))
        else:
            label = f"{where}.{f.key}" if f.within is None else f"{where}.{f.within}.{f.key}"
            cells.append((f, *_cell(f, value, label)))
    extra = _extra(event)
    cols = buf.cols
    cols["ts"].append(ts)
    name, raw = text_cell(host)
    cols["host_name"].append(name)
    cols["host_name_raw"].append(raw)
    for f, cell, raw in cells:
        cols[f.column].append(cell)
        if f.has_raw:
            cols[f.column + RAW_SUFFIX].append(raw)
    cols["extra"].append(extra)
    buf.rows += 1


def append_alert(
    buf: ColumnBuffer, alert: Mapping[str, Any], *, ts: int, host: str, level: str, seq: int,
    alert_id: str,
) -> None:  # fmt: skip
    data = to_json(alert)  # raises TypeError/ValueError before anything is appended
    fields = {f.key: alert.get(f.key) for f in _ALERT_FIELDS}
    fields.update(id=alert_id, level=level)
    cells = {}
    for f in _ALERT_FIELDS:
        value = fields[f.key]
        cells[f.key] = (None, None) if not isinstance(value, str) else text_cell(value)
    cols = buf.cols
    cols["ts"].append(ts)
    name, raw = text_cell(host)
    cols["host_name"].append(name)
    cols["host_name_raw"].append(raw)
    for f in _ALERT_FIELDS:
        cell, raw = cells[f.key]
        cols[f.column].append(cell)
        if f.has_raw:
            cols[f.column + RAW_SUFFIX].append(raw)
    cols["stream_seq"].append(seq)
    cols["data"].append(data)
    buf.rows += 1
