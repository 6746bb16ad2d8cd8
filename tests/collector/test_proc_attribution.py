"""Which process an event names, end to end (real kernel probes, real nats-server),
run as nobody: a subshell forked without exec, a cwd changed after exec, a #!
script (collector/proc_cache.py, events.py; bpf: sched_process_fork, chdir)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.collector import EventWatch, RunningCollector
from tests.support.kernel import NOBODY, as_nobody

pytestmark = pytest.mark.kernel

BASH = os.path.realpath(shutil.which("bash") or "/bin/bash")


async def test_a_subshell_forked_without_exec_is_its_parents_image(
    collector: RunningCollector, watch: EventWatch, attic: Path
) -> None:
    # Two commands: the subshell forks again for /bin/echo (one would be exec'd in place).
    script = "echo $(/bin/echo subshell-child-marker; :) > /dev/null"
    as_nobody(attic, script, BASH, "-c")
    [ev] = await watch.wait_for(
        lambda e: e["type"] == "exec"
        and e["proc"].get("argv") == ["/bin/echo", "subshell-child-marker"])
    proc = ev["proc"]
    # Its parent is the subshell bash forked for $(...), which never exec'd.
    assert proc["parent_exe"] == BASH, proc
    assert proc["parent_argv"] == [BASH, "-c", script], proc
    assert proc["uid"] == NOBODY.pw_uid


async def test_file_events_carry_the_current_directory(
    collector: RunningCollector, watch: EventWatch, attic: Path
) -> None:
    (attic / "x").mkdir()
    os.chown(attic / "x", NOBODY.pw_uid, NOBODY.pw_gid)
    as_nobody(attic, "cd x && echo z > f && cd / && echo y > " + f"{attic}/g", BASH, "-c")
    [f] = await watch.wait_for(lambda e: e["type"] == "create"
                               and e["file"].get("path") == f"{attic}/x/f")
    [g] = await watch.wait_for(lambda e: e["type"] == "create"
                               and e["file"].get("path") == f"{attic}/g")
    assert f["proc"]["cwd"] == f"{attic}/x", f["proc"]  # not the exec-time {attic}
    assert g["proc"]["cwd"] == "/", g["proc"]


async def test_a_script_exec_keeps_the_script_path(
    collector: RunningCollector, watch: EventWatch, attic: Path
) -> None:
    script = attic / "run-me.sh"
    script.write_text("#!/bin/sh\necho z > out\n")
    script.chmod(0o755)
    as_nobody(attic, "./run-me.sh arg1", BASH, "-c")
    [ev] = await watch.wait_for(lambda e: e["type"] == "exec"
                                and e["proc"].get("script") == str(script))
    assert ev["proc"]["exe"] == os.path.realpath("/bin/sh")  # the interpreter runs
    assert ev["proc"]["argv"] == ["/bin/sh", "./run-me.sh", "arg1"]
    [out] = await watch.wait_for(lambda e: e["type"] == "create"
                                 and e["file"].get("path") == f"{attic}/out")
    assert out["proc"]["script"] == str(script)
    # Not a script: no such field.
    as_nobody(attic, "/bin/true", BASH, "-c")
    [plain] = await watch.wait_for(lambda e: e["type"] == "exec"
                                   and e["proc"].get("argv") == ["/bin/true"])
    assert "script" not in plain["proc"]
