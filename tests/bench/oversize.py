"""The oversized-input attack (issue 13) at several sizes, with the real
collector and nats-server: the largest argv and the largest message that flow
end to end, and whether events and heartbeats keep flowing after it.

    .venv/bin/python -m tests.bench.oversize                 # root
    .venv/bin/python -m tests.bench.oversize --files 2000

Each row: nobody runs `python3 -c ... PAD` with an argv of ARGV bytes creating
FILES files (every create event carries that argv), then root touches 20
witness files. argv_max is the collector's --argv-max (the kernel-side cap).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path

from tests.support.publish_attack import run_attack

# (argv bytes, collector --argv-max, server max_payload or None for the default)
ROWS = [
    (7 * 1024, 8192, None),
    (7 * 1024, 8192, 4096),
    (60 * 1024, 65536, None),
    (127 * 1024, 131072, None),
]
SHOWN = ("argv_sent", "max_payload", "attack_creates_published", "witness_creates_published",
         "heartbeats_after_attack", "largest_argv_published", "argv_truncated_events",
         "largest_message_bytes", "largest_message_events", "cut_batches", "lost")


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=300)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as spill:
        os.environ["SNOOPBUS_COLLECTOR_SPILL_DIR"] = spill  # not /var/lib/snoopbus
        for argv, argv_max, max_payload in ROWS:
            with tempfile.TemporaryDirectory() as tmp:
                fig = await run_attack(
                    Path(tmp), max_payload=max_payload, argv_bytes=argv, files=args.files,
                    collector_args=("--argv-max", str(argv_max)),
                )
            row = {"argv_max": argv_max, **{k: fig[k] for k in SHOWN}}
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
