"""The deployment files: compose.yaml against the Compose specification and Docker's
own client, the systemd units, and the example config, all checked against the CLI."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from snoopbus.app.main import build_parser
from snoopbus.consumers import cli as consumers_cli
from snoopbus.consumers import plugin
from snoopbus.proto import BusUnavailable, NatsAuth, connect, exits
from snoopbus.proto.settings_file import CollectorSection, Config, load
from tests.support.paths import ROOT
from tests.support.processes import SNOOPBUS, free_port

COMPOSE = ROOT / "compose.yaml"
DEPLOY = resources.files("snoopbus.collector") / "deploy"
BUILT_IN = ("rename", "alert", "archive", "forward")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # resolves the << merges
    return data


def interpolate(text: str) -> str:
    """Compose's `${VAR:-default}`, with no variable set."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def check_command(argv: list[str], cfg: Config | None = None) -> None:
    """A service's command parses with the real CLI, consumer options included."""
    argv = [interpolate(a) for a in argv]
    assert argv[0] == "snoopbus", argv
    args = build_parser().parse_args(argv[1:])
    if args.command == "consume":
        cfg = cfg or load(None, env={})
        opts = consumers_cli._consumer_parser(args.name, plugin.load(args.name), cfg.nats.url)
        consumers_cli.apply_config(opts, args.name, cfg)
        opts.parse_args(args.options)


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    # The JSON schema of the Compose specification, as vendored by check-jsonschema.
    schema_file = resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    schema = json.loads(schema_file.read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(compose)


def test_docker_compose_config_parses_it(tmp_path: Path) -> None:
    client = shutil.which("docker-compose")
    assert client, "docker-compose is not installed (make test installs Debian's)"
    out = subprocess.run(
        [client, "-f", str(COMPOSE), "--profile", "forward", "config"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={"HOST_NAME": "web1", "NATS_PASSWORD": "pw", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert resolved["services"]["collector"]["command"][-1] == "web1"  # interpolated
    assert set(resolved["services"]) >= {"nats-1", "nats-2", "nats-3", "collector", "forward"}


def test_a_realistic_deployment(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nats = [n for n in services if n.startswith("nats-")]
    assert len(nats) == 3
    for name in nats:  # each node routes to the other two, with JetStream and health
        cmd = " ".join(services[name]["command"])
        assert "-js" in cmd and f"--server_name {name}" in cmd
        assert all(f"nats://{o}:6222" in cmd for o in nats if o != name)
        assert "healthz" in " ".join(services[name]["healthcheck"]["test"])
    ours = {n: s for n, s in services.items() if s.get("image") == "snoopbus:latest"}
    for service in ours.values():
        env = service["environment"]
        assert env["SNOOPBUS_NATS_URL"].count("nats://") == 3
        port = env["SNOOPBUS_METRICS_PORT"]
        assert f"127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"])
        assert all(services[n] for n in service["depends_on"])
        assert {c["condition"] for c in service["depends_on"].values()} == {"service_healthy"}
        check_command(service["command"])
    collector = services["collector"]
    assert "privileged" not in collector and collector["pid"] == "host"
    assert collector["user"] == "root" and collector["cap_drop"] == ["ALL"]
    assert {"BPF", "PERFMON", "SYS_PTRACE"} <= set(collector["cap_add"])
    # the consumers run as the image's non-root user
    assert all("user" not in s for n, s in ours.items() if n != "collector")
    mounts = {v.split(":")[1] for v in collector["volumes"]}
    assert {"/sys/kernel/btf", "/sys/fs/cgroup", "/lib/modules", "/usr/src"} <= mounts
    consumers = {s["command"][2] for s in ours.values() if s["command"][1] == "consume"}
    assert consumers == set(BUILT_IN)  # each consumer its own service
    archives = [s["command"] for s in ours.values() if s["command"][2] == "archive"]
    partitions = {a[a.index("--partition") + 1] for a in archives}
    dirs = {a[a.index("--dir") + 1] for a in archives}
    assert partitions == {"0/2", "1/2"} and len(dirs) == 2  # scaled out, each its own folder
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])
             if not v.startswith(("/", "./"))}  # fmt: skip
    assert named <= set(compose["volumes"])


