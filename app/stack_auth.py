"""The embedded stack's credentials: one NKey per role, made at first start.

`snoopbus up` keeps them in <state_dir>/auth (0700), one seed file per role
(`collector.nk`, `rename.nk`, `reader.nk`, `admin.nk`..., 0600), reused on
later starts, and writes the nats-server config granting each role only what
proto/roles.py says. The server's config holds public keys only. Children
get the path of their seed in SNOOPBUS_NATS_NKEY: a path, never a secret on
a command line.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nkeys

from snoopbus.proto import NatsAuth, roles

AUTH_DIR = "auth"
SEED_SUFFIX = ".nk"
# Every credential variable a child could inherit: only its role's may reach it.
AUTH_ENV = tuple(f"SNOOPBUS_NATS_{k}"
                 for k in ("USER", "PASSWORD", "TOKEN", "NKEY", "CREDS", "INBOX_PREFIX"))


class AuthError(RuntimeError):
    """A credentials file that cannot be trusted or made; the message says what to do."""


def new_seed() -> bytes:
    return nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)


def public_key(seed: bytes) -> str:
    return nkeys.from_seed(bytearray(seed)).public_key.decode()


def seed_file(auth_dir: Path, role: str) -> Path:
    """Where a role's seed lives (one file name per role, the role's user name)."""
    return auth_dir / f"{role}{SEED_SUFFIX}"


@dataclass(frozen=True)
class StackAuth:
    auth_dir: Path

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> StackAuth:
        return cls(state_dir / AUTH_DIR)

    def seed_path(self, role: roles.Role | str) -> Path:
        return seed_file(self.auth_dir, role if isinstance(role, str) else role.name)

    def ensure(self, wanted: Sequence[roles.Role]) -> dict[str, str]:
        """Each role's public key; seeds made for roles that have none yet."""
        self.auth_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _own_private(self.auth_dir, 0o700)
        return {role.name: public_key(self._seed(self.seed_path(role))) for role in wanted}

    def _seed(self, path: Path) -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            seed = new_seed()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(seed + b"\n")
            return seed
        except OSError as exc:
            raise AuthError(f"credentials {path}: {exc.strerror}; remove it to make a new one "
                            "at the next start") from None
        with os.fdopen(fd, "rb") as f:
            _own_private(path, 0o600, f.fileno())
            seed = f.read().strip()
        try:
            public_key(seed)
        except Exception:
            raise AuthError(f"credentials {path} hold no NKey seed: remove the file, and "
                            "`snoopbus up` makes a new one") from None
        return seed

    def server_config(self, wanted: Sequence[roles.Role]) -> str:
        keys = self.ensure(wanted)
        return roles.render([(r, f"nkey: {keys[r.name]}") for r in wanted])

    def env(self, role: str, base: dict[str, str] | None = None) -> dict[str, str]:
        """`base` (default: this environment) with only `role`'s credentials."""
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if k not in AUTH_ENV}
        env["SNOOPBUS_NATS_NKEY"] = str(self.seed_path(role))
        env["SNOOPBUS_NATS_INBOX_PREFIX"] = roles.inbox_prefix(role)
        return env

    def nats_auth(self, role: str) -> NatsAuth:
        """For `up`'s own connections and tests: `role`'s seed and reply prefix."""
        return NatsAuth(nkey=str(self.seed_path(role)), inbox_prefix=roles.inbox_prefix(role))


def _own_private(path: Path, mode: int, fd: int | None = None) -> None:
    """Ours (else refused: another user could have planted it) and `mode` at most."""
    st = os.fstat(fd) if fd is not None else os.lstat(path)
    if st.st_uid != os.geteuid() or stat.S_ISLNK(st.st_mode):
        raise AuthError(f"{path} belongs to uid {st.st_uid}, not {os.geteuid()}, or is a "
                        "link: another user could have planted it; remove it")
    if stat.S_IMODE(st.st_mode) & ~mode:
        if fd is not None:
            os.fchmod(fd, mode)
        else:
            os.chmod(path, mode)
