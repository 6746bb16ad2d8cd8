"""`snoopbus up`: the embedded stack on one host.

A private nats-server with JetStream in the state folder (or the one already
answering on the port), then the collector and the built-in consumers as
supervised child processes: one that dies is restarted with back-off and
reported. Ctrl-C or SIGTERM stops them all, children first, and nothing is
left running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from snoopbus.collector.natsd import NatsServer, NatsServerError
from snoopbus.proto.settings_file import Config, UpSection

DEFAULT_STATE_DIR = Path(UpSection.state_dir)
EMBEDDED_PORT = UpSection.port
# Built-in consumers `up` runs with their defaults ([up] consumers).
DEFAULT_CONSUMERS = UpSection.consumers


class StackError(RuntimeError):
    """A condition the user must fix; the message says how."""


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path = DEFAULT_STATE_DIR
    port: int = EMBEDDED_PORT
    host: str | None = None
    consumers: tuple[str, ...] = DEFAULT_CONSUMERS
    config_path: Path | None = None  # handed to every child, so they read the same file
    metrics_port: int = 0  # children get metrics_port+1, +2, ... (0: no metrics)
    metrics_address: str = "127.0.0.1"
    live: str = "auto"
    archive_dir_set: bool = False  # [consumer.archive] dir given: do not override it

    @classmethod
    def from_config(cls, cfg: Config) -> StackConfig:
        return cls(
            state_dir=Path(cfg.up.state_dir), port=cfg.up.port,
            host=cfg.collector.host or None, consumers=cfg.up.consumers,
            config_path=cfg.path, metrics_port=cfg.metrics.port,
            metrics_address=cfg.metrics.address, live=cfg.up.live,
            archive_dir_set="dir" in cfg.consumer.get("archive", {}),
        )  # fmt: skip

    def consumer_args(self, name: str, url: str) -> list[str]:
        extra = []
        if name == "archive" and not self.archive_dir_set:
            extra = ["--dir", str(self.state_dir / "archive")]
        return ["consume", *self._config_args(), name, "--nats", url, *extra]

    def collector_args(self, url: str) -> list[str]:
        host = ["--host", self.host] if self.host else []
        return ["collect", *self._config_args(), "--nats", url, *host]

    def _config_args(self) -> list[str]:
        return ["--config", str(self.config_path)] if self.config_path else []


def nats_answering(port: int) -> bool | None:
    """True if a NATS server answers on the loopback port, False if something
    else does, None if nothing listens."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(1)
            first = s.recv(4096)
    except ConnectionRefusedError:
        return None
    except OSError:
        return False
    if not first.startswith(b"INFO "):
        return False
    try:
        return bool(json.loads(first[5:].split(b"\r\n", 1)[0]).get("jetstream"))
    except ValueError:
        return False


@dataclass
class Child:
    """One supervised process: restarted with back-off when it dies."""

    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        command = [sys.executable, "-m", "snoopbus.collector.cli", *self.args]
        self.process = subprocess.Popen(command)
        self.started_at = time.monotonic()

    def check(self, now: float) -> None:
        if self.process is None:
            if now >= self.next_start:
                self.start()
            return
        code = self.process.poll()
        if code is None:
            if now - self.started_at > 60:
                self.restarts = 0  # stable again: back-off starts over
            return
        delay = min(2.0**self.restarts, 30.0)
        self.restarts += 1
        print(f"snoopbus: {self.name} exited with {code}; restarting in {delay:.0f}s",
              file=sys.stderr, flush=True)
        self.process = None
        self.next_start = now + delay

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_stack(cfg: StackConfig) -> int:
    try:
        return _run_stack(cfg)
    except (StackError, NatsServerError) as exc:
        print(f"snoopbus up: {exc}", file=sys.stderr)
        return 2


def _run_stack(cfg: StackConfig) -> int:
    if os.geteuid() != 0:
        raise StackError("the collector loads eBPF probes: run `snoopbus up` as root")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server: NatsServer | None = None
    state = nats_answering(cfg.port)
    if state is False:
        raise StackError(
            f"port {cfg.port} is in use by something that is not a NATS server with "
            "JetStream: free it, or pick another with --port"
        )
    if state is True:
        url = f"nats://127.0.0.1:{cfg.port}"
        print(f"snoopbus: using the nats-server already running at {url}", flush=True)
    else:
        server = NatsServer(state_dir=cfg.state_dir / "nats", port=cfg.port)
        url = server.start()
        print(f"snoopbus: nats-server with JetStream at {url} (data in {cfg.state_dir})",
              flush=True)
    children = [Child("collector", cfg.collector_args(url))]
    children += [Child(name, cfg.consumer_args(name, url)) for name in cfg.consumers]
    try:
        for child in children:
            child.start()
        names = ", ".join(c.name for c in children)
        print(f"snoopbus: started {names}; watch with `snoopbus tail`; Ctrl-C stops", flush=True)
        while not stop.wait(0.5):
            now = time.monotonic()
            for child in children:
                child.check(now)
        return 0
    finally:
        for child in children:
            child.stop()
        for child in children:
            child.wait()
        if server is not None:
            server.stop()
        print("snoopbus: stopped", flush=True)
