"""Redaction measured on tests/data/redact_corpus.txt: realistic command lines
with secrets (each secret listed) and without. The thresholds are what the
redactor reaches (tests/bench/redaction.py prints the figures and every miss);
a change that loses recall or masks clean commands fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from snoopbus.collector.redact import Redactor
from tests.support.paths import ROOT
from tests.support.redact_corpus import Corpus, Score, load, score


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return load()


@pytest.fixture(scope="module")
def result(corpus: Corpus) -> Score:
    return score(Redactor(), corpus)


def test_the_corpus_is_large_enough_to_measure(corpus: Corpus) -> None:
    assert len(corpus.secret) >= 300 and len(corpus.clean) >= 300


def test_recall(result: Score) -> None:
    # 355 of 358: composer's http-basic pair, lftp's and expect's own scripts are missed
    assert result.recall >= 0.99, result.misses


def test_false_masks(result: Score) -> None:
    # 1 of 342: an ingress annotation auth-secret=NAME names a Secret object
    assert result.false_mask_rate <= 0.003, result.false_masks


def test_no_argument_loses_more_than_its_secret(result: Score) -> None:
    assert result.over_masked == []


def test_every_argv_keeps_its_length(corpus: Corpus) -> None:
    r = Redactor()
    for argv in [c.argv for c in corpus.secret] + [a for _, a in corpus.clean]:
        out = r(argv)
        assert out is None or len(out) == len(argv)


def test_a_typo_in_the_corpus_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "c.txt"
    bad.write_text("[secret]\nmysql -pS3cret\n  = S3crte\n")
    with pytest.raises(ValueError, match="'S3crte' is not in the argv of line 2"):
        load(bad)


def test_the_benchmark_prints_its_figures() -> None:
    out = subprocess.run([sys.executable, "-m", "tests.bench.redaction", "--rounds", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for line in ("recall", "false masks", "miss  ", "µs per argv", "8 KiB argv"):
        assert line in out.stdout, out.stdout
