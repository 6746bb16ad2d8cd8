"""pySigma processing pipelines: the default field map is one (pipelines/snoopbus.yml),
and users' pipelines (`--pipeline FILE`) run on each rule before the mapping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext
from sigma.collection import SigmaCollection
from sigma.processing.pipeline import ProcessingPipeline
from sigma.rule import SigmaRule

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers.alert.consumer import AlertConsumer
from snoopbus.consumers.alert.engine import Engine
from snoopbus.consumers.alert.fields import (
    DEFAULT_FIELD_MAP,
    DEFAULT_PIPELINE,
    FieldMapError,
    fields_of_pipeline,
)
from snoopbus.consumers.alert.loader import load_pipelines, load_rules, resolve_paths, rule_files
from snoopbus.proto import exits
from tests import sigma_corpus
from tests.test_alert_consumer import AlertWatch, alerts, exec_event, publish, running

__all__ = ["alerts"]  # the fixture, used by name below

SNOOPBUS = [sys.executable, "-m", "snoopbus.app"]

LOGON = """
title: root logon session
id: 3f1d0000-0000-4000-8000-0000000000b1
logsource: {product: linux, category: process_creation}
detection:
    selection: {LogonId: 0, Image|endswith: /sh}
    condition: selection
"""


def pipeline_file(tmp_path: Path, text: str, name: str = "p.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


LOGON_PIPELINE = """
name: logon is the uid
priority: 10
transformations:
  - id: logon_uid
    type: field_name_mapping
    mapping: {LogonId: proc.uid}
    rule_conditions: [{type: logsource, product: linux, category: process_creation}]
"""


def test_the_default_map_is_the_shipped_pipeline_applied_by_pysigma() -> None:
    """Applying pipelines/snoopbus.yml with pySigma to every packaged and corpus
    rule gives each field the very source the alerter's map reads it from."""
    pipeline_text = DEFAULT_PIPELINE.read_text()
    paths = resolve_paths(["default"])
    if sigma_corpus.CORPUS is not None:
        paths.append(sigma_corpus.CORPUS)
    checked = 0
    for path in rule_files(paths):
        for rule in SigmaCollection.from_yaml(path.read_text()).rules:
            category = rule.logsource.category
            if not isinstance(rule, SigmaRule) or category not in DEFAULT_FIELD_MAP:
                continue
            before = _fields(rule)
            ProcessingPipeline.from_yaml(pipeline_text).apply(rule)
            table = DEFAULT_FIELD_MAP[category]
            assert _fields(rule) == [table.get(f, f) for f in before], path
            checked += 1
    assert checked >= 10


def _fields(rule: SigmaRule) -> list[str]:
    out: list[str] = []

    def walk(detection: Any) -> None:
        for item in detection.detection_items:
            if hasattr(item, "detection_items"):
                walk(item)
            elif item.field:
                out.append(item.field)

    for detection in rule.detection.detections.values():
        walk(detection)
    return out


@pytest.mark.parametrize(("text", "error"), [
    ("transformations: [{type: field_name_prefix, prefix: x}]",
     "only field_name_mapping is read here"),
    ("transformations: [{type: field_name_mapping, mapping: {A: proc.exe}}]",
     "needs one logsource condition"),
    ("transformations: [{type: field_name_mapping, mapping: {A: [proc.exe, proc.comm]},"
     " rule_conditions: [{type: logsource, product: linux, category: file_event}]}]",
     "one source, not a list"),
    ("transformations: [{type: field_name_mapping, mapping: {A: 'nosuch(proc.exe)'},"
     " rule_conditions: [{type: logsource, product: linux, category: file_event}]}]",
     "unknown converter 'nosuch'"),
])  # fmt: skip
def test_the_default_pipeline_form_is_checked(text: str, error: str) -> None:
    with pytest.raises(FieldMapError, match=error):
        fields_of_pipeline(text, "x.yml")


def test_a_user_pipeline_maps_an_unmapped_field_to_an_event_path(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "logon.yml").write_text(LOGON)
    without = load_rules([tmp_path / "r"])
    assert [s.unmapped for s in without.skipped] == [("LogonId",)]
    pipeline = load_pipelines([pipeline_file(tmp_path, LOGON_PIPELINE)])
    report = load_rules([tmp_path / "r"], pipeline=pipeline)
    assert not report.skipped and report.rules[0].fields == {"proc.uid", "Image"}
    engine = Engine(report.rules)
    assert engine.match(exec_event(["/bin/sh"], uid=0))
    assert not engine.match(exec_event(["/bin/sh"], uid=1000))
    assert not engine.match(exec_event(["/bin/ls"], uid=0))


