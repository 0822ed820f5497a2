"""Webhook signatures (HMAC-SHA256 over ``<t>.<body>``) and the retry schedule: pure logic."""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carewatch.settings import Settings
from notifier.retry import RetryPolicy
from notifier.signing import DEFAULT_TOLERANCE_S, Refusal, check, sign, verify

SECRET = "whsec_test-secret-of-enough-length-0123456789"
BODY = b'{"id":1,"event":"alert.opened"}'
T = 1_765_000_000


def test_the_header_is_stripe_shaped_and_the_digest_is_hmac_sha256() -> None:
    """``t=<unix>,v1=<hex>`` where hex is HMAC-SHA256(secret, "<t>.<body>"), as a receiver
    written from the contract alone would compute it."""
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, T) == f"t={T},v1={expected}"


@pytest.mark.parametrize(
    ("header", "body", "secret", "now_s", "expected"),
    [
        pytest.param(sign(SECRET, BODY, T), BODY, SECRET, T, None, id="fresh"),
        pytest.param(sign(SECRET, BODY, T), BODY, SECRET, T + 300, None, id="at-the-tolerance"),
        pytest.param(sign(SECRET, BODY, T), BODY, SECRET, T - 300, None, id="clock-behind"),
        pytest.param(
            sign(SECRET, BODY, T), BODY, SECRET, T + 301, Refusal.OUTSIDE_TOLERANCE, id="replayed"
        ),
        pytest.param(
            sign(SECRET, BODY, T), BODY, SECRET, T - 301, Refusal.OUTSIDE_TOLERANCE, id="future"
        ),
        pytest.param(
            sign(SECRET, BODY, T), BODY + b" ", SECRET, T, Refusal.NO_MATCH, id="body-tampered"
        ),
        pytest.param(
            sign(SECRET, BODY, T), BODY, SECRET + "x", T, Refusal.NO_MATCH, id="other-secret"
        ),
        pytest.param(
            sign(SECRET, BODY, T).replace(f"t={T}", f"t={T + 1}"),
            BODY,
            SECRET,
            T,
            Refusal.NO_MATCH,
            id="timestamp-tampered",
        ),
        pytest.param(
            f"t={T},v1=00,{sign(SECRET, BODY, T).split(',')[1]}",
            BODY,
            SECRET,
            T,
            None,
            id="one-of-several-signatures",
        ),
        pytest.param(f"v1={'0' * 64}", BODY, SECRET, T, Refusal.MALFORMED, id="no-timestamp"),
        pytest.param(f"t={T}", BODY, SECRET, T, Refusal.MALFORMED, id="no-signature"),
        pytest.param("t=soon,v1=00", BODY, SECRET, T, Refusal.MALFORMED, id="bad-timestamp"),
        pytest.param(f"t={T},t={T},v1=00", BODY, SECRET, T, Refusal.MALFORMED, id="two-times"),
        pytest.param("", BODY, SECRET, T, Refusal.MALFORMED, id="empty"),
    ],
)
def test_check(header: str, body: bytes, secret: str, now_s: int, expected: Refusal | None) -> None:
    """A signature verifies only for its body and secret, within the tolerance either way."""
    assert check(header, body, secret, now_s=now_s) == expected
    assert verify(header, body, secret, now_s=now_s) == (expected is None)


def test_the_default_tolerance_is_five_minutes() -> None:
    """The contract's five minutes."""
    assert DEFAULT_TOLERANCE_S == 300


@given(
    body=st.binary(max_size=512), secret=st.text(min_size=1, max_size=64), t=st.integers(0, 2**40)
)
def test_every_signed_body_verifies_and_no_flipped_byte_does(
    body: bytes, secret: str, t: int
) -> None:
    """Round trip for any body, secret and time; any one changed byte of the body is refused."""
    header = sign(secret, body, t)
    assert verify(header, body, secret, now_s=t)
    if body:
        flipped = bytes([body[0] ^ 0x01]) + body[1:]
        assert check(header, flipped, secret, now_s=t) == Refusal.NO_MATCH


def test_retries_double_up_to_the_cap_then_stop() -> None:
    """Wait n is base * 2**(n-1) (capped), stretched by at most a fifth; none after the last."""
    policy = RetryPolicy(max_attempts=6, base_s=10.0, cap_s=60.0)
    rng = random.Random(3)
    waits = [policy.wait_s(attempt, rng) for attempt in range(1, 7)]
    assert waits[-1] is None
    for wait, nominal in zip(waits[:-1], (10.0, 20.0, 40.0, 60.0, 60.0), strict=True):
        assert wait is not None
        assert nominal <= wait <= nominal * 1.2


def test_the_default_schedule_spans_about_an_hour() -> None:
    """The settings' defaults give up after 45 minutes at the earliest, an hour at the latest."""
    settings = Settings()
    policy = RetryPolicy(
        settings.webhook_max_attempts, settings.webhook_retry_base_s, settings.webhook_retry_max_s
    )
    shortest = policy.longest_total_s() / 1.2
    assert 40 * 60 <= shortest <= policy.longest_total_s() <= 60 * 60


@pytest.mark.parametrize(
    ("attempts", "base_s", "cap_s"),
    [(0, 1.0, 2.0), (3, 0.0, 2.0), (3, 2.0, 1.0)],
    ids=["no-attempts", "zero-base", "cap-below-base"],
)
def test_a_senseless_policy_is_refused(attempts: int, base_s: float, cap_s: float) -> None:
    """A configuration error is said at start-up."""
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(attempts, base_s, cap_s)
