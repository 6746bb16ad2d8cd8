"""The `snoopbus` command: the global flags, and the subcommands packages register.

Each package registers its own subcommands in the entry point group
`snoopbus.commands` (snoopbus's pyproject.toml for the built-ins): the entry
point names a function `register(subparsers)` that adds one subparser and sets
its `func`. So this root knows no command, and no package needs another's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Final

from snoopbus.proto import exits, log_setup
from snoopbus.proto.build_info import version

GROUP: Final = "snoopbus.commands"
# The help lists the built-ins in this order (most used first); others follow by name.
SHOWN_FIRST: Final = ("up", "collect", "config", "tail", "consume", "query", "rules", "doctor",
                      "fleet")

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def registered() -> dict[str, Register]:
    """Each command's register function, in help order; the first registration of a name wins."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    rank = {name: i for i, name in enumerate(SHOWN_FIRST)}
    names = sorted(found, key=lambda name: (rank.get(name, len(rank)), name))
    return {name: found[name].load() for name in names}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snoopbus",
        description="eBPF file-and-process monitoring, published on NATS.",
    )
    parser.add_argument("--version", action="version", version=f"snoopbus {version()}")
    log_setup.add_flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in registered().values():
        register(sub)
    # After the command too: `snoopbus tail --log-format json`.
    for command in sub.choices.values():
        log_setup.add_flags(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        log_setup.configure(args)
    except ValueError as exc:
        return exits.fail(args.command, exc)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return exits.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
