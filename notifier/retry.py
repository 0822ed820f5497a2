"""When a failed delivery is tried again, and when it is given up: a pure schedule.

Doubling waits from a base up to a cap, each stretched by up to a fifth at random so that
deliveries that failed together (a receiver down) do not all come back in the same second.
Not :class:`carewatch.backoff.Backoff`'s full jitter: its waits can be near zero, and a
receiver's operators should be able to tell when the last attempt comes ("about an hour").
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# The largest stretch of a wait (a fifth): enough to spread a burst, the total stays predictable.
JITTER: float = 0.2


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts, and the waits between them."""

    max_attempts: int
    base_s: float
    cap_s: float

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError(f"need max_attempts >= 1 and 0 < base_s <= cap_s, got {self}")

    def wait_s(self, attempts: int, rng: random.Random) -> float | None:
        """The wait after the ``attempts``-th failed attempt; None when that was the last."""
        if attempts >= self.max_attempts:
            return None
        wait = min(self.cap_s, self.base_s * 2.0 ** min(attempts - 1, 32))
        return wait * (1.0 + rng.uniform(0.0, JITTER))

    def longest_total_s(self) -> float:
        """The longest time from the first attempt to the last (every wait fully stretched)."""
        waits = [
            min(self.cap_s, self.base_s * 2.0 ** min(n - 1, 32))
            for n in range(1, self.max_attempts)
        ]
        return sum(waits) * (1.0 + JITTER)
