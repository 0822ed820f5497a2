"""Secrets and their hashes: passwords (Argon2id), random tokens (stored as SHA-256); and the
security headers every answer carries (:class:`SecurityHeaders`).

Pure apart from the randomness: no database, no FastAPI (the middleware is plain ASGI).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final, Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carewatch.passwords import dummy_hash, hash_password, needs_rehash, verify_password

__all__ = [
    "RESPONSE_HEADERS",
    "SESSION_COOKIE",
    "SecurityHeaders",
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


# On every answer, API and pages alike. nosniff: a browser takes the Content-Type as given and
# never guesses (a JSON answer quoting a client's text is never run as a script or a page).
# The pages add their Content-Security-Policy (dashboards.kit); an answer that already has one
# of these headers keeps its own.
RESPONSE_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"x-content-type-options", b"nosniff"),
)


class SecurityHeaders:
    """Pure ASGI middleware: adds :data:`RESPONSE_HEADERS` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, adding the headers to the start of the response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(item for item in RESPONSE_HEADERS if item[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
