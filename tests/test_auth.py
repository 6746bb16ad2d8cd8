"""NATS authentication and TLS through proto/bus.connect, against real servers:
each method lets the right client in and refuses a wrong one; permissions
confine a collector to its own host's subjects; TLS refuses an untrusted
server and, with verify, a client without a trusted certificate."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import nkeys
import pytest

from snoopbus.app.natsd import NatsServer, config_args, tls_block
from snoopbus.proto import (
    BusUnavailable,
    NatsAuth,
    connect,
    ensure_stream,
    event_subject,
    meta_subject,
)

PASSWORD = "s3cret-pw"
TOKEN = "t0ken-abc"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.pem", cwd=d)


def make_cert(d: Path, name: str, ca: str, san: str) -> None:
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
            cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca (trusted), rogue (another CA); server and client certs from ca, and a
    client cert from rogue."""
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "rogue")
    make_cert(d, "server", "ca", "IP:127.0.0.1,DNS:localhost")
    make_cert(d, "client", "ca", "DNS:collector")
    make_cert(d, "intruder", "rogue", "DNS:intruder")
    return d


@contextlib.contextmanager
def serve(tmp_path: Path, conf: str) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats", extra_args=config_args(tmp_path / "n.conf", conf))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def assert_refused(url: str, auth: NatsAuth, why: str) -> None:
    with pytest.raises(BusUnavailable, match=why):
        await connect(url, name="intruder", auth=auth, connect_timeout=1)


async def assert_admitted(url: str, auth: NatsAuth) -> None:
    nc = await connect(url, name="ok", auth=auth)
    try:
        info = await ensure_stream(nc.jetstream())  # JetStream works for this user
        assert info.config.name
    finally:
        await nc.close()


@pytest.fixture
def user_server(tmp_path: Path) -> Iterator[NatsServer]:
    with serve(tmp_path, f'authorization {{ user: collector, password: "{PASSWORD}" }}\n') as s:
        yield s


async def test_user_password(user_server: NatsServer) -> None:
    await assert_admitted(user_server.url, NatsAuth(user="collector", password=PASSWORD))
    await assert_refused(user_server.url, NatsAuth(user="collector", password="guess"),
                         "authorization violation")
    await assert_refused(user_server.url, NatsAuth(), "authorization violation")


async def test_token(tmp_path: Path) -> None:
    with serve(tmp_path, f'authorization {{ token: "{TOKEN}" }}\n') as server:
        await assert_admitted(server.url, NatsAuth(token=TOKEN))
        await assert_refused(server.url, NatsAuth(token="nope"), "authorization violation")


async def test_nkey(tmp_path: Path) -> None:
    def seed_file(name: str) -> tuple[Path, str]:
        seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
        path = tmp_path / f"{name}.nk"
        path.write_bytes(seed)
        return path, nkeys.from_seed(bytearray(seed)).public_key.decode()

    good, public = seed_file("good")
    other, _ = seed_file("other")
    with serve(tmp_path, f"authorization {{ users: [ {{ nkey: {public} }} ] }}\n") as server:
        await assert_admitted(server.url, NatsAuth(nkey=str(good)))
        await assert_refused(server.url, NatsAuth(nkey=str(other)), "authorization violation")


async def test_settings_are_checked_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(BusUnavailable, match="choose one of user/password, token"):
        await connect("nats://127.0.0.1:1", name="x", auth=NatsAuth(user="u", token="t"))
    with pytest.raises(BusUnavailable, match="no such file"):
        await connect("nats://127.0.0.1:1", name="x", auth=NatsAuth(creds=str(tmp_path / "no")))
    assert "s3cret" not in repr(NatsAuth(user="u", password="s3cret"))


def test_environment_names() -> None:
    env = {"SNOOPBUS_NATS_USER": "u", "SNOOPBUS_NATS_PASSWORD": "p",
           "SNOOPBUS_NATS_TLS_CA": "/ca.pem"}
    assert NatsAuth.from_env(env) == NatsAuth(user="u", password="p", tls_ca="/ca.pem")


PERMISSIONS = """
authorization {
  users: [
    { user: collector-h1, password: pw, permissions: {
        publish: { allow: ["snoopbus.events.h1.>", "snoopbus.meta.h1.>", "$JS.API.INFO",
                           "$JS.API.STREAM.INFO.SNOOPBUS"] }
        subscribe: { allow: ["_INBOX.>"] } } }
    { user: admin, password: pw }
  ]
}
"""


