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

import json
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from snoopbus.consumers.printable import is_plain, printable

_SURROGATE = re.compile("[\ud800-\udfff]")


def display(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    if text.isascii() or not _SURROGATE.search(text):
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


def escaped_fields(
    pairs: Iterable[tuple[str, object]], limit: int, special: re.Pattern[str],
    escape_value: Callable[[object, int], str], lead: str, eq: str, close: str,
) -> list[str]:  # fmt: skip
    """`{lead}{key}{eq}{text}{close}` for each pair that has a value, its text a
    text format's field: `escape_value(value, limit)` (the format's reference),
    with its common cases done here, a call less per value: an int, or short
    printable ASCII with none of the format's `special` characters, as it is."""
    parts = []
    for key, value in pairs:
        if value is None:
            continue
        if type(value) is int:
            text = str(value)
        elif (type(value) is str and len(value) <= limit and value.isascii()
              and value.isprintable() and not special.search(value)):  # fmt: skip
            text = value
        else:
            text = escape_value(value, limit)
        parts.append(f"{lead}{key}{eq}{text}{close}")
    return parts


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
    if not argv:
        return ""
    try:
        text = " ".join(argv)
    except TypeError:  # an element that is not text (validate=False keeps bytes)
        return " ".join(display(a) for a in argv)
    return display(text)  # the same as element by element: escapes never span a space


# Characters that some line readers take as a line break and JSON leaves raw:
# NEL (U+0085), LINE and PARAGRAPH SEPARATOR, as UTF-8. JSON escapes every C0
# control itself. Each sequence starts with a lead byte, so it can only ever
# be that character: replacing it in a whole document (or batch) is exact.
_JSON_LINE_BREAKS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"),
                     (b"\xe2\x80\xa9", b"\\u2029"))  # fmt: skip


def json_line(data: bytes) -> bytes:
    """Serialised JSON that no line reader splits (str.splitlines, JavaScript,
    log shippers): the same document, those three characters as \\u escapes."""
    if data.isascii():
        return data
    for raw, escaped in _JSON_LINE_BREAKS:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def dumps(doc: Any) -> bytes:
    """One line of JSON, UTF-8: nothing in it that any line reader takes as a break.

    orjson does the common case (measured: an ECS document 1.7 us, 8x less than
    json.dumps; an event 0.7 us, 22x less than json.dumps after `jsonable`);
    what it refuses (lone surrogates from non-UTF-8 names, bytes, integers
    over 64 bits, keys that are not text) goes through `jsonable` and the
    standard library, which show those as text.
    """
    try:
        data = orjson.dumps(doc)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        data = json.dumps(jsonable(doc), ensure_ascii=False, separators=(",", ":")).encode()
    return json_line(data)
