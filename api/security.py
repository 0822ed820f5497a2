"""Secrets and their hashes: passwords (Argon2id), random tokens (stored as SHA-256).

Pure apart from the randomness: no database, no FastAPI.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final, Literal

from carewatch.passwords import dummy_hash, hash_password, needs_rehash, verify_password

__all__ = [
    "SESSION_COOKIE",
    "TokenKind",
    "dummy_hash",
    "hash_password",
    "hash_token",
    "needs_rehash",
    "new_token",
    "verify_password",
]

# The web pages' session cookie. Set it HttpOnly, SameSite=Strict and Secure over https.
SESSION_COOKIE: Final = "carewatch_session"

TokenKind = Literal["bearer", "session"]


def new_token() -> str:
    """A fresh random token: 32 bytes (256 bits) from the OS, URL-safe base64."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    """What auth_tokens stores: SHA-256 of the token.

    A plain fast hash is enough here (unlike for passwords): the token has 256 random bits,
    so there is nothing to guess, and every request looks one up.
    """
    return hashlib.sha256(token.encode()).digest()
