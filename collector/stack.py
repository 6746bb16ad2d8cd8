"""`snoopbus up`: the embedded stack on one host.

A private nats-server with JetStream in the state folder, then the collector
(and, as they land, the built-in consumers) as child processes. Ctrl-C or
SIGTERM stops them all, children first, and nothing is left running.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from snoopbus.collector.natsd import NatsServer

log = logging.getLogger("snoopbus.up")

DEFAULT_STATE_DIR = Path(os.environ.get("SNOOPBUS_STATE_DIR", "/var/lib/snoopbus"))
EMBEDDED_PORT = 4222


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path = DEFAULT_STATE_DIR
    port: int = EMBEDDED_PORT
    host: str | None = None


def _child(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "snoopbus.collector.cli", *args])


def run_stack(cfg: StackConfig) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = NatsServer(state_dir=cfg.state_dir / "nats", port=cfg.port)
    server.start()
    print(f"snoopbus: nats-server with JetStream at {server.url} (state in {cfg.state_dir})")
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        collect = ["collect", "--nats", server.url]
        if cfg.host:
            collect += ["--host", cfg.host]
        children["collector"] = _child(collect)
        print("snoopbus: collector starting; watch events with `snoopbus tail`; Ctrl-C stops")
        while not stop.wait(0.5):
            for name, proc in children.items():
                if proc.poll() is not None:
                    print(f"snoopbus: {name} exited with {proc.returncode}", file=sys.stderr)
                    return 1
        return 0
    finally:
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in children.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server.stop()
        print("snoopbus: stopped")
