"""Exponential reconnect backoff: growth, cap, jitter bounds, reset."""
from __future__ import annotations

import random

import pytest

from streamcap.util.backoff import Backoff


@pytest.mark.parametrize(
    ("initial_s", "max_s", "factor", "expected"),
    [
        (1.0, 30.0, 2.0, [1, 2, 4, 8, 16, 30, 30, 30]),
        (0.5, 4.0, 2.0, [0.5, 1, 2, 4, 4, 4]),
        (1.0, 1.0, 2.0, [1, 1, 1]),
        (2.0, 100.0, 3.0, [2, 6, 18, 54, 100, 100]),
        (1.0, 5.0, 1.0, [1, 1, 1, 1]),
    ],
)
def test_base_delays_grow_exponentially_up_to_the_cap(initial_s, max_s, factor, expected):
    # given
    backoff = Backoff(initial_s, max_s, factor=factor, jitter=0.0)

    # when
    delays = [backoff.next_delay() for _ in expected]

    # then
    assert delays == pytest.approx(expected), f"initial={initial_s} max={max_s} factor={factor}"


@pytest.mark.parametrize("jitter", [0.1, 0.25, 0.5])
def test_jittered_delays_stay_within_bounds_and_never_exceed_the_cap(jitter):
    # given
    backoff = Backoff(1.0, 20.0, jitter=jitter, rng=random.Random(7))

    # when
    delays = [(backoff.base_delay(backoff.attempt), backoff.next_delay()) for _ in range(200)]

    # then
    for base, delay in delays:
        assert base * (1 - jitter) <= delay <= base, f"delay {delay} outside [{base * (1 - jitter)}, {base}]"
        assert delay <= 20.0
    capped = [delay for base, delay in delays if base == 20.0]
    assert len(set(capped)) > 100, "jitter should spread retries of cameras that fail together"


def test_reset_starts_again_from_the_initial_delay():
    # given
    backoff = Backoff(1.0, 30.0, jitter=0.0)
    for _ in range(6):
        backoff.next_delay()

    # when
    backoff.reset()

    # then
    assert backoff.next_delay() == 1.0
    assert backoff.next_delay() == 2.0


def test_huge_attempt_counts_do_not_overflow():
    # given
    backoff = Backoff(1.0, 30.0, jitter=0.0)

    # when
    base = backoff.base_delay(10_000)

    # then
    assert base == 30.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial_s": 0.0}, "initial_s"),
        ({"initial_s": 5.0, "max_s": 1.0}, "max_s"),
        ({"factor": 0.5}, "factor"),
        ({"jitter": 1.0}, "jitter"),
    ],
)
def test_bad_parameters_are_refused(kwargs, message):
    # when / then
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)
