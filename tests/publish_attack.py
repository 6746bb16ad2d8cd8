"""The "one command stops all publishing" attack, performed for real.

An unprivileged user (nobody) runs a program with a long argv that creates a
few hundred files: every create event carries that argv, so one flush makes a
batch far over the server's max_payload. Then root touches a few witness
files: their events must still reach the bus, and heartbeats keep coming.

Shared by tests/test_publish_attack.py and the bench (tests/bench/oversize.py).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.msg import Msg

from snoopbus.app.natsd import NatsServer, config_args
from snoopbus.proto import decode_batch, decode_map, events_filter, meta_subject
from tests.conftest import start_collector, stop_process

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by nobody, unlike a venv under /work

ATTACK = """
import os, sys
for i in range(int(sys.argv[1])):
    os.close(os.open(f"{sys.argv[2]}{i}", os.O_CREAT | os.O_WRONLY, 0o644))
"""


def attacker_argv(files: int, argv_bytes: int, prefix: str = "a") -> list[str]:
    """python3 -c ATTACK N PREFIX PAD, with PAD making the whole argv `argv_bytes`
    long (the kernel's form: each argument and its NUL)."""
    head = [SYSTEM_PYTHON, "-I", "-c", ATTACK, str(files), prefix]
    used = sum(len(a.encode()) + 1 for a in head) + 1
    return [*head, "x" * max(0, argv_bytes - used)]


@dataclass
class BusWatch:
    """Everything one host publishes: event messages (size, events) and meta reports."""

    events: list[dict[str, Any]] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (payload bytes, events)
    beats: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    status: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_events(self, msg: Msg) -> None:
        batch = decode_batch(msg.data)
        self.sizes.append((len(msg.data), len(batch)))
        self.events.extend(batch)
        self.changed.set()

    async def on_beat(self, msg: Msg) -> None:
        self.beats.append((time.monotonic(), decode_map(msg.data)))
        self.changed.set()

    async def on_status(self, msg: Msg) -> None:
        self.status.append(decode_map(msg.data))
        self.changed.set()

    def created(self, prefix: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "create"
                and os.path.basename(e["file"].get("path", "")).startswith(prefix)]

    async def until(self, done: Any, within: float) -> bool:
        try:
            async with asyncio.timeout(within):
                while not done():
                    self.changed.clear()
                    await self.changed.wait()
            return True
        except TimeoutError:
            return False


def server_with(tmp_path: Path, max_payload: int | None) -> NatsServer:
    extra = []
    if max_payload is not None:
        extra = config_args(tmp_path / "nats.conf", f"max_payload: {max_payload}\n")
    return NatsServer(state_dir=tmp_path / "nats", extra_args=extra)


async def run_attack(
    tmp_path: Path, *, max_payload: int | None, argv_bytes: int, files: int,
    witnesses: int = 20, wait_s: float = 20, collector_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Runs the attack against a real collector and server; returns its figures."""
    server = server_with(tmp_path, max_payload)
    server.start()
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o1777)  # the attacker writes here
    nc = await nats.connect(server.url)
    watch = BusWatch()
    try:
        running = await start_collector(
            server.url, nc, tmp_path, "--include-path", str(work),
            "--heartbeat-interval", "0.5", *collector_args,
        )
        try:
            await nc.subscribe(events_filter(host=running.host), cb=watch.on_events)
            await nc.subscribe(meta_subject(running.host, "heartbeat"), cb=watch.on_beat)
            await nc.subscribe(meta_subject(running.host, "status"), cb=watch.on_status)
            await nc.flush()
            attack = subprocess.run([*NOBODY, *attacker_argv(files, argv_bytes)], cwd=work,
                                    capture_output=True, timeout=60)
            assert attack.returncode == 0, attack.stderr
            attacked_at = time.monotonic()
            # In rounds: one message made while the publisher is wedged may slip through.
            for i in range(witnesses):
                (work / f"w{i}").touch()
                await asyncio.sleep(2 / witnesses)
            witnessed = await watch.until(lambda: len(watch.created("w")) >= witnesses, wait_s)
            await watch.until(lambda: len(watch.created("a")) >= files, 5 if witnessed else 0)
        finally:
            code = stop_process(running.process)
        assert code == 0, running.log()
        await watch.until(lambda: any(r.get("state") == "stopped" for r in watch.status), 10)
        final = next((r for r in watch.status if r.get("state") == "stopped"), {})
        attack_events = watch.created("a")
        argvs = [e["proc"]["argv"] for e in attack_events if e.get("proc", {}).get("argv")]
        return {
            "max_payload": max_payload or 1 << 20,
            "argv_sent": argv_bytes,
            "attack_creates": files,
            "attack_creates_published": len(attack_events),
            "witness_creates_published": f"{len(watch.created('w'))}/{witnesses}",
            "heartbeats_after_attack": sum(1 for t, _ in watch.beats if t > attacked_at),
            "largest_argv_published": max(
                (sum(len(a.encode("utf-8", "surrogateescape")) + 1 for a in argv)
                 for argv in argvs), default=0),
            "argv_truncated_events": sum(
                1 for e in attack_events if e.get("proc", {}).get("argv_truncated")),
            "largest_message_bytes": max((b for b, _ in watch.sizes), default=0),
            "largest_message_events": max((n for _, n in watch.sizes), default=0),
            # the collector's own account at stop: captured = published + spilled + lost
            "captured": final.get("captured"),
            "published": final.get("published"),
            "spilled": final.get("spilled"),
            "lost": final.get("lost"),
            "payload_limit": final.get("payload_limit"),
            "cut_batches": final.get("cut_batches"),
            "truncated_events": final.get("truncated_events"),
            "collector_log": running.log(),
        }
    finally:
        await nc.close()
        server.stop()
