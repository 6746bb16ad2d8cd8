"""Secrets in argv are masked before events leave the host (collector/redact.py)."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snoopbus.collector.redact import MASK, RedactConfig, Redactor
from tests.conftest import EventWatch, RunningCollector

R = Redactor()

CASES = [
    (["mysql", "--password=hunter2", "db"], ["mysql", f"--password={MASK}", "db"]),
    (["mysql", "-phunter2", "db"], ["mysql", f"-p{MASK}", "db"]),
    (["mysql", "-p", "db"], None),  # mysql's -p alone prompts: db is not a secret
    (["psql", "--db-password", "hunter2", "-h", "x"], ["psql", "--db-password", MASK, "-h", "x"]),
    (["docker", "login", "--password-stdin", "-u", "me"], None),
    (["sshpass", "-p", "hunter2", "ssh", "h"], ["sshpass", "-p", MASK, "ssh", "h"]),
    (["redis-cli", "-a", "hunter2", "ping"], ["redis-cli", "-a", MASK, "ping"]),
    (["htpasswd", "-bc", "f", "u", "hunter2"], ["htpasswd", "-bc", "f", "u", MASK]),
    (["cp", "-p", "a", "b"], None),  # -p elsewhere means something else
    (["rsync", "--passive", "a"], None),
    (["curl", "https://bob:hunter2@example.com/x"], ["curl", f"https://bob:{MASK}@example.com/x"]),
    (["curl", "https://example.com/x?a=1&token=abc123&b=2"],
     ["curl", f"https://example.com/x?a=1&token={MASK}&b=2"]),
    (["git", "clone", "https://example.com/r.git"], None),
    (["env", "AWS_SECRET_ACCESS_KEY=abc/def", "aws", "s3", "ls"],
     ["env", f"AWS_SECRET_ACCESS_KEY={MASK}", "aws", "s3", "ls"]),
    (["docker", "run", "-e", "DB_PASSWORD=pw", "img"],
     ["docker", "run", "-e", f"DB_PASSWORD={MASK}", "img"]),
    (["tool", "--api-key=k", "--client-secret", "s"],
     ["tool", f"--api-key={MASK}", "--client-secret", MASK]),
    (["ls", "-la", "/tmp"], None),
    (["/usr/bin/python3", "token_counter.py"], None),
]


@pytest.mark.parametrize(("argv", "want"), CASES)
def test_defaults(argv: list[str], want: list[str] | None) -> None:
    assert R(argv) == want


def test_off_and_extra_patterns() -> None:
    assert Redactor(RedactConfig(enabled=False))(["mysql", "-phunter2"]) is None
    custom = Redactor(RedactConfig(patterns=(r"pin:(?P<secret>\d+)", r"^sk-[a-z0-9]+$")))
    assert custom(["app", "pin:1234", "sk-abc1"]) == ["app", f"pin:{MASK}", MASK]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=12))
def test_any_argv_keeps_its_length_and_is_stable(argv: list[str]) -> None:
    out = R(argv)
    if out is not None:
        assert len(out) == len(argv) and out != argv
        assert R(out) in (None, out)  # masking twice changes nothing more


@pytest.mark.kernel
async def test_the_collector_masks_before_publishing(collector: RunningCollector,
                                                     watch: EventWatch) -> None:
    subprocess.run(["/bin/true", "--password=hunter2", "https://u:hunter2@h/"], check=True)
    (ev,) = await watch.wait_for(lambda e: e["type"] == "exec"
                                 and e["proc"].get("argv", [""])[0] == "/bin/true")
    assert ev["proc"]["argv"] == ["/bin/true", f"--password={MASK}", f"https://u:{MASK}@h/"]
    assert ev["proc"]["argv_redacted"] is True
    assert "hunter2" not in repr(ev)
