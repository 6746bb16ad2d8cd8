"""The archive's native decoder (fastcols.c), when this install has it.

It decodes a fetched batch's payloads in one call, every event straight into
the Arrow buffers of its columns: no msgspec struct, no tuple, no Python
object per event but its id (the dedup key). It takes only messages the
reference path (proto/fastpath.py, then columns.records_table) would turn
into rows unchanged, each of one host, one type and one UTC day; any other
goes through that path. Built by `pip install` (setup.py) where a C compiler
is found; without it, or with SNOOPBUS_NATIVE=0, every message takes the
reference path: the same rows, slower. The archiver says which in its log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa

from snoopbus.proto import EVENT_TYPES, MAX_BATCH_EVENTS, MAX_PAYLOAD_BYTES
from snoopbus.proto.native import disabled, optional_extension

from .columns import (
    _RAW_ARROW,
    BOOL,
    EVENT_FIELDS,
    EVENT_SCHEMA,
    INT,
    NS_PER_DAY,
    RAW_SUFFIX,
    TEXT,
    TEXTS,
    TS_TYPE,
    UINT,
    nulls,
)

_fastcols, MISSING = optional_extension("snoopbus.consumers.archive._fastcols")

_KIND_CODES: Final = {INT: 0, UINT: 1, TEXT: 2, TEXTS: 3, BOOL: 4}
_WITHIN: Final = {None: 0, "proc": 1, "file": 2}
# The decoder's columns: ts and host first, then the table's fields in order.
_COLUMNS: Final = [(0, "ts", INT), (0, "host", TEXT)] + [
    (_WITHIN[f.within], f.key, f.kind) for f in EVENT_FIELDS
]
_ARROW_TYPES: Final = {INT: pa.int64(), UINT: pa.uint64(), TEXT: pa.string(),
                       TEXTS: pa.list_(pa.string()), BOOL: pa.bool_()}  # fmt: skip


def status() -> str:
    if _fastcols is None:
        return f"native decoder: {MISSING}; every event takes the reference path"
    if disabled():
        return "native decoder: built, off (SNOOPBUS_NATIVE=0)"
    return "native decoder: built (consumers/archive/fastcols.c)"


@dataclass(frozen=True)
class Span:
    """One message's rows in its batch's table: rows [start, stop), all of one
    host (as sent), one type and one UTC day (days since the epoch)."""

    start: int
    stop: int
    day: int
    host: str
    type: str

    @property
    def count(self) -> int:
        return self.stop - self.start


class Decoded:
    """A batch's payloads as one table's columns; spans[i] is payload i's
    rows, None for one the native decoder left to the reference path."""

    def __init__(self, rows: int, spans: list[Span | None], ids: list[str],
                 buffers: list[tuple[Any, ...]]) -> None:  # fmt: skip
        self.rows = rows
        self.spans = spans
        self.ids = ids  # of every row, in order
        self._buffers = buffers
        self._table: pa.Table | None = None

    def table(self) -> pa.Table:
        """The rows as the archive's event table (EVENT_SCHEMA)."""
        if self._table is None:
            self._table = self._make_table()
        return self._table

    def _make_table(self) -> pa.Table:
        n = self.rows
        arrays = [_array(kind, n, bufs) for (_, _, kind), bufs in
                  zip(_COLUMNS, self._buffers, strict=True)]  # fmt: skip
        self._buffers = []  # the table holds them now
        ts, host, *fields = arrays
        out: dict[str, pa.Array] = {
            "ts": ts.view(TS_TYPE), "host_name": host, "host_name_raw": nulls(n, pa.binary()),
        }  # fmt: skip
        for f, arr in zip(EVENT_FIELDS, fields, strict=True):
            out[f.column] = arr
            if f.has_raw:  # text the decoder took is valid UTF-8: never needed
                out[f.column + RAW_SUFFIX] = nulls(n, _RAW_ARROW[f.kind])
        out["extra"] = nulls(n, pa.string())
        return pa.Table.from_pydict(out, schema=EVENT_SCHEMA)


def _array(kind: str, n: int, bufs: tuple[Any, ...]) -> pa.Array:
    valid = None if bufs[0] is None else pa.py_buffer(bufs[0])
    if kind == TEXTS:
        _, offsets, item_offsets, chars = bufs
        items = pa.Array.from_buffers(pa.string(), len(item_offsets) // 4 - 1,
                                      [None, pa.py_buffer(item_offsets), pa.py_buffer(chars)])
        return pa.Array.from_buffers(_ARROW_TYPES[kind], n, [valid, pa.py_buffer(offsets)],
                                     children=[items])  # fmt: skip
    return pa.Array.from_buffers(_ARROW_TYPES[kind], n,
                                 [valid, *(pa.py_buffer(b) for b in bufs[1:])])


class Decoder:
    """fastcols.Decoder set up with the archive's columns."""

    def __init__(self) -> None:
        if _fastcols is None:
            raise RuntimeError(status())
        index = {(w, key): i for i, (w, key, _) in enumerate(_COLUMNS)}
        required = tuple(index[(0, key)] for key in ("v", "id", "ts", "host", "type"))
        self._decoder = _fastcols.Decoder(
            [(w, key, _KIND_CODES[kind]) for w, key, kind in _COLUMNS], required,
            ("proc", "file"), tuple(EVENT_TYPES), NS_PER_DAY, MAX_BATCH_EVENTS,
            MAX_PAYLOAD_BYTES,
        )  # fmt: skip

    def decode(self, payloads: Sequence[bytes]) -> Decoded:
        rows, spans, ids, buffers = self._decoder.decode(payloads)
        return Decoded(rows, [None if s is None else Span(*s) for s in spans], ids, buffers)


def decoder() -> Decoder | None:
    """The native decoder, or None when not built or turned off."""
    return None if _fastcols is None or disabled() else Decoder()
