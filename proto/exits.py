"""Exit statuses: one table for every `snoopbus` command (README "Exit statuses").

The same cause gives the same status whichever command meets it, so scripts and
systemd (RestartPreventExitStatus=2) can tell "fix the configuration" from
"NATS is away, try again".
"""

from __future__ import annotations

import logging
import sys
from typing import Final

OK: Final = 0
PROBLEMS: Final = 1  # a check found problems (`doctor`, `rules check`), no match, or a bug
USAGE: Final = 2  # bad flag, config file or value: retrying will not help
BUS: Final = 3  # NATS unreachable or refused us (credentials, TLS)
PRIVILEGE: Final = 4  # needs root or a capability it does not have
BUSY: Final = 5  # a port or folder is in use by something else
KERNEL: Final = 6  # this host cannot run the probes: BCC, BTF, the kernel refused
INTERRUPTED: Final = 130  # Ctrl-C

TABLE: Final = {
    OK: "success",
    PROBLEMS: "a check found problems (doctor, rules check), no match (rules test), "
    "or an unexpected error",
    USAGE: "bad flag, config file or value: fix it, retrying will not help",
    BUS: "NATS unreachable, or it refused the credentials or TLS",
    PRIVILEGE: "needs root (or a capability it lacks)",
    BUSY: "a port or folder is in use by something else",
    KERNEL: "this host cannot run the probes (BCC, BTF, the kernel refused them)",
    INTERRUPTED: "interrupted (Ctrl-C)",
}


def code_for(exc: BaseException) -> int:
    """The status for an error a command reports in one line."""
    explicit = getattr(exc, "exit_code", None)
    if isinstance(explicit, int):
        return explicit
    # Imported here: consumers on other hosts import this without BCC.
    from snoopbus.proto import BusUnavailable

    if isinstance(exc, BusUnavailable):
        return BUS
    if isinstance(exc, PermissionError):
        return PRIVILEGE
    return USAGE


def fail(command: str, exc: BaseException) -> int:
    """Print `snoopbus COMMAND: what is wrong` on stderr (a JSON log line under
    --log-format json); the status for it."""
    from snoopbus.proto import log_setup

    code = code_for(exc)
    if log_setup.active[0] == "json":
        logging.getLogger(f"snoopbus.{command.split()[0]}").error(
            "snoopbus %s: %s", command, exc, extra={"exit_status": code}
        )
    else:
        print(f"snoopbus {command}: {exc}", file=sys.stderr, flush=True)
    return code
