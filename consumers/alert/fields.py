"""Sigma field names (the Sysmon-for-Linux ones SigmaHQ uses) from snoopbus events.

A field map says, per Sigma log source category, where each Sigma field comes
from: a dotted path into the event (`proc.exe`), optionally wrapped in one
converter (`user(proc.uid)`). Lists (argv) are joined with single spaces, as
Sysmon for Linux builds CommandLine. The defaults are the table in README.md;
a TOML or YAML file given with `--field-map` overrides them per category.
The defaults are a pySigma pipeline (pipelines/snoopbus.yml), read as a map.
"""

from __future__ import annotations

import functools
import os
import pwd
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import yaml

from snoopbus.proto import fastpath, schema

Getter = Callable[[Mapping[str, Any]], Any]
Recorder = Callable[[Any], tuple[dict[str, Any], dict[str, str]]]
RecordKey = Callable[[Any], tuple[Any, ...]]

# The default map is a pySigma processing pipeline, shipped beside this module;
# it is read, not applied (fields_of_pipeline): alerts keep the Sigma names.
DEFAULT_PIPELINE = Path(__file__).resolve().parent / "pipelines" / "snoopbus.yml"


@functools.lru_cache(maxsize=4096)
def user_name(uid: int) -> str:
    """The account name of `uid` on the alerter's host (the collector's host when
    they share one; otherwise names may differ), or the number when unknown."""
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)


def _octal(mode: int) -> str:
    # Permission bits only, four digits: a setuid file reads "4755" (rule: `FileMode|re: ^[4-7]`).
    return f"{mode & 0o7777:04o}"


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "user": lambda v: user_name(v) if isinstance(v, int) else str(v),
    "octal": lambda v: _octal(v) if isinstance(v, int) else str(v),
    "basename": lambda v: os.path.basename(v) if isinstance(v, str) else v,
    "dirname": lambda v: os.path.dirname(v) if isinstance(v, str) else v,
}

_SPEC = re.compile(r"^(?:(?P<conv>\w+)\()?(?P<path>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?(conv)\))$")


class FieldMapError(ValueError):
    pass


# What a source path may name: the event schema's keys (proto/schema.py).
_EVENT_PATHS = frozenset(
    [*schema.Event.__annotations__]
    + [f"proc.{k}" for k in schema.Proc.__annotations__]
    + [f"file.{k}" for k in schema.FileInfo.__annotations__]
)


def is_event_source(name: str) -> bool:
    """A field named as a source spec on an event key (`proc.comm`,
    `user(proc.uid)`): what a user pipeline may map a Sigma field to."""
    m = _SPEC.match(name.strip())
    return (m is not None and m["path"] in _EVENT_PATHS
            and (m["conv"] is None or m["conv"] in CONVERTERS))  # fmt: skip


def fields_of_pipeline(text: str, where: str) -> dict[str, dict[str, str]]:
    """Per category, Sigma field -> source spec, from a pySigma pipeline made of
    field_name_mapping items with logsource conditions (one category each, product
    linux): the form of the default map (pipelines/snoopbus.yml)."""
    from sigma.exceptions import SigmaError
    from sigma.processing.conditions import LogsourceCondition
    from sigma.processing.pipeline import ProcessingPipeline
    from sigma.processing.transformations import FieldMappingTransformation

    try:
        pipeline = ProcessingPipeline.from_yaml(text)
    except (SigmaError, yaml.YAMLError) as exc:
        raise FieldMapError(f"{where}: {exc}") from None
    out: dict[str, dict[str, str]] = {}
    for item in pipeline.items:
        name = f"{where}: item {item.identifier or '(no id)'}"
        t, conds = item.transformation, item.rule_conditions
        if not isinstance(t, FieldMappingTransformation):
            raise FieldMapError(f"{name}: only field_name_mapping is read here")
        # pySigma gives a map when the conditions are named: a field map names none.
        if (not isinstance(conds, list) or len(conds) != 1
                or not isinstance(conds[0], LogsourceCondition)
                or conds[0].product != "linux" or not conds[0].category):  # fmt: skip
            raise FieldMapError(f"{name}: needs one logsource condition, product linux "
                                "and a category")  # fmt: skip
        table = out.setdefault(str(conds[0].category), {})
        for field, spec in t.mapping.items():
            if field is None:  # YAML's null as a key
                raise FieldMapError(f"{name}: a mapping without a field name")
            if not isinstance(spec, str):
                raise FieldMapError(f"{name}: {field}: one source, not a list")
            getter(spec)  # a bad source fails here, naming it
            table[field] = spec
    return out


