"""What the login page says a throttled caregiver must wait: seconds while the waits are short."""

from __future__ import annotations

import pytest

from dashboards.login import _wait_text


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(1, "1 s"), (10, "10 s"), (59, "59 s"), (60, "1 min"), (61, "2 min"), (300, "5 min")],
)
def test_the_wait_is_never_said_shorter_than_it_is(seconds: int, said: str) -> None:
    assert _wait_text(seconds) == said
