"""Each built-in consumer's `handle(batch)`, fuzzed: valid events between hostile payloads.

No server. A stand-in message records every ack, nak and term; a stand-in
JetStream keeps what is published (dead letters, renames, alerts) and dedups
by `Nats-Msg-Id` as the stream does. The runtime's own admission decodes each
message and dead-letters what does not decode, the consumer's `handle` runs
on the rest, and what it left open is acked, as `Runtime` does on return.

For the rename pairer, the alerter, the archiver (files in tmp_path) and the
forwarder (a JSON-lines file sink), with messages that are valid (hostile
text, text that is not UTF-8, extension keys, redeliveries), hostile (random
bytes, cut msgpack, wrong field types, huge arrays, deep nesting, versions
from the future) or in between (odd alert maps, extensions nested ~1000 deep):

- `handle` never raises;
- every message is settled exactly one way: acked, or dead-lettered with a
  reason; held only where the consumer documents it (the pairer's pending
  halves, the archiver's open window), and acked once those are resolved; an
  in-between one may also be nak'd (then dead-lettered after its last attempt);
- every hostile payload is refused with a reason, no valid one is;
- the pairer resolves every half exactly once; every alert decodes; the
  archive's files read back with pyarrow and hold exactly the valid events;
  every forwarded line is one strict JSON document.

Strategies come from tests/consumers/test_fuzz.py, and so does the bound: half of
SNOOPBUS_FUZZ_EXAMPLES (default 200) per consumer, as each example is a whole
fetch through a consumer (the file takes ~15 s). A longer run:

    SNOOPBUS_FUZZ_EXAMPLES=20000 .venv/bin/pytest -q tests/consumers/test_fuzz_handlers.py

At the end, what the fuzzing found, one focused test each.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import re
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import msgpack
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from snoopbus.consumers import dlq
from snoopbus.consumers.alert.alerts import build_alert
from snoopbus.consumers.alert.consumer import AlertConsumer, AlertStats
from snoopbus.consumers.alert.engine import Engine
from snoopbus.consumers.alert.throttle import Throttle
from snoopbus.consumers.archive import layout
from snoopbus.consumers.archive.archiver import Archiver
from snoopbus.consumers.archive.columns import restore_text, restore_texts
from snoopbus.consumers.consumer import Consumer, Context
from snoopbus.consumers.delivery import Batch, Delivery, State
from snoopbus.consumers.forward.runtime import ForwardRuntime
from snoopbus.consumers.forward.sinks import make_sink
from snoopbus.consumers.forward.spec import parse_spec
from snoopbus.consumers.forward.text import display
from snoopbus.consumers.forward.worker import SinkWorker
from snoopbus.consumers.pairing import HALF_TYPES
from snoopbus.consumers.rename import HALVES_ID, OUTPUT_TYPES, RenamePairer
from snoopbus.consumers.runtime import Runtime
from snoopbus.proto import (
    ALERT_LEVELS,
    MAX_BATCH_EVENTS,
    SCHEMA_VERSION,
    SchemaError,
    alert_subject,
    decode_batch,
    decode_map,
    encode_batch,
    encode_map,
    event_subject,
    host_token,
    parse_subject,
    text_from_kernel,
)
from tests.support.events import TS
from tests.support.events import event as build_event
from tests.support.fakebus import Bus, Msg
from tests.support.fuzz import (
    ENGINE,
    EXAMPLES,
    FUZZ,
    events,
    hostile_corpus,
    hostile_text,
    is_valid,
)

HANDLERS = settings(FUZZ, max_examples=max(1, EXAMPLES // 2))

# -- what goes in -------------------------------------------------------------------

TAKE, REFUSE, EITHER = "take", "refuse", "either"  # what a consumer must do with a payload


@dataclass(frozen=True)
class Payload:
    subject: str
    data: bytes
    must: str
    kind: str  # events or alert

    @property
    def content(self) -> list[dict[str, Any]]:
        """The events (or the one alert) as a consumer receives them."""
        return [decode_map(self.data)] if self.kind == "alert" else decode_batch(self.data)


def _matches(pattern: list[str], tokens: list[str]) -> bool:
    for i, p in enumerate(pattern):
        if p == ">":
            return len(tokens) > i
        if i >= len(tokens) or p not in ("*", tokens[i]):
            return False
    return len(pattern) == len(tokens)


def subscribed(c: Consumer, subject: str) -> bool:
    """Whether the server hands `subject` to this consumer's durable."""
    return any(_matches(f.split("."), subject.split(".")) for f in c.filters)


