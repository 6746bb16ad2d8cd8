"""File events end to end: real kernel probes, real nats-server.

Each operation runs in a child process with a known pid and cwd; every event
of that pid is checked for type, absolute path, process fields and, for
renames, a cookie shared by the two halves and by no other rename.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.collector import EventWatch, RunningCollector
from tests.support.kernel import PRELUDE, check_proc, file_events, run_child, summary

pytestmark = pytest.mark.kernel

async def events_of(watch: EventWatch, pid: int, last_type: str, last_path: str,
                    ) -> list[dict[str, Any]]:
    """Waits for the child's final event, then returns all its file events."""
    await watch.wait_for(lambda e: e.get("proc", {}).get("pid") == pid
                         and e["type"] == last_type and e["file"].get("path") == last_path)
    return file_events(watch, pid)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    d = tmp_path / "work dir"
    d.mkdir()
    return d


async def test_each_operation_relative_to_cwd(
    collector: RunningCollector, watch: EventWatch, work: Path
) -> None:
    pid = run_child(work, """
        touch("a")
        os.rename("a", "b")
        os.chmod("b", 0o600)
        os.chown("b", os.getuid(), os.getgid())
        os.utime("b")
        os.truncate("b", 0)
        os.mkdir("d", 0o750)
        os.symlink("../b", "d/s")
        os.link("b", "./d/../c")
        touch("e")
        renameat2(AT_FDCWD, "b", AT_FDCWD, "e", RENAME_EXCHANGE)
        os.unlink("d/s")
        os.rmdir("d")
        os.unlink("c")
        os.unlink("e")
        os.unlink(os.path.abspath("b"))
    """)
    w = str(work)
    events = await events_of(watch, pid, "delete", f"{w}/b")
    assert summary(events) == [
        ("create", f"{w}/a"), ("modify", f"{w}/a"), ("close_write", f"{w}/a"),
        ("moved_from", f"{w}/a"), ("moved_to", f"{w}/b"),
        ("attrib", f"{w}/b"), ("attrib", f"{w}/b"), ("attrib", f"{w}/b"),
        ("modify", f"{w}/b"),  # truncate: IN_MODIFY, as inotify has it
        ("mkdir", f"{w}/d"), ("symlink", f"{w}/d/s"), ("link", f"{w}/c"),
        ("create", f"{w}/e"), ("modify", f"{w}/e"), ("close_write", f"{w}/e"),
        ("moved_from", f"{w}/b"), ("moved_to", f"{w}/e"),
        ("moved_from", f"{w}/e"), ("moved_to", f"{w}/b"),
        ("delete", f"{w}/d/s"), ("rmdir", f"{w}/d"), ("delete", f"{w}/c"),
        ("delete", f"{w}/e"), ("delete", f"{w}/b"),
    ]
    check_proc(events, pid)
    by_type = {e["type"]: e for e in events}
    assert by_type["symlink"]["file"]["target"] == "../b"
    assert by_type["link"]["file"]["target"] == f"{w}/b"
    assert by_type["mkdir"]["file"]["mode"] == 0o750
    assert events[5]["file"]["mode"] == 0o600
    create = events[0]["file"]
    assert create["flags"] & os.O_CREAT and create["inode"] > 0 and create["dev"] > 0
    assert all(e["ret"] == 0 for e in events if e["type"] not in ("create", "modify",
                                                                   "close_write"))
    assert "ret" not in events[2]  # close_write is reported at close's entry
    # Rename halves share a cookie that no other rename has; an exchange is two moves.
    moves = [e for e in events if e["type"] in ("moved_from", "moved_to")]
    cookies = [e["cookie"] for e in moves]
    assert cookies[0::2] == cookies[1::2]
    assert len(set(cookies)) == 3


