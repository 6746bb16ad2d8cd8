"""The shipped Grafana dashboard and Prometheus rules: valid, and true to what runs.

promtool (Debian's prometheus package, installed by `make setup`) checks the
rules, runs their unit tests, and parses every dashboard query; a running
`snoopbus up` is scraped for every metric those queries and rules name.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from snoopbus.proto import metric_names as names
from tests.conftest import free_port
from tests.test_up import free_ports, read_until

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "collector" / "deploy"
DASHBOARD = DEPLOY / "snoopbus-grafana.json"
RULES = DEPLOY / "snoopbus-alerts.yml"
RULE_TESTS = ROOT / "tests" / "data" / "snoopbus-alerts.test.yml"
# The id of consumers/alert/rules/proc_exec_from_tmp.yml.
EXEC_FROM_TMP = "94e98a16-6046-4b1d-be16-88289f586b1f"

# Grafana's variables, as Prometheus would see them once Grafana filled them in.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "6h", "$instance": ".*"}
# Labels Prometheus adds at scrape time (and `le`, a histogram bucket's bound).
TARGET_LABELS = {"instance", "job", "le"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                "and", "or", "unless", "offset", "inf", "nan"}  # fmt: skip


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: it checks the shipped alerting rules. Run `make setup` "
                    "(it installs Debian's prometheus package) or "
                    "`apt-get install --no-install-recommends prometheus`.")
    return found


def dashboard_queries() -> list[tuple[str, set[str]]]:
    """Every PromQL query of the dashboard (panel targets, rows' panels, variables),
    each with the labels its legend shows."""
    dash = json.loads(DASHBOARD.read_text())
    out: list[tuple[str, set[str]]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")))
                    out.append((t["expr"], legend))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for var in dash["templating"]["list"]:
        query = var.get("query")
        text = query.get("query") if isinstance(query, dict) else None
        if var["type"] == "query" and text:
            # Grafana's label_values(METRIC, LABEL): the metric is a PromQL selector.
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text)
            assert m, text
            out.append((m[1], {m[2]}))
    return out


def rule_queries() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def grafana_filled(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metrics a PromQL expression selects (not functions, keywords or labels)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings, e.g. label values
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    found = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        if not m[2] and m[1] not in PROMQL_WORDS:
            found.add(m[1])
    return found


def grouping_labels(expr: str) -> set[str]:
    """Labels an expression groups, joins or matches on."""
    out = set()
    for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)",
                         expr):
        out |= {x.strip() for x in m[1].split(",") if x.strip()}
    for m in re.finditer(r"\{([^}]*)\}", expr):
        out |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", m[1]))
    return out


def test_metric_names_are_read_out_of_promql() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, instance) (rate(a_bucket{x=~"b|c"}[5m]))) '
            '/ on (job) group_left (component) b_info offset 5m and c_total > bool 1e3 '
            'or time() - process_start_time_seconds')
    assert metric_names(expr) == {"a_bucket", "b_info", "c_total", "process_start_time_seconds"}
    assert grouping_labels(expr) == {"le", "instance", "job", "component", "x"}


def test_promtool_checks_and_unit_tests_the_alerting_rules() -> None:
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout
    # The stalled, loss, lag and stream-fill alerts against series that should
    # (and should not) fire them.
    test = subprocess.run([tool, "test", "rules", str(RULE_TESTS)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each query, as Grafana fills it in, made a recording rule that promtool checks."""
    exprs = [expr for expr, _ in dashboard_queries()]
    assert len(exprs) > 20
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"snoopbus:dashboard_query_{i}", "expr": grafana_filled(q)}
        for i, q in enumerate(exprs)]}]}  # fmt: skip
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    check = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def queries() -> list[tuple[str, set[str]]]:
    """Each query of the dashboard and the rules, with every label it names (grouped,
    joined, matched or shown in a legend)."""
    return [(expr, legend | grouping_labels(expr))
            for expr, legend in dashboard_queries() + [(e, set()) for e in rule_queries()]]


def used() -> set[str]:
    """Every metric the dashboard or the rules use."""
    return {name for expr, _ in queries() for name in metric_names(expr)}


def test_the_dashboard_and_rules_use_only_catalogued_metrics() -> None:
    known = {e for m in names.ALL for e in m.exposed()} | set(names.PROCESS)
    assert used() <= known, used() - known


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