def test_the_fleet_shape(compose: dict[str, Any]) -> None:
    """As tests/bench/fleet.py runs it: a 3-node cluster, the stream on all three,
    the archiver, the pairer and the alerter one service per partition."""
    services = compose["services"]
    nats = sorted(n for n in services if n.startswith("nats-"))
    commands = [services[n]["command"] for n in nats]
    flag = lambda cmd, name: cmd[cmd.index(name) + 1]  # noqa: E731
    assert {flag(c, "--cluster_name") for c in commands} == {"snoopbus"}  # one cluster
    assert sorted(flag(c, "--server_name") for c in commands) == nats  # names its own
    stores = {v.split(":")[0] for n in nats for v in services[n]["volumes"]
              if v.split(":")[1] == flag(services[n]["command"], "-sd")}  # fmt: skip
    assert len(stores) == 3  # each node its own JetStream store
    ours = {n: s for n, s in services.items() if s.get("image") == "snoopbus:latest"}
    # whichever snoopbus process creates the stream creates it on all three nodes
    for service in ours.values():
        replicas = service["environment"]["SNOOPBUS_STREAM_REPLICAS"]
        assert int(replicas) == len(nats)
        cfg = load(None, env={"SNOOPBUS_CONFIG": "", "SNOOPBUS_STREAM_REPLICAS": replicas})
        assert cfg.stream.replicas == len(nats)
    consumers: dict[str, list[list[str]]] = {}
    for service in ours.values():
        if service["command"][1] == "consume":
            consumers.setdefault(service["command"][2], []).append(service["command"])
    # One service per partition, every partition once. The alerters too: replicas
    # sharing a durable would each throttle and correlate their share of a host.
    for name in ("archive", "rename", "alert"):
        parts = sorted(c[c.index("--partition") + 1] for c in consumers[name])
        assert parts == [f"{i}/{len(parts)}" for i in range(len(parts))] and len(parts) >= 2
    assert not any("replicas" in s.get("deploy", {}) for s in ours.values())


def test_the_image_is_built_from_a_dockerfile_that_exists(compose: dict[str, Any]) -> None:
    build = compose["services"]["collector"]["build"]
    dockerfile = ROOT / build["context"] / build["dockerfile"]
    text = dockerfile.read_text()
    assert dockerfile.is_file() and "python3-bpfcc" in text
    # two stages, a non-root user, a health check, OCI labels; no tests in the image
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2 and "AS build" in text
    assert "\nUSER snoopbus" in text and "HEALTHCHECK" in text
    assert "org.opencontainers.image.licenses=\"Apache-2.0\"" in text
    ignored = (ROOT / build["context"] / ".dockerignore").read_text().split()
    assert "tests" in ignored and ".git" in ignored
    # every path a compose.yaml comment names exists
    named = re.findall(r"\b((?:collector|consumers|proto|tests)/[\w./@-]+)", COMPOSE.read_text())
    assert named and all((ROOT / p.rstrip(".")).exists() for p in named), named


def test_the_collector_can_write_its_spill_folder_in_the_image(compose: dict[str, Any]) -> None:
    """The collector runs as root with every capability dropped but those it needs: no
    CAP_DAC_OVERRIDE, so it can write only root's folders. Its default spill folder
    must be one the image makes for root, under the volume compose mounts for it
    (building the image and running it so failed with EACCES before)."""
    build = compose["services"]["collector"]["build"]
    text = (ROOT / build["context"] / build["dockerfile"]).read_text()
    spill = CollectorSection().spill_dir
    assert re.search(rf"install -d -o root -g root -m 0700 {re.escape(spill)}(\s|$)", text)
    collector = compose["services"]["collector"]
    assert "DAC_OVERRIDE" not in collector["cap_add"]
    mounts = [v.split(":")[1] for v in collector["volumes"] if not v.startswith("/")]
    assert any(spill.startswith(m.rstrip("/") + "/") for m in mounts), mounts


def unit(name: str) -> str:
    return (DEPLOY / name).read_text()


