"""Who is calling: passwords checked with rate limiting, tokens issued, looked up and revoked.

The functions the login page calls as well as the API::

    user = await authenticate(pool, username, password, client)     # None, or LoginRateLimited
    token = await issue_token(pool, user, "session", ttl_s=ttl_s)    # the cookie's value
    user = await user_for_token(pool, token, kind="session", ttl_s=ttl_s)  # None if expired
    await revoke_token(pool, token)                                  # logout

``ttl_s`` is ``Settings.token_ttl_s``: the one place a token's lifetime is decided.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from psycopg.rows import dict_row

from api.errors import LoginRateLimited
from api.pool import Pool
from api.security import (
    TokenKind,
    dummy_hash,
    hash_password,
    hash_token,
    needs_rehash,
    new_token,
    verify_password,
)
from carewatch.db.audit import AuditEntry, Auditor, write_audit
from carewatch.roles import Role

log = logging.getLogger(__name__)

# Longer input than any username can be is cut before it reaches login_failures.
_MAX_NAME_CHARS: Final = 64
_MAX_CLIENT_CHARS: Final = 64


@dataclass(frozen=True, slots=True)
class UserContext:
    """The caller, as every query needs it: organisation and sites scope everything."""

    user_id: int
    username: str
    org_id: str
    role: Role
    # None: every site of the organisation; otherwise only these.
    site_ids: frozenset[str] | None
    language: str

    @property
    def site_list(self) -> list[str] | None:
        """``site_ids`` as a query parameter (text[] or NULL)."""
        return None if self.site_ids is None else sorted(self.site_ids)

    def auditor(self, client: str | None) -> Auditor:
        """The caller as the audit log names them, acting from ``client``."""
        return Auditor(username=self.username, user_id=self.user_id, client=client)


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """More than this many failed logins inside the window refuse even the right password.

    Per username: 5 guesses per 15 min slow an online attack down to uselessness while a
    person who mistyped is locked out for minutes, not for good. Per client address: 20, so
    one address cannot try one password against many usernames, and a care home behind one
    NAT is not locked out by a single user's typos.
    """

    per_username: int = 5
    per_client: int = 20
    window_s: float = 15 * 60.0


LOGIN_LIMITS: Final = LoginLimits()

_USER_COLUMNS: Final = """
    u.id AS user_id, u.username, u.org_id, u.role, u.language, u.disabled,
    (SELECT array_agg(us.site_id) FROM user_sites us WHERE us.user_id = u.id) AS site_ids
"""


# --- statements (f-strings only join the constant fragment above; every value is a parameter)

# Recorded as a failure before the password is checked, and only taken back on success:
# parallel guesses count against each other instead of all passing the check before any of
# them is recorded.
_RECORD_ATTEMPT: Final = (
    "INSERT INTO login_failures (username, client) VALUES (%s, %s) RETURNING id"
)

# The failure that must age out of the window before the next attempt is allowed: the N-th
# most recent one, if there are N (the limit) already.
_BLOCKING_FAILURES: Final = """
    SELECT now() AS now,
      (SELECT failed_at FROM login_failures
        WHERE username = %(name)s AND failed_at > now() - %(window)s AND id <> %(id)s
        ORDER BY failed_at DESC OFFSET %(per_username)s - 1 LIMIT 1) AS by_username,
      (SELECT failed_at FROM login_failures
        WHERE client = %(client)s AND failed_at > now() - %(window)s AND id <> %(id)s
        ORDER BY failed_at DESC OFFSET %(per_client)s - 1 LIMIT 1) AS by_client
"""

_FORGET_ATTEMPT: Final = "DELETE FROM login_failures WHERE id = %s"

_USER_BY_NAME: Final = f"SELECT {_USER_COLUMNS}, u.password_hash FROM users u WHERE u.username = %s"  # noqa: S608 - constant fragments only

_FORGET_FAILURES: Final = "DELETE FROM login_failures WHERE username = %s"

_REHASH: Final = "UPDATE users SET password_hash = %s WHERE id = %s"

_ISSUE: Final = """
    INSERT INTO auth_tokens (token_hash, user_id, kind, expires_at)
    VALUES (%s, %s, %s, now() + %s)
"""

_REVOKE: Final = "DELETE FROM auth_tokens WHERE token_hash = %s"

# A session token's expiry slides: each use extends it by the token lifetime.
_USE: Final = f"""
    UPDATE auth_tokens t
       SET last_used_at = now(),
           expires_at = CASE WHEN t.kind = 'session' THEN now() + %(ttl)s ELSE t.expires_at END
      FROM users u
     WHERE t.token_hash = %(hash)s AND t.expires_at > now()
       AND (%(kind)s::text IS NULL OR t.kind = %(kind)s)
       AND u.id = t.user_id AND NOT u.disabled
    RETURNING {_USER_COLUMNS}
