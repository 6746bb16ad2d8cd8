"""The msgpack codec: round trips, the non-UTF-8 rule, and hostile payloads."""

from __future__ import annotations

import os
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snoopbus.proto import (
    MAX_BATCH_EVENTS,
    MAX_PAYLOAD_BYTES,
    DecodeError,
    EncodeError,
    SchemaError,
    decode_batch,
    decode_map,
    encode_batch,
    encode_map,
    text_from_kernel,
)
from tests.support.events import full_event

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_round_trip() -> None:
    events = [full_event(), full_event(id="a1b2-43", type="exit", exit_code=0, signal=9)]
    data = encode_batch(events)
    assert isinstance(data, bytes)
    assert decode_batch(data) == events
    assert msgpack.unpackb(data) == events  # plain msgpack: any language can read it


def test_normal_events_use_str_not_bin() -> None:
    data = encode_batch([full_event()])
    # Plain msgpack gives bytes for bin and str for str: UTF-8 text must be str.
    assert msgpack.unpackb(data)[0]["file"]["path"] == "/etc/passwd"
    assert msgpack.unpackb(data)[0]["proc"]["argv"] == ["cat", "/etc/passwd"]


def test_non_utf8_goes_as_bin_and_comes_back_as_str() -> None:
    raw = b"/tmp/\xff\xfe name\nwith newline"
    event = full_event()
    event["file"]["path"] = text_from_kernel(raw)
    data = encode_batch([event])
    on_wire = msgpack.unpackb(data)[0]["file"]["path"]
    assert on_wire == raw  # bin, holding the original bytes
    decoded = decode_batch(data)[0]
    assert decoded["file"]["path"] == event["file"]["path"]
    assert decoded["file"]["path"].encode("utf-8", "surrogateescape") == raw
    assert decoded["proc"] == event["proc"]


def test_validate_false_leaves_bin_as_bytes() -> None:
    event = full_event()
    event["file"]["path"] = text_from_kernel(b"\xff")
    assert decode_batch(encode_batch([event]), validate=False)[0]["file"]["path"] == b"\xff"


def test_third_party_non_utf8_str_is_accepted() -> None:
    # A str header followed by bytes that are not UTF-8 reads like our bin.
    event = full_event()
    data = msgpack.packb([event]).replace(b"\xab/etc/passwd", b"\xa4/\xff\xfe\xfd")
    assert decode_batch(data)[0]["file"]["path"] == "/\udcff\udcfe\udcfd"


def test_text_from_kernel_accepts_buffers() -> None:
    assert text_from_kernel(b"a\xff") == "a\udcff"
    assert text_from_kernel(bytearray(b"a\xff")) == "a\udcff"
    assert text_from_kernel(memoryview(b"a\xff")) == "a\udcff"


def test_encode_refuses_surrogates_that_are_not_escaped_bytes() -> None:
    event = full_event()
    event["proc"]["argv"] = ["ok", "\ud800"]
    with pytest.raises(EncodeError, match=r"event\[0\]\.proc\.argv\[1\].*U\+D800"):
        encode_batch([event])


