"""`syslog+tcp|udp|tls://host:port`: RFC 5424 messages with structured data.

TCP and TLS use octet-counting framing (RFC 6587 3.4.1 / RFC 5425), so a
newline inside a value can never split or forge a message; UDP sends one
message per datagram (RFC 5426). `cef+...` sends CEF as the MSG (cef.py).

Escaping (RFC 5424 6.3.3): in a PARAM-VALUE exactly `"`, `\\` and `]` are
escaped with a backslash. Before that, every control, format and line
separator character (CR, LF, NUL, ESC, C1, U+2028, bidi overrides ...) and
each byte that is not UTF-8 is shown as text, `\\xNN` or `\\uXXXX`
(consumers/printable.py): a receiver that splits on line ends (Splunk,
a file read line by line) never sees one inside a value, whatever the framing.
Header fields (HOSTNAME, PROCID, MSGID) allow only printable US-ASCII:
anything else becomes `_`. The MSG is escaped like a value. Values longer
than `max_value` are cut, ending in `...`.

Delivery: at least once over TCP/TLS, counted as accepted once written to
the socket (syslog has no acknowledgements: what the kernel held when the
receiver crashed can be lost). UDP is at most once.
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from snoopbus.consumers.printable import printable

from .alerts import Alert
from .sink import Item, Rendered, Sent, Sink, Transient
from .spec import SinkSpec
from .text import bounded_escaped, command_line, display, escaped_fields

PEN = 32473  # RFC 5612 documentation enterprise number: SD-IDs are `name@32473`
FACILITY = 13  # log audit
APP_NAME = "snoopbus"
SEVERITY = {"informational": 6, "low": 5, "medium": 4, "high": 3, "critical": 2}
EVENT_SEVERITY = 6
BOM = "\ufeff"
UDP_MAX = 65_507

_SD_SPECIAL = re.compile(r'["\\\]]')
_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")


def _sd_escape(text: str) -> str:
    return _SD_SPECIAL.sub(lambda m: "\\" + m.group(), text)


def param_value(value: object, limit: int = 8192) -> str:
    """A PARAM-VALUE body (without the quotes), escaped per RFC 5424."""
    return bounded_escaped(value, limit, _SD_SPECIAL, _sd_escape)


def header_field(value: object, limit: int) -> str:
    """HOSTNAME/APP-NAME/PROCID/MSGID: 1*limit PRINTUSASCII, or the NILVALUE."""
    if type(value) is int:  # a PROCID: digits and "-" are PRINTUSASCII already
        return str(value)[:limit] or "-"
    key = (value, limit) if type(value) is str else None
    if key is not None and (known := _HEADERS.get(key)) is not None:
        return known  # a host and a MSGID repeat in almost every message
    text = _NOT_PRINTUSASCII.sub("_", display(value))[:limit] or "-"
    if key is not None:
        if len(_HEADERS) >= 1024:  # bounded by entries, not by traffic
            _HEADERS.clear()
        _HEADERS[key] = text
    return text


_HEADERS: dict[tuple[str, int], str] = {}


def sd_element(sd_id: str, params: Iterable[tuple[str, object]], limit: int = 8192) -> str:
    body = escaped_fields(params, limit, _SD_SPECIAL, param_value, " ", '="', '"')
    return f"[{sd_id}@{PEN}{''.join(body)}]"


@functools.lru_cache(maxsize=64)
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def timestamp(ns: int | None) -> str:
    """RFC 3339 in UTC with microseconds, the finest TIME-SECFRAC allows."""
    if ns is None:
        return "-"
    seconds, rest = divmod(ns, 1_000_000_000)
    return f"{_second(seconds)}.{rest // 1000:06d}Z"


def message(
    *, severity: int, ts: int | None, host: str, procid: object, msgid: str,
    sd: str, msg: str | None, bom: bool = True,
) -> str:  # fmt: skip
    pri = FACILITY * 8 + severity
    head = (
        f"<{pri}>1 {timestamp(ts)} {header_field(host, 255)} {APP_NAME} "
        f"{header_field(procid if procid is not None else '', 128)} {header_field(msgid, 32)} "
        f"{sd or '-'}"
    )
    if msg is None:
        return head
    return f"{head} {BOM if bom else ''}{msg}"


def summary(text: str, limit: int) -> str:
    """The free-text MSG is for people, on one line: unsafe characters escaped."""
    text = printable(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def event_sd(event: dict[str, Any], limit: int) -> str:
    proc = event.get("proc") or {}
    file = event.get("file") or {}
    parts = [
        sd_element("snoopbus", [("v", event.get("v")), ("id", event.get("id")),
                                ("type", event.get("type")), ("ret", event.get("ret")),
                                ("exit_code", event.get("exit_code")),
                                ("cookie", event.get("cookie"))], limit),
    ]  # fmt: skip
    if proc:
        argv = proc.get("argv")
        parts.append(sd_element("proc", [
            (k, proc.get(k)) for k in ("pid", "tid", "ppid", "uid", "gid", "comm", "exe", "cwd")
        ] + [("argv", command_line(argv) if argv is not None else None),
             ("container", proc.get("container")), ("parent_exe", proc.get("parent_exe"))],
            limit))  # fmt: skip
    if file:
        mode = file.get("mode")
        parts.append(sd_element("file", [
            ("path", file.get("path")), ("old_path", file.get("old_path")),
            ("target", file.get("target")), ("inode", file.get("inode")),
            ("mode", f"{mode:o}" if isinstance(mode, int) else None), ("flags", file.get("flags")),
        ], limit))  # fmt: skip
    return "".join(parts)


def event_summary(event: dict[str, Any]) -> str:
    proc = event.get("proc") or {}
    file = event.get("file") or {}
    actor = display(proc.get("exe") or proc.get("comm") or "?")
    if event.get("type") == "exec":
        return f"exec {actor}: {command_line(proc.get('argv'))}"
    if file:
        path = display(file.get("path", "?"))
        if file.get("old_path"):
            path = f"{display(file['old_path'])} -> {path}"
        return f"{event.get('type')} {path} by {actor}"
    return f"{event.get('type')} {actor}"


def render_5424(item: Item, limit: int) -> str:
    if item.kind == "alert":
        alert: Alert = item.data
        event = dict(alert.event)
        sd = sd_element("alert", [
            ("id", alert.id), ("rule_id", alert.rule_id), ("title", alert.title),
            ("level", alert.level), ("tags", ",".join(alert.tags)),
            ("count", alert.count),
        ], limit) + (event_sd(event, limit) if event else "")  # fmt: skip
        return message(
            severity=SEVERITY[alert.level], ts=alert.ts, host=alert.host,
            procid=(event.get("proc") or {}).get("pid"), msgid="alert", sd=sd,
            msg=summary(f"{alert.level} alert: {alert.title}", limit),
        )  # fmt: skip
    event = item.data
    return message(
        severity=EVENT_SEVERITY, ts=event.get("ts"), host=event.get("host", ""),
        procid=(event.get("proc") or {}).get("pid"), msgid=event.get("type", ""),
        sd=event_sd(event, limit), msg=summary(event_summary(event), limit),
    )  # fmt: skip


class SyslogSink(Sink):
    scheme = "syslog+tcp"

    def __init__(self, spec: SinkSpec) -> None:
        super().__init__(spec)
        self.delivery = "at most once" if spec.transport == "udp" else "at least once"
        self.format: Callable[[Item], str]
        if spec.format == "cef":
            from .cef import render_cef_syslog

            self.format = lambda item: render_cef_syslog(item, spec.max_value)
        else:
            self.format = lambda item: render_5424(item, spec.max_value)
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._lock = asyncio.Lock()  # one batch at a time on the one connection

    def render(self, item: Item) -> bytes:
        return self.format(item).encode("utf-8")

    async def send(self, batch: list[Rendered]) -> Sent:
        refused: dict[int, str] = {}
        async with self._lock:
            try:
                if self.spec.transport == "udp":
                    await self._send_udp(batch, refused)
                else:
                    frames = b"".join(b"%d %s" % (len(m), m) for _, m in batch)
                    await asyncio.wait_for(self._send_stream(frames), self.spec.timeout)
            except (OSError, TimeoutError) as exc:
                await self._drop()
                raise Transient(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
        return Sent(rejected=refused)

    async def _send_stream(self, frames: bytes) -> None:
        if self._stream is not None and (self._stream[0].at_eof() or self._stream[1].is_closing()):
            await self._drop()  # the receiver hung up: writing now would vanish
        if self._stream is None:
            ssl_ctx = self.spec.ssl_context()
            self._stream = await asyncio.open_connection(
                self.spec.host, self.spec.port, ssl=ssl_ctx,
                server_hostname=self.spec.host if ssl_ctx else None,
            )  # fmt: skip
        writer = self._stream[1]
        writer.write(frames)
        await writer.drain()

    async def _send_udp(self, batch: list[Rendered], refused: dict[int, str]) -> None:
        if self._udp is None:
            port = self.spec.port
            assert port is not None  # parse_spec gives every network sink one
            loop = asyncio.get_running_loop()
            self._udp, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=(self.spec.host, port),
                family=socket.AF_INET6 if ":" in self.spec.host else socket.AF_INET,
            )  # fmt: skip
        for index, (_, datagram) in enumerate(batch):
            if len(datagram) > UDP_MAX:
                refused[index] = f"{len(datagram)} bytes do not fit one UDP datagram"
                continue
            self._udp.sendto(datagram)
        await asyncio.sleep(0)  # let the transport report an error now, not on the next batch

    async def _drop(self) -> None:
        if self._stream is not None:
            writer = self._stream[1]
            self._stream = None
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ConnectionError):
                pass
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    async def close(self) -> None:
        async with self._lock:
            await self._drop()
