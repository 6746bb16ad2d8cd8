"""The packaged default rule set on events shaped like the collector's: each
attack fires exactly its rule(s); everyday activity fires nothing."""

from __future__ import annotations

from typing import Any

import pytest

from snoopbus.consumers.alert.engine import Engine
from snoopbus.consumers.alert.loader import default_rules_dir, load_rules


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(load_rules([default_rules_dir()]).rules)


def execve(argv: list[str], exe: str | None = None, parent: str | None = None) -> dict[str, Any]:
    proc: dict[str, Any] = {"pid": 100, "ppid": 99, "uid": 0, "exe": exe or argv[0],
                            "argv": argv, "cwd": "/root"}  # fmt: skip
    if parent:
        proc["parent_exe"] = parent
        proc["parent_argv"] = [parent]
    return {"v": 1, "id": "e", "ts": 1, "host": "h", "type": "exec", "proc": proc}


def file_ev(type_: str, path: str, exe: str = "/usr/bin/vi", **file: Any) -> dict[str, Any]:
    return {"v": 1, "id": "f", "ts": 1, "host": "h", "type": type_,
            "proc": {"pid": 5, "uid": 0, "exe": exe}, "file": {"path": path, **file}}  # fmt: skip


FIRES = [
    (file_ev("close_write", "/etc/cron.d/backdoor"), {"Write to a Cron Directory or Crontab"}),
    (file_ev("moved_to", "/etc/crontab"), {"Write to a Cron Directory or Crontab"}),
    (file_ev("create", "/var/spool/cron/crontabs/root"), {"Write to a Cron Directory or Crontab"}),
    (file_ev("create", "/etc/systemd/system/evil.service"), {"Write to a Systemd Unit Directory"}),
    (
        file_ev("renamed", "/home/u/.config/systemd/user/x.service"),
        {"Write to a Systemd Unit Directory"},
    ),
    (file_ev("modify", "/etc/sudoers"), {"Sudoers Changed"}),
    (file_ev("create", "/etc/sudoers.d/99-me"), {"Sudoers Changed"}),
    (file_ev("close_write", "/root/.ssh/authorized_keys"), {"SSH Authorized Keys Changed"}),
    (
        execve(["/bin/sh", "-c", "id"], parent="/usr/sbin/nginx"),
        {"Shell Spawned by a Web Server or Database"},
    ),
    (
        execve(["bash", "-i"], exe="/usr/bin/bash", parent="/usr/lib/postgresql/15/bin/postgres"),
        {"Shell Spawned by a Web Server or Database"},
    ),
    (execve(["/bin/bash", "-c", "echo aWQK | base64 -d | sh"]), {"Base64 Decoded and Executed"}),
    (execve(["/bin/sh", "-c", "base64 --decode x.b64|/bin/bash"]), {"Base64 Decoded and Executed"}),
    (
        execve(
            ["python3", "-c", "import base64;exec(base64.b64decode('cHJpbnQoMSk='))"],
            exe="/usr/bin/python3",
        ),
        {"Base64 Decoded and Executed"},
    ),
    (execve(["/tmp/.x/kworker"]), {"Program Run from a World-Writable Temporary Directory"}),
    (
        execve(["./payload"], exe="/dev/shm/payload"),
        {"Program Run from a World-Writable Temporary Directory"},
    ),
    (file_ev("delete", "/var/log/auth.log", exe="/usr/bin/rm"), {"Log File Deleted"}),
    (
        execve(["truncate", "-s", "0", "/var/log/wtmp"], exe="/usr/bin/truncate"),
        {"Log File Truncated or Wiped from the Command Line"},
    ),
    (
        execve(["/bin/bash", "-c", "history -c"]),
        {"Log File Truncated or Wiped from the Command Line"},
    ),
    (file_ev("attrib", "/tmp/rootshell", mode=0o104755), {"Setuid or Setgid Bit Set on a File"}),
    (
        file_ev("attrib", "/tmp/py", exe="/usr/sbin/setcap", xattr="security.capability",
                xattr_op="set"),
        {"File Capability Set on a File"},
    ),
    (
        execve(["chmod", "u+s", "/tmp/rootshell"], exe="/usr/bin/chmod"),
        {"Chmod Setting the Setuid or Setgid Bit"},
    ),
    (
        execve(["chmod", "4755", "/tmp/rootshell"], exe="/usr/bin/chmod"),
        {"Chmod Setting the Setuid or Setgid Bit"},
    ),
]

QUIET = [
    file_ev("close_write", "/etc/cron.d/backdoor", exe="/usr/bin/dpkg"),
    file_ev("close_write", "/etc/cron.deny"),
    file_ev("open", "/etc/sudoers"),
    file_ev("delete", "/etc/sudoers.d/99-me"),
    file_ev("close_write", "/root/.ssh/known_hosts"),
    file_ev("create", "/etc/systemd/system/x.service", exe="/usr/bin/systemctl"),
    file_ev("delete", "/var/log/syslog.4.gz", exe="/usr/sbin/logrotate"),
    file_ev("close_write", "/var/log/syslog", exe="/usr/sbin/rsyslogd"),
    file_ev("attrib", "/tmp/script", mode=0o100755),
    file_ev("attrib", "/tmp/py", xattr="security.capability", xattr_op="remove"),
    file_ev("attrib", "/tmp/py", xattr="user.mime_type", xattr_op="set"),
    file_ev("attrib", "/usr/bin/ping", exe="/usr/bin/dpkg", xattr="security.capability",
            xattr_op="set"),
    execve(["/bin/sh", "-c", "id"], parent="/usr/bin/sshd"),
    execve(["/usr/sbin/nginx", "-s", "reload"], parent="/bin/bash"),
    execve(["base64", "-d", "in.b64"], exe="/usr/bin/base64"),
    execve(["/bin/sh", "-c", "cat x | sh"]),
    execve(["/usr/bin/ls", "-l", "/tmp/"]),
    execve(["chmod", "755", "/usr/local/bin/x"], exe="/usr/bin/chmod"),
    execve(["rm", "-f", "/tmp/x.log"], exe="/usr/bin/rm"),
]


@pytest.mark.parametrize(("event", "titles"), FIRES)
def test_each_attack_fires_its_rule(
    engine: Engine, event: dict[str, Any], titles: set[str]
) -> None:
    assert {hit.rule.title for hit in engine.match(event)} == titles


@pytest.mark.parametrize("event", QUIET)
def test_everyday_activity_is_quiet(engine: Engine, event: dict[str, Any]) -> None:
    assert engine.match(event) == []
