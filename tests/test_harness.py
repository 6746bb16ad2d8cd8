"""The harness itself: a real server, JetStream on, cleaned up after."""

from nats.aio.client import Client
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer


async def test_server_runs_jetstream_on_loopback(
    nats_server: NatsServer, nc: Client, js: JetStreamContext
) -> None:
    assert nats_server.url.startswith("nats://127.0.0.1:")
    info = await js.account_info()
    assert info.limits is not None
    sub = await nc.subscribe("harness.check")
    await nc.publish("harness.check", b"x")
    msg = await sub.next_msg(timeout=2)
    assert msg.data == b"x"


def test_stop_ends_the_process(tmp_path) -> None:
    server = NatsServer(state_dir=tmp_path / "n")
    server.start()
    proc = server.process
    assert proc is not None and proc.poll() is None
    server.stop()
    assert proc.poll() is not None
