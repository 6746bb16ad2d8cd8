"""The Splunk HEC sink against a real local receiver that reads HEC's
documented format (JSON event objects one after another) and answers with
HEC's documented status codes."""

from __future__ import annotations

import pytest

from snoopbus.consumers.forward import SpecError, parse_spec
from tests.support.bus import dead_letters
from tests.support.events import nth_alert, nth_event, publish_alert, publish_events
from tests.support.forward import forwarding, http_receiver
from tests.support.waits import until

TOKEN = {"SNOOPBUS_SPLUNK_TOKEN": "11111111-2222-3333-4444-555555555555"}


def test_no_token_is_one_clear_error() -> None:
    with pytest.raises(SpecError, match=r"set \$SNOOPBUS_SPLUNK_TOKEN"):
        parse_spec("splunk+https://splunk:8088", env={})
    spec = parse_spec("splunk+https://splunk?token_env=T", env={"T": "s3cr3t"})
    assert spec.port == 8088 and spec.token == "s3cr3t" and "s3cr3t" not in repr(spec)


async def test_events_and_alerts_arrive_in_hec_form(nc, js) -> None:
    async with http_receiver() as rx:
        url = f"splunk+http://127.0.0.1:{rx.port}?index=edr&batch=4"
        async with forwarding(nc, url, env=TOKEN) as fwd:
            await publish_events(js, [nth_event(i, host="web-1") for i in range(6)], per_msg=3)
            await publish_alert(js, nth_alert(7, "high", host="web-1"))
            await until(lambda: len(rx.hec) == 7)
    assert all(r.headers["authorization"] == f"Splunk {TOKEN['SNOOPBUS_SPLUNK_TOKEN']}"
               for r in rx.requests)  # fmt: skip
    assert all(r.path == "/services/collector/event" for r in rx.requests)
    assert len({r.headers["x-splunk-request-channel"] for r in rx.requests}) == 1
    events = {e["event"].get("id", "alert"): e for e in rx.hec}
    first = events["inst-0"]
    assert first["time"] == 1763776800.123 and first["host"] == "web-1"
    assert (first["sourcetype"], first["source"], first["index"]) == (
        "snoopbus:event", "snoopbus", "edr")  # fmt: skip
    assert first["event"]["proc"]["argv"] == ["bash", "-c", "echo 0"]
    alert = events["alert"]
    assert alert["sourcetype"] == "snoopbus:alert" and alert["event"]["rule"]["id"] == "rule-1"
    assert fwd.workers[0].stats.sent == 7


async def test_an_invalid_event_is_dead_lettered_alone(nc, js) -> None:
    async with http_receiver(hec_invalid={"inst-4": 6}) as rx:
        url = f"splunk+http://127.0.0.1:{rx.port}?name=hec&backoff=0.02"
        async with forwarding(nc, url, env=TOKEN) as fwd:
            await publish_events(js, [nth_event(i) for i in range(3)], per_msg=3)
            await publish_events(js, [nth_event(i) for i in range(3, 8)], per_msg=1)
            (letter,) = await dead_letters(js, "forward-hec", 1)
            await until(lambda: {e["event"]["id"] for e in rx.hec} >= {
                f"inst-{i}" for i in range(8) if i != 4})  # fmt: skip
    assert '"invalid-event-number"' in letter.headers["Snoopbus-Dlq-Reason"]
    assert b"inst-4" in letter.data and fwd.workers[0].stats.dead_lettered == 1


async def test_a_refused_token_is_retried_not_dead_lettered(nc, js) -> None:
    async with http_receiver(script=[403, 401]) as rx:
        url = f"splunk+http://127.0.0.1:{rx.port}?backoff=0.02"
        async with forwarding(nc, url, env=TOKEN) as fwd:
            await publish_events(js, [nth_event(1)])
            await until(lambda: len(rx.hec) == 1)
    assert fwd.workers[0].stats.failures == 2 and fwd.workers[0].stats.dead_lettered == 0
