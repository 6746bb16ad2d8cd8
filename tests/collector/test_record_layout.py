"""The ring-buffer records' layouts: the C structs in collector/bpf/*.h, read
here with a small parser, against the struct formats collector/records.py
unpacks them with. Field order, sizes and offsets must agree, and the C side
must have no padding hole the packed ("<") Python formats would not skip.
(The flag and kind constants: tests/collector/test_record_constants.py.)"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

from snoopbus.collector import records as R

BPF = Path(R.__file__).parent / "bpf"
# C scalar -> (struct code, size); char arrays are "s" (bytes).
SCALARS = {
    "u8": ("B", 1), "s8": ("b", 1), "char": ("s", 1),
    "u16": ("H", 2), "s16": ("h", 2), "u32": ("I", 4), "s32": ("i", 4),
    "u64": ("Q", 8), "s64": ("q", 8),
}  # fmt: skip
STRUCT = re.compile(r"^struct\s+(\w+)\s*\{(.*?)^\};", re.S | re.M)
MEMBER = re.compile(r"^(struct\s+\w+|\w+)\s+(\w+)\s*(?:\[\s*(\w+)\s*\])?$")
DEFINE = re.compile(r"^#define\s+(\w+)\s+(\d+)\b", re.M)


@dataclass(frozen=True)
class Member:
    name: str
    code: str  # struct code of one element, or "struct NAME"
    count: int  # array length (1 for a scalar)
    size: int  # bytes, all elements
    align: int
    offset: int


@dataclass(frozen=True)
class CStruct:
    name: str
    members: tuple[Member, ...]
    size: int
    align: int


def parse_headers(texts: list[str]) -> dict[str, CStruct]:
    """Every `struct NAME { ... };` of fixed-width ints, arrays of them sized by
    a number or a numeric #define, and structs defined before, laid out as the
    C compiler does (each member at its alignment, the size rounded to the
    struct's). Structs with members outside that subset are left out."""
    defines: dict[str, int] = {}
    for text in texts:
        defines.update((n, int(v)) for n, v in DEFINE.findall(text))
    structs: dict[str, CStruct] = {}
    for text in texts:
        for name, body in STRUCT.findall(text):
            body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
            parsed = _layout(name, body, structs, defines)
            if parsed is not None:
                structs[name] = parsed
    return structs


def _layout(name: str, body: str, structs: dict[str, CStruct],
            defines: dict[str, int]) -> CStruct | None:  # fmt: skip
    members: list[Member] = []
    offset, align = 0, 1
    for decl in filter(None, (d.strip() for d in body.split(";"))):
        m = MEMBER.match(" ".join(decl.split()))
        if m is None:
            return None
        ctype, member, length = m.groups()
        count = 1 if length is None else (int(length) if length.isdigit() else defines.get(length))
        if count is None:
            return None
        if ctype.startswith("struct "):
            inner = structs.get(ctype.split()[1])
            if inner is None:
                return None
            code, one, a = ctype, inner.size, inner.align
        elif ctype in SCALARS:
            code, one = SCALARS[ctype]
            a = one
        else:
            return None
        offset = -(-offset // a) * a
        members.append(Member(member, code, count, one * count, a, offset))
        offset += one * count
        align = max(align, a)
    return CStruct(name, tuple(members), -(-offset // align) * align, align)


def c_structs() -> dict[str, CStruct]:
    return parse_headers([p.read_text() for p in sorted(BPF.glob("*.h"))])


def py_items(fmt: str) -> list[tuple[str, int]]:
    """A struct format's items as (code, count): "<qQ4H16s" -> q 1, Q 1, H 4, s 16."""
    assert fmt[0] == "<", f"{fmt}: records are little-endian, packed"
    return [(code, int(n or 1)) for n, code in re.findall(r"(\d*)([a-zA-Z?])", fmt[1:])]


def c_items(members: tuple[Member, ...], start: int) -> list[tuple[str, int]]:
    """The members as struct items, checking each sits where a packed format puts it."""
    out, at = [], start
    for m in members:
        assert not m.code.startswith("struct"), f"{m.name}: a nested struct past the header"
        assert m.offset == at, f"{m.name}: at offset {m.offset} in C, {at} packed (a padding hole)"
        out.append((m.code, m.count))
        at += m.size
    return out


# Record struct -> the records.py formats that unpack it, header first.
RECORDS = {
    "exec_rec": "EXEC_TAIL",
    "exit_rec": "EXIT_TAIL",
    "fork_rec": "FORK_TAIL",
    "file_rec": "FILE_TAIL",
}


def check_header(structs: dict[str, CStruct]) -> None:
    hdr = structs["rec_hdr"]
    assert py_items(R.HDR.format) == c_items(hdr.members, 0), "rec_hdr vs records.HDR"
    assert R.HDR.size == hdr.size


def check_record(structs: dict[str, CStruct], name: str, tail: struct.Struct) -> None:
    rec = structs[name]
    head, *rest = rec.members
    assert (head.code, head.offset) == ("struct rec_hdr", 0), f"{name} starts with its header"
    assert py_items(tail.format) == c_items(tuple(rest), R.HDR.size), f"{name} vs its tail"
    assert R.HDR.size + tail.size == rec.size, f"{name}: {rec.size} bytes in C"


def test_the_parser_reads_the_record_structs() -> None:
    structs = c_structs()
    assert {"rec_hdr", *RECORDS, "sc_args"} <= set(structs)
    assert structs["rec_hdr"].size == 56 and structs["file_rec"].members[-1].count == 4


def test_record_header_agrees() -> None:
    check_header(c_structs())


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_record_tails_agree(name: str) -> None:
    check_record(c_structs(), name, getattr(R, RECORDS[name]))


def test_file_names_start_after_the_struct() -> None:
    assert c_structs()["file_rec"].size == R.FILE_NAMES_AT


def test_touched_trailer_agrees() -> None:
    """Each touched inode follows the segments as u64 ino, u32 dev, packed
    (TOUCHED_SZ), taken from sc_args' touched_ino and touched_dev."""
    text = (BPF / "files.h").read_text()
    (size,) = re.findall(r"#define\s+TOUCHED_SZ\s+(\d+)", text)
    args = {m.name: m for m in c_structs()["sc_args"].members}
    ino, dev = args["touched_ino"], args["touched_dev"]
    assert py_items(R.TOUCHED.format) == [(ino.code, 1), (dev.code, 1)]
    assert R.TOUCHED.size == int(size)


# The test can fail: a field added on one side only.


def test_a_field_added_in_c_only_is_caught() -> None:
    text = (BPF / "files.h").read_text().replace("    s32 fd;\n", "    s32 fd;\n    u32 added;\n")
    others = [p.read_text() for p in sorted(BPF.glob("*.h")) if p.name != "files.h"]
    with pytest.raises(AssertionError, match="file_rec"):
        check_record(parse_headers([*others, text]), "file_rec", R.FILE_TAIL)


def test_a_field_added_in_python_only_is_caught() -> None:
    with pytest.raises(AssertionError, match="exit_rec"):
        check_record(c_structs(), "exit_rec", struct.Struct("<III"))


def test_a_padding_hole_is_caught() -> None:
    structs = parse_headers(["""
struct rec_hdr {
    u64 ts;
    u16 kind;
};
struct exit_rec {
    struct rec_hdr h;
    u32 code;
    u64 after_a_hole;
};
"""])
    assert structs["rec_hdr"].size == 16 and structs["exit_rec"].size == 32
    with pytest.raises(AssertionError, match="padding hole"):
        c_items(structs["exit_rec"].members[1:], 16)
