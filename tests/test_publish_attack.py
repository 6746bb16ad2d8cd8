"""The attack of issue 13, for real: nobody runs a program with a 7 KiB argv
that creates 300 files, which used to make a batch over max_payload that the
publisher retried forever, and nothing was published again (no events, no
heartbeats). Now batches are cut to the server's max_payload, an event that
cannot fit is truncated and flagged, and events and heartbeats keep flowing.
Bigger figures: `.venv/bin/python -m tests.bench.oversize`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import nats
import pytest

from snoopbus.app.natsd import NatsServer, config_args
from snoopbus.collector.publisher import HEADER_ROOM
from snoopbus.proto import events_filter, meta_subject
from tests.conftest import start_collector, stop_process
from tests.publish_attack import NOBODY, BusWatch, attacker_argv, run_attack

pytestmark = pytest.mark.kernel

ARGV = 7 * 1024
FILES = 300


def shown(fig: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in fig.items() if k != "collector_log"}


@pytest.mark.parametrize("max_payload", [None, 64 << 10])
async def test_a_long_argv_and_many_files_no_longer_stop_publishing(
    tmp_path: Path, max_payload: int | None
) -> None:
    fig = await run_attack(tmp_path, max_payload=max_payload, argv_bytes=ARGV, files=FILES)
    limit = max_payload or 1 << 20
    print(f"\nATTACK {ARGV}-byte argv x {FILES} creates, max_payload {limit}: {shown(fig)}")
    log = fig["collector_log"]
    assert fig["attack_creates_published"] == FILES, log
    assert fig["witness_creates_published"] == "20/20", log
    assert fig["heartbeats_after_attack"] >= 1, log
    # the whole argv went, in messages cut to fit the limit with room for headers
    assert fig["largest_argv_published"] == ARGV and fig["argv_truncated_events"] == 0
    assert 4 * ARGV < fig["largest_message_bytes"] <= limit - HEADER_ROOM
    assert fig["lost"] == 0 and fig["captured"] == fig["published"], log
    if max_payload:  # 8 events fill 64 KiB: every flush of the attack is over it
        assert fig["cut_batches"] >= 1, fig


async def test_under_a_tiny_max_payload_events_arrive_truncated_not_dropped(
    tmp_path: Path,
) -> None:
    fig = await run_attack(tmp_path, max_payload=4096, argv_bytes=ARGV, files=FILES)
    print(f"\nATTACK {ARGV}-byte argv x {FILES} creates, max_payload 4096: {shown(fig)}")
    log = fig["collector_log"]
    assert fig["payload_limit"] == 4096
    assert fig["attack_creates_published"] == FILES, log
    assert fig["witness_creates_published"] == "20/20", log
    assert fig["heartbeats_after_attack"] >= 1, log
    # each create alone is over the limit: argv cut, flagged, the event sent
    assert fig["argv_truncated_events"] == FILES
    assert 0 < fig["largest_argv_published"] < 4096 - HEADER_ROOM
    assert fig["largest_message_bytes"] <= 4096 - HEADER_ROOM
    assert fig["lost"] == 0 and fig["captured"] == fig["published"], log


async def test_a_max_payload_lowered_by_a_reload_closes_the_connection_and_it_comes_back(
    tmp_path: Path,
) -> None:
    """nats-py checks only the payload against the max_payload it read at connect;
    a server reloaded with a smaller one answers a larger message with -ERR, on
    which nats-py closes the connection for good. The collector connects anew,
    reads the new max_payload, cuts its messages again, and loses nothing."""
    conf = tmp_path / "nats.conf"
    server = NatsServer(state_dir=tmp_path / "nats",
                        extra_args=config_args(conf, "max_payload: 1048576\n"))
    server.start()
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o1777)
    nc = await nats.connect(server.url)
    watch = BusWatch()
    try:
        running = await start_collector(server.url, nc, tmp_path, "--include-path", str(work))
        await nc.subscribe(events_filter(host=running.host), cb=watch.on_events)
        await nc.subscribe(meta_subject(running.host, "status"), cb=watch.on_status)
        await nc.flush()
        try:
            for prefix in ("a", "b"):
                subprocess.run([*NOBODY, *attacker_argv(100, ARGV, prefix)], cwd=work,
                               check=True, timeout=60)
                assert await watch.until(lambda p=prefix: len(watch.created(p)) >= 100, 60), (
                    f"{len(watch.created(prefix))} of 100 {prefix}* creates\n{running.log()}")
                if prefix == "a":  # an admin lowers max_payload and reloads
                    conf.write_text("max_payload: 16384\n")
                    os.kill(server.process.pid, signal.SIGHUP)  # type: ignore[union-attr]
                    await asyncio.sleep(1)
        finally:
            code = stop_process(running.process)
        assert code == 0, running.log()
        await watch.until(lambda: any(r.get("state") == "stopped" for r in watch.status), 10)
    finally:
        await nc.close()
        server.stop()
    [final] = [r for r in watch.status if r.get("state") == "stopped"]
    assert "connection was closed" in running.log()
    assert final["payload_limit"] == 16384 and final["cut_batches"] >= 1
    assert final["lost"] == 0 and final["captured"] == final["published"], final
    assert all(e["proc"]["argv"][-1] == attacker_argv(100, ARGV, "b")[-1]
               for e in watch.created("b"))  # whole: 7 KiB still fits 16 KiB
