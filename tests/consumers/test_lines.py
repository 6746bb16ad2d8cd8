"""The one-line view of `snoopbus tail`: readable and never corrupting a terminal."""

from __future__ import annotations

import json

from snoopbus.consumers.lines import format_event, printable, to_json

BASE = {"v": 1, "id": "a-1", "ts": 1_700_000_000_123_000_000, "host": "web1"}
PROC = {"pid": 42, "ppid": 1, "uid": 0, "comm": "ls", "exe": "/usr/bin/ls", "cwd": "/root"}


def test_exec_line_shows_command_and_cwd() -> None:
    line = format_event({**BASE, "type": "exec", "proc": {**PROC, "argv": ["ls", "-la", "a b"]}})
    assert "web1 exec" in line
    assert "pid=42" in line and "ppid=1" in line and "uid=0" in line
    assert "/usr/bin/ls: ls -la 'a b' (cwd /root)" in line
    assert ".123 " in line  # milliseconds


def test_control_characters_and_raw_bytes_are_escaped() -> None:
    assert printable("a\nb\x1b[31m\udcff") == "a\\x0ab\\x1b[31m\\xff"
    line = format_event({**BASE, "type": "exec", "proc": {**PROC, "argv": ["echo", "x\ny"]}})
    assert "\n" not in line and "\\x0a" in line


def test_exit_rename_and_symlink_lines() -> None:
    exit_line = format_event({**BASE, "type": "exit", "proc": PROC, "exit_code": 137, "signal": 9})
    assert "code=137 signal=9" in exit_line
    renamed = {**BASE, "type": "renamed", "proc": PROC, "file": {"path": "/b", "old_path": "/a"}}
    assert "/a → /b" in format_event(renamed)
    link = {**BASE, "type": "symlink", "proc": PROC, "file": {"path": "/l", "target": "t"}}
    assert "/l -> t" in format_event(link)


def test_json_round_trips_non_utf8_as_escapes() -> None:
    ev = {**BASE, "type": "create", "proc": PROC, "file": {"path": "/tmp/\udcff"}}
    back = json.loads(to_json(ev))
    assert back["file"]["path"] == "/tmp/\udcff"
