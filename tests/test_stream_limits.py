"""The stream's limits ([stream]) and what a consumer lost to them, against a real nats-server."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from nats.js.api import StoreCompression
from rich.console import Console

from snoopbus.app.live import ChildView, LiveState
from snoopbus.app.natsd import NatsServer
from snoopbus.app.stack_metrics import StackStats
from snoopbus.collector.stream_watch import choose_max_mb, read_stream
from snoopbus.consumers.metrics import ConsumerStats
from snoopbus.proto import STREAM_NAME, ensure_stream, settings_file
from snoopbus.proto.settings_file import ConfigError
from snoopbus.proto.stream_limits import (
    FALLBACK_MAX_BYTES,
    MISSED_KEY,
    MissedCounter,
    StreamLimits,
    auto_max_bytes,
    fill_warning,
    missed_of,
    removed_unread,
)
from tests.test_consumer_runtime import Collector, exec_event, publish, running, wait_for

# -- pure logic ------------------------------------------------------------------


def test_removed_unread_counts_only_what_is_before_the_head() -> None:
    assert removed_unread(5, 9, first_seq=1) == 0  # all still there: filtered out
    assert removed_unread(5, 9, first_seq=8) == 3  # 5, 6, 7 gone
    assert removed_unread(5, 9, first_seq=100) == 5


def test_missed_counter_adds_each_range_once() -> None:
    m = MissedCounter()
    m.skip(3, 4)
    m.skip(10, 19)
    assert m.pending
    assert m.count(first_seq=15) == 2 + 5
    assert not m.pending and m.count(first_seq=100) == 0
    assert m.missed == 7


def test_fill_warning_at_the_configured_percent() -> None:
    assert fill_warning(79, 100, 80.0) is None
    warning = fill_warning(80, 100, 80.0)
    assert warning is not None and "80%" in warning
    assert fill_warning(10**12, -1, 80.0) is None  # no limit: nothing to warn of


def test_auto_bytes_take_a_fraction_of_free_plus_held() -> None:
    assert auto_max_bytes(free_bytes=800 << 20, stream_bytes=200 << 20, fraction=0.5) == 500 << 20


def test_limits_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[stream]\nmax_mb = 3\nmax_age_days = 0.5\ncompression = "none"\n')
    cfg = settings_file.load(path, env={})
    limits = StreamLimits.from_section(cfg.stream, cfg.sources)
    assert limits == StreamLimits(max_age_s=43200.0, max_bytes=3 << 20, compression="none",
                                  enforce=True)  # fmt: skip
    defaults = settings_file.load(None, env={"SNOOPBUS_CONFIG": ""})
    limits = StreamLimits.from_section(defaults.stream, defaults.sources)
    assert limits.max_bytes == FALLBACK_MAX_BYTES and not limits.enforce
    shown = settings_file.format_toml(cfg)  # `config show`
    assert "[stream]" in shown and "max_mb = 3" in shown


def test_bad_stream_values_are_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[stream]\ncompression = "zstd"\n')
    with pytest.raises(ConfigError, match="compression must be s2 or none"):
        settings_file.load(path, env={})


# -- against nats-server ------------------------------------------------------------


async def test_stream_is_created_bounded_and_updated_when_config_changes(
    js: JetStreamContext, caplog: pytest.LogCaptureFixture
) -> None:
    info = await ensure_stream(js)  # defaults: bounded, compressed
    assert info.config.max_bytes == FALLBACK_MAX_BYTES and info.config.max_age == 7 * 86400
    assert info.config.compression == StoreCompression.S2
    # An operator's own limits stay when ours are only defaults ...
    info.config.max_bytes = 5 << 20
    await js.update_stream(info.config)
    assert (await ensure_stream(js)).config.max_bytes == 5 << 20
    # ... and give way to limits chosen in [stream], which say so.
    chosen = StreamLimits(max_age_s=3600, max_bytes=2 << 20, compression="none", enforce=True)
    with caplog.at_level(logging.WARNING):
        info = await ensure_stream(js, limits=chosen)
    assert (info.config.max_bytes, info.config.max_age) == (2 << 20, 3600)
    assert info.config.compression in (None, StoreCompression.NONE)
    assert "max_bytes 5.0 MiB -> 2.0 MiB ([stream] config)" in caplog.text


async def test_a_stopped_consumer_counts_exactly_what_retention_removed(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    limits = StreamLimits(max_bytes=256 << 10, compression="none", enforce=True)
    await ensure_stream(js, limits=limits)
    pad = "x" * 900  # ~1 KiB a message
    for _ in range(20):
        await publish(js, exec_event(comm="before", pad=pad))
    c = Collector()
    async with running(c, nats_server.url) as rt:
        await wait_for(lambda: rt.counters.processed == 20)
    # Stopped; meanwhile the stream wraps: ~256 messages fit, 1000 are published.
    for _ in range(1000):
        await publish(js, exec_event(comm="during", pad=pad))
    state = (await js.stream_info(STREAM_NAME)).state
    assert state.first_seq > 21, "the stream did not wrap: the test proves nothing"
    expected = state.first_seq - 21  # seqs 21 .. first_seq-1 were removed unread
    async with running(c, nats_server.url) as rt:
        await wait_for(lambda: rt.counters.processed == state.messages)
        await wait_for(lambda: rt.counters.missed == expected)
        assert len(c.events) == 20 + state.messages
        info = await js.consumer_info(STREAM_NAME, "collect")
        assert missed_of(info.config.metadata) == expected  # what `up` and doctor read
        metrics = {m.name: m.samples[0].value for m in ConsumerStats(rt).collect() if m.samples}
        assert metrics["snoopbus_consumer_messages_missed"] == expected
    # A restart goes on from the recorded count, and counts nothing twice.
    async with running(c, nats_server.url) as rt:
        await asyncio.sleep(0.3)
        assert rt.counters.missed == expected
    assert (info.config.metadata or {})[MISSED_KEY] == str(expected)


async def test_doctor_up_and_metrics_show_the_missed_count_and_the_fill_warning(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    """A consumer that stopped while the stream wrapped: before it resumes, `doctor
    --nats`, `up`'s view and up's metrics already count what it lost, and warn."""
    await ensure_stream(js, limits=StreamLimits(max_bytes=128 << 10, compression="none",
                                                enforce=True))  # fmt: skip
    pad = "x" * 900
    await publish(js, exec_event(comm="first", pad=pad))
    c = Collector()
    async with running(c, nats_server.url) as rt:
        await wait_for(lambda: rt.counters.processed == 1)
    for _ in range(400):
        await publish(js, exec_event(comm="during", pad=pad))
    first = (await js.stream_info(STREAM_NAME)).state.first_seq
    assert first > 2
    out = subprocess.run(
        [sys.executable, "-m", "snoopbus.app", "doctor", "--nats", nats_server.url,
         "--host", "nobody"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "SNOOPBUS_STREAM_WARN_PERCENT": "50"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"consumer collect: lag {401 - first + 1}" in out.stdout
    assert f"missed {first - 2} (removed by retention" in out.stdout
    assert "WARNING: stream holds" in out.stdout and "of its 128.0 KiB limit" in out.stdout
    reading = await read_stream(js, ["collect"], warn_percent=80.0, state_dir=tmp_path)
    state = LiveState(host="h", url=nats_server.url, state_dir=str(tmp_path), started=0.0)
    state.children = [ChildView("collect")]
    assert state.on_stream(reading) and state.on_stream(reading) == []  # said once
    console = Console(width=160, record=True, file=open(os.devnull, "w"))
    console.print(state.render(1.0))
    console.file.close()
    shown = console.export_text()
    assert f"{first - 2:,}" in shown and "⚠ stream holds" in shown
    metrics = {m.name: m for m in StackStats([], {}, lambda: reading).collect()}
    assert metrics["snoopbus_up_consumer_messages_missed"].samples[0].value == first - 2
    assert metrics["snoopbus_stream_warnings"].samples[0].value == 1
    async with running(c, nats_server.url) as rt:  # the consumer itself, resumed, agrees
        await wait_for(lambda: rt.counters.missed == first - 2)


def test_up_chooses_max_bytes_from_the_free_space_and_says_so(tmp_path: Path) -> None:
    section = settings_file.StreamSection(disk_fraction=0.25)
    env, said = choose_max_mb(tmp_path, section)
    free = shutil.disk_usage(tmp_path).free
    assert abs(int(env["SNOOPBUS_STREAM_MAX_MB"]) - (free // 4 >> 20)) <= 1
    assert "0.25 of the" in said and "free for it in" in said
    # The children read it as a chosen limit, which they enforce.
    cfg = settings_file.load(None, env={"SNOOPBUS_CONFIG": "", **env})
    limits = StreamLimits.from_section(cfg.stream, cfg.sources)
    assert limits.enforce and limits.max_bytes == int(env["SNOOPBUS_STREAM_MAX_MB"]) << 20
    assert choose_max_mb(tmp_path, settings_file.StreamSection(max_mb=7)) == (
        {}, "stream limit: 7 MiB ([stream] max_mb)")


def test_up_creates_the_stream_with_what_it_chose(tmp_path: Path) -> None:
    """Under per-role permissions only up's admin may set the limits: it must
    use the size it chose (auto) or the one configured, and enforce either."""
    from snoopbus.app.stack import StackConfig, stack_limits

    auto = StackConfig(state_dir=tmp_path)
    env, _ = choose_max_mb(tmp_path, auto.stream)
    limits = stack_limits(auto, env)
    assert limits.enforce and limits.max_bytes == int(env["SNOOPBUS_STREAM_MAX_MB"]) << 20
    cfg = settings_file.load(None, env={"SNOOPBUS_CONFIG": "", "SNOOPBUS_STREAM_MAX_MB": "9"})
    fixed = StackConfig.from_config(cfg)
    env, _ = choose_max_mb(tmp_path, fixed.stream)
    assert env == {}
    limits = stack_limits(fixed, env)
    assert limits.enforce and limits.max_bytes == 9 << 20
    assert not stack_limits(StackConfig(state_dir=tmp_path), {}).enforce
