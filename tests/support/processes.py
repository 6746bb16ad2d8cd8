"""Ports and processes the tests start, and how they end them."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

# The command, as the tests run it: this interpreter, so this checkout.
SNOOPBUS = [sys.executable, "-m", "snoopbus.app"]
# An argv prefix: what follows runs as nobody.
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port (TCP, or `kind`) free right now (for servers that cannot
    report the one they bound)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> int:
    """The first of n consecutive free ports (up's metrics base and its children's)."""
    for _ in range(50):
        base = free_port()
        socks = [socket.socket() for _ in range(n)]
        try:
            for i, s in enumerate(socks):
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no run of free ports")


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def start_consumer(url: str, log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """`python -m snoopbus.consumers NAME ...` against `url`, its output in `log_path`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "snoopbus.consumers", *args, "--nats", url],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