"""  # noqa: S608 - constant fragments only

_DELETE_EXPIRED: Final = "DELETE FROM auth_tokens WHERE expires_at <= now()"

# Failures older than any window: they can no longer refuse a login.
_DELETE_OLD_FAILURES: Final = (
    "DELETE FROM login_failures WHERE failed_at < now() - interval '1 day'"
)


def _user_context(row: dict[str, Any]) -> UserContext:
    site_ids = row["site_ids"]
    return UserContext(
        user_id=row["user_id"],
        username=row["username"],
        org_id=row["org_id"],
        role=Role(row["role"]),
        site_ids=None if site_ids is None else frozenset(site_ids),
        language=row["language"],
    )


async def authenticate(
    pool: Pool, username: str, password: str, client: str, *, limits: LoginLimits = LOGIN_LIMITS
) -> UserContext | None:
    """The user if the password is right; None if not (unknown user, wrong password, disabled).

    Raises LoginRateLimited when the username or the client address failed too often
    recently, whatever the password. ``client`` is the caller's address (request.client.host).
    """
    name = username.strip().lower()[:_MAX_NAME_CHARS]
    client = client[:_MAX_CLIENT_CHARS]
    window = timedelta(seconds=limits.window_s)
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_RECORD_ATTEMPT, (name, client))
        attempt = await cur.fetchone()
        assert attempt is not None
        attempt_id = attempt["id"]
        await cur.execute(
            _BLOCKING_FAILURES,
            {
                "name": name,
                "client": client,
                "window": window,
                "id": attempt_id,
                "per_username": limits.per_username,
                "per_client": limits.per_client,
            },
        )
        limit = await cur.fetchone()
        assert limit is not None
        blocking = [t for t in (limit["by_username"], limit["by_client"]) if t is not None]
        if blocking:
            # A refused attempt is not a failure of its own: it must not extend the lockout.
            await cur.execute(_FORGET_ATTEMPT, (attempt_id,))
            log.warning("login refused, rate limited: username %r from %s", name, client)
            raise LoginRateLimited((max(blocking) + window - limit["now"]).total_seconds())
        await cur.execute(_USER_BY_NAME, (name,))
        row = await cur.fetchone()
    # Argon2 takes tens of milliseconds of CPU: off the event loop, and with no pooled
    # connection held meanwhile. An unknown user is checked against a dummy hash so that
    # the answer takes as long as for a wrong password.
    stored_hash = row["password_hash"] if row is not None else dummy_hash()
    matches = await asyncio.to_thread(verify_password, stored_hash, password)
    if row is None or not matches or row["disabled"]:
        log.info("login failed: username %r from %s", name, client)
        return None
    user = _user_context(row)
    rehashed = (
        await asyncio.to_thread(hash_password, password) if needs_rehash(stored_hash) else None
    )
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(_FORGET_FAILURES, (name,))
        await write_audit(
            conn, user.auditor(client), [AuditEntry(action="login", org_id=user.org_id)]
        )
        if rehashed is not None:
            await conn.execute(_REHASH, (rehashed, user.user_id))
    return user


async def issue_token(pool: Pool, user: UserContext, kind: TokenKind, *, ttl_s: float) -> str:
    """A new token for ``user``: ``bearer`` for API clients, ``session`` for the cookie.

    It expires ``ttl_s`` after issue (a session token: after its last use). Only its SHA-256 is
    stored; the token itself exists only in the answer.
    """
    token = new_token()
    async with pool.connection() as conn:
        await conn.execute(
            _ISSUE, (hash_token(token), user.user_id, kind, timedelta(seconds=ttl_s))
        )
    return token


async def revoke_token(pool: Pool, token: str) -> None:
    """Forget the token (logout); nothing happens if it does not exist."""
    async with pool.connection() as conn:
        await conn.execute(_REVOKE, (hash_token(token),))


async def user_for_token(
    pool: Pool, token: str, *, kind: TokenKind | None = None, ttl_s: float
) -> UserContext | None:
    """The token's user, or None if it is unknown, expired, revoked, of another kind, or its
    user is disabled. A session token's expiry slides: each use extends it by ``ttl_s``."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _USE,
            {"hash": hash_token(token), "kind": kind, "ttl": timedelta(seconds=ttl_s)},
        )
        row = await cur.fetchone()
    return None if row is None else _user_context(row)


async def delete_expired_tokens(pool: Pool) -> int:
    """Drop expired tokens and login failures older than a day; how many tokens went."""
    async with pool.connection() as conn:
        cursor = await conn.execute(_DELETE_EXPIRED)
        await conn.execute(_DELETE_OLD_FAILURES)
    return cursor.rowcount
