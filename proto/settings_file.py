"""snoopbus configuration: one TOML file, the environment and flags, in that order.

Every process (collector, consumers, `up`, `tail`) builds one frozen `Config`
and passes it in explicitly:

    defaults  ->  file  ->  environment  ->  flags      (later wins)

- file: `--config PATH`, else `$SNOOPBUS_CONFIG`, else /etc/snoopbus/snoopbus.toml
  if it exists (no file is fine: defaults only).
- environment: `SNOOPBUS_<SECTION>_<KEY>`, e.g. SNOOPBUS_NATS_URL,
  SNOOPBUS_METRICS_PORT, SNOOPBUS_COLLECTOR_EXCLUDE_PATH=/proc,/sys (lists
  are comma-separated).
- flags: each command passes the ones the user gave, as "section.key".

Sections are frozen dataclasses: a key is one annotated field with its
default, and its type is checked from the annotation, so adding a key (the
NATS auth and TLS ones, say) is one line. `[consumer.NAME]` tables hold a
consumer's own options, checked against that consumer's flags when it runs.
Free of BCC and of collector imports: consumers on other hosts load it too.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Union, get_args, get_origin, get_type_hints

from snoopbus.proto.bus import DEFAULT_NATS_URL, NATS_URL_ENV

DEFAULT_PATH: Final = Path("/etc/snoopbus/snoopbus.toml")
CONFIG_ENV: Final = "SNOOPBUS_CONFIG"
ENV_PREFIX: Final = "SNOOPBUS_"

# Scalars a [consumer.NAME] option may hold (or a list of them).
Scalar = str | int | float | bool


class ConfigError(ValueError):
    """Bad configuration: the message names the key, what was expected and where."""


@dataclass(frozen=True)
class NatsSection:
    """[nats]: how every process reaches the bus."""

    url: str = DEFAULT_NATS_URL  # one or more URLs, comma-separated
    # Credentials and TLS (proto/SECURITY.md); at most one of user+password, token, nkey, creds.
    user: str = ""
    password: str = ""  # prefer SNOOPBUS_NATS_PASSWORD or a file readable only by root
    token: str = ""
    nkey: str = ""  # path of an NKey seed file
    creds: str = ""  # path of a .creds file (user JWT and seed)
    tls_ca: str = ""  # path: trust only this CA for the server's certificate
    tls_cert: str = ""  # path: client certificate (needs tls_key)
    tls_key: str = ""
    inbox_prefix: str = ""  # reply subjects' prefix (default _INBOX; `up` gives each role its own)


@dataclass(frozen=True)
class CollectorSection:
    """[collector]: `snoopbus collect` (and the collector `up` runs).

    The one place of these defaults: ProbeLimits, PublisherConfig, CollectorConfig
    and the `collect` flags' help texts read them from here.
    """

    host: str = ""  # name in subjects and events; "" = this machine's host name
    argv_max: int = 8192  # bytes of argv kept per exec, a power of two
    ringbuf_pages: int = 4096  # ring buffer size in 4 KiB pages
    # file records/s one source (a non-root uid, or a root process) may write while
    # the ring buffer fills; past it, summarized (proto/README.md "Isolation"); 0 = off
    source_rate: int = 4000
    include_path: tuple[str, ...] = ()
    exclude_path: tuple[str, ...] = ()
    exclude_comm: tuple[str, ...] = ()
    exclude_uid: tuple[str | int, ...] = ()  # uids or user names
    exclude_cgroup: tuple[str | int, ...] = ()  # cgroup v2 ids or paths
    include_failed: bool = False
    open_events: bool = False
    heartbeat_interval: float = 30.0
    buffer_events: int = 200_000  # events held in memory while NATS is slow or away
    spill_dir: str = "/var/lib/snoopbus/spill"  # NATS away: events wait here; "" = memory only
    spill_max_mb: int = 1024
    # s with events captured and none published before the collector reports itself
    # stalled (heartbeat, `doctor --nats`, `up`, metrics)
    stall_after: float = 60.0
    require_nats: bool = False  # NATS unreachable at start: exit, instead of spilling
    redact: bool = True  # mask secrets in argv (collector/redact.py)
    drop_privileges: bool = True  # after loading probes keep only CAP_SYS_PTRACE
    redact_pattern: tuple[str, ...] = ()  # extra regexes; group `secret` or all is masked


@dataclass(frozen=True)
class UpSection:
    """[up]: the embedded stack on one host."""

    state_dir: str = "/var/lib/snoopbus"
    port: int = 4222  # loopback port of the embedded nats-server
    consumers: tuple[str, ...] = ("rename", "alert", "archive")
    live: str = "auto"  # the live view: auto (when stdout is a terminal), on, off
    # s from Ctrl-C to everything stopped: children still running then are killed
    stop_timeout: float = 10.0


@dataclass(frozen=True)
class StreamSection:
    """[stream]: limits of the JetStream stream (proto/stream_limits.py).

    Whoever creates the stream sets them; a value set here (file, environment,
    flag) is also applied to an existing stream that differs, and said in the log.
    """

    max_age_days: float = 7.0  # older events are removed; 0 = no age limit
    # 0 = auto: `up` takes disk_fraction of its state folder's free space, other
    # processes that create the stream take FALLBACK_MAX_BYTES (10 GiB)
    max_mb: int = 0
    disk_fraction: float = 0.5
    compression: str = "s2"  # "s2" (measured: tests/bench/stream_compression.py) or "none"
    warn_percent: float = 80.0  # warn when the stream holds this much of max_mb
    # copies of the stream on a cluster's servers (3 survives one node lost); used
    # when the stream is created: an existing stream keeps its own
    replicas: int = 1

    def __post_init__(self) -> None:
        if self.compression.lower() not in ("s2", "none"):
            raise ConfigError(f"[stream] compression must be s2 or none, got {self.compression!r}")
        if not 0 < self.disk_fraction <= 1:
            raise ConfigError(f"[stream] disk_fraction must be in (0, 1], got {self.disk_fraction}")
        if self.max_age_days < 0 or self.max_mb < 0:
            raise ConfigError("[stream] max_age_days and max_mb must be >= 0 (0: see the docs)")
        if not 1 <= self.replicas <= 5:
            raise ConfigError(f"[stream] replicas must be 1 to 5 (JetStream's limit), "
                              f"got {self.replicas}")


@dataclass(frozen=True)
class MetricsSection:
    """[metrics]: Prometheus /metrics and /healthz of this process."""

    port: int = 0  # 0 = off; `up` hands its children port+1, port+2, ...
    address: str = "127.0.0.1"


# Keys that lived elsewhere in earlier files -> where they are now.
MOVED: Final = {("collector", "nats"): "[nats] url"}

SECTIONS: Final[dict[str, type]] = {
    "nats": NatsSection,
    "collector": CollectorSection,
    "up": UpSection,
    "stream": StreamSection,
    "metrics": MetricsSection,
}


@dataclass(frozen=True)
class Config:
    nats: NatsSection = field(default_factory=NatsSection)
    collector: CollectorSection = field(default_factory=CollectorSection)
    up: UpSection = field(default_factory=UpSection)
    stream: StreamSection = field(default_factory=StreamSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    # [consumer.NAME] -> option -> value, read-only
    consumer: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: types.MappingProxyType({})
    )
    path: Path | None = None  # the file that was read, if any
    # "section.key" -> "default" | "file PATH" | "env NAME" | "flag"
    sources: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))

    def source(self, key: str) -> str:
        return self.sources.get(key, "default")

    def consumer_options(self, name: str) -> dict[str, Any]:
        return dict(self.consumer.get(name, {}))


# -- types --------------------------------------------------------------------


def _key_types(section: type) -> dict[str, Any]:
    hints = get_type_hints(section)
    return {f.name: hints[f.name] for f in fields(section)}


def _type_name(kind: Any) -> str:
    if get_origin(kind) is tuple:
        return f"list of {_type_name(get_args(kind)[0])}"
    if get_origin(kind) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(kind))
    return {float: "number"}.get(kind, getattr(kind, "__name__", str(kind)))


def _scalar_ok(value: Any, kind: Any) -> bool:
    if get_origin(kind) in (Union, types.UnionType):
        return any(_scalar_ok(value, k) for k in get_args(kind))
    if isinstance(value, bool):
        return kind is bool  # TOML true is not 1
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _typed(value: Any, kind: Any) -> Any:
    """`value` as `kind`, or raise TypeError."""
    if get_origin(kind) is tuple:
        if not isinstance(value, list | tuple):
            raise TypeError
        inner = get_args(kind)[0]
        if not all(_scalar_ok(v, inner) for v in value):
            raise TypeError
        return tuple(value)
    if not _scalar_ok(value, kind):
        raise TypeError
    return float(value) if kind is float else value


def _from_text(raw: str, kind: Any) -> Any:
    """An environment string as `kind` (lists comma-separated), or raise TypeError."""
    if get_origin(kind) is tuple:
        inner = get_args(kind)[0]
        return tuple(_from_text(p.strip(), inner) for p in raw.split(",") if p.strip())
    if get_origin(kind) in (Union, types.UnionType):
        return raw  # str | int lists: names and numbers alike stay text
    if kind is bool:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise TypeError
    if kind in (int, float):
        try:
            return kind(raw.strip())
        except ValueError:
            raise TypeError from None
    return raw


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section}_{key}".upper()


# -- loading ------------------------------------------------------------------


def config_path(explicit: Path | None, env: Mapping[str, str]) -> tuple[Path | None, bool]:
    """(the file to read, whether it must exist)."""
    if explicit is not None:
        return explicit, True
    if env.get(CONFIG_ENV, "").strip():
        return Path(env[CONFIG_ENV].strip()), True
    return DEFAULT_PATH, False


def read_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path}: not UTF-8 text") from None


def _known_sections() -> str:
    return ", ".join(f"[{s}]" for s in [*sorted(SECTIONS), "consumer.NAME"])


def _consumer_tables(data: Any, where: str) -> dict[str, Mapping[str, Any]]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: consumer must be tables, as [consumer.NAME]")
    out: dict[str, Mapping[str, Any]] = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [consumer.{name}] must be a table of options")
        for key, value in table.items():
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, Scalar) for v in items):
                raise ConfigError(
                    f"{where}: [consumer.{name}] {key} must be a string, number, boolean "
                    f"or a list of them, got {type(value).__name__}"
                )
        out[name] = types.MappingProxyType(dict(table))
    return out


def load(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """The effective config: defaults, then the file, environment and `flags`
    ("section.key" -> value; None values are ignored, as flags not given)."""
    env = os.environ if env is None else env
    file, required = config_path(path, env)
    data: dict[str, Any] = {}
    if file is not None and (required or file.exists()):
        data = read_file(file)
    else:
        file = None
    where = f"config {file}"
    values: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    sources: dict[str, str] = {}
    consumer: dict[str, Mapping[str, Any]] = {}
    for section, table in data.items():
        if section == "consumer":
            consumer = _consumer_tables(table, where)
            continue
        if section not in SECTIONS:
            raise ConfigError(
                f"{where}: unknown section [{section}] (known: {_known_sections()})"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {section} must be a table, as [{section}]")
        kinds = _key_types(SECTIONS[section])
        for key, value in table.items():
            if key not in kinds:
                known = ", ".join(kinds)
                moved = MOVED.get((section, key))
                raise ConfigError(
                    f"{where}: unknown key {key!r} in [{section}] "
                    + (f"(it is {moved} now)" if moved else f"(known: {known})")
                )
            try:
                values[section][key] = _typed(value, kinds[key])
            except TypeError:
                raise ConfigError(
                    f"{where}: [{section}] {key} must be {_type_name(kinds[key])}, "
                    f"got {type(value).__name__}"
                ) from None
            sources[f"{section}.{key}"] = f"file {file}"
    for section, cls in SECTIONS.items():
        for key, kind in _key_types(cls).items():
            name = env_name(section, key)
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[section][key] = _from_text(raw, kind)
            except TypeError:
                raise ConfigError(
                    f"environment {name}: must be {_type_name(kind)}, got {raw!r}"
                ) from None
            sources[f"{section}.{key}"] = f"env {name}"
    for dotted, value in (flags or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        kind = _key_types(SECTIONS[section])[key]  # a KeyError here is a programming error
        try:
            values[section][key] = _typed(list(value) if isinstance(value, list) else value, kind)
        except TypeError:
            raise ConfigError(f"flag for {dotted}: must be {_type_name(kind)}") from None
        sources[dotted] = "flag"
    built = {s: cls(**values[s]) for s, cls in SECTIONS.items()}
    return Config(
        **built,
        consumer=types.MappingProxyType(consumer),
        path=file,
        sources=types.MappingProxyType(sources),
    )


# -- showing ------------------------------------------------------------------


# Shown as "***" by `config show`: the command's output ends up in bug reports.
SECRET_KEYS: Final = frozenset({"nats.password", "nats.token"})


def _shown(config: Config, section: str, name: str) -> Any:
    value = _plain(getattr(getattr(config, section), name))
    if (section, name) == ("collector", "host") and not value:
        return socket.gethostname()  # what "" means: the name events will carry
    return "***" if value and f"{section}.{name}" in SECRET_KEYS else value


def _source(config: Config, section: str, name: str) -> str:
    source = config.source(f"{section}.{name}")
    if (section, name) == ("collector", "host") and not config.collector.host:
        return f"{source}: this machine's name"
    return source


def as_dict(config: Config) -> dict[str, Any]:
    """Every value with its source, for `snoopbus config show --json`."""
    out: dict[str, Any] = {"file": str(config.path) if config.path else None}
    for section in SECTIONS:
        obj = getattr(config, section)
        out[section] = {
            f.name: {"value": _shown(config, section, f.name),
                     "source": _source(config, section, f.name)}
            for f in fields(obj)
        }  # fmt: skip
    out["consumer"] = {
        name: {k: {"value": _plain(v), "source": f"file {config.path}"} for k, v in opts.items()}
        for name, opts in config.consumer.items()
    }
    return out


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def format_toml(config: Config) -> str:
    """The effective config as TOML, each line commented with where it came from."""
    lines = [f"# file: {config.path or f'none ({DEFAULT_PATH} not found)'}"]
    for section in SECTIONS:
        obj = getattr(config, section)
        lines += ["", f"[{section}]"]
        for f in fields(obj):
            value = json.dumps(_shown(config, section, f.name), ensure_ascii=False)
            lines.append(f"{f.name} = {value}  # {_source(config, section, f.name)}")
    for name, opts in config.consumer.items():
        lines += ["", f"[consumer.{name}]"]
        for key, value in opts.items():
            lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}  # file {config.path}")
    return "\n".join(lines)


# -- flags shared by every command ----------------------------------------------


def add_config_flag(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--config", type=Path, default=None, metavar="PATH",
        help=f"TOML config file (default: ${CONFIG_ENV}, else {DEFAULT_PATH} if present); "
        "environment SNOOPBUS_<SECTION>_<KEY> and flags override it",
    )  # fmt: skip


def add_nats_flag(
    parser: argparse._ActionsContainer, default: str | None = None, optional: bool = False
) -> None:
    """--nats URL; with `optional`, a bare --nats means "the configured or local stack's" ('')."""
    extra: dict[str, Any] = {"nargs": "?", "const": ""} if optional else {}
    parser.add_argument(
        "--nats", default=default, metavar="URL", **extra,
        help="NATS server URL(s), comma-separated "
        f"([nats] url, ${NATS_URL_ENV}; default: the stack `snoopbus up` runs, "
        f"else {DEFAULT_NATS_URL})",
    )  # fmt: skip


def add_metrics_flag(parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
        "--metrics-port", type=int, default=None, metavar="PORT",
        help="serve Prometheus /metrics and /healthz on this port ([metrics] port; 0 = off)",
    )  # fmt: skip
