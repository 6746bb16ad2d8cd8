"""Text from the bus made safe to show on one line: a terminal, a syslog field.

Whoever names a file or runs a program chooses its bytes, and would like a
terminal to obey them (ESC sequences that retitle it, clear it, rewrite a
line), a log line to end early (CR, LF, U+2028), or a path to read backwards
(bidi overrides). `printable` shows every such character as an escape:

- bytes that were not UTF-8 (surrogate-escaped, U+DC80..U+DCFF): `\\xNN`,
  the byte itself;
- C0 and C1 controls and DEL: `\\xNN`;
- every other control, format or separator character (Unicode categories
  Cf, Zl, Zp, and lone surrogates: bidi overrides and isolates, zero-width
  characters, U+2028/U+2029, tag characters ...): `\\uXXXX` or `\\UXXXXXXXX`.

Everything else, letters of any script included, is shown as it is. The
class is written out (not built from unicodedata at import, which takes
0.2 s); tests/consumers/test_printable.py checks it against the running Python's
Unicode database.
"""

from __future__ import annotations

import re
from typing import Final

# Unicode categories Cc, Cf, Cs, Zl and Zp (Unicode 14, Python 3.11).
UNSAFE_CLASS: Final = (
    "[\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ud800-\udfff\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f]"
)
UNSAFE: Final = re.compile(UNSAFE_CLASS)


def escape_char(ch: str) -> str:
    """The escape `printable` shows for one unsafe character."""
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _escape(m: re.Match[str]) -> str:
    return escape_char(m.group())


def is_plain(text: str) -> bool:
    """Whether `printable` would leave `text` as it is. Fast for the common case:
    ASCII is unsafe only in its controls, which `isprintable` tells in C."""
    if text.isascii():
        return text.isprintable()
    return UNSAFE.search(text) is None


def printable(text: str) -> str:
    """`text` with every unsafe character shown as an escape (see above)."""
    if is_plain(text):
        return text
    return UNSAFE.sub(_escape, text)
