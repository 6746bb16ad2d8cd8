"""Coalescing in the kernel (issue 15) merges only what would be the same
event on the wire but for its time: a hard link's name, an extended
attribute's name and operation, keep their own events; true repeats come out
as one event with `count`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support.collector import EventWatch, RunningCollector
from tests.support.kernel import settled_file_events

pytestmark = pytest.mark.kernel

PROGRAM = """
import os
for name in ("a", "b"):  # b: a hard link to a, the same inode under another name
    for _ in range(3):
        os.close(os.open(name, os.O_WRONLY))  # a close_write
fd = os.open("a", os.O_RDONLY)  # by fd: the record has the inode (by name: not coalesced)
os.setxattr(fd, "user.x", b"1")
os.setxattr(fd, "user.x", b"1")  # the same call again: a repeat
os.setxattr(fd, "user.y", b"1")  # another name of the same length
os.removexattr(fd, "user.y")  # another operation
os.close(fd)
"""


async def settled(watch: EventWatch, pid: int) -> list[dict[str, Any]]:
    """pid's file events once it exited and no more came for a second (each
    type has its own subject: batches of others may still be on their way)."""
    await watch.wait_for(lambda e: e["type"] == "exit" and e["proc"]["pid"] == pid)
    return await settled_file_events(watch, pid)


async def test_only_identical_events_are_coalesced(
    collector: RunningCollector, watch: EventWatch, tmp_path: Path
) -> None:
    (tmp_path / "a").write_bytes(b"")
    os.link(tmp_path / "a", tmp_path / "b")
    proc = subprocess.Popen([sys.executable, "-I", "-c", textwrap.dedent(PROGRAM)],
                            cwd=tmp_path, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    events = [e for e in await settled(watch, proc.pid)
              if e["file"].get("path", "").startswith(str(tmp_path))]
    got = [(e["type"], Path(e["file"]["path"]).name, e["file"].get("xattr"),
            e["file"].get("xattr_op"), e.get("count")) for e in events]
    assert got == [
        ("close_write", "a", None, None, None), ("close_write", "a", None, None, 2),
        ("close_write", "b", None, None, None), ("close_write", "b", None, None, 2),
        ("attrib", "a", "user.x", "set", None), ("attrib", "a", "user.x", "set", 1),
        ("attrib", "a", "user.y", "set", None), ("attrib", "a", "user.y", "remove", None),
    ], got
