"""Events cut into messages that fit the server's max_payload.

A batch is encoded whole (the common case costs one msgpack call); only a
batch over the budget is split, into about as many runs as its size asks for,
recursively. An event that does not fit alone is truncated field by field
(argv first, then paths, then any other long text) and each field it cut is
flagged `<field>_truncated: true` beside it (proto/README.md), so it is sent
cut rather than dropped. Only an event that cannot fit even then (a budget
smaller than its fixed fields) is refused: the caller counts it lost.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Final, cast

from snoopbus.proto import TRUNCATED_PREFIX, EncodeError, Event, as_map, encode_batch

# (map, key, keep the end): the order fields are cut in. Paths keep their end, as
# the kernel's own truncation does (walked from the leaf up); the rest keep the start.
CUT_ORDER: Final = (
    ("proc", "argv", False),
    ("proc", "parent_argv", False),
    ("file", "path", True),
    ("file", "old_path", True),
    ("file", "target", True),
    ("file", "host_path", True),
    ("proc", "exe", True),
    ("proc", "cwd", True),
    ("proc", "parent_exe", True),
    ("proc", "script", True),
)
SLACK: Final = 8  # bytes cut beyond the excess: a shorter string may take a shorter header
# First pass: no field is cut below this many bytes (a long argv gives way before a
# 10-byte exe loses anything); the second pass cuts to nothing if it must.
FLOOR: Final = 256


class EventTooLarge(ValueError):
    """An event cannot be made to fit the budget, even with all its text cut."""


class Unencodable(ValueError):
    """An event cannot be put on the wire at all (EncodeError), whatever its size."""


def fit(events: list[Event], budget: int) -> Iterator[tuple[list[Event], bytes]]:
    """Consecutive runs of `events`, in order, each with its payload of at most
    `budget` bytes. Raises EventTooLarge or Unencodable for the one event
    that makes it impossible; the caller counts it and calls again with the rest
    (see `fit_all`)."""
    try:
        data = encode_batch(events)
    except EncodeError as exc:
        if len(events) == 1:
            raise Unencodable(str(exc)) from None
        data = b""  # too many or too large for the codec's own bounds: split
    if data and len(data) <= budget:
        yield events, data
        return
    if len(events) == 1:
        event = truncate_event(events[0], budget)
        # An encoded event (the native builder's bytes) rides in `events` too:
        # the publisher's Event-only types have yet to say so.
        yield [event], encode_batch([event])  # type: ignore[list-item]  # Event | bytes
        return
    parts = max(2, math.ceil(len(data) / budget)) if data else 2
    step = math.ceil(len(events) / parts)
    for i in range(0, len(events), step):
        yield from fit(events[i : i + step], budget)


def fit_all(
    events: list[Event], budget: int
) -> tuple[list[tuple[list[Event], bytes]], list[tuple[Event, ValueError]]]:
    """fit() over all of `events`: (the messages, the events refused and why)."""
    out: list[tuple[list[Event], bytes]] = []
    refused: list[tuple[Event, ValueError]] = []
    rest = events
    while rest:
        done = 0
        try:
            for run, data in fit(rest, budget):
                out.append((run, data))
                done += len(run)
            rest = []
        except (EventTooLarge, Unencodable) as exc:
            refused.append((rest[done], exc))
            rest = rest[done + 1 :]
    return out, refused


def _size(event: Event | bytes) -> int:
    return len(encode_batch([event]))


def truncate_event(event: Event | bytes, budget: int) -> Event | bytes:
    """A copy of `event` whose one-event payload fits `budget`, cutting fields in
    CUT_ORDER and then any other text of proc and file, longest first: each by
    what is still over, down to FLOOR bytes, then (second pass) to nothing.
    An encoded event (bytes) is cut as its map."""
    over = _size(event) - budget
    if over <= 0:
        return event
    mapped = as_map(event)
    # Copies: proc maps are shared by a process's events (collector/events.py).
    ev: dict[str, Any] = dict(mapped)
    for part in ("proc", "file"):
        if isinstance(ev.get(part), dict):
            ev[part] = dict(ev[part])
    others = sorted(
        ((part, key, False) for part in ("proc", "file") if isinstance(ev.get(part), dict)
         for key, value in ev[part].items()
         if isinstance(value, str) and not any(c[:2] == (part, key) for c in CUT_ORDER)),
        key=lambda c: -len(ev[c[0]][c[1]]),
    )
    for floor in (FLOOR, 0):
        for part, key, keep_end in (*CUT_ORDER, *others):
            fields = ev.get(part)
            if not isinstance(fields, dict):
                continue
            while over > 0 and (room := _length(fields.get(key)) - floor) > 0:
                cut = _cut(fields[key], min(over + SLACK, room), keep_end)
                if cut == fields[key]:
                    break  # not text: nothing to cut here
                fields[key] = cut
                fields[f"{key}_truncated"] = True
                over = _size(cast(Event, ev)) - budget
            if over <= 0:
                return cast(Event, ev)  # the copy, with text cut
    raise EventTooLarge(
        f"event {mapped.get('id')} does not fit in {budget} bytes even with its text cut"
    )


def _length(value: Any) -> int:
    """Bytes of text in a field (0 for what is not text)."""
    if isinstance(value, str):
        return len(_raw(value))
    if isinstance(value, list):
        return sum(len(_raw(v)) + 1 for v in value if isinstance(v, str))
    return 0


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _cut(value: Any, need: int, keep_end: bool) -> Any:
    """`value` (text, or a list of text) about `need` bytes shorter."""
    if isinstance(value, str):
        if keep_end:  # a path: what is left is marked as missing its start
            value = value.removeprefix(TRUNCATED_PREFIX)
        raw = _raw(value)
        keep = max(0, len(raw) - need)
        if keep_end:
            start = len(raw) - keep
            while start < len(raw) and raw[start] & 0xC0 == 0x80:
                start += 1  # not in the middle of a character
            return TRUNCATED_PREFIX + raw[start:].decode("utf-8", "surrogateescape")
        while keep > 0 and keep < len(raw) and raw[keep] & 0xC0 == 0x80:
            keep -= 1
        return raw[:keep].decode("utf-8", "surrogateescape")
    if isinstance(value, list):
        items = list(value)
        while items and need > 0:
            last = items[-1]
            cost = len(_raw(last)) + 1 if isinstance(last, str) else 1
            if cost <= need:
                items.pop()  # whole arguments from the end first
                need -= cost
            else:
                items[-1] = _cut(last, need, False)
                need = 0
        return items
    return value
