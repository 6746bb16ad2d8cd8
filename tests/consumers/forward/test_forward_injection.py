"""A host on the bus (or a user naming files) tries to forge SIEM records through
the forwarder: a second record out of one event (line breaks in a path or
argv), or fields the sink sets itself (`@timestamp`, `event.kind`). Each sink
is fed such events from JetStream and read back from a real receiver."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snoopbus.consumers.forward import Item
from snoopbus.consumers.forward.ecs import iso_time, to_ecs
from snoopbus.consumers.forward.jsonl import EVENT_KEYS
from snoopbus.consumers.forward.ocsf import to_ocsf
from snoopbus.consumers.printable import UNSAFE, printable
from tests.support.events import nth_alert, nth_event, publish_alert, publish_events
from tests.support.forward import attrs, forwarding, http_receiver, records
from tests.support.processes import free_port
from tests.support.syslog import Rsyslog, needs_rsyslog, parse_5424, parse_cef
from tests.support.waits import until

# Each would end a line for some reader: rsyslog's file, Splunk, Python's
# str.splitlines (NEL, U+2028, U+2029, FS/GS/RS, VT, FF), a C string (NUL).
BREAKS = ["\n", "\r", "\r\n", "\x00", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"]
# A whole forged record after the break, in each sink's own syntax.
FORGED = ('<13>1 2030-01-01T00:00:00Z forged - - - - injected '
          'CEF:0|x|x|1|x|x|10|act=forged {"@timestamp":"2030-01-01","event":{"kind":"alert"}}')
# Top-level keys an event may carry (unknown keys are kept by the schema) that
# a SIEM reads as its own.
SIEM_KEYS = {"@timestamp": "2030-01-01T00:00:00Z", "event.kind": "alert", "message": "forged",
             "tags": ["forged"], "extra": "mine", "rule": {"name": "forged"}}  # fmt: skip


def hostile_events() -> list[dict[str, Any]]:
    events = []
    for i, brk in enumerate(BREAKS):
        event = nth_event(i, "renamed", **SIEM_KEYS)
        event["proc"]["argv"] = ["sh", "-c", f"x{brk}{FORGED}"]
        event["file"].update(path=f"/tmp/a{brk}{FORGED}", old_path=f"/tmp/b{brk}")
        events.append(event)
    return events


def test_ecs_and_ocsf_set_their_own_fields_whatever_the_event_carries() -> None:
    event = nth_event(1, "create", **SIEM_KEYS, ecs={"version": "0"}, category="forged",
                       metadata={"product": "forged"}, class_uid=2004)  # fmt: skip
    doc = to_ecs(Item("event", event, 0, "s"))
    assert doc["@timestamp"] == iso_time(event["ts"]) and doc["event"]["kind"] == "event"
    assert doc["ecs"] == {"version": "8.11.0"} and doc["message"] != "forged"
    assert not {"rule", "tags", "extra", "event.kind", "category"} & set(doc)
    ocsf = to_ocsf(Item("event", event, 0, "s"))
    assert ocsf["class_uid"] == 1001 and ocsf["metadata"]["product"]["name"] == "snoopbus"
    assert not {"@timestamp", "message", "tags", "extra", "rule"} & set(ocsf)


async def test_jsonl_lines_are_one_per_event_and_keep_the_event_to_its_fields(
    nc, js, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    events = hostile_events()
    alert = nth_alert(99, "critical")
    alert["event"].update(SIEM_KEYS)
    alert["event"]["file"] = {"path": "/tmp/x\u2028" + FORGED}
    async with forwarding(nc, f"jsonl+file://{out}"):
        await publish_events(js, events, per_msg=3)
        await publish_alert(js, alert)
        await until(lambda: out.exists() and out.read_bytes().count(b"\n") >= len(events) + 1)
    # Python's splitlines breaks at every character above: one document per line still.
    lines = out.read_text("utf-8").splitlines()
    assert len(lines) == len(events) + 1, lines
    docs = {d.get("id") or d["type"]: d for d in map(json.loads, lines)}
    for event in events:
        doc = docs[event["id"]]
        assert set(doc) <= EVENT_KEYS | {"extra"}, sorted(doc)
        assert doc["extra"] == SIEM_KEYS  # kept, out of the way
        assert doc["file"]["path"] == event["file"]["path"]  # exact: JSON carries it
        assert doc["proc"]["argv"] == event["proc"]["argv"]
    nested = docs["alert"]["event"]
    assert set(nested) <= EVENT_KEYS | {"extra"} and nested["extra"] == SIEM_KEYS


async def test_webhook_and_bulk_documents_hold_no_forged_field(nc, js) -> None:
    events = hostile_events()
    async with http_receiver() as hook, http_receiver() as es:
        urls = [f"webhook+http://127.0.0.1:{hook.port}/in?batch=4",
                f"elastic+http://127.0.0.1:{es.port}/snoop"]  # fmt: skip
        async with forwarding(nc, *urls):
            await publish_events(js, events, per_msg=2)
            # The _bulk receiver splits its body with str.splitlines, as a line
            # reader would: a raw U+2028 there would break it.
            await until(lambda: len(hook.webhook_items) >= len(events)
                             and len(es.docs) >= len(events))  # fmt: skip
    for doc in hook.webhook_items:
        assert set(doc) <= EVENT_KEYS | {"extra"} and doc["extra"] == SIEM_KEYS
    for event in events:
        doc = es.docs[("snoop", event["id"])]
        assert doc["@timestamp"] == iso_time(event["ts"]) and doc["event"]["kind"] == "event"
        assert doc["file"]["path"] == event["file"]["path"]
        assert "rule" not in doc and "tags" not in doc


def ours(rsyslog: Rsyslog) -> list[str]:
    """The output file's whole lines, but the start-up probes."""
    text = rsyslog.out.read_bytes().decode("utf-8")
    return [ln for ln in text.split("\n")[:-1] if not ln.endswith(" probe - - - ready?")]


