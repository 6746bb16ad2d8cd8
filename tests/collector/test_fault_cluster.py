"""Fault: a 3-node NATS cluster with the stream replicated 3 ways; the node the
publisher is connected to is SIGKILLed mid-stream. Figure: events published
vs events in the stream; zero lost, zero duplicated.

The collector's Publisher is driven directly with a steady synthetic flow
(the probes add nothing to what this fault tests). Longer runs:
`.venv/bin/python -m tests.bench.faults cluster --events 200000`.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.faults import run_cluster_kill


async def test_a_cluster_node_sigkilled_mid_stream_loses_nothing(tmp_path: Path) -> None:
    fig = await run_cluster_kill(tmp_path, events=10_000, rate=5_000)
    print(f"\nFAULT 3-node cluster, R3 stream, connected node SIGKILLed mid-stream: {fig}")
    assert fig["lost"] == 0 and fig["duplicated"] == 0 and fig["counted_lost"] == 0
