"""The msgpack codec: one message payload is an array of one or more event maps.

Text from the kernel (paths, argv, ...) is decoded with surrogateescape, so a
str may hold lone surrogates U+DC80..U+DCFF standing for bytes that are not
UTF-8. msgpack str must be UTF-8, so such a string goes on the wire as msgpack
bin holding the original bytes; the validator turns bin in text fields back
into the same str. Packing is strict first and only walks the batch to do that
conversion when strict packing fails, so ordinary events pay nothing for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgpack

from snoopbus.proto import fastpath
from snoopbus.proto.schema import Event, SchemaError, validate_event

MAX_BATCH_EVENTS: Final = 10_000
MAX_PAYLOAD_BYTES: Final = 8 * 1024 * 1024


class DecodeError(SchemaError):
    """A payload is not a well-formed batch or map (as opposed to one bad field).

    `field` is always "payload"; str() is the reason, which names the payload.
    """

    def __init__(self, reason: str) -> None:
        ValueError.__init__(self, reason)
        self.field = "payload"
        self.reason = reason


class EncodeError(ValueError):
    """A batch or map cannot be put on the wire as it is."""


def text_from_kernel(raw: bytes | bytearray | memoryview) -> str:
    """Kernel bytes (a path, an argv element) as str; round-trips any bytes exactly."""
    return str(raw, "utf-8", "surrogateescape")


def _default(obj: object) -> object:
    # Called by msgpack only for types it does not pack itself.
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, Sequence) and not isinstance(obj, str | bytes | bytearray):
        return list(obj)
    raise TypeError(f"cannot put {type(obj).__name__} on the wire")


def _pack(obj: object, what: str) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True, default=_default)
    except UnicodeEncodeError:
        pass  # text from kernel bytes: fall through to the slow path
    except (TypeError, ValueError, OverflowError) as e:
        raise EncodeError(f"{what}: {e}") from None
    try:
        converted = _bin_for_surrogates(obj, what)
    except RecursionError:  # nested deeper than msgpack itself would pack
        raise EncodeError(f"{what}: nested too deeply to pack") from None
    try:
        return msgpack.packb(converted, use_bin_type=True, default=_default)
    except (TypeError, ValueError, OverflowError) as e:
        raise EncodeError(f"{what}: {e}") from None


def _bin_for_surrogates(obj: Any, path: str) -> Any:
    """A copy of `obj` where each str that is not valid UTF-8 is its original bytes."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
            return obj
        except UnicodeEncodeError:
            pass
        try:
            return obj.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as e:
            # U+D800..U+DC7F, U+DD00..: not from surrogateescape, so no bytes stand behind it.
            bad = obj[e.start]
            raise EncodeError(
                f"{path}: holds the lone surrogate U+{ord(bad):04X}, which is not an escaped "
                "kernel byte (decode kernel bytes with text_from_kernel)"
            ) from None
    if isinstance(obj, Mapping):
        return {
            _bin_for_surrogates(k, f"{path} key"): _bin_for_surrogates(v, f"{path}.{k}")
            for k, v in obj.items()
        }
    if isinstance(obj, Sequence) and not isinstance(obj, bytes | bytearray):
        return [_bin_for_surrogates(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    return obj


def _array_header(n: int) -> bytes:
    return bytes((0x90 | n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big")


def encode_batch(events: Sequence[Mapping[str, Any] | bytes]) -> bytes:
    """One message payload: a msgpack array of the event maps (at least one).

    An event may come already encoded: bytes holding its msgpack map, as the
    collector's native builder makes them (collector/native.py); those are
    spliced in as they are. Does not validate the events; callers that build
    events from untrusted input should call validate_event first.
    """
    n = len(events)
    if n == 0:
        raise EncodeError("a batch must hold at least one event")
    if n > MAX_BATCH_EVENTS:
        raise EncodeError(
            f"a batch holds at most {MAX_BATCH_EVENTS} events, got {n}: split it"
        )
    # All of them encoded already: one join (the ignore: a map among them is
    # the TypeError below, not a type to rule out beforehand).
    try:
        data = _array_header(n) + b"".join(events)  # type: ignore[arg-type]
    except TypeError:  # maps among them
        if any(e.__class__ is bytes for e in events):
            data = _array_header(n) + b"".join(
                [e if e.__class__ is bytes else _pack(e, "event") for e in events])
        else:
            data = _pack(events if isinstance(events, list | tuple) else list(events), "event")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise EncodeError(
            f"batch encodes to {len(data)} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit: split it"
        )
    return data


def as_map(event: Mapping[str, Any] | bytes) -> Mapping[str, Any]:
    """An event as a map, whether it is one or comes encoded (bytes): its keys
    in their wire order (the reference decoder's), text that went as bin as str."""
    if isinstance(event, bytes):
        return decode_batch(_array_header(1) + event, fast=False)[0]
    return event


def encode_map(obj: Mapping[str, Any]) -> bytes:
    """A msgpack map, for payloads that are not events (meta and loss reports, alerts)."""
    if not isinstance(obj, Mapping):
        raise EncodeError(f"encode_map needs a mapping, got {type(obj).__name__}")
    data = _pack(obj if isinstance(obj, dict) else dict(obj), "map")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise EncodeError(f"map encodes to {len(data)} bytes, over {MAX_PAYLOAD_BYTES}")
    return data


_KIND_NAMES: Final = {dict: "map", list: "array", str: "str", bytes: "bin", bool: "bool"}


def _unpack(data: object) -> object:
    """Any bytes in, a Python object or DecodeError out: never another exception."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"payload must be bytes, got {type(data).__name__}")
    size = len(data) if not isinstance(data, memoryview) else data.nbytes
    if size > MAX_PAYLOAD_BYTES:
        raise DecodeError(f"payload of {size} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit")
    if size == 0:
        raise DecodeError("payload is empty")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            # Lenient: a third-party publisher's non-UTF-8 str reads like our bin.
            unicode_errors="surrogateescape",
            strict_map_key=True,
            # Nothing can be longer than the payload that holds it.
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=size // 2,
            max_ext_len=size,
        )
    except msgpack.ExtraData:
        raise DecodeError("payload has trailing bytes after its msgpack array") from None
    except msgpack.StackError:
        raise DecodeError("payload nesting is too deep") from None
    except RecursionError:  # the pure-Python msgpack fallback recurses
        raise DecodeError("payload nesting is too deep") from None
    except (ValueError, TypeError, OverflowError, MemoryError) as e:
        reason = str(e) or "invalid data"
        raise DecodeError(f"payload is not msgpack: {reason}") from None


def decode_records(data: bytes) -> list[Any] | None:
    """The events of a payload as typed structs (attributes named as the keys,
    absent ones None), when every event is valid exactly as sent; None when
    the payload needs decode_batch to convert or reject something. Faster than
    decode_batch, which makes maps of these (proto/fastpath.py)."""
    return fastpath.decode(data, MAX_BATCH_EVENTS, MAX_PAYLOAD_BYTES)


def decode_batch(data: bytes, *, validate: bool = True, fast: bool = True) -> list[Event]:
    """The events of one message payload.

    Raises DecodeError when the payload is not a msgpack array of 1 to
    MAX_BATCH_EVENTS maps, and SchemaError (its base class) naming the field
    when an event is malformed. validate=False skips the per-field checks:
    events are maps as unpacked, and text that was not UTF-8 stays bytes.
    fast=False skips the fast path (decode_records), for tests comparing the two.
    """
    if validate and fast:
        records = decode_records(data)
        if records is not None:
            return fastpath.to_events(records)
    batch = _unpack(data)
    if not isinstance(batch, list):
        kind = _KIND_NAMES.get(type(batch), type(batch).__name__)
        raise DecodeError(
            f"payload must be a msgpack array of event maps, got {kind}"
        )
    n = len(batch)
    if n == 0:
        raise DecodeError("payload holds an empty event array")
    if n > MAX_BATCH_EVENTS:
        raise DecodeError(f"payload holds {n} events, over the limit of {MAX_BATCH_EVENTS}")
    if validate:
        for i, event in enumerate(batch):
            validate_event(event, index=i)
    else:
        for i, event in enumerate(batch):
            if event.__class__ is not dict:
                kind = _KIND_NAMES.get(type(event), type(event).__name__)
                raise SchemaError(f"event[{i}]", f"must be a map, got {kind}")
    return batch


def decode_map(data: bytes) -> dict[Any, Any]:
    """A non-event payload (meta and loss reports, alerts): one msgpack map."""
    obj = _unpack(data)
    if not isinstance(obj, dict):
        kind = _KIND_NAMES.get(type(obj), type(obj).__name__)
        raise DecodeError(f"payload must be a msgpack map, got {kind}")
    return obj
