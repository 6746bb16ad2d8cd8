"""Sigma field names (the Sysmon-for-Linux ones SigmaHQ uses) from snoopbus events.

A field map says, per Sigma log source category, where each Sigma field comes
from: a dotted path into the event (`proc.exe`), optionally wrapped in one
converter (`user(proc.uid)`). Lists (argv) are joined with single spaces, as
Sysmon for Linux builds CommandLine. The defaults are the table in README.md;
a TOML or YAML file given with `--field-map` overrides them per category.
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

from snoopbus.proto import fastpath

Getter = Callable[[Mapping[str, Any]], Any]
Recorder = Callable[[Any], tuple[dict[str, Any], dict[str, str]]]

PROCESS = {
    "Image": "proc.exe",
    "CommandLine": "proc.argv",
    "ParentImage": "proc.parent_exe",
    "ParentCommandLine": "proc.parent_argv",
    "CurrentDirectory": "proc.cwd",
    "User": "user(proc.uid)",
    "ProcessId": "proc.pid",
    "ParentProcessId": "proc.ppid",
    # snoopbus's own (no Sysmon equivalent): the #! script run, when Image is its interpreter.
    "Script": "proc.script",
}
# File events name the acting process the way Sysmon's FileCreate does.
_ACTOR = {"Image": "proc.exe", "User": "user(proc.uid)", "ProcessId": "proc.pid"}

DEFAULT_FIELD_MAP: dict[str, dict[str, str]] = {
    "process_creation": {**PROCESS, "OriginalFileName": "basename(proc.exe)"},
    "file_event": {"TargetFilename": "file.path", **_ACTOR},
    "file_delete": {"TargetFilename": "file.path", **_ACTOR},
    "file_rename": {"TargetFilename": "file.path", "SourceFilename": "file.old_path", **_ACTOR},
    # snoopbus's own category (no Sysmon equivalent): mode changes, for setuid rules.
    "file_attrib": {"TargetFilename": "file.path", "FileMode": "octal(file.mode)",
                    "XattrName": "file.xattr", "XattrOp": "file.xattr_op", **_ACTOR},
}


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

    def getters(self, category: str, wanted: set[str] | None = None) -> list[tuple[str, Getter]]:
        """(field, getter) for the category's fields, only those in `wanted` if given."""
        return [
            (name, getter(spec))
            for name, spec in self.fields(category).items()
            if wanted is None or name in wanted
        ]

    def recorders(self, category: str, wanted: set[str] | None = None) -> tuple[Recorder, Recorder]:
        """Functions making the record (values, lower-cased values) of the
        category's fields (those in `wanted` if given): of an event map, and
        of the decoder's typed record of the same event. Generated code, the
        same as running each getter, with shared steps taken once."""
        specs = [(name, spec) for name, spec in self.fields(category).items()
                 if wanted is None or name in wanted]  # fmt: skip
        return _recorder(specs, typed=False), _recorder(specs, typed=True)


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
    return namespace["_record"]  # type: ignore[no-any-return]


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