def test_encode_empty_and_oversize_batches() -> None:
    with pytest.raises(EncodeError, match="at least one event"):
        encode_batch([])
    with pytest.raises(EncodeError, match="at most"):
        encode_batch([full_event()] * (MAX_BATCH_EVENTS + 1))
    big = full_event()
    big["proc"]["argv"] = ["x" * (MAX_PAYLOAD_BYTES // 4)] * 5
    with pytest.raises(EncodeError, match="split it"):
        encode_batch([big])


def test_encode_accepts_any_mapping_and_sequence() -> None:
    from types import MappingProxyType

    event = full_event()
    assert decode_batch(encode_batch((MappingProxyType(event),))) == [event]


def test_map_round_trip() -> None:
    report = {"kind": "loss", "lost": {"ringbuf_full": 12}, "path": text_from_kernel(b"\xff")}
    data = encode_map(report)
    assert decode_map(data) == {**report, "path": b"\xff"}  # no schema: bin stays bytes
    with pytest.raises(DecodeError, match="must be a msgpack map, got array"):
        decode_map(msgpack.packb([1]))
    with pytest.raises(EncodeError):
        encode_map([("a", 1)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "payload is empty"),
        (b"\xc1", "payload is not msgpack"),
        (b"\x92\x80", "payload is not msgpack"),  # truncated
        (b"\x91\x80\x00", "payload has trailing bytes"),
        (msgpack.packb({"v": 1}), "payload must be a msgpack array of event maps, got map"),
        (msgpack.packb("x"), "payload must be a msgpack array of event maps, got str"),
        (msgpack.packb([]), "payload holds an empty event array"),
        (b"\x91" * 100_000 + b"\x80", "payload nesting is too deep"),
        (b"\xdd\xff\xff\xff\xff", "payload is not msgpack"),  # claims 4G elements
        (b"\xdb\xff\xff\xff\xff", "payload is not msgpack"),  # claims a 4 GiB str
        (msgpack.packb([{1.5: 1}]), "payload is not msgpack"),  # non-str map key
        (msgpack.packb([{}] * (MAX_BATCH_EVENTS + 1)), "payload holds 10001 events"),
        (b"\x90" + b"\x00" * MAX_PAYLOAD_BYTES, "payload of 8388609 bytes is over the 8388608"),
    ],
)
def test_decode_errors(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_batch(data)
    assert str(info.value).startswith(message)
    assert info.value.field == "payload"
    assert info.value.reason == str(info.value)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(DecodeError, match="must be bytes, got str"):
        decode_batch("[]")  # type: ignore[arg-type]


def test_schema_error_in_batch_names_the_event() -> None:
    bad = full_event()
    bad["proc"]["pid"] = "x"
    with pytest.raises(SchemaError) as info:
        decode_batch(encode_batch([full_event(), bad]))
    assert info.value.field == "event[1].proc.pid"
    assert not isinstance(info.value, DecodeError)
    with pytest.raises(SchemaError, match=r"event\[1\]: must be a map, got int"):
        decode_batch(msgpack.packb([full_event(), 5]), validate=False)


def test_newer_version_in_batch() -> None:
    data = msgpack.packb([full_event(), full_event(), full_event(), full_event(v=2)])
    with pytest.raises(SchemaError, match=r"^event\[3\]\.v: schema version 2 is newer"):
        decode_batch(data)


def test_long_path_and_argv() -> None:
    event = full_event()
    event["file"]["path"] = "/" + "a" * 4095
    event["proc"]["argv"] = [str(i) for i in range(20_000)]
    assert decode_batch(encode_batch([event])) == [event]


# Property tests --------------------------------------------------------------

kernel_text = st.binary(max_size=64).map(text_from_kernel)
long_path = st.binary(min_size=4096, max_size=4096).map(text_from_kernel)


@FUZZ
@given(
    path=st.one_of(kernel_text, long_path),
    old_path=kernel_text,
    argv=st.lists(kernel_text, max_size=8),
    comm=kernel_text,
    host=kernel_text.filter(bool),
)
def test_kernel_bytes_round_trip_exactly(
    path: str, old_path: str, argv: list[str], comm: str, host: str
) -> None:
    event = full_event(type="renamed", host=host)
    event["file"].update(path=path, old_path=old_path)
    event["proc"].update(argv=argv, comm=comm, cwd=path)
    decoded = decode_batch(encode_batch([event, full_event()]))
    assert decoded == [event, full_event()]
    assert decoded[0]["file"]["path"].encode("utf-8", "surrogateescape") == path.encode(
        "utf-8", "surrogateescape"
    )


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    _expect_events_or_schema_error(data)


msgpackable = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=16)
    | st.binary(max_size=16),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 2, 0, "1", True]),
        "id": st.text(max_size=4) | st.binary(max_size=4),
        "ts": st.integers(min_value=-(2**63), max_value=2**63 - 1) | msgpackable,
        "host": st.text(max_size=4),
        "type": st.sampled_from(["open", "exec", "renamed", "nope"]) | msgpackable,
        "proc": st.fixed_dictionaries(
            {}, optional={"pid": msgpackable, "argv": st.lists(msgpackable, max_size=3)}
        )
        | msgpackable,
        "file": st.fixed_dictionaries({}, optional={"path": msgpackable}) | msgpackable,
        "extra": msgpackable,
    },
)


@FUZZ
@given(st.lists(event_like | msgpackable, max_size=4) | msgpackable)
def test_arbitrary_structures_never_crash(obj: Any) -> None:
    _expect_events_or_schema_error(msgpack.packb(obj, use_bin_type=True))


@FUZZ
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=200))
def test_corrupted_real_payloads_never_crash(noise: bytes, at: int) -> None:
    data = bytearray(encode_batch([full_event(), full_event(type="exec")]))
    at %= len(data)
    data[at : at + len(noise)] = noise
    _expect_events_or_schema_error(bytes(data))


def _expect_events_or_schema_error(data: bytes) -> None:
    for validate in (True, False):
        try:
            events = decode_batch(data, validate=validate)
        except SchemaError:  # DecodeError is a SchemaError
            continue
        assert isinstance(events, list) and events
        assert all(isinstance(e, dict) for e in events)
    try:
        decode_map(data)
    except DecodeError:
        pass


def test_random_bytes_quickly() -> None:
    # A cheap extra sweep over bigger random inputs than hypothesis shrinks towards.
    for _ in range(200):
        _expect_events_or_schema_error(os.urandom(4096))


def test_hostile_nesting_is_one_encode_error_with_or_without_kernel_text() -> None:
    """A consumer re-encoding a hostile event must get EncodeError (dead-letter it),
    not a RecursionError from the surrogate pass."""
    deep: dict[str, Any] = {"x": 1}
    for _ in range(5000):
        deep = {"k": deep}
    for host in ("web1", "\udc80"):  # the second takes the surrogate path
        with pytest.raises(EncodeError, match="event"):
            encode_batch([{**full_event(), "host": host, "ext": deep}])