# Extension keys (unknown to this version: kept and ignored) hold any msgpack,
# maps keyed by text or bytes included.
ext_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6) | st.binary(max_size=6), inner, max_size=3),
    max_leaves=10,
)
extensions = st.dictionaries(st.text(max_size=6).map(lambda k: "x-" + k), ext_values, max_size=2)


def with_deep_key(events: list[dict[str, Any]], depth: int) -> bytes:
    """`events` as a batch whose last map has one more key, "x-deep", holding arrays
    `depth` deep; put together by hand, as packing that deep meets Python's recursion limit."""
    *rest, last = [encode_batch([e])[1:] for e in events]  # each event's map
    assert last[0] & 0xF0 == 0x80 and last[0] != 0x8F  # a fixmap with room for one more key
    last = bytes([last[0] + 1]) + last[1:] + msgpack.packb("x-deep") + b"\x91" * depth + b"\x00"
    return bytes([0x90 | len(events)]) + b"".join(rest) + last


def _raw_text(obj: Any) -> Any:
    """Text that is not UTF-8 as bytes, for a publisher that packs it as msgpack str."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "surrogateescape")
    if isinstance(obj, dict):
        return {_raw_text(k): _raw_text(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_raw_text(v) for v in obj]
    return obj


# Kernel bytes as the collector decodes them: lone surrogates for what is not
# UTF-8. (tests/support/fuzz.py's hostile_text has a branch for these, but
# hypothesis drops surrogates from text(), so it never yields one.)
kernel_text = st.binary(min_size=1, max_size=24).map(text_from_kernel)


@st.composite
def variants(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """`base` events with bytes that are not UTF-8 in text fields, and extension keys."""
    ev = draw(base)
    if draw(st.booleans()):
        ev["proc"]["argv"] = [*ev["proc"]["argv"], draw(kernel_text)]
        ev["proc"]["exe"] = "/" + draw(kernel_text)
        if "file" in ev:
            ev["file"]["path"] = "/" + draw(kernel_text)
        if draw(st.booleans()):
            ev["host"] = draw(kernel_text)
    if draw(st.booleans()):
        ev.update(draw(extensions))
        for part in ("proc", "file"):
            if part in ev:
                ev[part].update(draw(extensions))
    return ev


@st.composite
def rename_halves(draw: st.DrawFn) -> dict[str, Any]:
    """A moved_from/moved_to half; few hosts and cookies, so halves meet."""
    ev = draw(events())
    ev["type"] = draw(st.sampled_from(HALF_TYPES))
    ev["host"] = draw(st.sampled_from(["h1", "h2"]) | hostile_text)
    ev.pop("exit_code", None)
    ev.setdefault("file", {"path": "/" + draw(hostile_text)})
    cookie = draw(st.none() | st.integers(0, 3))
    if cookie is None:
        ev.pop("cookie", None)
    else:
        ev["cookie"] = cookie
    return ev


def tmp_exec_alerts() -> st.SearchStrategy[dict[str, Any]]:
    """Alerts as the alerter makes them: execs from /tmp through the packaged rules."""

    def alert(ev: dict[str, Any]) -> dict[str, Any]:
        ev = {**ev, "type": "exec", "proc": {**ev["proc"], "exe": "/tmp/" + ev["proc"]["exe"]}}
        ev.pop("file", None)
        hits = ENGINE.match(ev)
        assume(hits)
        return build_alert(hits[0])

    return events().map(alert)


@st.composite
def wrong_type(draw: st.DrawFn) -> bytes:
    """Valid events but one field, whose value no decoder may accept."""
    evs = draw(st.lists(events(), min_size=1, max_size=3))
    ev = draw(st.sampled_from(evs))
    ints = st.integers(-(2**63), 2**64 - 1)  # what msgpack can carry
    neither = st.floats() | st.none() | st.booleans() | st.lists(ints, max_size=2)
    neither |= st.dictionaries(st.text(max_size=3), ints, max_size=2)
    not_int = st.text(max_size=5) | neither
    not_text = ints | neither
    not_map = st.text(max_size=5) | ints | st.none() | st.lists(ints, max_size=2)
    where, key, bad = draw(st.sampled_from([
        (None, "v", not_int), (None, "id", not_text), (None, "ts", not_int),
        (None, "host", not_text), (None, "type", not_text), (None, "proc", not_map),
        (None, "file", not_map), (None, "cookie", not_int), (None, "ret", not_int),
        ("proc", "pid", not_int), ("proc", "uid", not_int), ("proc", "comm", not_text),
        # An empty list is a valid argv (an array of no str): not a wrong type.
        ("proc", "exe", not_text), ("proc", "argv", not_map.filter(lambda v: v != [])),
        ("proc", "cwd", not_text),
        ("file", "path", not_text), ("file", "flags", not_int), ("file", "inode", not_int),
        (None, "type", st.text(max_size=8).filter(lambda t: t not in HALF_TYPES + OUTPUT_TYPES)
         .map(lambda t: "no-" + t)),
        (None, "id", st.just("")), (None, "host", st.just("")), (None, "v", st.integers(-5, 0)),
        ("proc", "argv", st.lists(ints, min_size=1, max_size=2)),
    ]))  # fmt: skip
    target = ev if where is None else ev.setdefault(where, {})
    if draw(st.booleans()) and where is None and key in ("v", "id", "ts", "host", "type"):
        del target[key]  # a required key, missing
    else:
        target[key] = draw(bad)
    return encode_batch(evs)


@st.composite
def from_the_future(draw: st.DrawFn) -> bytes:
    """A newer major version: anything else in it may differ too."""
    ev = draw(events())
    ev["v"] = draw(st.integers(SCHEMA_VERSION + 1, 2**64 - 1))
    if draw(st.booleans()):
        ev["proc"] = draw(ext_values)
    return encode_batch([draw(events()), ev] if draw(st.booleans()) else [ev])


@st.composite
def cut_short(draw: st.DrawFn, whole: st.SearchStrategy[bytes]) -> bytes:
    data = draw(whole)
    return data[: draw(st.integers(0, len(data) - 1))]


valid_batches = st.lists(events(), min_size=1, max_size=3).map(encode_batch)
hostile_batches = st.one_of(
    st.sampled_from(hostile_corpus()),  # random bytes, cuts, wrong types, huge, deep, future
    st.binary(max_size=300).filter(lambda d: not is_valid(d)),
    cut_short(valid_batches),
    wrong_type(),
    from_the_future(),
    st.integers(MAX_BATCH_EVENTS + 1, MAX_BATCH_EVENTS + 20).map(lambda n: msgpack.packb([{}] * n)),
    st.just(b"\xdd\xff\xff\xff\xff"),  # an array claiming 4 billion events
    st.integers(1_100, 30_000).map(lambda n: b"\x91" * n + b"\x80"),  # nested too deep
    ext_values.map(lambda v: msgpack.packb(v)).filter(lambda d: not is_valid(d)),  # not a batch
    st.just(b"\x91\xd4\x01\x00"),  # an ext type
)


def _not_a_map(data: bytes) -> bool:
    try:
        decode_map(data)
    except SchemaError:
        return True
    return False


hostile_alerts = st.one_of(
    st.binary(max_size=300).filter(_not_a_map),
    cut_short(tmp_exec_alerts().map(encode_map)),
    valid_batches,  # an event batch on an alert subject
    st.integers(1_100, 30_000).map(lambda n: b"\x81\xa1k" + b"\x91" * n + b"\x80"),
)
odd_alerts = st.dictionaries(
    st.sampled_from(["id", "rule", "rule_id", "level", "title", "tags", "event", "ts", "host",
                     "count", "references"]) | st.text(max_size=5),
    ext_values | st.sampled_from(ALERT_LEVELS) | st.dictionaries(
        st.sampled_from(["id", "title", "level", "tags", "references"]), ext_values, max_size=4),
    max_size=6,
).map(encode_map)  # fmt: skip
levels = st.sampled_from(ALERT_LEVELS)
# Ids travel in NATS headers (Nats-Msg-Id, the pairer's half ids): the contract
# keeps them to printable ASCII without spaces, and anything else is refused.
VALID_IDS = st.just("i-") | st.from_regex(r"[!-~]{0,12}", fullmatch=True)
BAD_IDS = (hostile_text | kernel_text).filter(lambda t: not re.fullmatch(r"[!-~]+", t))


@st.composite
def scenario(
    draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]], *, types: tuple[str, ...],
    alerts: bool = False, ids: st.SearchStrategy[str] = VALID_IDS,
) -> list[Payload]:  # fmt: skip
    """One fetch: 1 to 6 messages, valid and hostile mixed, ids unique per example
    (a prefix drawn from `ids`, then the message's and the event's number)."""
    kinds = ["valid", "valid", "valid", "hostile", "hostile", "again", "deep", "bad id"]
    if alerts:
        kinds += ["alert", "odd alert", "bad alert"]
    out: list[Payload] = []
    for i in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(kinds))
        if kind in ("valid", "deep", "bad id"):
            evs = draw(st.lists(variants(valid), min_size=1, max_size=2))
            first = evs[0]
            evs = [e for e in evs if e["type"] == first["type"]]  # one subject per message
            prefix = draw(ids)
            for j, ev in enumerate(evs):
                ev["host"] = first["host"]
                ev["id"] = f"{prefix}{i}.{j}"
            if kind == "bad id":  # whole message refused: it cannot be passed on
                evs[-1]["id"] = draw(BAD_IDS)
                data = encode_batch(evs)
                out.append(Payload(event_subject(first["host"], first["type"]), data, REFUSE,
                                   "events"))  # fmt: skip
                continue
            if kind == "deep":  # valid on the wire; a consumer may refuse it, with a reason
                data = with_deep_key(evs, draw(st.integers(500, 1010)))
            elif draw(st.booleans()):
                data = encode_batch(evs)
            else:  # a publisher that packs every text, UTF-8 or not, as msgpack str
                data = msgpack.packb(_raw_text(evs), use_bin_type=False)
            must = EITHER if kind == "deep" else TAKE
            out.append(Payload(event_subject(first["host"], first["type"]), data, must, "events"))
        elif kind == "again":  # a redelivery of an earlier message
            earlier = [p for p in out if p.must == TAKE]
            if earlier:
                out.append(draw(st.sampled_from(earlier)))
        elif kind == "hostile":
            subject = event_subject(draw(hostile_text), draw(st.sampled_from(types)))
            out.append(Payload(subject, draw(hostile_batches), REFUSE, "events"))
        elif kind == "alert":
            alert = draw(tmp_exec_alerts())
            out.append(Payload(alert_subject(alert["host"], alert["level"]), encode_map(alert),
                               TAKE, "alert"))  # fmt: skip
        else:
            subject = alert_subject(draw(hostile_text), draw(levels))
            if kind == "odd alert":  # a map, but not the alerter's: taken or refused
                out.append(Payload(subject, draw(odd_alerts), EITHER, "alert"))
            else:
                out.append(Payload(subject, draw(hostile_alerts), REFUSE, "alert"))
    return out


# -- one fetch through the runtime's admission and a consumer's handler ---------------------


@dataclass
class Fetch:
    runtime: Runtime
    bus: Bus
    payloads: list[Payload]
    msgs: list[Msg]
    batch: Batch = field(default_factory=lambda: Batch([]))

    @property
    def context(self) -> Context:
        c = self.runtime
        return Context(cast(Client, None), self.bus, c.durable, c.settings)  # type: ignore[arg-type]

    async def admit(self) -> None:
        """Decode as the runtime does; undecodable messages are dead-lettered here."""
        self.batch = Batch(await self.runtime._admit(self.msgs))  # type: ignore[arg-type]

    async def handle(self) -> None:
        """The handler, then the runtime's rule: what it left open is acked."""
        await self.runtime.consumer.handle(self.batch)  # must not raise
        for delivery in self.batch:
            if delivery.state is State.OPEN:
                await self.runtime.ack(delivery)

    def settled(self, held: set[Delivery] | None = None) -> None:
        """Each message settled exactly one way, as its payload demands."""
        letters = self.bus.letters()
        by_msg = {id(d.msg): d for d in self.batch}
        for p, msg in zip(self.payloads, self.msgs, strict=True):
            calls = [c for c in msg.calls if c != "in_progress"]
            seq = msg.metadata.sequence.stream
            delivery = by_msg.get(id(msg))
            what = f"{p.must} payload {p.data[:60]!r} on {p.subject}"
            if held and delivery in held:
                assert calls == [] and seq not in letters, f"held {what}: {calls}"
                continue
            if calls == ["nak"] and p.must == EITHER:
                continue  # a failure no retry mends: dead-lettered after the last attempt
            if calls == ["term"]:
                assert p.must != TAKE, f"refused {what}"
                letter = letters[seq]
                assert letter.data == p.data and letter.headers[dlq.REASON].strip(), what
                assert letter.headers[dlq.SUBJECT] == p.subject
            else:
                assert calls == ["ack"], f"{what}: {calls}"
                assert p.must != REFUSE and seq not in letters, f"taken {what}"


