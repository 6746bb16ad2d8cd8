"""A .creds file (user JWT + NKey seed) against a server in operator mode: the
user its account signed is let in, one signed by an unknown account is not.
The JWTs are made here with nkeys (no nsc needed)."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import nkeys
import pytest

from snoopbus.app.natsd import NatsServer, config_args
from snoopbus.proto import BusUnavailable, NatsAuth, connect

LIMITS = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
          "wildcards": True, "conn": -1, "leaf": -1}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def keypair(prefix: int) -> tuple[bytes, nkeys.KeyPair, str]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    kp = nkeys.from_seed(bytearray(seed))
    return seed, kp, kp.public_key.decode()


def jwt(issuer: nkeys.KeyPair, iss: str, sub: str, nats: dict[str, object]) -> str:
    claims = {"jti": b64(os.urandom(16)).upper(), "iat": int(time.time()), "iss": iss,
              "name": sub[:8], "sub": sub, "nats": {**nats, "version": 2}}
    head = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    signed = f"{head}.{b64(json.dumps(claims).encode())}"
    return f"{signed}.{b64(issuer.sign(signed.encode()))}"


def creds(account: nkeys.KeyPair, account_pub: str, path: Path) -> Path:
    seed, _, pub = keypair(nkeys.PREFIX_BYTE_USER)
    user = jwt(account, account_pub, pub, {"type": "user", "pub": {}, "sub": {},
                                            "subs": -1, "data": -1, "payload": -1})
    path.write_text(f"-----BEGIN NATS USER JWT-----\n{user}\n------END NATS USER JWT------\n\n"
                    f"-----BEGIN USER NKEY SEED-----\n{seed.decode()}\n"
                    "------END USER NKEY SEED------\n")
    return path


async def test_creds_file(tmp_path: Path) -> None:
    _, op, op_pub = keypair(nkeys.PREFIX_BYTE_OPERATOR)
    _, acct, acct_pub = keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, _, sys_pub = keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, rogue, rogue_pub = keypair(nkeys.PREFIX_BYTE_ACCOUNT)  # not known to the server
    conf = (
        f"operator: {jwt(op, op_pub, op_pub, {'type': 'operator', 'system_account': sys_pub})}\n"
        f"system_account: {sys_pub}\nresolver: MEMORY\nresolver_preload: {{\n"
        f"  {acct_pub}: {jwt(op, op_pub, acct_pub, {'type': 'account', 'limits': LIMITS})}\n"
        f"  {sys_pub}: {jwt(op, op_pub, sys_pub, {'type': 'account', 'limits': LIMITS})}\n}}\n"
    )
    server = NatsServer(tmp_path / "n", extra_args=config_args(tmp_path / "n.conf", conf))
    server.start()
    try:
        good = creds(acct, acct_pub, tmp_path / "good.creds")
        nc = await connect(server.url, name="c", auth=NatsAuth(creds=str(good)))
        sub = await nc.subscribe("snoopbus.meta.h.status")
        await nc.publish("snoopbus.meta.h.status", b"x")
        assert (await sub.next_msg(timeout=2)).data == b"x"
        await nc.close()
        bad = creds(rogue, rogue_pub, tmp_path / "rogue.creds")
        with pytest.raises(BusUnavailable, match="authorization violation"):
            await connect(server.url, name="r", auth=NatsAuth(creds=str(bad)), connect_timeout=1)
    finally:
        server.stop()