def test_any_pysigma_transformation_runs_and_the_logsource_condition_holds(
    tmp_path: Path,
) -> None:  # fmt: skip
    """A Sigma field renamed to another (`exe` -> Image) for process rules only, and
    pySigma's add_condition (root only) on every rule: both as pySigma applies them."""
    rules = tmp_path / "r"
    rules.mkdir()
    (rules / "proc.yml").write_text(LOGON.replace("LogonId: 0, Image|endswith", "exe|endswith")
                                    .replace("b1", "b2"))  # fmt: skip
    (rules / "file.yml").write_text(LOGON.replace("process_creation", "file_event")
                                    .replace("LogonId: 0, Image|endswith: /sh",
                                             "exe|endswith: /x").replace("b1", "b3"))  # fmt: skip
    pipeline = load_pipelines([pipeline_file(tmp_path, """
name: site
priority: 20
transformations:
  - id: exe_is_image
    type: field_name_mapping
    mapping: {exe: Image}
    rule_conditions: [{type: logsource, product: linux, category: process_creation}]
  - id: root_only
    type: add_condition
    conditions: {User: root}
""")])  # fmt: skip
    report = load_rules([rules], pipeline=pipeline)
    assert [r.title for r in report.rules] == ["root logon session"]
    assert report.rules[0].fields == {"Image", "User"}
    [skipped] = report.skipped  # the file rule keeps `exe`: no such field there
    assert skipped.kind == "unmapped" and skipped.unmapped == ("exe",)
    engine = Engine(report.rules)
    assert engine.match(exec_event(["/bin/sh"], uid=0))
    assert not engine.match(exec_event(["/bin/sh"], uid=1000))


def test_a_path_outside_the_event_schema_stays_unmapped(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "logon.yml").write_text(LOGON)
    text = LOGON_PIPELINE.replace("proc.uid", "proc.logon")
    report = load_rules([tmp_path / "r"], pipeline=load_pipelines([pipeline_file(tmp_path, text)]))
    assert [s.unmapped for s in report.skipped] == [("proc.logon",)]


def test_rules_commands_take_pipelines(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "logon.yml").write_text(LOGON)
    pipe = pipeline_file(tmp_path, LOGON_PIPELINE)
    out = subprocess.run([*SNOOPBUS, "rules", "check", str(tmp_path / "r"), "--json"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == exits.PROBLEMS
    out = subprocess.run([*SNOOPBUS, "rules", "check", str(tmp_path / "r"), "--json",
                          "--pipeline", str(pipe)], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == exits.OK, out.stdout
    assert json.loads(out.stdout)["loaded"][0]["fields"] == ["Image", "proc.uid"]
    event = json.dumps({"type": "exec", "proc": {"pid": 1, "uid": 0, "exe": "/bin/sh"}})
    out = subprocess.run([*SNOOPBUS, "rules", "test", str(tmp_path / "r"), "--event", "-",
                          "--pipeline", str(pipe)], input=event, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == exits.OK and "MATCH" in out.stdout
    bad = pipeline_file(tmp_path, "transformations: [{type: nosuch}]", "bad.yml")
    for argv in (["rules", "check", "default"], ["consume", "alert"]):
        out = subprocess.run([*SNOOPBUS, *argv, "--pipeline", str(bad)], capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        assert out.returncode == exits.USAGE, out.stderr
        assert f"--pipeline {bad}: Error in processing rule 1: Unknown transformation type " \
               "'nosuch'" in out.stderr  # fmt: skip


async def test_the_alerter_applies_its_pipeline_on_the_bus(
    tmp_path: Path, nats_server: NatsServer, js: JetStreamContext, alerts: AlertWatch
) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "logon.yml").write_text(LOGON)
    consumer = AlertConsumer([tmp_path / "r"], throttle=0,
                             pipelines=[pipeline_file(tmp_path, LOGON_PIPELINE)])  # fmt: skip
    async with running(consumer, nats_server.url):
        await publish(js, exec_event(["/bin/sh"], uid=1000), exec_event(["/bin/sh"], uid=0))
        [(_, alert)] = await alerts.wait(1)
        await alerts.quiet(0.5)
    assert alert["rule"]["title"] == "root logon session"
    assert alert["fields"] == {"Image": "/bin/sh", "proc.uid": 0}
