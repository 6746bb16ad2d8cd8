"""Decoding of file records and the path arithmetic: pure, no root."""

from __future__ import annotations

import struct

import pytest

from snoopbus.collector import paths
from snoopbus.collector import records as R
from snoopbus.collector.events import encode_dev
from snoopbus.collector.proc_cache import ProcCache, ProcInfo
from snoopbus.collector.resolve import kernel_dev
from tests.support.records import builder, header


@pytest.mark.parametrize(
    ("base", "name", "want"),
    [
        (b"/a/b", b"c", b"/a/b/c"),
        (b"/a/b", b"./c/./d", b"/a/b/c/d"),
        (b"/a/b", b"../c", b"/a/c"),
        (b"/a/b", b"../../../../c", b"/c"),  # .. stops at /
        (b"/a/b", b"/x//y/", b"/x/y"),  # absolute names ignore the base
        (b"/", b"x", b"/x"),
        (b"/a", b"", b"/a"),  # AT_EMPTY_PATH: the dirfd itself
        (b"/a", b"sp ace/new\nline/\xff", b"/a/sp ace/new\nline/\xff"),
        (b"/a", b"..x/.y", b"/a/..x/.y"),  # only exact . and .. fold
    ],
)
def test_join_folds_lexically(base: bytes, name: bytes, want: bytes) -> None:
    assert paths.join(base, name) == want


def test_walked_names_and_prefixes() -> None:
    assert paths.names_to_path(b"c\0b\0a\0") == b"/a/b/c"
    assert paths.names_to_path(b"") == b"/"
    assert paths.user_string(b"abc\0junk") == b"abc"
    assert paths.is_under(b"/data/x", b"/data") and paths.is_under(b"/data", b"/data")
    assert not paths.is_under(b"/database", b"/data")
    assert paths.is_under(b"/anything", b"/")


def file_rec(kind: int, segs: list[bytes], flags: int = 0, ret: int = 0, cookie: int = 0,
             oflags: int = 0, mode: int = 0) -> bytes:
    tail = R.FILE_TAIL.pack(ret, cookie, 42, (8 << 20) | 1, 4026531840, 2, oflags, mode, 3,
                            *[len(s) for s in segs])
    return header(kind, flags) + tail + b"".join(segs)


def test_fd_path_record() -> None:
    rec = R.decode(file_rec(R.KIND_CREATE, [b"f\0tmp\0", b"", b"", b""], ret=3, oflags=0o101))
    assert isinstance(rec, R.FileRecord)
    assert rec.path == b"/tmp/f" and not rec.path_truncated
    assert (rec.ret, rec.ino, rec.mnt_ns, rec.oflags) == (3, 42, 4026531840, 0o101)


def test_name_record_relative_and_absolute() -> None:
    rel = R.decode(file_rec(R.KIND_DELETE, [b"w\0tmp\0", b"../x\0", b"", b""]))
    assert rel.path == b"/tmp/x"  # type: ignore[union-attr]
    ab = R.decode(file_rec(R.KIND_DELETE, [b"", b"/etc/./passwd\0", b"", b""]))
    assert ab.path == b"/etc/passwd"  # type: ignore[union-attr]


def test_fd_gone_is_unknown_not_guessed() -> None:
    rec = R.decode(file_rec(R.KIND_MODIFY, [b"", b"", b"", b""],
                            flags=R.F_FD_GONE | R.F_PATH_TRUNC))
    assert rec.path is None and rec.path_truncated  # type: ignore[union-attr]
    rel = R.decode(file_rec(R.KIND_DELETE, [b"", b"x\0", b"", b""],
                            flags=R.F_FD_GONE | R.F_PATH_TRUNC))
    assert rel.path is None and rel.path_truncated  # type: ignore[union-attr]


