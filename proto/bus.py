"""How every snoopbus process reaches NATS: one long-lived connection, one stream.

The first connect is bounded and fails with one clear BusUnavailable; once a
connection has been made, the client reconnects forever, because a collector
or consumer outliving a server restart is the normal case.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final
from urllib.parse import urlparse

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg, StorageType, StreamConfig, StreamInfo, SubjectTransform
from nats.js.errors import APIError, BadRequestError, NotFoundError

from snoopbus.proto.stream_limits import StreamLimits, human_bytes, unbounded
from snoopbus.proto.subjects import (
    STREAM_NAME,
    STREAM_SUBJECTS,
    STREAM_TRANSFORM,
    stored_filters,
)

log = logging.getLogger(__name__)

DEFAULT_NATS_URL: Final = "nats://127.0.0.1:4222"
NATS_URL_ENV: Final = "SNOOPBUS_NATS_URL"

# JetStream API error code: "stream name already in use with a different configuration".
_STREAM_NAME_IN_USE: Final = 10058


class BusUnavailable(RuntimeError):
    """The first connection to NATS could not be made.

    `unreachable` is true when no server answered (refused, timed out, no such
    host): waiting may help. False for what only a fix can: bad credentials,
    an untrusted certificate, a missing URL or file.
    """

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass(frozen=True)
class NatsAuth:
    """How a process proves who it is to NATS, and how it checks the server.

    At most one of: user+password, token, nkey (path of an NKey seed file),
    creds (path of a .creds file: user JWT + seed, for operator mode). TLS is
    used when tls_ca (trust only this CA), tls_cert+tls_key (a client
    certificate) is set, or a server URL is tls://.
    """

    user: str = ""
    password: str = ""
    token: str = ""
    nkey: str = ""
    creds: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    # Reply subjects under this prefix (default _INBOX): a server giving each
    # role its own (proto/roles.py) keeps others' replies out of its reach.
    inbox_prefix: str = ""

    def __repr__(self) -> str:  # secrets never reach a log line
        shown = {f.name: "***" if f.name in ("password", "token") else getattr(self, f.name)
                 for f in fields(self) if getattr(self, f.name)}
        return f"NatsAuth({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NatsAuth:
        """SNOOPBUS_NATS_USER, _PASSWORD, _TOKEN, _NKEY, _CREDS, _TLS_CA, _TLS_CERT, _TLS_KEY."""
        env = os.environ if env is None else env
        return cls(**{f.name: env.get(f"SNOOPBUS_NATS_{f.name.upper()}", "").strip()
                      for f in fields(cls)})

    @classmethod
    def from_section(cls, section: object) -> NatsAuth:
        """From a config object with these attribute names (the [nats] section)."""
        return cls(**{f.name: str(getattr(section, f.name, "") or "") for f in fields(cls)})

    def check(self) -> None:
        methods = [m for m, on in (("user/password", self.user or self.password),
                                   ("token", self.token), ("nkey", self.nkey),
                                   ("creds", self.creds)) if on]
        if len(methods) > 1:
            raise BusUnavailable(f"NATS auth: choose one of {', '.join(methods)}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise BusUnavailable("NATS TLS: a client certificate needs both tls_cert and tls_key")
        for what in ("nkey", "creds", "tls_ca", "tls_cert", "tls_key"):
            path = getattr(self, what)
            if path and not os.path.isfile(path):
                raise BusUnavailable(f"NATS {what}: no such file {path!r}")

    def ssl_context(self) -> ssl.SSLContext | None:
        if not (self.tls_ca or self.tls_cert):
            return None
        ctx = ssl.create_default_context(cafile=self.tls_ca or None)
        if self.tls_cert:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        return ctx

    def options(self) -> dict[str, Any]:
        """Keyword options for nats.connect."""
        self.check()
        opts: dict[str, Any] = {}
        if self.user or self.password:
            opts.update(user=self.user, password=self.password)
        if self.token:
            opts["token"] = self.token
        if self.nkey:
            opts["nkeys_seed"] = self.nkey  # nats-py signs the server's nonce (needs `nkeys`)
        if self.creds:
            opts["user_credentials"] = self.creds
        if self.inbox_prefix:
            opts["inbox_prefix"] = self.inbox_prefix
        tls = self.ssl_context()
        if tls is not None:
            opts["tls"] = tls
        return opts


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
    auth: NatsAuth | None = None,
    **options: Any,
) -> Client:
    """Connect to NATS as client `name`; servers may be "nats://a,nats://b".

    Each server is tried `initial_attempts` times (at least 2) before giving
    up with BusUnavailable; no tasks are left behind then. After the first
    success the client reconnects forever and logs disconnects and reconnects.
    `auth` (default: NatsAuth.from_env()) gives credentials and TLS; an
    authentication or certificate failure is a BusUnavailable saying so.
    Other keyword options go to nats.connect; callbacks given there still run.
    """
    urls = _server_list(servers)
    options = {**(auth or NatsAuth.from_env()).options(), **options}
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
            # A refusal says more than the reset of the retry that follows it.
            if not (last_error and _is_refusal(last_error[0])):
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

    # Ours run first, then the caller's own if it gave one.
    error_cb = _chain(on_error, options.pop("error_cb", None))
    disconnected_cb = _chain(on_disconnected, options.pop("disconnected_cb", None))
    reconnected_cb = _chain(on_reconnected, options.pop("reconnected_cb", None))
    closed_cb = _chain(on_closed, options.pop("closed_cb", None))
    # asyncio's start_tls can hang on a failed certificate check (nats-py then
    # never returns): bound the whole first connect, and diagnose TLS apart.
    budget = len(urls) * max(2, initial_attempts) * (connect_timeout + 0.5) + 1
    try:
        async with asyncio.timeout(budget):
            await nc.connect(
                urls,
                name=name,
                # nats-py annotates both timings int, and takes float seconds.
                connect_timeout=connect_timeout,  # type: ignore[arg-type]  # float
                allow_reconnect=True,
                # nats-py treats 0 as "forever"; N allows N+1 tries per server.
                max_reconnect_attempts=max(1, initial_attempts - 1),
                reconnect_time_wait=min(reconnect_wait, 0.5),  # type: ignore[arg-type]  # float
                error_cb=error_cb,
                disconnected_cb=disconnected_cb,
                reconnected_cb=reconnected_cb,
                closed_cb=closed_cb,
                **options,
            )
    except Exception as e:
        await _discard(nc)
        cause = last_error[0] if last_error else e
        tls = options.get("tls")
        if isinstance(e, TimeoutError) and isinstance(tls, ssl.SSLContext):
            found = await asyncio.to_thread(_tls_check, urls[0], tls, connect_timeout)
            cause = found or cause
        raise BusUnavailable(
            f"cannot connect to NATS at {shown}: {_describe(cause)}. Is nats-server "
            "running? Start the embedded one with `snoopbus up`, or pass --nats / "
            f"{NATS_URL_ENV} with the right URL.",
            unreachable=not _is_refusal(cause),
        ) from None
    connected = True
    # From now on: never give up, and back off at the normal pace.
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = reconnect_wait
    url = nc.connected_url
    log.info("nats %s: connected to %s", name, url.netloc if url else shown)
    return nc


async def connect_eventually(
    servers: str | Sequence[str],
    *,
    name: str,
    retry_wait: float = 2.0,
    **options: Any,
) -> Client:
    """connect(), retried every `retry_wait` s for as long as no server answers.

    For a process that has useful work to do before NATS is up (the collector
    spills). A refusal (credentials, certificate) is raised at once: waiting
    would not fix it.
    """
    while True:
        try:
            return await connect(servers, name=name, **options)
        except BusUnavailable as exc:
            if not exc.unreachable:
                raise
            log.debug("nats %s: still unreachable: %s", name, exc)
        await asyncio.sleep(retry_wait)


def _tls_check(url: str, ctx: ssl.SSLContext, timeout: float) -> BaseException | None:
    """The TLS error a plain blocking handshake with the server gets, if any."""
    parsed = urlparse(url if "://" in url else f"nats://{url}")
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 4222), timeout) as sock:
            sock.makefile("rb").readline()  # the server's INFO comes first, in the clear
            with ctx.wrap_socket(sock, server_hostname=parsed.hostname):
                return None
    except (OSError, ssl.SSLError) as exc:
        return exc


def _is_refusal(e: BaseException) -> bool:
    return isinstance(e, ssl.SSLError) or "violation" in str(e).lower()


def _describe(e: BaseException) -> str:
    text = str(e).strip()
    if "authorization violation" in text.lower():
        return "authorization violation: the server refused these credentials"
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS: the server's certificate is not trusted ({e.verify_message})"
    if isinstance(e, ssl.SSLError):
        return f"TLS: {e.reason or text}"
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
    replicas: int | None = None,
    limits: StreamLimits | None = None,
    duplicate_window_s: float = 120,
) -> StreamInfo:
    """The stream `name`, created (file storage, `limits`: bounded by default) if missing.

    It is created with `replicas` copies (default: `limits.replicas`, [stream] replicas),
    and stores each subject with its host's bucket (STREAM_TRANSFORM).

    An existing stream keeps its limits and replicas (the operator's), except
    that missing subjects are added, the bucket transform is added if it has
    none (what it holds stays as stored), and `limits` are applied when they were
    chosen (`enforce`: set in [stream]) or when the stream has none at all
    (made by an earlier snoopbus); each change is logged. A client not
    allowed to change the stream says so and goes on with it as it is.
    """
    limits = limits or StreamLimits()
    wanted = list(subjects)
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        config = StreamConfig(
            name=name,
            subjects=wanted,
            storage=StorageType.FILE,
            num_replicas=limits.replicas if replicas is None else replicas,
            duplicate_window=duplicate_window_s,
            subject_transform=_transform(wanted),
        )
        limits.apply(config)
        try:
            info = await js.add_stream(config)
            log.info("created stream %s for %s (max_age %s, max_bytes %s, compression %s)",
                     name, ", ".join(wanted), limits.max_age_s or "unlimited",
                     human_bytes(limits.max_bytes), limits.compression)  # fmt: skip
            return info
        except BadRequestError as e:
            if e.err_code != _STREAM_NAME_IN_USE:
                raise
            # Another process created it between our lookup and add: use theirs.
            info = await js.stream_info(name)
    config = info.config
    have = list(config.subjects or [])
    missing = [s for s in wanted if not any(covers(h, s) for h in have)]
    changes = []
    if missing:
        config.subjects = have + missing
        changes.append(f"added subjects {', '.join(missing)}")
    transform, have_transform = _transform(config.subjects or []), config.subject_transform
    if transform is not None and have_transform is None:
        config.subject_transform = transform
        changes.append(f"stores subjects with their host's bucket ({transform.dest}; "
                       "what it holds already stays as it was)")
    elif (transform is not None and have_transform is not None
          and have_transform.as_dict() != transform.as_dict()):
        log.error("stream %s transforms subjects as %s: snoopbus's consumers filter on %s "
                  "and miss what it stores otherwise; set the stream's subject_transform to "
                  "that, or remove it and let snoopbus set it", name,
                  have_transform.as_dict(), transform.as_dict())  # fmt: skip
    limit_changes = limits.differences(config)
    if limit_changes and (limits.enforce or unbounded(config)):
        why = "[stream] config" if limits.enforce else "it had no limits"
        limits.apply(config)
        changes += [f"{c} ({why})" for c in limit_changes]
    if changes:
        try:
            info = await js.update_stream(config)
        except APIError as e:
            log.warning("stream %s: could not %s: %s", name, "; ".join(changes), e.description or e)
            return info
        log.warning("stream %s: %s", name, "; ".join(changes))
    return info


async def last_stored(js: JetStreamContext, subject: str) -> RawStreamMsg | None:
    """The stream's last message on `subject` (published form: a subject or a
    filter), in whichever form it was stored (with its bucket, or from before
    the stream had buckets); None if it holds none."""
    last: RawStreamMsg | None = None
    for stored in stored_filters(subject):
        try:
            msg = await js.get_last_msg(STREAM_NAME, stored)
        except NotFoundError:
            continue
        if last is None or (msg.seq or 0) > (last.seq or 0):
            last = msg
    return last


def _transform(subjects: Sequence[str]) -> SubjectTransform | None:
    """The partitioning transform (proto/subjects.py), if the stream holds its source."""
    src, dest = STREAM_TRANSFORM
    return SubjectTransform(src=src, dest=dest) if any(covers(s, src) for s in subjects) else None


def covers(pattern: str, subject: str) -> bool:
    """Whether NATS filter `pattern` matches every subject that `subject` (maybe a filter) does."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or s[i] == ">" or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)