@pytest.fixture
def raw_rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    """rsyslogd that writes what it receives as it is (no #ooo for control characters)."""
    server = Rsyslog(tmp_path, free_port(), free_port(socket.SOCK_DGRAM), escape_control=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@needs_rsyslog
@pytest.mark.parametrize("scheme", ["syslog+tcp", "syslog+udp", "cef+tcp"])
async def test_syslog_and_cef_records_stay_one_line_each(
    nc, js, raw_rsyslog: Rsyslog, scheme: str
) -> None:
    port = raw_rsyslog.udp if scheme.endswith("udp") else raw_rsyslog.tcp
    events = hostile_events()
    async with forwarding(nc, f"{scheme}://127.0.0.1:{port}"):
        await publish_events(js, events, per_msg=2)
        await until(lambda: len(ours(raw_rsyslog)) >= len(events))
    # rsyslog wrote each message on one line: the file's lines (LF only, as
    # rsyslog and a shipper count them) are one per event.
    lines = ours(raw_rsyslog)
    assert len(lines) == len(events), lines
    for line in lines:
        assert not UNSAFE.search(line.replace("\ufeff", "")), repr(line)  # the BOM is ours
        parsed = parse_5424(line)
        assert "forged" not in parsed.hostname and parsed.app == "snoopbus"
        if scheme.startswith("syslog"):
            assert set(parsed.sd) == {"snoopbus@32473", "proc@32473", "file@32473"}
        else:
            fields, ext = parse_cef(parsed.msg)
            assert fields[:3] == ["CEF:0", "snoopbus", "snoopbus"] and ext["act"] == "renamed"
            assert ext["filePath"].startswith("/tmp/a\\") and "forged" not in ext["act"]
            assert "forged" not in "".join(ext)  # no key of the forged record became a key
    by_id = {parse_5424(ln).sd.get("snoopbus@32473", {}).get("id"): ln for ln in lines}
    if scheme.startswith("syslog"):
        for event in events:
            parsed = parse_5424(by_id[event["id"]])
            assert parsed.sd["file@32473"]["path"] == printable(event["file"]["path"])
            assert parsed.sd["proc@32473"]["argv"] == printable(" ".join(event["proc"]["argv"]))


async def test_otlp_and_hec_records_are_one_per_event_with_the_sinks_own_keys(nc, js) -> None:
    events = hostile_events()
    env = {"SNOOPBUS_SPLUNK_TOKEN": "t"}
    async with http_receiver() as otel, http_receiver() as hec:
        urls = [f"otlp+http://127.0.0.1:{otel.port}?batch=3",
                f"splunk+http://127.0.0.1:{hec.port}?batch=4"]  # fmt: skip
        async with forwarding(nc, *urls, env=env):
            await publish_events(js, events, per_msg=2)
            await until(lambda: len(records(otel)) >= len(events)
                             and len(hec.hec) >= len(events))  # fmt: skip
    got = records(otel)
    assert len(got) == len(events)
    by_id = {attrs(rec.attributes)["log.record.uid"]: (res, rec) for res, rec in got}
    for event in events:
        resource, rec = by_id[event["id"]]
        a = attrs(rec.attributes)
        assert a["file.path"] == event["file"]["path"]  # exact: protobuf carries it
        assert not any(k in a for k in ("@timestamp", "event.kind", "message", "extra"))
        assert set(resource) == {"host.name", "os.type", "service.name"}
        assert rec.event_name == "snoopbus.renamed"
    # HEC: one event object per event, only HEC's keys, the event's own keys under `event`.
    assert len(hec.hec) == len(events)
    for obj in hec.hec:
        assert set(obj) <= {"time", "host", "source", "sourcetype", "index", "event"}
        assert obj["sourcetype"] == "snoopbus:event" and obj["source"] == "snoopbus"
        assert set(obj["event"]) <= EVENT_KEYS | {"extra"} and obj["event"]["extra"] == SIEM_KEYS
