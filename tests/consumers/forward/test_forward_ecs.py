"""ECS documents checked against the ECS field definitions, and the `_bulk`
sink against a local receiver: exactly once by `_id`, per-document retries
and rejections.

ECS_FIELDS is a subset of the ECS 8.11 reference (elastic/ecs,
generated/csv/fields.csv: field name, type, allowed values): every field the
forwarder can emit. No package ships the ECS schema offline (PyPI `ecs` is an
unrelated game library; `ecs-logging` ships formatters, not the field set),
so the rows are copied here. A field not listed is not ECS: the test fails.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from snoopbus.consumers.forward import Item, parse_alert, parse_spec
from snoopbus.consumers.forward.ecs import _args, to_ecs
from snoopbus.consumers.forward.text import command_line, display
from snoopbus.proto import EVENT_TYPES
from tests.support.bus import dead_letters
from tests.support.events import (
    nth_alert,
    nth_event,
    publish_alert,
    publish_events,
    varied_event,
)
from tests.support.forward import forwarding, http_receiver
from tests.support.waits import until

NON_UTF8 = b"caf\xe9".decode("utf-8", "surrogateescape")

ECS_FIELDS: dict[str, str] = {
    "@timestamp": "date", "message": "match_only_text", "tags": "keyword",
    "ecs.version": "keyword",
    "event.id": "keyword", "event.kind": "keyword", "event.category": "keyword",
    "event.type": "keyword", "event.action": "keyword", "event.outcome": "keyword",
    "event.module": "keyword", "event.dataset": "keyword", "event.severity": "long",
    "host.name": "keyword", "host.hostname": "keyword", "host.os.type": "keyword",
    "data_stream.type": "constant_keyword", "data_stream.dataset": "constant_keyword",
    "data_stream.namespace": "constant_keyword",
    "process.pid": "long", "process.name": "keyword", "process.executable": "keyword",
    "process.args": "keyword", "process.args_count": "long", "process.command_line": "wildcard",
    "process.working_directory": "keyword", "process.exit_code": "long",
    "process.thread.id": "long",
    "process.parent.pid": "long", "process.parent.executable": "keyword",
    "process.parent.name": "keyword",
    "process.parent.args": "keyword", "process.parent.args_count": "long",
    "process.parent.command_line": "wildcard",
    "user.id": "keyword", "group.id": "keyword", "container.id": "keyword",
    "file.path": "keyword", "file.name": "keyword", "file.directory": "keyword",
    "file.extension": "keyword", "file.inode": "keyword", "file.mode": "keyword",
    "file.target_path": "keyword", "file.type": "keyword", "file.device": "keyword",
    "rule.id": "keyword", "rule.name": "keyword", "rule.description": "keyword",
    "rule.ruleset": "keyword", "rule.category": "keyword", "rule.reference": "keyword",
    "rule.author": "keyword",
}  # fmt: skip
# Allowed values (ECS "categorization fields"), and which event.type goes with which category.
ALLOWED = {
    "event.kind": {"alert", "enrichment", "event", "metric", "state", "pipeline_error", "signal"},
    "event.outcome": {"failure", "success", "unknown"},
    "file.type": {"file", "dir", "symlink"},
    "host.os.type": {"linux", "macos", "unix", "windows", "ios", "android"},
    "data_stream.type": {"logs", "metrics"},
}
CATEGORY_TYPES = {
    "process": {"access", "change", "end", "info", "start"},
    "file": {"access", "change", "creation", "deletion", "info"},
}


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def check_ecs(doc: dict[str, Any]) -> None:
    """Every field is ECS, of the ECS type, with an allowed value."""
    flat = flatten(doc)
    for name, value in flat.items():
        assert name in ECS_FIELDS, f"{name} is not an ECS field"
        kind = ECS_FIELDS[name]
        values = value if isinstance(value, list) else [value]
        for v in values:
            if kind == "long":
                assert isinstance(v, int) and not isinstance(v, bool), (name, v)
            elif kind == "date":
                datetime.fromisoformat(v.replace("Z", "+00:00")[:26] + "+00:00")
            else:
                assert isinstance(v, str), (name, v)
                assert not any(0xD800 <= ord(c) <= 0xDFFF for c in v), f"{name}: lone surrogate"
            if name in ALLOWED:
                assert v in ALLOWED[name], (name, v)
    for category in flat["event.category"]:
        assert set(flat["event.type"]) <= CATEGORY_TYPES[category], flat["event.type"]
    json.dumps(doc, ensure_ascii=False).encode("utf-8")  # valid UTF-8 JSON


@pytest.mark.parametrize("type_", sorted(EVENT_TYPES))
def test_every_event_type_maps_to_valid_ecs(type_: str) -> None:
    event = nth_event(3, type_, ret=-13)
    event["proc"].update(parent_exe="/bin/sh", parent_argv=["sh", "-c", "x"], container="c1")
    if "file" in event:
        event["file"].update(target="/t", dev=2049, flags=0o101)
        if type_ == "renamed":
            event["file"]["old_path"] = "/tmp/old"
    doc = to_ecs(Item("event", event, 0, "s"))
    check_ecs(doc)
    assert doc["event"]["action"] == type_ and doc["event"]["outcome"] == "failure"
    assert doc["@timestamp"] == "2025-11-22T02:00:00.123456792Z"


def test_exec_fields() -> None:
    argv = ["curl", "-d", b"\xff".decode("utf-8", "surrogateescape")]
    doc = to_ecs(Item("event", nth_event(1) | {"proc": {
        "pid": 7, "ppid": 1, "uid": 0, "gid": 0, "comm": "curl", "exe": "/usr/bin/curl",
        "argv": argv}}, 0, "s"))  # fmt: skip
    check_ecs(doc)
    assert doc["process"]["args"] == ["curl", "-d", "\\xff"]
    assert doc["process"]["command_line"] == "curl -d \\xff" and doc["user"]["id"] == "0"
    assert doc["event"]["category"] == ["process"] and doc["event"]["type"] == ["start"]


def test_file_fields() -> None:
    doc = to_ecs(Item("event", nth_event(2, "create"), 0, "s"))
    check_ecs(doc)
    assert doc["file"] == {"path": "/tmp/f2.txt", "name": "f2.txt", "directory": "/tmp",
                           "extension": "txt", "inode": "1002", "mode": "0644", "type": "file"}


def test_alert_maps_to_rule_and_kind_alert() -> None:
    raw = nth_alert(5, "critical")
    raw["rule"].update(description="desc", references=["https://x/1"], author="me")
    raw["category"] = "process_creation"
    doc = to_ecs(Item("alert", parse_alert(raw), 0, "s"))
    check_ecs(doc)
    assert doc["event"]["kind"] == "alert" and doc["event"]["severity"] == 99
    assert doc["rule"] == {"id": "rule-2", "name": "Suspicious thing 5", "ruleset": "sigma",
                           "description": "desc", "category": "process_creation",
                           "reference": ["https://x/1"], "author": ["me"]}  # fmt: skip
    assert doc["tags"] == ["attack.execution", "attack.t1059"]
    assert doc["process"]["executable"] == "/usr/bin/bash"


# -- _bulk, end to end --------------------------------------------------------


def _stored(rx) -> list[dict[str, Any]]:
    return list(rx.docs.values())


async def test_bulk_indexes_valid_ecs_with_api_key(nc, js, monkeypatch) -> None:
    async with http_receiver() as rx:
        url = f"elastic+http://127.0.0.1:{rx.port}/snoopbus-%Y.%m.%d?batch=25&api_key_env=K"
        monkeypatch.setenv("K", "secret-key")
        assert parse_spec(url).api_key == "secret-key"
        async with forwarding(nc, url.replace("api_key_env=K", "name=es")) as fwd:
            await publish_events(js, [nth_event(i) for i in range(60)], per_msg=20)
            await publish_alert(js, nth_alert(1, "medium"))
            await until(lambda: len(rx.docs) == 61)
        for doc in _stored(rx):
            check_ecs(doc)
        assert {index for index, _ in rx.docs} == {"snoopbus-2025.11.22"}
        assert ("snoopbus-2025.11.22", "rule-1:inst-1") in rx.docs  # the alert, by its id
        assert fwd.workers[0].stats.sent == 61
        assert all(r.headers["content-type"] == "application/x-ndjson" for r in rx.requests)


async def test_bulk_api_key_header(nc, js) -> None:
    async with http_receiver() as rx:
        env = {"SNOOPBUS_ELASTIC_API_KEY": "k1"}
        async with forwarding(nc, f"elastic+http://127.0.0.1:{rx.port}/i", env=env):
            await publish_events(js, [nth_event(1)])
            await until(lambda: len(rx.docs) == 1)
    assert rx.requests[0].headers["authorization"] == "ApiKey k1"


def test_api_key_is_read_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("SNOOPBUS_ELASTIC_API_KEY", "k2")
    assert parse_spec("elastic+http://es/i").api_key == "k2"


async def test_bulk_exactly_once_when_answers_are_lost_and_receiver_restarts(nc, js) -> None:
    async with http_receiver(lost_answers=2) as rx:
        port = rx.port
        url = f"elastic+http://127.0.0.1:{port}/idx?backoff=0.05&backoff_cap=0.3&retries=3"
        async with forwarding(nc, url) as fwd:
            await publish_events(js, [nth_event(i) for i in range(20)], per_msg=5)
            await until(lambda: len(rx.docs) == 20 and not rx.lost_answers)
            await rx.stop()  # down for a while
            await publish_events(js, [nth_event(i) for i in range(20, 50)], per_msg=5)
            await until(lambda: fwd.workers[0].stats.naked >= 2, what="naks while down")
            docs_before = dict(rx.docs)
            rx.port = port
            await rx.start()  # back, with what it stored before
            await until(lambda: len(rx.docs) == 50, 30)
            await until(lambda: fwd.workers[0].stats.acked >= 10)
    assert set(docs_before) <= set(rx.docs)
    assert sorted(doc_id for _, doc_id in rx.docs) == sorted(f"inst-{i}" for i in range(50))
    total_sent = sum(r.body.count(b'"create"') for r in rx.requests)
    assert total_sent > 50  # some were sent twice, and stored once
    assert fwd.workers[0].stats.dead_lettered == 0


async def test_bulk_per_document_errors(nc, js) -> None:
    flaky = {"inst-3": 1}

    def doc_errors(doc: dict[str, Any]) -> tuple[int, str] | None:
        doc_id = doc["event"]["id"]
        if doc_id == "inst-7":
            return 400, "mapper_parsing_exception"
        if flaky.get(doc_id):
            flaky[doc_id] -= 1
            return 429, "es_rejected_execution_exception"
        return None

    async with http_receiver(doc_errors=doc_errors) as rx:
        url = f"elastic+http://127.0.0.1:{rx.port}/idx?name=es&backoff=0.05"
        async with forwarding(nc, url) as fwd:
            await publish_events(js, [nth_event(i) for i in range(10)], per_msg=5)
            (letter,) = await dead_letters(js, "forward-es", 1)
            await until(lambda: len(rx.docs) == 9)
    assert sorted(i for _, i in rx.docs) == sorted(f"inst-{i}" for i in range(10) if i != 7)
    reason = letter.headers["Snoopbus-Dlq-Reason"]
    assert "HTTP 400 mapper_parsing_exception" in reason
    # The rejected message held inst-5..9; the others of it are stored (bulk is per document).
    assert letter.headers["Snoopbus-Dlq-Subject"].endswith(".proc.exec")
    assert fwd.workers[0].stats.failures == 1  # the one 429, retried alone


# -- data streams ---------------------------------------------------------------


async def test_bulk_defaults_to_the_snoopbus_data_streams(nc, js) -> None:
    async with http_receiver() as rx:
        async with forwarding(nc, f"elastic+http://127.0.0.1:{rx.port}"):
            await publish_events(js, [nth_event(i) for i in range(3)], per_msg=3)
            await publish_alert(js, nth_alert(1, "low"))
            await until(lambda: len(rx.docs) == 4)
    assert {index for index, _ in rx.docs} == {"logs-snoopbus.events-default",
                                               "logs-snoopbus.alerts-default"}  # fmt: skip
    for (index, _), doc in rx.docs.items():
        check_ecs(doc)
        stream = doc["data_stream"]
        # The fields name the stream the document is in, as logs-*-* templates require.
        assert index == f"{stream['type']}-{stream['dataset']}-{stream['namespace']}"
        assert doc["event"]["dataset"] == stream["dataset"]
        assert doc["host"]["os"]["type"] == "linux"


@pytest.mark.parametrize(
    ("url", "events", "alerts", "fields"),
    [
        ("elastic+http://es?namespace=prod", "logs-snoopbus.events-prod",
         "logs-snoopbus.alerts-prod", True),
        ("elastic+http://es/logs-edr-site1", "logs-edr-site1", "logs-edr-site1", True),
        ("elastic+http://es/snoopbus-%Y.%m", "snoopbus-2025.11", "snoopbus-2025.11", False),
    ],
)
def test_where_documents_go(url: str, events: str, alerts: str, fields: bool) -> None:
    from snoopbus.consumers.forward.sinks import make_sink

    sink = make_sink(parse_spec(url, env={}))
    for kind, item, index in (("event", Item("event", nth_event(1), 0, "s"), events),
                              ("alert", Item("alert", parse_alert(nth_alert(1)), 0, "s"),
                               alerts)):  # fmt: skip
        action, doc = (json.loads(line) for line in sink.render(item).splitlines())
        assert action["create"]["_index"] == index, kind
        check_ecs(doc)
        assert ("data_stream" in doc) == fields
        if fields:
            assert f"logs-{doc['data_stream']['dataset']}-{doc['data_stream']['namespace']}" \
                == index  # fmt: skip


def test_namespace_errors_are_clear() -> None:
    from snoopbus.consumers.forward import SpecError

    with pytest.raises(SpecError, match="lower-case letters"):
        parse_spec("elastic+http://es?namespace=Prod-1", env={})
    with pytest.raises(SpecError, match="names its INDEX"):
        parse_spec("elastic+http://es/myindex?namespace=prod", env={})


def test_args_in_one_check_are_what_each_shown_alone_gives() -> None:
    # _args tells the common case (all ASCII) by one check of the joined argv;
    # showing each element (and the command line) is the reference.
    argvs = [(varied_event(seq).get("proc") or {}).get("argv") for seq in range(2000)]
    argvs += [["a", NON_UTF8], [NON_UTF8], ["a", b"\xff"], ["x", 1], []]
    for argv in argvs:
        if argv is None:
            continue
        assert _args(argv) == ([display(a) for a in argv], command_line(argv)), argv
