"""The native builder (collector/fastbuild.c) makes exactly the events of the
Python one (records.decode -> build_all), byte for byte on the wire, for any
record: the ones it takes and the ones it hands back.

Pure: records are made as the probes lay them out, with hypothesis choosing
kinds, flags, results, names (relative, absolute, foldable, non-UTF-8, empty)
and process fields; a builder of each kind sees the same sequence.
"""

from __future__ import annotations

import logging
import shutil

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snoopbus.collector import native
from snoopbus.collector import records as R
from snoopbus.collector.events import EventBuilder
from snoopbus.collector.proc_cache import ProcCache, ProcInfo
from snoopbus.collector.reader import Batch
from snoopbus.proto import as_map, decode_batch, encode_batch
from tests.support.fuzz import EXAMPLES
from tests.support.records import needs_native, wire

KINDS = [R.KIND_OPEN, R.KIND_CREATE, R.KIND_MODIFY, R.KIND_CLOSE_WRITE, R.KIND_DELETE,
         R.KIND_ATTRIB, R.KIND_MKDIR, R.KIND_RMDIR, R.KIND_RENAME, R.KIND_LINK, R.KIND_SYMLINK,
         R.KIND_XATTR]
FLAGS = [R.F_PATH_TRUNC, R.F_PATH2_TRUNC, R.F_FD_GONE, R.F_NO_RET, R.F_EXCHANGE,
         1 << R.F_CLOSED_BY_SHIFT, 2 << R.F_CLOSED_BY_SHIFT, R.F_TMPFILE, R.F_TOUCHED,
         R.F_URING, 1 << 8]  # 8: a flag no table names (yet)

component = st.binary(min_size=1, max_size=12).map(lambda b: b.replace(b"\0", b"x"))
walked = st.lists(component.map(lambda c: c.replace(b"/", b"_")), max_size=4).map(
    lambda cs: b"".join(c + b"\0" for c in cs))
name = st.one_of(
    st.just(b""),
    st.lists(st.one_of(component, st.sampled_from([b".", b"..", b""])), min_size=1,
             max_size=5).map(lambda cs: b"/".join(cs) + b"\0"),
    st.lists(component, min_size=1, max_size=3).map(lambda cs: b"/" + b"/".join(cs) + b"\0"),
    component.map(lambda c: c.replace(b"/", b"_") + b"\0"),  # one component: taken natively
)
long_text = st.text(min_size=30, max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))


@st.composite
def record(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(KINDS))
    flags = sum(draw(st.sets(st.sampled_from(FLAGS), max_size=2)))
    pid = draw(st.sampled_from([100, 101, 102, 103]))
    comm = draw(st.sampled_from([b"touch", b"mv", b"\xffbad", b"0123456789abcdef"]))
    hdr = R.HDR.pack(draw(st.integers(0, (1 << 64) - 1)), draw(st.sampled_from([0, 7])), pid,
                     pid + draw(st.integers(0, 1)), 1, draw(st.sampled_from([0, 1000, 70000])),
                     0, kind, flags, comm.ljust(16, b"\0"))
    segs = [draw(st.one_of(walked, long_text.map(lambda t: t.replace(b"\0", b"") + b"\0"))),
            draw(name),
            draw(walked) if kind in (R.KIND_RENAME, R.KIND_LINK) else b"",
            draw(name) if kind in (R.KIND_RENAME, R.KIND_LINK, R.KIND_SYMLINK) else b""]
    tail = R.FILE_TAIL.pack(draw(st.integers(-(1 << 63), (1 << 63) - 1)),
                            draw(st.integers(0, (1 << 64) - 1)),
                            draw(st.sampled_from([0, 42, 1 << 40])),
                            draw(st.sampled_from([(8 << 20) | 1, (259 << 20) | 70000, 0])),
                            draw(st.sampled_from([4026531840, 4026532999])),
                            draw(st.sampled_from([257, 2, 9, 1000])),
                            draw(st.integers(0, (1 << 32) - 1)), draw(st.integers(0, 0o177777)),
                            draw(st.integers(-200, 9)), *[len(s) for s in segs])
    return hdr + tail + b"".join(segs)


@st.composite
def repeat(draw: st.DrawFn) -> bytes:
    """A KIND_REPEAT record of a thread record() may have made the last one of."""
    pid = draw(st.sampled_from([100, 101, 102, 103]))
    hdr = R.HDR.pack(draw(st.integers(0, (1 << 63) - 1)), 0, pid, pid + draw(st.integers(0, 1)),
                     1, 0, 0, R.KIND_REPEAT, 0, b"x".ljust(16, b"\0"))
    return hdr + R.REPEAT_TAIL.pack(draw(st.integers(1, 1 << 20)), draw(st.sampled_from(KINDS)),
                                    0)


