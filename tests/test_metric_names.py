"""The metric catalogue: one definition per name, Prometheus' conventions, README agrees."""

from __future__ import annotations

import re
from pathlib import Path

from snoopbus.proto import metric_names as names

ROOT = Path(__file__).resolve().parent.parent
# Gauges that are a state (0/1) or a count of things named by the noun itself.
UNITLESS = {"snoopbus_collector_ready", "snoopbus_collector_publish_stalled",
            "snoopbus_up_child_running", "snoopbus_stream_first_seq",
            "snoopbus_stream_warnings"}  # fmt: skip
UNITS = ("_messages", "_events", "_bytes", "_seconds", "_ratio")


def metrics_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Metrics and health")
    return text[start : text.index("\n## ", start + 1)]


def test_names_are_unique_and_follow_the_conventions() -> None:
    seen = [m.name for m in names.ALL]
    assert len(seen) == len(set(seen))
    olds = [m.renamed_from for m in names.ALL if m.renamed_from]
    assert not set(olds) & set(seen), "an old name reused for another metric"
    for m in names.ALL:
        assert re.fullmatch(r"snoopbus_[a-z_]+", m.name), m.name
        if m.kind == "counter":
            assert m.name.endswith("_total"), m.name
        elif m.kind == "info":
            assert m.name.endswith("_info"), m.name
        else:
            assert not m.name.endswith("_total"), m.name
            assert m.name.endswith(UNITS) or m.name in UNITLESS, f"{m.name}: no unit suffix"


def test_readme_lists_every_metric_and_every_rename() -> None:
    section = metrics_section()
    listed = set(re.findall(r"`((?:snoopbus|process)_[a-z_]+)", section))
    for m in names.ALL:
        assert m.name in listed, f"README's metrics table lacks {m.name}"
        if m.renamed_from:
            assert f"| `{m.renamed_from}` | `{m.name}` |" in section, m.renamed_from
    for p in names.PROCESS:
        assert p in listed, p
    known = {m.name for m in names.ALL} | {m.renamed_from for m in names.ALL} | set(names.PROCESS)
    assert listed <= known, f"README names metrics that do not exist: {listed - known}"


def test_the_metrics_code_writes_no_name_of_its_own() -> None:
    """One place defines each name: the code serving them only refers to it."""
    for module in ("proto/metrics_server.py", "collector/metrics.py", "collector/agent.py",
                   "consumers/metrics.py", "app/stack_metrics.py", "app/stack.py"):
        source = (ROOT / module).read_text()
        assert not re.findall(r"[\"']snoopbus_\w+", source), module
