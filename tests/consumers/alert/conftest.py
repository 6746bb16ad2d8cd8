"""Fixtures of the alert tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from snoopbus.proto import alerts_filter, ensure_stream
from tests.support.alert import HOST, AlertWatch


@pytest.fixture
async def alerts(nc: Client, js: JetStreamContext) -> AsyncIterator[AlertWatch]:
    """Every alert published for the alert tests' host, as it comes."""
    await ensure_stream(js)
    watch = AlertWatch()
    sub = await nc.subscribe(alerts_filter(host=HOST), cb=watch.on_msg)
    try:
        yield watch
    finally:
        await sub.unsubscribe()
