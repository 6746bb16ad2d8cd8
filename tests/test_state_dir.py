"""`snoopbus up`'s state folder (NATS store, archive, logs): 0700 and root's,
or refused. The attacker is a local user who prepared the folder, or a link
to something else, where `up` will put its data."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from snoopbus.app.stack import StackError, secure_state_dir
from tests.conftest import free_port

NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_made_0700_whatever_the_umask_or_what_was_there(tmp_path: Path) -> None:
    new = tmp_path / "a" / "state"
    old = os.umask(0o022)
    try:
        secure_state_dir(new)
    finally:
        os.umask(old)
    assert mode(new) == 0o700
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    secure_state_dir(existing)
    assert mode(existing) == 0o700


def test_a_folder_another_user_prepared_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(StackError, match=f"belongs to uid {NOBODY}, not 0"):
        secure_state_dir(theirs)


def test_another_users_link_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "etc-like"
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    link = tmp_path / "state"
    link.symlink_to(target)
    os.lchown(link, NOBODY, NOBODY)
    with pytest.raises(StackError, match=f"belongs to uid {NOBODY}"):
        secure_state_dir(link)
    assert mode(target) == 0o755  # not chmodded through their link


def test_up_refuses_it_in_one_line_before_starting_anything(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    out = subprocess.run(
        [sys.executable, "-m", "snoopbus.app", "up", "--state-dir", str(theirs),
         "--port", str(free_port())], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"snoopbus up: state folder {theirs} belongs to uid {NOBODY}, not 0: another user could "
        "read or change the stack's data there; remove it, or pick another with --state-dir "
        "or [up] state_dir"
    ]
    assert list(theirs.iterdir()) == []  # no nats store, no logs
