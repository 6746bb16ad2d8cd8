"""proto/backoff.py: the one exponential back-off, as each caller parametrises it."""

from __future__ import annotations

import math
import random

import pytest

from snoopbus.proto.backoff import backoff_delay


def test_none_before_the_first_failure() -> None:
    assert backoff_delay(0, 1.0, 30.0) == 0.0
    assert backoff_delay(-3, 1.0, 30.0, jitter=True) == 0.0


@pytest.mark.parametrize(
    ("base", "cap", "expected"),
    [
        (0.05, 1.0, [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]),  # publisher: a message's retry
        (0.5, 30.0, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]),  # archiver: a failed commit
        (1.0, 30.0, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]),  # up: a child's restart
        (1.0, math.inf, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),  # alert webhook: no cap
    ],
)
def test_doubles_from_base_up_to_cap(base: float, cap: float, expected: list[float]) -> None:
    assert [backoff_delay(n, base, cap) for n in range(1, 8)] == expected


def test_jitter_stays_within_half_and_whole() -> None:
    rng = random.Random(7)
    for n in range(1, 12):
        ceiling = min(30.0, 0.2 * 2 ** (n - 1))
        draws = [backoff_delay(n, 0.2, 30.0, jitter=True, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in draws)
        assert len(set(draws)) > 100  # spread out, not one value


def test_many_failures_stay_at_the_cap() -> None:
    assert backoff_delay(10_000, 0.5, 30.0) == 30.0  # no OverflowError from 2.0 ** 9999
