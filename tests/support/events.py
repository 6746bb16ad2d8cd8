"""Event and alert maps as the collector and the alerter publish them, and
publishing them the way a collector does.

One builder, `event`; the others fill it for a purpose (a full process, a file
event, a numbered series, every field of the contract). A test that needs other
defaults passes them, or wraps these with its own.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from nats.js import JetStreamContext

from snoopbus.proto import (
    SCHEMA_VERSION,
    alert_subject,
    encode_batch,
    encode_map,
    ensure_stream,
    event_subject,
)

T0 = 1_763_776_800_123_456_789  # 2025-11-22T02:00:00.123456789Z: nth_event's first
TS = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z: exec_event's and file_event's
BASE_TS = 1_763_700_000 * 10**9  # 2025-11-21T04:40:00Z: mixed_event's first
FILE_TYPES = ("open", "create", "modify", "close_write", "delete")  # mixed_event's, in turn

_ids = itertools.count(1)


def next_id(prefix: str = "t") -> str:
    """An id no other event of this test process has."""
    return f"{prefix}-{next(_ids)}"


def event(type_: str = "exec", *, id: str | None = None, ts: int = 1, host: str = "h1",
          proc: dict[str, Any] | None = None, file: dict[str, Any] | None = None,
          v: int = SCHEMA_VERSION, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """The builder the others fill: the header, `proc` (a minimal one by default),
    `file` if given, then `extra` top-level fields."""
    ev: dict[str, Any] = {"v": v, "id": next_id() if id is None else id, "ts": ts, "host": host,
                          "type": type_, "proc": {"pid": 1, "comm": "sh"} if proc is None else proc}
    if file is not None:
        ev["file"] = file
    ev.update(extra)
    return ev


def bare_exec(comm: str = "sh", *, host: str = "h1", **extra: Any) -> dict[str, Any]:
    """An exec whose process has only what the contract requires (pid and comm)."""
    return event("exec", host=host, proc={"pid": 1, "comm": comm}, **extra)


def full_proc(argv: list[str], **fields: Any) -> dict[str, Any]:
    """Every process field an exec carries, for `argv` (its comm and exe from argv[0])."""
    return {"pid": 4242, "tid": 4242, "ppid": 1, "uid": 0, "gid": 0,
            "comm": argv[0].rsplit("/", 1)[-1][:15], "exe": argv[0], "argv": argv,
            "cwd": "/root", **fields}  # fmt: skip


def exec_event(argv: list[str], parent: str | None = None, *, host: str = "h1",
               id: str | None = None, ts: int = TS, **proc: Any) -> dict[str, Any]:  # fmt: skip
    """An exec of `argv` with a full process (`proc` overrides its fields), under
    `parent` if given."""
    p = full_proc(argv, **proc)
    if parent:
        p["parent_exe"], p["parent_argv"] = parent, [parent]
    return event("exec", id=id, ts=ts, host=host, proc=p)


def file_event(type_: str, path: str, *, host: str = "h1", id: str | None = None, ts: int = TS,
               proc: dict[str, Any] | None = None, **file: Any) -> dict[str, Any]:  # fmt: skip
    """A file event on `path` (`file` adds its other fields) by cp, unless `proc`."""
    p = {"pid": 77, "uid": 0, "comm": "cp", "exe": "/usr/bin/cp"} if proc is None else proc
    return event(type_, id=id, ts=ts, host=host, proc=p, file={"path": path, **file})


def nth_event(seq: int, type: str = "exec", host: str = "h1", **extra: Any) -> dict[str, Any]:
    """Event `seq` of a series by bash: ids, times, pids and paths follow `seq`."""
    proc = {"pid": 100 + seq, "tid": 100 + seq, "ppid": 1, "uid": 1000, "gid": 1000,
            "comm": "bash", "exe": "/usr/bin/bash", "argv": ["bash", "-c", f"echo {seq}"],
            "cwd": "/home/u"}  # fmt: skip
    file = None
    if type not in ("exec", "exit"):
        file = {"path": f"/tmp/f{seq}.txt", "inode": 1000 + seq, "mode": 0o100644}
    ev = event(type, id=f"inst-{seq}", ts=T0 + seq, host=host, proc=proc, file=file, v=1)
    if type == "exit":
        ev["exit_code"] = 0
    ev.update(extra)
    return ev


def nth_alert(seq: int, level: str = "high", host: str = "h1") -> dict[str, Any]:
    """An alert map of one of three rules, on nth_event `seq`."""
    return {
        "rule": {"id": f"rule-{seq % 3}", "title": f"Suspicious thing {seq}", "level": level,
                 "tags": ["attack.execution", "attack.t1059"]},
        "event": nth_event(seq, host=host),
    }  # fmt: skip


def mixed_event(n: int, host: str = "h1", ts: int | None = None, rng: random.Random | None = None,
                ) -> dict[str, Any]:  # fmt: skip
    """Event number `n`: an exec every 10th, else a file event of pid 1000 + n % 50."""
    rng = rng or random.Random(n)
    pid = 1000 + n % 50
    proc = {"pid": pid, "tid": pid, "ppid": 1, "uid": 0, "gid": 0,
            "comm": f"proc{pid % 7}", "exe": f"/usr/bin/proc{pid % 7}"}  # fmt: skip
    stamp = BASE_TS + n * 1000 if ts is None else ts
    if n % 10 == 0:
        proc["argv"] = [f"/usr/bin/proc{pid % 7}", "--n", str(n)]
        proc["cwd"] = "/root"
        return event("exec", id=f"{host}-i1-{n}", ts=stamp, host=host, proc=proc)
    file = {"path": f"/var/data/{rng.randrange(1000)}/f{n}.log", "flags": 577,
            "mode": 0o644, "inode": 10_000 + n, "dev": 2049}  # fmt: skip
    return event(FILE_TYPES[n % len(FILE_TYPES)], id=f"{host}-i1-{n}", ts=stamp, host=host,
                 proc=proc, file=file, ret=3)  # fmt: skip


_ODD_TEXT = ("", "a", "x" * 120, "x" * 125, "x" * 126, "x" * 300, "é" * 70, "ünï ✓", ".hidden",
             "caf" + b"\xe9\xff".decode("utf-8", "surrogateescape"), 'q"b\\]|=', "nl\nx",
             "\u2028", "a b", "/usr/bin/x.tar.gz", "/", "dir/")  # fmt: skip
_ODD_INTS = (0, 1, 127, 128, 300, 2**31, 2**63 - 1, 2**63, 2**70, -1, -(2**63), True)
EVENT_TYPES_ALL = ("exec", "exit", "open", "create", "mkdir", "link", "symlink", "moved_to",
                   "moved_in", "delete", "rmdir", "moved_from", "moved_out", "modify",
                   "close_write", "attrib", "renamed")  # fmt: skip


def varied_event(seq: int) -> dict[str, Any]:
    """nth_event `seq` of any type, with values a mapper must treat alike or apart:
    text long and short, not ASCII, not UTF-8, with quotes, brackets and line
    breaks; ints at varint and int64 edges, negative, bool; fields left out.
    For comparing two ways of writing one format (a fast path with the plain one)."""
    rng = random.Random(seq)
    ev = nth_event(seq, rng.choice(EVENT_TYPES_ALL), host=rng.choice(["h1", "web-1", "h é"]))
    proc, file = ev["proc"], ev.get("file")
    for key in ("pid", "tid", "ppid", "uid", "gid"):
        if rng.random() < 0.2:
            proc[key] = rng.choice(_ODD_INTS)
        if rng.random() < 0.05:
            del proc[key]
    for key in ("comm", "exe", "cwd", "parent_exe", "container"):
        if rng.random() < 0.3:
            proc[key] = rng.choice(_ODD_TEXT)
        if rng.random() < 0.05:
            proc.pop(key, None)
    for key in ("argv", "parent_argv"):
        if rng.random() < 0.3:
            proc[key] = [rng.choice(_ODD_TEXT) for _ in range(rng.randrange(6))]
    if rng.random() < 0.05:
        del proc["argv"]
    if file is not None:
        for key in ("path", "old_path", "target"):
            if rng.random() < 0.3:
                file[key] = rng.choice(_ODD_TEXT)
        for key in ("inode", "mode", "dev", "flags"):
            if rng.random() < 0.3:
                file[key] = rng.choice(_ODD_INTS)
        if rng.random() < 0.05:
            del file["path"]
    for key in ("ret", "exit_code", "cookie", "ts"):
        if rng.random() < 0.15:
            ev[key] = rng.choice(_ODD_INTS)
    if rng.random() < 0.03:
        del ev["proc"]
    return ev


def rename_half(kind: str, cookie: int | None, *, host: str = "h1", id: str | None = None,
                ts: int = 1, proc: dict[str, Any] | None = None,
                **file: Any) -> dict[str, Any]:  # fmt: skip
    """One half of a rename (moved_from or moved_to) by mv, of /kind/cookie unless `file`
    says otherwise; no cookie if None (a half the kernel could not pair)."""
    ev = event(kind, id=f"{host}-{kind}-{cookie}" if id is None else id, ts=ts, host=host,
               proc={"pid": 7, "comm": "mv"} if proc is None else proc,
               file={"path": f"/{kind}/{cookie}", **file})  # fmt: skip
    if cookie is not None:
        ev["cookie"] = cookie
    return ev


def full_event(**overrides: Any) -> dict[str, Any]:
    """An open of /etc/passwd with every field the contract has; `overrides` replace
    top-level fields (its file stays, whatever the type)."""
    proc = {"pid": 100, "tid": 101, "ppid": 1, "uid": 0, "gid": 0, "comm": "cat",
            "exe": "/usr/bin/cat", "argv": ["cat", "/etc/passwd"], "cwd": "/root",
            "cgroup": 4242, "container": "", "argv_truncated": False, "exe_truncated": False}
    file = {"path": "/etc/passwd", "flags": 0, "mode": 0o644, "inode": 12, "dev": 2049,
            "path_truncated": False, "mnt_ns": 4026531841}
    ev = event("open", id="a1b2-42", ts=1_700_000_000_123_456_789, host="web-1", proc=proc,
               file=file, v=1, ret=3)  # fmt: skip
    ev.update(overrides)
    return ev


async def publish(js: JetStreamContext, *events: dict[str, Any]) -> None:
    """`events` as one message on the first one's subject."""
    first = events[0]
    await js.publish(event_subject(first["host"], first["type"]), encode_batch(list(events)))