class Scraped:
    """What one round of scrapes of every process declared: families, samples, labels."""

    def __init__(self, texts: list[str]) -> None:
        self.declared: set[str] = set()
        self.labels: dict[str, set[str]] = {}
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for text in texts:
            for family in text_string_to_metric_families(text):
                self.declared |= self.names_of(family.name, family.type)
                for s in family.samples:
                    self.samples.append((s.name, s.labels, s.value))
                    self.labels.setdefault(s.name, set()).update(s.labels)

    @staticmethod
    def names_of(family: str, kind: str) -> set[str]:
        """A family's sample names, declared even while it has no sample."""
        suffixes = {"counter": ["_total"], "info": ["_info"],
                    "histogram": ["_bucket", "_sum", "_count"]}.get(kind, [""])  # fmt: skip
        return {family + s for s in suffixes}

    def missing(self) -> list[str]:
        return sorted(used() - self.declared)

    def find(self, name: str, **labels: str) -> list[float]:
        return [v for n, got, v in self.samples
                if n == name and all(got.get(k) == x for k, x in labels.items())]


@pytest.mark.kernel
async def test_a_running_stack_serves_every_metric_the_dashboard_and_rules_use(
    tmp_path: Path,
) -> None:
    port, host = free_port(), "observe-test"
    base = free_ports(5)  # up, collector, rename, alert, archive
    ports = list(range(base, base + 5))
    env = {**os.environ, "SNOOPBUS_RUN_DIR": str(tmp_path / "run")}  # not the host's stack
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "snoopbus.app", "up",
        "--state-dir", str(tmp_path / "state"), "--port", str(port), "--host", host,
        "--metrics-port", str(base), "--live", "off",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    assert up.stdout is not None
    # A program run from /tmp: the packaged rule proc_exec_from_tmp raises an alert.
    tmp_bin = Path(tempfile.mkdtemp(prefix="snoopbus-observe-", dir="/tmp"))
    shutil.copy("/bin/true", tmp_bin / "true")
    try:
        await read_until(up.stdout, "started collector, rename, alert")
        scraped = Scraped([])
        async with asyncio.timeout(90):
            while True:
                subprocess.run([tmp_bin / "true"], check=True)
                try:
                    scraped = Scraped([scrape(p) for p in ports])
                except OSError:  # a child not serving yet
                    scraped = Scraped([])
                if (not scraped.missing() and scraped.find("snoopbus_alerts_total")
                        and scraped.find("snoopbus_collector_ringbuf_fill_ratio")
                        and scraped.find("snoopbus_stream_bytes")):  # fmt: skip
                    break
                await asyncio.sleep(0.5)
    except TimeoutError:
        pytest.fail(f"never scraped, from any of ports {ports}: {scraped.missing()}")
    finally:
        shutil.rmtree(tmp_bin)
        if up.returncode is None:
            up.send_signal(signal.SIGINT)
        rest = (await asyncio.wait_for(up.stdout.read(), 60)).decode()
        code = await asyncio.wait_for(up.wait(), 60)
    assert code == 0, rest
    # The labels the queries group and match on are the ones served.
    # (A family with no sample yet, e.g. dead letters, is held to the catalogue.)
    catalogue = {e: set(m.labels) for m in names.ALL for e in m.exposed()}
    for expr, labels in queries():
        served = TARGET_LABELS.union(*(scraped.labels.get(n) or catalogue.get(n, set())
                                       for n in metric_names(expr)))  # fmt: skip
        assert labels <= served, (expr, labels - served)
    # Every process, each its own figures: the build, CPU and memory.
    builds = scraped.find("snoopbus_build_info")
    components = sorted(labels["component"] for n, labels, _ in scraped.samples
                        if n == "snoopbus_build_info")  # fmt: skip
    assert builds == [1.0] * 5 and components == ["collector", "consumer", "consumer",
                                                  "consumer", "up"]  # fmt: skip
    assert len(scraped.find("process_resident_memory_bytes")) == 5
    assert len({v for v in scraped.find("process_start_time_seconds")}) >= 2
    # The alert is counted by the rule's id.
    assert scraped.find("snoopbus_alerts_total", rule_id=EXEC_FROM_TMP, level="medium")
    assert scraped.find("snoopbus_alert_rule_info", rule_id=EXEC_FROM_TMP,
                        title="Program Run from a World-Writable Temporary Directory")
    # Every loss reason is there from the start, at 0 (or the loss itself).
    assert len(scraped.find("snoopbus_collector_events_lost_total")) >= 13
