"""Filters act in the kernel: filtered operations never reach the ring buffer.

The proof is the probes' own counters (kstats), reported in the collector's
final status, next to the ring-buffer record count.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from snoopbus.app.natsd import NatsServer
from snoopbus.proto import decode_map, events_filter, meta_subject
from tests.conftest import EventWatch, start_collector, stop_process

pytestmark = pytest.mark.kernel

N = 200


def child(cwd: Path, body: str) -> int:
    proc = subprocess.Popen([sys.executable, "-I", "-B", "-c", textwrap.dedent(body)], cwd=cwd)
    assert proc.wait(60) == 0
    return proc.pid


async def test_excluded_paths_comms_and_uids_are_dropped_in_kernel(
    nats_server: NatsServer, nc: Client, tmp_path: Path
) -> None:
    excl, keep = tmp_path / "excl", tmp_path / "keep"
    excl.mkdir()
    keep.mkdir()
    keep.chmod(0o777)
    running = await start_collector(
        nats_server.url, nc, tmp_path, "--exclude-path", str(excl),
        "--exclude-comm", "sbfiltered", "--exclude-uid", "4242",
    )
    status = await nc.subscribe(meta_subject(running.host, "status"))
    watch = EventWatch()
    sub = await nc.subscribe(events_filter(host=running.host), cb=watch.on_msg)
    await nc.flush()  # the server has the subscriptions before the children run
    try:
        loop = f"""
            import os
            for i in range({N}):
                fd = os.open(f"f{{i}}", os.O_CREAT | os.O_WRONLY, 0o644)
                os.write(fd, b"x")
                os.close(fd)
                os.unlink(f"f{{i}}")
        """
        path_pid = child(excl, loop)
        abs_pid = child(keep, f"""
import os
for i in range({N}):
    os.mkdir("{excl}/d")  # absolute names: matched as strings in the kernel
    os.chmod("{excl}/d", 0o700)
    os.rmdir("{excl}/d/")
""")
        comm_pid = child(keep, "import ctypes\nctypes.CDLL(None).prctl(15, b'sbfiltered')\n"
                         + textwrap.dedent(loop))
        uid_pid = child(keep, "import os\nos.setgid(4242)\nos.setuid(4242)\n"
                        + textwrap.dedent(loop))
        marker = child(keep, 'open("marker", "w").close()')
        await watch.wait_for(lambda e: e["proc"]["pid"] == marker and e["type"] == "create",
                             within=30)
    finally:
        assert stop_process(running.process) == 0, running.log()
    final: dict[str, Any] = {}
    while final.get("state") != "stopped":
        final = decode_map((await status.next_msg(timeout=10)).data)
    await sub.unsubscribe()
    filtered = {path_pid, abs_pid, comm_pid, uid_pid}
    assert not [e for e in watch.events
                if e["proc"]["pid"] in filtered and e["type"] not in ("exec", "exit")]
    kernel = final["kernel_filtered"]
    # Per iteration: create, close_write (path) or all four syscalls (task); the
    # first write's modify and the unlink are the path filter's too.
    assert kernel["filtered_path"] >= 4 * N + 3 * N, final
    assert kernel["filtered_task"] >= 2 * 4 * N, final
    assert final["user_filtered"] < N  # nothing of this had to be dropped after the fact
    assert os.listdir(keep) == ["marker"]


@pytest.fixture
def cgroup() -> Any:
    """A fresh cgroup v2 directory (removed once its processes are gone)."""
    from snoopbus.collector.cgroups import cgroup2_mount

    root = cgroup2_mount()
    assert root is not None, "no cgroup2 mount on this host"
    path = root / f"snoopbus-test-{os.getpid()}"
    path.mkdir()
    try:
        yield path
    finally:
        path.rmdir()


async def test_excluded_cgroup_and_cgroup_attribution(
    nats_server: NatsServer, nc: Client, tmp_path: Path, cgroup: Path
) -> None:
    running = await start_collector(nats_server.url, nc, tmp_path,
                                    "--exclude-cgroup", cgroup.name)
    status = await nc.subscribe(meta_subject(running.host, "status"))
    watch = EventWatch()
    sub = await nc.subscribe(events_filter(host=running.host), cb=watch.on_msg)
    await nc.flush()
    try:
        join = f"open({str(cgroup / 'cgroup.procs')!r}, 'w').write(str(__import__('os').getpid()))"
        inside = child(tmp_path, join + "\nopen('inside', 'w').close()\n")
        outside = child(tmp_path, "open('outside', 'w').close()\n")
        found = await watch.wait_for(lambda e: e["proc"]["pid"] == outside
                                     and e["type"] == "create")
    finally:
        assert stop_process(running.process) == 0, running.log()
    final: dict[str, Any] = {}
    while final.get("state") != "stopped":
        final = decode_map((await status.next_msg(timeout=10)).data)
    await sub.unsubscribe()
    # The write that moves the child into the cgroup is checked at its entry,
    # still outside: it is reported, and nothing after it.
    leaked = [(e["type"], e["file"]) for e in watch.events if e["proc"]["pid"] == inside
              and e["type"] not in ("exec", "exit")
              and not e["file"]["path"].endswith("/cgroup.procs")]
    assert not leaked
    assert final["kernel_filtered"]["filtered_task"] >= 2  # create + close_write at least
    # Attribution: the cgroup v2 id is the inode of the process's cgroup directory.
    own = Path(f"/proc/{os.getpid()}/cgroup").read_text().splitlines()
    unified = next(ln.split(":", 2)[2] for ln in own if ln.startswith("0::"))
    from snoopbus.collector.cgroups import cgroup2_mount

    mount = cgroup2_mount()
    assert mount is not None
    want = os.stat(mount / unified.lstrip("/")).st_ino
    assert found[0]["proc"]["cgroup"] == want


async def test_include_path_keeps_only_that_tree(
    nats_server: NatsServer, nc: Client, tmp_path: Path
) -> None:
    keep, other = tmp_path / "keep", tmp_path / "other"
    keep.mkdir()
    other.mkdir()
    running = await start_collector(nats_server.url, nc, tmp_path, "--include-path", str(keep))
    status = await nc.subscribe(meta_subject(running.host, "status"))
    watch = EventWatch()
    sub = await nc.subscribe(events_filter(host=running.host), cb=watch.on_msg)
    await nc.flush()
    try:
        pid = child(tmp_path, f"""
import os
for d in ({str(other)!r}, {str(keep)!r}):
    for i in range({N}):
        open(f"{{d}}/f", "w").close()  # fd path: the walk's verdict
        os.rename(f"{{d}}/f", f"{{d}}/g")  # two names: user space decides
        os.unlink(f"{{d}}/g")  # absolute name: hashed prefixes
""")
        await watch.wait_for(lambda e: e["proc"]["pid"] == pid and e["type"] == "delete",
                             count=N, within=30)
    finally:
        assert stop_process(running.process) == 0, running.log()
    final: dict[str, Any] = {}
    while final.get("state") != "stopped":
        final = decode_map((await status.next_msg(timeout=10)).data)
    await sub.unsubscribe()
    mine = [e for e in watch.events if e["proc"]["pid"] == pid and "file" in e]
    assert {e["file"]["path"].rsplit("/", 1)[0] for e in mine} == {str(keep)}
    assert len(mine) == 5 * N  # create, close_write, moved_from, moved_to, delete
    # create + close_write + delete of `other` in the kernel; its renames after.
    assert final["kernel_filtered"]["filtered_path"] >= 3 * N, final
    assert final["user_filtered"] >= N, final