async def test_collector_may_publish_only_its_own_host(tmp_path: Path) -> None:
    with serve(tmp_path, PERMISSIONS) as server:
        admin = await connect(server.url, name="admin", auth=NatsAuth(user="admin", password="pw"))
        await ensure_stream(admin.jetstream())  # the operator creates the stream
        errors: list[Exception] = []

        async def on_error(e: Exception) -> None:
            errors.append(e)

        nc = await connect(server.url, name="c", auth=NatsAuth(user="collector-h1", password="pw"),
                           error_cb=on_error)
        js = nc.jetstream()
        await ensure_stream(js)  # only reads the stream's info: allowed
        ack = await js.publish(event_subject("h1", "exec"), b"\x90", timeout=2)
        assert ack.seq == 1
        with pytest.raises(nats.errors.TimeoutError):  # the server drops it, no ack
            await js.publish(event_subject("h2", "exec"), b"\x90", timeout=0.5)
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish(meta_subject("h2", "status"), b"\x80", timeout=0.5)
        said = [str(e).lower() for e in errors]
        assert sum("permissions violation for publish" in e for e in said) == 2, said
        # ... nor read the stream: subscribing outside _INBOX.> is refused
        await nc.subscribe("snoopbus.>")
        await nc.flush()
        await asyncio.sleep(0.2)
        said = [str(e).lower() for e in errors]
        assert any("permissions violation for subscription" in e for e in said), said
        info = await admin.jetstream().stream_info("SNOOPBUS")
        assert info.state.messages == 1
        await nc.close()
        await admin.close()


async def test_tls_custom_ca_and_client_certificates(tmp_path: Path, pki: Path) -> None:
    conf = tls_block(pki / "server.pem", pki / "server.key", ca=pki / "ca.pem", verify=True)
    with serve(tmp_path, conf) as server:
        client = NatsAuth(tls_ca=str(pki / "ca.pem"), tls_cert=str(pki / "client.pem"),
                          tls_key=str(pki / "client.key"))
        await assert_admitted(server.url, client)
        # A client that does not trust the server's CA refuses the server ...
        await assert_refused(server.url, NatsAuth(
            tls_ca=str(pki / "rogue.pem"), tls_cert=str(pki / "client.pem"),
            tls_key=str(pki / "client.key")), "not trusted")
        # ... and the server refuses a client without a certificate, or with an untrusted one.
        await assert_refused(server.url, NatsAuth(tls_ca=str(pki / "ca.pem")), "cannot connect")
        await assert_refused(server.url, NatsAuth(
            tls_ca=str(pki / "ca.pem"), tls_cert=str(pki / "intruder.pem"),
            tls_key=str(pki / "intruder.key")), "cannot connect")


async def test_a_consumer_process_takes_credentials_from_the_environment(
    tmp_path: Path, pki: Path
) -> None:
    conf = tls_block(pki / "server.pem", pki / "server.key") + (
        f'authorization {{ token: "{TOKEN}" }}\n')
    with serve(tmp_path, conf) as server:
        env = {**os.environ, "SNOOPBUS_NATS_TOKEN": TOKEN,
               "SNOOPBUS_NATS_TLS_CA": str(pki / "ca.pem")}
        admin = await connect(server.url, name="a",
                              auth=NatsAuth(token=TOKEN, tls_ca=str(pki / "ca.pem")))
        proc = subprocess.Popen(
            [sys.executable, "-m", "snoopbus.consumers", "rename", "--nats", server.url],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            js = admin.jetstream()
            async with asyncio.timeout(20):
                while True:
                    if proc.poll() is not None:
                        raise AssertionError(proc.stdout.read().decode())  # type: ignore[union-attr]
                    try:
                        await js.consumer_info("SNOOPBUS", "rename")
                        break
                    except Exception:
                        await asyncio.sleep(0.1)
        finally:
            proc.terminate()
            out = proc.communicate(timeout=20)[0].decode()
        assert proc.returncode == 0, out
        assert TOKEN not in out
        env.pop("SNOOPBUS_NATS_TOKEN")
        bad = subprocess.run(
            [sys.executable, "-m", "snoopbus.consumers", "rename", "--nats", server.url],
            env=env, capture_output=True, text=True, timeout=30,
        )
        assert bad.returncode != 0 and "authorization violation" in bad.stdout + bad.stderr
        await admin.close()


def test_config_file_and_environment_reach_nats_auth(tmp_path: Path) -> None:
    from snoopbus.proto import settings_file

    conf = tmp_path / "snoopbus.toml"
    conf.write_text('[nats]\nuser = "collector"\npassword = "from-file"\ntls_ca = "/ca.pem"\n')
    cfg = settings_file.load(conf, env={"SNOOPBUS_NATS_PASSWORD": "from-env"})
    assert NatsAuth.from_section(cfg.nats) == NatsAuth(
        user="collector", password="from-env", tls_ca="/ca.pem")
    shown = settings_file.format_toml(cfg) + str(settings_file.as_dict(cfg))
    assert "from-env" not in shown and 'password = "***"' in shown
