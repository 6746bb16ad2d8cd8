"""`snoopbus rules check PATH...` and `snoopbus rules test RULE... --event FILE`.

Offline: no NATS. Both load rules with the alerter's own loader (loader.py)
and `test` matches with its own engine (engine.py), so what they say is
what `consume alert` does with the same rules, field map and event.

Exit statuses (proto/exits.py):
  check  0 every rule loads, or is skipped only as meant for another log source
         1 a rule that could apply will not run (invalid, unmapped fields,
           unsupported construct, duplicate id), or no rule loads at all
         2 a PATH does not exist, or a bad --field-map
  test   0 the event (one of them) matches a rule; 1 none matches;
         2 no rule loads from RULE, an unreadable or invalid event file
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snoopbus.proto import exits, log_setup

if TYPE_CHECKING:  # pySigma loads only when a command runs (the alert role's extra)
    from .fields import FieldMap
    from .loader import LoadReport, Skipped


class RulesError(ValueError):
    """One line: what is wrong and what to do (exit status 2)."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "rules",
        help="check Sigma rules and test them on an event, offline",
        description="Load Sigma rules as `consume alert` does, without NATS: which load, "
        "which are skipped and why (`check`); whether an event matches (`test`).",
    )
    sub = p.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    check = sub.add_parser(
        "check",
        help="which rules load, which are skipped and why, which fields are unmapped",
        description="Exit 0 when every rule loads or is only meant for a log source snoopbus "
        "does not produce; 1 when a rule that could apply will not run (invalid, unmapped "
        "fields, unsupported construct, duplicate id) or none loads; 2 on a bad PATH or flag.",
    )
    check.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                       help="rule files or folders (searched for *.yml, *.yaml); "
                       "`default` is the packaged set")  # fmt: skip
    test = sub.add_parser(
        "test",
        help="does an event match; which rules and selections did",
        description="Exit 0 when an event matches a rule, 1 when none does, 2 on an error. "
        "The event is a JSON object as `snoopbus tail --json` prints it (or several: a "
        "JSON array, or one object per line); v, id, ts and host may be left out.",
    )
    test.add_argument("paths", nargs="+", type=Path, metavar="RULE",
                      help="rule files or folders; `default` is the packaged set")
    test.add_argument("--event", required=True, metavar="FILE.json",
                      help="the event(s) to match, JSON; - reads stdin")
    for command in (check, test):
        command.add_argument("--field-map", type=Path, metavar="FILE",
                             help="TOML/YAML overrides of the Sigma field mapping, "
                             "as `consume alert --field-map`")  # fmt: skip
        command.add_argument("--pipeline", type=Path, action="append", default=[],
                             metavar="FILE", help="a pySigma processing pipeline applied to "
                             "each rule first, as `consume alert --pipeline`; repeatable")
        command.add_argument("--json", action="store_true", help="one JSON document")
        log_setup.add_flags(command)
    check.set_defaults(func=run_check)
    test.set_defaults(func=run_test)


def _load(args: argparse.Namespace) -> tuple[LoadReport, FieldMap, list[Path]]:
    from .loader import resolve_paths
    from .ruleset import RuleSetError, load

    resolved = resolve_paths(args.paths)
    # The report is this command's output: the loader's one warning per skip
    # would say it twice on stderr.
    quiet = logging.getLogger("snoopbus.consumers.alert.loader")
    if quiet.getEffectiveLevel() > logging.DEBUG:
        quiet.setLevel(logging.ERROR)
    try:
        report, fmap = load(resolved, field_map_file=args.field_map, pipelines=args.pipeline)
    except RuleSetError as exc:
        raise RulesError(str(exc)) from None
    return report, fmap, resolved


def _imports_ok(command: str) -> int | None:
    try:
        import sigma  # noqa: F401
    except ImportError:  # a host installed without the alert role
        print(f"snoopbus rules {command}: needs pySigma, which is not installed: "
              "pip install 'snoopbus[alert]' (or 'snoopbus[all]')", file=sys.stderr)
        return exits.USAGE
    return None


