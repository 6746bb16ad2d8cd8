"""EventBuilder.build_raw's direct path makes exactly the events of the layered
one (records.decode -> build_all), for any record of the kinds it takes.

Pure: records are made as the probes lay them out, with hypothesis choosing
kinds, flags, results, names (relative, absolute, foldable, non-UTF-8, empty)
and process fields; a fresh builder of each kind sees the same sequence.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snoopbus.collector import records as R
from snoopbus.collector.events import EventBuilder
from snoopbus.collector.proc_cache import ProcCache, ProcInfo
from tests.support.fuzz import EXAMPLES

KINDS = [R.KIND_OPEN, R.KIND_CREATE, R.KIND_MODIFY, R.KIND_CLOSE_WRITE, R.KIND_DELETE,
         R.KIND_ATTRIB, R.KIND_MKDIR, R.KIND_RMDIR, R.KIND_RENAME, R.KIND_LINK, R.KIND_SYMLINK]
FLAGS = [R.F_PATH_TRUNC, R.F_PATH2_TRUNC, R.F_FD_GONE, R.F_NO_RET, R.F_EXCHANGE,
         1 << R.F_CLOSED_BY_SHIFT, 2 << R.F_CLOSED_BY_SHIFT]

component = st.binary(min_size=1, max_size=12).map(lambda b: b.replace(b"\0", b"x"))
walked = st.lists(component.map(lambda c: c.replace(b"/", b"_")), max_size=4).map(
    lambda cs: b"".join(c + b"\0" for c in cs))
name = st.one_of(
    st.just(b""),
    st.lists(st.one_of(component, st.sampled_from([b".", b"..", b""])), min_size=1,
             max_size=5).map(lambda cs: b"/".join(cs) + b"\0"),
    st.lists(component, min_size=1, max_size=3).map(lambda cs: b"/" + b"/".join(cs) + b"\0"),
)


@st.composite
def record(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(KINDS))
    flags = sum(draw(st.sets(st.sampled_from(FLAGS))))
    pid = draw(st.sampled_from([100, 101, 102]))
    comm = draw(st.sampled_from([b"touch", b"mv", b"\xffbad"])).ljust(16, b"\0")
    hdr = R.HDR.pack(draw(st.integers(0, 1 << 62)), draw(st.sampled_from([0, 7])), pid,
                     pid + draw(st.integers(0, 1)), 1, draw(st.sampled_from([0, 1000])), 0,
                     kind, flags, comm)
    segs = [draw(walked), draw(name),
            draw(walked) if kind in (R.KIND_RENAME, R.KIND_LINK) else b"",
            draw(name) if kind in (R.KIND_RENAME, R.KIND_LINK, R.KIND_SYMLINK) else b""]
    tail = R.FILE_TAIL.pack(draw(st.integers(-40, 9)), draw(st.integers(0, 1 << 40)),
                            draw(st.sampled_from([0, 42])), (8 << 20) | 1,
                            draw(st.sampled_from([4026531840, 4026532999])), 257,
                            draw(st.integers(0, 0o7777777)), draw(st.integers(0, 0o177777)),
                            draw(st.integers(0, 9)), *[len(s) for s in segs])
    return hdr + tail + b"".join(segs)


def builder(path_filter: bool) -> EventBuilder:
    cache = ProcCache()
    cache.put(100, ProcInfo("/usr/bin/touch", ["touch", "f"], "/tmp", container="c1"))
    cache.put(1, ProcInfo("/sbin/init", ["init"], "/"))
    return EventBuilder("h1", "inst", cache,
                        path_filter=(lambda p: b"x" in p) if path_filter else None)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(record(), min_size=1, max_size=12), st.booleans())
def test_direct_and_layered_paths_make_the_same_events(recs: list[bytes], filtered: bool) -> None:
    direct, layered = builder(filtered), builder(filtered)
    layered.clock_offset = direct.clock_offset
    for buf in recs:
        assert direct.build_raw(buf) == layered.build_all(R.decode(buf))
    assert direct.filtered_in_user == layered.filtered_in_user


def test_a_malformed_record_is_refused_as_by_the_layered_decoder() -> None:
    good = R.HDR.pack(1, 0, 100, 100, 1, 0, 0, R.KIND_CREATE, 0, b"x".ljust(16, b"\0")) + \
        R.FILE_TAIL.pack(3, 0, 42, 1, 1, 2, 0, 0, 3, 4, 0, 0, 0) + b"f\0a\0"
    assert builder(False).build_raw(good)[0][1]["file"]["path"] == "/a/f"
    with pytest.raises(R.RecordError, match="run past its end"):
        builder(False).build_raw(good[:-1])
    with pytest.raises(R.RecordError, match="shorter than its fixed part"):
        builder(False).build_raw(good[: R.HDR.size + 3])
