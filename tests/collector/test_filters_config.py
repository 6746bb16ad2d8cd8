"""Filter settings: flags, the TOML config file and its errors, the matcher."""

from __future__ import annotations

from pathlib import Path

import pytest

from snoopbus.app.main import build_parser
from snoopbus.collector import probes
from snoopbus.collector.cgroups import container_id
from snoopbus.collector.commands import collect_settings
from snoopbus.collector.filters import FilterConfig, PathMatcher
from snoopbus.proto import settings_file


def settings(*argv: str) -> FilterConfig:
    return collect_settings(build_parser().parse_args(["collect", *argv]))[1]


def test_flags() -> None:
    f = settings("--exclude-path", "/proc", "--exclude-path", "/sys", "--include-path", "/data",
                 "--exclude-comm", "sshd", "--exclude-uid", "0", "--exclude-uid", "root",
                 "--exclude-cgroup", "123", "--include-failed", "--open-events")
    assert f.exclude_paths == ("/proc", "/sys") and f.include_paths == ("/data",)
    assert f.exclude_comms == ("sshd",) and f.exclude_uids == (0, 0)
    assert f.exclude_cgroups == (123,) and f.include_failed and f.open_events


def test_source_rate_from_file_and_flag_to_the_kernel(tmp_path: Path) -> None:
    """The fair share is a setting: file, then flag over it, then the probes' constant."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[collector]\nsource_rate = 0\n")
    parse = build_parser().parse_args
    assert collect_settings(parse(["collect"]))[0]["source_rate"] == 4000
    assert collect_settings(parse(["collect", "--config", str(cfg)]))[0]["source_rate"] == 0
    s = collect_settings(parse(["collect", "--config", str(cfg), "--source-rate", "250"]))[0]
    assert s["source_rate"] == 250
    limits = probes.ProbeLimits(source_rate=s["source_rate"])
    assert probes.defines(limits, {}, self_tgid=1)["SOURCE_RATE"] == 250
    with pytest.raises(ValueError, match="must not be negative"):
        probes.ProbeLimits(source_rate=-1)


def test_config_file_and_flags_over_it(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[collector]\nexclude_path = ["/var/log"]\nexclude_uid = [33]\n'
                   "include_failed = true\n")
    f = settings("--config", str(cfg))
    assert f.exclude_paths == ("/var/log",) and f.exclude_uids == (33,) and f.include_failed
    f = settings("--config", str(cfg), "--exclude-path", "/tmp")
    assert f.exclude_paths == ("/tmp",)  # a flag replaces the file's list


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[collector]\nexclude_paths = []\n", "unknown key 'exclude_paths' in [collector]"),
        ("[collecter]\n", "unknown section [collecter]"),
        ("[collector]\ninclude_failed = 1\n", "include_failed must be bool, got int"),
        ("[collector]\nargv_max = true\n", "argv_max must be int, got bool"),
        ("[collector]\nexclude_comm = [1]\n", "exclude_comm must be list of str, got list"),
        ("[collector\n", "not valid TOML"),
    ],
)
def test_config_errors_name_key_and_file(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ValueError, match=r"config .*bad\.toml") as err:
        settings_file.load(cfg, env={})
    assert message in str(err.value)


def test_bad_values() -> None:
    with pytest.raises(ValueError, match="must be absolute"):
        FilterConfig(exclude_paths=("tmp",))
    with pytest.raises(ValueError, match="15 bytes"):
        FilterConfig(exclude_comms=("x" * 16,))
    with pytest.raises(ValueError, match="unknown user"):
        settings("--exclude-uid", "no-such-user-xyz")


def test_matcher_nearest_prefix_wins() -> None:
    m = PathMatcher(("/data",), ("/data/tmp", "/data/x/"))
    assert m(b"/data/a") and m(b"/data")
    assert not m(b"/data/tmp/a") and not m(b"/data/x/y")
    assert not m(b"/etc/passwd")  # includes given: the rest is out
    only_ex = PathMatcher((), ("/proc",))
    assert only_ex(b"/etc") and not only_ex(b"/proc/1") and only_ex(b"/process")


@pytest.mark.parametrize(
    ("path", "cid"),
    [
        ("/system.slice/docker-" + "a" * 64 + ".scope", "a" * 64),
        ("/docker/" + "b" * 64, "b" * 64),
        ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1_2.slice/"
         "cri-containerd-" + "c" * 64 + ".scope", "c" * 64),
        ("/kubepods/besteffort/pod1234-56/" + "d" * 64, "d" * 64),
        ("/machine.slice/libpod-" + "e" * 64 + ".scope/container", "e" * 64),
        ("/user.slice/user-0.slice/session-3.scope", None),
    ],
)
def test_container_ids(path: str, cid: str | None) -> None:
    assert container_id(path) == cid


def test_prefix_hashes_match_the_kernel_scan() -> None:
    from snoopbus.collector.filters import PREFIX_SCAN, fnv1a64, prefix_hashes

    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C  # the published FNV-1a 64 test vector
    cfg = FilterConfig(include_paths=("/data/",), exclude_paths=("/data//tmp", "/",
                                                                 "/" + "x" * PREFIX_SCAN))
    # folded like the kernel sees a clean name; "/" and too-long ones stay in user space
    assert prefix_hashes(cfg) == {fnv1a64(b"/data"): 1, fnv1a64(b"/data/tmp"): 2}
