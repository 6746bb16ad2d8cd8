"""What reaches a terminal from the bus: escaped, whoever chose the bytes.

Unit level: the escaping itself, tail's lines and the live view's rendering
with hostile values in every field a user or a host on the bus controls.
The same attack done for real (a user's file names and argv, through the
kernel and the collector) is in tests/test_terminal_injection.py.
"""

from __future__ import annotations

import io
import re
import unicodedata

from rich.console import Console

from snoopbus.app.live import ChildView, LiveState
from snoopbus.consumers.lines import format_alert, format_event, to_json
from snoopbus.consumers.printable import UNSAFE, printable
from snoopbus.proto import encode_batch

# A window title, a cleared screen, a colour, a bidi override that reverses
# what follows, a line separator, rich markup (and markup that would not
# parse), a byte that is not UTF-8, a C1 CSI.
HOSTILE = "\x1b]2;pwned\x07\x1b[2J\x1b[31m[red]x[/]\u202etxt.exe\u2028\udcff\x9b1m"
SHOWN = "\\x1b]2;pwned\\x07\\x1b[2J\\x1b[31m[red]x[/]\\u202etxt.exe\\u2028\\xff\\x9b1m"
_SGR = re.compile(r"\x1b\[[0-9;]*m")  # what rich and tail add themselves: colours


def test_unsafe_is_exactly_the_control_format_and_separator_characters() -> None:
    """The written-out class matches this Python's Unicode database, both ways."""
    wanted = {"Cc", "Cf", "Cs", "Zl", "Zp"}
    for code in range(0x110000):
        ch = chr(code)
        assert bool(UNSAFE.fullmatch(ch)) == (unicodedata.category(ch) in wanted), hex(code)


def test_printable_shows_every_unsafe_character_as_an_escape() -> None:
    assert printable(HOSTILE) == SHOWN
    assert printable("/srv/é/✓ plain") == "/srv/é/✓ plain"  # letters of any script stay
    assert printable("\U000e0041\ud800") == "\\U000e0041\\ud800"
    assert not UNSAFE.search(printable(HOSTILE))


def hostile_event(type_: str) -> dict:
    """Valid as an event (the schema checks types, not text): every text field hostile."""
    return {
        "v": 1, "id": "x-1", "ts": 1_700_000_000_000_000_000, "host": f"h{HOSTILE}",
        "type": type_, "signal": 9, "cookie": 3,
        "proc": {"pid": 7, "ppid": 1, "uid": 0, "comm": HOSTILE, "exe": f"/t/{HOSTILE}",
                 "cwd": HOSTILE, "argv": [HOSTILE, "-c", HOSTILE], "container": HOSTILE},
        "file": {"path": f"/t/{HOSTILE}", "old_path": HOSTILE, "target": HOSTILE},
    }  # fmt: skip


def test_tail_lines_escape_every_field() -> None:
    for type_ in ("exec", "exit", "renamed", "symlink"):
        line = format_event(hostile_event(type_))
        assert not UNSAFE.search(line), (type_, line)
        assert SHOWN in line
    # An alert has no schema: any field may hold anything.
    event = {**hostile_event("create"), "type": HOSTILE, "proc": {"pid": HOSTILE}}
    alert = {"v": 1, "ts": HOSTILE, "host": HOSTILE, "level": HOSTILE, "count": HOSTILE,
             "rule": {"title": HOSTILE, "tags": [f"attack.t{HOSTILE}"]}, "folded": True,
             "selections": [HOSTILE], "event": event}  # fmt: skip
    line = format_alert(alert)
    assert not UNSAFE.search(line) and SHOWN in line
    assert format_alert({"rule": "not a map", "event": ["nor this"]})  # no crash either
    assert not UNSAFE.search(to_json(alert))  # --json escapes too (as \u escapes)


def rendered(state: LiveState) -> str:
    """The view as a colour terminal gets it, rich's own colour codes removed."""
    out = io.StringIO()
    Console(file=out, width=240, force_terminal=True, color_system="standard").print(
        state.render(10.0)
    )
    return _SGR.sub("", out.getvalue())


def test_live_view_shows_hostile_values_as_text() -> None:
    state = LiveState(host=f"h{HOSTILE}", url="nats://x", state_dir=f"/s{HOSTILE}", started=0.0)
    state.children = [ChildView("collector", 11, "running")]
    ev = hostile_event("create")
    state.on_events(f"snoopbus.events.h.file.{HOSTILE}", encode_batch([ev]), now=9.5)
    state.on_meta("status", {"state": "ready", "startup_s": 1.0})
    state.on_meta("loss", {"total": 1, "dropped": {HOSTILE: 1}})
    state.on_alert({"level": HOSTILE, "ts": 0, "rule": {"title": f"[bold]{HOSTILE}"},
                    "event": ev})  # fmt: skip
    state.on_alert({"level": "high", "rule": "not a map", "event": "nor this"})
    state.notes.append(f"a child's log line: {HOSTILE}")
    shown = rendered(state)
    assert not UNSAFE.search(shown.replace("\n", "")), repr(shown)
    # Recognisable: escaped, and markup printed as written (a cell may be cut
    # short with an ellipsis, so look for a prefix).
    assert SHOWN in shown  # the alert title, the note
    assert "[red]x[/]" in shown and "[bold]" in shown
    assert "\\x1b]2;pwned" in shown.split("top processes")[1].split("latest alerts")[0]


def test_query_table_and_tree_show_hostile_values_as_text() -> None:
    from snoopbus.consumers.archive.render import command, write_table

    row = {"ts": 1_700_000_000_000_000_000, "host": HOSTILE, "type": "renamed", "proc_pid": 7,
           "proc_comm": HOSTILE, "file_path": f"/t/{HOSTILE}", "file_old_path": HOSTILE}
    for plain in (True, False):  # plain columns, and rich's table
        out = io.StringIO()
        write_table([row, {**row, "type": "exec", "proc_argv": [HOSTILE, "[/]"]}], out, plain)
        text = _SGR.sub("", out.getvalue())
        assert not UNSAFE.search(text.replace("\n", "")), repr(text)
        # rich may fold or cut long cells: the start of the name, escaped, is there
        assert (SHOWN if plain else SHOWN[:24]) in text and "'[/]'" in text
    assert command({"proc_argv": [HOSTILE]}) == f"'{SHOWN}'"
