"""What a consumer believes of a message: its subject, not its payload.

A publisher's permissions are checked by the server on the subject only (a
collector may publish `snoopbus.events.<its host>.>`), so the subject is the
one thing about a message that a compromised collector cannot choose. Every
message the runtime admits passes `untrusted()` first; one that fails is
dead-lettered with the reason (kind "subject") and never reaches a handler:

- the subject's host token is one host_token() could make (parse_subject: no
  '/', whitespace or control characters, at most 250 bytes), so a token is
  one plain name wherever it goes (the archive's host column, an older
  archive's `host=<token>` folder, a log line);
- its Nats-Msg-Id, when it has one, starts with that host token
  (proto/msgid.py): an id of another host was aimed at that host's next message;
- every event's `host` (as a token) and `type` are the subject's, and an
  alert's `host` and `level`, when it has them, are its subject's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from operator import attrgetter
from typing import Any

from snoopbus.proto import SubjectError, SubjectParts, host_token, parse_subject
from snoopbus.proto.msgid import ID_HEADER, id_belongs

KIND = "subject"  # Snoopbus-Dlq-Kind of what fails here
_HOST, _TYPE = attrgetter("host"), attrgetter("type")


@lru_cache(maxsize=4096)
def _parts(subject: str) -> SubjectParts | str:
    """The parsed subject, or why it is not one (cached: a stream has few subjects)."""
    try:
        return parse_subject(subject)
    except SubjectError as exc:
        return str(exc)


@lru_cache(maxsize=4096)
def _token(host: str) -> str:
    try:
        return host_token(host)
    except SubjectError:
        return ""  # matches no subject's host


def check_subject(subject: str, headers: dict[str, str] | None) -> SubjectParts | str:
    """The subject's parts if it and the message's id may be believed, else why not."""
    parts = _parts(subject)
    if isinstance(parts, str):
        return f"subject: {parts}"
    msg_id = headers.get(ID_HEADER) if headers else None
    if parts.host is not None and msg_id is not None and not id_belongs(msg_id, parts.host):
        return (f"subject: message id {msg_id[:80]!r} is not of host {parts.host!r} (an id "
                f"must start with its subject's host token and '.'), on {subject}")
    return parts


def events_mismatch(parts: SubjectParts, events: Sequence[Any], as_maps: bool) -> str | None:
    """Why these events (maps, or fast-path records) do not belong on this subject, or None."""
    if parts.kind != "events":
        return None
    if as_maps:
        hosts = {e["host"] for e in events}
        types = {e["type"] for e in events}
    else:
        hosts = set(map(_HOST, events))
        types = set(map(_TYPE, events))
    for host in hosts:
        if host != parts.host and _token(host) != parts.host:
            return (f"subject: an event claims host {host[:80]!r}, not the subject's "
                    f"{parts.host!r} ({len(events)} events)")
    if len(types) > 1 or parts.type not in types:
        other = sorted(t for t in types if t != parts.type)
        return f"subject: an event claims type {other[0]!r}, not the subject's {parts.type!r}"
    return None


def alert_mismatch(parts: SubjectParts, alert: Mapping[str, object]) -> str | None:
    """Why this alert map does not belong on this subject, or None."""
    # Absent is no claim (the contract does not require them): the subject says it.
    host, level = alert.get("host"), alert.get("level")
    if host is not None and (not isinstance(host, str) or _token(host) != parts.host):
        return (f"subject: the alert claims host {str(host)[:80]!r}, "
                f"not the subject's {parts.host!r}")
    if level is not None and level != parts.type:
        return (f"subject: the alert claims level {str(level)[:20]!r}, "
                f"not the subject's {parts.type!r}")
    return None
