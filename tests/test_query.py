"""`snoopbus query` over a real archive: both engines, every filter, every output, --tree."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext

from snoopbus.app.main import main as snoopbus_main
from snoopbus.app.natsd import NatsServer
from snoopbus.consumers.archive.columns import append_event
from snoopbus.consumers.archive.layout import PartKey, day_of
from snoopbus.consumers.archive.query import (
    ENGINE_ENV,
    ArrowEngine,
    DuckDBEngine,
    Filters,
    QueryError,
    glob_regex,
    parse_time,
    pick_engine,
    run_query,
)
from snoopbus.consumers.archive.writer import Writer
from snoopbus.proto import ensure_stream, host_token, text_from_kernel

from .test_archive_support import BASE_TS, archiver, make_event, publish_events, settled

DAY = 86_400 * 10**9
ENGINES = [DuckDBEngine(), ArrowEngine()]
ODD_PATH = text_from_kernel(b"/srv/caf\xe9/\xff\xfe.bin")


def write_archive(root: Path, events: list[dict[str, Any]]) -> None:
    """Straight through the writer: no bus needed to test reading."""
    w = Writer(root)
    for ev in events:
        part = PartKey("events", day_of(ev["ts"]), host_token(ev["host"]))
        append_event(w.window.buffer(part), ev)
        w.window.rows += 1  # what Archiver._attach counts
    w.commit(w.take())


def proc_event(n: int, kind: str, pid: int, ppid: int, host: str = "web1", **extra: Any,
               ) -> dict[str, Any]:  # fmt: skip
    ev: dict[str, Any] = {
        "v": 1, "id": f"t-{n}", "ts": BASE_TS + 2 * DAY + n * 10**9, "host": host, "type": kind,
        "proc": {"pid": pid, "ppid": ppid, "comm": extra.pop("comm", "sh"), "uid": 0},
    }  # fmt: skip
    if "argv" in extra:
        ev["proc"]["argv"] = extra.pop("argv")
    if "path" in extra:
        ev["file"] = {"path": extra.pop("path")}
    ev.update(extra)
    return ev


def sample() -> list[dict[str, Any]]:
    events = [make_event(n, host=f"h{n % 2}", ts=BASE_TS + n * DAY // 100) for n in range(300)]
    tree = [
        proc_event(1, "exec", 100, 1, argv=["bash", "-i"], comm="bash"),
        proc_event(2, "open", 100, 1, path="/home/u/.bashrc", comm="bash"),
        proc_event(3, "exec", 200, 100, argv=["cat", "/etc/shadow"], comm="cat"),
        proc_event(4, "open", 200, 100, path="/etc/shadow", comm="cat"),
        proc_event(5, "exec", 300, 200, argv=["grep", "root"], comm="grep"),
        proc_event(6, "exit", 300, 200, comm="grep", exit_code=0),
        proc_event(7, "exec", 1, 0, argv=["/sbin/init"], comm="init"),
        proc_event(8, "create", 100, 1, path=ODD_PATH, comm="bash"),
        proc_event(9, "exec", 100, 1, host="db.2", argv=["postgres"], comm="postgres"),
    ]
    return events + tree


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("query") / "archive"
    events = sample()
    write_archive(root, events)
    return root, events


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(r["id"] for r in rows)


def expect(events: list[dict[str, Any]], pred: Any) -> list[str]:
    return sorted(e["id"] for e in events if pred(e))


async def test_query_returns_exactly_the_archived_events_with_their_fields(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    await ensure_stream(js)
    events = [make_event(n, host=f"h{n % 3}") for n in range(400)]
    root = tmp_path / "archive"
    async with archiver(nats_server.url, root):
        await publish_events(js, events)
        await settled(js)
    for engine in ENGINES:
        got = run_query(root, Filters(), engine=engine)
        assert len(got) == len(events), engine.name
        by_id = {r["id"]: r for r in got}
        for ev in events:
            row = by_id[ev["id"]]
            assert (row["ts"], row["type"], row["host_name"]) == (ev["ts"], ev["type"], ev["host"])
            assert row["host"] == ev["host"]  # plain names are their own token
            assert row["proc_pid"] == ev["proc"]["pid"] and row["proc_comm"] == ev["proc"]["comm"]
            assert row["proc_argv"] == ev["proc"].get("argv")
            assert row["file_path"] == ev.get("file", {}).get("path")
            assert row["file_inode"] == ev.get("file", {}).get("inode")
        assert [r["ts"] for r in got] == sorted(r["ts"] for r in got)


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_filters(engine: Any, archive: tuple[Path, list[dict[str, Any]]]) -> None:
    root, events = archive
    since, until = BASE_TS + DAY // 2, BASE_TS + DAY + DAY // 3

    def q(**kw: Any) -> list[str]:
        return ids(run_query(root, Filters(**kw), engine=engine))

    assert q() == expect(events, lambda e: True)
    assert q(since=since, until=until) == expect(events, lambda e: since <= e["ts"] < until)
    assert q(hosts=("h1",)) == expect(events, lambda e: e["host"] == "h1")
    assert q(hosts=("db.2",)) == ["t-9"]  # by name; stored under its token db_2
    assert q(types=("exec", "exit")) == expect(events, lambda e: e["type"] in ("exec", "exit"))
    assert q(path="/etc/*shadow*") == ["t-4"]
    assert q(path="/var/data/1?/*") == expect(
        events, lambda e: e.get("file", {}).get("path", "").split("/")[3:4] in
        [[f"1{d}"] for d in range(10)],
    )  # fmt: skip
    assert q(pids=(200,)) == ["t-3", "t-4"]
    assert q(comm="gr*") == ["t-5", "t-6"]
    assert q(pids=(100,), hosts=("web1",), types=("open",)) == ["t-2"]
    assert q(until=BASE_TS) == []
    assert len(run_query(root, Filters(), engine=engine, limit=5)) == 5


def test_where_is_sql_for_duckdb_and_refused_without(
    archive: tuple[Path, list[dict[str, Any]]],
) -> None:
    root, _ = archive
    got = run_query(root, Filters(where="proc_ppid = 100 AND file_path IS NOT NULL"),
                    engine=DuckDBEngine())  # fmt: skip
    assert ids(got) == ["t-4"]
    with pytest.raises(QueryError, match="needs DuckDB"):
        run_query(root, Filters(where="true"), engine=ArrowEngine())
    with pytest.raises(QueryError, match="query failed"):
        run_query(root, Filters(where="no_such_column = 1"), engine=DuckDBEngine())


@pytest.mark.parametrize("engine", ["duckdb", "pyarrow"])
def test_non_utf8_path_round_trips_through_json(
    engine: str, archive: tuple[Path, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = archive
    code = snoopbus_main(["query", "--dir", str(root), "--pid", "100", "--type", "create",
                          "--json", "--engine", engine])  # fmt: skip
    assert code == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.isascii() is False or "\\udcff" in line
    row = json.loads(line)
    assert row["file_path"] == ODD_PATH
    assert row["file_path"].encode("utf-8", "surrogateescape") == b"/srv/caf\xe9/\xff\xfe.bin"
    assert row["ts"].endswith("Z") and row["ts_ns"] == BASE_TS + 2 * DAY + 8 * 10**9


def test_table_and_csv_output(
    archive: tuple[Path, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = archive
    assert snoopbus_main(["query", "--dir", str(root), "--host", "web1", "--plain"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["time", "host", "type", "pid", "ppid", "comm", "what", "ret"]
    assert any("cat /etc/shadow" in x for x in lines)
    assert any("/srv/caf\\xe9/\\xff\\xfe.bin" in x for x in lines)  # bad bytes shown, not lost
    assert "8 events" in err
    assert snoopbus_main(["query", "--dir", str(root), "--pid", "200", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["id"] for r in rows] == ["t-3", "t-4"]
    assert json.loads(rows[0]["proc_argv"]) == ["cat", "/etc/shadow"]
    assert snoopbus_main(["query", "--dir", str(root), "--pid", "200"]) == 0  # rich table
    assert "/etc/shadow" in capsys.readouterr().out


def test_tree_shows_parents_children_and_their_files(
    archive: tuple[Path, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = archive
    assert snoopbus_main(["query", "--dir", str(root), "--tree", "200", "--host", "web1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1  /sbin/init")
    assert "100  bash -i" in out[1]
    text = "\n".join(out)
    assert "200  cat /etc/shadow" in text and "<==" in text
    assert "files: open 1: /etc/shadow" in text
    assert "300  grep root" in text
    assert text.index("100  bash") < text.index("200  cat") < text.index("300  grep")
    assert snoopbus_main(["query", "--dir", str(root), "--tree", "100"]) == 2
    assert "several hosts" in capsys.readouterr().err


def test_without_duckdb_the_pyarrow_engine_answers(
    archive: tuple[Path, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    root, _ = archive
    monkeypatch.setitem(sys.modules, "duckdb", None)  # import duckdb now fails
    assert isinstance(pick_engine(), ArrowEngine)
    with pytest.raises(QueryError, match="not installed"):
        pick_engine("duckdb")
    assert snoopbus_main(["query", "--dir", str(root), "--path", "/etc/shadow", "--json"]) == 0
    assert [json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()] == ["t-4"]
    assert snoopbus_main(["query", "--dir", str(root), "--where", "true"]) == 2
    assert "needs DuckDB" in capsys.readouterr().err
    monkeypatch.delitem(sys.modules, "duckdb")
    monkeypatch.setenv(ENGINE_ENV, "pyarrow")
    assert isinstance(pick_engine(), ArrowEngine)


def test_times_and_globs() -> None:
    from datetime import UTC, datetime

    def ns(*parts: int) -> int:
        return int(datetime(*parts, tzinfo=UTC).timestamp()) * 10**9

    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert parse_time("2h", now) == ns(2026, 11, 22, 10)
    assert parse_time("2026-11-20", now) == ns(2026, 11, 20)
    assert parse_time("2026-11-20T01:00:00+01:00", now) == parse_time("2026-11-20T00:00Z", now)
    assert parse_time("today", now) == parse_time("2026-11-22", now)
    with pytest.raises(QueryError, match="cannot read time"):
        parse_time("last tuesday", now)
    assert glob_regex("/etc/*.d/[!a]?") == r"^/etc/.*\.d/[^a].$"


def test_missing_or_empty_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert snoopbus_main(["query", "--dir", str(tmp_path / "nope")]) == 2
    assert "no archive" in capsys.readouterr().err
    for engine in ENGINES:
        assert run_query(tmp_path, Filters(), engine=engine) == []


def test_a_state_folder_or_a_wrong_type_is_said_not_zero_events(
    archive: tuple[Path, list[dict[str, Any]]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    root, _ = archive
    state = root.parent  # what `up` keeps: the archive is one folder inside
    assert snoopbus_main(["query", "--dir", str(state)]) == 2
    err = capsys.readouterr().err
    assert f"is not an archive but holds 1: {root}" in err and f"--dir {root}" in err
    (tmp_path / "empty").mkdir()
    assert snoopbus_main(["query", "--dir", str(tmp_path / "empty")]) == 2
    assert "no events/ or alerts/ folder" in capsys.readouterr().err
    assert snoopbus_main(["query", "--dir", str(root), "--type", "exec,write"]) == 2
    err = capsys.readouterr().err
    assert "unknown event type 'write'" in err and "close_write" in err


@pytest.mark.parametrize("engine", ["pyarrow", "duckdb"])
def test_count_by_a_field(
    archive: tuple[Path, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str], engine: str
) -> None:
    root, events = archive
    want = Counter(e["proc"]["comm"] for e in events)
    assert snoopbus_main(["query", "--dir", str(root), "--count-by", "comm", "--json",
                          "--engine", engine]) == 0  # fmt: skip
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {g["proc_comm"]: g["count"] for g in got} == want
    assert [g["count"] for g in got] == sorted(want.values(), reverse=True)
    assert snoopbus_main(["query", "--dir", str(root), "--count-by", "colour"]) == 2
    assert "--count-by colour: no such column" in capsys.readouterr().err
