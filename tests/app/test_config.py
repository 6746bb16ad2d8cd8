"""Config: defaults -> file -> environment -> flags, each value's source, clear errors."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
from pathlib import Path

import pytest

from snoopbus.app.main import build_parser
from snoopbus.collector import probes
from snoopbus.collector.commands import collect_settings
from snoopbus.consumers import cli as consumers_cli
from snoopbus.consumers import plugin
from snoopbus.proto.settings_file import (
    DEFAULT_PATH,
    ConfigError,
    format_toml,
    load,
)
from tests.support.processes import SNOOPBUS


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "snoopbus.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    cfg = load(env={})
    assert cfg.path is None and not DEFAULT_PATH.exists()
    assert cfg.nats.url == "nats://127.0.0.1:4222" and cfg.metrics.port == 0
    assert cfg.up.consumers == ("rename", "alert", "archive")
    assert cfg.source("nats.url") == "default"
    # The collector's defaults are the probes' own, written out so proto stays BCC-free.
    assert cfg.collector.argv_max == probes.ProbeLimits.argv_max
    assert cfg.collector.ringbuf_pages == probes.ProbeLimits.ringbuf_pages


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, '[nats]\nurl = "nats://file:4222"\n[metrics]\nport = 9100\n'
                 '[collector]\nexclude_path = ["/proc"]\nheartbeat_interval = 5\n'
                 '[up]\nport = 5222\n')  # fmt: skip
    env = {"SNOOPBUS_METRICS_PORT": "9200", "SNOOPBUS_COLLECTOR_EXCLUDE_PATH": "/a, /b",
           "SNOOPBUS_COLLECTOR_OPEN_EVENTS": "yes"}  # fmt: skip
    cfg = load(path, env=env, flags={"up.port": 6222, "nats.url": None})
    assert cfg.path == path
    assert (cfg.nats.url, cfg.source("nats.url")) == ("nats://file:4222", f"file {path}")
    assert (cfg.metrics.port, cfg.source("metrics.port")) == (9200, "env SNOOPBUS_METRICS_PORT")
    assert cfg.collector.exclude_path == ("/a", "/b") and cfg.collector.open_events is True
    assert cfg.collector.heartbeat_interval == 5.0  # an int is fine where a number is expected
    assert (cfg.up.port, cfg.source("up.port")) == (6222, "flag")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.nats.url = "x"  # type: ignore[misc]


def test_the_file_comes_from_snoopbus_config(tmp_path: Path) -> None:
    path = write(tmp_path, '[up]\nstate_dir = "/srv/sb"\n')
    assert load(env={"SNOOPBUS_CONFIG": str(path)}).up.state_dir == "/srv/sb"
    with pytest.raises(ConfigError, match=r"config .*missing\.toml: cannot read it"):
        load(env={"SNOOPBUS_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[nats]\nurls = 'x'\n", "unknown key 'urls' in [nats] (known: url"),
        ("[metric]\nport = 1\n", "unknown section [metric]"),
        ("[metrics]\nport = '9100'\n", "[metrics] port must be int, got str"),
        ("[collector]\nopen_events = 1\n", "[collector] open_events must be bool, got int"),
        ("[collector]\nexclude_path = '/tmp'\n", "exclude_path must be list of str, got str"),
        ("[collector]\nexclude_uid = [true]\n", "exclude_uid must be list of str or int"),
        ("[up]\nport = 1.5\n", "[up] port must be int, got float"),
        ("[consumer]\nrename = 1\n", "[consumer.rename] must be a table"),
        ("[nats\n", "not valid TOML"),
        ("[collector]\nnats = 'nats://a:4222'\n", "unknown key 'nats' in [collector] (it is "
         "[nats] url now)"),
    ],
)
def test_errors_name_the_key_the_type_and_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path, env={})
    assert str(err.value).startswith(f"config {path}: ") and message in str(err.value)


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="SNOOPBUS_UP_PORT: must be int, got 'high'"):
        load(env={"SNOOPBUS_UP_PORT": "high"})
    with pytest.raises(ConfigError, match="SNOOPBUS_COLLECTOR_OPEN_EVENTS: must be bool"):
        load(env={"SNOOPBUS_COLLECTOR_OPEN_EVENTS": "perhaps"})


def test_collect_flags_go_through_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[nats]\nurl = "nats://n1:4222"\n[collector]\nhost = "web1"\n'
                 "argv_max = 4096\n")  # fmt: skip
    monkeypatch.setenv("SNOOPBUS_COLLECTOR_ARGV_MAX", "2048")
    args = build_parser().parse_args(["collect", "--config", str(path), "--host", "web2"])
    s, _ = collect_settings(args)
    assert (s["nats"], s["host"], s["argv_max"]) == ("nats://n1:4222", "web2", 2048)
    assert s["config"].source("collector.host") == "flag"


def test_consumer_options_come_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[consumer.archive]\ndir = "/srv/archive"\nroll_seconds = 5\n'
                 "[consumer.rename]\nwindow = 3.5\n")  # fmt: skip
    cfg = load(path, env={})
    target = plugin.load("archive")
    parser = consumers_cli._consumer_parser("archive", target, cfg.nats.url)
    consumers_cli.apply_config(parser, "archive", cfg)
    opts = parser.parse_args([])  # --dir is required on the command line, but the file has it
    assert str(opts.dir) == "/srv/archive" and opts.roll_seconds == 5
    assert parser.parse_args(["--roll-seconds", "9"]).roll_seconds == 9.0  # a flag wins


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[consumer.rename]\nwindw = 3\n", "unknown key 'windw' in [consumer.rename]"),
        ("[consumer.rename]\nwindow = 'long'\n", "[consumer.rename] window must be float, got str"),
    ],
)
def test_consumer_option_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    out = subprocess.run([*SNOOPBUS, "consume", "--config", str(path), "rename"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == f"snoopbus consume: config {path}: {message}" or (
        message in out.stderr and str(path) in out.stderr
    )


def test_config_show_says_where_each_value_came_from(tmp_path: Path) -> None:
    path = write(tmp_path, "[metrics]\nport = 9100\n[consumer.rename]\nwindow = 3.0\n")
    env = {"SNOOPBUS_NATS_URL": "nats://envhost:4222", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([*SNOOPBUS, "config", "show", "--json", "--config", str(path)],
                         capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["file"] == str(path)
    assert shown["metrics"]["port"] == {"value": 9100, "source": f"file {path}"}
    assert shown["nats"]["url"] == {"value": "nats://envhost:4222",
                                    "source": "env SNOOPBUS_NATS_URL"}  # fmt: skip
    assert shown["up"]["port"] == {"value": 4222, "source": "default"}
    assert shown["consumer"]["rename"]["window"]["value"] == 3.0
    text = format_toml(load(path, env={}))
    assert "port = 9100  # file " in text and "[consumer.rename]" in text


@pytest.mark.parametrize("command", ["collect", "up", "tail", "config show", "consume rename"])
def test_a_bad_file_is_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    path = write(tmp_path, "[nats]\nurl = 4222\n")
    out = subprocess.run([*SNOOPBUS, *command.split(), "--config", str(path)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2, out
    assert out.stderr.strip().splitlines() == [
        f"snoopbus {command.split()[0]}: config {path}: [nats] url must be str, got int"
    ]


def test_config_show_names_the_host_in_effect_and_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[consumer.rename]\nwindow = 3.0\n")
    out = subprocess.run([*SNOOPBUS, "config", "show", "--config", str(path)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f'host = "{socket.gethostname()}"  # default: this machine\'s name' in out.stdout
    assert f"window = 3.0  # file {path}" in out.stdout
    shown = json.loads(subprocess.run(
        [*SNOOPBUS, "config", "show", "--json", "--config", str(path)],
        capture_output=True, text=True, timeout=60).stdout)  # fmt: skip
    assert shown["collector"]["host"]["value"] == socket.gethostname()
    named = load(path, env={"SNOOPBUS_COLLECTOR_HOST": "web1"})
    assert "host = \"web1\"  # env SNOOPBUS_COLLECTOR_HOST" in format_toml(named)


def test_collector_defaults_are_written_once(capsys: pytest.CaptureFixture[str]) -> None:
    """ProbeLimits, PublisherConfig, CollectorConfig and the `collect` help read
    [collector]'s defaults: a changed default changes all of them."""
    from snoopbus.collector.agent import CollectorConfig
    from snoopbus.collector.publisher import PublisherConfig
    from snoopbus.proto.settings_file import CollectorSection

    c, limits, pub = CollectorSection(), probes.ProbeLimits(), PublisherConfig()
    assert (limits.argv_max, limits.ringbuf_pages, limits.source_rate) == (
        c.argv_max, c.ringbuf_pages, c.source_rate)
    assert (pub.max_buffered, pub.spill_max_bytes, pub.stall_after) == (
        c.buffer_events, c.spill_max_mb << 20, c.stall_after)
    agent = CollectorConfig(nats_url="nats://x", host="h")
    assert (agent.heartbeat_interval, agent.drop_privileges, agent.require_nats) == (
        c.heartbeat_interval, c.drop_privileges, c.require_nats)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["collect", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for text in (f"(default {c.argv_max})", f"({c.buffer_events})", f"(default {c.spill_dir};",
                 f"({c.spill_max_mb})", f"(default {c.heartbeat_interval:g})",
                 f"(default {c.stall_after:g})", f"(default {c.source_rate})"):
        assert text in shown, text
