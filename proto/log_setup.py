"""Logging for every `snoopbus` process: --log-format text|json, --log-level.

Flags win over $SNOOPBUS_LOG_FORMAT / $SNOOPBUS_LOG_LEVEL; `up` sets both for
its children so the whole stack logs alike. JSON is one object per line
(journald, Filebeat, Vector read it as is).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Final

FORMAT_ENV: Final = "SNOOPBUS_LOG_FORMAT"
LEVEL_ENV: Final = "SNOOPBUS_LOG_LEVEL"
FORMATS: Final = ("text", "json")
LEVELS: Final = ("debug", "info", "warning", "error")
TEXT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# (format, level) once configure() ran: exits.fail and `up` read it.
active: tuple[str, str] = ("text", "info")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, object] = {
            "time": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        status = getattr(record, "exit_status", None)
        if status is not None:
            out["exit_status"] = status
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def add_flags(parser: argparse._ActionsContainer, *, top: bool = False) -> None:
    """--log-format, --log-level and -v. Below the top parser they default to
    SUPPRESS, so `snoopbus --log-level debug consume x` and `... consume x
    --log-level debug` both work and neither erases the other."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--log-format", choices=FORMATS, default=default,
                        help=f"log lines as text or JSON objects (${FORMAT_ENV}; default text)")
    parser.add_argument("--log-level", choices=LEVELS, type=str.lower, default=default,
                        help=f"least severe level logged (${LEVEL_ENV}; default info)")
    if "--verbose" not in parser._option_string_actions:  # doctor has its own
        parser.add_argument("-v", "--verbose", action="store_true", default=default,
                            help="debug logging (--log-level debug)")


def settings(args: argparse.Namespace) -> tuple[str, str]:
    """(format, level) from the flags, else the environment, else text and info."""
    fmt = getattr(args, "log_format", None) or os.environ.get(FORMAT_ENV, "") or "text"
    level = getattr(args, "log_level", None) or os.environ.get(LEVEL_ENV, "") or "info"
    if getattr(args, "verbose", None):
        level = "debug"
    fmt, level = fmt.strip().lower(), level.strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} (${FORMAT_ENV}): use {' or '.join(FORMATS)}")
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} (${LEVEL_ENV}): use one of {', '.join(LEVELS)}")
    return fmt, level


def configure(args: argparse.Namespace) -> tuple[str, str]:
    """Set the root logger up (again: a consumer's own flags come after the
    top parser's). The (format, level) in effect."""
    global active
    fmt, level = active = settings(args)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    return fmt, level


def export() -> None:
    """Hand the logging in effect to child processes (`up`'s) through the environment."""
    os.environ[FORMAT_ENV], os.environ[LEVEL_ENV] = active
