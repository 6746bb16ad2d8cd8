"""Argv redaction: what it catches, what it hides by mistake, what it costs.

    .venv/bin/python -m tests.bench.redaction [--rounds N] [--detect-secrets]

On tests/data/redact_corpus.txt: recall (listed secrets that no longer
appear), the false-mask rate (clean command lines changed), arguments that
lost more than their secret, each listed. Then µs per argv (the fastest of N
rounds: the machine is shared) for the corpus's secret and clean lines and
for short everyday argvs, and ms for the costliest 8 KiB argvs a local user
can make (8 KiB is the probe's default argv_max): redaction runs in the
collector on every exec, so its worst case bounds how cheaply someone can
make the collector fall behind. With --detect-secrets, and the package
installed, the same corpus scanned argument by argument with its plugins:
what it catches and costs as a dependency (collector/redact_values.py ports
its patterns instead).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

from snoopbus.collector.redact import SHELL_WORDS, Redactor
from tests.support.redact_corpus import Corpus, load, score

TYPICAL = [
    ["/bin/true"], ["ls", "-la", "/tmp"], ["git", "status"], ["cat", "/etc/os-release"],
    ["/usr/bin/python3", "-m", "pytest", "-q", "tests/test_x.py"],
    ["sh", "-c", "cd /app && make -j4"], ["grep", "-rn", "TODO", "src/"],
    ["/usr/lib/systemd/systemd-journald"], ["gcc", "-O2", "-c", "-o", "x.o", "x.c"],
    ["docker", "run", "--rm", "-p", "8080:80", "nginx:1.25"],
]
K = 8192


def adversarial() -> dict[str, list[str]]:
    """argvs of ~8 KiB shaped to make each part of the redactor work hardest."""
    nested = "sh -c \"sh -c 'sh -c \\\"" + "a b " * (K // 4 - 10) + "\\\"'\""
    return {
        "4096 one-letter args": ["x"] + ["a"] * (K // 2),
        "-p X with a -u (guessed passwords)": ["x"] + ["-p", "ab"] * (K // 6) + ["-u"],
        "one NAME=VALUE,... list": ["x", "-o", ",".join(f"pw{i}x=v{i}" for i in range(K // 12))],
        "NAME=VALUE args": ["env"] + ["A_B=c"] * (K // 6),
        "sh -c with 800 commands": ["sh", "-c", " ".join(["mysql -pX"] * (K // 10))],
        "sh -c nested 4 deep": ["sh", "-c", nested],
        "sh -c with 900 pipes": ["sh", "-c", " | ".join(["echo x"] * (K // 9))],
        "URLs with credentials": ["x"] + ["https://u:p@h/?token=x&sig=y"] * (K // 30),
        "headers": ["curl"] + ["-H", "Authorization: Bearer abcdefgh"] * (K // 36),
        "AWS key ids": ["x"] + ["AKIAQ1PWPS1NW1CUZ3FE"] * (K // 21),
        "one base64 argument": ["x", "A1b2C3d4" * (K // 8)],
        "JSON pairs": ["x", "{" + ",".join(['"password":"x"'] * (K // 15)) + "}"],
    }


def per_argv_us(redact: Callable[[Sequence[str]], object], argvs: list[list[str]],
                rounds: int, repeat: int = 20) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            for argv in argvs:
                redact(argv)
        best = min(best, (time.perf_counter() - start) / (repeat * len(argvs)))
    return best * 1e6


def report_quality(corpus: Corpus) -> None:
    s = score(Redactor(), corpus)
    print(f"corpus: {len(corpus.secret)} command lines with {s.secrets} secrets, "
          f"{s.clean_lines} without")
    print(f"recall       {s.recall:.4f}  ({s.caught} of {s.secrets} secrets masked)")
    print(f"false masks  {s.false_mask_rate:.4f}  ({len(s.false_masks)} of {s.clean_lines} "
          "clean lines changed)")
    print(f"over-masked  {len(s.over_masked)} arguments lost more than their secret")
    for line, secret, out in s.misses:
        print(f"  miss  line {line}: {secret!r} in {out}")
    for line, _, out in s.false_masks:
        print(f"  false line {line}: {out}")
    for line, arg, new in s.over_masked:
        print(f"  over  line {line}: {arg!r} -> {new!r}")


def report_cost(corpus: Corpus, rounds: int) -> None:
    r = Redactor()
    secret = [c.argv for c in corpus.secret]
    clean = [a for _, a in corpus.clean]
    print(f"µs per argv (fastest of {rounds} rounds):")
    print(f"  everyday argvs       {per_argv_us(r, TYPICAL, rounds):7.1f}")
    print(f"  corpus, clean lines  {per_argv_us(r, clean, rounds):7.1f}")
    print(f"  corpus, secret lines {per_argv_us(r, secret, rounds):7.1f}")
    print(f"ms per 8 KiB argv, the costliest shapes (command lines inside arguments: "
          f"{SHELL_WORDS} words walked per argv, then only the linear rules):")
    for name, argv in adversarial().items():
        ms = per_argv_us(r, [argv], rounds, repeat=3) / 1000
        print(f"  {name:36s} {ms:6.2f}")


def report_detect_secrets(corpus: Corpus, rounds: int) -> None:
    try:
        from detect_secrets.settings import default_settings, get_plugins
    except ImportError:
        print("detect-secrets: not installed (pip install detect-secrets to compare)")
        return
    with default_settings():
        plugins = get_plugins()

        def found(argv: Sequence[str]) -> list[str]:
            return [str(p.secret_value) for a in argv for plugin in plugins
                    for p in plugin.analyze_line(filename="argv", line=a, line_number=0)]

        caught = total = 0
        for case in corpus.secret:
            hits = found(case.argv)
            for secret in case.secrets:
                total += 1
                caught += any(secret in h or h in secret for h in hits if h)
        flagged = sum(bool(found(a)) for _, a in corpus.clean)
        us = per_argv_us(found, [c.argv for c in corpus.secret] + [a for _, a in corpus.clean],
                         rounds, repeat=2)
    print(f"detect-secrets, each argument through its {len(plugins)} plugins: "
          f"recall {caught / total:.4f}, clean lines flagged {flagged} of {len(corpus.clean)}, "
          f"{us:.0f} µs per argv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--detect-secrets", action="store_true",
                        help="also measure detect-secrets on the corpus, if installed")
    args = parser.parse_args()
    corpus = load()
    report_quality(corpus)
    report_cost(corpus, args.rounds)
    if args.detect_secrets:
        report_detect_secrets(corpus, args.rounds)


if __name__ == "__main__":
    main()
