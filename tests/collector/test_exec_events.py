"""Exec and exit events from the real kernel, as they arrive on a real NATS."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from snoopbus.collector.probes import ProbeLimits
from snoopbus.proto import SCHEMA_VERSION, Event
from tests.support.collector import EventWatch, RunningCollector

pytestmark = pytest.mark.kernel

NOBODY = 65534


def cgroup2_root() -> Path:
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    raise AssertionError("no cgroup2 mount on this host")


@pytest.fixture
def cgroup(tmp_path: Path) -> Iterator[Path]:
    """A fresh cgroup v2 directory: its inode number is the cgroup id."""
    path = cgroup2_root() / f"snoopbus-test-{os.getpid()}-{tmp_path.name}"
    path.mkdir()
    try:
        yield path
    finally:
        path.rmdir()


def of_pid(pid: int, type_: str) -> object:
    return lambda e: e["type"] == type_ and e["proc"]["pid"] == pid


async def test_exec_and_exit_carry_every_field(
    collector: RunningCollector, watch: EventWatch, tmp_path: Path, cgroup: Path
) -> None:
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    os.chmod(tmp_path, 0o755)  # nobody must be able to enter its cwd
    argv = [b"/bin/true", b"ARG ONE", b"", b"tab\there", b"new\nline", b"\xff\xfe-raw"]
    argv.append("ünï".encode())
    before = time.time_ns()

    def enter_cgroup_as_nobody() -> None:
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))  # needs root: before setuid
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    child = subprocess.Popen(argv, cwd=workdir, preexec_fn=enter_cgroup_as_nobody)
    assert child.wait() == 0
    after = time.time_ns()

    [exec_ev] = await watch.wait_for(of_pid(child.pid, "exec"))
    [exit_ev] = await watch.wait_for(of_pid(child.pid, "exit"))
    for ev in (exec_ev, exit_ev):
        assert ev["v"] == SCHEMA_VERSION
        assert ev["host"] == collector.host
        assert re.fullmatch(r"[0-9a-f]+-\d+", ev["id"])
        assert before <= ev["ts"] <= after
    proc = exec_ev["proc"]
    assert proc["pid"] == proc["tid"] == child.pid
    assert proc["ppid"] == os.getpid()
    assert proc["uid"] == proc["gid"] == NOBODY
    assert proc["comm"] == "true"
    assert proc["exe"] == os.path.realpath("/bin/true")
    assert proc["argv"] == [os.fsdecode(a) for a in argv]
    assert proc["cwd"] == str(workdir)
    assert proc["cgroup"] == cgroup.stat().st_ino
    assert "argv_truncated" not in proc
    # The parent (this test) was known to the collector's process cache.
    assert proc["parent_exe"] == os.path.realpath(f"/proc/{os.getpid()}/exe")

    assert exit_ev["exit_code"] == 0 and "signal" not in exit_ev
    assert exit_ev["proc"]["exe"] == proc["exe"]
    assert exit_ev["proc"]["argv"] == proc["argv"]
    assert exit_ev["ts"] >= exec_ev["ts"]
    assert exec_ev["id"] != exit_ev["id"]


async def test_exit_codes_and_signals(watch: EventWatch) -> None:
    code = subprocess.Popen(["/bin/sh", "-c", "exit 7"])
    assert code.wait() == 7
    sleeper = subprocess.Popen(["/bin/sleep", "60"])
    [_] = await watch.wait_for(of_pid(sleeper.pid, "exec"))
    sleeper.send_signal(signal.SIGKILL)
    sleeper.wait()

    [exited] = await watch.wait_for(of_pid(code.pid, "exit"))
    assert exited["exit_code"] == 7 and "signal" not in exited
    [killed] = await watch.wait_for(of_pid(sleeper.pid, "exit"))
    assert killed["signal"] == signal.SIGKILL
    assert killed["exit_code"] == 128 + signal.SIGKILL


async def test_a_program_run_from_memory_names_its_memfd(watch: EventWatch) -> None:
    """Fileless execution (memfd_create + fexecve): exe is the memfd's name, as
    /proc/<pid>/exe shows it, not the internal mount's "/"."""
    run = subprocess.Popen([sys.executable, "-I", "-c", (
        "import os\n"
        "m = os.memfd_create('snoopbus-payload', 0)\n"
        "with open('/bin/true', 'rb') as f:\n"
        "    os.write(m, f.read())\n"
        "os.execve(m, ['payload'], {})\n"
    )])
    assert run.wait(30) == 0
    execs = await watch.wait_for(of_pid(run.pid, "exec"), count=2)
    assert execs[-1]["proc"]["exe"] == "/memfd:snoopbus-payload"
    assert execs[-1]["proc"]["argv"] == ["payload"] and "exe_truncated" not in execs[-1]["proc"]


async def test_long_argv_arrives_whole_up_to_the_limit(watch: EventWatch) -> None:
    limit = ProbeLimits().argv_max
    # Just under the limit (with the NULs): whole.
    fits = ["/bin/true"] + [f"{i:04d}" + "a" * 95 for i in range((limit - 16) // 100)]
    assert sum(len(a) + 1 for a in fits) <= limit
    # Far over it: cut at the limit and flagged.
    too_long = ["/bin/true"] + [f"{i:05d}" + "b" * 195 for i in range(200)]
    small = subprocess.Popen(fits)
    big = subprocess.Popen(too_long)
    assert small.wait() == 0 and big.wait() == 0

    [whole] = await watch.wait_for(of_pid(small.pid, "exec"))
    assert whole["proc"]["argv"] == fits
    assert "argv_truncated" not in whole["proc"]
    [cut] = await watch.wait_for(of_pid(big.pid, "exec"))
    assert cut["proc"]["argv_truncated"] is True
    got = cut["proc"]["argv"]
    joined = "\0".join(got)
    assert "\0".join(too_long).startswith(joined)
    assert len(joined) + 1 >= limit - 1  # kept everything up to the limit
    assert got[:-1] == too_long[: len(got) - 1]


async def test_multithreaded_process_exits_once(watch: EventWatch, tmp_path: Path) -> None:
    # The leader ends first (pthread_exit); the process exits when the last thread does.
    script = (
        "import threading, time, os\n"
        "def worker():\n    time.sleep(0.3)\n    os._exit(3)\n"
        "threading.Thread(target=worker).start()\n"
        "import ctypes; ctypes.CDLL(None).pthread_exit(None)\n"
    )
    child = subprocess.Popen(["python3", "-c", script])
    assert child.wait() == 3
    exits = await watch.wait_for(of_pid(child.pid, "exit"))
    [ev] = exits
    assert ev["exit_code"] == 3
    assert ev["proc"]["tid"] != child.pid  # reported by the last thread


def test_events_seen_by_a_later_subscriber(collector: RunningCollector) -> None:
    # Sanity for the fixture itself: the collector is alive and did not log errors.
    assert collector.process.poll() is None
    assert "Traceback" not in collector.log()


async def _all_exec(watch: EventWatch, pids: list[int]) -> list[Event]:
    wanted = set(pids)
    return await watch.wait_for(
        lambda e: e["type"] == "exec" and e["proc"]["pid"] in wanted, count=len(wanted)
    )


async def test_a_burst_of_execs_is_complete(watch: EventWatch) -> None:
    children = [subprocess.Popen(["/bin/true", str(i)]) for i in range(200)]
    for c in children:
        c.wait()
    got = await _all_exec(watch, [c.pid for c in children])
    assert sorted(int(e["proc"]["argv"][1]) for e in got) == list(range(200))