def getter(spec: str) -> Getter:
    """Compile one source spec (`proc.exe`, `user(proc.uid)`) into a function of the event."""
    m = _SPEC.match(spec.strip())
    if m is None:
        raise FieldMapError(f"field source {spec!r}: expected a dotted path, or converter(path)")
    conv_name, keys = m["conv"], tuple(m["path"].split("."))
    conv = None
    if conv_name is not None:
        if conv_name not in CONVERTERS:
            known = ", ".join(sorted(CONVERTERS))
            raise FieldMapError(f"field source {spec!r}: unknown converter {conv_name!r} ({known})")
        conv = CONVERTERS[conv_name]

    def get(event: Mapping[str, Any]) -> Any:
        value: Any = event
        for key in keys:
            if not isinstance(value, Mapping):
                return None
            value = value.get(key)
            if value is None:
                return None
        if isinstance(value, list):
            value = " ".join(str(v) for v in value)
        return conv(value) if conv is not None else value

    return get


@dataclass(frozen=True)
class FieldMap:
    """Per category: Sigma field -> source spec."""

    categories: Mapping[str, Mapping[str, str]]

    def fields(self, category: str) -> Mapping[str, str]:
        return self.categories.get(category, {})

    def source(self, category: str, name: str) -> str | None:
        """Where field `name` comes from: the category's map, else the name itself
        when it is an event source (a user pipeline mapped it to `proc.comm`)."""
        spec = self.fields(category).get(name)
        if spec is None and is_event_source(name):
            return name
        return spec

    def known(self, category: str) -> _Known:
        """The fields a rule of `category` may read (for `in`)."""
        return _Known(self, category)

    def getters(self, category: str, wanted: set[str] | None = None) -> list[tuple[str, Getter]]:
        """(field, getter) for the category's fields, only those in `wanted` if given."""
        return [(name, getter(spec)) for name, spec in self._specs(category, wanted)]

    def recorders(self, category: str, wanted: set[str] | None = None) -> tuple[Recorder, Recorder]:
        """Functions making the record (values, lower-cased values) of the
        category's fields (those in `wanted` if given): of an event map, and
        of the decoder's typed record of the same event. Generated code, the
        same as running each getter, with shared steps taken once."""
        specs = self._specs(category, wanted)
        return _recorder(specs, typed=False), _recorder(specs, typed=True)

    def record_key(self, category: str, wanted: set[str] | None = None) -> RecordKey | None:
        """A function giving, of the decoder's typed record, a hashable key of
        every event value the category's record is made from (lists as
        tuples): records with equal keys have equal records, so matching
        them gives the same rules. None when a source is a whole map."""
        return _keyer(self._specs(category, wanted))

    def _specs(self, category: str, wanted: set[str] | None) -> list[tuple[str, str]]:
        """(field, source) of the map's fields (those in `wanted` if given), and
        of the wanted fields named as event sources."""
        specs = [(name, spec) for name, spec in self.fields(category).items()
                 if wanted is None or name in wanted]  # fmt: skip
        mapped = {name for name, _ in specs}
        for name in sorted(wanted or ()):
            if name not in mapped and is_event_source(name):
                specs.append((name, name))
        return specs


@dataclass(frozen=True)
class _Known:
    fmap: FieldMap
    category: str

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.fmap.source(self.category, name) is not None


def _parse(spec: str) -> tuple[Callable[[Any], Any] | None, tuple[str, ...]]:
    m = _SPEC.match(spec.strip())
    if m is None:
        raise FieldMapError(f"field source {spec!r}: expected a dotted path, or converter(path)")
    conv_name = m["conv"]
    if conv_name is not None and conv_name not in CONVERTERS:
        known = ", ".join(sorted(CONVERTERS))
        raise FieldMapError(f"field source {spec!r}: unknown converter {conv_name!r} ({known})")
    return (CONVERTERS[conv_name] if conv_name else None), tuple(m["path"].split("."))


