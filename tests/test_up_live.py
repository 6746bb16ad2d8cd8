"""`snoopbus up` in a real terminal (tmux), as a user meets it: the live view shows
commands run beside it, a killed consumer comes back, Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.kernel

# Documented in the README: from nothing (no state folder, no nats-server) to the
# first event of a command run beside it on screen. Measured ~3 s on the
# 2-core development machine; the bound leaves room for a loaded machine.
STARTUP_BOUND_S = 30.0
SNOOPBUS = [sys.executable, "-m", "snoopbus.app"]


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class Tmux:
    """One private tmux server (own socket) running one command in a fixed-size pane."""

    def __init__(self, cols: int = 140, rows: int = 50) -> None:
        self.socket = f"snoopbus-test-{secrets.token_hex(4)}"
        self.cols, self.rows = cols, rows

    def tmux(self, *args: str) -> str:
        # env given explicitly: once anything in this process has imported readline,
        # the C environment holds COLUMNS=80 LINES=24 (readline exports them), which
        # a child started with env=None inherits; rich in `up` would then draw an
        # 80x24 frame in the 140x50 pane and cut off its lower half.
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                             timeout=10, env=dict(os.environ))  # fmt: skip
        return out.stdout

    def start(self, command: str) -> int:
        self.tmux("new-session", "-d", "-x", str(self.cols), "-y", str(self.rows), "-s", "t",
                  command)  # fmt: skip
        return int(self.tmux("list-panes", "-t", "t", "-F", "#{pane_pid}").strip())

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def wait_for(self, text: str, within: float, poke: object = None) -> str:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            if callable(poke):
                poke()
            time.sleep(0.3)
        raise AssertionError(f"{text!r} not on screen within {within}s:\n{self.screen()}")

    def close(self) -> None:
        self.tmux("kill-server")


@pytest.fixture
def tmux() -> object:
    assert shutil.which("tmux"), "tmux is not installed (make test installs it)"
    t = Tmux()
    try:
        yield t
    finally:
        t.close()


def test_up_live_view_in_a_terminal(tmp_path: Path, tmux: Tmux) -> None:
    port, host = free_port(), f"live{secrets.token_hex(3)}"
    state, rc = tmp_path / "state", tmp_path / "rc"
    up_cmd = " ".join([*SNOOPBUS, "up", "--state-dir", str(state), "--port", str(port),
                       "--host", host])  # fmt: skip
    started = time.monotonic()
    shell = tmux.start(f"{up_cmd}; echo $? > {rc}")
    # A program of our own, run from /tmp: its file events name it in the
    # top-processes table, and its exec raises the packaged exec-from-/tmp alert.
    work = tmp_path / "work"
    work.mkdir()
    marker = f"sbmk{secrets.token_hex(3)}"
    shutil.copy("/usr/bin/touch", tmp_path / marker)

    def run_marker() -> None:
        files = [str(work / f"{marker}-{i}") for i in range(20)]
        subprocess.run([str(tmp_path / marker), *files], check=True)

    up_pid = 0
    kids: list[int] = []
    try:
        tmux.wait_for("snoopbus up", 30)
        screen = tmux.wait_for(marker, STARTUP_BOUND_S, poke=run_marker)
        first_event_s = time.monotonic() - started
        print(f"up: first event of a command beside it on screen after {first_event_s:.1f}s")
        # The marker can show while the rest of the frame is still being drawn.
        screen = tmux.wait_for("latest alerts", 10)
        assert "collector ready" in screen and "events/s by type" in screen
        assert "exec" in screen, screen
        [up_pid] = children(shell)
        kids = children(up_pid)
        names = {k: cmdline(k) for k in kids}
        assert any("nats-server" in c for c in names.values()), names
        [rename] = [k for k, c in names.items() if "consume rename" in c]
        os.kill(rename, signal.SIGKILL)
        tmux.wait_for("rename exited with -9; restarting", 15)
        deadline = time.monotonic() + 20
        while not any("consume rename" in cmdline(k) for k in children(up_pid) if k != rename):
            assert time.monotonic() < deadline, "rename was not restarted"
            time.sleep(0.1)
        kids = children(up_pid)
        tmux.tmux("send-keys", "-t", "t", "C-c")
        deadline = time.monotonic() + 60
        while not rc.exists():
            assert time.monotonic() < deadline, f"up did not stop on Ctrl-C:\n{tmux.screen()}"
            time.sleep(0.1)
        assert rc.read_text().strip() == "0"
        for pid in [up_pid, *kids]:  # collector, consumers, nats-server: all gone
            assert not Path(f"/proc/{pid}").exists(), cmdline(pid)
    finally:
        for pid in [*kids, up_pid]:  # only if the test failed midway
            if pid and Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)


def test_up_without_root_is_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *SNOOPBUS, "up",
         "--state-dir", str(tmp_path), "--port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 4  # exits.PRIVILEGE
    assert out.stderr.strip().splitlines() == [
        "snoopbus up: the collector loads eBPF probes: run `snoopbus up` as root (sudo snoopbus up)"
    ]


def test_consume_with_a_nats_url_that_does_not_answer(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    out = subprocess.run([*SNOOPBUS, "consume", "rename", "--nats", url], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode != 0 and "Traceback" not in out.stderr
    [line] = [ln for ln in out.stderr.splitlines() if "cannot connect" in ln]
    assert url in line and "snoopbus up" in line


def listening_with_two_free_below() -> socket.socket:
    """A listening socket on port P where P-2 and P-1 are free: `up` reports the
    first taken port of its range, and an ephemeral port beside P would be it."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        try:
            for p in (port - 2, port - 1):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", p))
            return s
        except OSError:
            s.close()


def test_up_refuses_a_taken_metrics_port_before_starting_anything(tmp_path: Path) -> None:
    with listening_with_two_free_below() as s:
        taken = s.getsockname()[1]
        out = subprocess.run(
            [*SNOOPBUS, "up", "--state-dir", str(tmp_path / "state"), "--port", str(free_port()),
             "--metrics-port", str(taken - 2)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert out.returncode == 5 and not (tmp_path / "state").exists()  # exits.BUSY
    assert out.stderr.strip().splitlines() == [
        f"snoopbus up: metrics port {taken} (for rename: --metrics-port {taken - 2} + 2) is in "
        "use: pick another --metrics-port or [metrics] port, or 0 for none"
    ]


def test_up_refuses_an_unknown_consumer(tmp_path: Path) -> None:
    config = tmp_path / "snoopbus.toml"
    config.write_text('[up]\nconsumers = ["rename", "renamer"]\n')
    out = subprocess.run(
        [*SNOOPBUS, "up", "--config", str(config), "--state-dir", str(tmp_path / "state"),
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and not (tmp_path / "state").exists()
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("snoopbus up: [up] consumers: no consumer named 'renamer' is installed")
