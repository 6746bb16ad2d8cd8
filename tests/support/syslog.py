"""Syslog for the forward tests: a strict RFC 5424 reader and a CEF one (what a
receiver does), and a real rsyslogd on loopback ports, with TLS certificates."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# -- a strict RFC 5424 reader (what a receiver does) --------------------------

_HEADER = re.compile(r"<(\d{1,3})>1 (\S+) (\S{1,255}) (\S{1,48}) (\S{1,128}) (\S{1,32}) ")


@dataclass
class Parsed:
    pri: int
    timestamp: str
    hostname: str
    app: str
    procid: str
    msgid: str
    sd: dict[str, dict[str, str]]
    msg: str


def parse_5424(line: str) -> Parsed:
    m = _HEADER.match(line)
    assert m, f"not RFC 5424: {line[:120]!r}"
    pos, sd = m.end(), {}
    if line[pos] == "-":
        pos += 1
    else:
        while pos < len(line) and line[pos] == "[":
            end = pos + 1
            while line[end] not in " ]":
                end += 1
            sd_id, params = line[pos + 1 : end], {}
            pos = end
            while line[pos] == " ":
                eq = line.index("=", pos)
                name = line[pos + 1 : eq]
                assert re.fullmatch(r'[\x21-\x7e]{1,32}', name) and not set(name) & set('= ]"')
                assert line[eq + 1] == '"'
                i, value = eq + 2, []
                while line[i] != '"':
                    if line[i] == "\\" and line[i + 1] in '"\\]':
                        value.append(line[i + 1])
                        i += 2
                    else:
                        assert line[i] != "]", "unescaped ] in a PARAM-VALUE"
                        value.append(line[i])
                        i += 1
                params[name] = "".join(value)
                pos = i + 1
            assert line[pos] == "]"
            sd[sd_id] = params
            pos += 1
    msg = line[pos + 1 :] if pos < len(line) else ""
    return Parsed(int(m[1]), m[2], m[3], m[4], m[5], m[6], sd, msg.removeprefix("\ufeff"))


# -- a CEF reader ---------------------------------------------------------------


def parse_cef(text: str) -> tuple[list[str], dict[str, str]]:
    """Header split on unescaped pipes; extension keys found before unescaped '='."""
    fields, cur, i = [], [], 0
    while len(fields) < 7:
        ch = text[i]
        if ch == "\\":
            cur.append(text[i + 1])
            i += 2
            continue
        if ch == "|":
            fields.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    ext, pairs = text[i:], {}
    keys = list(re.finditer(r"(?:^| )([A-Za-z0-9_]+)=", ext))
    for k, nxt in zip(keys, [*keys[1:], None], strict=True):
        raw = ext[k.end() : nxt.start() if nxt else len(ext)]
        pairs[k[1]] = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m[1], m[1]), raw)
    return fields, pairs


# -- a real rsyslogd ----------------------------------------------------------

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


def needs_rsyslog(test: Callable[..., Any]) -> Callable[..., Any]:
    """Marks the tests that start rsyslogd. `make test` installs it; a missing one
    fails these tests with the fix, rather than skipping them silently."""
    return pytest.mark.usefixtures("rsyslogd_installed")(test)


@dataclass
class Rsyslog:
    dir: Path
    tcp: int
    udp: int
    tls: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    # Off: control characters are written to the file as received, as a
    # receiver that does not clean up after its senders would keep them.
    escape_control: bool = True

    @property
    def out(self) -> Path:
        return self.dir / "out.log"

    def start(self) -> None:
        tls = self.dir / "tls"
        conf = self.dir / "rsyslog.conf"
        tls_conf = "" if self.tls is None else f"""
global(DefaultNetstreamDriverCAFile="{tls}/ca.pem"
       DefaultNetstreamDriverCertFile="{tls}/server.pem"
       DefaultNetstreamDriverKeyFile="{tls}/server.key")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="{self.tls}" address="127.0.0.1")
"""  # fmt: skip
        conf.write_text(f"""
global(workDirectory="{self.dir}" maxMessageSize="64k" net.enableDNS="off"
       parser.escapeControlCharactersOnReceive="{'on' if self.escape_control else 'off'}")
module(load="imptcp")
module(load="imudp")
input(type="imptcp" port="{self.tcp}" address="127.0.0.1")
input(type="imudp" port="{self.udp}" address="127.0.0.1")
{tls_conf}
action(type="omfile" file="{self.out}" template="RSYSLOG_SyslogProtocol23Format")
""")  # fmt: skip
        log = (self.dir / "rsyslogd.log").open("ab")
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.dir / "rsyslogd.pid")],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 15
        try:
            while not self._ready():
                why = (self.dir / "rsyslogd.log").read_text()
                assert self.proc.poll() is None, why
                assert time.monotonic() < deadline, f"rsyslogd did not start listening: {why}"
                time.sleep(0.02)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        """TCP (and TLS) accept and a UDP probe was written: every listener is up."""
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.tcp), 1):
            if self.tls is not None:  # CI saw output written before the TLS listener was up
                socket.create_connection(("127.0.0.1", self.tls), 1).close()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.sendto(PROBE.encode(), ("127.0.0.1", self.udp))
            return self.out.exists() and "probe" in self.out.read_text("utf-8")
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def messages(self) -> list[Parsed]:
        if not self.out.exists():
            return []
        text = self.out.read_text("utf-8")
        # rsyslog writes control characters as #ooo (octal): undo it.
        # rsyslog may be mid-line: only whole lines are messages yet.
        lines = text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]
        parsed = [parse_5424(re.sub(r"#([0-7]{3})", lambda m: chr(int(m[1], 8)), ln))
                  for ln in lines]  # fmt: skip
        return [m for m in parsed if m.app != "probe"]


PROBE = "<14>1 - - probe - - - ready?"


def make_certs(where: Path) -> None:
    where.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=snoopbus test CA")  # fmt: skip
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2",
            "-extfile", "san.ext")  # fmt: skip