def _recorder(specs: list[tuple[str, str]], *, typed: bool) -> Recorder:
    """Generated code for a record: each getter's steps inlined (getter()),
    steps common to several fields taken once. `typed` reads a typed record
    (proto/fastpath.py): a key that is no field of its struct is absent there."""
    consts: dict[str, Any] = {"_Mapping": Mapping, "_to_builtins": msgspec.to_builtins}
    steps: dict[tuple[str, ...], str] = {(): "e"}
    lines = ["def _record(e):", "    v = {}", "    lo = {}"]

    def step(path: tuple[str, ...]) -> str:
        """The variable holding the value at `path` (None when absent)."""
        if path in steps:
            return steps[path]
        parent, key = step(path[:-1]), path[-1]
        var = steps[path] = f"_s{len(steps)}"
        if not typed:
            lines.append(f"    {var} = {parent}.get({key!r}) if {parent}.__class__ is dict "
                         f"or isinstance({parent}, _Mapping) else None")  # fmt: skip
        elif len(path) == 1 and key in fastpath.FIELDS[None]:
            lines.append(f"    {var} = {parent}.{key}")
        elif len(path) == 2 and path[0] in ("proc", "file") and key in fastpath.FIELDS[path[0]]:
            lines.append(f"    {var} = None if {parent} is None else {parent}.{key}")
        else:  # no such field in a typed record: always absent
            lines.append(f"    {var} = None")
        return var

    for n, (name, spec) in enumerate(specs):
        conv, path = _parse(spec)
        x = step(path)
        lines.append(f"    x = {x}")
        lines.append("    if x is not None:")
        if typed and path in (("proc",), ("file",)):
            lines.append("        x = _to_builtins(x)  # a map, as getter() gives")
        lines.append("        if isinstance(x, list):")
        lines.append("            x = ' '.join([str(i) for i in x])")
        indent = "        "
        if conv is not None:
            consts[f"_conv{n}"] = conv
            lines.append(f"        x = _conv{n}(x)")
            lines.append("        if x is not None:")
            indent += "    "
        lines.append(f"{indent}v[{name!r}] = x")
        lines.append(f"{indent}lo[{name!r}] = x.lower() if isinstance(x, str) else str(x).lower()")
    lines.append("    return v, lo")
    namespace = dict(consts)
    # Field names and keys reach the code only through repr(): a field map cannot inject code.
    exec(compile("\n".join(lines) + "\n", "<sigma record>", "exec"), namespace)
    record: Recorder = namespace["_record"]
    return record


def _keyer(specs: list[tuple[str, str]]) -> RecordKey | None:
    """Generated code for record_key(): the sources' raw values, one tuple."""
    paths: list[tuple[str, ...]] = []
    for _, spec in specs:
        path = _parse(spec)[1]
        if len(path) == 1 and path[0] in ("proc", "file"):
            return None  # a map: not hashable as it is (and rare: let it go uncached)
        if path not in paths:
            paths.append(path)
    lines = ["def _key(e):"]
    parents: set[str] = set()
    parts: list[str] = []
    for path in paths:
        parent = None if len(path) == 1 else path[0]
        key = path[-1]
        if len(path) > 2 or parent not in fastpath.KINDS or key not in fastpath.FIELDS[parent]:
            continue  # no such field in a typed record: always absent, the same in every key
        kind = fastpath.KINDS[parent][key]
        x = f"e.{key}"
        if parent is not None:
            if parent not in parents:
                parents.add(parent)
                lines.append(f"    _{parent} = e.{parent}")
            x = f"(None if _{parent} is None else _{parent}.{key})"
        if kind is schema._TEXT_LIST:
            lines.append(f"    x{len(parts)} = {x}")
            x = f"(None if x{len(parts)} is None else tuple(x{len(parts)}))"
        parts.append(x)
    lines.append(f"    return ({''.join(p + ', ' for p in parts)})")
    namespace: dict[str, Any] = {}
    # Only names the schema defines (fastpath.FIELDS) reach the code.
    exec(compile("\n".join(lines) + "\n", "<sigma record key>", "exec"), namespace)
    key_of: RecordKey = namespace["_key"]
    return key_of


DEFAULT_FIELD_MAP: dict[str, dict[str, str]] = fields_of_pipeline(
    DEFAULT_PIPELINE.read_text(encoding="utf-8"), str(DEFAULT_PIPELINE)
)


def default_field_map() -> FieldMap:
    return FieldMap(DEFAULT_FIELD_MAP)


def load_field_map(path: Path, base: FieldMap | None = None) -> FieldMap:
    """Overrides from a TOML or YAML file: `[category]` tables of `Field = "source"`;
    an empty source removes a field. Categories not in the file keep their defaults."""
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise FieldMapError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise FieldMapError(f"{path}: expected a table of categories")
    merged = {cat: dict(fields) for cat, fields in (base or default_field_map()).categories.items()}
    for category, fields in data.items():
        if not isinstance(fields, dict):
            raise FieldMapError(f"{path}: [{category}] must be a table of Field = source")
        table = merged.setdefault(str(category), {})
        for name, spec in fields.items():
            if not isinstance(spec, str):
                raise FieldMapError(f"{path}: {category}.{name}: source must be a string")
            if spec.strip():
                getter(spec)  # fail at load, naming the entry, not on the first event
                table[str(name)] = spec
            else:
                table.pop(str(name), None)
    return FieldMap(merged)