def fetch(consumer: Consumer, payloads: list[Payload], runtime: type[Runtime] = Runtime) -> Fetch:
    payloads = [p for p in payloads if subscribed(consumer, p.subject)]
    bus = Bus()
    rt = runtime(consumer, nc=cast(Client, object()))
    rt._js = bus  # type: ignore[assignment]  # dead letters are published here
    msgs = [Msg(p.subject, p.data, seq) for seq, p in enumerate(payloads, 1)]
    return Fetch(rt, bus, payloads, msgs)


def taken(f: Fetch, kind: str = "events") -> list[dict[str, Any]]:
    """The events (or alerts) of the messages the consumer acked."""
    return [x for p, m in zip(f.payloads, f.msgs, strict=True)
            if p.kind == kind and m.calls == ["ack"] for x in p.content]  # fmt: skip


def offered(f: Fetch, kind: str = "events") -> list[dict[str, Any]]:
    """The events (or alerts) of every message that decodes."""
    return [x for p in f.payloads if p.kind == kind and p.must != REFUSE for x in p.content]


# -- the consumers, one fetch each ------------------------------------------------------------


@pytest.fixture(scope="module")
def run() -> Iterator[Any]:
    """One event loop for all examples (a loop per example costs more than the example)."""
    with asyncio.Runner() as runner:

        def run(coro: Coroutine[Any, Any, Any]) -> Any:
            return runner.run(coro)

        yield run


