"""A nats-server started with a configuration of the test's (users, permissions,
limits), beside conftest's plain one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from snoopbus.app.natsd import NatsServer, config_args


@contextlib.contextmanager
def serve(tmp_path: Path, conf: str = "", port: int = -1) -> Iterator[NatsServer]:
    """A server under tmp_path/nats with `conf` added (on `port` if given: a
    restart on the same port)."""
    extra = config_args(tmp_path / f"nats{port}.conf", conf) if conf else []
    server = NatsServer(state_dir=tmp_path / "nats", port=port, extra_args=extra)
    server.start()
    try:
        yield server
    finally:
        server.stop()
