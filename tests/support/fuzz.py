"""Hypothesis settings and strategies the fuzz tests share: hostile text, events
carrying it, any msgpack value, and a corpus of payloads the decoder refuses."""

from __future__ import annotations

import os
import random
from typing import Any

import msgpack
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from snoopbus.consumers.alert.engine import Engine
from snoopbus.consumers.alert.loader import default_rules_dir, load_rules
from snoopbus.proto import (
    MAX_BATCH_EVENTS,
    SCHEMA_VERSION,
    SchemaError,
    decode_batch,
    encode_batch,
    validate_event,
)
from tests.support.events import bare_exec

EXAMPLES = int(os.environ.get("SNOOPBUS_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=50) | st.binary(max_size=50),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.integers(-(2**63), 2**63 - 1), inner, max_size=4),
    max_leaves=20,
)


hostile_text = st.text(
    st.characters(codec="utf-8", categories=["Cc", "Zs", "L", "N", "P", "S"])
    | st.sampled_from(["\n", "\r", "\x00", "\x1b", "]", '"', "\\", "|", "=", "%", "\u2028"])
    | st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),  # bytes that were not UTF-8
    max_size=64,
).map(lambda s: s if s.strip() else s + "x")
long_path = st.integers(1, 4096).map(lambda n: "/" + "a" * (n - 1))


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    type_ = draw(st.sampled_from(["exec", "exit", "create", "modify", "moved_from", "moved_to",
                                  "delete", "symlink"]))
    text = hostile_text
    proc = {"pid": draw(st.integers(0, 2**31)), "tid": 1, "ppid": 1, "uid": 0, "gid": 0,
            "comm": draw(text)[:15] or "c", "exe": "/" + draw(text),
            "argv": draw(st.lists(text, max_size=6)), "cwd": draw(st.just("/") | long_path)}
    ev: dict[str, Any] = {"v": SCHEMA_VERSION, "id": f"i-{draw(st.integers(0, 10**9))}",
                          "ts": draw(st.integers(0, 2**63 - 1)), "host": draw(text),
                          "type": type_, "proc": proc}
    if type_ == "exit":
        ev["exit_code"] = draw(st.integers(0, 255))
    elif type_ != "exec":
        ev["file"] = {"path": draw(long_path | text.map(lambda s: "/" + s))}
        if type_ == "symlink":
            ev["file"]["target"] = draw(text)
        if type_.startswith("moved"):
            ev["cookie"] = draw(st.integers(0, 2**32))
    validate_event(ev)
    return ev


ENGINE = Engine([r for r in load_rules([default_rules_dir()]).rules])


def hostile_corpus(seed: int = 9, n: int = 30) -> list[bytes]:
    rng = random.Random(seed)
    good = encode_batch([bare_exec(comm="x")])
    out = [rng.randbytes(rng.randrange(1, 200)) for _ in range(n)]
    out += [good[:cut] for cut in range(1, len(good), max(1, len(good) // 6))]
    out += [
        msgpack.packb([{**bare_exec(), "id": 7}]),  # wrong type
        msgpack.packb([{**bare_exec(), "proc": ["no"]}]),
        msgpack.packb([{}] * (MAX_BATCH_EVENTS + 1)),  # huge array
        b"\x91" * 5000 + b"\x80",  # deep nesting
        msgpack.packb([{**bare_exec(), "v": SCHEMA_VERSION + 1}]),  # from the future
    ]
    return [d for d in out if not is_valid(d)]


def is_valid(data: bytes) -> bool:
    try:
        decode_batch(data)
        return True
    except SchemaError:
        return False
