"""A small real workload under strace and under the collector, compared event by event.

The workload (tar, sed -i, cp -a, mv, chmod, ln -s, rm -rf) runs once, as
nobody, in a folder nobody owns under /tmp, with strace as its parent and the
collector running. tests/strace_truth.py derives from strace's log the events
proto/README.md documents; the collector must deliver exactly those, as a
multiset of (pid, type, path): nothing missing, nothing extra under the folder.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from snoopbus.collector.natsd import NatsServer
from snoopbus.proto import Event, events_filter
from tests.conftest import EventWatch, start_collector, stop_process
from tests.strace_truth import STRACE_ARGS, Key, derive

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

WORKLOAD = """
set -e
mkdir x
tar xf in.tar -C x
sed -i s/one/two/ x/tree/d0/f0.txt
cp -a x/tree y
mv y/d1/f1.txt y/moved.txt
mv y/d2 y/d2moved
chmod 600 y/moved.txt
ln -s moved.txt y/link
rm -rf x y
"""


def build_tarball(path: Path) -> None:
    """A few dozen files and folders and a symlink, as `tree/...`."""
    with tarfile.open(path, "w") as tar:
        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"",
                target: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, 0o755 if kind != tarfile.REGTYPE else 0o644, 1
            info.size, info.linkname = len(data), target
            tar.addfile(info, io.BytesIO(data) if data else None)
        add("tree", tarfile.DIRTYPE)
        for d in range(4):
            add(f"tree/d{d}", tarfile.DIRTYPE)
            add(f"tree/d{d}/sub", tarfile.DIRTYPE)
            for f in range(5):
                add(f"tree/d{d}/f{f}.txt", data=f"one {d} {f}\n".encode())
            add(f"tree/d{d}/sub/deep.txt", data=b"deep\n")
        add("tree/ln", tarfile.SYMTYPE, target="d0/f0.txt")


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder nobody owns under /tmp (pytest's tmp_path is root's own, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="snoopbus-strace-", dir="/tmp"))
    try:
        build_tarball(path / "in.tar")
        os.chmod(path / "in.tar", 0o644)
        os.chown(path, 65534, 65534)
        yield path
    finally:
        shutil.rmtree(path)


def existing_names(root: Path) -> set[str]:
    names = {str(root)}
    for d, dirs, files in os.walk(root):
        names.update(os.path.join(d, n) for n in dirs + files)
    return names


def collector_key(e: Event) -> Key:
    if e["type"] == "exec":
        return (e["proc"]["pid"], "exec", e["proc"]["exe"])
    return (e["proc"]["pid"], e["type"], e["file"]["path"])


def difference(truth: Counter[Key], got: Counter[Key]) -> tuple[list[Key], list[Key]]:
    return sorted((truth - got).elements()), sorted((got - truth).elements())


async def test_workload_matches_strace_event_by_event(
    nats_server: NatsServer, nc: Client, tmp_path: Path, folder: Path
) -> None:
    if shutil.which("strace") is None:
        pytest.fail("strace is missing: run `make setup` (it installs Debian's strace)")
    root = str(folder)
    before = existing_names(folder)
    running = await start_collector(nats_server.url, nc, tmp_path, "--include-path", root)
    watch = EventWatch()
    sub = await nc.subscribe(events_filter(host=running.host), cb=watch.on_msg)
    await nc.flush()  # the server has the subscription before the workload runs
    log = tmp_path / "strace.log"
    try:
        done = subprocess.run(
            ["strace", *STRACE_ARGS, "-o", str(log), *NOBODY, "bash", "-c", WORKLOAD],
            cwd=folder, capture_output=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        truth = derive(log.read_text(errors="surrogateescape"), root, before, root)

        def relevant(e: Event) -> bool:
            if e["type"] == "exec":
                return e.get("proc", {}).get("pid") in truth.pids
            path = e.get("file", {}).get("path", "")
            return path == root or path.startswith(root + "/")

        def got() -> Counter[Key]:
            return Counter(collector_key(e) for e in watch.events if relevant(e))

        # Until every expected event came (or 20 s), then a second for late extras.
        try:
            await watch.wait_for(relevant, count=sum(truth.events.values()), within=20)
        except TimeoutError:
            pass
        await nc.flush()
        await __import__("asyncio").sleep(1)
    finally:
        await sub.unsubscribe()
        assert stop_process(running.process) == 0, running.log()

    # close_write of an open file several processes held: not compared (see strace_truth).
    def comparable(c: Counter[Key]) -> Counter[Key]:
        return Counter({k: n for k, n in c.items()
                        if not (k[1] == "close_write" and k[2] in truth.shared_close_paths)})

    expected, delivered = comparable(truth.events), comparable(got())
    missing, extra = difference(expected, delivered)
    types = Counter(k[1] for k in expected.elements())
    assert types["create"] >= 40 and types["exec"] >= 9, f"workload too small: {types}"
    assert not missing and not extra, (
        f"strace truth {sum(expected.values())} events ({dict(types)}), collector "
        f"{sum(delivered.values())}\nmissing ({len(missing)}):\n"
        + "\n".join(map(str, missing)) + f"\nextra ({len(extra)}):\n" + "\n".join(map(str, extra))
    )
