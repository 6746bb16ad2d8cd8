"""Finding the stack `snoopbus up` runs on this host, with no flags.

`up` writes a descriptor (its URL, state folder, archive and credentials
folder; no secret) to /run/snoopbus/stack.json, 0600 in a 0700 folder
($SNOOPBUS_RUN_DIR moves it, for tests and unusual layouts), and removes it
when it stops. `tail`, `consume`, `doctor --nats`, `query` and `config show`
read it when the user gave no URL and no credentials (flags, environment and
the config file still win), and connect with their role's seed file.

Only root can read it: anyone else who would have used it gets a
LocalStackRefused saying what to do (proto/SECURITY.md, "Connecting").
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from snoopbus.proto.roles import inbox_prefix
from snoopbus.proto.settings_file import Config, ConfigError, load

RUN_DIR_ENV: Final = "SNOOPBUS_RUN_DIR"
DEFAULT_RUN_DIR: Final = Path("/run/snoopbus")
FILE_NAME: Final = "stack.json"
AUTH_KEYS: Final = ("user", "password", "token", "nkey", "creds")


class LocalStackRefused(PermissionError):
    """The local stack exists but this user may not use its credentials
    (a PermissionError: exit status 4, README "Exit statuses")."""


@dataclass(frozen=True)
class LocalStack:
    url: str
    state_dir: str
    archive_dir: str
    auth_dir: str
    pid: int = 0  # the `up` that wrote it

    def seed(self, role: str) -> Path:
        return Path(self.auth_dir) / f"{role}.nk"


def descriptor_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get(RUN_DIR_ENV, "").strip() or DEFAULT_RUN_DIR) / FILE_NAME


def write(stack: LocalStack, path: Path | None = None) -> Path:
    """Atomically, 0600 in a 0700 folder."""
    path = path or descriptor_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(stack.__dict__, f)
    os.replace(tmp, path)
    return path


def remove(pid: int, path: Path | None = None) -> None:
    """Remove the descriptor if the `up` with this pid wrote it (another may have since)."""
    path = path or descriptor_path()
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def read(command: str, path: Path | None = None) -> LocalStack | None:
    """The running stack's descriptor; None when no `up` wrote one.

    Raises LocalStackRefused when one exists that this user cannot read."""
    path = path or descriptor_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except PermissionError:
        raise LocalStackRefused(refusal(command, path)) from None
    except (OSError, ValueError):
        return None  # half-written or damaged: as if no stack ran
    try:
        return LocalStack(**data)
    except TypeError:
        return None


def refusal(command: str, path: Path) -> str:
    if command == "query":
        return (f"the local stack ({path}) and its archive are root's: run `sudo snoopbus "
                "query`, or pass --dir with an archive your group may read ([consumer.archive] "
                "group)")
    return (f"the local stack ({path}) and its credentials are root's: run `sudo snoopbus "
            f"{command}`, or ask root for a reader credentials file and pass it with "
            "SNOOPBUS_NATS_NKEY=FILE and --nats URL (proto/SECURITY.md, Connecting)")


def _uses_defaults(cfg: Config) -> bool:
    return cfg.source("nats.url") == "default" and all(
        cfg.source(f"nats.{k}") == "default" for k in AUTH_KEYS)


def apply(cfg: Config, role: str, command: str, path: Path | None = None) -> Config:
    """`cfg` with the local stack's URL and `role`'s seed, when it names no
    server and no credentials of its own and a stack runs; else `cfg`.

    A user who cannot read the stack's descriptor or seed is refused
    (LocalStackRefused), rather than sent to a server that would refuse them.
    """
    if not _uses_defaults(cfg):
        return cfg
    path = path or descriptor_path()
    stack = read(command, path)
    if stack is None:
        return cfg
    seed = stack.seed(role)
    if not seed.exists():
        role, seed = "admin", stack.seed("admin")  # a consumer `up` does not run: root may
    if not os.access(seed, os.R_OK):
        raise LocalStackRefused(refusal(command, seed))
    where = f"local stack {path}"
    nats = replace(cfg.nats, url=stack.url, nkey=str(seed), inbox_prefix=inbox_prefix(role))
    sources = {**cfg.sources, "nats.url": where, "nats.nkey": where, "nats.inbox_prefix": where}
    return replace(cfg, nats=nats, sources=sources)


def load_config(path: Path | None, role: str, command: str, nats_url: str | None = None) -> Config:
    """A command's effective config (settings_file.load, with its --nats URL if
    given), on the local stack as `role` where it names no server of its own
    (apply). Raises one of CONFIG_ERRORS: what the user fixes."""
    return apply(load(path, flags={"nats.url": nats_url}), role, command)


# A bad config file or value, or a local stack this user may not use: one line
# (exits.fail), no traceback.
CONFIG_ERRORS: Final = (ConfigError, LocalStackRefused)


def archive_dir(command: str) -> Path | None:
    """The archive of the running stack, if one runs."""
    stack = read(command)
    return Path(stack.archive_dir) if stack is not None else None
