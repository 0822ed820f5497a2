"""Capped, jittered reconnect backoff."""

from __future__ import annotations

import random

import pytest

from carewatch.backoff import Backoff


def test_delays_grow_and_stay_under_the_cap() -> None:
    """Each delay is at most min(cap, base * 2**attempt), and never zero."""
    backoff = Backoff(0.5, 8.0, rng=random.Random(7))
    delays = [backoff.next() for _ in range(12)]
    for attempt, delay in enumerate(delays):
        assert 0.05 <= delay <= min(8.0, 0.5 * 2**attempt)


def test_reset_starts_over() -> None:
    """After a success, the next failure waits no longer than the base delay."""
    backoff = Backoff(0.5, 8.0, rng=random.Random(1))
    for _ in range(10):
        backoff.next()
    backoff.reset()
    assert backoff.next() <= 0.5


def test_invalid_bounds_are_refused() -> None:
    """A cap below the base is a configuration error, said at once."""
    with pytest.raises(ValueError, match="base_s"):
        Backoff(2.0, 1.0)
