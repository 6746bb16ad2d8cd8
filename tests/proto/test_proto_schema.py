"""The event schema: names, families and the validator's errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from snoopbus.proto import (
    DERIVED_FILE_TYPES,
    EVENT_TYPES,
    FILE_TYPES,
    PROC_TYPES,
    SCHEMA_VERSION,
    SUMMARY_TYPES,
    SchemaError,
    family,
    validate_event,
)
from tests.support.events import full_event


def test_type_lists() -> None:
    assert SCHEMA_VERSION == 1
    assert len(FILE_TYPES) == 12
    assert set(EVENT_TYPES) == (set(PROC_TYPES) | set(FILE_TYPES) | set(DERIVED_FILE_TYPES)
                                | set(SUMMARY_TYPES))
    assert len(set(EVENT_TYPES)) == len(EVENT_TYPES)


@pytest.mark.parametrize("t", EVENT_TYPES)
def test_family(t: str) -> None:
    assert family(t) == ("proc" if t in PROC_TYPES else "file")


def test_family_unknown() -> None:
    with pytest.raises(SchemaError, match="unknown event type 'fork'"):
        family("fork")


def test_valid_event_is_returned_unchanged() -> None:
    event = full_event()
    before = copy.deepcopy(event)
    assert validate_event(event) is event
    assert event == before


def test_minimal_event() -> None:
    event = {"v": 1, "id": "x-1", "ts": 0, "host": "h", "type": "exit", "exit_code": 1}
    assert validate_event(event) == event


def test_unknown_keys_are_kept() -> None:
    event = full_event(future={"a": [1, 2]}, proc={"pid": 1, "new_thing": b"\x00"})
    event["file"]["future_field"] = None
    out = validate_event(event)
    assert out["future"] == {"a": [1, 2]}  # type: ignore[typeddict-item]
    assert out["proc"]["new_thing"] == b"\x00"  # type: ignore[typeddict-item]
    assert out["file"]["future_field"] is None  # type: ignore[typeddict-item]


def test_bytes_text_becomes_str_with_surrogateescape() -> None:
    event = full_event()
    event["file"]["path"] = b"/tmp/caf\xe9"
    event["proc"]["argv"] = ["ls", b"\xff\xfe"]
    event["host"] = b"h\x80"
    out = validate_event(event)
    assert out["file"]["path"] == "/tmp/caf\udce9"
    assert out["proc"]["argv"] == ["ls", "\udcff\udcfe"]
    assert out["host"] == "h\udc80"
    assert out["file"]["path"].encode("utf-8", "surrogateescape") == b"/tmp/caf\xe9"


def test_newer_version_is_rejected_clearly() -> None:
    with pytest.raises(SchemaError) as info:
        validate_event(full_event(v=2, ts="whatever"), index=3)
    assert str(info.value) == (
        "event[3].v: schema version 2 is newer than this snoopbus understands (1): "
        "upgrade snoopbus"
    )
    assert info.value.field == "event[3].v"


def _without(key: str) -> dict[str, Any]:
    event = full_event()
    del event[key]
    return event


def _proc(**kw: Any) -> dict[str, Any]:
    event = full_event()
    event["proc"].update(kw)
    return event


def _file(**kw: Any) -> dict[str, Any]:
    event = full_event()
    event["file"].update(kw)
    return event


@pytest.mark.parametrize(
    ("event", "field", "reason"),
    [
        (_without("v"), "event[2].v", "required key is missing"),
        (_without("id"), "event[2].id", "required key is missing"),
        (_without("ts"), "event[2].ts", "required key is missing"),
        (_without("host"), "event[2].host", "required key is missing"),
        (_without("type"), "event[2].type", "required key is missing"),
        (full_event(v="1"), "event[2].v", "must be int, got str"),
        (full_event(v=True), "event[2].v", "must be int, got bool"),
        (full_event(v=0), "event[2].v", "schema version 0 is not valid"),
        (full_event(ts=1.5), "event[2].ts", "must be int, got float"),
        (full_event(ts=True), "event[2].ts", "must be int, got bool"),
        (full_event(id=7), "event[2].id", "must be str, got int"),
        (full_event(id=""), "event[2].id", "must be 1 to 1024 printable ASCII"),
        (full_event(id="a b"), "event[2].id", "must be 1 to 1024 printable ASCII"),
        (full_event(id="x\udcff"), "event[2].id", "must be 1 to 1024 printable ASCII"),
        (full_event(id="é-1"), "event[2].id", "must be 1 to 1024 printable ASCII"),
        (full_event(id="x" * 1025), "event[2].id", "must be 1 to 1024 printable ASCII"),
        (full_event(host=""), "event[2].host", "must not be empty"),
        (full_event(host=None), "event[2].host", "must be str, got nil"),
        (full_event(type="fork"), "event[2].type", "unknown event type 'fork'"),
        (full_event(type=["open"]), "event[2].type", "must be str, got array"),
        (full_event(proc=[1]), "event[2].proc", "must be map, got array"),
        (full_event(file="x"), "event[2].file", "must be map, got str"),
        (full_event(cookie="1"), "event[2].cookie", "must be int, got str"),
        (full_event(ret=None), "event[2].ret", "must be int, got nil"),
        (full_event(exit_code=1.0), "event[2].exit_code", "must be int, got float"),
        (full_event(signal=False), "event[2].signal", "must be int, got bool"),
        (_proc(pid="1"), "event[2].proc.pid", "must be int, got str"),
        (_proc(tid=False), "event[2].proc.tid", "must be int, got bool"),
        (_proc(ppid=None), "event[2].proc.ppid", "must be int, got nil"),
        (_proc(uid=1.0), "event[2].proc.uid", "must be int, got float"),
        (_proc(gid="0"), "event[2].proc.gid", "must be int, got str"),
        (_proc(comm=1), "event[2].proc.comm", "must be str, got int"),
        (_proc(exe={}), "event[2].proc.exe", "must be str, got map"),
        (_proc(argv="ls -l"), "event[2].proc.argv", "must be array of str, got str"),
        (_proc(argv=["ls", 5]), "event[2].proc.argv[1]", "must be str, got int"),
        (_proc(argv=["ls", None]), "event[2].proc.argv[1]", "must be str, got nil"),
        (_proc(cwd=[]), "event[2].proc.cwd", "must be str, got array"),
        (_proc(cgroup="a"), "event[2].proc.cgroup", "must be int, got str"),
        (_proc(container=1), "event[2].proc.container", "must be str, got int"),
        (_proc(argv_truncated=1), "event[2].proc.argv_truncated", "must be bool, got int"),
        (_proc(exe_truncated="y"), "event[2].proc.exe_truncated", "must be bool, got str"),
        (_file(path=1), "event[2].file.path", "must be str, got int"),
        (_file(old_path=None), "event[2].file.old_path", "must be str, got nil"),
        (_file(flags="O_RDONLY"), "event[2].file.flags", "must be int, got str"),
        (_file(mode=0.5), "event[2].file.mode", "must be int, got float"),
        (_file(target=2), "event[2].file.target", "must be str, got int"),
        (_file(inode="1"), "event[2].file.inode", "must be int, got str"),
        (_file(dev=True), "event[2].file.dev", "must be int, got bool"),
        (_file(path_truncated=0), "event[2].file.path_truncated", "must be bool, got int"),
        (_file(mnt_ns="x"), "event[2].file.mnt_ns", "must be int, got str"),
    ],
)
def test_errors_name_the_field(event: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(SchemaError) as info:
        validate_event(event, index=2)
    assert info.value.field == field
    assert info.value.reason.startswith(reason)
    assert str(info.value) == f"{info.value.field}: {info.value.reason}"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("obj", [None, [], "event", 1, b"x"])
def test_event_must_be_a_map(obj: object) -> None:
    with pytest.raises(SchemaError) as info:
        validate_event(obj)
    assert info.value.field == "event"
    assert info.value.reason.startswith("must be a map")


def test_int_subclass_is_normalised() -> None:
    import enum

    class Pid(enum.IntEnum):
        INIT = 1

    event = _proc(pid=Pid.INIT)
    assert type(validate_event(event)["proc"]["pid"]) is int
