"""`snoopbus up`: the embedded stack on one host.

A private nats-server with JetStream in the state folder (or the one already
answering on the port), then the collector and the built-in consumers as
supervised child processes: one that dies is restarted with back-off and
reported. Ctrl-C, SIGTERM or a closed terminal (SIGHUP) stops them all,
children first, and nothing is left running. Children and the server run in their own sessions, so a
terminal's Ctrl-C reaches only `up`, which stops them in order.

On a terminal, `up` shows a live view (app/live.py) fed from the bus
itself: a core subscription to events, alerts and meta, and JetStream
consumer_info for each consumer's lag. Children then log to
<state_dir>/logs/NAME.log. Elsewhere (a pipe, systemd) it prints plain lines
and the children log to its stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from snoopbus.app.leftovers import UpRecord, UpRunning, die_with_parent, stop_leftovers
from snoopbus.app.live import ChildView, LiveState
from snoopbus.app.natsd import NatsServer, NatsServerError, config_args
from snoopbus.app.stack_auth import AuthError, StackAuth
from snoopbus.app.stack_metrics import serve_stack
from snoopbus.collector.stream_watch import choose_max_mb, read_stream
from snoopbus.proto import (
    BusUnavailable,
    DecodeError,
    NatsAuth,
    SchemaError,
    alerts_filter,
    connect,
    decode_map,
    ensure_stream,
    events_filter,
    exits,
    local_stack,
    meta_filter,
    roles,
)
from snoopbus.proto.metrics_server import MetricsError
from snoopbus.proto.settings_file import Config, StreamSection, UpSection, env_name
from snoopbus.proto.stream_limits import StreamLimits

DEFAULT_STATE_DIR = Path(UpSection.state_dir)
EMBEDDED_PORT = UpSection.port
# Built-in consumers `up` runs with their defaults ([up] consumers).
DEFAULT_CONSUMERS = UpSection.consumers
LAG_EVERY = 2.0  # s between consumer_info calls for the lag column
SERVER_STOP = 3.0  # s of the stop deadline kept for nats-server, after the children


class StackError(RuntimeError):
    """A condition the user must fix; the message says how; `exit_code` from exits."""

    def __init__(self, message: str, exit_code: int = exits.USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path = DEFAULT_STATE_DIR
    port: int = EMBEDDED_PORT
    host: str | None = None
    consumers: tuple[str, ...] = DEFAULT_CONSUMERS
    config_path: Path | None = None  # handed to every child, so they read the same file
    metrics_port: int = 0  # children get metrics_port+1, +2, ... (0: no metrics)
    metrics_address: str = "127.0.0.1"
    live: str = "auto"
    stop_timeout: float = UpSection.stop_timeout  # s from Ctrl-C to everything stopped
    archive_dir_set: bool = False  # [consumer.archive] dir given: do not override it
    spill_dir_set: bool = False  # [collector] spill_dir given: else it is state_dir/spill
    # The collector leaves out the state folder (NATS store, archive, logs): what
    # the stack writes itself would otherwise come back as events, forever.
    collector_excludes: tuple[str, ...] = ()
    forward_sinks: tuple[str, ...] = ()  # durable names of the forwarder's sinks
    stream: StreamSection = field(default_factory=StreamSection)  # [stream]: limits, warning
    stream_chosen: bool = False  # a [stream] limit was set: applied to an existing stream too

    @classmethod
    def from_config(cls, cfg: Config) -> StackConfig:
        return cls(
            state_dir=Path(cfg.up.state_dir), port=cfg.up.port,
            host=cfg.collector.host or None, consumers=with_forwarding(cfg),
            config_path=cfg.path, metrics_port=cfg.metrics.port,
            metrics_address=cfg.metrics.address, live=cfg.up.live,
            stop_timeout=cfg.up.stop_timeout,
            archive_dir_set="dir" in cfg.consumer.get("archive", {}),
            spill_dir_set=cfg.source("collector.spill_dir") != "default",
            collector_excludes=cfg.collector.exclude_path,
            forward_sinks=forward_durables(cfg), stream=cfg.stream,
            stream_chosen=StreamLimits.from_section(cfg.stream, cfg.sources).enforce,
        )  # fmt: skip

    @property
    def host_name(self) -> str:
        return self.host or socket.gethostname()

    @property
    def archive_dir(self) -> Path:
        return self.state_dir / "archive"

    def roles(self) -> list[roles.Role]:
        """Who may do what on the embedded server: the collector, each consumer, reader, admin."""
        consumers = [(n, ("forward", *self.forward_sinks) if n == "forward" else ())
                     for n in self.consumers]
        return roles.stack_roles(self.host_name, consumers)

    def consumer_args(self, name: str, url: str) -> list[str]:
        extra = []
        if name == "archive" and not self.archive_dir_set:
            extra = ["--dir", str(self.archive_dir)]
        if name == "alert":  # its credentials let it read this host's meta only
            extra = ["--watch-host", self.host_name]
        return ["consume", *self._config_args(), name, "--nats", url, *extra]

    def collector_args(self, url: str) -> list[str]:
        host = ["--host", self.host] if self.host else []
        # A flag replaces the file's list: repeat the file's entries.
        excludes = [*self.collector_excludes, str(self.state_dir.resolve())]
        exclude = [a for p in excludes for a in ("--exclude-path", p)]
        spill = [] if self.spill_dir_set else ["--spill-dir", str(self.state_dir / "spill")]
        return ["collect", *self._config_args(), "--nats", url, *host, *exclude, *spill]

    def _config_args(self) -> list[str]:
        return ["--config", str(self.config_path)] if self.config_path else []

    def children(self, url: str) -> list[Child]:
        """The collector, then each consumer; with metrics on, each its own port."""
        specs = [("collector", self.collector_args(url))]
        specs += [(name, self.consumer_args(name, url)) for name in self.consumers]
        out = []
        for i, (name, args) in enumerate(specs, start=1):
            if self.metrics_port:
                # `consume` takes runtime flags after NAME; `collect` anywhere.
                args = [*args, "--metrics-port", str(self.metrics_port + i)]
            out.append(Child(name, args))
        return out


def forward_durables(cfg: Config) -> tuple[str, ...]:
    """The durable of each sink [consumer.forward] `to` lists (none if it lists none)."""
    from snoopbus.consumers.forward.spec import SpecError, parse_spec

    to = cfg.consumer.get("forward", {}).get("to", [])
    try:
        return tuple(parse_spec(t).consumer_name for t in to if isinstance(t, str))
    except SpecError:
        return ()  # the forwarder says what is wrong when it starts


def with_forwarding(cfg: Config) -> tuple[str, ...]:
    """[up] consumers, plus the forwarder once it is configured ([consumer.forward])."""
    if "forward" in cfg.consumer and "forward" not in cfg.up.consumers:
        return (*cfg.up.consumers, "forward")
    return cfg.up.consumers


def nats_answering(port: int) -> bool | None:
    """True if a NATS server answers on the loopback port, False if something
    else does, None if nothing listens."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(1)
            first = s.recv(4096)
    except ConnectionRefusedError:
        return None
    except OSError:
        return False
    if not first.startswith(b"INFO "):
        return False
    try:
        return bool(json.loads(first[5:].split(b"\r\n", 1)[0]).get("jetstream"))
    except ValueError:
        return False


