"""Host strings made safe to send: non-UTF-8 bytes become `\\xNN`.

Paths and argv arrive as str that may hold lone surrogates U+DC80..U+DCFF
(bytes that were not UTF-8, see proto/README.md). JSON, syslog and CEF all
need valid Unicode, so every sink shows such a byte as the four characters
`\\xNN`, the way Python's `backslashreplace` does. Readable and the same in
every sink; ambiguous only for a name that literally contains `\\x` and two
hex digits (documented in docs/README.md).

Text formats (syslog, CEF) go further: `bounded_escaped` shows every control,
format and line-separator character as an escape too (consumers/printable.py),
so no value can end a record, start a forged one, or reorder what a SIEM's
screen shows. JSON keeps the exact text (its own escaping carries control
characters safely); `json_line` makes sure no character of it breaks a line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from snoopbus.consumers.printable import is_plain, printable

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
    value: object, limit: int, special: re.Pattern[str], escape: Callable[[str], str]
) -> str:
    """A field value for a text format: ints as they are; text made printable
    (every control, format and separator character, and each non-UTF-8 byte,
    shown as an escape), cut to `limit` with "...", then escaped for the
    format. Most values need none of it: plain, short, and without one of
    the format's `special` characters."""
    if isinstance(value, int):
        return str(value)
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit and is_plain(text) and not special.search(text):
        return text
    text = printable(text)
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


# Characters that some line readers take as a line break and JSON leaves raw:
# NEL (U+0085), LINE and PARAGRAPH SEPARATOR. JSON escapes every C0 control itself.
_JSON_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def json_line(text: str) -> str:
    """Serialised JSON that no line reader splits (str.splitlines, JavaScript,
    log shippers): the same document, those three characters as \\u escapes."""
    return text if text.isascii() else text.translate(_JSON_LINE_BREAKS)
