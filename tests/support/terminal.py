"""What a colour terminal shows of the live view."""

from __future__ import annotations

import io
import re

from rich.console import Console

from snoopbus.app.live import LiveState

SGR = re.compile(r"\x1b\[[0-9;]*m")  # what rich and tail add themselves: colours


def rendered(state: LiveState) -> str:
    """The view as a colour terminal gets it, rich's own colour codes removed."""
    out = io.StringIO()
    Console(file=out, width=240, force_terminal=True, color_system="standard").print(
        state.render(10.0)
    )
    return SGR.sub("", out.getvalue())
