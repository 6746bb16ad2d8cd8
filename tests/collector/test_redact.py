"""Secrets in argv are masked before events leave the host (collector/redact.py)."""

from __future__ import annotations

import secrets
import shlex
import string
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snoopbus.app.main import build_parser
from snoopbus.collector.commands import COLLECT_FLAGS, load_config, security_settings
from snoopbus.collector.events import EventBuilder
from snoopbus.collector.proc_cache import ProcCache
from snoopbus.collector.records import KIND_EXEC, KIND_EXIT, ExecRecord, ExitRecord, Header
from snoopbus.collector.redact import MASK, SHELL_WORDS, RedactConfig, Redactor
from tests.support.collector import EventWatch, RunningCollector

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


def test_the_collect_flags_reach_the_redactor() -> None:
    def redact_config(*flags: str) -> RedactConfig:
        args = build_parser().parse_args(["collect", *flags])
        cfg: RedactConfig = security_settings(load_config(args, COLLECT_FLAGS))["redact"]
        return cfg

    assert redact_config() == RedactConfig()
    assert redact_config("--no-redact").enabled is False
    custom = redact_config("--redact-pattern", r"pin:(?P<secret>\d+)")
    assert Redactor(custom)(["app", "pin:1234"]) == ["app", f"pin:{MASK}"]


def test_a_pattern_that_is_no_regular_expression_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"redact pattern '\(' is not a regular expression"):
        RedactConfig(patterns=("(",))


# Commands that carry a secret ({s}), and wrappers that may stand before them.
SECRET_COMMANDS = [
    ["mysql", "-uroot", "-p{s}", "shop"],
    ["curl", "-u", "admin:{s}", "https://x.internal/"],
    ["psql", "postgresql://app:{s}@db/app"],
    ["tool", "--db-password", "{s}"],
    ["tool", "--clientSecret={s}"],
    ["env", "API_TOKEN={s}", "./job"],
    ["curl", "-H", "Authorization: Bearer {s}", "https://x.internal/"],
    ["sshpass", "-p", "{s}", "ssh", "h"],
    ["ldapsearch", "-x", "-w", "{s}", "-b", "dc=corp"],
    ["smbclient", "//fs/share", "-U", "bob%{s}"],
    ["mount", "-o", "user=svc,password={s},vers=3.0", "//fs/s", "/mnt"],
    ["java", "-Dspring.datasource.password={s}", "-jar", "app.jar"],
]
WRAPPERS = [
    ["sudo"], ["sudo", "-u", "postgres"], ["env", "LANG=C"], ["nohup"], ["timeout", "10"],
    ["nice", "-n", "5"], ["xargs", "-0"], ["ssh", "-p", "2222", "db01"],
    ["docker", "exec", "-it", "db"], ["kubectl", "exec", "-it", "pod", "--"],
    ["strace", "-f", "-o", "/tmp/t"], ["setsid"], ["chroot", "/srv"], ["flock", "/tmp/l"],
]
secret_value = st.builds(
    lambda head, tail: head + tail, st.sampled_from(string.ascii_letters),
    st.text(string.ascii_letters + string.digits + "!#%+,.^_~-", min_size=7, max_size=20))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SECRET_COMMANDS), st.lists(st.sampled_from(WRAPPERS), max_size=3),
       st.sampled_from(["argv", "sh -c", "bash -lc", "ssh host", "su -c"]), secret_value)
def test_a_secret_behind_any_wrappers_is_masked(
    command: list[str], wrappers: list[list[str]], form: str, secret: str
) -> None:
    inner = [a.replace("{s}", secret) for a in command]
    for w in reversed(wrappers):
        inner = w + inner
    if form == "argv":
        argv = inner
    else:  # the command line as one argument, quoted as a shell would need it
        *head, last = form.split()
        argv = [*head, last, shlex.join(inner)] if form != "su -c" else ["su", "-", "app", "-c",
                                                                           shlex.join(inner)]
    out = R(argv)
    assert out is not None and len(out) == len(argv)
    assert not any(secret in a for a in out), out


def test_past_the_shell_word_budget_names_and_shapes_are_still_masked() -> None:
    filler = "true; " * (SHELL_WORDS + 10)
    script = (f"{filler}./deploy --password=S3cretPw1 "
              "https://bob:S3cretPw2@h/ AKIAQ1PWPS1NW1CUZ3FE")
    out = R(["sh", "-c", script])
    assert out is not None and len(out) == 3
    assert "S3cretPw" not in out[2] and "AKIA" not in out[2]
    assert out[2].startswith(filler) and f"--password={MASK}" in out[2]