def builder(path_filter: bool) -> EventBuilder:
    cache = ProcCache()
    cache.put(100, ProcInfo("/usr/bin/touch", ["touch", "f", "\udcff"], "/tmp", container="c1"))
    cache.put(101, ProcInfo("/usr/bin/mv", ["mv"] + ["x" * 40] * 20, "/"))
    cache.put(1, ProcInfo("/sbin/init", ["init"], "/"))
    return EventBuilder("h1", "inst", cache,
                        path_filter=(lambda p: b"x" in p) if path_filter else None)


@needs_native
@settings(max_examples=EXAMPLES * 2, deadline=None)
@given(st.lists(st.one_of(record(), record(), repeat()), min_size=1, max_size=12), st.booleans(),
       st.integers(-(1 << 62), 0))
def test_native_and_python_builders_make_the_same_events(
    recs: list[bytes], filtered: bool, offset: int
) -> None:
    fast, ref = builder(filtered), builder(filtered)
    assert fast.native
    fast.clock_offset = ref.clock_offset = offset
    got = fast.build_many(recs)
    want: Batch = []
    for buf in recs:
        try:
            want.extend(ref.build_raw(buf))
        except (R.RecordError, OverflowError):
            return  # a malformed record stops both (the reader counts it per record)
    assert [s for s, _ in got] == [s for s, _ in want]
    assert wire(got) == wire(want)  # byte for byte, bin for text that is not UTF-8
    natives = [i for i, (_, e) in enumerate(got) if isinstance(e, bytes)]
    assert [as_map(got[i][1]) for i in natives] == [
        decode_batch(encode_batch([want[i][1]]))[0] for i in natives]
    assert fast.filtered_in_user == ref.filtered_in_user
    assert next(fast._seq) == next(ref._seq)  # one id sequence for both paths
    assert fast.orphan_repeats == ref.orphan_repeats  # the same base kept for each repeat


@needs_native
def test_the_common_records_are_taken_natively_and_the_others_not() -> None:
    base = b"d\0tmp\0"
    mk = lambda kind, segs, flags=0, nr=257: R.HDR.pack(  # noqa: E731
        1, 0, 100, 100, 1, 0, 0, kind, flags, b"x".ljust(16, b"\0")) + R.FILE_TAIL.pack(
        3, 5, 42, 1, 1, nr, 0, 0, 3, *[len(s) for s in segs]) + b"".join(segs)
    b = builder(False)
    fast = b.build_many([
        mk(R.KIND_CREATE, [b"f\0" + base, b"", b"", b""]),
        mk(R.KIND_RENAME, [base, b"a\0", base, b"b\0"]),
        mk(R.KIND_DELETE, [base, b"sub/a\0", b"", b""]),  # resolved after the fact
        mk(R.KIND_CLOSE_WRITE, [b"f\0" + base, b"", b"", b""], flags=1 << R.F_CLOSED_BY_SHIFT),
    ])
    assert [type(e) for _, e in fast] == [bytes, bytes, bytes, dict, dict]
    assert [as_map(e)["id"] for _, e in fast] == [f"inst-{i}" for i in range(1, 6)]
    assert as_map(fast[1][1])["file"]["path"] == "/tmp/d/a"


def test_a_malformed_record_is_refused_as_by_the_python_decoder() -> None:
    good = R.HDR.pack(1, 0, 100, 100, 1, 0, 0, R.KIND_CREATE, 0, b"x".ljust(16, b"\0")) + \
        R.FILE_TAIL.pack(3, 0, 42, 1, 1, 2, 0, 0, 3, 4, 0, 0, 0) + b"f\0a\0"
    [(_, ev)] = builder(False).build_many([good])
    assert as_map(ev)["file"]["path"] == "/a/f"
    refused: list[bytes] = []

    def one(buf: bytes) -> list:
        refused.append(buf)
        return []

    assert builder(False).build_many([good[:-1], good[: R.HDR.size + 3]], one) == []
    assert refused == [good[:-1], good[: R.HDR.size + 3]]
    with pytest.raises(R.RecordError, match="run past its end"):
        builder(False).build_raw(good[:-1])


