"""Syslog (RFC 5424) and CEF: exact escaping against hostile host strings, and
delivery into a real rsyslogd (TCP, UDP, TLS) started per test, read back from
its output file and parsed as RFC 5424."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snoopbus.consumers.forward import Item, parse_alert
from snoopbus.consumers.forward.cef import ext_value, extension, header, render_cef
from snoopbus.consumers.forward.syslog import (
    header_field,
    param_value,
    render_5424,
    sd_element,
)
from snoopbus.consumers.printable import UNSAFE, printable
from tests.support.bus import dead_letters
from tests.support.events import (
    nth_alert,
    nth_event,
    publish_alert,
    publish_events,
    varied_event,
)
from tests.support.forward import forwarding
from tests.support.processes import free_port
from tests.support.syslog import Rsyslog, make_certs, needs_rsyslog, parse_5424, parse_cef
from tests.support.waits import until

NON_UTF8 = b"caf\xe9\xff".decode("utf-8", "surrogateescape")
HOSTILE = [
    'quote"inside', "back\\slash", "close]bracket", "eq=uals", "pi|pe", "new\nline",
    "cr\rreturn", "tab\there", f"bytes-{NON_UTF8}", "ünïcode ✓", "[x@1 y=\"z\"]",
    "<13>1 2025-01-01T00:00:00Z forged - - - - injected", "trailing\\",
]  # fmt: skip


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- escaping, unit -----------------------------------------------------------


def test_param_value_escapes_exactly_quote_backslash_bracket() -> None:
    assert param_value('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    for keep in ("=", "|", "[", "'", "é"):
        assert param_value(f"x{keep}y") == f"x{keep}y"
    # A line break, or any control, would end the record for a line-based
    # receiver: shown as \xNN, whose backslash is escaped in turn.
    for ch, shown in (("\n", "\\x0a"), ("\r", "\\x0d"), ("\t", "\\x09"), ("\x00", "\\x00"),
                      ("\x85", "\\x85"), ("\u2028", "\\u2028"), ("\u202e", "\\u202e")):
        assert param_value(f"x{ch}y") == f"x\\{shown}y"
    assert param_value(NON_UTF8) == "caf\\\\xe9\\\\xff"  # \xNN, its backslash escaped
    assert param_value("x" * 20, limit=10) == "xxxxxxx..."


def test_header_fields_are_printable_ascii() -> None:
    assert header_field("my host\n.é", 255) == "my_host_._"
    assert header_field("", 48) == "-"
    assert len(header_field("h" * 300, 255)) == 255


@pytest.mark.parametrize("hostile", HOSTILE)
def test_5424_round_trips_hostile_values(hostile: str) -> None:
    event = nth_event(1, "renamed", host=f"h {hostile}")
    event["proc"].update(exe=f"/bin/{hostile}", argv=[hostile, "x"], comm=hostile)
    event["file"].update(path=f"/tmp/{hostile}", old_path=f"/tmp/old{hostile}")
    line = render_5424(Item("event", event, 0, "s"), 8192)
    parsed = parse_5424(line)
    assert parsed.sd["proc@32473"]["exe"] == printable(f"/bin/{hostile}")
    assert parsed.sd["proc@32473"]["argv"] == printable(f"{hostile} x")
    assert parsed.sd["file@32473"]["path"] == printable(f"/tmp/{hostile}")
    assert parsed.sd["file@32473"]["old_path"] == printable(f"/tmp/old{hostile}")
    assert parsed.hostname == header_field(f"h {hostile}", 255)
    assert not UNSAFE.search(line.removeprefix("\ufeff").replace("\ufeff", ""))  # one line


def test_5424_alert_has_rule_and_severity() -> None:
    alert = parse_alert(nth_alert(4, "critical"))
    parsed = parse_5424(render_5424(Item("alert", alert, 0, "s"), 8192))
    assert parsed.pri == 13 * 8 + 2 and parsed.msgid == "alert"
    assert parsed.sd["alert@32473"]["rule_id"] == "rule-1"
    assert parsed.sd["alert@32473"]["tags"] == "attack.execution,attack.t1059"
    assert parsed.timestamp == "2025-11-22T02:00:00.123456Z"


# -- CEF, unit ----------------------------------------------------------------


def test_cef_escaping_per_spec() -> None:
    assert header("a|b\\c") == "a\\|b\\\\c"
    assert header("two\nlines\r") == "two\\\\x0alines\\\\x0d"
    assert header("eq=ok") == "eq=ok"
    assert ext_value("a=b\\c|d\ne\rf") == "a\\=b\\\\c|d\\\\x0ae\\\\x0df"
    assert ext_value("esc\x1b[2J\u202e") == "esc\\\\x1b[2J\\\\u202e"
    assert ext_value(NON_UTF8) == "caf\\\\xe9\\\\xff"


@pytest.mark.parametrize("hostile", HOSTILE)
def test_cef_round_trips_hostile_values(hostile: str) -> None:
    raw = nth_alert(2, "high")
    raw["rule"]["title"] = f"title {hostile}"
    raw["rule"]["id"] = f"id|{hostile}"
    raw["event"]["proc"].update(argv=[hostile, "k=v"], cwd=f"/w/{hostile}")
    raw["event"]["file"] = {"path": f"/p/{hostile} x=1"}
    header_fields, ext = parse_cef(render_cef(Item("alert", parse_alert(raw), 0, "s")))
    assert header_fields[:4] == ["CEF:0", "snoopbus", "snoopbus", header_fields[3]]
    assert header_fields[4] == printable(f"id|{hostile}")
    assert header_fields[5] == printable(f"title {hostile}")
    assert header_fields[6] == "8"
    assert ext["cs1"] == printable(f"{hostile} k=v")
    assert ext["cs3"] == printable(f"/w/{hostile}")
    assert ext["filePath"] == printable(f"/p/{hostile} x=1")
    assert ext["dvchost"] == "h1" and ext["cs1Label"] == "commandLine"


# -- a real rsyslogd ----------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("forward-certs") / "tls"
    make_certs(where)
    return where


@pytest.fixture
def rsyslog(request: pytest.FixtureRequest, tmp_path: Path, certs: Path) -> Iterator[Rsyslog]:
    """An rsyslogd on TCP and UDP; with TLS too for tests parametrized with transport=tls."""
    shutil.copytree(certs, tmp_path / "tls")
    callspec = getattr(request.node, "callspec", None)
    with_tls = callspec is not None and callspec.params.get("transport") == "tls"
    server = Rsyslog(tmp_path, free_port(), free_port(socket.SOCK_DGRAM),
                     free_port() if with_tls else None)  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.stop()


def hostile_event(seq: int) -> dict:
    event = nth_event(seq, "renamed")
    event["proc"]["argv"] = ["sh", "-c", HOSTILE[seq % len(HOSTILE)], "x" * 10_000]
    event["file"].update(path=f"/tmp/{HOSTILE[seq % len(HOSTILE)]}", old_path="/tmp/old")
    return event


@needs_rsyslog
@pytest.mark.parametrize("transport", ["tcp", "udp", "tls"])
async def test_rsyslog_receives_rfc5424(nc, js, rsyslog: Rsyslog, transport: str) -> None:
    port = {"tcp": rsyslog.tcp, "udp": rsyslog.udp, "tls": rsyslog.tls}[transport]
    url = f"syslog+{transport}://127.0.0.1:{port}?max_value=4000"
    if transport == "tls":
        url += f"&ca={rsyslog.dir / 'tls' / 'ca.pem'}"
    events = [hostile_event(i) for i in range(len(HOSTILE))]
    async with forwarding(nc, url):
        await publish_events(js, events, per_msg=4)
        await publish_alert(js, nth_alert(7, "critical"))
        await until(lambda: len(rsyslog.messages()) >= len(events) + 1, 20)
    got = {(m.sd.get("alert@32473") or m.sd["snoopbus@32473"])["id"]: m
           for m in rsyslog.messages()}  # fmt: skip
    for event in events:
        m = got[event["id"]]
        assert m.app == "snoopbus" and m.msgid == "renamed" and m.hostname == "h1"
        assert m.procid == str(event["proc"]["pid"])
        assert m.sd["file@32473"]["path"] == printable(event["file"]["path"])
        argv = " ".join(event["proc"]["argv"])
        assert m.sd["proc@32473"]["argv"] == cut(printable(argv), 4000)
    assert got["rule-1:inst-7"].pri == 13 * 8 + 2


@needs_rsyslog
async def test_cef_over_syslog_reaches_rsyslog(nc, js, rsyslog: Rsyslog) -> None:
    async with forwarding(nc, f"cef+tcp://127.0.0.1:{rsyslog.tcp}"):
        await publish_events(js, [hostile_event(0), hostile_event(4)], per_msg=2)
        await until(lambda: len(rsyslog.messages()) >= 2, 20)
    for m in rsyslog.messages():
        assert m.msgid == "CEF" and m.sd == {}
        fields, ext = parse_cef(m.msg)
        assert fields[0] == "CEF:0" and ext["act"] == "renamed"
        assert ext["filePath"] in (printable(f"/tmp/{HOSTILE[0]}"), printable(f"/tmp/{HOSTILE[4]}"))


@needs_rsyslog
async def test_rsyslog_down_then_back_gets_every_event(nc, js, rsyslog: Rsyslog) -> None:
    url = f"syslog+tcp://127.0.0.1:{rsyslog.tcp}?backoff=0.05&backoff_cap=0.5&retries=2"
    async with forwarding(nc, url) as fwd:
        await publish_events(js, [nth_event(i) for i in range(5)])
        await until(lambda: len(rsyslog.messages()) >= 5)
        rsyslog.stop()
        await publish_events(js, [nth_event(i) for i in range(5, 40)], per_msg=5)
        await until(lambda: fwd.workers[0].stats.naked >= 3, what="naks while down")
        rsyslog.start()
        want = {f"inst-{i}" for i in range(40)}
        await until(
            lambda: {m.sd["snoopbus@32473"]["id"] for m in rsyslog.messages()} >= want, 30
        )
    ids = [m.sd["snoopbus@32473"]["id"] for m in rsyslog.messages()]
    assert set(ids) == want  # at least once; duplicates allowed and counted below
    assert fwd.workers[0].stats.dead_lettered == 0


# -- property: any string survives the escaping -------------------------------

# Text as the kernel hands it over: any bytes, decoded with surrogateescape.
kernel_text = st.one_of(
    st.text(),
    st.binary(max_size=64).map(lambda b: b.decode("utf-8", "surrogateescape")),
)


@settings(max_examples=200, deadline=None)
@given(value=kernel_text, other=kernel_text)
def test_any_value_round_trips_through_5424(value: str, other: str) -> None:
    event = nth_event(1, "renamed")
    event["proc"].update(exe=value, argv=[other, value], cwd=other)
    event["file"].update(path=value, old_path=other)
    line = render_5424(Item("event", event, 0, "s"), 8192)
    parsed = parse_5424(line)
    assert parsed.sd["proc@32473"]["exe"] == printable(value)
    assert parsed.sd["proc@32473"]["argv"] == printable(f"{other} {value}")
    assert parsed.sd["file@32473"]["old_path"] == printable(other)
    assert not UNSAFE.search(line.replace("\ufeff", ""))  # the BOM before MSG is ours


@settings(max_examples=200, deadline=None)
@given(value=kernel_text, title=kernel_text)
def test_any_value_round_trips_through_cef(value: str, title: str) -> None:
    raw = nth_alert(1)
    raw["rule"]["title"] = title
    raw["event"]["proc"].update(argv=[value], cwd=value)
    line = render_cef(Item("alert", parse_alert(raw), 0, "s"))
    fields, ext = parse_cef(line)
    assert fields[5] == printable(title)
    assert ext["cs1"] == printable(value) and ext["cs3"] == printable(value)
    assert not UNSAFE.search(line)


@needs_rsyslog
async def test_udp_message_too_large_is_dead_lettered(nc, js, rsyslog: Rsyslog) -> None:
    url = f"syslog+udp://127.0.0.1:{rsyslog.udp}?name=udp&max_value=200000"
    big = nth_event(1)
    big["proc"]["argv"] = ["x" * 70_000]
    async with forwarding(nc, url):
        await publish_events(js, [big])
        (letter,) = await dead_letters(js, "forward-udp", 1)
    assert "do not fit one UDP datagram" in letter.headers["Snoopbus-Dlq-Reason"]


@pytest.mark.parametrize("limit", [8192, 20])
def test_fast_paths_write_what_the_per_value_escapes_write(limit: int) -> None:
    # sd_element and extension test the common values inline; param_value and
    # ext_value (one call per value) are the reference, for every kind of value.
    for seq in range(2000):
        event = varied_event(seq)
        proc, file = event.get("proc") or {}, event.get("file") or {}
        params = [*proc.items(), *file.items(), *event.items()]
        params = [(k, v) for k, v in params if not isinstance(v, dict | list)] + [("n", None)]
        body = "".join(f' {k}="{param_value(v, limit)}"' for k, v in params if v is not None)
        assert sd_element("x", params, limit) == f"[x@32473{body}]"
        ext = " ".join(f"{k}={ext_value(v, limit)}" for k, v in params if v is not None)
        assert extension(params, limit) == ext
