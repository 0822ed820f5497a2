"""Capped exponential backoff with full jitter, so a fleet of gateways does not retry in step."""

from __future__ import annotations

import random


class Backoff:
    """``next()`` gives the next delay in seconds: uniform in [0, min(cap, base * 2**attempt)]."""

    def __init__(self, base_s: float, cap_s: float, *, rng: random.Random | None = None) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError(f"need 0 < base_s <= cap_s, got {base_s=} {cap_s=}")
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    def next(self) -> float:
        """The delay before the next attempt, in seconds; counts the attempt."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 32))
        self.attempt += 1
        # Never retry in a hot loop: at least the base delay's tenth.
        return max(self.base_s / 10, self._rng.uniform(0, ceiling))

    def reset(self) -> None:
        """Start again from the base delay (after a success)."""
        self.attempt = 0