# ---- check ----------------------------------------------------------------


def check_report(report: LoadReport, fmap: FieldMap) -> dict[str, Any]:
    """The JSON document of `rules check` (the text form prints the same facts)."""
    unmapped: Counter[str] = Counter(f for s in report.skipped for f in s.unmapped)
    problems = [s for s in report.skipped if s.problem]
    return {
        "loaded": [
            {"source": r.source, "id": r.id, "title": r.title, "level": r.level,
             "category": r.category, "fields": sorted(r.fields)}
            for r in report.rules
        ] + [
            {"source": c.source, "id": c.id, "title": c.title, "level": c.level,
             "category": f"correlation {c.kind}", "fields": sorted(c.fields),
             "rules": list(c.bases)}
            for c in report.correlations
        ],
        "skipped": [_skipped(s) for s in report.skipped],
        "unmapped_fields": dict(unmapped.most_common()),
        "warnings": list(report.warnings),
        "summary": {
            "files": report.files, "loaded": len(report.rules) + len(report.correlations),
            "skipped": len(report.skipped), "problems": len(problems),
            "skipped_by_kind": dict(Counter(s.kind for s in report.skipped).most_common()),
        },
        "exit_status": exits.PROBLEMS if problems or not report.rules else exits.OK,
    }


def _skipped(s: Skipped) -> dict[str, Any]:
    out: dict[str, Any] = {"source": s.source, "rule": s.rule, "kind": s.kind,
                           "problem": s.problem, "reason": s.reason}  # fmt: skip
    if s.unmapped:
        out["unmapped"] = list(s.unmapped)
    return out


def run_check(args: argparse.Namespace) -> int:
    failed = _imports_ok("check")
    if failed is not None:
        return failed
    try:
        report, fmap, resolved = _load(args)
    except RulesError as exc:
        return exits.fail("rules check", exc)
    doc = check_report(report, fmap)
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=True))
    else:
        _print_check(doc, resolved)
    return int(doc["exit_status"])


def _print_check(doc: dict[str, Any], paths: list[Path]) -> None:
    from ..lines import shown

    for r in doc["loaded"]:
        print(f"loaded   {shown(r['source'])}: {shown(r['title'])} ({shown(r['id'])}) "
              f"[{r['category']}]")  # fmt: skip
    for s in doc["skipped"]:
        rule = f"{shown(s['rule'])}: " if s["rule"] else ""
        mark = "PROBLEM" if s["problem"] else "skipped"
        print(f"{mark:<8} {shown(s['source'])}: {rule}{shown(s['reason'])}")
    for w in doc["warnings"]:
        print(f"warning  {shown(w)}")
    n = doc["summary"]
    kinds = ", ".join(f"{k} {v}" for k, v in n["skipped_by_kind"].items())
    print(f"{n['loaded']} rules load, {n['skipped']} skipped{f' ({kinds})' if kinds else ''}, "
          f"from {n['files']} files in {', '.join(shown(str(p)) for p in paths)}")
    if doc["unmapped_fields"]:
        fields = ", ".join(f"{shown(f)} ({c} rules)" for f, c in doc["unmapped_fields"].items())
        print(f"unmapped fields: {fields}: map them with --field-map or --pipeline")
    if n["problems"]:
        print(f"{n['problems']} rules that could apply to snoopbus events will not run")
    elif not n["loaded"]:
        print("no rule loads: none of these would run")


# ---- test -----------------------------------------------------------------


def read_events(name: str) -> list[dict[str, Any]]:
    """The events of a JSON file: one object, an array of them, or one per line.
    Keys the schema requires but a hand-written event may leave out get
    placeholders; everything else is checked as the consumers check events."""
    from snoopbus.proto.schema import SCHEMA_VERSION, SchemaError, validate_event

    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"--event {name}: cannot read: {exc}") from None
    try:
        data = json.loads(text)
        items = data if isinstance(data, list) else [data]
    except json.JSONDecodeError as whole:
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            items = [json.loads(line) for line in lines]
        except json.JSONDecodeError:
            raise RulesError(f"--event {name}: not JSON: {whole}") from None
    if not items:
        raise RulesError(f"--event {name}: no event in it")
    events: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            item = {"v": SCHEMA_VERSION, "id": f"test-{i}", "ts": 0, "host": "test", **item}
        try:
            events.append(dict(validate_event(item, index=i)))
        except SchemaError as exc:
            raise RulesError(f"--event {name}: {exc}") from None
    return events


