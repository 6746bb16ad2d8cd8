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
from snoopbus.proto.subjects import (
    BUCKETS,
    host_bucket,
    published_subject,
    stored_filters,
    subject_host,
    subject_leaf,
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
        "snoopbus.events.h.proc.exec.extra.more",
        "snoopbus.dlq.7.a",
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


def test_unchecked_slices_agree_with_parse_subject() -> None:
    hosts = ["web-1", "a.b c/d", "x" * 250]
    built = [event_subject(h, t) for h in hosts for t in EVENT_TYPES]
    built += [alert_subject(h, lv) for h in hosts for lv in ALERT_LEVELS]
    built += [meta_subject(h, w) for h in hosts for w in ("loss", "heartbeat")]
    for subject in built:
        parts = parse_subject(subject)
        assert subject_host(subject) == parts.host
        assert subject_leaf(subject) == parts.type
    assert subject_leaf(dlq_subject("archive")) == parse_subject(dlq_subject("archive")).type
    assert subject_host(dlq_subject("archive")) == ""  # a dlq subject names no host


# -- as the stream stores them: with the host's bucket -----------------------


def stored(subject: str) -> str:
    """What the stream's transform makes of a published subject (the server's rule,
    written out: the bucket goes in after the kind)."""
    tokens = subject.split(".")
    if tokens[1] == "dlq":
        return subject
    return ".".join([*tokens[:2], str(host_bucket(subject_host(subject))), *tokens[2:]])


def test_host_bucket_is_fnv1a_of_the_token() -> None:
    # The FNV-1a 32 test vectors of its authors: "a" 0xe40c292c, "foobar" 0xbf9cf968.
    assert host_bucket("a") == 0xE40C292C % BUCKETS
    assert host_bucket("foobar") == 0xBF9CF968 % BUCKETS
    assert host_bucket("") == 0x811C9DC5 % BUCKETS
    assert {host_bucket(f"web-{i}") for i in range(2000)} == set(range(BUCKETS))


def test_stored_subjects_parse_as_their_published_form() -> None:
    hosts = ["web-1", "17", "a.b c/d", "x" * 250, "höst"]
    built = [event_subject(h, t) for h in hosts for t in EVENT_TYPES]
    built += [alert_subject(h, lv) for h in hosts for lv in ALERT_LEVELS]
    built += [meta_subject(h, w) for h in hosts for w in ("loss", "heartbeat")]
    for subject in built:
        as_stored = stored(subject)
        assert parse_subject(as_stored) == parse_subject(subject)._replace(stored=True)
        assert subject_host(as_stored) == parse_subject(subject).host
        assert subject_leaf(as_stored) == subject_leaf(subject)
        assert published_subject(as_stored) == subject
        assert published_subject(subject) == subject
    assert published_subject(dlq_subject("archive")) == dlq_subject("archive")


@pytest.mark.parametrize("bucket", ["x", "-1", "٣", "99999999999999999999"])
def test_a_bucket_that_is_not_the_hosts_is_refused(bucket: str) -> None:
    with pytest.raises(SubjectError, match="is not the bucket of host 'h1'"):
        parse_subject(f"snoopbus.events.{bucket}.h1.proc.exec")
    right = host_bucket("h1")
    with pytest.raises(SubjectError, match="is not the bucket"):
        parse_subject(f"snoopbus.meta.{(right + 1) % BUCKETS}.h1.loss")


def test_stored_filters() -> None:
    any_host = events_filter(type="exec")
    assert stored_filters(any_host) == ["snoopbus.events.*.*.proc.exec", any_host]
    assert stored_filters(any_host, [3, 1]) == [
        "snoopbus.events.1.*.proc.exec", "snoopbus.events.3.*.proc.exec", any_host]
    b = host_bucket("h1")
    assert stored_filters(meta_filter("h1")) == [f"snoopbus.meta.{b}.h1.*", "snoopbus.meta.h1.*"]
    assert stored_filters(meta_filter("h1"), [b + 1]) == ["snoopbus.meta.h1.*"]
    assert stored_filters(alerts_filter()) == ["snoopbus.alerts.*.*.*", "snoopbus.alerts.*.*"]
    # Dead letters are stored as published; a filter not of our shapes is left alone.
    for other in (dlq_filter(), "snoopbus.>", "snoopbus.events.h1.>", "other.x.y.z.w"):
        assert stored_filters(other) == [other]


def test_stored_filters_match_exactly_the_stored_subjects() -> None:
    from snoopbus.proto.bus import covers
    hosts = [f"h{i}" for i in range(40)]
    subjects = [event_subject(h, t) for h in hosts for t in ("exec", "open")]
    for buckets in (None, [0, 2, 4], list(range(1, BUCKETS, 2))):
        filters = stored_filters(events_filter(type="exec"), buckets)
        for s in subjects:
            wanted = s.endswith(".exec") and (buckets is None
                                              or host_bucket(subject_host(s)) in buckets)
            assert any(covers(f, stored(s)) for f in filters) == wanted
            assert any(covers(f, s) for f in filters) == s.endswith(".exec")  # as published
