"""The forwarder's core: sink URLs, back-off, settling, and the JSON-lines and
webhook sinks end to end on a real nats-server, including faults."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snoopbus.consumers.forward import (
    Backoff,
    Forwarder,
    Gate,
    SpecError,
    parse_alert,
    parse_spec,
)
from snoopbus.consumers.forward.alerts import AlertError
from snoopbus.consumers.forward.text import display
from snoopbus.consumers.settings import Settings
from snoopbus.proto import (
    alert_subject,
    alerts_filter,
    encode_batch,
    encode_map,
    ensure_stream,
    event_subject,
    events_filter,
)
from tests.support.bus import dead_letters
from tests.support.events import nth_alert, nth_event, publish_alert, publish_events
from tests.support.forward import forwarding, http_receiver
from tests.support.waits import until

# -- sink URLs ----------------------------------------------------------------


def test_spec_defaults_and_filters() -> None:
    spec = parse_spec("syslog+tcp://127.0.0.1:5514?min_severity=high&exclude=open,close_write")
    where = (spec.format, spec.transport, spec.host, spec.port)
    assert where == ("syslog", "tcp", "127.0.0.1", 5514)
    assert spec.consumer_name == "forward-syslog-tcp-127_0_0_1-5514"
    filters = spec.subject_filters()
    assert events_filter(type="exec") in filters and events_filter(type="open") not in filters
    assert alerts_filter(level="high") in filters and alerts_filter(level="critical") in filters
    assert alerts_filter(level="medium") not in filters


def test_spec_all_and_stdout() -> None:
    spec = parse_spec("jsonl:-?alerts=0")
    assert spec.transport == "stdout" and spec.subject_filters() == [events_filter()]
    assert parse_spec("elastic+https://es/idx").port == 9200


def test_spec_credentials_from_environment() -> None:
    env = {"K": "key-1", "P": "pw"}
    spec = parse_spec("elastic+https://bob@es:9200/i?api_key_env=K&password_env=P", env=env)
    assert (spec.api_key, spec.username, spec.password) == ("key-1", "bob", "pw")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("syslog+http://h", "syslog goes over tcp, udp, tls"),
        ("nope+tcp://h", "unknown format"),
        ("jsonl:-?color=1", "unknown options color"),
        ("jsonl:-?include=exec,bogus", "unknown event types bogus"),
        ("jsonl:-?min_severity=huge", "min_severity"),
        ("jsonl:-?events=0&alerts=0", "forwards nothing"),
        ("jsonl+file://", "give a file path"),
        ("elastic+https://es/i?password_env=UNSET", "$UNSET is not set"),
    ],
)
def test_spec_errors_are_clear(url: str, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("$", r"\$")):
        parse_spec(url, env={})


# -- back-off and text --------------------------------------------------------


def test_backoff_grows_with_jitter_and_caps() -> None:
    rng = random.Random(1)
    b = Backoff(base=0.1, cap=1.0)
    for failures, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (12, 1.0)]:
        delays = [b.delay(failures, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert b.delay(0) == 0


def test_display_shows_non_utf8_bytes() -> None:
    name = b"caf\xe9-\xff.txt".decode("utf-8", "surrogateescape")
    assert display(name) == "caf\\xe9-\\xff.txt"
    assert display("plain ünïcode") == "plain ünïcode"
    assert display("\ud800") == "\\ud800"  # not from a kernel, still printable


# -- JSON lines, end to end ---------------------------------------------------


async def test_jsonl_file_gets_events_and_alerts(nc, js, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    events = [nth_event(i) for i in range(10)] + [nth_event(i, "open") for i in range(10, 15)]
    async with forwarding(nc, f"jsonl+file://{out}?exclude=open&min_severity=medium") as fwd:
        await publish_events(js, events, per_msg=3)
        await publish_alert(js, nth_alert(1, "high"))
        await publish_alert(js, nth_alert(2, "low"))  # below min_severity
        await until(lambda: out.exists() and len(out.read_text().splitlines()) >= 11)
        await asyncio.sleep(0.3)  # nothing more should come
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    execs = sorted(d["id"] for d in docs if d.get("type") == "exec")
    assert execs == [f"inst-{i}" for i in range(10)]
    (alert,) = [d for d in docs if d.get("type") == "alert"]
    assert alert["rule"]["level"] == "high" and alert["event"]["id"] == "inst-1"
    assert fwd.workers[0].stats.sent == 11


async def test_cli_runs_forward_until_sigterm(nats_server, js, tmp_path: Path) -> None:
    out = tmp_path / "cli.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "snoopbus.consumers", "--nats", nats_server.url, "forward",
         "--to", f"jsonl+file://{out}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        await publish_events(js, [nth_event(i) for i in range(5)], per_msg=2)
        await until(lambda: out.exists() and len(out.read_text().splitlines()) == 5, 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    # The stop line counts what the sinks processed (3 messages), not the control subject's 0.
    assert "forward stopped: processed=3 " in err.decode(), err.decode()


def test_cli_bad_sink_is_one_clear_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "snoopbus.consumers", "forward", "--to", "syslog+http://x"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "syslog goes over tcp, udp, tls, not 'http'" in proc.stderr


# -- webhook, end to end and under faults ------------------------------------


async def test_webhook_batches_arrive(nc, js) -> None:
    async with http_receiver() as rx:
        async with forwarding(nc, f"webhook+http://127.0.0.1:{rx.port}/hook?batch=50") as fwd:
            await publish_events(js, [nth_event(i) for i in range(120)], per_msg=40)
            await until(lambda: len(rx.webhook_items) >= 120)
        assert sorted(d["id"] for d in rx.webhook_items) == sorted(f"inst-{i}" for i in range(120))
        assert all(len(batch) <= 50 for batch in rx.batches)
        assert rx.requests[0].path == "/hook"
        assert fwd.workers[0].stats.acked == 3


async def test_webhook_down_then_back_delivers_every_event(nc, js) -> None:
    async with http_receiver() as rx:
        port = rx.port
    # Down: nothing listens on the port while events are published.
    url = f"webhook+http://127.0.0.1:{port}/?backoff=0.05&backoff_cap=0.5&retries=2"
    async with forwarding(nc, url) as fwd:
        await publish_events(js, [nth_event(i) for i in range(30)], per_msg=3)
        await until(lambda: fwd.workers[0].stats.naked >= 5, what="naks while down")
        async with http_receiver(port=port) as rx:
            await until(lambda: {d["id"] for d in rx.webhook_items} >= {
                f"inst-{i}" for i in range(30)}, 30)  # fmt: skip
            stats = fwd.workers[0].stats
    assert stats.dead_lettered == 0 and stats.failures >= 2
    runtime_counters = fwd.runtimes[fwd.workers[0].name].counters
    assert runtime_counters.dead_lettered == 0


async def test_webhook_429_and_500_back_off(nc, js) -> None:
    async with http_receiver(script=[500, 429, 500, 503, 500]) as rx:
        url = f"webhook+http://127.0.0.1:{rx.port}/?backoff=0.03&backoff_cap=5&retries=10"
        async with forwarding(nc, url):
            await publish_events(js, [nth_event(0)])
            await until(lambda: len(rx.webhook_items) == 1)
        times = [r.at for r in rx.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 5
    # Each gap is at least half its ceiling (0.03, 0.06, 0.12, 0.24, 0.48 s): no tight loop.
    for gap, ceiling in zip(gaps, [0.03, 0.06, 0.12, 0.24, 0.48], strict=True):
        assert gap >= ceiling / 2 * 0.95, gaps
    assert gaps[-1] > gaps[0]


async def test_webhook_permanent_reject_goes_to_dead_letters(nc, js) -> None:
    async with http_receiver(script=[400]) as rx:
        url = f"webhook+http://127.0.0.1:{rx.port}/?name=hook"
        async with forwarding(nc, url) as fwd:
            await publish_events(js, [nth_event(0), nth_event(1)], per_msg=2)
            (letter,) = await dead_letters(js, "forward-hook", 1)
            await publish_events(js, [nth_event(2)])
            await until(lambda: len(rx.webhook_items) == 1)
    reason = letter.headers["Snoopbus-Dlq-Reason"]
    assert reason.startswith("webhook+http: HTTP 400:") and "scripted 400" in reason
    assert letter.headers["Snoopbus-Dlq-Kind"] == "rejected"
    assert fwd.workers[0].stats.dead_lettered == 1 and len(rx.requests) == 2


async def test_a_sink_that_is_down_holds_back_only_itself(nc, js, tmp_path: Path) -> None:
    async with http_receiver() as rx:
        port = rx.port  # closed again: this sink stays down
    out = tmp_path / "ok.jsonl"
    down = f"webhook+http://127.0.0.1:{port}/?name=down&backoff=0.05&backoff_cap=0.2&retries=1"
    async with forwarding(nc, down, f"jsonl+file://{out}?name=up") as fwd:
        await publish_events(js, [nth_event(i) for i in range(50)], per_msg=5)
        await until(lambda: out.exists() and len(out.read_text().splitlines()) == 50)
        await until(lambda: fwd.workers[0].stats.naked >= 10)
        info = await js.consumer_info("SNOOPBUS", "forward-down")
    assert fwd.workers[1].stats.acked == 10 and fwd.workers[0].stats.acked == 0
    assert info.num_ack_pending + info.num_pending + info.num_redelivered >= 1


async def test_a_sink_that_stays_down_keeps_memory_bounded(nc, js) -> None:
    """In flight: at most concurrency x fetch batch messages; the rest stays in JetStream."""
    async with http_receiver() as rx:
        port = rx.port
    url = (f"webhook+http://127.0.0.1:{port}/?name=down&backoff=0.01&backoff_cap=0.05"
           "&retries=1&concurrency=1")  # fmt: skip
    async with forwarding(nc, url) as fwd:
        runtime = fwd.runtimes["forward-down"]
        bound = runtime.settings.concurrency * runtime.settings.batch
        acks = [await js.publish_async(event_subject("h1", "exec"), encode_batch([nth_event(i)]))
                for i in range(3 * bound)]  # fmt: skip
        await asyncio.gather(*acks)
        peak = 0
        for _ in range(40):
            peak = max(peak, runtime.held)
            await asyncio.sleep(0.025)
        await until(lambda: fwd.workers[0].stats.naked >= bound)
        info = await js.consumer_info("SNOOPBUS", "forward-down")
    assert peak <= bound
    assert info.num_ack_pending <= runtime.settings.ack_pending_limit
    assert fwd.workers[0].stats.acked == 0 and runtime.counters.dead_lettered == 0


async def test_ecs_lines_to_a_file(nc, js, tmp_path: Path) -> None:
    out = tmp_path / "ecs.jsonl"
    async with forwarding(nc, f"ecs+file://{out}"):
        await publish_events(js, [nth_event(1, "delete")])
        await until(lambda: out.exists() and out.read_text().count("\n") == 1)
    doc = json.loads(out.read_text())
    assert doc["event"]["type"] == ["deletion"] and doc["file"]["path"] == "/tmp/f1.txt"


# -- details ------------------------------------------------------------------


async def test_gate_honours_retry_after_within_the_cap() -> None:
    gate = Gate(Backoff(base=0.01, cap=0.5))
    assert gate.failed(retry_after=0.3) >= 0.3
    assert gate.failed(retry_after=100) <= 0.5
    gate.succeeded()
    assert not gate.down


async def test_webhook_retry_after_is_waited_for(nc, js) -> None:
    async with http_receiver(script=[429], retry_after="0.6") as rx:
        url = f"webhook+http://127.0.0.1:{rx.port}/?backoff=0.01"
        async with forwarding(nc, url):
            await publish_events(js, [nth_event(0)])
            await until(lambda: len(rx.webhook_items) == 1)
    assert rx.requests[1].at - rx.requests[0].at >= 0.6


def test_alert_in_the_alerters_shape() -> None:
    alert = parse_alert({
        "v": 1, "id": "r-9:inst-3:folded", "ts": 5, "host": "web-1", "level": "high",
        "rule": {"id": "r-9", "title": "Reverse shell", "level": "high", "tags": ["attack.t1059"],
                 "description": "d", "source": "x.yml"},
        "category": "process_creation", "selections": ["sel"], "fields": {"Image": "/bin/nc"},
        "event": nth_event(3, host="web-1"), "count": 4, "folded": True,
    })  # fmt: skip
    assert (alert.id, alert.ts, alert.host, alert.count) == ("r-9:inst-3:folded", 5, "web-1", 4)
    assert (alert.rule_id, alert.title, alert.level, alert.description) == (
        "r-9", "Reverse shell", "high", "d")  # fmt: skip


def test_alert_without_a_rule_id_is_refused() -> None:
    with pytest.raises(AlertError, match="no rule id"):
        parse_alert({"rule": {"title": "t"}, "level": "low"})
    with pytest.raises(AlertError, match="level"):
        parse_alert({"rule": {"id": "x", "level": "severe"}})


async def test_malformed_alert_goes_to_dead_letters(nc, js, tmp_path: Path) -> None:
    out = tmp_path / "a.jsonl"
    async with forwarding(nc, f"jsonl+file://{out}?name=lines"):
        await ensure_stream(js)
        await js.publish(alert_subject("h1", "high"), encode_map({"title": "no rule"}))
        await js.publish(alert_subject("h1", "high"), b"\xc1 not msgpack")
        letters = await dead_letters(js, "forward-lines", 2)
    kinds = sorted(m.headers["Snoopbus-Dlq-Kind"] for m in letters)
    assert kinds == ["decode", "rejected"]


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    from tests.support.syslog import make_certs

    where = tmp_path_factory.mktemp("forward-https") / "tls"
    make_certs(where)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(where / "server.pem", where / "server.key")
    return ctx, where / "ca.pem"


async def test_https_with_a_private_ca_and_basic_auth(nc, js, server_tls) -> None:
    ctx, ca = server_tls
    async with http_receiver(ssl=ctx) as rx:
        url = f"webhook+https://bob:s3cret@127.0.0.1:{rx.port}/in?ca={ca}"
        async with forwarding(nc, url):
            await publish_events(js, [nth_event(0)])
            await until(lambda: len(rx.webhook_items) == 1)
        bulk = f"elastic+https://127.0.0.1:{rx.port}/idx?ca={ca}"
        async with forwarding(nc, bulk):
            await until(lambda: len(rx.docs) == 1)
    assert rx.requests[0].headers["authorization"] == "Basic Ym9iOnMzY3JldA=="


async def test_https_with_an_unknown_ca_is_retried_not_accepted(nc, js, server_tls) -> None:
    ctx, _ = server_tls
    async with http_receiver(ssl=ctx) as rx:
        url = f"webhook+https://127.0.0.1:{rx.port}/in?backoff=0.01&retries=2"
        async with forwarding(nc, url) as fwd:
            await publish_events(js, [nth_event(0)])
            await until(lambda: fwd.workers[0].stats.naked >= 1)
    assert not rx.webhook_items and fwd.workers[0].stats.acked == 0


async def test_stop_does_not_wait_out_the_back_off(nc, js) -> None:
    async with http_receiver() as rx:
        port = rx.port
    url = f"webhook+http://127.0.0.1:{port}/?name=slow&backoff=20&backoff_cap=20&retries=5"
    async with forwarding(nc, url) as fwd:
        await publish_events(js, [nth_event(0)])
        await until(lambda: fwd.workers[0].stats.failures == 1)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 3  # not the 10-20 s back-off
    assert fwd.workers[0].stats.naked == 1 and fwd.workers[0].stats.acked == 0
    info = await js.consumer_info("SNOOPBUS", "forward-slow")
    assert info.ack_floor.stream_seq == 0  # not acked: the next run gets it


def test_secrets_stay_out_of_the_spec_repr() -> None:
    spec = parse_spec("webhook+https://bob:hunter2@h/x", env={})
    assert spec.password == "hunter2" and "hunter2" not in repr(spec)
    spec = parse_spec("elastic+https://es/i", env={"SNOOPBUS_ELASTIC_API_KEY": "k-secret"})
    assert spec.api_key == "k-secret" and "k-secret" not in repr(spec)


async def test_start_new_skips_the_backlog(nc, js, tmp_path: Path) -> None:
    out = tmp_path / "new.jsonl"
    await publish_events(js, [nth_event(0)])  # before the sink exists
    async with forwarding(nc, f"jsonl+file://{out}?start=new"):
        await publish_events(js, [nth_event(1)])
        await until(lambda: out.exists() and out.read_text().count("\n") == 1)
    assert json.loads(out.read_text())["id"] == "inst-1"


# -- rename halves ---------------------------------------------------------------


def rename_events(seq: int) -> list[dict]:
    """One rename as the bus has it once the pairer ran: both halves and `renamed`."""
    return [nth_event(seq, "moved_from", cookie=seq), nth_event(seq + 1, "moved_to", cookie=seq),
            nth_event(seq + 2, "renamed")]  # fmt: skip


async def forwarded_types(nc, js, out: Path, url: str, seq: int) -> list[str]:
    async with forwarding(nc, url):
        for event in rename_events(seq):
            await publish_events(js, [event])
        await publish_events(js, [nth_event(seq + 3, "exec")])  # the last one, as a marker
        await until(lambda: out.exists() and '"exec"' in out.read_text(), 20)
    return sorted(json.loads(line)["type"] for line in out.read_text().splitlines())


async def test_while_a_pairer_durable_exists_renames_are_forwarded_once(
    nc, js, tmp_path: Path
) -> None:
    await ensure_stream(js)
    # Before any pairer: the halves are all a SIEM would get of a rename.
    alone = await forwarded_types(nc, js, tmp_path / "a.jsonl",
                                  f"jsonl+file://{tmp_path / 'a.jsonl'}?name=a", 0)  # fmt: skip
    assert alone == ["exec", "moved_from", "moved_to", "renamed"]
    from nats.js.api import ConsumerConfig

    from snoopbus.consumers.rename import RenamePairer
    from snoopbus.proto import STREAM_NAME

    await js.add_consumer(STREAM_NAME, ConsumerConfig(
        durable_name=RenamePairer.name, filter_subjects=list(RenamePairer.filters)))  # fmt: skip
    # A new sink, and the same one restarted (its durable's filters change).
    for name, start in (("b", "&start=new"), ("a", "")):
        out = tmp_path / f"{name}-2.jsonl"
        got = await forwarded_types(nc, js, out, f"jsonl+file://{out}?name={name}{start}", 10)
        # ("a" also gets what "b"'s round published: it resumes where it stopped.)
        assert set(got) == {"exec", "renamed"}, (name, got)
    out = tmp_path / "c.jsonl"
    both = await forwarded_types(nc, js, out, f"jsonl+file://{out}?halves=1&start=new", 20)
    assert both == ["exec", "moved_from", "moved_to", "renamed"]


def test_consume_forward_tunes_the_collector_and_an_embedded_forwarder_does_not() -> None:
    # Process-wide (gctune.py): `consume forward` owns its process; a test or
    # another program embedding a Forwarder keeps its own collector settings.
    parser = argparse.ArgumentParser()
    Forwarder.add_arguments(parser)
    args = parser.parse_args(["--to", "jsonl:-"])
    run = Forwarder.from_args(args, Settings())
    assert isinstance(run, Forwarder) and run.gc_tuning
    assert not Forwarder([parse_spec("jsonl:-")]).gc_tuning
