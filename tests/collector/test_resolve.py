"""Names resolved again after the fact (collector/resolve.py) and the record
parts that carry what they need (collector/records.py): real files in a temp
dir, no kernel."""

from __future__ import annotations

import os
from pathlib import Path

from snoopbus.collector import records as R
from snoopbus.collector.resolve import (
    CHECKED,
    MISMATCH,
    UNCHECKED,
    kernel_dev,
    needs_resolution,
    resolve_after,
    unfolded,
)
from snoopbus.proto import TRUNCATED_PREFIX


def ident(p: Path) -> tuple[int, int]:
    st = os.stat(p)
    return kernel_dev(st.st_dev), st.st_ino


def layout(tmp_path: Path) -> Path:
    (tmp_path / "real/sub").mkdir(parents=True)
    (tmp_path / "lnk").symlink_to("real/sub")
    (tmp_path / "decoy/sub").mkdir(parents=True)
    return tmp_path


def test_only_names_with_a_directory_part_need_it() -> None:
    assert not needs_resolution(b"f") and not needs_resolution(b"/f")
    assert not needs_resolution(b"d/") and not needs_resolution(b"//f")
    assert needs_resolution(b"a/f") and needs_resolution(b"../f") and needs_resolution(b"/a/f")
    assert unfolded(b"/w", b"lnk/../q") == b"/w/lnk/../q"
    assert unfolded(b"/w", b"/abs/x") == b"/abs/x"


def test_dotdot_after_a_symlink_goes_where_the_kernel_went(tmp_path: Path) -> None:
    t = layout(tmp_path)
    raw = bytes(t) + b"/lnk/../q"
    path, how = resolve_after(raw, frozenset({ident(t / "real")}))
    assert (path, how) == (bytes(t) + b"/real/q", CHECKED)


def test_a_directory_the_kernel_did_not_change_is_a_mismatch(tmp_path: Path) -> None:
    t = layout(tmp_path)
    path, how = resolve_after(bytes(t) + b"/lnk/../q", frozenset({ident(t / "decoy")}))
    assert how == MISMATCH and path == bytes(t) + b"/real/q"


def test_nothing_to_check_against_is_said(tmp_path: Path) -> None:
    t = layout(tmp_path)
    assert resolve_after(bytes(t) + b"/lnk/q", frozenset())[1] == UNCHECKED
    gone = resolve_after(bytes(t) + b"/gone/dir/q", frozenset({ident(t)}))
    assert gone == (bytes(t) + b"/gone/dir/q", UNCHECKED)


def test_attrib_is_checked_by_the_file_itself(tmp_path: Path) -> None:
    t = layout(tmp_path)
    (t / "real/sub/f").write_text("x")
    raw = bytes(t) + b"/lnk/f"
    assert resolve_after(raw, frozenset({ident(t / "real/sub/f")}), in_dir=False) == (
        bytes(t) + b"/real/sub/f", CHECKED)
    assert resolve_after(raw, frozenset({ident(t / "real/sub")}), in_dir=False)[1] == MISMATCH


def _file_rec(kind: int, segs: list[bytes], flags: int = 0, trailer: bytes = b"") -> bytes:
    hdr = R.HDR.pack(1, 0, 100, 100, 1, 0, 0, kind, flags, b"rm".ljust(16, b"\0"))
    tail = R.FILE_TAIL.pack(0, 0, 0, 1, 1, 2, 0, 0, -1, *[len(s) for s in segs])
    return hdr + tail + b"".join(segs) + trailer


def test_records_carry_the_raw_name_and_the_touched_inodes() -> None:
    trailer = R.TOUCHED.pack(42, 7) + R.TOUCHED.pack(43, 7)
    rec = R.decode(_file_rec(R.KIND_DELETE, [b"w\0", b"lnk/../q\0", b"", b""], R.F_TOUCHED,
                             trailer))
    assert isinstance(rec, R.FileRecord)
    assert rec.path == b"/w/q"  # the text folding, kept for what cannot be resolved
    assert rec.raw_path == b"/w/lnk/../q" and rec.touched == {(7, 42), (7, 43)}
    plain = R.decode(_file_rec(R.KIND_DELETE, [b"w\0", b"q\0", b"", b""]))
    assert isinstance(plain, R.FileRecord)
    assert plain.raw_path is None and plain.touched == frozenset()


def test_a_truncated_walk_is_marked_and_not_resolved() -> None:
    rec = R.decode(_file_rec(R.KIND_DELETE, [b"deep\0", b"a/q\0", b"", b""], R.F_PATH_TRUNC))
    assert isinstance(rec, R.FileRecord)
    assert rec.path == (TRUNCATED_PREFIX + "/deep/a/q").encode() and rec.path_truncated
    assert rec.raw_path is None


def test_fork_and_script_records() -> None:
    fork = R.HDR.pack(1, 0, 100, 100, 1, 0, 0, R.KIND_FORK, 0, b"bash".ljust(16, b"\0"))
    rec = R.decode(fork + R.FORK_TAIL.pack(123, 0))
    assert isinstance(rec, R.ForkRecord) and (rec.hdr.pid, rec.child) == (100, 123)
    exe, cwd, argv = b"dash\0bin\0usr\0", b"w\0tmp\0", b"/bin/sh\0./s.sh\0"
    hdr = R.HDR.pack(1, 0, 100, 100, 1, 0, 0, R.KIND_EXEC, R.F_SCRIPT, b"s.sh".ljust(16, b"\0"))
    ex = R.decode(hdr + R.EXEC_TAIL.pack(len(exe), len(cwd), len(argv)) + exe + cwd + argv
                  + b"./s.sh\0")
    assert isinstance(ex, R.ExecRecord)
    assert (ex.exe, ex.cwd, ex.script) == ("/usr/bin/dash", "/tmp/w", "/tmp/w/s.sh")
