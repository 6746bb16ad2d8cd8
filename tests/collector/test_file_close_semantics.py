"""close_write per open file, and changes that used to make no event: each
technique runs as its own small program, as `nobody` in a directory it owns
(where an attacker would be), under the real collector and kernel.

- bash `echo hi > f`: create, modify, then one close_write after the data;
- a forked child sharing the fd: one close_write, when the last holder closes;
- a writable fd never written, closed by exit: close_write;
- close_range, then dup reusing the number: the first write is a modify;
- O_TMPFILE, then linkat: a create under the final name;
- renameat2(RENAME_WHITEOUT): the whiteout it leaves is reported (root only:
  the kernel wants CAP_MKNOD in the initial user namespace).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from snoopbus.proto import FILE_TYPES
from tests.support.collector import EventWatch, RunningCollector

pytestmark = pytest.mark.kernel

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]

PROGRAMS = {
    # Parent opens, forks; the child writes and exits; the parent closes
    # last (argv[2] == "parent-last") or first (the child outlives it).
    "forked": r"""
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int parent_last = strcmp(argv[2], "parent-last") == 0;
    int fd = open(argv[1], O_CREAT | O_WRONLY | O_TRUNC, 0600);
    int go[2];
    if (fd < 0 || pipe(go)) return 1;
    pid_t child = fork();
    if (child == 0) {
        char c;
        if (!parent_last && read(go[0], &c, 1) != 1) _exit(3);  /* parent closed first */
        if (write(fd, "child\n", 6) != 6) _exit(2);
        _exit(0);  /* its fd closes at exit */
    }
    if (parent_last) {
        waitpid(child, NULL, 0);
        close(fd);
    } else {
        close(fd);
        if (write(go[1], "g", 1) != 1) return 1;
        waitpid(child, NULL, 0);
    }
    return 0;
}
""",
    # Opens for writing, never writes, exits with the fd open.
    "unwritten": r"""
#include <fcntl.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (open(argv[1], O_WRONLY) < 0) return 1;  /* an existing file */
    if (open(argv[2], O_CREAT | O_WRONLY, 0600) < 0) return 1;
    _exit(0);
}
""",
    # fd a written, closed by close_range; dup(b) takes a's number; the first
    # write through it must be reported.
    "reuse": r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
    int a = open(argv[1], O_CREAT | O_WRONLY, 0600);
    int b = open(argv[2], O_CREAT | O_WRONLY, 0600);
    if (a < 0 || b < 0 || write(a, "a", 1) != 1) return 1;
    if (syscall(SYS_close_range, a, a, 0)) return 2;
    int c = dup(b);
    if (c != a) return 3;
    if (write(c, "b", 1) != 1) return 4;
    /* again through fcntl(F_DUPFD) and dup2 into a closed number */
    if (syscall(SYS_close_range, c, c, 0)) return 5;
    int d = open(argv[3], O_CREAT | O_WRONLY, 0600);
    if (d < 0 || write(d, "d", 1) != 1 || syscall(SYS_close_range, d, d, 0)) return 6;
    int e = fcntl(b, F_DUPFD, d);
    if (e != d || write(e, "e", 1) != 1) return 7;
    return 0;
}
""",
    # O_TMPFILE in argv[1], written, then linked as argv[2] (AT_EMPTY_PATH)
    # and argv[3] (through /proc/self/fd).
    "tmpfile": r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fd = open(argv[1], O_TMPFILE | O_WRONLY, 0600);
    if (fd < 0 || write(fd, "secret\n", 7) != 7) return 1;
    if (linkat(fd, "", AT_FDCWD, argv[2], AT_EMPTY_PATH) != 0) {
        /* AT_EMPTY_PATH wants CAP_DAC_READ_SEARCH before 6.10: the /proc way */
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, proc, AT_FDCWD, argv[2], AT_SYMLINK_FOLLOW) != 0) return 2;
    }
    int fd2 = open(argv[1], O_TMPFILE | O_WRONLY, 0600);
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd2);
    if (fd2 < 0 || write(fd2, "x", 1) != 1) return 3;
    if (linkat(AT_FDCWD, proc, AT_FDCWD, argv[3], AT_SYMLINK_FOLLOW) != 0) return 4;
    return 0;
}
""",
    "whiteout": r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (renameat2(AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_WHITEOUT) != 0) {
        perror("renameat2");
        return 1;
    }
    return 0;
}
""",
}


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("progs")
    built = {}
    for name, source in PROGRAMS.items():
        src = out / f"{name}.c"
        src.write_text(source)
        exe = out / name
        subprocess.run(["cc", "-O1", "-o", str(exe), str(src)], check=True)
        built[name] = exe
    os.chmod(out, 0o755)  # nobody runs them
    for parent in out.parents:
        if parent == Path("/tmp"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o111)
    return built