async def publish_each(js: JetStreamContext, *events: dict[str, Any]) -> None:
    """Each event a message of its own."""
    for ev in events:
        await js.publish(event_subject(ev["host"], ev["type"]), encode_batch([ev]))


async def publish_events(js: JetStreamContext, events: list[dict[str, Any]],
                           per_msg: int = 1) -> None:  # fmt: skip
    """In order, up to `per_msg` events a message, all of its subject's host and
    type (the contract); the stream is made if missing."""
    await ensure_stream(js)
    chunks: list[list[dict[str, Any]]] = []
    for ev in events:
        last = chunks[-1] if chunks else None
        if (last is None or len(last) == per_msg
                or (last[0]["host"], last[0]["type"]) != (ev["host"], ev["type"])):
            chunks.append([ev])
        else:
            last.append(ev)
    for chunk in chunks:
        await js.publish(event_subject(chunk[0]["host"], chunk[0]["type"]), encode_batch(chunk))


async def publish_grouped(js: JetStreamContext, events: list[dict[str, Any]], per_msg: int = 7,
                          ) -> int:  # fmt: skip
    """Grouped by (host, type) as a collector would; the number of messages."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for ev in events:
        groups.setdefault((ev["host"], ev["type"]), []).append(ev)
    sent = 0
    for (host, kind), evs in groups.items():
        for i in range(0, len(evs), per_msg):
            await js.publish(event_subject(host, kind), encode_batch(evs[i : i + per_msg]))
            sent += 1
    return sent


async def publish_alert(js: JetStreamContext, alert: dict[str, Any]) -> None:
    await ensure_stream(js)
    await js.publish(alert_subject(alert["event"]["host"], alert["rule"]["level"]),
                     encode_map(alert))  # fmt: skip
