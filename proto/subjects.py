"""NATS subject and stream names. They are built here and nowhere else.

    snoopbus.events.<host>.<family>.<type>
    snoopbus.alerts.<host>.<level>
    snoopbus.meta.<host>.<what>
    snoopbus.dlq.<consumer>
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from snoopbus.proto.schema import _FAMILY, ALERT_LEVELS

PREFIX: Final = "snoopbus"
STREAM_NAME: Final = "SNOOPBUS"
STREAM_SUBJECTS: Final = [f"{PREFIX}.>"]

_EVENTS: Final = "events"
_ALERTS: Final = "alerts"
_META: Final = "meta"
_DLQ: Final = "dlq"
# The meta <what>s a collector reports about itself (host health, `doctor --nats`).
REPORTS: Final = ("status", "heartbeat", "loss")

# Anything that would split, wildcard or break a subject token: the token
# separator, wildcards, whitespace, control characters, and lone surrogates
# (a non-UTF-8 host name decoded with surrogateescape cannot go on the wire).
# "/" too: a host token also names the host's folder in the archive.
_UNSAFE: Final = re.compile(r"[.*>/\s\x00-\x1f\x7f\ud800-\udfff]")
# A host token is also a folder name ("host=<token>"): at most 255 bytes with that prefix.
MAX_HOST_TOKEN_BYTES: Final = 250


class SubjectError(ValueError):
    """A subject cannot be built from these parts, or is not a snoopbus subject."""


class SubjectParts(NamedTuple):
    """A parsed snoopbus subject.

    kind: "events", "alerts", "meta" or "dlq". host: the host token (None for
    dlq). family: "proc" or "file" for events, else None. type: the event
    type, the alert level, the meta <what>, or the dlq consumer name.
    """

    kind: str
    host: str | None
    family: str | None
    type: str


def host_token(name: str) -> str:
    """A host name as one subject token (and archive folder name): ".", "*", ">", "/",
    whitespace and controls become "_"."""
    if not isinstance(name, str) or not name:
        raise SubjectError(f"host name must be a non-empty str, got {name!r}")
    token = _UNSAFE.sub("_", name)
    if len(token.encode()) > MAX_HOST_TOKEN_BYTES:
        raise SubjectError(f"host name of {len(token.encode())} bytes is over the "
                           f"{MAX_HOST_TOKEN_BYTES}-byte limit: {name[:40]!r}...")
    return token


def is_host_token(token: str) -> bool:
    """Whether `token` is what host_token() makes of some name (a subject from
    anyone else is checked with this before its host names anything)."""
    return (bool(token) and not _UNSAFE.search(token)
            and len(token.encode("utf-8", "surrogatepass")) <= MAX_HOST_TOKEN_BYTES)


def _token(value: str, what: str) -> str:
    """A program-chosen token (meta <what>, consumer name): refuse rather than rewrite."""
    if not isinstance(value, str) or not value or _UNSAFE.search(value):
        raise SubjectError(
            f"{what} must be a non-empty subject token without '.', '*', '>' or "
            f"whitespace, got {value!r}"
        )
    return value


def _family_of(type: str) -> str:
    try:
        return _FAMILY[type]
    except (KeyError, TypeError):
        raise SubjectError(f"unknown event type {type!r}") from None


def event_subject(host: str, type: str) -> str:
    """Where a collector publishes events of `type` from `host`."""
    return f"{PREFIX}.{_EVENTS}.{host_token(host)}.{_family_of(type)}.{type}"


def _level(level: str) -> str:
    if level not in ALERT_LEVELS:
        raise SubjectError(f"unknown alert level {level!r} (one of {', '.join(ALERT_LEVELS)})")
    return level


def alert_subject(host: str, level: str) -> str:
    """Where alerts about `host` at `level` are published."""
    return f"{PREFIX}.{_ALERTS}.{host_token(host)}.{_level(level)}"


def meta_subject(host: str, what: str) -> str:
    """Collector status, loss reports and heartbeats of `host` (what: e.g. "loss")."""
    return f"{PREFIX}.{_META}.{host_token(host)}.{_token(what, 'meta kind')}"


def dlq_subject(consumer: str) -> str:
    """Where `consumer` puts messages it could not handle."""
    return f"{PREFIX}.{_DLQ}.{_token(consumer, 'consumer name')}"


# Filters: "*" in any position matches every value there.


def _host_or_any(host: str) -> str:
    return "*" if host == "*" else host_token(host)


def events_filter(host: str = "*", family: str = "*", type: str = "*") -> str:
    """A subscription filter over events; a known type fills in its family."""
    if type != "*":
        of_type = _family_of(type)
        if family == "*":
            family = of_type
        elif family != of_type:
            raise SubjectError(f"event type {type!r} is in family {of_type!r}, not {family!r}")
    elif family not in ("*", "proc", "file"):
        raise SubjectError(f"unknown event family {family!r} (proc or file)")
    return f"{PREFIX}.{_EVENTS}.{_host_or_any(host)}.{family}.{type}"


def alerts_filter(host: str = "*", level: str = "*") -> str:
    """A subscription filter over alerts."""
    lvl = "*" if level == "*" else _level(level)
    return f"{PREFIX}.{_ALERTS}.{_host_or_any(host)}.{lvl}"


def meta_filter(host: str = "*", what: str = "*") -> str:
    """A subscription filter over meta messages."""
    w = "*" if what == "*" else _token(what, "meta kind")
    return f"{PREFIX}.{_META}.{_host_or_any(host)}.{w}"


def dlq_filter(consumer: str = "*") -> str:
    """A subscription filter over dead letters."""
    c = "*" if consumer == "*" else _token(consumer, "consumer name")
    return f"{PREFIX}.{_DLQ}.{c}"


_SHAPES: Final = (
    f"{PREFIX}.events.<host>.<proc|file>.<type>, {PREFIX}.alerts.<host>.<level>, "
    f"{PREFIX}.meta.<host>.<what> or {PREFIX}.dlq.<consumer>"
)


def parse_subject(subject: str) -> SubjectParts:
    """The parts of a concrete snoopbus subject (not a filter); SubjectError otherwise."""
    if not isinstance(subject, str):
        raise SubjectError(f"a subject is a str, got {type(subject).__name__}")
    tokens = subject.split(".")
    kind = tokens[1] if len(tokens) > 1 else ""
    expected = {_EVENTS: 5, _ALERTS: 4, _META: 4, _DLQ: 3}.get(kind)
    if (
        tokens[0] != PREFIX
        or expected is None
        or len(tokens) != expected
        or any(not t or t in ("*", ">") for t in tokens)
    ):
        raise SubjectError(f"not a snoopbus subject: {subject!r} (expected {_SHAPES})")
    if kind != _DLQ and not is_host_token(tokens[2]):
        raise SubjectError(f"subject {subject!r}: {tokens[2]!r} is not a host token (no '/', "
                           f"whitespace or control characters, at most "
                           f"{MAX_HOST_TOKEN_BYTES} bytes)")
    if kind == _EVENTS:
        _, _, host, family, type_ = tokens
        of_type = _FAMILY.get(type_)
        if of_type is None:
            raise SubjectError(f"subject {subject!r}: unknown event type {type_!r}")
        if of_type != family:
            raise SubjectError(f"subject {subject!r}: {type_!r} is a {of_type} event, not {family}")
        return SubjectParts(kind, host, family, type_)
    if kind == _ALERTS:
        if tokens[3] not in ALERT_LEVELS:
            raise SubjectError(f"subject {subject!r}: unknown alert level {tokens[3]!r}")
        return SubjectParts(kind, tokens[2], None, tokens[3])
    if kind == _META:
        return SubjectParts(kind, tokens[2], None, tokens[3])
    return SubjectParts(kind, None, None, tokens[2])
