"""Finding the local stack (proto/local_stack.py): the descriptor `up` writes is
used only when the user named no server and no credentials, and anyone who
cannot read it is refused rather than sent to a server that would refuse them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from snoopbus.proto import local_stack, settings_file
from snoopbus.proto.local_stack import LocalStack
from tests.support.processes import AS_NOBODY


@pytest.fixture
def stack(tmp_path: Path) -> tuple[LocalStack, Path]:
    auth = tmp_path / "state" / "auth"
    auth.mkdir(parents=True)
    for role in ("reader", "admin", "alert"):
        (auth / f"{role}.nk").write_text("SU...\n")
    s = LocalStack(url="nats://127.0.0.1:14777", state_dir=str(tmp_path / "state"),
                   archive_dir=str(tmp_path / "state" / "archive"), auth_dir=str(auth), pid=42)
    return s, local_stack.write(s, tmp_path / "run" / "stack.json")


def load(env: dict[str, str] | None = None, **flags: str) -> settings_file.Config:
    """The config with only `env` and these [nats] flags (no file)."""
    return settings_file.load(None, env=env or {},
                              flags={f"nats.{k}": v for k, v in flags.items()})


def test_the_descriptor_is_private(stack: tuple[LocalStack, Path]) -> None:
    _, path = stack
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_no_flags_take_the_stack_and_the_role(stack: tuple[LocalStack, Path]) -> None:
    s, path = stack
    cfg = local_stack.apply(load(), "alert", "consume alert", path)
    assert cfg.nats.url == s.url
    assert cfg.nats.nkey == str(Path(s.auth_dir) / "alert.nk")
    assert cfg.nats.inbox_prefix == "_INBOX_alert"
    assert cfg.source("nats.url") == f"local stack {path}"
    # A consumer `up` does not run: root's admin seed.
    other = local_stack.apply(load(), "myplugin", "consume myplugin", path)
    assert other.nats.nkey.endswith("admin.nk")


@pytest.mark.parametrize("given", [{"url": "nats://elsewhere:4222"}, {"user": "bob"},
                                   {"nkey": "/etc/my.nk"}])
def test_what_the_user_gave_wins(stack: tuple[LocalStack, Path], given: dict[str, str]) -> None:
    _, path = stack
    cfg = load(**given)
    assert local_stack.apply(cfg, "reader", "tail", path) is cfg
    env = {f"SNOOPBUS_NATS_{k.upper()}": v for k, v in given.items()}
    cfg = load(env)
    assert local_stack.apply(cfg, "reader", "tail", path) is cfg


def test_no_stack_no_change(tmp_path: Path) -> None:
    cfg = load()
    assert local_stack.apply(cfg, "reader", "tail", tmp_path / "none.json") is cfg


def test_a_stale_descriptor_is_left_to_its_writer(stack: tuple[LocalStack, Path]) -> None:
    _, path = stack
    local_stack.remove(pid=7, path=path)  # another `up`'s: kept
    assert path.exists()
    local_stack.remove(pid=42, path=path)
    assert not path.exists()


def test_another_user_is_refused_in_one_line(stack: tuple[LocalStack, Path]) -> None:
    _, path = stack
    path.parent.parent.chmod(0o755)  # tmp_path: let nobody reach run/ (itself 0700)
    code = ("from pathlib import Path\n"
            "from snoopbus.proto import local_stack, settings_file\n"
            f"local_stack.apply(settings_file.load(None), 'reader', 'tail', Path({str(path)!r}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNOOPBUS_")}
    out = subprocess.run([*AS_NOBODY, sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60)
    assert "LocalStackRefused: the local stack" in out.stderr, out.stderr
    assert "run `sudo snoopbus tail`" in out.stderr


def test_load_config_is_the_file_and_flag_then_the_stack(
    stack: tuple[LocalStack, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What every command reads its config with: settings_file.load, then apply."""
    s, path = stack
    monkeypatch.setenv(local_stack.RUN_DIR_ENV, str(path.parent))
    for name in [k for k in os.environ if k.startswith("SNOOPBUS_NATS_")]:
        monkeypatch.delenv(name)
    file = tmp_path / "snoopbus.toml"
    file.write_text("[collector]\nhost = 'web1'\n")
    cfg = local_stack.load_config(file, "reader", "tail")
    assert (cfg.collector.host, cfg.nats.url) == ("web1", s.url)
    assert cfg.nats.nkey.endswith("reader.nk")
    given = local_stack.load_config(file, "reader", "tail", "nats://elsewhere:4222")
    assert (given.nats.url, given.nats.nkey) == ("nats://elsewhere:4222", "")


def test_load_config_raises_only_what_the_user_fixes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[nats\n")
    with pytest.raises(local_stack.CONFIG_ERRORS):
        local_stack.load_config(bad, "reader", "config show")
    with pytest.raises(local_stack.CONFIG_ERRORS):
        local_stack.load_config(tmp_path / "missing.toml", "reader", "config show")