def exec_start(text: str) -> list[str]:
    [line] = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_systemd_units_run_real_commands(tmp_path: Path) -> None:
    collector = exec_start(unit("snoopbus-collector.service"))
    check_command(["snoopbus", *collector[1:]])
    example = tmp_path / "snoopbus.toml"
    example.write_text(unit("snoopbus.toml"))  # the archive's --dir comes from the file
    for name in BUILT_IN[:3]:
        argv = exec_start(unit("snoopbus-consumer@.service"))
        check_command(["snoopbus", *[a.replace("%i", name) for a in argv[1:]]],
                      load(example, env={}))  # fmt: skip
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    snoopbus = Path(sys.executable).parent / "snoopbus"
    for name in ("snoopbus-collector.service", "snoopbus-consumer@.service"):
        text = unit(name).replace("/opt/snoopbus/bin/snoopbus", str(snoopbus))
        (tmp_path / name).write_text(text)
    for name in ("snoopbus-collector.service", "snoopbus-consumer@rename.service"):
        out = subprocess.run([analyze, "verify", str(tmp_path / name)], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        problems = [ln for ln in out.stderr.splitlines() if "snoopbus" in ln]
        assert out.returncode == 0 and not problems, out.stderr


def test_the_example_config_loads_and_fits_each_consumer(tmp_path: Path) -> None:
    path = tmp_path / "snoopbus.toml"
    path.write_text(unit("snoopbus.toml"))
    cfg = load(path, env={})
    assert cfg.metrics.port == 9464 and cfg.nats.url.count("nats://") == 3
    assert set(cfg.consumer) == set(BUILT_IN)  # an example for every built-in consumer
    for name in cfg.consumer:
        parser = consumers_cli._consumer_parser(name, plugin.load(name), cfg.nats.url)
        consumers_cli.apply_config(parser, name, cfg)
        opts = parser.parse_args([])
        assert opts.metrics_port == cfg.consumer[name]["metrics_port"]
    forward = consumers_cli._consumer_parser("forward", plugin.load("forward"), cfg.nats.url)
    consumers_cli.apply_config(forward, "forward", cfg)
    opts = forward.parse_args([])
    assert opts.start == "new" and len(opts.sinks) == 2  # `to` a list of sinks, parsed
    # `--config` after the name, as a user types it (and nothing else needed)
    out = subprocess.run([*SNOOPBUS, "consume", "forward",
                          "--config", str(path), "--help"], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_units_notify_restart_sanely_and_are_hardened(tmp_path: Path) -> None:
    collector, consumer = unit("snoopbus-collector.service"), unit("snoopbus-consumer@.service")
    assert "Type=notify" in collector and "WatchdogSec=" in collector
    for text in (collector, consumer):
        # a config error exits 2 (proto/exits.py): never a restart loop
        assert f"RestartPreventExitStatus={exits.USAGE}" in text
        assert exec_start(text)[0] == "/opt/snoopbus/bin/snoopbus"  # a venv: PEP 668
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    limits = {"snoopbus-collector.service": 4.0, "snoopbus-consumer@rename.service": 2.0}
    for name, limit in limits.items():
        (tmp_path / name).write_text(unit(name.replace("@rename", "@")))
        out = subprocess.run([analyze, "security", "--offline=true", name], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        found = re.search(r"Overall exposure level for \S+: ([\d.]+)", out.stdout)
        if found is None and "offline" in out.stderr:
            return  # a systemd older than 252 cannot score a unit file offline
        assert found is not None, out.stdout + out.stderr
        assert float(found.group(1)) <= limit, out.stdout


def test_docker_compose_refuses_to_run_nats_without_a_password(tmp_path: Path) -> None:
    client = shutil.which("docker-compose")
    assert client
    out = subprocess.run([client, "-f", str(COMPOSE), "config"], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path,
                         env={"HOST_NAME": "web1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert out.returncode != 0 and "set NATS_PASSWORD" in out.stderr


async def test_the_cluster_config_lets_in_only_its_user(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """compose's NATS config run by the real nats-server: the password from the
    environment, anonymous clients refused, snoopbus's credentials accepted."""
    for name in ("nats-1", "nats-2", "nats-3"):
        service = compose["services"][name]
        assert any(v.endswith(":/etc/nats/snoopbus.conf:ro") for v in service["volumes"])
        assert service["command"][:2] == ["-c", "/etc/nats/snoopbus.conf"]
        assert "NATS_PASSWORD" in service["environment"]
    env = compose["services"]["collector"]["environment"]
    assert env["SNOOPBUS_NATS_USER"] == "snoopbus" and "NATS_PASSWORD" in env[
        "SNOOPBUS_NATS_PASSWORD"]
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "nats-server"), "-c", str(DEPLOY / "nats-cluster.conf"),
         "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp_path / "js")],
        env={"NATS_PASSWORD": "s3cret", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"nats://127.0.0.1:{port}"
        async with asyncio.timeout(20):  # until it listens
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
        with pytest.raises(BusUnavailable, match="uthoriz"):
            await connect(url, name="anonymous")
        with pytest.raises(BusUnavailable):
            await connect(url, name="wrong", auth=NatsAuth(user="snoopbus", password="x"))
        nc = await connect(url, name="ok", auth=NatsAuth(user="snoopbus", password="s3cret"))
        assert nc.connected_server_version.major >= 2
        await nc.close()
    finally:
        server.terminate()
        server.wait(10)
