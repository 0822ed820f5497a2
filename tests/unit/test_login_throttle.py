"""The login throttle's arithmetic (api.auth.LoginLimits): who waits, and for how long."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.auth import LoginLimits, RecentFailures, wait_before_attempt_s

LIMITS = LoginLimits()  # 5 free per (username, client), 20 per client, 1 s doubling to 300 s
NOW = datetime(2026, 12, 5, 22, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("failures", "expected_s"),
    [(0, 0.0), (4, 0.0), (5, 1.0), (6, 2.0), (7, 4.0), (13, 256.0), (14, 300.0), (10**6, 300.0)],
    ids=["none", "last-free", "first-wait", "doubles", "doubles-again", "below-cap", "cap",
         "absurd-count-no-overflow"],
)  # fmt: skip
def test_delay_doubles_after_the_free_failures_up_to_the_cap(
    failures: int, expected_s: float
) -> None:
    """No wait for the free failures, then base_delay_s doubling, never beyond max_delay_s."""
    assert LIMITS.delay_s(failures, LIMITS.free_per_pair) == expected_s


def recent(
    *,
    pair: int = 0,
    pair_ago_s: float | None = None,
    client: int = 0,
    client_ago_s: float | None = None,
    username: int = 0,
) -> RecentFailures:
    def at(ago_s: float | None) -> datetime | None:
        return None if ago_s is None else NOW - timedelta(seconds=ago_s)

    return RecentFailures(
        now=NOW,
        pair=pair,
        pair_latest=at(pair_ago_s),
        client=client,
        client_latest=at(client_ago_s),
        username=username,
    )


@pytest.mark.parametrize(
    ("failures", "expected_s"),
    [
        (recent(), 0.0),
        (recent(pair=4, pair_ago_s=0, client=4, client_ago_s=0), 0.0),
        (recent(pair=5, pair_ago_s=0.25, client=5, client_ago_s=0.25), 0.75),
        (recent(pair=6, pair_ago_s=5, client=6, client_ago_s=5), 0.0),
        (recent(pair=1, pair_ago_s=0, client=20, client_ago_s=10), 0.0),
        (recent(pair=1, pair_ago_s=0, client=22, client_ago_s=1), 3.0),
        (recent(client=30, client_ago_s=0), 300.0),
        (recent(username=10_000), 0.0),
        (recent(pair=1, pair_ago_s=0, client=1, client_ago_s=0, username=99), 0.0),
        (recent(pair=1, pair_ago_s=0, client=1, client_ago_s=0, username=100), 1.0),
    ],
    ids=[
        "clean-address",
        "four-typos-free",
        "fifth-failure-waits-the-rest-of-a-second",
        "wait-already-over",
        "spraying-at-the-free-limit",
        "spraying-waits",
        "spraying-capped",
        "username-attacked-elsewhere-clean-address-passes",
        "username-below-ceiling",
        "username-over-ceiling-one-free-failure",
    ],
)
def test_wait_before_attempt(failures: RecentFailures, expected_s: float) -> None:
    """The longest wait of the rules; failures at other addresses never make a clean one wait."""
    assert wait_before_attempt_s(failures, LIMITS) == pytest.approx(expected_s)