async def test_dirfds_symlinked_dirs_and_failures_absent(
    collector: RunningCollector, watch: EventWatch, work: Path
) -> None:
    (work / "real").mkdir()
    (work / "other").mkdir()
    (work / "via").symlink_to("real")
    pid = run_child(work / "via", """
        # cwd entered through a symlink: the kernel walks the real directory
        touch("f1")
        d = os.open("../other", os.O_RDONLY | os.O_DIRECTORY)
        touch("f2", dir_fd=d)
        os.mkdir("sub", dir_fd=d)
        os.rename("f2", "sub/f3", src_dir_fd=d, dst_dir_fd=d)
        os.rename("f1", "f4", dst_dir_fd=d)
        os.unlink("sub/f3", dir_fd=d)
        os.rmdir("sub", dir_fd=d)
        try:
            os.unlink("missing")
        except FileNotFoundError:
            pass
        os.unlink("f4", dir_fd=d)
    """)
    real, other = f"{work}/real", f"{work}/other"
    events = await events_of(watch, pid, "delete", f"{other}/f4")
    assert summary(events) == [
        ("create", f"{real}/f1"), ("modify", f"{real}/f1"), ("close_write", f"{real}/f1"),
        ("create", f"{other}/f2"), ("modify", f"{other}/f2"), ("close_write", f"{other}/f2"),
        ("mkdir", f"{other}/sub"),
        ("moved_from", f"{other}/f2"), ("moved_to", f"{other}/sub/f3"),
        ("moved_from", f"{real}/f1"), ("moved_to", f"{other}/f4"),
        ("delete", f"{other}/sub/f3"), ("rmdir", f"{other}/sub"), ("delete", f"{other}/f4"),
    ]
    check_proc(events, pid)


async def test_name_through_symlinked_directory(
    collector: RunningCollector, watch: EventWatch, work: Path
) -> None:
    (work / "real").mkdir()
    (work / "via").symlink_to("real")
    pid = run_child(work, """
        touch("via/f")
        os.unlink("via/f")
    """)
    events = await events_of(watch, pid, "delete", f"{work}/real/f")
    # From the opened file: the real path. From a name: resolved again after the
    # fact and checked against the directory the kernel changed (collector/resolve.py).
    assert summary(events) == [
        ("create", f"{work}/real/f"), ("modify", f"{work}/real/f"),
        ("close_write", f"{work}/real/f"), ("delete", f"{work}/real/f"),
    ]
    assert events[-1]["file"]["path_resolution"] == "checked"


@pytest.fixture
def bind_mount(work: Path) -> Iterator[tuple[Path, Path]]:
    src, dst = work / "src", work / "dst"
    src.mkdir()
    dst.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
    try:
        yield src, dst
    finally:
        subprocess.run(["umount", str(dst)], check=True)


async def test_bind_mount_paths_are_the_ones_used(
    collector: RunningCollector, watch: EventWatch, bind_mount: tuple[Path, Path]
) -> None:
    src, dst = bind_mount
    pid = run_child(dst, """
        touch("f")
        os.rename("f", "g")
        os.unlink(os.path.join(os.getcwd(), "g"))
        touch("../src/h")  # the same directory under its other name
        os.unlink("h")
    """)
    events = await events_of(watch, pid, "delete", f"{dst}/h")
    assert summary(events) == [
        ("create", f"{dst}/f"), ("modify", f"{dst}/f"), ("close_write", f"{dst}/f"),
        ("moved_from", f"{dst}/f"), ("moved_to", f"{dst}/g"), ("delete", f"{dst}/g"),
        ("create", f"{src}/h"), ("modify", f"{src}/h"), ("close_write", f"{src}/h"),
        ("delete", f"{dst}/h"),
    ]


