"""The redaction corpus (tests/data/redact_corpus.txt) and how a redactor scores on it.

Recall: the share of listed secrets that no longer appear anywhere in the
redacted argv. False-mask rate: the share of clean command lines in which
anything was changed. Over-masked arguments: arguments of secret lines that
changed although they hold no secret, or lost a word of their non-secret
part (`--password=***` keeps "password"; `***` alone would lose it).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from snoopbus.collector.redact import MASK
from tests.support.paths import TESTS

CORPUS = TESTS / "data" / "redact_corpus.txt"

Redact = Callable[[Sequence[str]], list[str] | None]


@dataclass(frozen=True)
class SecretLine:
    line: int
    argv: list[str]
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class Corpus:
    secret: list[SecretLine]
    clean: list[tuple[int, list[str]]]


def load(path: Path = CORPUS) -> Corpus:
    """Reads the corpus; a secret that is not in its argv is a typo: ValueError."""
    secret: list[SecretLine] = []
    clean: list[tuple[int, list[str]]] = []
    section = ""
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        if not raw.strip() or raw.startswith("#"):
            continue
        if raw in ("[secret]", "[clean]"):
            section = raw
        elif raw.startswith("  = "):
            last = secret[-1]
            value = raw[4:]
            if not any(value in a for a in last.argv):
                raise ValueError(f"{path}:{n}: {value!r} is not in the argv of line {last.line}")
            secret[-1] = SecretLine(last.line, last.argv, (*last.secrets, value))
        elif section == "[secret]":
            if secret and not secret[-1].secrets:
                raise ValueError(f"{path}:{secret[-1].line}: a secret line lists no secret")
            secret.append(SecretLine(n, shlex.split(raw), ()))
        elif section == "[clean]":
            clean.append((n, shlex.split(raw)))
        else:
            raise ValueError(f"{path}:{n}: a command line before [secret] or [clean]")
    return Corpus(secret, clean)


_WORD = re.compile(r"[A-Za-z]{3,}")


@dataclass
class Score:
    secrets: int = 0
    caught: int = 0
    clean_lines: int = 0
    misses: list[tuple[int, str, list[str]]] = field(default_factory=list)  # line, secret, out
    false_masks: list[tuple[int, list[str], list[str]]] = field(default_factory=list)
    over_masked: list[tuple[int, str, str]] = field(default_factory=list)  # line, arg, out

    @property
    def recall(self) -> float:
        return self.caught / self.secrets if self.secrets else 1.0

    @property
    def false_mask_rate(self) -> float:
        return len(self.false_masks) / self.clean_lines if self.clean_lines else 0.0


def score(redact: Redact, corpus: Corpus) -> Score:
    s = Score(clean_lines=len(corpus.clean))
    for case in corpus.secret:
        out = redact(case.argv) or case.argv
        joined = "\0".join(out)
        for secret in case.secrets:
            s.secrets += 1
            if secret in joined:
                s.misses.append((case.line, secret, out))
            else:
                s.caught += 1
        for arg, new in zip(case.argv, out, strict=True):
            if arg != new and _lost_words(arg, new, case.secrets):
                s.over_masked.append((case.line, arg, new))
    for line, argv in corpus.clean:
        out = redact(argv)
        if out is not None and out != argv:
            s.false_masks.append((line, argv, out))
    return s


def _lost_words(arg: str, new: str, secrets: tuple[str, ...]) -> bool:
    """Whether masking `arg` lost a word that is not part of a secret."""
    rest = arg
    for secret in secrets:
        rest = rest.replace(secret, " ")
    kept = new.replace(MASK, " ")
    return any(w not in kept for w in _WORD.findall(rest))
