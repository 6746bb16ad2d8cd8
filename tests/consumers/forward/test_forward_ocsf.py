"""OCSF output validated against the OCSF schema's rules for Process Activity
(1007) and File System Activity (1001), to a file and over HTTP.

The rules below are a subset of the OCSF schema (ocsf/ocsf-schema: events/base_event,
events/system/system.json, process_activity.json, file_activity.json, the
objects used and the dictionary types; events/findings/finding.json and
detection_finding.json for alerts): required attributes, the attributes
each class and object allows, their types and the activity_id enums.
`ocsf-lib` needs the schema server or a schema checkout to validate, so the
rules are kept here; an attribute not listed fails the test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from snoopbus.consumers.forward import Item, parse_alert
from snoopbus.consumers.forward.ocsf import to_ocsf
from snoopbus.proto import EVENT_TYPES
from tests.support.events import nth_alert, nth_event, publish_alert, publish_events
from tests.support.forward import forwarding, http_receiver
from tests.support.waits import until

INT, STR = "integer", "string"
BASE = {
    "required": {"activity_id", "category_uid", "class_uid", "severity_id", "time", "type_uid",
                 "metadata"},
    "attrs": {"activity_id": INT, "category_uid": INT, "class_uid": INT, "severity_id": INT,
              "time": INT, "type_uid": INT, "metadata": "metadata", "status_id": INT,
              "class_name": STR, "category_name": STR, "activity_name": STR, "type_name": STR,
              "severity": STR, "status": STR},
}  # fmt: skip
# The captions of the schema's enums (ocsf-schema 1.3.0: the classes' activity_id
# and status_id, base_event's category/severity_id, finding.json's status_id).
CLASS_NAMES = {1007: "Process Activity", 1001: "File System Activity", 2004: "Detection Finding"}
CATEGORY_NAMES = {1: "System Activity", 2: "Findings"}
ACTIVITY_NAMES = {
    1007: {0: "Unknown", 1: "Launch", 2: "Terminate", 3: "Open", 4: "Inject", 5: "Set User ID",
           99: "Other"},
    1001: {0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete", 5: "Rename",
           6: "Set Attributes", 7: "Set Security", 8: "Get Attributes", 9: "Get Security",
           10: "Encrypt", 11: "Decrypt", 12: "Mount", 13: "Unmount", 14: "Open", 99: "Other"},
    2004: {0: "Unknown", 1: "Create", 2: "Update", 3: "Close", 99: "Other"},
}  # fmt: skip
SEVERITY_NAMES = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High",
                  5: "Critical", 6: "Fatal", 99: "Other"}  # fmt: skip
STATUS_NAMES = {0: "Unknown", 1: "Success", 2: "Failure", 99: "Other"}
FINDING_STATUS_NAMES = {0: "Unknown", 1: "New", 2: "In Progress", 3: "Suppressed",
                        4: "Resolved", 99: "Other"}  # fmt: skip
CLASSES: dict[int, dict[str, Any]] = {
    1007: {"category": 1, "required": {"process", "actor", "device"},
           "attrs": {"process": "process", "exit_code": INT, "device": "device",
                     "actor": "actor"},
           "activity_ids": {0, 1, 2, 3, 4, 5, 99}},
    1001: {"category": 1, "required": {"file", "actor", "device"},
           "attrs": {"file": "file", "file_result": "file", "device": "device",
                     "actor": "actor"},
           "activity_ids": {0, *range(1, 15), 99}},
    2004: {"category": 2, "required": {"finding_info"},
           "attrs": {"finding_info": "finding_info", "evidences": "[evidence]",
                     "device": "device"},
           "activity_ids": {0, 1, 2, 3, 99}},
}  # fmt: skip
OBJECTS: dict[str, dict[str, Any]] = {
    "metadata": {"required": {"version", "product"},
                 "attrs": {"version": STR, "product": "product", "uid": STR,
                           "original_time": STR}},
    "product": {"required": {"vendor_name"}, "attrs": {"name": STR, "vendor_name": STR}},
    "device": {"required": {"type_id"}, "attrs": {"hostname": STR, "type_id": INT}},
    "actor": {"required": set(), "at_least_one": {"process", "user"},
              "attrs": {"process": "process", "user": "user"}},
    "process": {"required": set(), "at_least_one": {"pid", "uid"},
                "attrs": {"pid": INT, "tid": INT, "name": STR, "cmd_line": STR, "file": "file",
                          "user": "user", "parent_process": "process"}},
    "file": {"required": {"name", "type_id"},
             "attrs": {"name": STR, "path": STR, "parent_folder": STR, "type_id": INT,
                       "uid": STR}},
    "user": {"required": set(), "attrs": {"uid": STR, "name": STR}},
    "finding_info": {"required": {"uid"},
                     "attrs": {"uid": STR, "title": STR, "desc": STR, "types": "[string]",
                               "analytic": "analytic"}},
    "analytic": {"required": {"type_id"}, "attrs": {"uid": STR, "name": STR, "type_id": INT}},
    "evidence": {"required": set(), "attrs": {"process": "process"}},
}  # fmt: skip
FILE_TYPE_IDS = {0, 1, 2, 3, 4, 5, 6, 7, 99}
DEVICE_TYPE_IDS = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 99}


def _check(value: Any, kind: str, where: str) -> None:
    if kind.startswith("["):  # an array of the type in brackets
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            _check(item, kind[1:-1], f"{where}[{i}]")
    elif kind == INT:
        assert isinstance(value, int) and not isinstance(value, bool), where
    elif kind == STR:
        assert isinstance(value, str), where
        assert not any(0xD800 <= ord(c) <= 0xDFFF for c in value), f"{where}: lone surrogate"
    else:
        _object(value, kind, where)


def _object(obj: Any, name: str, where: str) -> None:
    spec = OBJECTS[name]
    assert isinstance(obj, dict), where
    missing = spec["required"] - set(obj)
    assert not missing, f"{where}: missing required {missing}"
    if "at_least_one" in spec:
        assert set(obj) & spec["at_least_one"], f"{where}: needs one of {spec['at_least_one']}"
        for key in spec["at_least_one"] & set(obj):
            assert obj[key] not in ({}, None, ""), f"{where}.{key} is empty"
    for key, value in obj.items():
        assert key in spec["attrs"], f"{where}.{key} is not an attribute of {name}"
        _check(value, spec["attrs"][key], f"{where}.{key}")
    if name == "file":
        assert obj["type_id"] in FILE_TYPE_IDS
    if name == "device":
        assert obj["type_id"] in DEVICE_TYPE_IDS


def validate_ocsf(doc: dict[str, Any]) -> None:
    cls = CLASSES[doc["class_uid"]]
    required = BASE["required"] | cls["required"]
    assert not required - set(doc), f"missing required {required - set(doc)}"
    attrs = {**BASE["attrs"], **cls["attrs"]}
    for key, value in doc.items():
        assert key in attrs, f"{key} is not an attribute of class {doc['class_uid']}"
        _check(value, attrs[key], key)
    assert doc["category_uid"] == cls["category"]
    assert doc["activity_id"] in cls["activity_ids"]
    assert doc["type_uid"] == doc["class_uid"] * 100 + doc["activity_id"]
    assert doc["severity_id"] in {0, 1, 2, 3, 4, 5, 6, 99}
    # Each caption is the one the schema gives its number.
    assert doc["class_name"] == CLASS_NAMES[doc["class_uid"]]
    assert doc["category_name"] == CATEGORY_NAMES[doc["category_uid"]]
    assert doc["activity_name"] == ACTIVITY_NAMES[doc["class_uid"]][doc["activity_id"]]
    assert doc["type_name"] == f"{doc['class_name']}: {doc['activity_name']}"
    assert doc["severity"] == SEVERITY_NAMES[doc["severity_id"]]
    if "status_id" in doc:
        names = FINDING_STATUS_NAMES if doc["class_uid"] == 2004 else STATUS_NAMES
        assert doc["status"] == names[doc["status_id"]]
    json.dumps(doc, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("type_", sorted(EVENT_TYPES))
def test_every_event_type_is_valid_ocsf(type_: str) -> None:
    event = nth_event(4, type_, ret=0)
    event["proc"].update(parent_exe="/bin/sh", parent_argv=["sh"])
    if type_ == "renamed":
        event["file"]["old_path"] = "/tmp/old.txt"
    doc = to_ocsf(Item("event", event, 0, "s"))
    validate_ocsf(doc)
    assert doc["metadata"]["uid"] == "inst-4" and doc["time"] == 1_763_776_800_123


def test_exec_exit_and_rename_specifics() -> None:
    name = b"x\xff".decode("utf-8", "surrogateescape")
    exec_doc = to_ocsf(Item("event", nth_event(1, "exec"), 0, "s"))
    assert (exec_doc["class_uid"], exec_doc["activity_id"]) == (1007, 1)
    assert exec_doc["process"]["cmd_line"] == "bash -c echo 1"
    assert exec_doc["actor"]["process"] == {"pid": 1}
    exit_doc = to_ocsf(Item("event", nth_event(2, "exit"), 0, "s"))
    assert (exit_doc["activity_id"], exit_doc["exit_code"]) == (2, 0)
    event = nth_event(3, "renamed")
    event["file"].update(old_path=f"/a/{name}", path="/b/new")
    doc = to_ocsf(Item("event", event, 0, "s"))
    validate_ocsf(doc)
    assert doc["activity_id"] == 5 and doc["file"]["name"] == "x\\xff"
    assert doc["file_result"]["path"] == "/b/new"


def test_alert_is_a_detection_finding() -> None:
    doc = to_ocsf(Item("alert", parse_alert(nth_alert(1, "high")), 0, "s"))
    validate_ocsf(doc)
    assert doc["status_id"] == 1  # New
    assert (doc["class_uid"], doc["category_uid"], doc["type_uid"]) == (2004, 2, 200401)
    assert doc["severity_id"] == 4 and doc["finding_info"]["analytic"]["uid"] == "rule-1"


async def test_ocsf_file_sink(nc, js, tmp_path: Path) -> None:
    out = tmp_path / "ocsf.jsonl"
    events = [nth_event(i, t) for i, t in enumerate(sorted(EVENT_TYPES))]
    async with forwarding(nc, f"ocsf+file://{out}?alerts=0"):
        await publish_events(js, events)
        await until(lambda: out.exists() and len(out.read_text().splitlines()) == len(events))
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    for doc in docs:
        validate_ocsf(doc)
    assert {d["class_uid"] for d in docs} == {1007, 1001}


async def test_ocsf_http_sink(nc, js) -> None:
    async with http_receiver() as rx:
        async with forwarding(nc, f"ocsf+http://127.0.0.1:{rx.port}/lake?min_severity=high"):
            await publish_events(js, [nth_event(i, "open") for i in range(5)], per_msg=5)
            await publish_alert(js, nth_alert(9, "critical"))
            await until(lambda: len(rx.webhook_items) == 6)
    for doc in rx.webhook_items:
        validate_ocsf(doc)
    assert sorted(d["class_uid"] for d in rx.webhook_items) == [1001] * 5 + [2004]


def test_unknown_parent_gives_no_parent_process() -> None:
    event = nth_event(1, "exec")
    del event["proc"]["ppid"]
    event["proc"]["parent_exe"] = "/bin/sh"
    doc = to_ocsf(Item("event", event, 0, "s"))
    validate_ocsf(doc)
    assert "parent_process" not in doc["process"]
    assert doc["actor"] == {"user": {"uid": "1000"}}