async def test_second_mount_namespace(
    collector: RunningCollector, watch: EventWatch, work: Path
) -> None:
    (work / "m").mkdir()
    script = PRELUDE + textwrap.dedent("""
        import subprocess
        subprocess.run(["mount", "-t", "tmpfs", "none", "m"], check=True)
        os.chdir("m")
        touch("inner")
        os.mkdir("dir")
        os.rename("inner", "dir/inner2")
        print(os.stat("/proc/self/ns/mnt").st_ino, flush=True)
        os.unlink("dir/inner2")
    """)
    # unshare -m: a private mount namespace; its tmpfs vanishes with it.
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-I", "-B", "-c", script],
        cwd=work, capture_output=True, check=True,
    )
    ns = int(proc.stdout.split()[-1])
    assert ns != os.stat("/proc/self/ns/mnt").st_ino
    m = f"{work}/m"
    events = await watch.wait_for(
        lambda e: e["type"] == "delete" and e["file"].get("path") == f"{m}/dir/inner2"
    )
    pid = events[0]["proc"]["pid"]
    got = file_events(watch, pid)
    wanted = [
        ("create", f"{m}/inner"), ("modify", f"{m}/inner"), ("close_write", f"{m}/inner"),
        ("mkdir", f"{m}/dir"), ("moved_from", f"{m}/inner"), ("moved_to", f"{m}/dir/inner2"),
        ("delete", f"{m}/dir/inner2"),
    ]
    assert [x for x in summary(got) if x[1] and x[1].startswith(m)] == wanted
    assert {e["file"]["mnt_ns"] for e in got if e["file"].get("path", "").startswith(m)} == {ns}
    assert not os.path.exists(f"{m}/dir")  # the host never saw that tmpfs
    assert not [e for e in got if "host_path" in e["file"]]  # so it has no host path


async def test_a_path_in_another_namespace_is_placed_on_the_host(
    collector: RunningCollector, watch: EventWatch, work: Path
) -> None:
    src, dst = work / "volume", work / "seen"
    src.mkdir()
    dst.mkdir()
    script = PRELUDE + textwrap.dedent(f"""
        import subprocess
        touch({str(dst / "before")!r})  # the collector reads this namespace's mounts...
        subprocess.run(["mount", "--bind", {str(src)!r}, {str(dst)!r}], check=True)
        touch({str(dst / "f")!r})  # ...and again after the mount
        print(os.getpid(), flush=True)
        sys.stdin.read()  # alive while the collector reads its mounts
    """)
    child = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-I", "-B", "-c", script],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        pid = int(child.stdout.readline())
        [before, created] = await watch.wait_for(lambda e: e["type"] == "create"
                                                 and e["proc"]["pid"] == pid, count=2)
    finally:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        child.stdout.close()
        child.wait(10)
    assert created["file"]["path"] == str(dst / "f")  # as the process sees it
    assert created["file"]["host_path"] == str(src / "f")  # and where the host has it
    assert created["file"]["mnt_ns"] != os.stat("/proc/self/ns/mnt").st_ino
    assert before["file"]["path"] == str(dst / "before") and "host_path" not in before["file"]


async def test_awkward_names_round_trip(
    collector: RunningCollector, watch: EventWatch, work: Path
) -> None:
    long_name = "n" * 255  # NAME_MAX
    # A path near PATH_MAX: components of 200 bytes, reached through dirfds.
    deep_parts = [f"{i:02d}" + "d" * 198 for i in range(19)]
    pid = run_child(work, f"""
        names = [b"with space", b"new\\nline", b"bad\\xff\\xfe", {long_name!r}.encode()]
        for n in names:
            touch(n)
            os.unlink(n)
        d = os.open(".", os.O_RDONLY)
        for part in {deep_parts!r}:
            os.mkdir(part, dir_fd=d)
            d = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=d)
        touch("leaf", dir_fd=d)
        os.unlink("leaf", dir_fd=d)
    """)
    deep = "/".join([str(work), *deep_parts])
    assert len(deep) + len("/leaf") > 3800
    events = await events_of(watch, pid, "delete", f"{deep}/leaf")
    paths = {e["file"].get("path") for e in events}
    for raw in (b"with space", b"new\nline", b"bad\xff\xfe", long_name.encode()):
        name = os.fsdecode(raw)
        assert f"{work}/{name}" in paths
        exact = [e for e in events if e["file"].get("path") == f"{work}/{name}"]
        assert [e["type"] for e in exact] == ["create", "modify", "close_write", "delete"]
    assert f"{deep}/leaf" in paths
    assert not any(e["file"].get("path_truncated") for e in events)