@HANDLERS
@given(scenario(rename_halves(), types=HALF_TYPES, ), st.integers(1, 6))
def test_rename_pairer_resolves_each_valid_half_once(
    run: Any, payloads: list[Payload], max_pending: int
) -> None:
    f = run(run_pairer(payloads, max_pending))
    halves: Counter[tuple[str | None, str]] = Counter()
    for out in f.bus.outputs():
        for event in decode_batch(out.data):
            assert event["type"] in OUTPUT_TYPES
            assert out.subject == event_subject(event["host"], event["type"])
        for half_id in out.headers[HALVES_ID].split(" "):
            halves[(parse_subject(out.subject).host, half_id)] += 1
    assert set(halves.values()) <= {1}, "no half resolved twice"
    want = {(host_token(e["host"]), e["id"]) for e in taken(f) if e["type"] in HALF_TYPES}
    assert want <= set(halves), "every half of an acked message resolved"
    # More only from a message nak'd for another of its halves (a deep one, in EITHER).
    assert set(halves) <= {(host_token(e["host"]), e["id"]) for e in offered(f)}


async def run_pairer(payloads: list[Payload], max_pending: int = 100) -> Fetch:
    pairer = RenamePairer(window=30, max_pending=max_pending)
    f = fetch(pairer, payloads)
    await pairer.setup(f.context)
    await f.admit()
    await f.handle()
    f.settled(held=set(pairer._open))  # held: halves still waiting for a partner
    pairer.table.tick(0.0, caught_up=True)
    pairer.table.tick(math.inf, caught_up=True)  # endless quiet time: all of them give up
    await pairer._emit(pairer.table.expire(math.inf))
    await pairer.teardown()
    f.settled()
    return f


