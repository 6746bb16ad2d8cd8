"""`snoopbus query --dir PATH [filters]`: find events (or alerts) in the archive."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snoopbus.consumers.printable import printable
from snoopbus.proto import exits, local_stack

if TYPE_CHECKING:  # pyarrow loads only when a query runs
    from .query import Engine, Filters


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "query",
        help="search the archive written by `consume archive`",
        description="Search the Parquet archive. Filters combine with AND. Times are ISO 8601 "
        "(UTC unless an offset is given) or ages such as 90s, 15m, 2h, 7d. Uses DuckDB when "
        "installed (pip install 'snoopbus[query]'), else pyarrow.",
    )
    p.add_argument("--dir", type=Path, default=None, metavar="PATH",
                   help="archive folder (default: the archive of the stack `snoopbus up` runs)")
    p.add_argument("--since", metavar="TIME", help="from this time (inclusive)")
    p.add_argument("--until", metavar="TIME", help="up to this time (exclusive)")
    p.add_argument("--host", action="append", default=[], metavar="HOST",
                   help="host name (repeatable)")
    p.add_argument("--type", action="append", default=[], metavar="TYPE",
                   help="event type, e.g. exec, open, renamed (repeatable, or comma-separated)")
    p.add_argument("--path", metavar="GLOB", help="file path glob, e.g. '/etc/*shadow*'")
    p.add_argument("--pid", type=int, action="append", default=[], metavar="PID",
                   help="process id (repeatable)")
    p.add_argument("--comm", metavar="GLOB", help="process name (comm), glob allowed")
    p.add_argument("--where", metavar="SQL",
                   help="extra SQL condition over the columns (DuckDB only), "
                   "e.g. \"proc_uid = 0 AND ret < 0\"")
    p.add_argument("--alerts", action="store_true", help="search alerts instead of events")
    p.add_argument("--tree", type=int, metavar="PID",
                   help="show the process tree around PID: parents, children, their files")
    p.add_argument("--limit", type=int, metavar="N", help="at most N rows (the earliest)")
    p.add_argument("--count-by", metavar="FIELD",
                   help="count the matches by a column instead of listing them, most first: "
                   "comm, exe, path, type, host, uid... (proc_/file_ prefixes optional)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object per line")
    out.add_argument("--csv", action="store_true", help="CSV with every column")
    out.add_argument("--plain", action="store_true", help="plain table, even if rich is installed")
    p.add_argument("--engine", choices=("auto", "duckdb", "pyarrow"), default=None,
                   help="query engine (default: $SNOOPBUS_QUERY_ENGINE or auto)")
    p.set_defaults(func=run)


def local_archive() -> Path:
    """The archive of the stack `up` runs here; else the user must say where."""
    from .query import QueryError

    found = local_stack.archive_dir("query")  # LocalStackRefused: not root's
    if found is None:
        raise QueryError("no --dir given and no `snoopbus up` running here: pass --dir "
                         "with the archive folder ([consumer.archive] dir)")
    return found


def run(args: argparse.Namespace) -> int:
    try:
        from .query import Filters, QueryError, parse_time, pick_engine, run_query
    except ImportError as exc:  # a host installed without the archive role
        print(f"snoopbus query: needs {exc.name} that is not installed: "
              "pip install 'snoopbus[archive]' (or 'snoopbus[all]')", file=sys.stderr)
        return exits.USAGE

    try:
        if args.dir is None:
            args.dir = local_archive()
        check_archive(args.dir)
        types = check_types(t for item in args.type for t in item.split(",") if t)
        f = Filters(
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until) if args.until else None,
            hosts=tuple(args.host), types=types, path=args.path, pids=tuple(args.pid),
            comm=args.comm, where=args.where,
        )  # fmt: skip
        engine = pick_engine(args.engine)
        if args.tree is not None:
            return _tree(args, f, engine)
        kind = "alerts" if args.alerts else "events"
        if args.alerts and (f.types or f.path or f.pids or f.comm):
            raise QueryError("--alerts takes --since/--until/--host/--where only")
        rows = run_query(args.dir, f, kind=kind, limit=args.limit, engine=engine)
        if args.count_by:
            return _count(rows, args.count_by, args.json)
    except (QueryError, local_stack.LocalStackRefused) as exc:
        return exits.fail("query", exc)
    from . import render

    if args.json:
        render.write_json(rows, sys.stdout)
    elif args.csv:
        render.write_csv(rows, sys.stdout)
    else:
        render.write_table(rows, sys.stdout, plain=args.plain)
        print(f"{len(rows)} {kind} ({engine.name})", file=sys.stderr)
    return 0


def check_archive(root: Path) -> None:
    """An archive folder, or one clear error: a state folder, a partitioned archive,
    a typo would otherwise answer "0 events"."""
    from .layout import KINDS
    from .query import QueryError

    if not root.is_dir():
        raise QueryError(f"no archive at {root}: no such folder")
    if any((root / kind).is_dir() for kind in KINDS):
        return
    inside = sorted(p for p in root.glob("*/") if any((p / k).is_dir() for k in KINDS))
    if inside:
        shown = ", ".join(str(p) for p in inside)
        raise QueryError(f"{root} is not an archive but holds {len(inside)}: {shown}; "
                         f"query one with --dir {inside[0]}")  # fmt: skip
    raise QueryError(f"{root} is not an archive (no events/ or alerts/ folder in it): give "
                     "the archiver's --dir ([consumer.archive] dir; under `up`, "
                     "<state_dir>/archive)")  # fmt: skip


def check_types(types: Iterable[str]) -> tuple[str, ...]:
    from snoopbus.proto.schema import EVENT_TYPES

    from .query import QueryError

    out = tuple(types)
    unknown = [t for t in out if t not in EVENT_TYPES]
    if unknown:
        raise QueryError(f"unknown event type {', '.join(map(repr, unknown))}: the types are "
                         f"{', '.join(EVENT_TYPES)} (a write is modify, then close_write)")
    return out


def _count(rows: list[dict[str, Any]], field: str, as_json: bool) -> int:
    from collections import Counter

    from .query import QueryError

    columns = set().union(*(r.keys() for r in rows)) if rows else set()
    column = next((c for c in (field, f"proc_{field}", f"file_{field}") if c in columns), None)
    if column is None and rows:
        raise QueryError(f"--count-by {field}: no such column (columns: "
                         f"{', '.join(sorted(columns))})")  # fmt: skip
    counts = Counter(_hashable(r.get(column)) for r in rows) if column else Counter()
    for value, n in counts.most_common():
        if as_json:
            print(json.dumps({column: value, "count": n}, default=str))
        else:
            print(f"{n:>10}  {printable(str(value))}")
    print(f"{len(rows)} matches, {len(counts)} distinct {column or field}", file=sys.stderr)
    return 0


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _tree(args: argparse.Namespace, f: Filters, engine: Engine) -> int:
    from dataclasses import replace

    from . import tree
    from .query import QueryError, rows

    def select(q: Filters) -> list[dict[str, Any]]:
        return rows(engine.select(args.dir, "events", q, None))

    base = replace(f, pids=(), types=(), path=None, comm=None)
    try:
        procs, top = tree.build(select, args.tree, base)
    except QueryError as exc:
        return exits.fail("query", exc)
    print("\n".join(tree.render(procs, top, args.tree)))
    return 0
