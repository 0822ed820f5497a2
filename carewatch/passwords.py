"""Password hashing with Argon2id, shared by the API and the ``carewatch user add`` command.

A module of its own so that bootstrap administration does not import FastAPI. argon2-cffi's
defaults are RFC 9106's second recommendation (Argon2id, t=3, m=64 MiB, p=4): about 50 ms on a
server core, which makes guessing expensive and a login still feel instant.
"""

from __future__ import annotations

import functools
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# Enough to rule out "1234"; the rate limit on logins does the rest.
MIN_PASSWORD_CHARS: Final = 8
MAX_PASSWORD_CHARS: Final = (
    1024  # hashing a megabyte per attempt would be a cheap denial of service
)

_hasher: Final = PasswordHasher()


def hash_password(password: str) -> str:
    """The Argon2id hash of ``password`` in its encoded form (parameters and salt included)."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True if ``password`` matches; False for a mismatch or a hash that is not Argon2."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True if the hash was made with other parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)


@functools.cache
def dummy_hash() -> str:
    """A hash to verify against when the user does not exist, so that an unknown username
    costs as long as a wrong password and timing does not tell which usernames exist."""
    return _hasher.hash("carewatch-no-such-user")
