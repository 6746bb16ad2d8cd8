"""NATS subject and stream names. They are built here and nowhere else.

    snoopbus.events.<host>.<family>.<type>
    snoopbus.alerts.<host>.<level>
    snoopbus.meta.<host>.<what>
    snoopbus.dlq.<consumer>

That is how they are published. The stream stores every subject with a host
with the host's bucket after its kind (`snoopbus.events.<bucket>.<host>...`:
STREAM_TRANSFORM, the server's own partition()), so that a consumer partition
names its buckets in its filter and the server sends it only its own hosts.
`stored_filters` turns a published filter into the stream's; `parse_subject`
reads both forms (a stream made before the transform holds the published one).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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
# Buckets a host may fall in: the most partitions one consumer can be split into.
BUCKETS: Final = 64
# The stream's subject transform (src, dest): the bucket goes in after the kind, for
# every kind with a host (4 tokens or more; a dead letter has 3).
STREAM_TRANSFORM: Final = (
    f"{PREFIX}.*.*.>",
    f"{PREFIX}.{{{{wildcard(1)}}}}.{{{{partition({BUCKETS},2)}}}}.{{{{wildcard(2)}}}}.>",
)
# A host token is also a folder name ("host=<token>"): at most 255 bytes with that prefix.
MAX_HOST_TOKEN_BYTES: Final = 250


class SubjectError(ValueError):
    """A subject cannot be built from these parts, or is not a snoopbus subject."""


class SubjectParts(NamedTuple):
    """A parsed snoopbus subject.

    kind: "events", "alerts", "meta" or "dlq". host: the host token (None for
    dlq). family: "proc" or "file" for events, else None. type: the event
    type, the alert level, the meta <what>, or the dlq consumer name. stored:
    whether the subject is in the stream's form (with the host's bucket).
    """

    kind: str
    host: str | None
    family: str | None
    type: str
    stored: bool = False


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


def host_bucket(token: str) -> int:
    """The bucket of a host token: FNV-1a (32 bits) of its UTF-8 bytes modulo
    BUCKETS, as the server's partition() computes it for the stream."""
    h = 0x811C9DC5
    for byte in token.encode("utf-8", "surrogatepass"):
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % BUCKETS


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


# Tokens of each kind's subject as published; stored, one more (the bucket) but a dead letter.
_LENGTHS: Final = {_EVENTS: 5, _ALERTS: 4, _META: 4, _DLQ: 3}


def stored_filters(subject_filter: str, buckets: Iterable[int] | None = None) -> list[str]:
    """What matches in the stream the subjects `subject_filter` matches as
    published: its stored form, with a host's bucket (one filter per bucket
    in `buckets`, default any), then the filter itself, for what a stream
    stored before it partitioned. A filter that names its host keeps only its
    bucket (none if `buckets` leaves it out). A dead-letter filter, or one not
    of our shapes (a `>`), is returned as it is."""
    tokens = subject_filter.split(".")
    if (len(tokens) < 3 or tokens[0] != PREFIX or _LENGTHS.get(tokens[1]) != len(tokens)
            or tokens[1] == _DLQ or ">" in tokens):
        return [subject_filter]
    head, host, tail = ".".join(tokens[:2]), tokens[2], ".".join(tokens[2:])
    if host != "*":
        own = host_bucket(host)
        picks = [str(own)] if buckets is None or own in set(buckets) else []
    elif buckets is None:
        picks = ["*"]
    else:
        picks = [str(b) for b in sorted(set(buckets))]
    return [f"{head}.{b}.{tail}" for b in picks] + [subject_filter]


def published_subject(subject: str) -> str:
    """A subject as its publisher sent it (the stream's form without its bucket)."""
    tokens = subject.split(".")
    kind = tokens[1] if len(tokens) > 1 else ""
    if kind != _DLQ and len(tokens) == _LENGTHS.get(kind, -1) + 1:
        del tokens[2]
    return ".".join(tokens)


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
    expected = _LENGTHS.get(kind)
    stored = expected is not None and kind != _DLQ and len(tokens) == expected + 1
    if (
        tokens[0] != PREFIX
        or expected is None
        or len(tokens) != expected + stored
        or any(not t or t in ("*", ">") for t in tokens)
    ):
        raise SubjectError(f"not a snoopbus subject: {subject!r} (expected {_SHAPES}, "
                           "or as the stream stores them, with the host's bucket after the kind)")
    bucket = tokens.pop(2) if stored else ""
    if kind != _DLQ and not is_host_token(tokens[2]):
        raise SubjectError(f"subject {subject!r}: {tokens[2]!r} is not a host token (no '/', "
                           f"whitespace or control characters, at most "
                           f"{MAX_HOST_TOKEN_BYTES} bytes)")
    if stored and not (bucket.isascii() and bucket.isdigit()
                       and int(bucket) == host_bucket(tokens[2])):
        raise SubjectError(f"subject {subject!r}: {bucket!r} is not the bucket of host "
                           f"{tokens[2]!r} (the stream's partition of its host token)")
    if kind == _EVENTS:
        _, _, host, family, type_ = tokens
        of_type = _FAMILY.get(type_)
        if of_type is None:
            raise SubjectError(f"subject {subject!r}: unknown event type {type_!r}")
        if of_type != family:
            raise SubjectError(f"subject {subject!r}: {type_!r} is a {of_type} event, not {family}")
        return SubjectParts(kind, host, family, type_, stored)
    if kind == _ALERTS:
        if tokens[3] not in ALERT_LEVELS:
            raise SubjectError(f"subject {subject!r}: unknown alert level {tokens[3]!r}")
        return SubjectParts(kind, tokens[2], None, tokens[3], stored)
    if kind == _META:
        return SubjectParts(kind, tokens[2], None, tokens[3], stored)
    return SubjectParts(kind, None, None, tokens[2])


# Unchecked slices of a subject the caller knows is one of ours (it built it, or
# a stream filter delivered it): no error path, for per-message work.


def subject_host(subject: str) -> str:
    """The host token of an events, alerts or meta subject, published or stored, or ""."""
    tokens = subject.split(".")
    if len(tokens) < 4:
        return ""
    return tokens[3] if len(tokens) == _LENGTHS.get(tokens[1], -1) + 1 else tokens[2]


def subject_leaf(subject: str) -> str:
    """The last token: an event's type, an alert's level, a meta <what>, a dlq consumer."""
    return subject.rpartition(".")[2]
