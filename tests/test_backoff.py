"""Backoff is pure: these tests run without an event loop."""

from __future__ import annotations

import random

import pytest

from rxws import Backoff


def test_ceiling_grows_exponentially_and_caps() -> None:
    b = Backoff(initial=0.5, maximum=4.0, factor=2.0, jitter=0.0)
    assert [b.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert Backoff(maximum=30.0).ceiling(10_000) == 30.0


def test_full_jitter_stays_within_zero_and_the_ceiling() -> None:
    b = Backoff(initial=1.0, maximum=8.0, jitter=1.0)
    rng = random.Random(7)
    delays = [b.delay(3, rng.random) for _ in range(2000)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert min(delays) < 0.5 and max(delays) > 3.5  # spread over the whole range


def test_partial_jitter_keeps_a_floor() -> None:
    b = Backoff(initial=2.0, maximum=2.0, jitter=0.25)
    rng = random.Random(1)
    assert all(1.5 <= b.delay(1, rng.random) <= 2.0 for _ in range(500))


def test_delays_iterator_is_reproducible_with_a_seed() -> None:
    b = Backoff()
    first = [d for d, _ in zip(b.delays(random.Random(3).random), range(5), strict=False)]
    second = [d for d, _ in zip(b.delays(random.Random(3).random), range(5), strict=False)]
    assert first == second


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"initial": -1}, "initial"),
        ({"factor": 0.5}, "factor"),
        ({"jitter": 2}, "jitter"),
        ({"reset_after": -1}, "reset_after"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, float], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        Backoff(**kwargs)


def test_attempts_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        Backoff().delay(0)
