"""A full disk stops acking (nothing lost), says why, and writing resumes when space returns."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import STREAM_NAME, ensure_stream

from .test_archive_support import archived_ids, archiver, make_event, publish_events, settled

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(path: Path) -> int:
    """Write `path` until the file system is full; the bytes written."""
    chunk, written = b"\0" * 65536, 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                n = os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return written
            written += n
    finally:
        os.close(fd)


async def test_full_disk_holds_everything_unacked_then_resumes(
    nats_server: NatsServer, js: JetStreamContext, small_disk: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    await ensure_stream(js)
    root = small_disk / "archive"
    events = [make_event(n) for n in range(600)]
    caplog.set_level(logging.INFO, "snoopbus.consumers.archive")
    async with archiver(nats_server.url, root, roll_seconds=0.1) as (a, runtime):
        filler = small_disk / "filler"
        assert fill(filler) > 1_000_000
        sent = await publish_events(js, events)
        async with asyncio.timeout(10):
            while a.failures < 3:  # it has tried, failed, and tried again
                await asyncio.sleep(0.05)
        info = await js.consumer_info(STREAM_NAME, "archive")
        assert info.num_ack_pending == sent and info.ack_floor.stream_seq == 0  # nothing acked
        assert runtime.counters.processed == 0 and runtime.counters.dead_lettered == 0
        assert archived_ids(root) == []
        assert not [p for p in root.rglob("*") if p.is_file()], "a partial file was left"
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("no space left" in m and "not acking" in m for m in errors), errors
        filler.unlink()  # space returns
        await settled(js, limit=20)
        assert any("writing again" in r.getMessage() for r in caplog.records)
    assert sorted(archived_ids(root)) == sorted(e["id"] for e in events)
    assert runtime.counters.processed == sent
