"""The spill runs as root and holds every user's argv: an unprivileged user who
can write where it spills must not make it write through a planted link (that
would truncate any file as root), nor read what it keeps. The links here are
planted by `nobody`, as the attacker would."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from snoopbus.collector.spill import Spill, SpillError
from tests.publish_attack import NOBODY, SYSTEM_PYTHON
from tests.test_publisher import EXEC

PRECIOUS = b"root's data\n"


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder every user may write to, like /tmp (the tests' own tmp_path is
    root's alone: nobody could not even reach it)."""
    d = Path(tempfile.mkdtemp(prefix="snoopbus-shared-", dir="/tmp"))
    d.chmod(0o1777)
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_bytes(PRECIOUS)
    path.chmod(0o600)
    return path


def as_nobody(code: str, *args: str) -> None:
    subprocess.run([*NOBODY, SYSTEM_PYTHON, "-I", "-c", code, *args], check=True, timeout=30)


PLANT = """
import os, sys
folder, target = sys.argv[1], sys.argv[2]
os.makedirs(folder, exist_ok=True)
if os.stat(folder).st_uid == os.getuid():
    os.chmod(folder, 0o777)
for name in ("lock", "position", "position.tmp", "000000000000.seg"):
    os.symlink(target, os.path.join(folder, name))
"""


def test_a_folder_made_by_another_user_is_refused_and_its_links_never_followed(
    shared: Path, victim: Path
) -> None:
    folder = shared / "h1"
    as_nobody(PLANT, str(folder), str(victim))
    assert folder.stat().st_uid == 65534
    with pytest.raises(SpillError) as err:
        Spill(folder, max_bytes=1 << 20)
    assert "owned by uid 65534, not by this collector's uid 0" in str(err.value)
    assert "--spill-dir" in str(err.value)
    assert victim.read_bytes() == PRECIOUS


def test_a_folder_others_may_write_to_is_refused(shared: Path, victim: Path) -> None:
    folder = shared / "h2"
    folder.mkdir(mode=0o700)
    folder.chmod(0o777)  # root's, but open to all: nobody plants links in it
    as_nobody(PLANT, str(folder), str(victim))
    with pytest.raises(SpillError, match=r"group or others may write to it \(mode 0777\)"):
        Spill(folder, max_bytes=1 << 20)
    assert victim.read_bytes() == PRECIOUS


def test_a_link_left_in_a_safe_folder_is_an_error_not_a_write(shared: Path, victim: Path) -> None:
    folder = shared / "h3"
    folder.mkdir(mode=0o700)
    folder.chmod(0o777)
    as_nobody(PLANT, str(folder), str(victim))
    folder.chmod(0o700)  # an admin tightened the folder; the links are still there
    with pytest.raises(SpillError, match="is a symbolic link: the spill never writes through"):
        Spill(folder, max_bytes=1 << 20)
    assert victim.read_bytes() == PRECIOUS
    # A stale tmp link alone (the rest cleaned up) is met when the position is saved.
    for name in ("lock", "position", "000000000000.seg"):
        (folder / name).unlink()
    spill = Spill(folder, max_bytes=1 << 20)
    spill.append(EXEC, "m1", 1, b"x")
    with pytest.raises(SpillError, match=r"position\.tmp is a symbolic link"):
        spill.ack(spill.next())  # type: ignore[arg-type]
    assert victim.read_bytes() == PRECIOUS


def test_the_spill_folder_itself_a_link_is_refused(shared: Path, tmp_path: Path) -> None:
    target = tmp_path / "roots-folder"
    target.mkdir(mode=0o700)
    as_nobody("import os, sys; os.symlink(sys.argv[1], sys.argv[2])", str(target),
              str(shared / "h4"))
    with pytest.raises(SpillError, match="it is a symbolic link"):
        Spill(shared / "h4", max_bytes=1 << 20)
    assert list(target.iterdir()) == []


def test_files_are_0600_in_a_0700_folder(tmp_path: Path) -> None:
    folder = tmp_path / "spill"
    folder.mkdir()
    folder.chmod(0o755)  # ours, but readable by all: closed at open
    spill = Spill(folder, max_bytes=1 << 20)
    spill.append(EXEC, "m1", 1, b"x")
    spill.append(EXEC, "m2", 1, b"y")
    spill.ack(spill.next())  # type: ignore[arg-type]  # writes the position file
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert set(modes) >= {"lock", "position"} and set(modes.values()) == {0o600}, modes
    spill.close()


@pytest.mark.kernel
def test_the_collector_refuses_a_planted_spill_before_loading_anything(
    shared: Path, victim: Path, tmp_path: Path
) -> None:
    host = "plantedhost"
    as_nobody(PLANT, str(shared / host), str(victim))
    out = subprocess.run(
        [sys.executable, "-m", "snoopbus.app", "collect", "--nats",
         "nats://127.0.0.1:1", "--host", host, "--spill-dir", str(shared)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    [line] = [ln for ln in out.stderr.splitlines() if "snoopbus collect:" in ln]
    assert f"refusing the spill directory {shared / host}" in line
    assert "loading" not in out.stderr.lower()  # refused first, no probes loaded
    assert victim.read_bytes() == PRECIOUS
    assert os.path.islink(shared / host / "lock")  # left as found, for the admin to see
