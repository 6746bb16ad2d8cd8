"""close_write for files a process leaves open when it exits: the kernel closes
them without a close() the probes could see, so the collector emits them from
the exit, marked closed_by: exit — once, and never for a file already closed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import EventWatch, RunningCollector
from tests.test_file_events import check_proc, file_events, run_child, summary

pytestmark = pytest.mark.kernel


async def test_files_left_open_at_exit_get_their_close_write(
    collector: RunningCollector, watch: EventWatch, tmp_path: Path
) -> None:
    written, untouched, closed = tmp_path / "left open", tmp_path / "untouched", tmp_path / "closed"
    pid = run_child(tmp_path, f"""
        a = os.open({str(written)!r}, os.O_CREAT | os.O_WRONLY, 0o600)
        os.write(a, b"data")
        os.open({str(untouched)!r}, os.O_CREAT | os.O_WRONLY, 0o600)  # never written
        c = os.open({str(closed)!r}, os.O_CREAT | os.O_WRONLY, 0o600)
        os.write(c, b"data")
        os.close(c)
        os._exit(0)  # fds a and the untouched one are still open
    """)
    await watch.wait_for(lambda e: e["type"] == "close_write" and e["proc"]["pid"] == pid
                         and e["file"].get("closed_by") == "exit")
    await watch.wait_for(lambda e: e["type"] == "exit" and e["proc"]["pid"] == pid)
    events = file_events(watch, pid)
    check_proc(events, pid)
    assert summary(events) == [
        ("create", str(written)), ("modify", str(written)),
        ("create", str(untouched)),
        ("create", str(closed)), ("modify", str(closed)), ("close_write", str(closed)),
        ("close_write", str(written)),  # from the exit, after it
    ]
    by_exit = [e for e in events if e["file"].get("closed_by") == "exit"]
    [exit_event] = [e for e in watch.events if e["type"] == "exit" and e["proc"]["pid"] == pid]
    [last] = by_exit
    assert last["ts"] == exit_event["ts"]
    assert int(last["id"].rsplit("-", 1)[1]) > int(exit_event["id"].rsplit("-", 1)[1])
    assert last["file"]["inode"] == written.stat().st_ino
    assert "closed_by" not in events[5]["file"]  # the explicit close is not marked