def hdr(kind: int, pid: int, ppid: int) -> Header:
    return Header(1, 1, pid, pid, ppid, 1000, 1000, kind, 0, "x")


def test_parent_argv_and_exit_are_masked_and_each_argv_once() -> None:
    seen: list[list[str]] = []

    def counting(argv: list[str]) -> list[str] | None:
        seen.append(argv)
        return R(argv)

    b = EventBuilder("h", "i", ProcCache(), redact=counting)
    parent = ["sh", "-c", "mysql -uroot -pS3cretPw shop; true"]
    events = b.build_all(ExecRecord(hdr(KIND_EXEC, 10, 1), "/bin/sh", "/", parent))
    events += b.build_all(ExecRecord(hdr(KIND_EXEC, 11, 10), "/bin/true", "/", ["true"]))
    events += b.build_all(ExitRecord(hdr(KIND_EXIT, 11, 10), 0))
    events += b.build_all(ExitRecord(hdr(KIND_EXIT, 10, 1), 0))
    assert "S3cretPw" not in repr(events)
    sh_exec, true_exec, _, sh_exit = (ev for _, ev in events)
    masked = ["sh", "-c", f"mysql -uroot -p{MASK} shop; true"]
    assert sh_exec["proc"]["argv"] == masked and sh_exit["proc"]["argv"] == masked
    assert true_exec["proc"]["parent_argv"] == masked
    assert true_exec["proc"]["argv_redacted"] is True  # parent_argv changed
    assert sum(a is parent for a in seen) == 1  # shown three times, masked once


@pytest.mark.kernel
async def test_the_collector_masks_before_publishing(collector: RunningCollector,
                                                     watch: EventWatch) -> None:
    child = subprocess.Popen(["/bin/true", "--password=hunter2", "https://u:hunter2@h/"])
    assert child.wait() == 0
    # By pid: other processes on the host run /bin/true too.
    (ev,) = await watch.wait_for(lambda e: e["type"] == "exec" and e["proc"]["pid"] == child.pid)
    assert ev["proc"]["argv"] == ["/bin/true", f"--password={MASK}", f"https://u:{MASK}@h/"]
    assert ev["proc"]["argv_redacted"] is True
    assert "hunter2" not in repr(ev)


@pytest.mark.kernel
async def test_an_unprivileged_users_secrets_behind_wrappers_never_reach_the_bus(
    collector: RunningCollector, watch: EventWatch
) -> None:
    password = f"S3cret-{secrets.token_hex(4)}"
    token = f"ghp_{secrets.token_hex(18)}"  # a GitHub token's shape, 36 characters after _
    marker = secrets.token_hex(4)
    script = f"mysql -uroot -p{password} shop 2>/dev/null; /bin/true {marker}"
    subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                    "timeout", "20", "env", f"DEPLOY_KEY={token}", "sh", "-c", script],
                   check=False, timeout=30)
    (done,) = await watch.wait_for(lambda e: e["type"] == "exec"
                                   and e["proc"].get("argv") == ["/bin/true", marker])
    await watch.wait_for(lambda e: e["type"] == "exit" and e["proc"]["pid"] == done["proc"]["pid"])
    on_bus = repr(watch.events)
    assert password not in on_bus and token not in on_bus
    (sh,) = [e for e in watch.events if e["type"] == "exec" and e["proc"]["uid"] == 65534
             and e["proc"].get("argv", [])[:2] == ["sh", "-c"] and marker in repr(e)]
    assert sh["proc"]["argv"][2] == f"mysql -uroot -p{MASK} shop 2>/dev/null; /bin/true {marker}"
    assert sh["proc"]["argv_redacted"] is True
    (env,) = [e for e in watch.events if e["type"] == "exec" and e["proc"].get("argv", [""])[0]
              == "env" and marker in repr(e)]
    assert env["proc"]["argv"][1] == f"DEPLOY_KEY={MASK}" and env["proc"]["uid"] == 65534
    parent = done["proc"]["parent_argv"]  # sh's, or timeout's if sh ran /bin/true in its place
    assert MASK in repr(parent) and done["proc"]["argv_redacted"] is True
