"""Host strings made safe to print: non-UTF-8 bytes become `\\xNN`.

Paths and argv arrive as str that may hold lone surrogates U+DC80..U+DCFF
(bytes that were not UTF-8, see proto/README.md). JSON, syslog and CEF all
need valid Unicode, so every sink shows such a byte as the four characters
`\\xNN`, the way Python's `backslashreplace` does. Readable and the same in
every sink; ambiguous only for a name that literally contains `\\x` and two
hex digits (documented in docs/README.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def display(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    if not _SURROGATE.search(text):
        return text  # fast path: the common case is plain Unicode
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate outside the escape range: not from a kernel
        return text.encode("utf-8", "backslashreplace").decode("ascii")
    return raw.decode("utf-8", "backslashreplace")


def bounded_escaped(
    value: object, limit: int, needs_work: re.Pattern[str], escape: Callable[[str], str]
) -> str:
    """A field value for a text format: ints as they are; text shown (display),
    cut to `limit` with "...", then escaped. Most values need none of it, which
    `needs_work` (the format's specials, or a surrogate) tells at once."""
    if isinstance(value, int):
        return str(value)
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit and not needs_work.search(text):
        return text
    text = display(text)
    if len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return escape(text)


def jsonable(value: Any) -> Any:
    """An event map (or part of one) with every string made displayable."""
    if isinstance(value, str):
        return display(value)
    if isinstance(value, dict):
        return {display(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):  # validate=False batches keep text as bytes
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or Infinity (JSON.stringify writes null too)
    return value


def command_line(argv: list[str] | None) -> str:
    return " ".join(display(a) for a in argv or ())
