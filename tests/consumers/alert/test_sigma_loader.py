"""Loading rule files: compiled or skipped with a reason, never a crash; field maps."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from snoopbus.consumers.alert.engine import Engine
from snoopbus.consumers.alert.fields import FieldMapError, default_field_map, load_field_map
from snoopbus.consumers.alert.loader import default_rules_dir, load_rules

GOOD = """
title: good
id: 0b0c7a6e-1d50-4f3a-8f7e-000000000001
logsource: {product: linux, category: process_creation}
detection:
    selection: {Image|endswith: /nc}
    condition: selection
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_each_bad_rule_is_skipped_with_its_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, "a_good.yml", GOOD)
    write(tmp_path, "b_broken.yml", "title: [unclosed\n")
    write(tmp_path, "c_windows.yml", GOOD.replace("linux", "windows").replace("0001", "0002"))
    write(
        tmp_path,
        "d_auditd.yml",
        GOOD.replace("category: process_creation", "service: auditd").replace("0001", "0003"),
    )
    write(
        tmp_path,
        "e_fieldref.yml",
        GOOD.replace("Image|endswith: /nc", "Image|fieldref: ParentImage").replace("0001", "0004"),
    )
    write(
        tmp_path,
        "f_nocondition.yml",
        GOOD.replace("condition: selection", "").replace("0001", "0005"),
    )
    write(tmp_path, "g_dup.yml", GOOD)
    write(
        tmp_path,
        "h_selector.yml",
        GOOD.replace("condition: selection", "condition: 1 of nothing_*").replace("0001", "0006"),
    )
    write(tmp_path, "i_list.yml", "- just\n- a list\n")
    write(
        tmp_path,
        "j_correlation.yml",
        """
title: many
correlation: {type: event_count, rules: [good], group-by: [User], timespan: 1m,
              condition: {gte: 10}}
""",
    )
    with caplog.at_level(logging.WARNING):
        report = load_rules([tmp_path])
    assert [r.title for r in report.rules] == ["good"]
    reasons = {Path(s.source).name: s.reason for s in report.skipped}
    assert set(reasons) == {
        "b_broken.yml", "c_windows.yml", "d_auditd.yml", "e_fieldref.yml", "f_nocondition.yml",
        "g_dup.yml", "h_selector.yml", "i_list.yml", "j_correlation.yml",
    }  # fmt: skip
    assert "cannot parse" in reasons["b_broken.yml"]
    assert "product 'windows'" in reasons["c_windows.yml"]
    assert "service 'auditd'" in reasons["d_auditd.yml"]
    assert "fieldref" in reasons["e_fieldref.yml"]
    assert "condition" in reasons["f_nocondition.yml"]
    assert "duplicate rule id" in reasons["g_dup.yml"]
    assert "nothing_*" in reasons["h_selector.yml"]
    assert "base rule 'good' is not a rule of this file" in reasons["j_correlation.yml"]
    # one warning per skipped rule, naming it
    skipped_logs = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped_logs) == len(report.skipped)
    assert any("e_fieldref.yml" in m and "fieldref" in m for m in skipped_logs)


def test_a_single_file_can_be_given(tmp_path: Path) -> None:
    report = load_rules([write(tmp_path, "one.yml", GOOD)])
    assert len(report.rules) == 1 and not report.skipped


def test_the_default_set_loads_whole() -> None:
    report = load_rules([default_rules_dir()])
    assert report.rules and not report.skipped and not report.warnings
    ids = [r.id for r in report.rules]
    assert len(ids) == len(set(ids))
    for r in report.rules:
        assert r.rule.level is not None and r.tags, r.title
        assert any(t.startswith("attack.t") for t in r.tags), r.title


def test_field_map_override_from_toml_and_yaml(tmp_path: Path) -> None:
    toml = write(
        tmp_path,
        "map.toml",
        '[process_creation]\nImage = "proc.comm"\nUser = ""\nComm = "proc.comm"\n',
    )
    fmap = load_field_map(toml)
    pc = fmap.fields("process_creation")
    assert pc["Image"] == "proc.comm" and "User" not in pc and pc["Comm"] == "proc.comm"
    assert fmap.fields("file_event") == default_field_map().fields("file_event")
    yml = write(tmp_path, "map.yaml", "file_event:\n  TargetFilename: basename(file.path)\n")
    assert load_field_map(yml).fields("file_event")["TargetFilename"] == "basename(file.path)"

    rule = write(tmp_path, "r.yml", GOOD.replace("Image|endswith: /nc", "Comm: ncat"))
    assert not load_rules([rule]).rules  # Comm is not a default field
    report = load_rules([rule], fmap)
    (hit,) = Engine(report.rules, fmap).match(
        {"type": "exec", "proc": {"comm": "ncat", "exe": "/usr/bin/ncat"}}
    )
    assert hit.values == {"Comm": "ncat"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[process_creation]\nImage = "frobnicate(proc.exe)"\n', "unknown converter"),
        ('[process_creation]\nImage = "proc..exe"\n', "dotted path"),
        ("[process_creation]\nImage = 3\n", "must be a string"),
        ("process_creation = 1\n", "must be a table"),
        ("[process_creation\n", "map.toml"),
    ],
)
def test_bad_field_maps_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(FieldMapError, match=message):
        load_field_map(write(tmp_path, "map.toml", text))


def test_pysigma_warnings_are_recorded_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests run with warnings as errors; the loader must catch what pySigma warns."""
    import warnings

    from sigma.collection import SigmaCollection

    real = SigmaCollection.from_yaml.__func__  # type: ignore[attr-defined]

    def warning_from_yaml(cls: type[SigmaCollection], *args: object, **kwargs: object) -> object:
        warnings.warn("deprecated construct", DeprecationWarning, stacklevel=2)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(SigmaCollection, "from_yaml", classmethod(warning_from_yaml))
    report = load_rules([write(tmp_path, "w.yml", GOOD)])
    assert len(report.rules) == 1
    assert len(report.warnings) == 1 and "deprecated construct" in report.warnings[0]
    assert "w.yml" in report.warnings[0]
