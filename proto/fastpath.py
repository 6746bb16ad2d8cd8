"""decode_batch's common case at C speed: the schema's tables as msgspec types.

msgspec decodes a payload straight into typed structs and checks in C what
`schema.validate_event` checks in Python, in a quarter of the time the
msgpack unpack plus the Python validator take. It is a filter, never the
judge: it accepts only payloads the reference path would accept *unchanged*
— every key known, every value of its exact wire type, all text valid UTF-8
(no bin to convert) — and returns None for anything else (an unknown key,
text sent as bin, a newer version, any error), which then goes through the
reference path and gets the same events or the same SchemaError as before.
tests/proto/test_proto_fastpath.py holds the two paths to that.

The structs themselves are handed on too (`Delivery.records`): a consumer
that reads a few fields of many events (the archive) saves making the maps.
Absent keys read None; the structs are not tracked by the garbage collector
(they hold no cycles), so a window of a million costs no collection passes.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, cast

import msgspec

from snoopbus.proto.schema import (
    _FILE,
    _FILE_FIELDS,
    _PROC,
    _PROC_FIELDS,
    _REQUIRED,
    _TEXT_LIST,
    _TOP_FIELDS,
    EVENT_TYPES,
    SCHEMA_VERSION,
    Event,
    _Kind,
)


def _struct(
    name: str, table: dict[str, _Kind], required: dict[str, Any]
) -> type[msgspec.Struct]:
    """A struct of `table`'s keys, each optional unless in `required`; keys
    outside the table fail the decode. An absent key reads None: its type
    does not admit nil, so msgspec refuses a nil sent for it (as the schema
    does), and None can only mean absent (omit_defaults leaves it out of maps)."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = list(required.items())
    for key, kind in table.items():
        if key in required:
            continue
        if kind is _TEXT_LIST:
            t: Any = list[str]
        elif kind is _PROC:
            t = _Proc
        elif kind is _FILE:
            t = _File
        else:
            t = kind  # int, str, bool: msgspec is strict, a bool is never an int
        fields.append((key, t, None))
    return msgspec.defstruct(
        name, fields, forbid_unknown_fields=True, omit_defaults=True, gc=False
    )


_Proc = _struct("Proc", _PROC_FIELDS, {})
_File = _struct("File", _FILE_FIELDS, {})
_REQUIRED_TYPES: Final[dict[str, Any]] = {
    "v": Literal[SCHEMA_VERSION],
    # The id's character set is checked after the decode, over the whole batch at once.
    "id": Annotated[str, msgspec.Meta(min_length=1, max_length=1024)],
    "ts": int,
    "host": Annotated[str, msgspec.Meta(min_length=1)],
    "type": Literal[EVENT_TYPES],
}
assert set(_REQUIRED_TYPES) == set(_REQUIRED)
_Event = _struct("Event", _TOP_FIELDS, _REQUIRED_TYPES)
_DECODER: Final[msgspec.msgpack.Decoder[list[Any]]] = msgspec.msgpack.Decoder(
    list[_Event]  # type: ignore[valid-type]  # made at run time: records are read as Any
)
# A struct's fields in order (what msgspec.structs.astuple gives), by map: the
# event itself (None), "proc" and "file"; and a struct with every field absent.
KINDS: Final[dict[str | None, dict[str, _Kind]]] = {
    None: _TOP_FIELDS, "proc": _PROC_FIELDS, "file": _FILE_FIELDS,
}  # fmt: skip
FIELDS: Final[dict[str | None, tuple[str, ...]]] = {
    None: _Event.__struct_fields__, "proc": _Proc.__struct_fields__,
    "file": _File.__struct_fields__,
}  # fmt: skip
EMPTY: Final[dict[str, Any]] = {"proc": _Proc(), "file": _File()}
_to_builtins: Final = msgspec.to_builtins


def decode(data: bytes, max_events: int, max_bytes: int) -> list[Any] | None:
    """The events of `data` as typed structs (absent keys None) if they pass
    every check as they are, else None."""
    try:
        if len(data) > max_bytes:
            return None
        records = _DECODER.decode(data)
    except Exception:  # anything at all: the reference path says what is wrong
        return None
    if not 0 < len(records) <= max_events:
        return None
    # Ids are 1-1024 printable ASCII characters without spaces: one check for all of them.
    ids = "".join([r.id for r in records])
    if not (ids.isascii() and ids.isprintable()) or " " in ids:
        return None
    return records


def to_events(records: list[Any]) -> list[Event]:
    """Structs from `decode` as the event maps the reference path makes (absent keys left out)."""
    return cast(list[Event], _to_builtins(records))
