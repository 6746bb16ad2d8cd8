"""Who can read the archive: the archiver's group only. An unprivileged user
tries to list and read it; a member of the configured group reads it with
`snoopbus query`; a tree an older snoopbus left readable is closed at start."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from snoopbus.app.natsd import NatsServer
from snoopbus.consumers.archive import layout
from snoopbus.proto import encode_batch, ensure_stream, event_subject
from tests.test_forward_receivers import make_event

SNOOPBUS = [sys.executable, "-m", "snoopbus.app"]
Spawn = Callable[..., subprocess.Popen[bytes]]
OUTSIDER = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def readers() -> Iterator[tuple[str, int]]:
    """A group of its own for the test (name, gid), removed afterwards."""
    name = f"sbread{secrets.token_hex(3)}"
    subprocess.run(["groupadd", "--system", name], check=True, capture_output=True)
    try:
        yield name, int(subprocess.run(["getent", "group", name], check=True, text=True,
                                       capture_output=True).stdout.split(":")[2])  # fmt: skip
    finally:
        subprocess.run(["groupdel", name], check=True, capture_output=True)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder every user may enter, as /var/lib or /srv are: only the archive's
    own modes can keep them out."""
    where = Path(tempfile.mkdtemp(prefix="snoopbus-arch-", dir="/tmp"))
    where.chmod(0o755)
    try:
        yield where
    finally:
        shutil.rmtree(where)


def member(gid: int) -> list[str]:
    """An unprivileged user in the readers' group (and nothing else)."""
    return ["setpriv", "--reuid=65534", "--regid=65534", f"--groups={gid}"]


def as_user(who: list[str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*who, *argv], capture_output=True, text=True, timeout=60)


def head(path: Path) -> list[str]:
    """A Parquet file's magic number, to show it was read."""
    return ["head", "-c", "4", str(path)]


def tree(root: Path) -> list[os.stat_result]:
    return [os.lstat(p) for p in [root, *root.rglob("*")]]


async def archive_once(
    spawn: Spawn, js: JetStreamContext, root: Path,
    events: list[dict], *extra: str,
) -> None:  # fmt: skip
    """Run the archiver until `events` are in files under `root`, then stop it."""
    await ensure_stream(js)
    for ev in events:
        await js.publish(event_subject(ev["host"], ev["type"]), encode_batch([ev]))
    before = len(list(layout.files(root))) if root.exists() else 0
    proc = spawn("archive", "--dir", str(root), "--roll-seconds", "0.3", *extra)
    try:
        async with asyncio.timeout(60):  # this run's file is there, and no temporary
            while len(list(layout.files(root))) <= before or any(
                p.name.endswith(".tmp") for p in root.rglob("*")
            ):
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # the commit's acks
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


async def test_only_the_configured_group_reads_the_archive(
    nats_server: NatsServer, js: JetStreamContext, spawn_consumer: Spawn,
    readers: tuple[str, int], shared: Path,
) -> None:  # fmt: skip
    name, gid = readers
    root = shared / "archive"
    secret = f"--password=hunter{secrets.token_hex(2)}"
    ev = make_event(1, "exec")
    ev["proc"]["argv"] = ["mysql", secret]
    await archive_once(spawn_consumer, js, root, [ev], "--group", name)

    for st in tree(root):
        want = 0o750 if stat.S_ISDIR(st.st_mode) else 0o640
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (want, gid)
    [parquet] = [f.path for f in layout.files(root)]
    # Outside the group: nothing to list, nothing to read, nothing to query.
    assert as_user(OUTSIDER, "ls", str(root)).returncode != 0
    assert as_user(OUTSIDER, "ls", str(parquet.parent)).returncode != 0
    denied = as_user(OUTSIDER, *head(parquet))
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    assert as_user(member(gid), *head(parquet)).stdout == "PAR1"
    query = [*SNOOPBUS, "query", "--dir", str(root), "--since", "3650d", "--json"]
    out = as_user(OUTSIDER, *query)
    assert secret not in out.stdout and out.returncode != 0
    # In the group: the query tool reads it.
    out = as_user(member(gid), *query)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["proc_argv"] for r in rows] == [["mysql", secret]]


async def test_an_open_tree_is_closed_at_start_and_a_group_taken_away(
    nats_server: NatsServer, js: JetStreamContext, spawn_consumer: Spawn,
    readers: tuple[str, int], shared: Path,
) -> None:  # fmt: skip
    name, gid = readers
    root = shared / "archive"
    await archive_once(spawn_consumer, js, root, [make_event(1)], "--group", name)
    for p in [root, *root.rglob("*")]:  # as an older snoopbus left it: 0755, 0644
        p.chmod(0o755 if p.is_dir() else 0o644)
    [parquet] = [f.path for f in layout.files(root)]
    assert as_user(OUTSIDER, *head(parquet)).stdout == "PAR1"  # the hole, before

    # Started again without --group: its own group, nobody else.
    await archive_once(spawn_consumer, js, root, [make_event(2)])
    for st in tree(root):
        want = 0o750 if stat.S_ISDIR(st.st_mode) else 0o640
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (want, os.getegid())
    assert as_user(OUTSIDER, *head(parquet)).returncode != 0
    assert as_user(member(gid), *head(parquet)).returncode != 0


def test_a_folder_closed_to_the_group_above_the_archive_is_named(tmp_path: Path) -> None:
    inner = tmp_path / "open" / "archive"
    inner.mkdir(parents=True)
    (tmp_path / "open").chmod(0o755)
    tmp_path.chmod(0o700)  # like up's state folder
    assert layout.unreachable(inner, gid=12345) == tmp_path
    tmp_path.chmod(0o711)
    assert layout.unreachable(inner, gid=12345) in (None, *tmp_path.parents)


def test_an_unknown_group_is_one_clear_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "snoopbus.consumers", "archive", "--dir", str(tmp_path),
         "--group", "no-such-group-here"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "argument --group: no group named 'no-such-group-here' on this host" in out.stderr
