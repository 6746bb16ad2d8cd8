"""The publisher's adaptive batching: when partial batches are cut (pure)."""

from __future__ import annotations

import pytest

from snoopbus.collector.flush_policy import FlushPolicy

POLICY = FlushPolicy(max_batch=256, eager_inflight=4, linger=0.002, flush_interval=0.02)


def test_nothing_buffered_is_never_due() -> None:
    assert POLICY.wait(age=1.0, fullest=0, queued=0, inflight=0) is None


def test_an_idle_sender_sends_at_once() -> None:
    assert POLICY.wait(age=0.0, fullest=1, queued=0, inflight=3) == 0.0


def test_a_full_batch_goes_at_once_even_when_behind() -> None:
    assert POLICY.wait(age=0.0, fullest=256, queued=10, inflight=64) == 0.0


@pytest.mark.parametrize("age, left", [(0.0, 0.002), (0.0015, 0.0005), (0.003, 0.0)])
def test_a_busy_sender_that_keeps_up_lingers_briefly(age: float, left: float) -> None:
    assert POLICY.wait(age=age, fullest=10, queued=0, inflight=4) == pytest.approx(left)


@pytest.mark.parametrize("age, left", [(0.0, 0.02), (0.015, 0.005), (0.05, 0.0)])
def test_a_sender_behind_lets_batches_fill(age: float, left: float) -> None:
    assert POLICY.wait(age=age, fullest=10, queued=1, inflight=0) == pytest.approx(left)
