"""One exit-status table for every command (proto/exits.py, README), --version,
and logging flags (--log-format, --log-level, -v) wherever they are given."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from snoopbus.app.stack import Child
from snoopbus.proto import exits, log_setup

SNOOPBUS = [sys.executable, "-m", "snoopbus.app"]
README = Path(__file__).resolve().parents[1] / "README.md"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def run(*args: str, prefix: tuple[str, ...] = (), env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, *SNOOPBUS, *args], capture_output=True, text=True,
                          timeout=60, env=env)  # fmt: skip


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"nats://127.0.0.1:{s.getsockname()[1]}"


def test_the_readme_table_is_the_code_table() -> None:
    text = README.read_text()
    rows = dict(re.findall(r"^\| (\d+) +\| (.+?) +\|$", text, re.M))
    assert {int(k) for k in rows} == set(exits.TABLE), rows


def test_version_is_the_installed_one() -> None:
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"snoopbus {metadata.version('snoopbus')}"


@pytest.mark.parametrize(
    "command", [["collect", "--require-nats"], ["tail"], ["consume", "rename"]]
)
def test_nats_unreachable_is_the_same_status_everywhere(command: list[str]) -> None:
    out = run(*command, "--nats", closed_url())
    assert out.returncode == exits.BUS, out.stderr
    assert "Traceback" not in out.stderr and "cannot connect to NATS" in out.stderr


@pytest.mark.parametrize("command", [["collect", "--nats", "nats://127.0.0.1:1"],
                                     ["up", "--state-dir", "/nonexistent", "--port", "1"]])
def test_not_root_is_the_same_status_everywhere(command: list[str]) -> None:
    out = run(*command, prefix=tuple(NOBODY))
    assert out.returncode == exits.PRIVILEGE, out.stderr
    assert "root" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("command", [["collect"], ["consume", "rename"], ["up"]])
def test_a_taken_port_is_the_same_status_everywhere(command: list[str], tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        if command == ["up"]:  # its NATS port
            out = run("up", "--state-dir", str(tmp_path), "--port", str(port))
        else:
            out = run(*command, "--nats", closed_url(), "--metrics-port", str(port))
    assert out.returncode == exits.BUSY, out.stderr
    assert f"{port}" in out.stderr and "in use" in out.stderr


@pytest.mark.parametrize("command", [["collect"], ["tail"], ["consume", "rename"], ["up"],
                                     ["config", "show"], ["query", "--dir", "/nonexistent"]])
def test_a_bad_value_is_a_usage_error_everywhere(command: list[str], tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "SNOOPBUS_LOG_LEVEL": "loud"}
    out = run(*command, env=env)
    assert out.returncode == exits.USAGE, out.stderr
    assert "log level 'loud'" in out.stderr and "Traceback" not in out.stderr


def test_consume_v_after_the_name_turns_debug_on() -> None:
    quiet = run("consume", "rename", "--nats", closed_url())
    loud = run("consume", "rename", "--nats", closed_url(), "-v")
    assert " DEBUG " not in quiet.stderr
    assert " DEBUG " in loud.stderr, loud.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_json_logs_are_json_lines_whichever_side_of_the_name(where: str) -> None:
    flags = ["--log-format", "json", "--log-level", "debug"]
    args = [*flags, "consume", "rename"] if where == "before" else ["consume", "rename", *flags]
    out = run(*args, "--nats", closed_url())
    lines = out.stderr.strip().splitlines()
    records = [json.loads(line) for line in lines]  # every line, the final error too
    assert any(r["level"] == "debug" for r in records)
    assert records[-1]["level"] == "error" and records[-1]["exit_status"] == exits.BUS


def test_up_children_log_as_up_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`up` exports its logging settings; a child it starts (a real process) follows."""
    monkeypatch.setattr(log_setup, "active", ("json", "debug"))
    monkeypatch.setenv(log_setup.FORMAT_ENV, "text")  # restored after the test
    monkeypatch.setenv(log_setup.LEVEL_ENV, "info")
    log_setup.export()
    child = Child("rename", ["consume", "rename", "--nats", closed_url()])
    child.log_path = tmp_path / "rename.log"
    child.start()
    assert child.process is not None
    child.process.wait(60)
    lines = child.log_path.read_text().strip().splitlines()
    assert lines and all(json.loads(line)["pid"] == child.process.pid for line in lines)
    assert any(json.loads(line)["level"] == "debug" for line in lines)
