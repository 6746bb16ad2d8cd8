"""Secrets in command lines are replaced by "***" before events leave the host.

On by default. What counts as a secret (each a separate argument is kept, so
argv keeps its length and the positions of everything else):

- a flag naming a secret with its value attached: `--password=X`,
  `--token=X`, `--api-key=X`, `--client-secret=X`, ... -> `--password=***`
- the same flags with the value as the next argument: `--password X`
  unless that starts with "-" (a few tools read `--password` alone as
  "prompt"; then a next argument such as a database name is hidden too:
  better than leaking)
- short flags only for the tools known to take a password there, because
  `-p` means port, parents or preserve elsewhere: `mysql -pX` (attached
  only: mysql's `-p X` prompts and X is the database), `sshpass -p X`,
  `redis-cli -a X`, `htpasswd -b file user X`
- credentials in URLs: `scheme://user:X@host` -> `scheme://user:***@host`,
  and query parameters such as `?token=X`, `&password=X`, `&api_key=X`
- environment-style assignments whose name holds SECRET, TOKEN, PASSWORD,
  PASSWD, API_KEY, APIKEY, ACCESS_KEY, PRIVATE_KEY or CREDENTIAL:
  `AWS_SECRET_ACCESS_KEY=X` -> `AWS_SECRET_ACCESS_KEY=***`

Configurable (`RedactConfig`): turn it off, or add regular expressions; in an
added pattern the group named `secret` is replaced, or the whole match if it
has none. An event whose argv (or parent_argv) was changed carries
`proc.argv_redacted: true`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

MASK: Final = "***"

_SECRET_WORD = (
    r"(?:password|passwd|pass|pwd|token|secret|api[-_]?key|apikey|access[-_]?key"
    r"|secret[-_]?key|private[-_]?key|credentials?)"
)
# A flag with a secret word as one of its dash-separated parts: --db-password,
# --client-secret, --token; not --passive, --tokens-per-second.
_FLAG_NAME = rf"--?(?:[\w.]*[-_.])?{_SECRET_WORD}(?:[-_.][\w.-]*)?"
# --password=X, --db-password=X, -token=X
_FLAG_WITH_VALUE = re.compile(rf"^({_FLAG_NAME}=)(.+)$", re.IGNORECASE)
# --password X: the flag alone, its value next
_FLAG_ALONE = re.compile(rf"^{_FLAG_NAME}$", re.IGNORECASE)
_URL_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)([^/\s@]+)(@)")
_URL_QUERY = re.compile(
    r"([?&;](?:access_token|token|api_?key|apikey|password|passwd|secret|sig|signature"
    r"|client_secret|auth)=)([^&#\s]+)",
    re.IGNORECASE,
)
_ENV_ASSIGN = re.compile(
    r"^([A-Za-z_][A-Za-z0-9_]*(?:SECRET|TOKEN|PASSWORD|PASSWD|API_?KEY|APIKEY|ACCESS_KEY"
    r"|PRIVATE_KEY|CREDENTIAL)[A-Za-z0-9_]*=)(.+)$",
    re.IGNORECASE,
)
# Cheap screen: an argument that matches none of these needs no closer look.
_SCREEN = re.compile(
    rf"{_SECRET_WORD}|://|secret|token|passw|credential|_key|apikey", re.IGNORECASE
)

# tool -> short flags whose next argument is a password
_SHORT_NEXT: Final = {
    "sshpass": ("-p",),
    "redis-cli": ("-a",),
    "keydb-cli": ("-a",),
}
# tools whose `-pSECRET` (attached) is a password
_SHORT_ATTACHED: Final = {
    "mysql", "mysqldump", "mysqladmin", "mysqlimport", "mysqlshow", "mysqlcheck",
    "mysqlpump", "mysqlsh", "mariadb", "mariadb-dump", "mariadb-admin", "mariadb-import",
    "mariadb-show", "mariadb-check",
}


@dataclass(frozen=True)
class RedactConfig:
    enabled: bool = True
    patterns: tuple[str, ...] = ()  # extra regular expressions (group `secret`, or all)


class Redactor:
    def __init__(self, config: RedactConfig = RedactConfig()) -> None:
        self.enabled = config.enabled
        self.extra = [re.compile(p) for p in config.patterns]

    def __call__(self, argv: Sequence[str]) -> list[str] | None:
        """A redacted copy of argv, or None when nothing in it is a secret."""
        if not self.enabled or not argv:
            return None
        out: list[str] | None = None
        tool = os.path.basename(argv[0])
        hide_next = False
        for i, arg in enumerate(argv):
            if hide_next and arg and not arg.startswith("-"):
                new = MASK
            else:
                new = self._one(tool, arg, i)
            hide_next = bool(i) and (
                arg in _SHORT_NEXT.get(tool, ())
                or (_SCREEN.search(arg) is not None and _FLAG_ALONE.match(arg) is not None)
            )
            if new != arg:
                if out is None:
                    out = list(argv)
                out[i] = new
        if tool == "htpasswd" and len(argv) > 3 and any(
            a.startswith("-") and not a.startswith("--") and "b" in a for a in argv[1:-1]
        ):  # htpasswd -b[c] file user PASSWORD: the password is last
            out = out or list(argv)
            out[-1] = MASK
        return out

    def _one(self, tool: str, arg: str, i: int) -> str:
        if i and tool in _SHORT_ATTACHED and arg.startswith("-p") and len(arg) > 2:
            return "-p" + MASK
        if self.extra:
            for pattern in self.extra:
                arg = pattern.sub(_mask_match, arg)
        if not _SCREEN.search(arg):
            return arg
        if i:
            arg = _FLAG_WITH_VALUE.sub(r"\1" + MASK, arg)
            arg = _ENV_ASSIGN.sub(r"\1" + MASK, arg)
        arg = _URL_USERINFO.sub(r"\1" + MASK + r"\3", arg)
        return _URL_QUERY.sub(r"\1" + MASK, arg)


def _mask_match(m: re.Match[str]) -> str:
    if "secret" not in m.re.groupindex:
        return MASK
    start, end = m.span("secret")
    base = m.start()
    text = m.group(0)
    return text[: start - base] + MASK + text[end - base :]
