"""The deployment's VAPID key (RFC 8292): read from the settings, its public half for browsers,
and the ``Authorization`` header that signs one push.

The API hands browsers the public key (their ``applicationServerKey``); the notifier signs each
push with the private key; a push service accepts a push for a subscription only when the
signature is by the key the subscription was made with. So both read the same setting.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final
from urllib.parse import urlsplit

from py_vapid import Vapid

# RFC 8292 caps a token's life at 24 hours; 12 is what push libraries use, and a token is
# made per push anyway.
TOKEN_LIFETIME_S: Final = 12 * 3600


class VapidKeyError(ValueError):
    """``CAREWATCH_VAPID_PRIVATE_KEY`` is not a P-256 private key (PEM or base64url raw)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"CAREWATCH_VAPID_PRIVATE_KEY is not a usable P-256 key: {reason}")


def load(private_key: str) -> Vapid:
    """The key pair from the setting: PEM (PKCS#8 or SEC1), its body on one line (base64 DER),
    or the raw key in base64url."""
    text = private_key.strip()
    if not text:
        raise VapidKeyError("empty")
    try:
        if text.startswith("-----BEGIN"):
            return Vapid.from_pem(text.encode())
        return Vapid.from_string(text)
    except (ValueError, TypeError, binascii.Error) as error:
        raise VapidKeyError(str(error) or type(error).__name__) from None


def public_key(vapid: Vapid) -> str:
    """The public key as browsers take it: the uncompressed P-256 point, base64url unpadded."""
    numbers = vapid.public_key.public_numbers()
    raw = b"\x04" + int(numbers.x).to_bytes(32, "big") + int(numbers.y).to_bytes(32, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def origin(endpoint: str) -> str:
    """A push endpoint's origin: the ``aud`` of its VAPID token."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


def authorization(vapid: Vapid, endpoint: str, subject: str, *, now_s: int) -> str:
    """The ``Authorization: vapid t=<JWT>,k=<public key>`` value for a push to ``endpoint``."""
    claims = {"aud": origin(endpoint), "exp": now_s + TOKEN_LIFETIME_S, "sub": subject}
    header: str = vapid.sign(claims)["Authorization"]
    return header
