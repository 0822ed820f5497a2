"""Webhook signatures: HMAC-SHA256 over ``<timestamp>.<body>``, the scheme Stripe uses.

The header is ``Carewatch-Signature: t=<unix seconds>,v1=<hex digest>``. The timestamp is
signed with the body, so a captured request replayed later than the receiver's tolerance is
refused. A header may carry several ``v1`` values (a secret being rotated): any match verifies.
Pure: the caller gives the time.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum
from typing import Final

HEADER: Final = "Carewatch-Signature"
SCHEME: Final = "v1"
# Five minutes either way: the receiver's clock may be a little off; a replay much later is not.
DEFAULT_TOLERANCE_S: Final = 300


class Refusal(StrEnum):
    """Why a signature does not verify."""

    MALFORMED = "malformed"  # no t= or no v1=, or t is not a number
    OUTSIDE_TOLERANCE = "outside_tolerance"  # signed too long ago (or too far ahead)
    NO_MATCH = "no_match"  # a different body or secret


def digest(secret: str, timestamp_s: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>`` under ``secret``."""
    message = str(timestamp_s).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp_s: int) -> str:
    """The value of the :data:`HEADER` header for ``body`` sent at ``timestamp_s``."""
    return f"t={timestamp_s},{SCHEME}={digest(secret, timestamp_s, body)}"


def check(
    header: str,
    body: bytes,
    secret: str,
    *,
    now_s: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> Refusal | None:
    """None if ``header`` signs ``body`` with ``secret`` within the tolerance; else why not."""
    timestamps: list[str] = []
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamps.append(value)
        elif key == SCHEME:
            signatures.append(value)
    if len(timestamps) != 1 or not signatures or not timestamps[0].isdigit():
        return Refusal.MALFORMED
    timestamp_s = int(timestamps[0])
    if abs(now_s - timestamp_s) > tolerance_s:
        return Refusal.OUTSIDE_TOLERANCE
    expected = digest(secret, timestamp_s, body)
    # Constant time, and every candidate compared, so the timing says nothing.
    matched = [hmac.compare_digest(expected, candidate) for candidate in signatures]
    return None if any(matched) else Refusal.NO_MATCH


def verify(
    header: str,
    body: bytes,
    secret: str,
    *,
    now_s: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within the tolerance."""
    return check(header, body, secret, now_s=now_s, tolerance_s=tolerance_s) is None
