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

import nats.js.errors
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
)
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
    for subject_filter in filters:
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
        try:
            msg = await js.get_last_msg(STREAM_NAME, meta_subject(host, what))
        except nats.js.errors.NotFoundError:
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
    try:
        msg = await js.get_last_msg(STREAM_NAME, events_filter(host).rsplit(".", 2)[0] + ".>")
    except nats.js.errors.NotFoundError:
        return None
    return msg.time.timestamp() if msg.time is not None else None
