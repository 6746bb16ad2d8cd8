"""Benchmark: what the subject check (consumers/trust.py) costs beside the decode.

    .venv/bin/python -m tests.bench.trust

Per message of 100 (and 1,000) events, as a collector sends them: the fast
decode (`decode_records`, what the runtime does anyway), then check_subject
and events_mismatch over the records, and over maps (the reference path).
Prints µs per message and the check's share of the decode, from one run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from snoopbus.consumers import trust
from snoopbus.proto import decode_batch, decode_records, encode_batch, event_subject
from snoopbus.proto.msgid import ID_HEADER, MessageIds


def best(fn: Callable[[], Any], n: int) -> float:
    """µs per call, the best of 5 runs of n calls."""
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t) / n * 1e6)
    return min(runs)


def main() -> None:
    subject = event_subject("web-01.example.com", "open")
    headers = {ID_HEADER: MessageIds().new(subject, 100)}
    print(f"{'events/msg':>10} {'decode µs':>10} {'check µs':>9} {'share':>6} "
          f"{'maps check µs':>14}")
    for size in (100, 1000):
        events = [{"v": 1, "id": f"i-{i}", "ts": 1_700_000_000_000_000_000 + i,
                   "host": "web-01.example.com", "type": "open",
                   "proc": {"pid": 10 + i % 7, "comm": "python3", "exe": "/usr/bin/python3"},
                   "file": {"path": f"/var/lib/app/data/{i % 50}.db", "flags": 0}}
                  for i in range(size)]
        data = encode_batch(events)
        records = decode_records(data)
        maps = decode_batch(data)
        assert records is not None
        n = 20_000 // size

        def check(rows: Any = records, as_maps: bool = False) -> None:
            parts = trust.check_subject(subject, headers)
            assert not isinstance(parts, str)
            assert trust.events_mismatch(parts, rows, as_maps) is None

        decode = best(lambda: decode_records(data), n)  # noqa: B023
        checked = best(check, n)
        on_maps = best(lambda: check(maps, True), n)  # noqa: B023
        print(f"{size:>10} {decode:>10.1f} {checked:>9.2f} {checked / decode:>6.1%} "
              f"{on_maps:>14.2f}")


if __name__ == "__main__":
    main()
