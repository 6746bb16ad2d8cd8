"""The one table of fields (proto/fields.py) against what is written beside it:
the TypedDicts, the validator, the archive's columns and proto/README.md."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from snoopbus.consumers.archive.columns import ALERT_SCHEMA, EVENT_SCHEMA, RAW_SUFFIX
from snoopbus.proto import alert_map, fields, schema
from snoopbus.proto.fields import ALERT_FIELDS, EVENT_FIELDS, TYPES, Field

README = Path(fields.__file__).parent / "README.md"
# The TypedDict annotation of each table type.
ANNOTATION = {"int": int, "uint": int, "str": str, "bool": bool, "float": float,
              "[str]": list[str]}  # fmt: skip


def leaves(table: tuple[Field, ...]) -> dict[str, Field]:
    return {f.name: f for f in table if f.type != "map"}


def test_the_table_is_well_formed() -> None:
    for table, kinds in ((EVENT_FIELDS, fields.EVENT_TYPES), (ALERT_FIELDS, fields.ALERT_KINDS)):
        names = [f.name for f in table]
        assert len(names) == len(set(names)), "a field listed twice"
        maps = {f.name for f in table if f.type == "map"}
        for f in table:
            assert f.type in TYPES, f
            assert f.on and set(f.on) <= set(kinds), f
            assert f.meaning and "\n" not in f.meaning, f
            assert f.parent == "" or f.parent in maps, f"{f.name}: its parent is not a map field"
    assert set(fields.REQUIRED) <= {f.name for f in EVENT_FIELDS}
    assert set(fields.ALERT_REQUIRED) <= {f.name for f in ALERT_FIELDS}


def typed_dict_fields(td: Any, prefix: str = "") -> dict[str, str]:
    """name -> table type of a TypedDict's keys, nested TypedDicts as maps with their keys."""
    out: dict[str, str] = {}
    for key, annotation in typing.get_type_hints(td).items():
        name = prefix + key
        if typing.is_typeddict(annotation):
            out[name] = "map"
            out.update(typed_dict_fields(annotation, name + "."))
        elif typing.get_origin(annotation) is dict:
            out[name] = "map"
        else:
            matches = [t for t, a in ANNOTATION.items() if a == annotation]
            assert matches, f"{name}: {annotation} is no table type"
            out[name] = matches[0]
    return out


def table_types(table: tuple[Field, ...]) -> dict[str, str]:
    return {f.name: "int" if f.type == "uint" else f.type for f in table}


@pytest.mark.parametrize(("td", "table"), [(schema.Event, EVENT_FIELDS),
                                           (alert_map.AlertMap, ALERT_FIELDS)],
                         ids=["event", "alert"])  # fmt: skip
def test_typed_dicts_have_the_tables_keys_and_types(td: Any, table: tuple[Field, ...]) -> None:
    assert typed_dict_fields(td) == table_types(table)


def test_the_validator_checks_every_field_with_its_type() -> None:
    tables = {"": schema._TOP_FIELDS, "proc": schema._PROC_FIELDS, "file": schema._FILE_FIELDS}
    seen = set()
    for f in EVENT_FIELDS:
        kind = tables[f.parent][f.key]
        seen.add(f.name)
        if f.type == "[str]":
            assert kind is schema._TEXT_LIST
        elif f.type == "map":
            assert isinstance(kind, schema._Nested) and kind.name == "map"
        else:
            assert kind is ANNOTATION[f.type], f
    assert seen == {f"{p}.{k}".lstrip(".") for p, t in tables.items() for k in t}


def archive_columns(names: list[str], special: dict[str, str]) -> dict[str, str]:
    """column -> wire field name, `_raw` companions left out."""
    out = {}
    for column in names:
        if column.endswith(RAW_SUFFIX) and column.removesuffix(RAW_SUFFIX) in names:
            continue
        if column in special:
            out[column] = special[column]
        else:
            within, _, key = column.partition("_")
            out[column] = f"{within}.{key}" if within in ("proc", "file") else column
    return out


def test_every_event_field_has_an_archive_column_and_every_column_a_field() -> None:
    columns = archive_columns(EVENT_SCHEMA.names, {"host_name": "host", "extra": ""})
    assert set(columns.values()) - {""} == set(leaves(EVENT_FIELDS))
    kinds = {"int": "int64", "uint": "uint64", "str": "string", "bool": "bool",
             "[str]": "list<item: string>"}  # fmt: skip
    for column, name in columns.items():
        if name and name not in ("ts", "host"):
            assert str(EVENT_SCHEMA.field(column).type) == kinds[leaves(EVENT_FIELDS)[name].type]


def test_alert_columns_come_from_alert_fields() -> None:
    """Alert columns are a few searched parts of the map (the whole is in `data`):
    each is an alert field, or a field of the alert's event."""
    sources = {"title": "rule.title", "rule_id": "rule.id", "event_id": "event.id",
               "proc_pid": "event.proc.pid", "proc_comm": "event.proc.comm",
               "file_path": "event.file.path", "host_name": "host"}  # fmt: skip
    alert, event = leaves(ALERT_FIELDS), leaves(EVENT_FIELDS)
    for column in archive_columns(ALERT_SCHEMA.names, {}):
        if column in ("stream_seq", "data"):
            continue  # the stream's, and the whole map
        name = sources.get(column, column)
        assert name in alert or name.removeprefix("event.") in event, column


# -- proto/README.md --------------------------------------------------------------


def readme_event_tables() -> dict[str, str]:
    """name -> type from the README's `Event map` tables (top level, `proc`, `file`);
    a row may name several keys (`uid`, `gid`)."""
    text = README.read_text()
    section = text[text.index("## Event map"): text.index("### Which system calls")]
    out: dict[str, str] = {}
    parent = ""
    for line in section.splitlines():
        if m := re.fullmatch(r"`(\w+)`:", line.strip()):
            parent = m[1]
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        kind = {"array of str": "[str]"}.get(cells[1], cells[1])
        for key in re.findall(r"`(\w+)`", cells[0]):
            out[f"{parent}.{key}".lstrip(".")] = kind
    return out


def test_readme_event_tables_list_every_field_with_its_type() -> None:
    assert readme_event_tables() == table_types(EVENT_FIELDS)


def test_readme_alert_table_is_the_generated_one() -> None:
    table = fields.markdown_table(ALERT_FIELDS)
    assert table in README.read_text(), "README.md: the alert map table is out of date:\n" + table


def test_the_default_sigma_pipeline_reads_only_table_fields() -> None:
    """A Sigma field mapped to a path no event has would never match: say so here."""
    pipeline = README.parents[1] / "consumers" / "alert" / "pipelines" / "snoopbus.yml"
    known = {f.name for f in EVENT_FIELDS}
    sources = [spec for item in yaml.safe_load(pipeline.read_text())["transformations"]
               for spec in item.get("mapping", {}).values()]  # fmt: skip
    assert len(sources) > 10
    for spec in sources:
        path = re.fullmatch(r"(?:\w+\()?([\w.]+)\)?", spec)
        assert path and path[1] in known, f"{spec}: no such event field"