def test_mixed_batches_encode_as_their_maps() -> None:
    """encode_batch splices encoded events among maps: the same payload."""
    evs = [{"v": 1, "id": f"i-{i}", "ts": i, "host": "h", "type": "open"} for i in range(20)]
    packed = [msgpack.packb(e) for e in evs]
    whole = encode_batch(evs)
    assert encode_batch(packed) == whole
    mixed = [p if i % 3 else e for i, (p, e) in enumerate(zip(packed, evs, strict=True))]
    assert encode_batch(mixed) == whole


def test_without_the_native_module_the_python_builder_makes_every_event(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(native, "_fastbuild", None)
    monkeypatch.setattr(native, "MISSING", "not built (test)")
    monkeypatch.setattr(native, "_said", False)
    with caplog.at_level(logging.INFO, logger=native.__name__):
        b = builder(False)
    assert not b.native
    assert "the Python builder makes every event" in caplog.text
    assert "not built (test)" in native.status()
    from snoopbus.collector.doctor import check_native_builder

    check = check_native_builder()
    assert not check.ok and "not built (test)" in check.detail and "gcc" in check.hint
    good = R.HDR.pack(1, 0, 100, 100, 1, 0, 0, R.KIND_CREATE, 0, b"x".ljust(16, b"\0")) + \
        R.FILE_TAIL.pack(3, 0, 42, 1, 1, 2, 0, 0, 3, 4, 0, 0, 0) + b"f\0a\0"
    [(_, ev)] = b.build_many([good])
    assert isinstance(ev, dict) and ev["id"] == "inst-1"


@needs_native
def test_snoopbus_native_0_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNOOPBUS_NATIVE", "0")
    assert not builder(False).native
    assert "off (SNOOPBUS_NATIVE=0)" in native.status()
    monkeypatch.setenv("SNOOPBUS_NATIVE", "1")
    assert builder(False).native


def test_a_layout_it_does_not_read_disables_it(monkeypatch: pytest.MonkeyPatch) -> None:
    if native.MISSING is not None:
        pytest.skip(native.MISSING)
    monkeypatch.setattr(native, "_said", False)
    real = native.layout
    monkeypatch.setattr(native, "layout", lambda *a: {**real(*a), "tail_format": "<qQ"})
    assert not builder(False).native


def test_the_native_module_is_built_where_a_compiler_is() -> None:
    """`make setup` builds it (setup.py); a host without gcc runs the Python path."""
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler here")
    assert native.MISSING is None


@needs_native
def test_the_benchmarks_records_make_the_same_events() -> None:
    """The file_ops mix (create, write, close, rename, unlink) as the probes
    lay it out, from a process with a long argv: all taken natively."""
    from tests.bench.collector_cpu import PID, iteration

    def made() -> EventBuilder:
        cache = ProcCache()
        cache.put(PID, ProcInfo("/usr/local/bin/file_load",
                                ["/usr/local/bin/file_load", "/tmp/x" * 30, "5", "1"], "/root"))
        return EventBuilder("bench-host", "a1b2c3d4", cache)

    raw = [buf for i in range(50) for buf in iteration(i)]
    fast, ref = made(), made()
    ref.clock_offset = fast.clock_offset
    got = fast.build_many(raw)
    assert all(isinstance(e, bytes) for _, e in got) and len(got) == 300
    assert wire(got) == wire([ev for buf in raw for ev in ref.build_raw(buf)])


@needs_native
def test_an_encoded_event_over_the_limit_is_cut_as_its_map() -> None:
    from snoopbus.collector.fit import fit_all

    base = b"d\0tmp\0"
    segs = [b"f" * 200 + b"\0" + base, b"", b"", b""]
    buf = R.HDR.pack(1, 0, 101, 101, 1, 0, 0, R.KIND_CREATE, 0, b"x".ljust(16, b"\0")) + \
        R.FILE_TAIL.pack(3, 0, 42, 1, 1, 257, 0, 0, 3, *[len(s) for s in segs]) + b"".join(segs)
    fast, ref = builder(False), builder(False)
    ref.clock_offset = fast.clock_offset
    [(_, packed)] = fast.build_many([buf])
    [(_, event)] = ref.build_raw(buf)
    assert isinstance(packed, bytes)
    budget = len(encode_batch([event])) - 300
    [(run_a, data_a)], [] = fit_all([packed], budget)
    [(_, data_b)], [] = fit_all([event], budget)
    assert data_a == data_b and len(data_a) <= budget
    assert as_map(run_a[0])["proc"]["argv_truncated"] is True