def test_resolved_paths_are_remembered_by_segments_not_mixed_up() -> None:
    """The memo of resolved paths: the same segments give the same path from
    it; segments that differ only in where base and name split, or in the fd
    being gone, do not share an entry; a full memo starts again, still right."""
    def path(segs: list[bytes], flags: int = 0) -> bytes | None:
        return R.decode(file_rec(R.KIND_DELETE, segs, flags=flags)).path  # type: ignore[union-attr]

    R._RESOLVED.clear()
    assert path([b"b\0a\0", b"c\0", b"", b""]) == b"/a/b/c"
    assert path([b"b\0a\0", b"c\0", b"", b""]) == b"/a/b/c"  # from the memo
    assert len(R._RESOLVED) == 1
    assert path([b"a\0", b"b/c\0", b"", b""]) == b"/a/b/c"
    assert path([b"b\0a\0", b"c\0", b"", b""], R.F_FD_GONE | R.F_PATH_TRUNC) is None
    for i in range(R._RESOLVED_MAX + 10):
        assert path([b"d\0", f"f{i}\0".encode(), b"", b""]) == f"/d/f{i}".encode()
    assert len(R._RESOLVED) <= R._RESOLVED_MAX
    assert path([b"b\0a\0", b"c\0", b"", b""]) == b"/a/b/c"


def test_close_has_no_ret() -> None:
    rec = R.decode(file_rec(R.KIND_CLOSE_WRITE, [b"f\0", b"", b"", b""], flags=R.F_NO_RET))
    assert rec.ret is None  # type: ignore[union-attr]


def test_short_and_overlong_records_raise() -> None:
    with pytest.raises(R.RecordError, match="shorter than its fixed part"):
        R.decode(header(R.KIND_RENAME) + b"\0" * 4)
    bad = file_rec(R.KIND_DELETE, [b"a\0", b"", b"", b""])[:-1]
    with pytest.raises(R.RecordError, match="run past its end"):
        R.decode(bad)


def test_rename_makes_two_halves_with_one_cookie() -> None:
    raw = file_rec(R.KIND_RENAME, [b"w\0", b"a\0", b"w\0", b"b\0"], cookie=77)
    events = builder().build_all(R.decode(raw))
    assert [(s, e["type"], e["file"]["path"], e["cookie"]) for s, e in events] == [
        ("snoopbus.events.h.file.moved_from", "moved_from", "/w/a", 154),
        ("snoopbus.events.h.file.moved_to", "moved_to", "/w/b", 154),
    ]
    assert events[0][1]["proc"]["exe"] == "/usr/bin/mv"


def test_exchange_is_two_moves_with_two_cookies() -> None:
    raw = file_rec(R.KIND_RENAME, [b"w\0", b"a\0", b"w\0", b"b\0"], cookie=5,
                   flags=R.F_EXCHANGE)
    events = [e for _, e in builder().build_all(R.decode(raw))]
    assert [(e["type"], e["file"]["path"], e["cookie"]) for e in events] == [
        ("moved_from", "/w/a", 10), ("moved_to", "/w/b", 10),
        ("moved_from", "/w/b", 11), ("moved_to", "/w/a", 11),
    ]


def test_link_symlink_and_non_utf8() -> None:
    b = builder()
    link = b.build_all(R.decode(file_rec(R.KIND_LINK, [b"w\0", b"old\0", b"w\0", b"new\0"])))
    f = link[0][1]["file"]
    assert (f["path"], f["target"], f["mnt_ns"]) == ("/w/new", "/w/old", 4026531840)
    sym = b.build_all(R.decode(file_rec(R.KIND_SYMLINK, [b"w\0", b"l\xff\0", b"", b"../t\0"])))
    f = sym[0][1]["file"]
    assert f["path"].encode("utf-8", "surrogateescape") == b"/w/l\xff"
    assert f["target"] == "../t"


def test_forked_child_inherits_parent_entry() -> None:
    cache = ProcCache()
    cache.put(100, ProcInfo("/bin/sh", ["sh"], "/"))
    info = cache.lookup(2_000_000_000, 100, 0)  # no such /proc entry: from the parent
    assert info is not None and info.exe == "/bin/sh"


def test_dev_encoding_matches_stat() -> None:
    import os

    st = os.stat("/")
    assert encode_dev(kernel_dev(st.st_dev)) == st.st_dev
    assert struct.calcsize("<qQQIIIIIi4H") == 56  # struct file_rec after the header
