"""`snoopbus rules check` and `snoopbus rules test`: offline, the alerter's own loader
and engine, each rule's classification and each exit status as documented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from snoopbus.consumers.alert.engine import Engine
from snoopbus.consumers.alert.fields import default_field_map
from snoopbus.consumers.alert.loader import load_rules, resolve_paths
from snoopbus.consumers.alert.matcher import UnmappedFields
from snoopbus.consumers.alert.rules_cli import match_report
from snoopbus.proto import exits
from tests import sigma_corpus

SNOOPBUS = [sys.executable, "-m", "snoopbus.app"]

GOOD = """
title: netcat started
id: 7d1c2a54-0000-4000-8000-000000000001
level: high
logsource: {product: linux, category: process_creation}
detection:
    selection_img: {Image|endswith: /nc}
    selection_cli: {CommandLine|contains: ' -e '}
    filter: {User: backup}
    condition: 1 of selection_* and not filter
"""
SYNTAX_ERROR = """
title: broken
id: 7d1c2a54-0000-4000-8000-000000000002
logsource: {product: linux, category: process_creation
detection:
    selection: {Image|endswith: /nc}
    condition: selection
"""
UNMAPPED = """
title: needs logon and session
id: 7d1c2a54-0000-4000-8000-000000000003
logsource: {product: linux, category: process_creation}
detection:
    selection: {Image|endswith: /sh, LogonId: 0}
    other: {SessionId: 7, CommandLine|contains: x}
    condition: selection or other
"""
WINDOWS = GOOD.replace("linux", "windows").replace("0001", "0004")


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SNOOPBUS, "rules", *args], capture_output=True, text=True,
                          input=stdin, timeout=120)  # fmt: skip


def rules_dir(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    for name, text in files.items():
        (folder / f"{name}.yml").write_text(text)
    return folder


def check_json(*args: str) -> tuple[int, dict[str, Any]]:
    out = run("check", "--json", *args)
    assert out.stdout, out.stderr
    return out.returncode, json.loads(out.stdout)


def test_check_classifies_each_hand_made_rule(tmp_path: Path) -> None:
    folder = rules_dir(tmp_path, good=GOOD, syntax=SYNTAX_ERROR, unmapped=UNMAPPED)
    status, doc = check_json(str(folder))
    assert status == exits.PROBLEMS == doc["exit_status"]
    assert [(Path(r["source"]).name, r["title"], r["category"]) for r in doc["loaded"]] == [
        ("good.yml", "netcat started", "process_creation")
    ]
    assert doc["loaded"][0]["fields"] == ["CommandLine", "Image", "User"]
    skipped = {Path(s["source"]).name: s for s in doc["skipped"]}
    assert set(skipped) == {"syntax.yml", "unmapped.yml"}
    syntax, unmapped = skipped["syntax.yml"], skipped["unmapped.yml"]
    assert (syntax["kind"], syntax["problem"], syntax["rule"]) == ("invalid", True, "")
    assert syntax["reason"].startswith("cannot parse: ") and "flow mapping" in syntax["reason"]
    assert (unmapped["kind"], unmapped["problem"]) == ("unmapped", True)
    assert unmapped["rule"] == "needs logon and session (7d1c2a54-0000-4000-8000-000000000003)"
    # Every unmapped field, not only the first met.
    assert unmapped["unmapped"] == ["LogonId", "SessionId"]
    assert doc["unmapped_fields"] == {"LogonId": 1, "SessionId": 1}
    assert doc["summary"] == {"files": 3, "loaded": 1, "skipped": 2, "problems": 2,
                              "skipped_by_kind": {"invalid": 1, "unmapped": 1}}  # fmt: skip

    text = run("check", str(folder))
    assert text.returncode == exits.PROBLEMS
    lines = text.stdout.splitlines()
    assert any(line.startswith("loaded ") and "netcat started" in line for line in lines)
    assert any(line.startswith("PROBLEM ") and "syntax.yml: cannot parse" in line
               for line in lines)  # fmt: skip
    assert any(line.startswith("PROBLEM ") and "unmapped: fields 'LogonId', 'SessionId'" in line
               for line in lines)  # fmt: skip
    assert "unmapped fields: LogonId (1 rules), SessionId (1 rules): map them" in text.stdout
    assert text.stderr == ""  # the report is the output, not also a log line per skip


def test_check_passes_rules_meant_for_other_log_sources(tmp_path: Path) -> None:
    """A mixed tree (Windows rules beside Linux ones) is no problem: exit 0."""
    status, doc = check_json(str(rules_dir(tmp_path, good=GOOD, windows=WINDOWS)))
    assert status == exits.OK
    assert [s["kind"] for s in doc["skipped"]] == ["logsource"]
    assert doc["skipped"][0]["problem"] is False
    assert "product 'windows'" in doc["skipped"][0]["reason"]


def test_check_fails_when_nothing_loads(tmp_path: Path) -> None:
    status, doc = check_json(str(rules_dir(tmp_path, windows=WINDOWS)))
    assert status == exits.PROBLEMS
    assert doc["summary"]["loaded"] == 0 and doc["summary"]["problems"] == 0


def test_a_field_map_maps_the_unmapped_fields(tmp_path: Path) -> None:
    fmap = tmp_path / "fields.toml"
    fmap.write_text('[process_creation]\nLogonId = "proc.uid"\nSessionId = "proc.pid"\n')
    status, doc = check_json(str(rules_dir(tmp_path, unmapped=UNMAPPED)), "--field-map",
                             str(fmap))  # fmt: skip
    assert status == exits.OK
    assert doc["loaded"][0]["fields"] == ["CommandLine", "Image", "LogonId", "SessionId"]


def test_check_usage_errors_exit_2(tmp_path: Path) -> None:
    out = run("check", str(tmp_path / "nowhere"))
    assert out.returncode == exits.USAGE
    assert out.stderr.strip() == (f"snoopbus rules check: no such file or folder: "
                                 f"{tmp_path}/nowhere")
    bad = tmp_path / "bad.toml"
    bad.write_text('[process_creation]\nImage = "nosuch(proc.exe)"\n')
    out = run("check", "default", "--field-map", str(bad))
    assert out.returncode == exits.USAGE and "unknown converter 'nosuch'" in out.stderr


def test_check_on_the_sigmahq_corpus_says_what_the_alerter_loads() -> None:
    corpus = sigma_corpus.require()
    status, doc = check_json("default", str(corpus))
    report = load_rules([corpus])
    loaded = {r["id"] for r in doc["loaded"]}
    assert {r.id for r in report.rules} <= loaded
    packaged = load_rules(resolve_paths(["default"])).rules
    assert len(doc["loaded"]) == len(report.rules) + len(packaged)
    # What the corpus cannot run here is exactly the rules reading fields snoopbus lacks.
    assert [s["kind"] for s in doc["skipped"]] == ["unmapped"] * len(report.skipped)
    assert {s["source"] for s in doc["skipped"]} == {s.source for s in report.skipped}
    assert all(s["unmapped"] for s in doc["skipped"])
    assert status == (exits.PROBLEMS if report.skipped else exits.OK)
    if report.skipped:  # measured: the two OMIGOD rules, for LogonId
        assert set(doc["unmapped_fields"]) == {f for s in report.skipped for f in s.unmapped}


def test_unmapped_fields_are_all_named() -> None:
    from sigma.rule import SigmaRule

    from snoopbus.consumers.alert.matcher import compile_rule

    rule = SigmaRule.from_yaml(UNMAPPED)
    with pytest.raises(UnmappedFields) as info:
        compile_rule(rule, "process_creation", default_field_map().fields("process_creation"))
    assert info.value.fields == ("LogonId", "SessionId")


# ---- rules test -------------------------------------------------------------

NC_EXEC = {"type": "exec", "proc": {"pid": 42, "uid": 0, "exe": "/usr/bin/nc",
                                    "argv": ["nc", "-l", "4444"]}}  # fmt: skip


def test_an_event_that_matches_names_the_selections(tmp_path: Path) -> None:
    folder = rules_dir(tmp_path, good=GOOD)
    event = tmp_path / "ev.json"
    event.write_text(json.dumps(NC_EXEC))
    out = run("test", str(folder), "--event", str(event), "--json")
    assert out.returncode == exits.OK, out.stderr
    doc = json.loads(out.stdout)
    [ev] = doc["events"]
    assert ev["matched"] is True and ev["categories"] == ["process_creation"]
    [rule] = ev["rules"]
    assert rule["matched"] is True
    assert rule["selections"] == ["selection_img"]  # not selection_cli, not filter
    assert rule["fields"] == {"CommandLine": "nc -l 4444", "Image": "/usr/bin/nc",
                              "User": "root"}  # fmt: skip

    text = run("test", str(folder), "--event", str(event))
    assert text.returncode == exits.OK
    assert "event 0 (exec, id test-0): MATCH" in text.stdout
    assert "selections held: selection_img" in text.stdout


def test_an_event_that_does_not_match_says_which_selections_held(tmp_path: Path) -> None:
    """The filter held (User backup): no match, exit 1, and the near miss shown."""
    folder = rules_dir(tmp_path, good=GOOD)
    event = {**NC_EXEC, "proc": {**NC_EXEC["proc"], "uid": 34}}  # 34: backup on Debian
    out = run("test", str(folder), "--event", "-", "--json", stdin=json.dumps(event))
    assert out.returncode == exits.PROBLEMS, out.stderr
    [ev] = json.loads(out.stdout)["events"]
    assert ev["matched"] is False
    assert ev["rules"][0]["selections"] == ["selection_img", "filter"]
    text = run("test", str(folder), "--event", "-", stdin=json.dumps(event))
    assert text.returncode == exits.PROBLEMS
    assert "no match netcat started" in text.stdout and "selection_img, filter" in text.stdout


def test_several_events_and_the_reasons_one_cannot_match(tmp_path: Path) -> None:
    folder = rules_dir(tmp_path, good=GOOD)
    lines = [
        {**NC_EXEC, "ret": -13},
        {"type": "open", "proc": {"pid": 1}, "file": {"path": "/etc/passwd"}},
        {"type": "delete", "proc": {"pid": 1}, "file": {"path": "/tmp/x"}},
        NC_EXEC,
    ]
    out = run("test", str(folder), "--event", "-", "--json",
              stdin="\n".join(json.dumps(e) for e in lines))  # fmt: skip
    assert out.returncode == exits.OK
    events = json.loads(out.stdout)["events"]
    assert [e.get("note") for e in events] == [
        "a failed syscall (ret -13) never matches",
        "event type 'open' feeds no Sigma log source",
        "no rule loaded for its log sources (file_delete)",
        None,
    ]
    assert [e["matched"] for e in events] == [False, False, False, True]


def test_rules_test_errors_exit_2(tmp_path: Path) -> None:
    folder = rules_dir(tmp_path, syntax=SYNTAX_ERROR)
    out = run("test", str(folder), "--event", "-", stdin=json.dumps(NC_EXEC))
    assert out.returncode == exits.USAGE
    assert out.stderr.startswith("snoopbus rules test: no rule loads from ")
    assert "cannot parse" in out.stderr
    (tmp_path / "g").mkdir()
    good = rules_dir(tmp_path / "g", good=GOOD)
    out = run("test", str(good), "--event", "-", stdin="{not json")
    assert out.returncode == exits.USAGE and "--event -: not JSON" in out.stderr
    bad = {**NC_EXEC, "proc": {"pid": "42"}}
    out = run("test", str(good), "--event", "-", stdin=json.dumps(bad))
    assert out.returncode == exits.USAGE and "event[0].proc.pid" in out.stderr
    out = run("test", str(good), "--event", str(tmp_path / "none.json"))
    assert out.returncode == exits.USAGE and "cannot read" in out.stderr


def test_rules_test_agrees_with_the_alerter_on_the_corpus() -> None:
    """match_report's verdicts are the engine's hits, rule for rule and selection
    for selection, on the corpus and the benchmark's event mix."""
    from tests.bench.alerter import make_events

    report = load_rules(resolve_paths(["default", sigma_corpus.require()]))
    engine = Engine(report.rules)
    events = make_events(1500, seed=5)
    doc = match_report(report, default_field_map(), events)
    hits = 0
    for event, verdict in zip(events, doc["events"], strict=True):
        expected = {(h.rule.id, tuple(h.selections)) for h in engine.match(event)}
        got = {(r["id"], tuple(r["selections"])) for r in verdict["rules"] if r["matched"]}
        assert got == expected, event
        hits += len(got)
    assert hits > 0