async def test_failed_operations_when_asked(
    nats_server: Any, nc: Any, tmp_path: Path, work: Path
) -> None:
    from tests.support.collector import start_collector
    from tests.support.processes import stop_process

    running = await start_collector(nats_server.url, nc, tmp_path, "--include-failed")
    try:
        from snoopbus.proto import events_filter

        w = EventWatch()
        sub = await nc.subscribe(events_filter(host=running.host), cb=w.on_msg)
        await nc.flush()  # the server has the subscription before the child runs
        pid = run_child(work, """
            for op in (lambda: os.unlink("missing"), lambda: os.rmdir("nodir"),
                       lambda: os.open("nope/x", os.O_CREAT | os.O_WRONLY)):
                try:
                    op()
                except OSError:
                    pass
            touch("ok")
            os.unlink("ok")
        """)
        events = await events_of(w, pid, "delete", f"{work}/ok")
        await sub.unsubscribe()
    finally:
        assert stop_process(running.process) == 0, running.log()
    failed = [(e["type"], e["file"].get("path"), e["ret"]) for e in events if e.get("ret", 0) < 0]
    assert failed == [
        ("delete", f"{work}/missing", -2),
        ("rmdir", f"{work}/nodir", -2),
        ("create", f"{work}/nope/x", -2),
    ]


async def test_too_deep_is_flagged_not_guessed(
    collector: RunningCollector, watch: EventWatch, work: Path
) -> None:
    pid = run_child(work, """
        d = os.open(".", os.O_RDONLY)
        for _ in range(140):  # deeper than the walk's 128 components
            os.mkdir("x", dir_fd=d)
            d = os.open("x", os.O_RDONLY | os.O_DIRECTORY, dir_fd=d)
        touch("deepleaf", dir_fd=d)
        os.unlink("deepleaf", dir_fd=d)
    """)
    events = await watch.wait_for(
        lambda e: e.get("proc", {}).get("pid") == pid and e["type"] == "delete"
    )
    f = events[0]["file"]
    assert f["path_truncated"] is True
    assert f["path"].endswith("/x/x/deepleaf") and not f["path"].startswith(str(work))


