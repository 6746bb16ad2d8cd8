"""The forwarder's HTTP client against a real local receiver: Retry-After in
both forms, answers it will not read to the end, proxies from the
environment or the sink's URL."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import pytest

from snoopbus.consumers.forward import Transient, parse_spec
from snoopbus.consumers.forward.http import HttpClient, proxy_from_env, retry_after
from tests.support.events import nth_event, publish_events
from tests.support.forward import forwarding, http_receiver
from tests.support.waits import until


def test_retry_after_seconds_and_http_date() -> None:
    now = 1_700_000_000.0
    assert retry_after("120", now) == 120.0
    assert retry_after(" 0 ", now) == 0.0
    assert retry_after(formatdate(now + 30, usegmt=True), now) == pytest.approx(30.0)
    assert retry_after(formatdate(now - 30, usegmt=True), now) == 0.0  # in the past: now
    for junk in ("", None, "soon", "-5", "Wed, 99 Foo 2015 07:28:00 GMT", "1e400x"):
        assert retry_after(junk, now) is None, junk


def test_proxy_from_env_honours_no_proxy() -> None:
    env = {"HTTPS_PROXY": "http://proxy:3128", "http_proxy": "http://p2:8080",
           "NO_PROXY": "localhost,.internal"}  # fmt: skip
    assert proxy_from_env("https", "es.example", env) == "http://proxy:3128"
    assert proxy_from_env("http", "es.example", env) == "http://p2:8080"
    assert proxy_from_env("https", "es.internal", env) is None
    assert proxy_from_env("https", "localhost", env) is None
    assert proxy_from_env("https", "x", {}) is None


def test_spec_proxy_option_env_and_none() -> None:
    env = {"HTTPS_PROXY": "http://u:pw@proxy:3128"}
    spec = parse_spec("webhook+https://hook.example/in", env=env)
    assert spec.proxy == "http://u:pw@proxy:3128" and "pw" not in repr(spec)
    assert parse_spec("webhook+https://hook.example/in?proxy=none", env=env).proxy is None
    given = parse_spec("webhook+https://h/in?proxy=http://a:s3@p:1", env=env)
    assert given.proxy == "http://a:s3@p:1" and "s3" not in given.url and "s3" not in repr(given)
    assert parse_spec("syslog+tcp://h:514", env=env).proxy is None  # not HTTP


async def test_a_date_retry_after_is_waited_for(nc, js) -> None:
    later = formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1 to 2 s from now
    async with http_receiver(script=[503], retry_after=later) as rx:
        async with forwarding(nc, f"webhook+http://127.0.0.1:{rx.port}/?backoff=0.01"):
            await publish_events(js, [nth_event(0)])
            await until(lambda: len(rx.webhook_items) == 1)
    assert rx.requests[1].at - rx.requests[0].at >= 0.9


async def test_an_endless_answer_is_cut_and_its_connection_dropped() -> None:
    async with http_receiver(answer_bytes=64 * 1024 * 1024) as rx:
        client = HttpClient(f"http://127.0.0.1:{rx.port}", ssl_context=None, size=1, timeout=30,
                            max_answer=1024 * 1024)  # fmt: skip
        try:
            response = await client.post("/x", b"[]", "application/json")
        finally:
            await client.close()
    assert response.cut and len(response.body) == 1024 * 1024
    assert response.status == 200


async def test_a_receiver_that_never_answers_times_out() -> None:
    stop = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(1 << 20)
            await stop.wait()
        finally:
            writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HttpClient(f"http://127.0.0.1:{port}", ssl_context=None, size=1, timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(Transient, match=r"no answer within 0\.5s"):
            await client.post("/x", b"{}", "application/json")
    finally:
        await client.close()
        stop.set()
        server.close()
        await server.wait_closed()
    assert time.monotonic() - started < 5


async def test_posts_go_through_the_proxy_from_the_environment(nc, js) -> None:
    # The receiver plays the proxy: a request for another origin arrives in
    # absolute form. Port 9 (discard) has no listener: only the proxy can answer.
    async with http_receiver() as proxy:
        env = {"HTTP_PROXY": f"http://127.0.0.1:{proxy.port}"}
        async with forwarding(nc, "webhook+http://127.0.0.1:9/hook?name=viaproxy", env=env):
            await publish_events(js, [nth_event(1)])
            await until(lambda: len(proxy.webhook_items) == 1)
    assert proxy.requests[0].path == "http://127.0.0.1:9/hook"
    assert proxy.webhook_items[0]["id"] == "inst-1"


async def test_no_proxy_sends_direct(nc, js) -> None:
    async with http_receiver() as proxy, http_receiver() as direct:
        env = {"HTTP_PROXY": f"http://127.0.0.1:{proxy.port}", "NO_PROXY": "127.0.0.1"}
        async with forwarding(nc, f"webhook+http://127.0.0.1:{direct.port}/d", env=env):
            await publish_events(js, [nth_event(2)])
            await until(lambda: len(direct.webhook_items) == 1)
    assert not proxy.requests and direct.requests[0].path == "/d"