def match_report(report: LoadReport, fmap: FieldMap, events: Iterable[dict[str, Any]]
                ) -> dict[str, Any]:  # fmt: skip
    """The JSON document of `rules test`: per event, every rule of the log
    sources it feeds, matched or not, with the selections that held."""
    from .engine import Engine
    from .logsources import EVENT_TYPES

    engine = Engine(report.rules, fmap, report.correlations)
    out: list[dict[str, Any]] = []
    for i, event in enumerate(events):
        verdicts = engine.explain(event)
        categories = [c for c, types in EVENT_TYPES.items() if event["type"] in types]
        note = ""
        if event.get("ret", 0) < 0:
            note = f"a failed syscall (ret {event['ret']}) never matches"
        elif not categories:
            note = f"event type {event['type']!r} feeds no Sigma log source"
        elif not verdicts:
            note = f"no rule loaded for its log sources ({', '.join(categories)})"
        out.append({
            "index": i, "id": event["id"], "type": event["type"],
            "categories": categories,
            "matched": any(v.matched for v in verdicts),
            "rules": [
                {"id": v.rule.id, "title": v.rule.title, "level": v.rule.level,
                 "category": v.rule.category, "matched": v.matched,
                 "selections": v.selections,
                 "fields": {k: v.values.get(k) for k in sorted(v.rule.fields)}}
                for v in verdicts
            ],
            **({"note": note} if note else {}),
        })  # fmt: skip
    matched = any(e["matched"] for e in out)
    return {
        "events": out,
        "rules_loaded": len(report.rules),
        "skipped": [_skipped(s) for s in report.skipped],
        "exit_status": exits.OK if matched else exits.PROBLEMS,
    }


def run_test(args: argparse.Namespace) -> int:
    failed = _imports_ok("test")
    if failed is not None:
        return failed
    try:
        report, fmap, resolved = _load(args)
        if not report.rules:
            why = "; ".join(str(s) for s in report.skipped) or "no rule files"
            raise RulesError(f"no rule loads from {', '.join(map(str, resolved))}: {why}")
        events = read_events(args.event)
    except RulesError as exc:
        return exits.fail("rules test", exc)
    doc = match_report(report, fmap, events)
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=True, default=repr))
    else:
        _print_test(doc)
    return int(doc["exit_status"])


def _print_test(doc: dict[str, Any]) -> None:
    from ..lines import shown

    for s in doc["skipped"]:
        rule = f"{shown(s['rule'])}: " if s["rule"] else ""
        print(f"skipped  {shown(s['source'])}: {rule}{shown(s['reason'])}")
    for e in doc["events"]:
        head = f"event {e['index']} ({shown(e['type'])}, id {shown(e['id'])})"
        if "note" in e:
            print(f"{head}: no match: {shown(e['note'])}")
            continue
        print(f"{head}: {'MATCH' if e['matched'] else 'no match'}")
        # Matches, then near misses (a selection held); the rest only counted.
        shown_rules = [r for r in e["rules"] if r["matched"] or r["selections"]]
        for r in sorted(shown_rules, key=lambda r: not r["matched"]):
            held = ", ".join(shown(s) for s in r["selections"]) or "none"
            what = "match   " if r["matched"] else "no match"
            print(f"  {what} {shown(r['title'])} ({shown(r['id'])}) [{r['category']}] "
                  f"selections held: {held}")  # fmt: skip
            if r["matched"]:
                for k, v in r["fields"].items():
                    print(f"             {shown(k)} = {shown(v)}")
        rest = len(e["rules"]) - len(shown_rules)
        if rest:
            print(f"  {rest} other rules of {', '.join(e['categories'])}: no selection held")
