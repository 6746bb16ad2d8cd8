"""Subject and stream names."""

from __future__ import annotations

import pytest

from snoopbus.proto import (
    ALERT_LEVELS,
    EVENT_TYPES,
    STREAM_NAME,
    STREAM_SUBJECTS,
    SubjectError,
    SubjectParts,
    alert_subject,
    alerts_filter,
    dlq_filter,
    dlq_subject,
    event_subject,
    events_filter,
    family,
    host_token,
    meta_filter,
    meta_subject,
    parse_subject,
)


def test_stream() -> None:
    assert STREAM_NAME == "SNOOPBUS"
    assert STREAM_SUBJECTS == ["snoopbus.>"]


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("web-1", "web-1"),
        ("web-1.example.com", "web-1_example_com"),
        ("*", "_"),
        (">", "_"),
        ("a b\tc\nd\re", "a_b_c_d_e"),
        ("evil.>", "evil__"),
        ("x.*.y", "x___y"),
        ("nul\x00bell\x07", "nul_bell_"),
        ("nbsp\u00a0", "nbsp_"),
        ("h\udcff", "h_"),  # a non-UTF-8 host name cannot go on the wire as is
        ("höst", "höst"),
    ],
)
def test_host_token(name: str, token: str) -> None:
    assert host_token(name) == token


def test_host_token_empty() -> None:
    with pytest.raises(SubjectError):
        host_token("")


@pytest.mark.parametrize("t", EVENT_TYPES)
def test_event_subject_round_trips(t: str) -> None:
    subject = event_subject("db.prod", t)
    assert subject == f"snoopbus.events.db_prod.{family(t)}.{t}"
    assert parse_subject(subject) == SubjectParts("events", "db_prod", family(t), t)


def test_hostile_host_stays_one_token() -> None:
    subject = event_subject("a.b > *.c", "exec")
    assert subject.split(".")[2:] == ["a_b_____c", "proc", "exec"]
    assert parse_subject(subject).host == "a_b_____c"


def test_event_subject_unknown_type() -> None:
    with pytest.raises(SubjectError, match="unknown event type 'fork'"):
        event_subject("h", "fork")


@pytest.mark.parametrize("level", ALERT_LEVELS)
def test_alert_subject(level: str) -> None:
    subject = alert_subject("h.x", level)
    assert subject == f"snoopbus.alerts.h_x.{level}"
    assert parse_subject(subject) == SubjectParts("alerts", "h_x", None, level)


def test_alert_subject_unknown_level() -> None:
    with pytest.raises(SubjectError, match="unknown alert level 'urgent'"):
        alert_subject("h", "urgent")


def test_meta_and_dlq() -> None:
    assert meta_subject("h", "loss") == "snoopbus.meta.h.loss"
    assert parse_subject("snoopbus.meta.h.loss") == SubjectParts("meta", "h", None, "loss")
    assert dlq_subject("rename") == "snoopbus.dlq.rename"
    assert parse_subject("snoopbus.dlq.rename") == SubjectParts("dlq", None, None, "rename")


@pytest.mark.parametrize("bad", ["", "a.b", "*", ">", "a b", "x\n"])
def test_program_tokens_are_refused_not_rewritten(bad: str) -> None:
    with pytest.raises(SubjectError):
        meta_subject("h", bad)
    with pytest.raises(SubjectError):
        dlq_subject(bad)


def test_filters() -> None:
    assert events_filter() == "snoopbus.events.*.*.*"
    assert events_filter(host="a.b") == "snoopbus.events.a_b.*.*"
    assert events_filter(family="file") == "snoopbus.events.*.file.*"
    assert events_filter(type="exec") == "snoopbus.events.*.proc.exec"
    assert events_filter("h", "file", "renamed") == "snoopbus.events.h.file.renamed"
    assert alerts_filter() == "snoopbus.alerts.*.*"
    assert alerts_filter(level="high") == "snoopbus.alerts.*.high"
    assert meta_filter(host="h") == "snoopbus.meta.h.*"
    assert dlq_filter() == "snoopbus.dlq.*"
    assert dlq_filter("alert") == "snoopbus.dlq.alert"


@pytest.mark.parametrize(
    "kwargs",
    [{"family": "net"}, {"type": "fork"}, {"family": "proc", "type": "open"}],
)
def test_filter_errors(kwargs: dict[str, str]) -> None:
    with pytest.raises(SubjectError):
        events_filter(**kwargs)


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "foo.bar",
        "snoopbus",
        "snoopbus.events",
        "snoopbus.events.h.proc",
        "snoopbus.events.h.proc.exec.extra",
        "snoopbus.events.*.proc.exec",
        "snoopbus.events.h.proc.>",
        "snoopbus.other.h.x",
        "SNOOPBUS.events.h.proc.exec",
        "snoopbus.alerts.h",
        "snoopbus.dlq.a.b",
        "snoopbus.meta..loss",
    ],
)
def test_parse_foreign_subject(subject: str) -> None:
    with pytest.raises(SubjectError, match="not a snoopbus subject"):
        parse_subject(subject)


@pytest.mark.parametrize(
    ("subject", "message"),
    [
        ("snoopbus.events.h.proc.open", "'open' is a file event, not proc"),
        ("snoopbus.events.h.file.fork", "unknown event type 'fork'"),
        ("snoopbus.alerts.h.urgent", "unknown alert level 'urgent'"),
    ],
)
def test_parse_inconsistent_subject(subject: str, message: str) -> None:
    with pytest.raises(SubjectError, match=message):
        parse_subject(subject)
