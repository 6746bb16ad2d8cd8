"""The OTLP/HTTP logs sink: what arrives at a real local receiver, decoded with
the official protobuf definitions (opentelemetry-proto), and how the sink
answers the statuses the OTLP specification names."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from snoopbus.consumers.forward import Item, parse_alert
from snoopbus.consumers.forward.otlp import (
    _attributes,
    _event_attributes,
    _event_pairs,
    log_record,
)
from tests.support.bus import dead_letters
from tests.support.events import (
    nth_alert,
    nth_event,
    publish_alert,
    publish_events,
    varied_event,
)
from tests.support.forward import attrs, forwarding, http_receiver, records
from tests.support.waits import until


async def test_events_and_alerts_arrive_as_log_records_per_host(nc, js) -> None:
    async with http_receiver() as rx:
        async with forwarding(nc, f"otlp+http://127.0.0.1:{rx.port}?batch=7") as fwd:
            await publish_events(js, [nth_event(i, host="web-1") for i in range(10)], per_msg=5)
            await publish_events(js, [nth_event(i, "renamed", host="db-2") for i in range(10, 14)])
            await publish_alert(js, nth_alert(20, "critical", host="web-1"))
            await until(lambda: len(records(rx)) == 15)
    got = records(rx)
    assert all(r.headers["content-type"] == "application/x-protobuf" for r in rx.requests)
    assert all(r.path == "/v1/logs" for r in rx.requests)
    assert max(len(records_of(req)) for req in rx.otlp) <= 7  # batch=7
    for resource, _ in got:
        assert resource["service.name"] == "snoopbus" and resource["os.type"] == "linux"
    by_id = {attrs(rec.attributes)["log.record.uid"]: (res, rec) for res, rec in got}
    res, exec_rec = by_id["inst-3"]
    a = attrs(exec_rec.attributes)
    assert res["host.name"] == "web-1" and exec_rec.event_name == "snoopbus.exec"
    assert exec_rec.time_unix_nano == nth_event(3)["ts"] and exec_rec.severity_text == "INFO"
    assert a["process.pid"] == 103 and a["process.command_args"] == ["bash", "-c", "echo 3"]
    assert a["process.command_line"] == "bash -c echo 3" and a["process.parent_pid"] == 1
    res, ren = by_id["inst-11"]
    assert res["host.name"] == "db-2" and attrs(ren.attributes)["file.name"] == "f11.txt"
    _, alert = by_id["rule-2:inst-20"]
    a = attrs(alert.attributes)
    assert alert.severity_number == 21 and alert.severity_text == "FATAL"
    assert a["security_rule.uuid"] == "rule-2" and a["snoopbus.event.id"] == "inst-20"
    assert a["snoopbus.alert.tags"] == ["attack.execution", "attack.t1059"]
    assert fwd.workers[0].stats.sent == 15


def records_of(request: Any) -> list[Any]:
    return [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]


async def test_retryable_statuses_are_retried_and_others_dead_lettered(nc, js) -> None:
    async with http_receiver(script=[503, 429, 502]) as rx:
        url = f"otlp+http://127.0.0.1:{rx.port}/v1/logs?name=otel&backoff=0.02"
        async with forwarding(nc, url) as fwd:
            await publish_events(js, [nth_event(1)])
            await until(lambda: len(records(rx)) == 1)
            rx.script = [500]  # not retryable in OTLP/HTTP
            await publish_events(js, [nth_event(2)])
            (letter,) = await dead_letters(js, "forward-otel", 1)
    assert fwd.workers[0].stats.failures == 3
    assert letter.headers["Snoopbus-Dlq-Reason"].startswith("otlp+http: HTTP 500")


async def test_a_partial_success_is_counted_not_silent(nc, js, caplog) -> None:
    async with http_receiver(partial=2) as rx:
        async with forwarding(nc, f"otlp+http://127.0.0.1:{rx.port}") as fwd:
            await publish_events(js, [nth_event(i) for i in range(5)], per_msg=5)
            await until(lambda: fwd.workers[0].stats.dropped == 2)
    assert "dropped 2 of 5 items: over quota" in caplog.text


def test_text_that_is_not_utf8_and_huge_numbers_still_encode() -> None:
    event = nth_event(1, "create")
    event["file"]["path"] = "/tmp/" + b"\xff".decode("utf-8", "surrogateescape")
    event["ret"] = 2**70
    event["exit_code"] = -1  # int64: ten bytes of two's complement
    rec = LogRecord.FromString(log_record(Item("event", event, 0, "s")))
    a = attrs(rec.attributes)
    assert a["file.path"] == "/tmp/\\xff" and a["snoopbus.ret"] == str(2**70)
    assert a["process.exit.code"] == -1 and a["process.command_args"] == ["bash", "-c", "echo 1"]
    assert rec.time_unix_nano == event["ts"] and rec.severity_number == 9
    alert = LogRecord.FromString(
        log_record(Item("alert", parse_alert({"rule": {"id": "r", "level": "low"}}), 0, "s")))
    assert attrs(alert.attributes)["log.record.uid"] == "r:" and alert.severity_text == "WARN"


def test_the_event_writer_is_byte_for_byte_the_generic_one() -> None:
    # Events are written by straight-line code; the generic pairs path
    # (alerts use it) is the reference, for every kind of value.
    for seq in range(3000):
        event = varied_event(seq)
        assert _event_attributes(event) == _attributes(_event_pairs(event)), event
