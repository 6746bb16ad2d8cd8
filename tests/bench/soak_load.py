"""The soak benchmark's load: execs and a small build, at a steady rate, in one folder.

    python -m tests.bench.soak_load DIR SECONDS RATE MARKER

Runs for SECONDS, RATE operations per second, in cycles of ten operations
(CYCLE): two execs of /bin/true (argv [/bin/true, MARKER, n]) and a
compile-like step on unique names under DIR: write a source, write an object
under a temporary name and rename it into place, write it again and rename
it over the first one, rename the source to a backup, delete both.

Behind its schedule (a busy machine) it catches up, within SECONDS.
On SIGTERM or at the end it prints one JSON line: the events each type
should have produced (`expected`, EVENTS_PER_OP per operation done), the
operations done, the seconds it ran and the operations it could not do
(`failed`, with the first error): the soak compares `expected` with what
reached the bus for DIR and MARKER.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

# What each operation makes the collector report (open events are off by default).
EVENTS_PER_OP: dict[str, dict[str, int]] = {
    "exec": {"exec": 1},
    "write": {"create": 1, "modify": 1, "close_write": 1},
    "rename": {"moved_from": 1, "moved_to": 1},  # also over an existing name
    "delete": {"delete": 1},
}
# One build step: (operation, source name, destination name); {n} is the cycle.
CYCLE: tuple[tuple[str, str, str], ...] = (
    ("exec", "", ""),
    ("write", "src/{n}.c", ""),
    ("write", "obj/{n}.o.tmp", ""),
    ("rename", "obj/{n}.o.tmp", "obj/{n}.o"),
    ("write", "obj/{n}.o.tmp", ""),
    ("rename", "obj/{n}.o.tmp", "obj/{n}.o"),  # over the first object
    ("exec", "", ""),
    ("rename", "src/{n}.c", "src/{n}.c.bak"),
    ("delete", "src/{n}.c.bak", ""),
    ("delete", "obj/{n}.o", ""),
)
PAYLOAD = b"int main(void) { return 0; }\n" * 8
TICK = 0.005  # s between rate checks


def expected_events(done: Counter[str]) -> Counter[str]:
    out: Counter[str] = Counter()
    for op, n in done.items():
        for kind, per in EVENTS_PER_OP[op].items():
            out[kind] += per * n
    return out


class Load:
    def __init__(self, folder: Path, marker: str) -> None:
        self.folder = folder
        self.marker = marker
        self.done: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.first_error = ""
        self.n = 0  # operations started
        (folder / "src").mkdir(parents=True, exist_ok=True)
        (folder / "obj").mkdir(exist_ok=True)

    def step(self) -> None:
        cycle, i = divmod(self.n, len(CYCLE))
        self.n += 1
        op, src, dst = CYCLE[i]
        try:
            if op == "exec":
                pid = os.posix_spawn("/bin/true", ["/bin/true", self.marker, str(self.n)],
                                     os.environ)  # fmt: skip
                _, status = os.waitpid(pid, 0)
                if os.waitstatus_to_exitcode(status) != 0:
                    raise OSError(f"/bin/true exited with {status}")
            elif op == "write":
                fd = os.open(self.folder / src.format(n=cycle),
                             os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)  # fmt: skip
                try:
                    os.write(fd, PAYLOAD)
                finally:
                    os.close(fd)
            elif op == "rename":
                os.rename(self.folder / src.format(n=cycle), self.folder / dst.format(n=cycle))
            else:
                os.unlink(self.folder / src.format(n=cycle))
        except OSError as exc:
            self.failed[op] += 1
            self.first_error = self.first_error or f"{op}: {exc}"
            return
        self.done[op] += 1

    def summary(self, seconds: float) -> dict[str, object]:
        return {"expected": dict(expected_events(self.done)), "done": dict(self.done),
                "failed": dict(self.failed), "first_error": self.first_error,
                "seconds": round(seconds, 3)}  # fmt: skip


def run(folder: Path, seconds: float, rate: float, marker: str,
        stopped: Callable[[], bool] = lambda: False) -> dict[str, object]:
    load = Load(folder, marker)
    start = time.monotonic()
    end = start + seconds
    while not stopped():
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - start) * rate)
        # Behind (a busy machine): catch up, but never past the end.
        while load.n < due and not stopped() and time.monotonic() < end:
            load.step()
        time.sleep(TICK)
    # A cycle left half done would leave files behind: finish it.
    while load.n % len(CYCLE):
        load.step()
    return load.summary(time.monotonic() - start)


def main() -> None:
    if len(sys.argv) != 5:
        sys.exit("usage: python -m tests.bench.soak_load DIR SECONDS RATE MARKER")
    folder, seconds, rate, marker = sys.argv[1:]
    terminated: list[int] = []
    signal.signal(signal.SIGTERM, lambda sig, _frame: terminated.append(sig))
    out = run(Path(folder), float(seconds), float(rate), marker, lambda: bool(terminated))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
