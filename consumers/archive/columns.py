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

Every field of proto/fields.py's table has its column, made from the table
(ints the kernel gives as u64 are unsigned). Keys the table does not know
(extensions newer than this code) are kept as JSON in `extra`, so nothing a
publisher sent is dropped. Files written before a field had its column hold
it in `extra`; readers see the column as null there (query.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final

import pyarrow as pa
from msgspec.structs import astuple

from snoopbus.proto import alert_map, fastpath
from snoopbus.proto.fields import EVENT_FIELDS as WIRE_FIELDS
from snoopbus.proto.fields import within as fields_within

TEXT, TEXTS, INT, UINT, BOOL = "text", "texts", "int", "uint", "bool"
_ARROW: Final = {
    TEXT: pa.string(), TEXTS: pa.list_(pa.string()), INT: pa.int64(), UINT: pa.uint64(),
    BOOL: pa.bool_(),
}  # fmt: skip
_RAW_ARROW: Final = {TEXT: pa.binary(), TEXTS: pa.list_(pa.binary())}
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


_KINDS: Final = {"int": INT, "uint": UINT, "str": TEXT, "bool": BOOL, "[str]": TEXTS}


def _columns(within: str | None) -> tuple[Field, ...]:
    """The columns of one map's fields (proto/fields.py), in the table's order:
    `proc.pid` -> proc_pid. A map (`proc`, `file`) is no column, its keys are;
    the top level's `ts` and `host` are handled on their own."""
    return tuple(
        Field(f.key if within is None else f"{within}_{f.key}", f.key, _KINDS[f.type], within)
        for f in fields_within(WIRE_FIELDS, within or "")
        if f.type != "map" and f.name not in ("ts", "host")
    )


_TOP: Final = _columns(None)
_PROC: Final = _columns("proc")
_FILE: Final = _columns("file")
EVENT_FIELDS: Final = (*_TOP, *_PROC, *_FILE)
_KNOWN: Final = {
    None: {f.key for f in _TOP} | {"ts", "host", "proc", "file"},
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

# The alert map's parts people search by become columns (`rule.title` ->
# title, the triggering `event`'s id, pid, comm, path), found where
# proto/alert_map.py says; the whole map is kept as JSON in `data`.
_ALERT_FIELDS: Final = (
    Field("id", "id", TEXT), Field("level", "level", TEXT), Field("title", "title", TEXT),
    Field("rule_id", "rule_id", TEXT), Field("category", "category", TEXT),
    Field("event_id", "event_id", TEXT), Field("proc_pid", "proc_pid", INT),
    Field("proc_comm", "proc_comm", TEXT), Field("file_path", "file_path", TEXT),
)  # fmt: skip
# Where each alert column is looked for, first match wins.
_ALERT_SOURCES: Final[dict[str, tuple[alert_map.Path, ...]]] = {
    "title": alert_map.TITLE,
    "rule_id": alert_map.RULE_ID,
    "category": alert_map.CATEGORY,
    "event_id": alert_map.EVENT_ID,
    "proc_pid": (("event", "proc", "pid"),),
    "proc_comm": (("event", "proc", "comm"),),
    "file_path": (("event", "file", "path"),),
}
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
    try:
        return json.dumps(obj, default=_json_default, separators=(",", ":"))
    except TypeError:
        # A map keyed by msgpack bin: json.dumps has no hook for keys.
        return json.dumps(_text_keys(obj), default=_json_default, separators=(",", ":"))


def _text_keys(obj: object) -> object:
    if isinstance(obj, dict):
        return {
            k.decode("utf-8", "surrogateescape") if isinstance(k, bytes) else k: _text_keys(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_text_keys(v) for v in obj]
    return obj


class ColumnBuffer:
    """Alert rows gathered column by column."""

    __slots__ = ("cols", "rows", "schema")

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.cols: dict[str, list[Any]] = {name: [] for name in schema.names}
        self.rows = 0

    @property
    def nbytes(self) -> int:
        """A rough figure: the JSON of each alert and a few hundred bytes of cells."""
        return sum(map(len, self.cols["data"])) + 300 * self.rows

    def table(self) -> pa.Table:
        return pa.Table.from_pydict(self.cols, schema=self.schema)

    def ids(self) -> list[str]:
        return self.cols["id"]

    def extend(self, other: ColumnBuffer) -> None:
        for name, values in other.cols.items():
            self.cols[name].extend(values)
        self.rows += other.rows

    def truncate(self, rows: int) -> None:
        for values in self.cols.values():
            del values[rows:]
        self.rows = rows


_NULLS: dict[pa.DataType, pa.Array] = {}


def nulls(n: int, type: pa.DataType) -> pa.Array:
    """n nulls of `type`: slices of one array per type, shared by every batch
    (a window's ~30 all-null `_raw` columns would otherwise cost their
    offsets, 4 bytes a row each)."""
    have = _NULLS.get(type)
    if have is None or len(have) < n:
        have = _NULLS[type] = pa.nulls(max(n, 2 * len(have) if have is not None else 16_384),
                                       type)  # fmt: skip
    return have.slice(0, n)


# A table costs objects beside its buffers (an Array, its ArrayData and Buffers
# per column, ~90 columns): 38 KB for a slice of a batch's table, measured, and
# ~90 KB for a 40-row table of its own, 4 times its rows. A trickle's fetches
# bring a few rows each, so a partition's tables are merged into one every
# _MERGE_AT of them (a window of them then costs about its rows' bytes).
_MERGE_AT: Final = 32
_TABLE_COST: Final = 40 << 10


class EventBuffer:
    """The event rows of one partition, as Arrow tables built a batch at a
    time (`add`), so a window costs its columns' bytes, not a million maps.
    `append_event` keeps single maps too (tests, tools); they become a table
    when the buffer is read. Tables past the first `_merged` are merged into
    one every _MERGE_AT of them: each row is copied at most once."""

    __slots__ = ("_ids", "_merged", "_pending", "_table_bytes", "tables")

    def __init__(self) -> None:
        self.tables: list[pa.Table] = []
        self._ids: list[str] = []  # of the tables' rows, in order
        self._table_bytes = 0  # their buffers, and _TABLE_COST each
        self._merged = 0  # tables[:_merged] are merged ones, left as they are
        self._pending: list[Mapping[str, Any]] = []  # maps not yet in a table

    @property
    def rows(self) -> int:
        return len(self._ids) + len(self._pending)

    @property
    def nbytes(self) -> int:
        """Bytes the rows take (the tables' buffers; a rough figure for maps)."""
        return self._table_bytes + 600 * len(self._pending)

    def add(self, table: pa.Table, ids: list[str]) -> None:
        self._flush()
        self.tables.append(table)
        self._ids += ids
        self._table_bytes += table.nbytes + _TABLE_COST
        if len(self.tables) - self._merged >= _MERGE_AT:
            self._merge()

    def _merge(self) -> None:
        """The tables past `_merged` as one, its buffers contiguous: all-null
        columns (most `_raw` ones) stay shared slices."""
        tail = self.tables[self._merged :]
        merged = pa.concat_tables(tail)
        n = merged.num_rows
        merged = pa.Table.from_arrays(
            [nulls(n, c.type) if c.null_count == n else c.combine_chunks() for c in merged.columns],
            schema=merged.schema,
        )  # fmt: skip
        self._table_bytes -= sum(t.nbytes for t in tail) + _TABLE_COST * (len(tail) - 1)
        self._table_bytes += merged.nbytes
        self.tables[self._merged :] = [merged]
        self._merged = len(self.tables)

    def ids(self) -> list[str]:
        return self._ids + [e["id"] for e in self._pending]

    def extend(self, other: EventBuffer) -> None:
        self._flush()
        other._flush()
        self.tables += other.tables
        self._ids += other._ids
        self._table_bytes += other._table_bytes
        if len(self.tables) - self._merged >= _MERGE_AT:
            self._merge()

    def truncate(self, rows: int) -> None:
        self._flush()
        keep, kept = [], 0
        for t in self.tables:
            if kept + t.num_rows > rows:
                t = t.slice(0, rows - kept)
            if t.num_rows:
                keep.append(t)
            kept += t.num_rows
        self.tables = keep
        self._merged = min(self._merged, len(keep))
        del self._ids[rows:]
        self._table_bytes = sum(t.nbytes for t in keep) + _TABLE_COST * len(keep)

    def table(self) -> pa.Table:
        self._flush()
        if not self.tables:
            return EVENT_SCHEMA.empty_table()
        return pa.concat_tables(self.tables)

    def _flush(self) -> None:
        if self._pending:
            events, self._pending = self._pending, []
            self.add(event_table(events), [e["id"] for e in events])


_EMPTY: Final[Mapping[str, Any]] = {}
_UINT_KEYS: Final = {
    (f.within, f.key) for f in EVENT_FIELDS if f.kind == UINT
}
_TYPED_KEYS: Final = {(f.within, f.key): f for f in EVENT_FIELDS}
_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


def check_event(event: Mapping[str, Any], where: str = "event") -> None:
    """Raise RowError if `event` cannot become a row.

    The runtime hands over events proto has validated (types are right), so
    what remains is what Parquet cannot hold: ints past 64 bits, negative
    values in unsigned columns, a type the archive's column disagrees with, and
    an unknown key's value that JSON cannot hold (nested past the recursion limit).
    """
    ts, host = event.get("ts"), event.get("host")
    if type(ts) is not int or not isinstance(host, str):
        raise RowError(f"{where}: needs int ts and str host")
    if not _INT64_MIN <= ts <= _INT64_MAX:
        raise RowError(f"{where}.ts: {ts} does not fit a 64-bit timestamp")
    for within, src in ((None, event), ("proc", event.get("proc")), ("file", event.get("file"))):
        if src is None:
            continue
        if not isinstance(src, Mapping):
            raise RowError(f"{where}.{within}: expected a map")
        for key, value in src.items():
            if type(value) is int:
                if _INT64_MIN <= value <= _INT64_MAX and (
                    value >= 0 or (within, key) not in _UINT_KEYS
                ):
                    continue
                if 0 <= value <= _UINT64_MAX and (within, key) in _UINT_KEYS:
                    continue
                if (within, key) not in _TYPED_KEYS:
                    continue  # an unknown key: kept as JSON in `extra`, any size
                label = key if within is None else f"{within}.{key}"
                kind = "unsigned 64-bit" if (within, key) in _UINT_KEYS else "64-bit int"
                raise RowError(f"{where}.{label}: {value} does not fit a {kind} column")
            f = _TYPED_KEYS.get((within, key))
            if f is not None and value is not None and not _type_ok(f.kind, value):
                label = key if within is None else f"{within}.{key}"
                raise RowError(f"{where}.{label}: expected {f.kind}, got {type(value).__name__}")
            if f is None and (within is not None or key not in _KNOWN_TOP):
                # An unknown key goes to `extra` as JSON at commit: fail here, not there.
                try:
                    to_json({key: value})
                except (TypeError, ValueError, RecursionError) as exc:
                    label = key if within is None else f"{within}.{key}"
                    raise RowError(f"{where}.{label}: cannot be stored as JSON: "
                                   f"{type(exc).__name__}: {exc}") from None  # fmt: skip


def _type_ok(kind: str, value: Any) -> bool:
    if kind == TEXT:
        return isinstance(value, str)
    if kind == TEXTS:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == BOOL:
        return isinstance(value, bool)
    return type(value) is int


def append_event(buf: EventBuffer, event: Mapping[str, Any], where: str = "event") -> None:
    """Check, then keep: a RowError leaves `buf` as it was."""
    check_event(event, where)
    buf._pending.append(event)


def _text_column(values: list[Any]) -> tuple[pa.Array, pa.Array]:
    """(string column, raw binary column); the raw one all null unless needed."""
    try:
        return pa.array(values, pa.string()), pa.nulls(len(values), pa.binary())
    except (UnicodeEncodeError, pa.ArrowInvalid, pa.ArrowTypeError):
        pass  # some value is not UTF-8: cell by cell
    cells = [(None, None) if v is None else text_cell(v) for v in values]
    return (pa.array([c for c, _ in cells], pa.string()),
            pa.array([r for _, r in cells], pa.binary()))  # fmt: skip


def _texts_column(values: list[Any]) -> tuple[pa.Array, pa.Array]:
    try:
        return pa.array(values, pa.list_(pa.string())), pa.nulls(len(values), pa.list_(pa.binary()))
    except (UnicodeEncodeError, pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    cells = [(None, None) if v is None else texts_cell(v) for v in values]
    return (pa.array([c for c, _ in cells], pa.list_(pa.string())),
            pa.array([r for _, r in cells], pa.list_(pa.binary())))  # fmt: skip


_KNOWN_TOP: Final = frozenset(_KNOWN[None])
_KNOWN_PROC: Final = frozenset(_KNOWN["proc"])
_KNOWN_FILE: Final = frozenset(_KNOWN["file"])


def _extra(event: Mapping[str, Any]) -> str | None:
    """Keys this archive has no column for, as JSON (None in the common case),
    sorted: the same cell whatever order the publisher sent them in."""
    proc, file = event.get("proc") or _EMPTY, event.get("file") or _EMPTY
    if event.keys() <= _KNOWN_TOP and proc.keys() <= _KNOWN_PROC and file.keys() <= _KNOWN_FILE:
        return None
    extra: dict[str, Any] = {k: v for k, v in event.items() if k not in _KNOWN_TOP}
    extra.update({f"proc.{k}": v for k, v in proc.items() if k not in _KNOWN_PROC})
    extra.update({f"file.{k}": v for k, v in file.items() if k not in _KNOWN_FILE})
    return to_json(dict(sorted(extra.items(), key=_label_order)))


def _label_order(item: tuple[Any, Any]) -> tuple[bool, str]:
    return not isinstance(item[0], str), str(item[0])  # msgpack may key by bin: after text


def _struct(within: str | None) -> list[pa.Field]:
    return [pa.field(f.key, _ARROW[f.kind]) for f in EVENT_FIELDS if f.within == within]


# The wire map as an Arrow struct: pyarrow converts a list of such dicts in C++.
_WIRE: Final = pa.struct([
    pa.field("ts", pa.int64()), pa.field("host", pa.string()), *_struct(None),
    pa.field("proc", pa.struct(_struct("proc"))), pa.field("file", pa.struct(_struct("file"))),
])  # fmt: skip


def event_table(events: list[Mapping[str, Any]]) -> pa.Table:
    """The Parquet table of `events` (already accepted by `check_event`)."""
    try:
        wire = pa.array(events, type=_WIRE)
    except (UnicodeEncodeError, pa.ArrowInvalid, pa.ArrowTypeError):
        return _event_table_by_column(events)  # text that is not UTF-8 somewhere
    parts = dict(zip(_WIRE.names, wire.flatten(), strict=True))
    sources = {
        None: parts,
        "proc": dict(zip(_WIRE.field("proc").type.names, parts["proc"].flatten(), strict=True)),
        "file": dict(zip(_WIRE.field("file").type.names, parts["file"].flatten(), strict=True)),
    }
    return _assemble(sources, len(events), pa.array([_extra(e) for e in events], pa.string()))


def _assemble(sources: Mapping[str | None, Mapping[str, pa.Array]], n: int,
              extra: pa.Array) -> pa.Table:  # fmt: skip
    """The event table from its columns by map (None: the event, "proc",
    "file"), all text valid UTF-8: the `_raw` companions null."""
    top = sources[None]
    arrays: dict[str, pa.Array] = {
        "ts": top["ts"].cast(TS_TYPE), "host_name": top["host"],
        "host_name_raw": pa.nulls(n, pa.binary()),
    }  # fmt: skip
    for f in EVENT_FIELDS:
        arrays[f.column] = sources[f.within][f.key]
        if f.has_raw:
            arrays[f.column + RAW_SUFFIX] = pa.nulls(n, _RAW_ARROW[f.kind])
    arrays["extra"] = extra
    return pa.Table.from_pydict(arrays, schema=EVENT_SCHEMA)


def _event_table_by_column(events: list[Mapping[str, Any]]) -> pa.Table:
    procs = [e.get("proc") or _EMPTY for e in events]
    files = [e.get("file") or _EMPTY for e in events]
    sources = {None: events, "proc": procs, "file": files}
    arrays: dict[str, pa.Array] = {"ts": pa.array([e["ts"] for e in events], TS_TYPE)}
    arrays["host_name"], arrays["host_name_raw"] = _text_column([e["host"] for e in events])
    for f in EVENT_FIELDS:
        key = f.key
        values = [s.get(key) for s in sources[f.within]]
        if f.kind == TEXT:
            arr, raw = _text_column(values)
        elif f.kind == TEXTS:
            arr, raw = _texts_column(values)
        else:
            arr, raw = pa.array(values, _ARROW[f.kind]), None
        arrays[f.column] = arr
        if f.has_raw:
            arrays[f.column + RAW_SUFFIX] = raw
    arrays["extra"] = pa.array([_extra(e) for e in events], pa.string())
    return pa.Table.from_pydict(arrays, schema=EVENT_SCHEMA)


# -- from the decoder's typed records (proto/fastpath.py) --------------------------


# `ts` and `host` as the decoder gives them, before _assemble makes their columns.
_AS_DECODED: Final[dict[tuple[str | None, str], pa.DataType]] = {
    (None, "ts"): pa.int64(), (None, "host"): pa.string(),
}


def _record_type(within: str | None, names: tuple[str, ...]) -> pa.StructType:
    """A struct's fields, in its order, as an Arrow struct of their columns'
    types: every field of the table has its column."""
    return pa.struct([
        pa.field(name, _AS_DECODED.get((within, name)) or _ARROW[_TYPED_KEYS[(within, name)].kind])
        for name in names
    ])  # fmt: skip


_TOP_NAMES: Final = tuple(n for n in fastpath.FIELDS[None] if n not in ("proc", "file"))
_get_top: Final = attrgetter(*_TOP_NAMES)
_RECORD_TYPES: Final[dict[str | None, pa.StructType]] = {
    None: _record_type(None, _TOP_NAMES),
    **{w: _record_type(w, fastpath.FIELDS[w]) for w in ("proc", "file")},
}


def records_table(records: Sequence[Any]) -> pa.Table:
    """The Parquet table of typed records (`Delivery.records`), with no map per
    event: each struct becomes a tuple, which pyarrow converts in one pass per
    map (event, proc, file). Records hold only valid UTF-8 and known keys, so
    the `_raw` columns and `extra` are null. Raises what pyarrow raises for a
    value no column holds (an int past int64): check_event says which."""
    n = len(records)
    cols: dict[str | None, dict[str, pa.Array]] = {}
    for within, rows in (
        (None, list(map(_get_top, records))),
        *((w, _sub_tuples(records, w)) for w in ("proc", "file")),
    ):
        array = pa.array(rows, _RECORD_TYPES[within])
        cols[within] = dict(zip(_RECORD_TYPES[within].names, array.flatten(), strict=True))
    return _assemble(cols, n, pa.nulls(n, pa.string()))


def _sub_tuples(records: Sequence[Any], within: str) -> list[tuple[Any, ...]]:
    """The `proc` (or `file`) struct of every record as a tuple; all None where absent."""
    empty = fastpath.EMPTY[within]
    subs = [empty if s is None else s for s in map(attrgetter(within), records)]
    return list(map(astuple, subs))


def append_alert(
    buf: ColumnBuffer, alert: Mapping[str, Any], *, ts: int, host: str, level: str, seq: int,
    alert_id: str,
) -> None:  # fmt: skip
    try:
        data = to_json(alert)  # before anything is appended
    except (TypeError, ValueError, RecursionError) as exc:
        raise RowError(f"alert cannot be stored as JSON: {type(exc).__name__}: {exc}") from None
    values: dict[str, Any] = {"id": alert_id, "level": level}
    for column, paths in _ALERT_SOURCES.items():
        values[column] = alert_map.find(alert, paths)
    cells: dict[str, tuple[Any, Any]] = {}
    for f in _ALERT_FIELDS:
        value = values[f.key]
        if f.kind == TEXT:
            cells[f.key] = text_cell(value) if isinstance(value, str) else (None, None)
        else:  # an int column: keep it only if it fits
            ok = type(value) is int and _INT64_MIN <= value <= _INT64_MAX
            cells[f.key] = (value if ok else None, None)
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
