"""The fleet simulation's accounting, at a tiny scale: a real 3-node cluster with the
stream replicated 3 ways, 5 simulated hosts, 1 then 2 instances of each consumer
group. Every event sent reaches every group exactly once (archive rows, renamed
per pair, alerter messages); the speed is the benchmark's (tests/bench/fleet.py)."""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import replace
from pathlib import Path

from tests.bench.fleet import Accounting, Load, simulate
from tests.bench.fleet_load import Fleet, load, record


def test_the_recording_replays_as_hosts_with_pairs_never_split(tmp_path: Path) -> None:
    record(tmp_path / "r.msgpack", events=500)
    fleet = Fleet(load(tmp_path / "r.msgpack"), hosts=7)
    sent = [s for frame in fleet.frames(2000, 2, 0.5, 0) for s in frame]
    halves: Counter[tuple[int, str]] = Counter()
    for s in sent:
        assert s.subject.split(".")[2] == fleet.names[s.host]
        if s.type in ("moved_from", "moved_to"):
            halves[(s.host, s.type)] += s.events
    hosts = {s.host for s in sent}
    assert hosts == set(range(7)) and fleet.pairs > 0
    for h in hosts:  # each send carries whole pairs
        assert halves[(h, "moved_from")] == halves[(h, "moved_to")]
    assert sum(halves.values()) == 2 * fleet.pairs
    assert 3900 <= sum(s.events for s in sent) <= 4000 + 2 * 7 * 20  # 2000/s for 2 s


async def test_every_event_reaches_every_group_once_at_1_and_2_instances(tmp_path: Path) -> None:
    out = io.StringIO()
    tiny = Load(hosts=5, seconds=3, flush_s=0.5, drain_s=60, archive_roll_s=2)
    runs = await simulate(tmp_path, tiny, instances=[1, 2], rates=[300], out=out)
    print(out.getvalue())
    assert [r.instances for r in runs] == [1, 2]
    for run in runs:
        acc = run.accounting
        assert acc.replicas == 3 and acc.replicas_holding == 3
        assert [s.kept_up for s in run.steps] == [True], out.getvalue()
        assert acc.problems() == [], out.getvalue()
        assert sum(acc.sent.values()) == run.steps[0].events > 0
        assert acc.pairs > 0 and acc.archived["renamed"] == acc.pairs
        assert acc.alert_processed > 0 and acc.stream_alerts > 0
    # Every process it started is gone (and reaped), and its folders removed.
    assert len({pid for r in runs for pid in r.pids}) == 3 + 3 * (1 + 2)
    assert not [pid for r in runs for pid in r.pids if Path(f"/proc/{pid}").exists()]
    assert not list(tmp_path.glob("archive-*/p*/events"))


def test_the_accounting_names_what_is_missing_or_doubled() -> None:
    sent = Counter({"exec": 10, "moved_from": 2, "moved_to": 2})
    good = Accounting(sent=sent, pairs=2, archived=sent + Counter({"renamed": 2}),
                      archived_ids=16, archived_alerts=1, stream_event_messages=5,
                      stream_alerts=1, alert_processed=5, stream_renamed=["a", "b"],
                      replicas=3, replicas_holding=3)  # fmt: skip
    assert good.problems() == []
    assert replace(good, archived=good.archived - Counter({"exec": 1}),
                   archived_ids=15).problems() == ["archive: 9 exec rows for 10 sent"]
    assert replace(good, archived_ids=15).problems() == ["archive: 1 rows twice"]
    assert replace(good, stream_renamed=["a", "a"]).problems() == [
        "rename: 2 renamed events in the stream (1 distinct) for 2 pairs"]
    assert replace(good, alert_processed=6).problems() == [
        "alert: 6 messages processed of 5 in the stream"]
