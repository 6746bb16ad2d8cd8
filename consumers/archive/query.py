"""Reading the archive back: filters, and two engines that apply them.

DuckDB (the optional extra `snoopbus[query]`) when it imports, else pyarrow's
dataset scanner; both prune date folders (and an older archive's host
folders) before reading a file, and row groups by their statistics (a file's
rows are sorted by host).
`--where` is SQL, so it needs DuckDB. Set SNOOPBUS_QUERY_ENGINE=pyarrow (or
--engine) to force the fallback.

Rows come back as dicts with the exact original text (`_raw` columns folded
back in, see columns.py), `ts` as int ns, `host` as the host token (the
file's column; an older file's folder) and `host_name` as the host reported.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from snoopbus.consumers.times import TimeError, parse_when, to_ns
from snoopbus.proto import host_token

from .columns import ALERT_SCHEMA, EVENT_SCHEMA, RAW_SUFFIX, TS_TYPE, restore_text, restore_texts

ENGINE_ENV = "SNOOPBUS_QUERY_ENGINE"
_PARTITIONING = ds.partitioning(
    pa.schema([("date", pa.string()), ("host", pa.string())]), flavor="hive"
)
_SCHEMAS = {"events": EVENT_SCHEMA, "alerts": ALERT_SCHEMA}


class QueryError(ValueError):
    """A query that cannot run as asked: one line for the user."""


@dataclass(frozen=True)
class Filters:
    since: int | None = None  # ns, inclusive
    until: int | None = None  # ns, exclusive
    hosts: tuple[str, ...] = ()  # host names or tokens
    types: tuple[str, ...] = ()
    path: str | None = None  # glob over file_path (or old_path)
    pids: tuple[int, ...] = ()
    ppids: tuple[int, ...] = ()
    comm: str | None = None  # glob
    where: str | None = None  # SQL, DuckDB only

    @property
    def host_tokens(self) -> list[str]:
        return [host_token(h) for h in self.hosts]

    def days(self) -> tuple[str | None, str | None]:
        """Date folders that can hold matches (inclusive bounds)."""
        first = _day(self.since) if self.since is not None else None
        last = _day(self.until - 1) if self.until is not None else None
        return first, last


def _day(ns: int) -> str:
    return datetime.fromtimestamp(ns // 10**9, UTC).strftime("%Y-%m-%d")


def parse_time(text: str, now: datetime | None = None) -> int:
    """ISO 8601 (UTC unless it says otherwise), `now`, `today`, or an age: 90s, 15m, 2h, 7d, 1w."""
    try:
        return to_ns(parse_when(text, now))
    except TimeError as exc:
        raise QueryError(str(exc)) from None


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def glob_regex(pattern: str) -> str:
    """A shell glob as an anchored RE2 pattern (`*` crosses `/`, as DuckDB's GLOB does)."""
    out, i = ["^"], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    out.append("$")
    return "".join(out)


class Engine(Protocol):
    name: str

    def select(self, root: Path, kind: str, f: Filters, limit: int | None) -> pa.Table: ...


class DuckDBEngine:
    name = "duckdb"

    def select(self, root: Path, kind: str, f: Filters, limit: int | None) -> pa.Table:
        import duckdb

        base = root / kind
        # Two layouts (layout.py): DuckDB takes one set of Hive keys per read_parquet.
        older = sorted(str(p) for p in base.glob("date=*/host=*/*.parquet"))
        newer = sorted(str(p) for p in base.glob("date=*/*.parquet"))
        if not older and not newer:
            return pa.table({})
        conds: list[str] = []
        params: list[str | int] = []  # duckdb's ? placeholders, in order
        first, last = f.days()
        if first:
            conds.append("date >= ?")
            params.append(first)
        if last:
            conds.append("date <= ?")
            params.append(last)
        if f.since is not None:
            conds.append("epoch_ns(ts) >= ?")
            params.append(f.since)
        if f.until is not None:
            conds.append("epoch_ns(ts) < ?")
            params.append(f.until)
        for column, values in (("host", f.host_tokens), ("type", list(f.types)),
                               ("proc_pid", list(f.pids)), ("proc_ppid", list(f.ppids))):
            if values:
                conds.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)
        # A pattern without wildcards is an equality: row-group statistics can prune it.
        if f.path is not None:
            op = "GLOB" if is_glob(f.path) else "="
            conds.append(f"(file_path {op} ? OR file_old_path {op} ?)")
            params += [f.path, f.path]
        if f.comm is not None:
            conds.append(f"proc_comm {'GLOB' if is_glob(f.comm) else '='} ?")
            params.append(f.comm)
        if f.where:
            conds.append(f"({f.where})")
        reads = [
            "SELECT * FROM read_parquet(?, hive_partitioning = true, union_by_name = true, "
            f"hive_types = {{{types}}})"
            for files, types in ((older, "'date': 'VARCHAR', 'host': 'VARCHAR'"),
                                 (newer, "'date': 'VARCHAR'")) if files
        ]  # fmt: skip
        sql = (
            "SELECT * FROM (" + " UNION ALL BY NAME ".join(reads) + ")"
            + (" WHERE " + " AND ".join(conds) if conds else "")
            + " ORDER BY ts"
            + (f" LIMIT {int(limit)}" if limit is not None else "")
        )
        con = duckdb.connect()
        try:
            files = [f for f in (older, newer) if f]
            return con.sql(sql, params=[*files, *params]).to_arrow_table()
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {exc}".splitlines()[0]) from None
        finally:
            con.close()


