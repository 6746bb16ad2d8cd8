"""The attack of issue 13, for real: nobody runs a program with a 7 KiB argv
that creates 300 files, which used to make a batch over max_payload that the
publisher retried forever, and nothing was published again (no events, no
heartbeats). Now batches are cut to the server's max_payload, an event that
cannot fit is truncated and flagged, and events and heartbeats keep flowing.
Bigger figures: `.venv/bin/python -m tests.bench.oversize`."""

from __future__ import annotations

from pathlib import Path

import pytest

from snoopbus.collector.publisher import HEADER_ROOM
from tests.publish_attack import run_attack

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
