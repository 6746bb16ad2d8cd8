"""Ways to change files that once made no event (issue 14), each run by an
unprivileged user (nobody) in a directory it owns, under the real collector:
ia32 system calls (int $0x80), truncation (truncate, ftruncate, O_TRUNC,
fallocate), shared writable mappings, mknod, extended attributes."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.collector import EventWatch, RunningCollector
from tests.support.kernel import file_events, settled_file_events, summary
from tests.support.paths import TESTS
from tests.support.processes import AS_NOBODY

pytestmark = pytest.mark.kernel

SYSTEM_PYTHON = "/usr/bin/python3"  # readable by nobody, unlike a venv under /work
IA32_SOURCE = TESTS / "evasion" / "ia32_files.c"


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """An empty directory nobody owns, which nobody can reach (/tmp, not the
    root-only pytest tree)."""
    d = Path(tempfile.mkdtemp(prefix="snoopbus-evasion-"))
    os.chown(d, 65534, 65534)
    try:
        yield d
    finally:
        shutil.rmtree(d)


def run_as_nobody(cwd: Path, argv: list[str]) -> int:
    """Runs argv as nobody in `cwd`; returns its pid (setpriv execs in place)."""
    proc = subprocess.Popen([*AS_NOBODY, *argv], cwd=cwd, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode(errors="replace")
    return proc.pid


async def events_by(watch: EventWatch, pid: int, exe: str,
                    closed_by_exit: bool = True) -> list[dict[str, Any]]:
    """The file events of pid's program `exe` (not of the child before its exec:
    its dup2 of the stderr pipe closes pytest's capture file), once its exit
    closed the file it left open (closed_by_exit), or once it exited."""
    await watch.wait_for(lambda e: e["proc"]["pid"] == pid and (
        e["type"] == "close_write" and e["file"].get("closed_by") == "exit"
        if closed_by_exit else e["type"] == "exit"))
    await settled_file_events(watch, pid)
    [exec_event] = [e for e in watch.events if e["type"] == "exec"
                    and e["proc"]["pid"] == pid and e["proc"].get("exe") == exe]
    seq = int(exec_event["id"].rsplit("-", 1)[1])  # ids number the kernel's records in order
    return [e for e in file_events(watch, pid) if int(e["id"].rsplit("-", 1)[1]) > seq]


def build_ia32(into: Path) -> Path:
    exe = into / "ia32_files"
    subprocess.run(["gcc", "-static", "-no-pie", "-O1", "-o", str(exe), str(IA32_SOURCE)],
                   check=True, capture_output=True)
    exe.chmod(0o755)
    return exe


async def test_ia32_system_calls_make_their_events(
    collector: RunningCollector, watch: EventWatch, nobody_dir: Path
) -> None:
    with tempfile.TemporaryDirectory() as build:
        os.chmod(build, 0o755)
        exe = build_ia32(Path(build))
        pid = run_as_nobody(nobody_dir, [str(exe)])
        # The file it leaves open is still mapped as it exits: its release
        # comes after the exit's fd-table scan, unseen (no close_write).
        events = await events_by(watch, pid, str(exe), closed_by_exit=False)
    d = str(nobody_dir)
    assert summary(events) == [
        ("create", f"{d}/c32"), ("modify", f"{d}/c32"), ("close_write", f"{d}/c32"),
        ("moved_from", f"{d}/c32"), ("moved_to", f"{d}/r32"),
        ("attrib", f"{d}/r32"),  # chmod 04755
        ("modify", f"{d}/r32"),  # truncate
        ("attrib", f"{d}/r32"),  # setxattr
        ("link", f"{d}/l32"), ("symlink", f"{d}/s32"),
        ("mkdir", f"{d}/d32"), ("rmdir", f"{d}/d32"),
        ("create", f"{d}/p32"),  # mknod S_IFIFO
        ("modify", f"{d}/l32"),  # open O_TRUNC (fallocate then: not the first write)
        ("modify", f"{d}/l32"),  # mmap2 MAP_SHARED
        ("delete", f"{d}/s32"), ("delete", f"{d}/r32"),
    ]
    for e in events:
        assert e["proc"]["uid"] == 65534 and e["proc"]["exe"] == str(exe), e
        assert e["file"]["ia32"] is True, e
    by = [e["file"] for e in events]
    assert by[5]["mode"] == 0o4755
    assert by[7]["xattr"] == "user.snoop" and by[7]["xattr_op"] == "set"
    assert by[8]["target"] == f"{d}/r32" and by[9]["target"] == "r32"
    assert by[12]["node"] == "fifo"
    assert by[14]["mapped"] is True
    assert by[13]["inode"] == by[14]["inode"] == (nobody_dir / "l32").stat().st_ino


NATIVE = """
import ctypes, mmap, os, stat
libc = ctypes.CDLL(None, use_errno=True)
def ok(ret):
    if ret != 0:
        raise OSError(ctypes.get_errno(), "syscall")
for name in ("t", "ft", "fa", "m", "x"):
    with open(name, "wb") as f:
        f.write(b"0123456789")
os.truncate("t", 1)
fd = os.open("ft", os.O_RDWR)
os.ftruncate(fd, 2)
os.write(fd, b"w")  # not the first write through this fd: no event
os.close(fd)
fd = os.open("fa", os.O_RDWR)
os.posix_fallocate(fd, 0, 8192)
os.close(fd)
fd = os.open("m", os.O_RDWR)
with mmap.mmap(fd, 10) as m:  # MAP_SHARED, PROT_READ|PROT_WRITE
    m[0:1] = b"M"