@pytest.fixture
def home() -> Iterator[Path]:
    """A directory nobody owns, in /tmp (pytest's are closed to other users)."""
    d = Path(tempfile.mkdtemp(prefix="snoopbus-close-"))
    os.chown(d, NOBODY, NOBODY)
    try:
        yield d
    finally:
        shutil.rmtree(d)


def run_as_nobody(cwd: Path, *argv: str | Path) -> int:
    """Runs argv as nobody in cwd; returns the pid of the program (setpriv execs it)."""
    proc = subprocess.Popen([*AS_NOBODY, *map(str, argv)], cwd=cwd)
    assert proc.wait(30) == 0, f"{argv} failed"
    return proc.pid


def of(watch: EventWatch, pids: set[int], path: Path | None = None) -> list[dict[str, Any]]:
    """File events of these processes (for one path), in the kernel's order."""
    found = [e for e in watch.events if e["type"] in FILE_TYPES
             and e.get("proc", {}).get("pid") in pids
             and (path is None or e["file"].get("path") == str(path))]
    return sorted(found, key=lambda e: int(e["id"].rsplit("-", 1)[1]))


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


async def settle(watch: EventWatch, pid: int) -> None:
    """Until the process's exit event is in: everything it caused came first."""
    await watch.wait_for(lambda e: e["type"] == "exit" and e["proc"]["pid"] == pid)


async def test_bash_redirect_closes_once_after_the_data(
    collector: RunningCollector, watch: EventWatch, home: Path
) -> None:
    """bash opens f, dup2s it onto stdout and closes the first fd before the
    write: that close drops no last reference, so no close_write before the data."""
    f = home / "f"
    pid = run_as_nobody(home, "/bin/bash", "-c", "echo hi > f; /bin/true")
    await settle(watch, pid)
    await watch.wait_for(lambda e: e["type"] == "close_write"
                         and e["file"].get("path") == str(f))
    events = of(watch, {pid}, f)
    assert kinds(events) == ["create", "modify", "close_write"], events
    assert all(e["proc"]["uid"] == NOBODY for e in events)
    assert events[2]["file"]["inode"] == f.stat().st_ino
    assert f.read_bytes() == b"hi\n"


@pytest.mark.parametrize("order", ["parent-last", "child-last"])
async def test_a_forked_child_sharing_the_fd_closes_it_once(
    collector: RunningCollector, watch: EventWatch, home: Path, programs: dict[str, Path],
    order: str,
) -> None:
    f = home / "shared"
    pid = run_as_nobody(home, programs["forked"], f, order)
    await settle(watch, pid)
    [child_exit] = await watch.wait_for(lambda e: e["type"] == "exit"
                                        and e["proc"]["ppid"] == pid)
    child = child_exit["proc"]["pid"]
    [close] = await watch.wait_for(lambda e: e["type"] == "close_write"
                                   and e["file"].get("path") == str(f))
    events = of(watch, {pid, child}, f)
    # One modify (the child's write), and one close_write: by the last holder.
    assert kinds(events) == ["create", "modify", "close_write"], events
    assert events[1]["proc"]["pid"] == child
    if order == "parent-last":
        assert close["proc"]["pid"] == pid and "closed_by" not in close["file"]
    else:
        assert close["proc"]["pid"] == child and close["file"]["closed_by"] == "exit"


