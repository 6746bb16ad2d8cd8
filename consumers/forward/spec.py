"""`--to` URLs: where a sink sends, in what format, and its per-sink options.

    FORMAT+TRANSPORT://HOST:PORT/PATH?option=value&...

    syslog+tcp|udp|tls://host:port      RFC 5424 with structured data
    cef+tcp|udp|tls://host:port         CEF as the MSG of RFC 5424
    elastic+http|https://host:9200/IDX  ECS documents through _bulk (IDX may hold %Y.%m.%d)
    ocsf+file:///path | ocsf:- | ocsf+http|https://host/path
    ecs+file:///path | ecs:-            ECS documents as JSON lines
    webhook+http|https://host/path      snoopbus JSON, one array per batch
    otlp+http|https://host:4318/v1/logs OpenTelemetry logs, OTLP/HTTP protobuf
    splunk+http|https://host:8088       Splunk HTTP Event Collector (token: token_env=)
    jsonl+file:///path | jsonl:-        snoopbus JSON lines (- is stdout)

Options (query string), for every sink:

    name=N            durable name suffix (default: derived from the URL)
    min_severity=L    alerts below L are not forwarded (default informational)
    alerts=0|1        forward alerts at all (default 1)
    events=0|1        forward events at all (default 1)
    include=a,b       only these event types     exclude=a,b   all but these
    batch=N           items per request/write    concurrency=N requests in flight
    batch_bytes=N     rendered bytes per request/write (default 4 MiB; splunk 1,000,000)
    retries=N         tries per batch before it is nak'd back to JetStream
    backoff=S  backoff_cap=S                     first and largest retry delay
    ca=PATH cert=PATH key=PATH insecure=1        TLS (tls, https)
    api_key_env=VAR   elastic: API key from $VAR (default SNOOPBUS_ELASTIC_API_KEY)
    user:password@    elastic/webhook: basic auth; password_env=VAR reads it from $VAR
    start=all|new     where a new sink's durable starts: the stream's head (default) or now
    halves=auto|0|1   rename halves (moved_from/moved_to): auto forwards them only while
                      no rename pairer's durable exists (it sends `renamed` instead)
    proxy=URL|none    HTTP sinks: the proxy (default: HTTPS_PROXY/HTTP_PROXY, NO_PROXY)
    token_env=VAR     splunk: the HEC token from $VAR (default SNOOPBUS_SPLUNK_TOKEN)
    index=I sourcetype=S source=S   splunk: where HEC files the events
    namespace=N       elastic/ecs: the data stream namespace (default `default`)
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from snoopbus.proto import ALERT_LEVELS, EVENT_TYPES, alerts_filter, events_filter
from snoopbus.proto.alert_map import LEVEL_RANK

from .backoff import Backoff
from .http import proxy_from_env

FORMATS = {
    "syslog": ("tcp", "udp", "tls"),
    "cef": ("tcp", "udp", "tls"),
    "elastic": ("http", "https"),
    "ocsf": ("file", "stdout", "http", "https"),
    "ecs": ("file", "stdout"),
    "webhook": ("http", "https"),
    "otlp": ("http", "https"),
    "splunk": ("http", "https"),
    "jsonl": ("file", "stdout"),
}
_KNOWN = {
    "name", "min_severity", "alerts", "events", "include", "exclude", "batch", "concurrency",
    "retries", "backoff", "backoff_cap", "ca", "cert", "key", "insecure", "api_key_env",
    "password_env", "max_value", "fsync", "timeout", "start", "batch_bytes", "halves", "proxy",
    "token_env", "index", "sourcetype", "source", "namespace",
}  # fmt: skip
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_NAMESPACE = re.compile(r"[a-z0-9_]{1,100}")  # Elastic: no '-', lower case, short
_DEFAULT_PORTS = {"elastic": 9200, "otlp": 4318, "splunk": 8088}
DEFAULT_BATCH_BYTES = 4 * 1024 * 1024
# Splunk Cloud's HEC takes at most 1 MB a request (max_content_length).
SPLUNK_BATCH_BYTES = 1_000_000


class SpecError(ValueError):
    pass


@dataclass(frozen=True)
class SinkSpec:
    url: str
    format: str
    transport: str
    host: str = ""
    port: int | None = None
    path: str = ""
    name: str = ""
    min_severity: str = "informational"
    alerts: bool = True
    events: bool = True
    types: frozenset[str] = frozenset(EVENT_TYPES)  # event types forwarded
    batch: int = 500
    batch_bytes: int = DEFAULT_BATCH_BYTES
    concurrency: int = 4
    retries: int = 5
    backoff: Backoff = field(default_factory=Backoff)
    timeout: float = 10.0
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in logs
    api_key: str | None = field(default=None, repr=False)
    max_value: int = 8192  # longest single value (syslog/CEF); longer ones are cut
    fsync: bool = False
    halves: str = "auto"  # rename halves: "auto" (not while a pairer runs), "1", "0"
    proxy: str | None = field(default=None, repr=False)  # may hold credentials
    token: str | None = field(default=None, repr=False)  # splunk HEC token
    start_new: bool = False  # a new durable starts at new messages, not the stream's head
    options: dict[str, str] = field(default_factory=dict, repr=False)  # proxy= may hold a secret

    def __post_init__(self) -> None:
        # The URL may carry user:password@ (its own, or its proxy's): keep a
        # copy without them for display.
        url = self.url
        for secret in (self.password, urlsplit(self.options.get("proxy", "")).password):
            if secret:
                url = url.replace(f":{secret}@", ":***@").replace(f":{quote(secret)}@", ":***@")
        object.__setattr__(self, "url", url)

    @property
    def scheme(self) -> str:
        return f"{self.format}+{self.transport}"

    @property
    def consumer_name(self) -> str:
        return f"forward-{self.name}"

    @property
    def base_url(self) -> str:
        """scheme://host:port of an HTTP sink."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}://{host}:{self.port}"

    def subject_filters(self) -> list[str]:
        """Server-side filtering: only wanted event types and alert levels are fetched."""
        subjects: list[str] = []
        if self.events:
            if self.types == frozenset(EVENT_TYPES):
                subjects.append(events_filter())
            else:
                subjects += [events_filter(type=t) for t in sorted(self.types)]
        if self.alerts:
            floor = LEVEL_RANK[self.min_severity]
            levels = [lvl for lvl in ALERT_LEVELS if LEVEL_RANK[lvl] >= floor]
            if len(levels) == len(ALERT_LEVELS):
                subjects.append(alerts_filter())
            else:
                subjects += [alerts_filter(level=lvl) for lvl in levels]
        return subjects

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.transport not in ("tls", "https"):
            return None
        ctx = ssl.create_default_context(cafile=self.ca)
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def _flag(value: str, what: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise SpecError(f"{what}: expected 0 or 1, got {value!r}")


def _types(value: str, what: str) -> set[str]:
    types = {t.strip() for t in value.split(",") if t.strip()}
    unknown = types - set(EVENT_TYPES)
    if unknown:
        raise SpecError(f"{what}: unknown event types {', '.join(sorted(unknown))}")
    return types


def _number(value: str, what: str, kind: type[int] | type[float]) -> float:
    try:
        number = kind(value)
    except ValueError:
        raise SpecError(f"{what}: expected a number, got {value!r}") from None
    if number <= 0:
        raise SpecError(f"{what}: must be > 0")
    return number


def parse_spec(url: str, env: dict[str, str] | None = None) -> SinkSpec:
    env = dict(os.environ) if env is None else env
    head, sep, rest = url.partition(":")
    if not sep:
        raise SpecError(f"{url!r}: expected FORMAT+TRANSPORT://... or FORMAT:-")
    fmt, plus, transport = head.partition("+")
    query = ""
    if not plus and rest.split("?")[0] == "-":  # jsonl:- and friends
        transport, query = "stdout", rest.partition("?")[2]
        parts = None
    else:
        parts = urlsplit(url)
        query = parts.query
    if fmt not in FORMATS:
        raise SpecError(f"{url!r}: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if transport not in FORMATS[fmt]:
        raise SpecError(f"{url!r}: {fmt} goes over {', '.join(FORMATS[fmt])}, not {transport!r}")
    opts = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(opts) - _KNOWN
    if unknown:
        raise SpecError(f"{url!r}: unknown options {', '.join(sorted(unknown))}")

    host, port, path = "", None, ""
    username = password = None
    if parts is not None:
        host = parts.hostname or ""
        try:
            port = parts.port
        except ValueError as exc:
            raise SpecError(f"{url!r}: {exc}") from None
        path = unquote(parts.path)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if transport == "file":
            if not path:
                raise SpecError(f"{url!r}: give a file path, file:///path")
        elif not host:
            raise SpecError(f"{url!r}: give a host")
        elif port is None:
            port = _DEFAULT_PORTS.get(fmt) or {"tcp": 514, "udp": 514, "tls": 6514, "http": 80,
                                                "https": 443}[transport]  # fmt: skip
    if "password_env" in opts:
        password = env.get(opts["password_env"])
        if password is None:
            raise SpecError(f"{url!r}: ${opts['password_env']} is not set")
    api_key = token = None
    if fmt == "elastic":
        api_key = env.get(opts.get("api_key_env", "SNOOPBUS_ELASTIC_API_KEY"))
    if fmt == "splunk":
        token_env = opts.get("token_env", "SNOOPBUS_SPLUNK_TOKEN")
        token = env.get(token_env)
        if not token:
            raise SpecError(f"{url!r}: the HEC token: set ${token_env} (or token_env=VAR)")
    namespace = opts.get("namespace")
    if namespace is not None:
        if fmt not in ("elastic", "ecs"):
            raise SpecError(f"namespace: only for elastic and ecs sinks, not {fmt}")
        if not _NAMESPACE.fullmatch(namespace):
            raise SpecError(f"namespace: lower-case letters, digits and _ only, got {namespace!r}")
        if fmt == "elastic" and path.strip("/"):
            raise SpecError(f"{url!r}: namespace= is for the default data streams; "
                            "this URL names its INDEX (use logs-DATASET-NAMESPACE there)")
    halves = opts.get("halves", "auto")
    if halves not in ("auto", "0", "1"):
        raise SpecError(f"halves: 'auto', '0' or '1', got {halves!r}")
    proxy = None
    if transport in ("http", "https"):
        proxy = opts.get("proxy") or proxy_from_env(transport, host, env)
        if proxy is not None and proxy.lower() == "none":
            proxy = None
        elif proxy is not None and not urlsplit(proxy).hostname:
            raise SpecError("proxy: expected a URL such as http://proxy.example:3128")

    types = set(EVENT_TYPES)
    if "include" in opts:
        types = _types(opts["include"], "include")
    if "exclude" in opts:
        types -= _types(opts["exclude"], "exclude")
    min_severity = opts.get("min_severity", "informational")
    if min_severity not in LEVEL_RANK:
        raise SpecError(f"min_severity: one of {', '.join(ALERT_LEVELS)}, got {min_severity!r}")
    start = opts.get("start", "all")
    if start not in ("all", "new"):
        raise SpecError(f"start: 'all' or 'new', got {start!r}")
    backoff = Backoff(
        base=_number(opts.get("backoff", "0.2"), "backoff", float),
        cap=_number(opts.get("backoff_cap", "30"), "backoff_cap", float),
    )
    spec = SinkSpec(
        url=url, format=fmt, transport=transport, host=host, port=port, path=path,
        name=opts.get("name") or _default_name(fmt, transport, host, port, path),
        min_severity=min_severity,
        alerts=_flag(opts.get("alerts", "1"), "alerts"),
        events=_flag(opts.get("events", "1"), "events"),
        types=frozenset(types),
        batch=int(_number(opts.get("batch", "500"), "batch", int)),
        batch_bytes=int(_number(opts.get("batch_bytes", str(
            SPLUNK_BATCH_BYTES if fmt == "splunk" else DEFAULT_BATCH_BYTES)), "batch_bytes", int)),
        concurrency=int(_number(opts.get("concurrency", "4"), "concurrency", int)),
        retries=int(_number(opts.get("retries", "5"), "retries", int)),
        backoff=backoff,
        timeout=_number(opts.get("timeout", "10"), "timeout", float),
        ca=opts.get("ca"), cert=opts.get("cert"), key=opts.get("key"),
        insecure=_flag(opts.get("insecure", "0"), "insecure"),
        username=username, password=password, api_key=api_key,
        max_value=int(_number(opts.get("max_value", "8192"), "max_value", int)),
        fsync=_flag(opts.get("fsync", "0"), "fsync"),
        halves=halves, proxy=proxy, token=token,
        start_new=start == "new",
        options=opts,
    )  # fmt: skip
    if _UNSAFE.search(spec.name):
        raise SpecError(f"name: letters, digits, - and _ only, got {spec.name!r}")
    if not spec.subject_filters():
        raise SpecError(f"{url!r}: forwards nothing (no event types and no alerts)")
    return spec


def _default_name(fmt: str, transport: str, host: str, port: int | None, path: str) -> str:
    where = os.path.basename(path) if transport == "file" else f"{host}-{port or ''}"
    if transport == "stdout":
        where = "stdout"
    return _UNSAFE.sub("_", f"{fmt}-{transport}-{where}").strip("_-")[:60]
