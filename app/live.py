"""What `snoopbus up` shows: a model fed from the bus, and its rich rendering.

`LiveState` takes what a core subscription sees (events, alerts, meta) and
what JetStream says about each durable (lag), and keeps only small rolling
summaries, so `up` stays cheap while the collector publishes 100k events/s:
events are counted from the msgpack array header without decoding, and only
a few messages a second are decoded for the top-processes table.

Everything shown that came from the bus or from a child (subjects, host
names, alert titles, paths, comm, loss reasons, log lines) goes through
`printable` and into rich as `Text`, never as a markup string: an escape
sequence or a `[red]` in a file name is shown as written, not obeyed.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from snoopbus.collector.stream_watch import StreamView
from snoopbus.consumers.lines import clock, printable, shown, submap
from snoopbus.proto import DecodeError, SchemaError, decode_batch
from snoopbus.proto.stream_limits import human_bytes

RATE_WINDOW = 5  # s of history behind "events/s"
SAMPLES_PER_SECOND = 20  # event messages decoded per second for the top-processes table
LEVEL_STYLE = {"critical": "bold white on red", "high": "bold red", "medium": "yellow",
               "low": "cyan", "informational": "dim"}  # fmt: skip


def batch_size(payload: bytes) -> int:
    """Events in a message, from its msgpack array header (1 if it is not an array)."""
    if not payload:
        return 0
    first = payload[0]
    if 0x90 <= first <= 0x9F:
        return first & 0x0F
    if first == 0xDC and len(payload) >= 3:
        return int.from_bytes(payload[1:3], "big")
    if first == 0xDD and len(payload) >= 5:
        return int.from_bytes(payload[1:5], "big")
    return 1


@dataclass
class ChildView:
    name: str
    pid: int | None = None
    state: str = "starting"
    restarts: int = 0


@dataclass
class LiveState:
    host: str
    url: str
    state_dir: str
    started: float = field(default_factory=time.monotonic)
    totals: Counter[str] = field(default_factory=Counter)
    # (whole second, type) -> events, for the last RATE_WINDOW seconds
    _seconds: dict[int, Counter[str]] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    lost_total: int = 0
    collector_ready_s: float | None = None
    collector_since: float = field(default_factory=time.monotonic)
    alerts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=6))
    alerts_total: int = 0
    top: Counter[tuple[str, int]] = field(default_factory=Counter)
    last_path: dict[tuple[str, int], str] = field(default_factory=dict)
    lag: dict[str, tuple[int, int]] = field(default_factory=dict)
    stream: StreamView | None = None  # the last reading of the stream (collector/stream_watch.py)
    children: list[ChildView] = field(default_factory=list)
    notes: deque[str] = field(default_factory=lambda: deque(maxlen=4))
    # the collector's last word on publishing: its report when stalled, else None
    stalled: dict[str, Any] | None = None
    _sampled: tuple[int, int] = (0, 0)  # (second, messages decoded in it)

    # -- feeding ----------------------------------------------------------

    def on_events(self, subject: str, payload: bytes, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        type_ = subject.rsplit(".", 1)[-1]
        n = batch_size(payload)
        self.totals[type_] += n
        second = int(now)
        self._seconds.setdefault(second, Counter())[type_] += n
        for old in [s for s in self._seconds if s <= second - RATE_WINDOW - 1]:
            del self._seconds[old]
        if ".file." in subject:
            self._sample(payload, second)

    def _sample(self, payload: bytes, second: int) -> None:
        at, used = self._sampled
        if at == second and used >= SAMPLES_PER_SECOND:
            return
        self._sampled = (second, used + 1 if at == second else 1)
        try:
            events = decode_batch(payload)
        except (DecodeError, SchemaError):
            return
        for ev in events:
            proc = ev.get("proc") or {}
            pid = proc.get("pid", 0)
            key = (shown(proc.get("comm", "?")), pid if isinstance(pid, int) else 0)
            self.top[key] += 1
            path = (ev.get("file") or {}).get("path")
            if path:
                self.last_path[key] = shown(path)
        if len(self.top) > 5000:  # bounded: keep the busiest
            self.top = Counter(dict(self.top.most_common(500)))
            self.last_path = {k: v for k, v in self.last_path.items() if k in self.top}

    def on_alert(self, alert: Mapping[str, Any]) -> None:
        self.alerts.append(dict(alert))
        self.alerts_total += 1

    def on_meta(self, what: str, body: Mapping[str, Any]) -> None:
        if what in ("status", "heartbeat") and "stalled" in body:
            self.stalled = dict(body) if body["stalled"] else None
        if what == "status" and body.get("state") == "ready":
            self.collector_ready_s = float(body.get("startup_s", 0.0))
        elif what == "status" and body.get("state") == "stopped":
            self.stalled = None
            self.collector_ready_s = None
            self.collector_since = time.monotonic()
        elif what == "loss":
            self.lost = {str(k): int(v) for k, v in (body.get("dropped") or {}).items()}
            self.lost_total = int(body.get("total", sum(self.lost.values())))

    def on_stream(self, reading: StreamView) -> list[str]:
        """A new reading; returns the warnings that were not there in the last one."""
        before = set(self.stream.warnings) if self.stream is not None else set()
        self.stream = reading
        self.lag.update(reading.lag)
        return [w for w in reading.warnings if w not in before]

    def stall_line(self) -> str | None:
        """One line saying the collector is stalled, or None while it publishes."""
        if self.stalled is None:
            return None
        error = printable(str(self.stalled.get("last_error") or "none"))
        return (f"collector stalled: events captured and none published for "
                f"{float(self.stalled.get('stalled_s', 0)):.0f}s (last error: {error})")

    def collector_restarted(self) -> None:
        self.collector_ready_s = None
        self.collector_since = time.monotonic()

    # -- figures ----------------------------------------------------------

    def rates(self, now: float | None = None) -> dict[str, float]:
        """events/s by type over the last RATE_WINDOW whole seconds."""
        second = int(time.monotonic() if now is None else now)
        total: Counter[str] = Counter()
        for s, counts in self._seconds.items():
            if second - RATE_WINDOW <= s < second:
                total.update(counts)
        return {t: n / RATE_WINDOW for t, n in total.items()}

    # -- rendering --------------------------------------------------------

    def render(self, now: float | None = None) -> RenderableType:
        now = time.monotonic() if now is None else now
        up = int(now - self.started)
        head = Text.assemble(
            ("snoopbus up", "bold"), f"  host {printable(self.host)} · {printable(self.url)} · up "
            f"{up // 3600:02d}:{up % 3600 // 60:02d}:{up % 60:02d} · "
            f"state {printable(self.state_dir)}",
            no_wrap=True, overflow="ellipsis",
        )  # fmt: skip
        if self.collector_ready_s is None:
            waited = now - self.collector_since
            progress: RenderableType = Spinner(
                "dots", Text(f"compiling and loading the eBPF probes ... {waited:.1f}s",
                             style="yellow"),
            )  # fmt: skip
        else:
            progress = Text(f"✔ collector ready (probes loaded in {self.collector_ready_s:.2f}s)",
                            style="green")  # fmt: skip
        stall = self.stall_line()
        if stall is not None:
            progress = Group(progress, Text(f"✖ {stall}", style="bold red"))
        for warning in self.stream.warnings if self.stream is not None else ():
            progress = Group(progress, Text(f"⚠ {warning}", style="bold yellow"))
        grid = Table.grid(padding=(0, 2))
        grid.add_row(self._rates_table(now), Group(self._children_table(), self._loss_line()))
        return Group(
            head, progress,
            *(Text(printable(note), style="magenta", no_wrap=True, overflow="ellipsis")
              for note in self.notes),
            grid, self._top_table(), self._alerts_panel(),
            Text("Ctrl-C stops everything · `snoopbus tail` in another terminal for every event"
                 f" · child logs in {printable(self.state_dir)}/logs", style="dim"),
        )  # fmt: skip

    def _rates_table(self, now: float) -> Table:
        t = Table(title="events/s by type", title_justify="left", expand=False)
        t.add_column("type")
        t.add_column("/s", justify="right")
        t.add_column("total", justify="right")
        rates = self.rates(now)
        for type_, total in sorted(self.totals.items(), key=lambda kv: -kv[1])[:12]:
            t.add_row(Text(printable(type_)), f"{rates.get(type_, 0.0):,.1f}", f"{total:,}")
        if not self.totals:
            t.add_row("(none yet)", "", "")
        return t

    def _children_table(self) -> Table:
        t = Table(title="processes and consumer lag", title_justify="left")
        t.add_column("name", no_wrap=True)
        t.add_column("pid", justify="right", no_wrap=True)
        t.add_column("state", no_wrap=True)
        t.add_column("restarts", justify="right", no_wrap=True)
        t.add_column("lag", justify="right", no_wrap=True)
        t.add_column("missed", justify="right", no_wrap=True)  # removed by retention unread
        missed = self.stream.missed if self.stream is not None else {}
        for c in self.children:
            pending, acking = self.lag.get(c.name, (-1, -1))
            lag = "" if pending < 0 else f"{pending:,}"
            if acking > 0:
                lag += f" (+{acking} unacked)"
            style = "green" if c.state == "running" else "yellow"
            lost = missed.get(c.name, 0)
            t.add_row(Text(c.name), str(c.pid or ""), Text(c.state, style=style), str(c.restarts),
                      lag, Text(f"{lost:,}" if lost else "", style="bold red"))  # fmt: skip
        if self.stream is not None:
            s = self.stream
            held = f"{human_bytes(s.bytes)} of {human_bytes(s.max_bytes)}"
            free = f", {human_bytes(s.free)} free on disk" if s.free >= 0 else ""
            t.caption = f"stream: {s.messages:,} messages, {held}{free}"
        return t

    def _loss_line(self) -> Text:
        if not self.lost_total:
            return Text("loss: none", style="green")
        parts = ", ".join(f"{printable(k)}={v:,}" for k, v in sorted(self.lost.items()) if v)
        return Text(f"loss: {self.lost_total:,} events ({parts})", style="bold red")

    def _top_table(self) -> Table:
        t = Table(
            title="top processes by file activity (sampled)", title_justify="left", expand=True
        )
        # The short columns keep their width (a comm is at most 15 bytes); the
        # path takes what is left and is cut with an ellipsis.
        t.add_column("comm", no_wrap=True, min_width=15)
        t.add_column("pid", justify="right", no_wrap=True, min_width=7)
        t.add_column("file events", justify="right", no_wrap=True, min_width=11)
        t.add_column("last path", overflow="ellipsis", no_wrap=True, ratio=1)
        for (comm, pid), n in self.top.most_common(5):
            t.add_row(Text(comm), str(pid), f"{n:,}", Text(self.last_path.get((comm, pid), "")))
        if not self.top:
            t.add_row("(no file events yet)", "", "", "")
        return t

    def _alerts_panel(self) -> Panel:
        lines = Text()
        for alert in reversed(self.alerts):
            level = shown(alert.get("level", "?"))
            rule = shown(submap(alert, "rule").get("title", "?"))
            proc = submap(submap(alert, "event"), "proc")
            lines.append(f"{clock(alert.get('ts', 0))} ")
            lines.append(f"{level.upper():<8}", style=LEVEL_STYLE.get(level, ""))
            if alert.get("category") == "snoopbus_host":  # host health: about a host
                lines.append(f" {rule}  host {shown(alert.get('host', '?'))}\n")
                continue
            lines.append(f" {rule}  pid={shown(proc.get('pid', '?'))} "
                         f"{shown(proc.get('exe', ''))}\n")  # fmt: skip
        if not self.alerts:
            lines.append("no alerts yet", style="dim")
        lines.rstrip()
        return Panel(lines, title=f"latest alerts ({self.alerts_total} in all)",
                     title_align="left")  # fmt: skip
