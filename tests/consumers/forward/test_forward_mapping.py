"""The ECS and OCSF mappings cover every field of proto/fields.py: each is
mapped (changing its value changes the document where the mapping says) or
listed as deliberately unmapped (changing it changes nothing); every sink's
severity scale covers the alert levels in their rank order."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from snoopbus.consumers.forward import Item, cef, ecs, ocsf, otlp, parse_alert, syslog
from snoopbus.proto.fields import ALERT_FIELDS, ALERT_LEVELS, EVENT_FIELDS, Field

MAPPINGS = {"ecs": (ecs, ecs.to_ecs), "ocsf": (ocsf, ocsf.to_ocsf)}
TS = 1_763_776_800_123_456_789


def covered(table: tuple[Field, ...]) -> dict[str, Field]:
    """Fields with a value of their own: not the maps whose keys are listed."""
    parents = {f.parent for f in table}
    return {f.name: f for f in table if f.type != "map" or f.name not in parents}


def value(f: Field, n: int) -> Any:
    return {"int": 1000 + n, "uint": 1000 + n, "str": f"/v/{f.key}", "bool": True,
            "[str]": ["a", f.key], "float": 1.5, "map": {"k": f.key}}[f.type]  # fmt: skip


def changed(f: Field, old: Any) -> Any:
    if f.type == "bool":
        return not old
    if f.type == "map":
        return {} if old else {"k": 1}
    if f.type in ("int", "uint", "float"):
        return old + 10**9  # past a millisecond: OCSF's times are ms
    return [*old, "b"] if f.type == "[str]" else old + "z"


def put(obj: dict[str, Any], name: str, v: Any) -> None:
    *path, key = name.split(".")
    for part in path:
        obj = obj.setdefault(part, {})
    obj[key] = v


def full_event(type_: str) -> dict[str, Any]:
    """An event of `type_` with every field that type carries."""
    event: dict[str, Any] = {}
    for n, f in enumerate(EVENT_FIELDS):
        if type_ in f.on and f.type != "map":
            put(event, f.name, value(f, n))
    event.update(v=1, id="i-1", ts=TS, host="web1", type=type_)
    return event


def full_alert() -> dict[str, Any]:
    alert: dict[str, Any] = {}
    for n, f in enumerate(ALERT_FIELDS):
        if f.name not in ("rule", "correlation"):
            put(alert, f.name, value(f, n))
    alert.update(v=1, ts=TS, level="high", event=full_event("exec"))
    alert["rule"].update(level="high")
    return alert


def flat(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in doc.items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = v
    return out


def differs_at(before: dict[str, Any], after: dict[str, Any], target: str) -> bool:
    keys = {k for k in before.keys() | after.keys() if k == target or k.startswith(target + ".")}
    return any(before.get(k) != after.get(k) for k in keys)


Render = Callable[[dict[str, Any]], dict[str, Any]]


def check(name: str, f: Field, make: Callable[[], dict[str, Any]], render: Render,
          mapped: dict[str, str]) -> None:  # fmt: skip
    src = make()
    before = flat(render(copy.deepcopy(src)))
    old = src
    for part in f.name.split(".")[:-1]:
        old = old[part]
    if f.name == "type":
        old["type"] = "exit" if src["type"] == "exec" else "create"
    elif f.name in ("level", "rule.level"):
        old[f.key] = "low"
    elif f.name == "ret":
        old["ret"] = -13  # a failure: its sign is what the mappings read
    else:
        old[f.key] = changed(f, old[f.key])
    after = flat(render(src))
    if name in mapped:
        assert differs_at(before, after, mapped[name]), f"{name}: {mapped[name]} did not change"
    else:
        changes = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        assert not changes, f"{name} is listed unmapped, yet it changed {sorted(changes)}"


@pytest.mark.parametrize("mapping", sorted(MAPPINGS))
def test_every_field_is_mapped_or_listed_unmapped(mapping: str) -> None:
    module, _ = MAPPINGS[mapping]
    for table, mapped, unmapped in ((EVENT_FIELDS, module.EVENT_MAPPED, module.EVENT_UNMAPPED),
                                    (ALERT_FIELDS, module.ALERT_MAPPED, module.ALERT_UNMAPPED)):
        assert not set(mapped) & set(unmapped), set(mapped) & set(unmapped)
        assert set(mapped) | set(unmapped) == set(covered(table))
        assert all(unmapped.values()), "each unmapped field says why"


@pytest.mark.parametrize("mapping", sorted(MAPPINGS))
@pytest.mark.parametrize("name", sorted(covered(EVENT_FIELDS)))
def test_event_field_mapping_holds(mapping: str, name: str) -> None:
    module, to_doc = MAPPINGS[mapping]
    f = covered(EVENT_FIELDS)[name]
    type_ = "exec" if "exec" in f.on else f.on[0]
    check(name, f, lambda: full_event(type_), lambda e: to_doc(Item("event", e, 0, "s")),
          module.EVENT_MAPPED)  # fmt: skip


@pytest.mark.parametrize("mapping", sorted(MAPPINGS))
@pytest.mark.parametrize("name", sorted(covered(ALERT_FIELDS)))
def test_alert_field_mapping_holds(mapping: str, name: str) -> None:
    module, to_doc = MAPPINGS[mapping]
    check(name, covered(ALERT_FIELDS)[name], full_alert,
          lambda a: to_doc(Item("alert", parse_alert(a), 0, "s")), module.ALERT_MAPPED)


def test_every_sinks_severity_scale_has_every_level() -> None:
    for scale in (ecs.SEVERITY, ocsf.SEVERITY_ID, syslog.SEVERITY, cef.CEF_SEVERITY,
                  otlp.SEVERITY):  # fmt: skip
        assert list(scale) == list(ALERT_LEVELS), scale
        assert list(scale.values()) == sorted(scale.values(), reverse=scale is syslog.SEVERITY)