_RULES = AlertConsumer()  # loading the packaged rules takes ~40 ms: once, not per example


def new_alerter() -> AlertConsumer:
    """An alerter as AlertConsumer() makes it, sharing only the loaded rules."""
    alerter = copy.copy(_RULES)
    alerter.engine = Engine(_RULES.report.rules, _RULES.field_map)
    alerter.throttle = Throttle(_RULES.throttle.window, _RULES.throttle.key_fields)
    alerter.stats = AlertStats()
    alerter._closing = asyncio.Event()
    return alerter


@HANDLERS
@given(scenario(events(), types=("exec", "create", "modify", "delete")))
def test_alerter_takes_every_valid_event_and_alerts_decode(
    run: Any, payloads: list[Payload]
) -> None:
    f = run(run_alerter(payloads))
    ids = {e["id"] for e in taken(f)}
    for out in f.bus.outputs():
        sent = decode_map(out.data)
        assert out.subject == alert_subject(sent["host"], sent["level"])
        assert sent["event"]["id"] in ids


async def run_alerter(payloads: list[Payload]) -> Fetch:
    alerter = new_alerter()
    f = fetch(alerter, payloads)
    await alerter.setup(f.context)
    await f.admit()
    await f.handle()
    await alerter.teardown()
    f.settled()
    assert not alerter.engine.errors, "no rule raised"
    return f


