"""Reading back, from the stream, the hosts it has heard of and their last reports.

The stream keeps every collector's meta messages (snoopbus.meta.<host>.<what>)
and events; JetStream lists the subjects it holds (stream info with a subject
filter) and returns the last message of a subject, or of a filter, with the
time it stored it. The alerter seeds its host-health state from this at
start; `snoopbus fleet` shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext

from snoopbus.proto import (
    STREAM_NAME,
    DecodeError,
    SubjectError,
    decode_map,
    events_filter,
    meta_filter,
    meta_subject,
    parse_subject,
    stored_filters,
)
from snoopbus.proto.bus import last_stored
from snoopbus.proto.subjects import REPORTS


@dataclass(frozen=True)
class StoredReport:
    host: str  # the subject's host token
    what: str  # status, heartbeat or loss
    body: dict[str, Any]
    stored: float  # when the stream stored it, seconds since the epoch (the server's clock)


async def hosts_in_stream(js: JetStreamContext, host: str = "*", events: bool = False) -> set[str]:
    """Host tokens with meta messages (and, with `events`, events) in the stream."""
    filters = [meta_filter(host)] + ([events_filter(host)] if events else [])
    hosts: set[str] = set()
    for subject_filter in (stored for f in filters for stored in stored_filters(f)):
        info = await js.stream_info(STREAM_NAME, subjects_filter=subject_filter)
        for subject in info.state.subjects or {}:
            try:
                parts = parse_subject(subject)
            except SubjectError:
                continue  # stored before the current rules: not a host we can name
            if parts.host is not None:
                hosts.add(parts.host)
    return hosts


async def last_reports(js: JetStreamContext, host: str) -> list[StoredReport]:
    """`host`'s last status, heartbeat and loss report that the stream holds, oldest first."""
    out = []
    for what in REPORTS:
        msg = await last_stored(js, meta_subject(host, what))
        if msg is None:
            continue
        try:
            body = decode_map(msg.data or b"")
        except DecodeError:
            continue  # not a report: nothing to learn from it
        stored = msg.time.timestamp() if msg.time is not None else 0.0
        out.append(StoredReport(host, what, body, stored))
    return sorted(out, key=lambda r: r.stored)


async def last_event_time(js: JetStreamContext, host: str) -> float | None:
    """When the stream stored `host`'s newest event message (epoch seconds), if it holds any."""
    msg = await last_stored(js, events_filter(host))
    if msg is None:
        return None
    return msg.time.timestamp() if msg.time is not None else None
