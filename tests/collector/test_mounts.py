"""Placing a path seen in another mount namespace on the host (pure, from
mountinfo texts), and the lookup against real namespaces made with unshare."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from snoopbus.collector.mounts import HostPaths, Mount, host_path, parse_mountinfo

HOST = parse_mountinfo(textwrap.dedent("""\
    22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
    40 22 0:45 / /var/lib/docker/overlay2/abc/merged rw shared:20 - overlay overlay rw
    41 22 254:1 /srv/data /mnt/data rw shared:1 - ext4 /dev/vda1 rw
    42 22 0:50 / /tmp/with\\040space rw - tmpfs none rw
"""))
CONTAINER = parse_mountinfo(textwrap.dedent("""\
    300 250 0:45 / / rw master:20 - overlay overlay rw
    301 300 0:60 / /proc rw - proc proc rw
    302 300 254:1 /srv/data /data rw - ext4 /dev/vda1 rw
    303 300 254:1 /srv/data/cfg /etc/app rw - ext4 /dev/vda1 rw
    304 300 0:70 / /run/private rw - tmpfs none rw
    305 300 0:50 /inner /spaced rw - tmpfs none rw
"""))


def test_mountinfo_fields_and_escapes() -> None:
    assert HOST[0] == Mount("254:1", "/", "/")
    assert HOST[3].point == "/tmp/with space"
    assert parse_mountinfo("garbage\n\n1 2 nodev\n") == []


def test_a_container_root_lands_in_its_overlay() -> None:
    merged = "/var/lib/docker/overlay2/abc/merged"
    assert host_path(CONTAINER, HOST, "/etc/passwd") == f"{merged}/etc/passwd"
    assert host_path(CONTAINER, HOST, "/") == merged


def test_volumes_land_where_the_host_keeps_them_deepest_mount_first() -> None:
    # /mnt/data holds /srv/data of the same disk: the deeper root wins
    assert host_path(CONTAINER, HOST, "/data/x.log") == "/mnt/data/x.log"
    assert host_path(CONTAINER, HOST, "/etc/app/a.conf") == "/mnt/data/cfg/a.conf"
    assert host_path(CONTAINER, HOST, "/etc/apparent") == (
        "/var/lib/docker/overlay2/abc/merged/etc/apparent")  # a prefix by name only
    assert host_path(CONTAINER, HOST, "/spaced/f") == "/tmp/with space/inner/f"


def test_what_the_host_does_not_mount_has_no_host_path() -> None:
    assert host_path(CONTAINER, HOST, "/run/private/secret") is None
    assert host_path(CONTAINER, HOST, "/proc/1/status") is None
    assert host_path([], HOST, "/x") is None


def test_lookup_reads_a_live_namespace_and_forgets_nothing_it_should_not(
    tmp_path: Path,
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    script = textwrap.dedent(f"""
        import os, subprocess, sys
        subprocess.run(["mount", "--bind", {str(src)!r}, {str(dst)!r}], check=True)
        print(os.stat("/proc/self/ns/mnt").st_ino, flush=True)
        sys.stdin.read()  # alive until the test has looked
    """)
    child = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-I", "-c", script],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        ns = int(child.stdout.readline())
        paths = HostPaths()
        assert ns != paths.own_ns
        assert paths.lookup(ns, child.pid, f"{dst}/f") == f"{src}/f"
        (src / "real").write_bytes(b"")
        st = (src / "real").stat()
        # With the event's inode the answer is checked: a file elsewhere is no match.
        assert paths.lookup(ns, child.pid, f"{dst}/real", st.st_ino, st.st_dev) == f"{src}/real"
        assert paths.lookup(ns, child.pid, f"{dst}/real", st.st_ino + 1, st.st_dev) is None
        assert paths.lookup(ns, child.pid, f"{dst}/none", st.st_ino, st.st_dev) is None
        assert paths.lookup(ns, child.pid, f"{src}/f") is None  # same path on the host
        assert paths.lookup(paths.own_ns, os.getpid(), f"{dst}/f") is None
    finally:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        child.stdout.close()
        child.wait(10)
    # Gone, but remembered for the namespace's later events.
    assert paths.lookup(ns, child.pid, f"{dst}/g") == f"{src}/g"
    assert HostPaths().lookup(ns, child.pid, f"{dst}/g") is None  # never seen alive
