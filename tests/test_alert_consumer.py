"""The alert consumer against a real nats-server, fed events the test publishes:
alerts on the right subjects with the right content, throttling, outputs."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers import Runtime, Settings, plugin
from snoopbus.consumers.alert.consumer import AlertConsumer
from snoopbus.consumers.alert.outputs import (
    NatsOutput,
    Output,
    StdoutOutput,
    WebhookConfig,
    WebhookOutput,
)
from snoopbus.consumers.lines import format_alert
from snoopbus.proto import (
    SCHEMA_VERSION,
    alerts_filter,
    decode_map,
    encode_batch,
    encode_map,
    ensure_stream,
    event_subject,
    parse_subject,
)
from tests import sigma_corpus

FAST = Settings(batch=64, fetch_timeout=0.2, concurrency=1, backoff=(0.05,))
_ids = itertools.count(1)
HOST = "alert-test"


def exec_event(argv: list[str], parent: str | None = None, **proc: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"pid": 4242, "tid": 4242, "ppid": 1, "uid": 0, "gid": 0,
                         "comm": argv[0].rsplit("/", 1)[-1][:15], "exe": argv[0], "argv": argv,
                         "cwd": "/root"}  # fmt: skip
    p.update(proc)
    if parent:
        p["parent_exe"], p["parent_argv"] = parent, [parent]
    return {"v": SCHEMA_VERSION, "id": f"t-{next(_ids)}", "ts": 1_700_000_000_000_000_000,
            "host": HOST, "type": "exec", "proc": p}  # fmt: skip


def file_event(type_: str, path: str, **file: Any) -> dict[str, Any]:
    return {"v": SCHEMA_VERSION, "id": f"t-{next(_ids)}", "ts": 1_700_000_000_000_000_000,
            "host": HOST, "type": type_, "file": {"path": path, **file},
            "proc": {"pid": 77, "uid": 0, "comm": "cp", "exe": "/usr/bin/cp"}}  # fmt: skip


async def publish(js: JetStreamContext, *events: dict[str, Any]) -> None:
    for event in events:
        await js.publish(event_subject(event["host"], event["type"]), encode_batch([event]))


class AlertWatch:
    def __init__(self) -> None:
        self.alerts: list[tuple[str, dict[str, Any]]] = []
        self._changed = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        self.alerts.append((msg.subject, decode_map(msg.data)))
        self._changed.set()

    async def wait(self, count: int, within: float = 10) -> list[tuple[str, dict[str, Any]]]:
        async with asyncio.timeout(within):
            while len(self.alerts) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.alerts

    async def quiet(self, seconds: float = 0.5) -> None:
        """Nothing more arrives for a while (for 'exactly these alerts')."""
        before = len(self.alerts)
        await asyncio.sleep(seconds)
        assert len(self.alerts) == before, self.alerts[before:]


@pytest.fixture
async def alerts(nc: Client, js: JetStreamContext) -> AsyncIterator[AlertWatch]:
    await ensure_stream(js)
    watch = AlertWatch()
    sub = await nc.subscribe(alerts_filter(host=HOST), cb=watch.on_msg)
    try:
        yield watch
    finally:
        await sub.unsubscribe()


@asynccontextmanager
async def running(consumer: AlertConsumer, url: str) -> AsyncIterator[Runtime]:
    runtime = Runtime(consumer, servers=url, settings=FAST)
    task = asyncio.create_task(runtime.run())
    ready = asyncio.create_task(runtime.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        await task
    try:
        yield runtime
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 15)


async def test_exactly_the_expected_alerts_arrive_with_their_content(
    nats_server: NatsServer, js: JetStreamContext, alerts: AlertWatch
) -> None:
    attack = exec_event(["/bin/sh", "-c", "echo aWQK | base64 -d | sh"], parent="/usr/sbin/nginx")
    await publish(
        js,
        exec_event(["/usr/bin/ls", "-l"]),  # nothing
        attack,  # base64 pipe to shell, and a shell under nginx
        file_event("close_write", "/etc/cron.d/job"),
        file_event("renamed", "/root/.ssh/authorized_keys", old_path="/root/.ssh/tmp"),
        file_event("open", "/etc/sudoers"),  # open is no file_event: nothing
        file_event("delete", "/var/log/auth.log"),
    )
    consumer = AlertConsumer(throttle=0)
    async with running(consumer, nats_server.url):
        got = await alerts.wait(5)
        await alerts.quiet()
    by_title = {a["rule"]["title"]: (subject, a) for subject, a in got}
    assert set(by_title) == {
        "Base64 Decoded and Executed", "Shell Spawned by a Web Server or Database",
        "Write to a Cron Directory or Crontab", "SSH Authorized Keys Changed", "Log File Deleted",
    }  # fmt: skip
    subject, alert = by_title["Shell Spawned by a Web Server or Database"]
    parts = parse_subject(subject)
    assert (parts.kind, parts.host, parts.type) == ("alerts", HOST, "high")
    assert alert["event"] == attack  # whole
    assert alert["rule"]["id"] == "0b55f312-be13-4d07-820f-5873bfb463ee"
    assert "attack.t1505.003" in alert["rule"]["tags"]
    assert alert["selections"] == ["selection_parent", "selection_shell"]
    assert alert["fields"] == {"Image": "/bin/sh", "ParentImage": "/usr/sbin/nginx"}
    assert alert["count"] == 1 and alert["id"] == f"{alert['rule']['id']}:{attack['id']}"
    assert alert["category"] == "process_creation" and alert["level"] == "high"
    assert by_title["Write to a Cron Directory or Crontab"][0].endswith(".medium")
    assert consumer.stats.events == 5 and consumer.stats.published == 5  # open: not subscribed


async def test_the_shared_corpus_fires_on_a_known_attack(
    nats_server: NatsServer, js: JetStreamContext, alerts: AlertWatch
) -> None:
    corpus = sigma_corpus.require()
    await publish(js, exec_event(["bash", "-c", "echo aWQK | base64 -d | sh"], exe="/usr/bin/bash"))
    async with running(AlertConsumer([corpus], throttle=0), nats_server.url):
        await alerts.wait(2)
        await alerts.quiet()
    assert {a["rule"]["title"] for _, a in alerts.alerts} == {
        "Linux Base64 Encoded Pipe to Shell", "Linux Shell Pipe to Shell",
    }  # fmt: skip


async def test_repeats_are_folded_into_one_summary_with_a_count(
    nats_server: NatsServer, js: JetStreamContext, alerts: AlertWatch
) -> None:
    same = [exec_event(["/tmp/x/miner"]) for _ in range(5)]
    other = exec_event(["/tmp/x/other"])
    consumer = AlertConsumer(throttle=0.6)
    async with running(consumer, nats_server.url):
        await publish(js, *same, other)
        got = await alerts.wait(3)  # first of each key at once, then one summary
        await alerts.quiet(0.8)
    firsts = [a for _, a in got if not a.get("folded")]
    (summary,) = [a for _, a in got if a.get("folded")]
    assert sorted(a["event"]["proc"]["exe"] for a in firsts) == ["/tmp/x/miner", "/tmp/x/other"]
    assert summary["count"] == 4 and summary["event"] == same[-1]
    assert summary["id"].endswith(":folded") and summary["first_ts"] <= summary["last_ts"]
    assert consumer.throttle.folded == 4


async def test_an_alert_whose_publish_failed_is_sent_on_redelivery_not_folded(
    nats_server: NatsServer, js: JetStreamContext, alerts: AlertWatch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    real_send = NatsOutput.send
    failures = [RuntimeError("nats down for a moment")]

    async def flaky_send(self: NatsOutput, batch: Any) -> None:
        if failures:
            raise failures.pop()
        await real_send(self, batch)

    monkeypatch.setattr(NatsOutput, "send", flaky_send)
    attack = exec_event(["/tmp/dropper"])
    await publish(js, attack)
    async with running(AlertConsumer(throttle=60.0), nats_server.url) as runtime:
        ((_, alert),) = await alerts.wait(1)
        await alerts.quiet()
    assert not failures and runtime.counters.retried == 1
    assert alert["event"] == attack and not alert.get("folded")


class _Hook(BaseHTTPRequestHandler):
    statuses: ClassVar[list[int]] = []
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            self.bodies.append(json.loads(body))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, type[_Hook]]]:
    handler = type("Hook", (_Hook,), {"statuses": [], "bodies": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/alerts", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_webhook_retries_then_delivers_and_stdout_prints(
    nats_server: NatsServer, js: JetStreamContext, alerts: AlertWatch,
    hook: tuple[str, type[_Hook]], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    url, handler = hook
    handler.statuses = [503, 500]  # two failures, then success
    webhook = WebhookOutput(WebhookConfig(url, retries=3, backoff=0.05, min_level="high"))
    printed = io.StringIO()
    outputs: list[Output] = [webhook, StdoutOutput(stream=printed)]
    await publish(js, exec_event(["/tmp/dropper"]),  # medium: below the webhook's level
                  exec_event(["/bin/sh", "-c", "echo aWQK | base64 -d | sh"]))  # fmt: skip
    async with running(AlertConsumer(throttle=0, outputs=outputs), nats_server.url):
        await alerts.wait(2)
    # teardown waited for the webhook queue
    assert [b["rule"]["title"] for b in handler.bodies] == ["Base64 Decoded and Executed"]
    assert webhook.attempts == 3 and webhook.sent == 1 and webhook.failed == 0
    lines = printed.getvalue().splitlines()
    assert len(lines) == 2
    assert any("HIGH" in line and "Base64 Decoded and Executed [T1140,T1059.004]" in line
               for line in lines)  # fmt: skip


async def test_webhook_gives_up_on_a_client_error_and_after_the_retries(
    hook: tuple[str, type[_Hook]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    url, handler = hook
    handler.statuses = [400, 500, 500]
    webhook = WebhookOutput(WebhookConfig(url, retries=1, backoff=0.01))
    alert = {"id": "r:e", "level": "high", "rule": {"title": "x"}}
    await webhook.send([alert, {**alert, "id": "r:f"}])
    await webhook.close()
    assert webhook.failed == 2 and webhook.sent == 0 and webhook.attempts == 3
    assert handler.bodies == []


async def test_tail_alerts_prints_them_readably(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    await ensure_stream(js)  # tail reads the stream, as the collector creates it
    out = tmp_path / "tail.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "snoopbus.app", "tail", "--alerts",
             "--nats", nats_server.url], stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        alert = {"v": 1, "id": "r:e", "ts": 1_700_000_000_000_000_000, "host": HOST,
                 "level": "critical", "rule": {"title": "Evil Thing", "tags": ["attack.t1059"]},
                 "selections": ["selection"], "count": 1,
                 "event": exec_event(["/bin/sh", "-c", "id"])}  # fmt: skip
        async with asyncio.timeout(20):
            while "Evil Thing" not in out.read_text():
                await nc.publish(f"snoopbus.alerts.{HOST}.critical", encode_map(alert))
                await asyncio.sleep(0.2)
    finally:
        proc.send_signal(2)
        proc.wait(10)
    line = next(x for x in out.read_text().splitlines() if "Evil Thing" in x)
    assert line == format_alert(alert)
    assert "CRITICAL Evil Thing [T1059] (selection) pid=4242: /bin/sh -c id" in line


def test_registered_through_the_entry_point_group() -> None:
    assert plugin.load("alert") is AlertConsumer
    assert "alert" in plugin.plugins()


def test_no_rules_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text("title: x\nlogsource: {product: windows}\n")
    result = subprocess.run(
        [sys.executable, "-m", "snoopbus.consumers", "alert", "--rules", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2  # exits.USAGE
    assert "snoopbus consume alert: alert: no rule loaded" in result.stderr
    assert "Traceback" not in result.stderr