ro = os.open("x", os.O_RDONLY)
mmap.mmap(ro, 10, prot=mmap.PROT_READ).close()  # read-only file: no event
mmap.mmap(fd, 10, flags=mmap.MAP_PRIVATE).close()  # private: no event
os.close(ro)
os.close(fd)
os.mknod("fifo", 0o600 | stat.S_IFIFO)
os.mknod("reg", 0o600 | stat.S_IFREG)
os.setxattr("x", "user.a", b"1")
ok(libc.lsetxattr(b"x", b"user.b", b"2", 1, 0))
xfd = os.open("x", os.O_RDONLY)
os.setxattr(xfd, "user.c", b"3")  # fsetxattr
os.removexattr(xfd, "user.c")  # fremovexattr
os.removexattr("x", "user.a")
# setxattrat (6.13): dfd, path, at_flags, name, struct xattr_args {value, size, flags}
class XattrArgs(ctypes.Structure):
    _fields_ = [("value", ctypes.c_uint64), ("size", ctypes.c_uint32), ("flags", ctypes.c_uint32)]
val = ctypes.create_string_buffer(b"4")
args = XattrArgs(ctypes.addressof(val), 1, 0)
ok(libc.syscall(463, -100, b"x", 0, b"user.d", ctypes.byref(args), ctypes.sizeof(args)))
ok(libc.syscall(466, -100, b"x", 0, b"user.d"))  # removexattrat
os.close(xfd)
left = os.open("t", os.O_WRONLY | os.O_TRUNC)  # truncated, then never written nor closed
os._exit(0)
"""


async def test_truncation_mappings_nodes_and_xattrs_make_their_events(
    collector: RunningCollector, watch: EventWatch, nobody_dir: Path
) -> None:
    pid = run_as_nobody(nobody_dir, [SYSTEM_PYTHON, "-I", "-c", textwrap.dedent(NATIVE)])
    python = os.path.realpath(SYSTEM_PYTHON)
    events = [e for e in await events_by(watch, pid, python) if e["type"] != "open"]
    d = str(nobody_dir)
    setup = [(t, f"{d}/{n}") for n in ("t", "ft", "fa", "m", "x")
             for t in ("create", "modify", "close_write")]
    assert summary(events) == [
        *setup,
        ("modify", f"{d}/t"),  # truncate
        ("modify", f"{d}/ft"), ("close_write", f"{d}/ft"),  # ftruncate (the write: none)
        ("modify", f"{d}/fa"), ("close_write", f"{d}/fa"),  # fallocate
        ("modify", f"{d}/m"),  # mmap MAP_SHARED of the dup Python maps
        ("close_write", f"{d}/m"),  # fd, the open file's last reference (the dups went)
        ("create", f"{d}/fifo"), ("create", f"{d}/reg"),
        *[("attrib", f"{d}/x")] * 7,
        ("modify", f"{d}/t"),  # O_TRUNC of an existing file
        ("close_write", f"{d}/t"),  # by the exit
    ]
    files = [e["file"] for e in events]
    n = len(setup)
    assert all("ia32" not in f for f in files)
    assert files[n + 5]["mapped"] is True and "mapped" not in files[n]
    assert [files[n + 7]["node"], files[n + 8]["node"]] == ["fifo", "regular"]
    assert files[n + 7]["mode"] == 0o600
    assert [(f["xattr"], f["xattr_op"]) for f in files[n + 9 : n + 16]] == [
        ("user.a", "set"), ("user.b", "set"), ("user.c", "set"), ("user.c", "remove"),
        ("user.a", "remove"), ("user.d", "set"), ("user.d", "remove"),
    ]
    assert files[-1]["closed_by"] == "exit"
    assert files[-2]["inode"] == (nobody_dir / "t").stat().st_ino
    for e in events:
        assert e["proc"]["uid"] == 65534


async def test_a_file_capability_set_by_root_is_an_attrib_the_default_rules_flag(
    collector: RunningCollector, watch: EventWatch, tmp_path: Path
) -> None:
    """`setcap cap_setuid+ep` on a copy of python: a classic privilege escalation."""
    from snoopbus.consumers.alert.engine import Engine
    from snoopbus.consumers.alert.loader import default_rules_dir, load_rules

    target = tmp_path / "py"
    target.write_bytes(b"#!/bin/true\n")
    # struct vfs_cap_data, VFS_CAP_REVISION_2 | effective; permitted CAP_SETUID (7)
    blob = (0x02000001).to_bytes(4, "little") + (1 << 7).to_bytes(4, "little") + bytes(12)
    proc = subprocess.Popen([SYSTEM_PYTHON, "-I", "-c",
                             f"import os; os.setxattr({str(target)!r}, 'security.capability', "
                             f"{blob!r})"])
    assert proc.wait(30) == 0
    [event] = await watch.wait_for(lambda e: e["type"] == "attrib"
                                   and e["proc"]["pid"] == proc.pid)
    assert event["file"]["path"] == str(target)
    assert event["file"]["xattr"] == "security.capability"
    assert event["file"]["xattr_op"] == "set"
    assert os.getxattr(target, "security.capability") == blob
    engine = Engine(load_rules([default_rules_dir()]).rules)
    assert [hit.rule.title for hit in engine.match(event)] == ["File Capability Set on a File"]