@HANDLERS
@given(scenario(events(), types=("exec", "exit", "create", "moved_to"), alerts=True))
def test_archiver_files_hold_exactly_the_valid_events(
    run: Any, tmp_path_factory: pytest.TempPathFactory, payloads: list[Payload]
) -> None:
    root = tmp_path_factory.mktemp("archive")
    f = run(run_archiver(root, payloads))
    # Keyed as the archiver dedups: host token and id.
    want = {(host_token(e["host"]), e["id"]): e for e in taken(f)}
    rows = read_back(root)
    assert Counter((host_token(r["host"]), r["id"]) for r in rows) == Counter(want.keys()), (
        "exactly the valid events, each once")  # fmt: skip
    for r in rows:
        ev = want[(host_token(r["host"]), r["id"])]
        assert (r["ts"], r["type"], r["host"]) == (ev["ts"], ev["type"], ev["host"])
        assert r["proc_argv"] == ev.get("proc", {}).get("argv")
        assert r["file_path"] == ev.get("file", {}).get("path")
    alerts = {a["id"] for a in taken(f, "alert") if isinstance(a.get("id"), str) and a["id"]}
    assert alerts <= {r["id"] for r in read_back(root, "alerts")}


async def run_archiver(root: Path, payloads: list[Payload]) -> Fetch:
    archiver = Archiver(root, roll_seconds=3600, gc_tuning=False)
    f = fetch(archiver, payloads)
    await archiver.setup(f.context)
    await f.admit()
    await f.handle()
    f.settled(held=set(archiver.writer.window.deliveries))  # held until the window is on disk
    assert await archiver.flush(force=True), archiver.last_error
    await archiver.teardown()
    f.settled()
    assert not list(root.rglob("*.tmp")), "temporaries left behind"
    return f


def read_back(root: Path, kind: str = "events") -> list[dict[str, Any]]:
    """Every row of every committed file, read with pyarrow alone: ts as int ns,
    text restored from its `_raw` column, the host name in `host`."""
    out = []
    for path in (root / kind).rglob("*.parquet"):
        table = pq.read_table(path)
        i = table.schema.get_field_index("ts")
        table = table.set_column(i, "ts", table.column("ts").cast(pa.int64()))
        for row in table.to_pylist():
            for name in [n for n in row if n.endswith("_raw")]:
                restore = restore_texts if isinstance(row[name], list) else restore_text
                row[name[:-4]] = restore(row[name[:-4]], row.pop(name))
            row["host"] = row.pop("host_name")
            out.append(row)
    return out