class ArrowEngine:
    name = "pyarrow"

    def select(self, root: Path, kind: str, f: Filters, limit: int | None) -> pa.Table:
        if f.where:
            raise QueryError(
                "--where is SQL and needs DuckDB: pip install 'snoopbus[query]'"
            )
        base = root / kind
        if not base.is_dir():
            return pa.table({})
        # The schema is this code's, not the first file's: files written before
        # a column existed read it as null, and one file's lack of it does not
        # hide it in the others (DuckDB's union_by_name does the same).
        found = ds.dataset(base, format="parquet", partitioning=_PARTITIONING)
        try:
            schema = pa.unify_schemas([found.schema, _SCHEMAS[kind]])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            schema = found.schema  # a file's column of another type: as before, the first file's
        dataset = ds.dataset(base, format="parquet", partitioning=_PARTITIONING, schema=schema)
        expr = ds.scalar(True)
        first, last = f.days()
        if first:
            expr &= ds.field("date") >= first
        if last:
            expr &= ds.field("date") <= last
        if f.since is not None:
            expr &= ds.field("ts") >= pa.scalar(f.since, type=TS_TYPE)
        if f.until is not None:
            expr &= ds.field("ts") < pa.scalar(f.until, type=TS_TYPE)
        for column, values in (("host", f.host_tokens), ("type", list(f.types)),
                               ("proc_pid", list(f.pids)), ("proc_ppid", list(f.ppids))):
            if values:
                expr &= ds.field(column).isin(values)
        if f.path is not None:
            expr &= _matches("file_path", f.path) | _matches("file_old_path", f.path)
        if f.comm is not None:
            expr &= _matches("proc_comm", f.comm)
        table = dataset.to_table(filter=expr)
        if table.num_rows:
            table = table.sort_by("ts")
        return table.slice(0, limit) if limit is not None else table


def _matches(column: str, pattern: str) -> ds.Expression:
    if not is_glob(pattern):
        return ds.field(column) == pattern
    return pc.match_substring_regex(ds.field(column), glob_regex(pattern))


def pick_engine(name: str | None = None) -> Engine:
    """`duckdb`, `pyarrow`, or auto (DuckDB when it imports): $SNOOPBUS_QUERY_ENGINE first."""
    choice = (name or os.environ.get(ENGINE_ENV) or "auto").lower()
    if choice not in ("auto", "duckdb", "pyarrow"):
        raise QueryError(f"unknown query engine {choice!r}: auto, duckdb or pyarrow")
    if choice in ("auto", "duckdb"):
        try:
            import duckdb  # noqa: F401
        except ImportError:
            if choice == "duckdb":
                raise QueryError("DuckDB is not installed: pip install 'snoopbus[query]'") from None
        else:
            return DuckDBEngine()
    return ArrowEngine()


def rows(table: pa.Table) -> list[dict[str, Any]]:
    """Arrow rows as dicts with exact text, ts in ns, and no `_raw` columns."""
    if table.num_columns == 0:
        return []
    if "ts" in table.column_names:
        i = table.schema.get_field_index("ts")
        table = table.set_column(i, "ts", table.column("ts").cast(pa.int64()))
    if "date" in table.column_names:
        i = table.schema.get_field_index("date")
        table = table.set_column(i, "date", table.column("date").cast(pa.string()))
    raw_pairs = [
        (name[: -len(RAW_SUFFIX)], name)
        for name in table.column_names
        if name.endswith(RAW_SUFFIX) and name[: -len(RAW_SUFFIX)] in table.column_names
    ]
    # Only columns that hold a raw value anywhere need the per-row fix-up.
    needed = [(col, raw) for col, raw in raw_pairs if table.column(raw).null_count < table.num_rows]
    out = table.drop_columns([raw for _, raw in raw_pairs])
    result: list[dict[str, Any]] = out.to_pylist()  # pyarrow is untyped
    for col, raw in needed:
        values = table.column(raw).to_pylist()
        for row, raw_value in zip(result, values, strict=True):
            if raw_value is not None:
                if isinstance(raw_value, list):
                    row[col] = restore_texts(row[col], raw_value)
                else:
                    row[col] = restore_text(row[col], raw_value)
    return result


def run_query(
    root: Path, f: Filters, *, kind: str = "events", limit: int | None = None,
    engine: Engine | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    engine = engine or pick_engine()
    return rows(engine.select(Path(root), kind, f, limit))
