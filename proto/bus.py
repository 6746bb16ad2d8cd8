"""How every snoopbus process reaches NATS: one long-lived connection, one stream.

The first connect is bounded and fails with one clear BusUnavailable; once a
connection has been made, the client reconnects forever, because a collector
or consumer outliving a server restart is the normal case.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig, StreamInfo
from nats.js.errors import BadRequestError, NotFoundError

from snoopbus.proto.subjects import STREAM_NAME, STREAM_SUBJECTS

log = logging.getLogger(__name__)

DEFAULT_NATS_URL: Final = "nats://127.0.0.1:4222"
NATS_URL_ENV: Final = "SNOOPBUS_NATS_URL"

# JetStream API error code: "stream name already in use with a different configuration".
_STREAM_NAME_IN_USE: Final = 10058


class BusUnavailable(RuntimeError):
    """The first connection to NATS could not be made."""


def nats_url_from_env() -> str:
    """SNOOPBUS_NATS_URL if set (may be a comma-separated list), else the default."""
    return os.environ.get(NATS_URL_ENV, "").strip() or DEFAULT_NATS_URL


def _server_list(servers: str | Sequence[str]) -> list[str]:
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    urls = [s.strip() for s in items if s and s.strip()]
    if not urls:
        raise BusUnavailable(
            f"no NATS server URL given ({servers!r}): pass --nats or set {NATS_URL_ENV}"
        )
    return urls


def _chain(
    ours: Callable[..., Awaitable[None]], theirs: Callable[..., Awaitable[None]] | None
) -> Callable[..., Awaitable[None]]:
    if theirs is None:
        return ours

    async def both(*args: Any) -> None:
        await ours(*args)
        await theirs(*args)

    return both


async def connect(
    servers: str | Sequence[str],
    *,
    name: str,
    connect_timeout: float = 2.0,
    initial_attempts: int = 2,
    **options: Any,
) -> Client:
    """Connect to NATS as client `name`; servers may be "nats://a,nats://b".

    Each server is tried `initial_attempts` times (at least 2) before giving
    up with BusUnavailable; no tasks are left behind then. After the first
    success the client reconnects forever and logs disconnects and reconnects.
    Other keyword options go to nats.connect; callbacks given there still run.
    """
    urls = _server_list(servers)
    shown = ", ".join(urls)
    nc = Client()
    connected = False
    last_error: list[BaseException] = []
    reconnect_wait = float(options.pop("reconnect_time_wait", 2.0))

    async def on_error(e: Exception) -> None:
        # One line, no stack trace: nats-py's default callback logs a traceback per attempt.
        if connected:
            log.warning("nats %s: %s", name, e or type(e).__name__)
        else:
            last_error[:] = [e]
            log.debug("nats %s: connect attempt failed: %r", name, e)

    async def on_disconnected() -> None:
        if connected and not nc.is_closed:  # close() also reports a disconnect
            log.warning("nats %s: disconnected; reconnecting", name)

    async def on_reconnected() -> None:
        url = nc.connected_url
        log.warning("nats %s: reconnected to %s", name, url.netloc if url else "?")

    async def on_closed() -> None:
        if connected:
            log.info("nats %s: connection closed", name)

    callbacks = {
        "error_cb": on_error,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
        "closed_cb": on_closed,
    }
    for key, ours in callbacks.items():
        callbacks[key] = _chain(ours, options.pop(key, None))
    try:
        await nc.connect(
            urls,
            name=name,
            connect_timeout=connect_timeout,  # type: ignore[arg-type]
            allow_reconnect=True,
            # nats-py treats 0 as "forever"; N allows N+1 tries per server.
            max_reconnect_attempts=max(1, initial_attempts - 1),
            reconnect_time_wait=min(reconnect_wait, 0.5),  # type: ignore[arg-type]
            **callbacks,
            **options,
        )
    except Exception as e:
        await _discard(nc)
        cause = last_error[0] if last_error else e
        raise BusUnavailable(
            f"cannot connect to NATS at {shown}: {_describe(cause)}. Is nats-server "
            "running? Start the embedded one with `snoopbus up`, or pass --nats / "
            f"{NATS_URL_ENV} with the right URL."
        ) from None
    connected = True
    # From now on: never give up, and back off at the normal pace.
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = reconnect_wait
    url = nc.connected_url
    log.info("nats %s: connected to %s", name, url.netloc if url else shown)
    return nc


def _describe(e: BaseException) -> str:
    text = str(e).strip()
    if isinstance(e, ConnectionRefusedError) or "Connect call failed" in text:
        return "connection refused"
    if isinstance(e, TimeoutError):
        return "timed out"
    return text or type(e).__name__


async def _discard(nc: Client) -> None:
    """Close a client whose first connect failed, so no task or socket outlives it."""
    try:
        await nc.close()
    except Exception:
        log.debug("closing a failed NATS client", exc_info=True)


async def ensure_stream(
    js: JetStreamContext,
    *,
    name: str = STREAM_NAME,
    subjects: Sequence[str] = STREAM_SUBJECTS,
    replicas: int = 1,
    max_age_s: float | None = None,
    max_bytes: int | None = None,
    duplicate_window_s: float = 120,
) -> StreamInfo:
    """The stream `name`, created (file storage) if missing.

    An existing stream is left as it is (its limits and replicas are the
    operator's), except that missing subjects are added to it.
    """
    wanted = list(subjects)
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        config = StreamConfig(
            name=name,
            subjects=wanted,
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=max_age_s,
            max_bytes=max_bytes,
            duplicate_window=duplicate_window_s,
        )
        try:
            info = await js.add_stream(config)
            log.info("created stream %s for %s", name, ", ".join(wanted))
            return info
        except BadRequestError as e:
            if e.err_code != _STREAM_NAME_IN_USE:
                raise
            # Another process created it between our lookup and add: use theirs.
            info = await js.stream_info(name)
    have = list(info.config.subjects or [])
    missing = [s for s in wanted if not any(_covers(h, s) for h in have)]
    if missing:
        info.config.subjects = have + missing
        info = await js.update_stream(info.config)
        log.info("stream %s: added subjects %s", name, ", ".join(missing))
    return info


def _covers(pattern: str, subject: str) -> bool:
    """Whether NATS filter `pattern` matches every subject that `subject` (maybe a filter) does."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or s[i] == ">" or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)