def strict_json(line: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(line, parse_constant=refuse)


@HANDLERS
@given(scenario(events(), types=("exec", "exit", "modify", "symlink"), alerts=True))
def test_forwarder_writes_one_json_document_per_line(
    run: Any, tmp_path_factory: pytest.TempPathFactory, payloads: list[Payload]
) -> None:
    out = tmp_path_factory.mktemp("forward") / "out.jsonl"
    f = run(run_forwarder(out, payloads))
    text = out.read_text(encoding="utf-8", errors="strict")
    assert text == "" or text.endswith("\n")
    docs = [strict_json(line) for line in text.split("\n")[:-1]]
    events_out = Counter(d["id"] for d in docs if d.get("type") != "alert")
    want = Counter(display(e["id"]) for e in taken(f))
    assert not want - events_out, "every valid event forwarded, once per delivery"
    # More only from a message dead-lettered for another of its events (at least once).
    assert not events_out - Counter(display(e["id"]) for e in offered(f))
    assert len([d for d in docs if d.get("type") == "alert"]) == len(taken(f, "alert"))


async def run_forwarder(out: Path, payloads: list[Payload]) -> Fetch:
    worker = SinkWorker(make_sink(parse_spec(f"jsonl+file://{out}")))
    f = fetch(worker, payloads, ForwardRuntime)
    worker.runtime = cast(ForwardRuntime, f.runtime)
    await worker.setup(f.context)
    await f.admit()
    await f.handle()
    await worker.teardown()
    f.settled()
    return f


# -- what the fuzzing found ------------------------------------------------------------------


def exec_event(id: str = "r-1", host: str = "h1", **extra: Any) -> dict[str, Any]:
    """A valid exec from /tmp (the packaged rules alert on it)."""
    proc = {"pid": 1, "comm": "x", "exe": "/tmp/x", "argv": ["/tmp/x"]}
    return build_event(id=id, ts=TS, host=host, proc=proc, **extra)


def valid(*events: dict[str, Any]) -> Payload:
    first = events[0]
    return Payload(event_subject(first["host"], first["type"]), encode_batch(list(events)), TAKE,
                   "events")  # fmt: skip


def refused(event: dict[str, Any]) -> Payload:
    return replace(valid(event), must=REFUSE)


def reasons(f: Fetch) -> dict[int, str]:
    """Dead-letter reasons by the message's place in the fetch (1 is the first)."""
    return {seq: letter.headers[dlq.REASON] for seq, letter in f.bus.letters().items()}


async def test_archiver_keeps_extension_maps_keyed_by_bytes(tmp_path: Path) -> None:
    """A map keyed by msgpack bin inside an extension key is valid on the wire, and
    passed the archiver's checks; then json.dumps (no bytes keys) failed every
    commit: the archive stopped writing for good, holding every message since."""
    f = await run_archiver(tmp_path, [valid(exec_event(**{"x-ext": {b"\xff": 1, "k": [b"v"]}}))])
    assert f.msgs[0].calls == ["ack"]
    (row,) = read_back(tmp_path)
    assert json.loads(row["extra"]) == {"x-ext": {"\udcff": 1, "k": ["v"]}}


async def test_archiver_dead_letters_what_json_cannot_hold_and_commits_the_rest(
    tmp_path: Path,
) -> None:
    """An extension nested 1000 deep (valid on the wire) failed every commit with
    RecursionError, as above; an alert map like it made handle() raise. Each is now
    dead-lettered at once, with the reason, and the messages around them are stored."""
    deep = Payload(event_subject("h1", "exec"), with_deep_key([exec_event("r-deep")], 1000),
                   EITHER, "events")  # fmt: skip
    deep_alert = Payload(alert_subject("h1", "high"),
                         b"\x82\xa2id\xa1a\xa1k" + b"\x91" * 1000 + b"\x00", EITHER, "alert")
    payloads = [valid(exec_event("r-1")), deep, deep_alert, valid(exec_event("r-2"))]
    f = await run_archiver(tmp_path, payloads)
    why = reasons(f)
    assert set(why) == {2, 3}
    assert "cannot be stored as JSON" in why[2] and "cannot be stored as JSON" in why[3]
    assert sorted(r["id"] for r in read_back(tmp_path)) == ["r-1", "r-2"]


async def test_forwarder_dead_letters_alerts_and_events_it_cannot_render(tmp_path: Path) -> None:
    """An alert map whose level is a list, or whose references is a number, made
    parse_alert raise TypeError, and an event nested 1000 deep made rendering raise
    RecursionError: handle() raised, and the runtime nak'd the message again and
    again (a sink allows 100,000 attempts). Now each is dead-lettered with the reason."""
    subject = alert_subject("h1", "high")
    payloads = [
        Payload(subject, encode_map({"rule_id": "r", "level": ["high"]}), EITHER, "alert"),
        valid(exec_event("r-1")),
        Payload(subject, encode_map({"rule": {"id": "r", "references": 5}}), EITHER, "alert"),
        Payload(event_subject("h1", "exec"), with_deep_key([exec_event("r-deep")], 1000),
                EITHER, "events"),
        valid(exec_event("r-2")),
    ]  # fmt: skip
    out = tmp_path / "out.jsonl"
    f = await run_forwarder(out, payloads)
    why = reasons(f)
    assert set(why) == {1, 3, 4}
    assert "level" in why[1] and "references" in why[3] and "RecursionError" in why[4]
    assert [strict_json(line)["id"] for line in out.read_text().splitlines()] == ["r-1", "r-2"]


async def test_forwarder_writes_null_for_nan_and_infinity(tmp_path: Path) -> None:
    """A float NaN or Infinity in an extension key went out as the bare word, which
    JSON does not have (RFC 8259): a strict reader refused the whole line."""
    out = tmp_path / "out.jsonl"
    await run_forwarder(out, [valid(exec_event(**{"x-f": [math.nan, math.inf, -math.inf, 1.5]}))])
    (line,) = out.read_text().splitlines()
    # An extension key lives under "extra" in snoopbus's JSON (jsonl.py).
    assert strict_json(line)["extra"]["x-f"] == [None, None, None, 1.5]


async def test_ids_a_nats_header_cannot_carry_are_refused_with_the_reason() -> None:
    """An id that is not printable ASCII (bytes that are not UTF-8, spaces, CR/LF)
    cannot be a Nats-Msg-Id: nats-py fails to encode or rewrites it, and the pairer
    and the alerter then failed every attempt. Admission refuses it, naming the field."""
    halves = [{"v": SCHEMA_VERSION, "id": f"{kind}\udcff", "ts": 1, "host": "h1", "type": kind,
               "cookie": 7, "file": {"path": f"/{kind}"}} for kind in HALF_TYPES]  # fmt: skip
    f = await run_pairer([refused(h) for h in halves])
    assert f.bus.outputs() == []
    why = reasons(f)
    assert set(why) == {1, 2} and all("id" in r and "printable ASCII" in r for r in why.values())
    f = await run_alerter([refused(exec_event("r\udcff")), refused(exec_event("r 1\r\n")),
                           valid(exec_event("r-2"))])  # fmt: skip
    assert set(reasons(f)) == {1, 2} and len(f.bus.outputs()) == 1


async def test_archive_stores_the_token_of_a_host_whose_name_holds_a_slash(tmp_path: Path) -> None:
    """host_token kept "/", so host "a/b" was written under host=a/b/ (when each host
    had a folder), a level deeper than retention, recall at start and DuckDB looked."""
    await run_archiver(tmp_path, [valid(exec_event(host="a/b"))])
    [stored] = layout.files(tmp_path)
    assert stored.path.parent.parent == tmp_path / "events"
    hosts = pq.read_table(stored.path, columns=["host"]).column("host").to_pylist()
    assert hosts == [host_token("a/b")] and "/" not in hosts[0]