Report = Callable[[str], None]


@dataclass
class Child:
    """One supervised process: restarted with back-off when it dies."""

    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0  # for the back-off; reset once stable
    deaths: int = 0  # in all, for metrics
    next_start: float = 0.0
    started_at: float = field(default=0.0)
    log_path: Path | None = None  # None: inherit up's stdout and stderr
    record: UpRecord | None = None  # where the next `up` finds it, had this one died
    env: dict[str, str] | None = None  # None: up's own environment

    def start(self) -> None:
        command = [sys.executable, "-m", "snoopbus.app", *self.args]
        out: IO[bytes] | None = None
        if self.log_path is not None:
            out = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True, preexec_fn=die_with_parent(), env=self.env,
            )  # fmt: skip
        finally:
            if out is not None:
                out.close()
        self.started_at = time.monotonic()
        if self.record is not None:
            self.record.started(self.name, self.process.pid)

    def check(self, now: float, report: Report) -> bool:
        """Start or restart as due; True when it has just died."""
        if self.process is None:
            if now >= self.next_start:
                self.start()
            return False
        code = self.process.poll()
        if code is None:
            if now - self.started_at > 60:
                self.restarts = 0  # stable again: back-off starts over
            return False
        delay = min(2.0**self.restarts, 30.0)
        self.restarts += 1
        self.deaths += 1
        why = self.last_log_line()
        report(f"{self.name} exited with {code}; restarting in {delay:.0f}s"
               + (f" (last log line: {why})" if why else ""))  # fmt: skip
        self.process = None
        self.next_start = now + delay
        return True

    def last_log_line(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(max(0, self.log_path.stat().st_size - 2048))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1].strip()[:200] if lines else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        """Until it exits, or `timeout` s; then it is killed (a hung child must
        not keep `up` from stopping)."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


def run_stack(cfg: StackConfig) -> int:
    try:
        return asyncio.run(_run_stack(cfg))
    except (StackError, NatsServerError, MetricsError, UpRunning, AuthError) as exc:
        return exits.fail("up", exc)


def check_consumers(cfg: StackConfig) -> None:
    """Every consumer to run is installed: else it would die at start, forever."""
    from snoopbus.consumers.plugin import plugins

    installed = plugins()
    for name in cfg.consumers:
        if name not in installed:
            raise StackError(
                f"[up] consumers: no consumer named {name!r} is installed "
                f"(installed: {', '.join(installed)}; see `snoopbus consume --list`)"
            )


def check_metrics_ports(cfg: StackConfig) -> None:
    """The metrics ports must be free: else each child would die at start, forever."""
    if not cfg.metrics_port:
        return
    names = ["up", "collector", *cfg.consumers]
    for i, name in enumerate(names):
        port = cfg.metrics_port + i
        with socket.socket() as s:
            try:
                s.bind((cfg.metrics_address, port))
            except OSError:
                raise StackError(
                    f"metrics port {port} (for {name}: --metrics-port {cfg.metrics_port} + {i}) "
                    "is in use: pick another --metrics-port or [metrics] port, or 0 for none",
                    exits.BUSY,
                ) from None


def secure_state_dir(path: Path) -> None:
    """The state folder, created or tightened to 0700 and ours: it holds the
    NATS store (every event), the archive and the logs.

    A folder (or a symbolic link to one) that another user owns is refused:
    they could read or swap what `up` writes there, and following their link
    would chmod whatever it points to.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    me = os.geteuid()
    link, st = os.lstat(path), os.stat(path)
    owner = link.st_uid if stat.S_ISLNK(link.st_mode) and link.st_uid != me else st.st_uid
    if owner != me:
        raise StackError(
            f"state folder {path} belongs to uid {owner}, not {me}: another user could read "
            "or change the stack's data there; remove it, or pick another with --state-dir "
            "or [up] state_dir"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise StackError(f"state folder {path} is not a folder: pick another with --state-dir")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def use_live_view(mode: str) -> bool:
    return mode == "on" or (mode == "auto" and sys.stdout.isatty())


async def _run_stack(cfg: StackConfig) -> int:
    if os.geteuid() != 0:
        raise StackError(
            "the collector loads eBPF probes: run `snoopbus up` as root (sudo snoopbus up)",
            exits.PRIVILEGE,
        )
    check_consumers(cfg)
    check_metrics_ports(cfg)
    live = use_live_view(cfg.live)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP too: the children run in sessions of their own, so a closed terminal
    # would otherwise kill `up` alone and leave them running.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    server: NatsServer | None = None
    secure_state_dir(cfg.state_dir)
    say = _say(live)
    # Before looking at the port: a dead `up`'s orphaned server may hold it.
    await asyncio.to_thread(stop_leftovers, cfg.state_dir, say)
    record = UpRecord(cfg.state_dir)
    state = nats_answering(cfg.port)
    if state is False:
        raise StackError(
            f"port {cfg.port} is in use by something that is not a NATS server with "
            "JetStream: free it, or pick another with --port or [up] port",
            exits.BUSY,
        )
    auth: StackAuth | None = None
    if state is True:
        url = f"nats://127.0.0.1:{cfg.port}"
        say(f"using the nats-server already running at {url} (with its own credentials)")
    else:
        auth = StackAuth.in_state_dir(cfg.state_dir)
        server, url = start_server(cfg, auth)
        if server.process is not None:
            record.started("nats-server", server.process.pid)
        say(f"nats-server with JetStream at {url} (data in {cfg.state_dir}, "
            f"credentials in {auth.auth_dir})")
    # Our admin creates (or updates) the stream with these limits; the children
    # get them too ([stream] via their env), for a server that is not ours.
    env, chosen = choose_max_mb(cfg.state_dir, cfg.stream)
    os.environ.update(env)
    say(chosen)
    children = cfg.children(url)
    if auth is not None:
        roles_by_consumer = {r.name: r.name for r in cfg.roles()}
        for child in children:
            role = roles.collector(cfg.host_name).name if child.name == "collector" else child.name
            child.env = auth.env(roles_by_consumer.get(role, "admin"))
    if live:
        (cfg.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        for child in children:
            child.log_path = cfg.state_dir / "logs" / f"{child.name}.log"
    view = LiveState(host=cfg.host or socket.gethostname(), url=url, state_dir=str(cfg.state_dir))
    view.children = [ChildView(c.name) for c in children]
    for child in children:
        child.record = record
    view.notes.append(chosen)
    monitor: asyncio.Task[None] | None = None
    metrics = None
    descriptor: Path | None = None
    try:
        if auth is not None:
            await create_stream(url, auth, stack_limits(cfg, env))
            descriptor = publish_descriptor(cfg, url, auth)
        if cfg.metrics_port:  # up's own: its children and what it sees on the bus
            metrics = serve_stack(children, view.totals, cfg.metrics_port, cfg.metrics_address,
                                  lambda: view.stream)
        for child in children:
            child.start()
        names = ", ".join(c.name for c in children)
        say(f"started {names}; watch with `snoopbus tail`; Ctrl-C stops")
        reader = auth.nats_auth("reader") if auth is not None else None
        monitor = asyncio.create_task(watch_bus(url, view, cfg, live, stop, reader))
        await _supervise(children, view, stop, live)
        return 0
    finally:
        # Bounded whatever hangs: children get until the deadline, then SIGKILL.
        deadline = time.monotonic() + cfg.stop_timeout
        if monitor is not None:
            stop.set()  # an error may have brought us here
            # It ends on `stop` and drains its connection before nats-server goes: a
            # cancel would cut the drain short, and the server's exit then logged
            # "disconnected; reconnecting" warnings at every Ctrl-C. Bounded: the
            # stop as a whole must end within [up] stop_timeout.
            _, pending = await asyncio.wait({monitor}, timeout=2)
            if pending:  # never hang the children's stop on it
                monitor.cancel()
                await asyncio.wait({monitor}, timeout=1)
        for child in children:
            child.stop()
        left = max(deadline - time.monotonic() - SERVER_STOP, 1.0)
        await asyncio.gather(*(asyncio.to_thread(c.wait, left) for c in children))
        if server is not None:
            await asyncio.to_thread(server.stop, timeout=SERVER_STOP)
        record.clear()
        if metrics is not None:
            metrics.stop()
        if descriptor is not None:
            local_stack.remove(os.getpid(), descriptor)
        print("snoopbus: stopped", flush=True)


def start_server(cfg: StackConfig, auth: StackAuth) -> tuple[NatsServer, str]:
    """Our nats-server, with authentication on: each role as proto/roles.py says."""
    conf = config_args(auth.auth_dir / "nats-server.conf", auth.server_config(cfg.roles()))
    server = NatsServer(state_dir=cfg.state_dir / "nats", port=cfg.port, new_session=True,
                        die_with_parent=True, extra_args=conf)
    # In this thread (not a pool's): its /proc children list shows the server.
    return server, server.start()


def stack_limits(cfg: StackConfig, env: dict[str, str]) -> StreamLimits:
    """[stream] with the size `up` chose (`env`, empty when [stream] max_mb is set)."""
    section = cfg.stream
    if env:
        section = replace(section, max_mb=int(env[env_name("stream", "max_mb")]))
    return replace(StreamLimits.from_section(section), enforce=cfg.stream_chosen or bool(env))


async def create_stream(url: str, auth: StackAuth, limits: StreamLimits | None = None) -> None:
    """As admin, the one role allowed to: the children only look it up."""
    try:
        nc = await connect(url, name="snoopbus-up", auth=auth.nats_auth("admin"))
    except BusUnavailable as exc:
        raise StackError(f"cannot reach the nats-server just started: {exc}") from None
    try:
        await ensure_stream(nc.jetstream(), limits=limits)
    finally:
        await nc.close()


def publish_descriptor(cfg: StackConfig, url: str, auth: StackAuth) -> Path | None:
    """Where `tail`, `consume`, `doctor`, `query` run as root find this stack."""
    stack = local_stack.LocalStack(
        url=url, state_dir=str(cfg.state_dir.resolve()), archive_dir=str(cfg.archive_dir.resolve()),
        auth_dir=str(auth.auth_dir.resolve()), pid=os.getpid())
    try:
        return local_stack.write(stack)
    except OSError as exc:
        logging.getLogger(__name__).warning(
            "cannot write %s (%s): other commands need --nats and credentials to reach this "
            "stack", local_stack.descriptor_path(), exc)
        return None


def _say(live: bool) -> Report:
    def say(text: str) -> None:
        if not live:
            print(f"snoopbus: {text}", flush=True)

    return say


async def _supervise(
    children: list[Child], view: LiveState, stop: asyncio.Event, live: bool
) -> None:
    def report(text: str) -> None:
        if live:
            view.notes.append(f"{time.strftime('%H:%M:%S')} {text}")
        else:
            print(f"snoopbus: {text}", file=sys.stderr, flush=True)

    display: Any = None
    root_handlers = logging.getLogger().handlers[:]
    if live:
        from rich.console import Console
        from rich.live import Live

        # Log lines written to stderr would smear the dashboard: warnings go to
        # its notes instead, and the view itself shows what INFO lines would say.
        logging.getLogger().handlers = [_NotesHandler(view.notes)]

        # The alternate screen: a dashboard that leaves the terminal as it was.
        display = Live(view.render(), console=Console(), auto_refresh=False, screen=True,
                       redirect_stderr=False)  # fmt: skip
        display.start()
    try:
        while not stop.is_set():
            now = time.monotonic()
            for child, shown in zip(children, view.children, strict=True):
                if child.check(now, report) and child.name == "collector":
                    view.collector_restarted()
                shown.pid = child.pid
                shown.restarts = child.restarts
                wait = child.next_start - now
                shown.state = "running" if child.pid else f"restart in {wait:.0f}s"
            if display is not None:
                display.update(view.render(), refresh=True)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        if display is not None:
            display.stop()
        logging.getLogger().handlers = root_handlers


class _NotesHandler(logging.Handler):
    """Log records (warnings and worse) shown in the live view's notes."""

    def __init__(self, notes: Any) -> None:
        super().__init__(logging.WARNING)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        self.notes.append(f"{time.strftime('%H:%M:%S')} {record.getMessage()}")


async def watch_bus(
    url: str, view: LiveState, cfg: StackConfig, live: bool, stop: asyncio.Event,
    auth: NatsAuth | None = None,
) -> None:
    """Feeds the view from the bus until `stop`; in plain mode prints readiness and alerts."""
    from snoopbus.consumers.alert.wire import decode_alert
    from snoopbus.consumers.lines import format_alert, shown

    try:
        nc: Client = await connect(url, name="snoopbus-up", auth=auth)
    except BusUnavailable as exc:
        view.notes.append(f"live view: {exc}")
        return

    async def on_event(msg: Msg) -> None:
        view.on_events(msg.subject, msg.data)

    async def on_alert(msg: Msg) -> None:
        try:
            alert = decode_alert(msg.data)
        except (DecodeError, SchemaError, ValueError):
            return
        view.on_alert(alert)
        if not live:
            print(format_alert(alert), flush=True)

    async def on_meta(msg: Msg) -> None:
        try:
            body = decode_map(msg.data)
        except (DecodeError, SchemaError):
            return
        what = msg.subject.rsplit(".", 1)[-1]
        was_ready = view.collector_ready_s is not None
        was_stalled = view.stalled is not None
        view.on_meta(what, body)
        host = shown(body.get("host", "?"))
        if not live and not was_ready and view.collector_ready_s is not None:
            print(f"snoopbus: collector ready on {host} "
                  f"in {view.collector_ready_s:.2f}s", flush=True)  # fmt: skip
        stall = view.stall_line()
        if not live and was_stalled != (stall is not None) and body.get("state") != "stopped":
            print(f"snoopbus: {stall} on {host}" if stall is not None
                  else f"snoopbus: collector publishing again on {host}", flush=True)

    try:
        await nc.subscribe(events_filter(), cb=on_event)
        await nc.subscribe(alerts_filter(), cb=on_alert)
        await nc.subscribe(meta_filter(), cb=on_meta)
        js = nc.jetstream()
        # Ends on `stop`, not only on cancel: Python 3.11's wait_for (inside nats-py's
        # requests) can swallow a cancel that lands as the reply does, and `up` then
        # waited on this task forever with its children running.
        while not stop.is_set():
            with suppress(NotFoundError, TimeoutError, Exception):  # the stream may not exist yet
                reading = await read_stream(js, cfg.consumers, state_dir=cfg.state_dir,
                                            warn_percent=cfg.stream.warn_percent)  # fmt: skip
                for warning in view.on_stream(reading):  # new ones; the live view shows all
                    if not live:
                        print(f"snoopbus: warning: {warning}", file=sys.stderr, flush=True)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LAG_EVERY)
    finally:
        with suppress(Exception):
            await nc.drain()
