"""Broker passwords: generated here, shown once, stored only as Mosquitto's ``$7$`` hash.

``$7$<iterations>$<salt b64>$<PBKDF2-SHA512 b64>`` is the format of ``mosquitto_passwd`` in
Mosquitto 2.0, so the hash we keep is exactly the line the broker checks: no second copy of
any password exists anywhere. The iteration count is Mosquitto's default (101). That is low
for passwords people choose, but these are 144-bit random secrets that no dictionary holds,
and the broker pays the hash on every connect, when a whole fleet reconnects after an outage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Final

ITERATIONS: Final = 101
_SALT_BYTES: Final = 12  # what mosquitto_passwd uses
_PASSWORD_BYTES: Final = 18  # 144 bits, 24 URL-safe characters


def new_password() -> str:
    """A random password for one broker identity: 24 characters from [A-Za-z0-9_-]."""
    return secrets.token_urlsafe(_PASSWORD_BYTES)


def hash_password(password: str, *, iterations: int = ITERATIONS) -> str:
    """Mosquitto's ``$7$`` hash of ``password`` (PBKDF2-SHA512, a random salt)."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, password_hash: str) -> bool:
    """True if ``password`` matches a ``$7$`` hash (as Mosquitto would decide)."""
    try:
        _, scheme, iterations, salt, digest = password_hash.split("$")
        if scheme != "7":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt, validate=True), int(iterations)
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
