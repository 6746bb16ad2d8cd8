"""Message ids (proto/msgid.py) and the subject check every consumer runs (consumers/trust.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from nats.js import JetStreamContext

from snoopbus.collector.loss import LossCounters
from snoopbus.collector.publisher import Publisher, PublisherConfig
from snoopbus.collector.spill import Spill
from snoopbus.consumers import trust
from snoopbus.consumers.dlq import DeadLetter
from snoopbus.proto import (
    STREAM_NAME,
    SubjectError,
    alert_subject,
    encode_batch,
    ensure_stream,
    event_subject,
    host_token,
    parse_subject,
)
from snoopbus.proto.msgid import (
    ID_HEADER,
    MessageIds,
    derived_id,
    id_belongs,
    id_count,
    id_host,
    subject_host,
)

EXEC_A = event_subject("web.a", "exec")  # token "web_a"


def ev(host: str = "web.a", type_: str = "exec") -> dict[str, object]:
    return {"v": 1, "id": "i-1", "ts": 1, "host": host, "type": type_}


def test_ids_are_namespaced_by_the_subject_host_and_count_events() -> None:
    ids = MessageIds()
    a = ids.new(EXEC_A, 17)
    assert id_host(a) == "web_a" == subject_host(EXEC_A)
    assert id_belongs(a, "web_a") and not id_belongs(a, "web_b")
    assert id_count(a) == 17 and id_count(ids.new(EXEC_A, 0)) == 0
    assert a.startswith(f"web_a.{ids.run}.1.")


def test_ids_cannot_be_guessed_from_earlier_ones() -> None:
    ids = MessageIds()
    seen = [ids.new(EXEC_A, 1) for _ in range(200)]
    assert len(set(seen)) == 200
    nonces = {i.split(".")[3].split("+")[0] for i in seen}
    assert len(nonces) == 200 and all(len(n) == 16 for n in nonces)
    # two runs of the same host share no id space either
    assert MessageIds().run != ids.run or MessageIds().run != ids.run


@pytest.mark.parametrize("msg_id, host", [
    ("web_a.r.1.n+3", "web_a"), ("web_b.r.1.n+3", "web_b"), ("web_a", ""), ("", ""),
    ("dlq-archive-7", ""), (".x", ""), ("web_a.alert:r:1", "web_a"),
])  # fmt: skip
def test_id_host(msg_id: str, host: str) -> None:
    assert id_host(msg_id) == host


def test_an_id_less_message_collides_with_nothing_and_passes() -> None:
    assert id_belongs(None, "web_a")
    assert not id_belongs("", "web_a") and not id_belongs("web_a-1+2", "web_a")


def test_derived_ids_are_stable_and_namespaced() -> None:
    assert derived_id("h1", "alert", "r:1") == derived_id("h1", "alert", "r:1") == "h1.alert:r:1"


def test_subjects_with_hostile_host_tokens_do_not_parse() -> None:
    for bad in ("snoopbus.alerts.a/b.high", "snoopbus.alerts.a\x1bb.high",
                "snoopbus.events.a b.proc.exec", "snoopbus.meta.a\tb.status",
                f"snoopbus.alerts.{'x' * 251}.high"):
        with pytest.raises(SubjectError, match="host token"):
            parse_subject(bad)
    assert parse_subject(f"snoopbus.alerts.{'x' * 250}.high").host == "x" * 250
    with pytest.raises(SubjectError, match="byte limit"):
        host_token("h" * 251)


def test_check_subject() -> None:
    assert isinstance(trust.check_subject(EXEC_A, None), tuple)
    assert isinstance(trust.check_subject(EXEC_A, {ID_HEADER: "web_a.r.1.n+1"}), tuple)
    why = trust.check_subject(EXEC_A, {ID_HEADER: "web_b.r.9.n+1"})
    assert isinstance(why, str) and "'web_b" in why and "'web_a'" in why
    why = trust.check_subject(EXEC_A, {ID_HEADER: "dlq-archive-12"})
    assert isinstance(why, str) and "not of host" in why
    why = trust.check_subject("snoopbus.alerts.a/b.high", None)
    assert isinstance(why, str) and why.startswith("subject: ") and "host token" in why
    # dead letters have no host: any id
    assert isinstance(trust.check_subject("snoopbus.dlq.archive", {ID_HEADER: "x"}), tuple)


def test_events_must_be_of_the_subject_host_and_type() -> None:
    parts = parse_subject(EXEC_A)
    assert trust.events_mismatch(parts, [ev(), ev("web_a")], True) is None  # same token
    why = trust.events_mismatch(parts, [ev(), ev("web.b")], True)
    assert why is not None and "'web.b'" in why
    why = trust.events_mismatch(parts, [ev(), ev(type_="exit")], True)
    assert why is not None and "'exit'" in why
    records = [SimpleNamespace(host="web.a", type="exec"), SimpleNamespace(host="x", type="exec")]
    assert trust.events_mismatch(parts, records[:1], False) is None
    assert "'x'" in (trust.events_mismatch(parts, records, False) or "")
    # a host too long to be a token matches no subject
    assert trust.events_mismatch(parts, [ev("w" * 300)], True) is not None


def test_alerts_must_be_of_the_subject_host_and_level() -> None:
    parts = parse_subject(alert_subject("web.a", "high"))
    assert trust.alert_mismatch(parts, {"host": "web.a", "level": "high"}) is None
    assert trust.alert_mismatch(parts, {"title": "no claims"}) is None
    assert "host" in (trust.alert_mismatch(parts, {"host": "web.b", "level": "high"}) or "")
    assert "host" in (trust.alert_mismatch(parts, {"host": 7}) or "")
    assert "level" in (trust.alert_mismatch(parts, {"host": "web.a", "level": "low"}) or "")


def test_dead_letter_ids_depend_on_the_original() -> None:
    def letter(original_id: str, payload: bytes = b"p") -> str:
        return DeadLetter("archive", "subject", "r", EXEC_A, payload, 12, 1,
                          original_id).headers()[ID_HEADER]

    assert letter("web_a.r.1.n+1") == letter("web_a.r.1.n+1")  # a crash refiles it the same
    assert letter("web_a.r.1.n+1") != letter("web_a.r.1.m+1")
    assert letter("") != letter("", b"q")
    assert letter("").startswith("dlq-archive-12-")


async def test_spilled_ids_replay_unchanged_and_old_ones_get_namespaced(
    js: JetStreamContext, tmp_path: Path
) -> None:
    """A spilled message keeps its id (a copy that landed before a stop is dropped
    as the duplicate it is, and not counted lost); one spilled by a version whose
    ids had no host gets a new one (consumers would dead-letter it)."""
    await ensure_stream(js)
    subject = event_subject("h1", "exec")
    kept = MessageIds().new(subject, 1)
    spill = Spill(tmp_path / "spill", 1 << 20)
    for i, msg_id in enumerate([kept, "inst-1+1", kept]):
        spill.append(subject, msg_id, 1, encode_batch([{**ev("h1"), "id": f"i-{i}"}]))
    spill.close()
    loss = LossCounters()
    pub = Publisher(js, loss, PublisherConfig(spill_dir=tmp_path / "spill"))
    await pub.drain()
    await pub.close()
    info = await js.stream_info(STREAM_NAME)
    ids = [(await js.get_msg(STREAM_NAME, s)).headers["Nats-Msg-Id"]  # type: ignore[index]
           for s in range(info.state.first_seq, info.state.last_seq + 1)]
    assert len(ids) == 2 and ids[0] == kept  # the third: a duplicate of the first
    assert id_host(ids[1]) == "h1" and id_count(ids[1]) == 1
    assert loss.total == 0 and pub.duplicate_ids == 0