async def test_fd_based_operations(
    collector: RunningCollector, watch: EventWatch, work: Path
) -> None:
    (work / "src").write_bytes(b"0123456789")
    pid = run_child(work, """
        fd = os.open("f", os.O_CREAT | os.O_RDWR, 0o600)
        os.fchmod(fd, 0o640)
        os.fchown(fd, os.getuid(), os.getgid())
        os.ftruncate(fd, 3)
        os.utime(fd)  # futimens: utimensat(fd, NULL, ...)
        os.pwrite(fd, b"x", 0)
        os.writev(fd, [b"y"])  # not the first write: no event
        os.close(fd)
        r = os.open("src", os.O_RDONLY)
        os.close(r)  # read-only: no close_write, no open event by default
        out = os.open("copy", os.O_CREAT | os.O_WRONLY, 0o600)
        os.sendfile(out, os.open("src", os.O_RDONLY), 0, 10)
        os.close(out)
        os.unlink("copy")
        a = os.open("a", os.O_CREAT | os.O_WRONLY, 0o600)
        os.write(a, b"1")
        b = os.open("b", os.O_CREAT | os.O_WRONLY, 0o600)
        os.dup2(b, a)  # closes a's file: close_write; the fd now names b
        os.write(a, b"2")  # the first write to b through that fd number
        os.close(a)
        os.close(b)
        os.unlink("a")
        os.unlink("b")
    """)
    w = str(work)
    events = await events_of(watch, pid, "delete", f"{w}/b")
    assert summary(events) == [
        ("create", f"{w}/f"), ("attrib", f"{w}/f"), ("attrib", f"{w}/f"),
        ("modify", f"{w}/f"),  # ftruncate: the first write-family call (pwrite: none)
        ("attrib", f"{w}/f"), ("close_write", f"{w}/f"),
        ("create", f"{w}/copy"), ("modify", f"{w}/copy"), ("close_write", f"{w}/copy"),
        ("delete", f"{w}/copy"),
        ("create", f"{w}/a"), ("modify", f"{w}/a"), ("create", f"{w}/b"),
        ("close_write", f"{w}/a"), ("modify", f"{w}/b"),
        ("close_write", f"{w}/b"),  # one per open file: at its last fd's close
        ("delete", f"{w}/a"), ("delete", f"{w}/b"),
    ]
    assert events[1]["file"]["mode"] == 0o640
    ino = os.stat(work / "f").st_ino
    assert {e["file"]["inode"] for e in events[:6]} == {ino}
    assert {e["file"]["dev"] for e in events[:6]} == {os.stat(work / "f").st_dev}


async def test_open_events_when_asked(
    nats_server: Any, nc: Any, tmp_path: Path, work: Path
) -> None:
    from snoopbus.proto import events_filter
    from tests.support.collector import start_collector
    from tests.support.processes import stop_process

    (work / "r").write_text("x")
    running = await start_collector(nats_server.url, nc, tmp_path, "--open-events")
    try:
        w = EventWatch()
        sub = await nc.subscribe(events_filter(host=running.host), cb=w.on_msg)
        await nc.flush()
        pid = run_child(work, """
            os.close(os.open("r", os.O_RDONLY))
            os.close(os.open(".", os.O_RDONLY | os.O_DIRECTORY))
            os.unlink("r")
        """)
        events = await events_of(w, pid, "delete", f"{work}/r")
        await sub.unsubscribe()
    finally:
        assert stop_process(running.process) == 0, running.log()
    opens = [(e["file"]["path"], e["file"]["flags"] & 0o3) for e in events if e["type"] == "open"]
    assert (f"{work}/r", os.O_RDONLY) in opens and (str(work), os.O_RDONLY) in opens


IA32_READ_C = r"""
#include <fcntl.h>
#include <unistd.h>
int main(void)
{
    int fd = open("w", O_CREAT | O_WRONLY, 0644);
    long ret;
    char buf[4];
    /* ia32 syscall 3 is read; x86-64's 3 is close. int 0x80 from a 64-bit
     * process is an ia32 syscall (TS_COMPAT): it must not look like close. */
    /* rdi holds fd too, where an x86-64 close would look for it */
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(3), "b"(fd), "c"(buf), "d"(4), "D"(fd)
                     : "memory");
    write(fd, "x", 1);
    close(fd);
    unlink("w");
    return 0;
}
"""


async def test_ia32_syscalls_are_not_read_as_x86_64_ones(
    collector: RunningCollector, watch: EventWatch, work: Path, tmp_path: Path
) -> None:
    src = tmp_path / "ia32.c"
    src.write_text(IA32_READ_C)
    exe = tmp_path / "ia32"
    subprocess.run(["cc", "-O1", "-o", str(exe), str(src)], check=True)
    proc = subprocess.Popen([str(exe)], cwd=work)
    assert proc.wait(30) == 0
    events = await events_of(watch, proc.pid, "delete", f"{work}/w")
    assert summary(events) == [
        ("create", f"{work}/w"), ("modify", f"{work}/w"), ("close_write", f"{work}/w"),
        ("delete", f"{work}/w"),
    ]