async def test_a_writable_fd_never_written_is_closed_by_exit(
    collector: RunningCollector, watch: EventWatch, home: Path, programs: dict[str, Path],
) -> None:
    existing, created = home / "existing", home / "created"
    existing.write_bytes(b"old")
    os.chown(existing, NOBODY, NOBODY)
    pid = run_as_nobody(home, programs["unwritten"], existing, created)
    await settle(watch, pid)
    closes = await watch.wait_for(lambda e: e["type"] == "close_write"
                                  and e["proc"]["pid"] == pid, count=2)
    by_path = {e["file"]["path"]: e for e in closes}
    assert sorted(by_path) == [str(created), str(existing)] and len(closes) == 2
    assert all(e["file"]["closed_by"] == "exit" for e in closes)
    assert by_path[str(existing)]["file"]["inode"] == existing.stat().st_ino
    assert "modify" not in kinds(of(watch, {pid}))


async def test_close_range_then_dup_reusing_the_number_reports_the_write(
    collector: RunningCollector, watch: EventWatch, home: Path, programs: dict[str, Path],
) -> None:
    a, b, d = home / "a", home / "b", home / "d"
    pid = run_as_nobody(home, programs["reuse"], a, b, d)
    await settle(watch, pid)
    await watch.wait_for(lambda e: e["type"] == "close_write" and e["proc"]["pid"] == pid
                         and e["file"].get("path") == str(b))
    modified = [e["file"]["path"] for e in of(watch, {pid}) if e["type"] == "modify"]
    # b is written through two numbers that named other, written files before:
    # the first write through each is one.
    assert modified == [str(a), str(b), str(d), str(b)], modified
    closes = [(e["file"]["path"], e["file"].get("closed_by"))
              for e in of(watch, {pid}) if e["type"] == "close_write"]
    # a and d close by close_range; b's open file by exit (three fds held it).
    assert closes == [(str(a), "close_range"), (str(d), "close_range"), (str(b), "exit")]


async def test_o_tmpfile_then_linkat_is_a_create_under_the_final_name(
    collector: RunningCollector, watch: EventWatch, home: Path, programs: dict[str, Path],
) -> None:
    final, final2 = home / "final", home / "via-proc"
    pid = run_as_nobody(home, programs["tmpfile"], home, final, final2)
    await settle(watch, pid)
    await watch.wait_for(lambda e: e["type"] == "close_write" and e["proc"]["pid"] == pid,
                         count=2)
    events = of(watch, {pid})
    for path in (final, final2):
        [create] = [e for e in events if e["type"] == "create"
                    and e["file"].get("path") == str(path)]
        assert create["file"]["inode"] == path.stat().st_ino
        assert create["file"]["tmpfile"] is True
    assert not [e for e in events if e["type"] == "link"], events
    # No invented "#inode" name anywhere: before its link the file has none.
    assert not [e for e in events if "#" in e["file"].get("path", "")], events
    [first_write] = [e for e in events if e["type"] == "modify"
                     and e["file"]["inode"] == final.stat().st_ino]
    assert first_write["file"]["path"] == str(home) and first_write["file"]["tmpfile"] is True
    # Closed (by exit) after the link: the file has its name by then.
    [closed] = [e for e in events if e["type"] == "close_write"
                and e["file"]["inode"] == final.stat().st_ino]
    assert closed["file"]["path"] == str(final)


@pytest.mark.skipif(os.geteuid() != 0, reason="RENAME_WHITEOUT needs CAP_MKNOD")
async def test_rename_whiteout_reports_the_whiteout(
    collector: RunningCollector, watch: EventWatch, tmp_path: Path, programs: dict[str, Path],
) -> None:
    """Root only: renameat2 checks CAP_MKNOD in the initial user namespace (so
    nobody, or root in a user namespace, gets EPERM). tmpfs supports whiteouts."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "snoopbus-whiteout", str(mnt)], check=True)
    try:
        old, new = mnt / "old", mnt / "new"
        old.write_bytes(b"x")
        proc = subprocess.Popen([programs["whiteout"], old, new])
        assert proc.wait(30) == 0
        st = os.lstat(old)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0  # the whiteout: a 0/0 device
        mine = await watch.wait_for(lambda e: e["type"] in FILE_TYPES
                                    and e["proc"]["pid"] == proc.pid, count=3)
        assert sorted((e["type"], e["file"]["path"]) for e in mine) == [
            ("create", str(old)), ("moved_from", str(old)), ("moved_to", str(new)),
        ]
        [created] = [e for e in mine if e["type"] == "create"]
        assert created["file"]["whiteout"] is True
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
