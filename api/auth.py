"""Who is calling: passwords checked with login throttling, tokens issued, looked up and revoked.

The functions the login page calls as well as the API::

    limits = LoginLimits.from_settings(settings)
    user = await authenticate(pool, username, password, client, limits=limits)  # None: 401
    token = await issue_token(pool, user, "session", ttl_s=ttl_s)    # the cookie's value
    user = await user_for_token(pool, token, kind="session", ttl_s=ttl_s)  # None if expired
    await revoke_token(pool, token)                                  # logout

``authenticate`` raises LoginRateLimited (429) while the throttle makes the caller wait.
``ttl_s`` is ``Settings.token_ttl_s``: the one place a token's lifetime is decided.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
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
from carewatch.settings import Settings

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
    """How failed logins slow further attempts down, without letting anyone lock a user out.

    A lockout per username (the old rule) handed an attacker the power to keep a known
    caregiver off the board for a night shift. Failures are therefore counted where they come
    from: per (username, client address) and per client address, over ``window_s``. Past the
    free ones, the next attempt must wait ``base_delay_s`` after the latest failure, doubling
    with each further failure up to ``max_delay_s``: a person who mistyped waits seconds, a
    guesser from one address gets a few dozen tries an hour. The right password from an
    address that has not failed is never refused because of failures from other addresses.

    - ``free_per_pair``: one person's typos at one place.
    - ``free_per_client``: across usernames (password spraying); high, because a care home
      behind one NAT is many people at one address, and a success forgets that person's own
      failures there.
    - ``username_ceiling``: failures for one username from all addresses together. Past it (a
      guess distributed over many addresses) each address gets only ``free_when_targeted``
      free failures for that username before its delays start: it only slows, and still never
      touches an address that has not failed.
    """

    free_per_pair: int = 5
    free_per_client: int = 20
    username_ceiling: int = 100
    free_when_targeted: int = 1
    base_delay_s: float = 1.0
    max_delay_s: float = 5 * 60.0
    window_s: float = 60 * 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginLimits:
        """The limits with the timing knobs of ``settings`` (tests shrink or stretch them)."""
        return cls(
            base_delay_s=settings.login_backoff_base_s, max_delay_s=settings.login_backoff_max_s
        )

    def delay_s(self, failures: int, free: int) -> float:
        """How long after the latest of ``failures`` the next attempt must wait (0: free)."""
        if failures < free:
            return 0.0
        # The exponent is capped before it can overflow a float; the cap is hit long before.
        return min(self.base_delay_s * 2.0 ** min(failures - free, 64), self.max_delay_s)


LOGIN_LIMITS: Final = LoginLimits()


@dataclass(frozen=True, slots=True)
class RecentFailures:
    """Failed logins inside the window that concern one attempt (the attempt itself excluded)."""

    now: datetime
    pair: int  # this username from this client address
    pair_latest: datetime | None
    client: int  # any username from this client address
    client_latest: datetime | None
    username: int  # this username from any address

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RecentFailures:
        """From the columns of ``_RECENT_FAILURES``."""
        return cls(
            now=row["now"],
            pair=row["pair"],
            pair_latest=row["pair_latest"],
            client=row["client"],
            client_latest=row["client_latest"],
            username=row["username"],
        )


def wait_before_attempt_s(failures: RecentFailures, limits: LoginLimits) -> float:
    """Seconds this attempt must still wait (0: it is checked): the longest of the rules."""
    targeted = failures.username >= limits.username_ceiling
    free_pair = limits.free_when_targeted if targeted else limits.free_per_pair
    waits = [0.0]
    if failures.pair_latest is not None:
        until = failures.pair_latest + timedelta(seconds=limits.delay_s(failures.pair, free_pair))
        waits.append((until - failures.now).total_seconds())
    if failures.client_latest is not None:
        delay_s = limits.delay_s(failures.client, limits.free_per_client)
        until = failures.client_latest + timedelta(seconds=delay_s)
        waits.append((until - failures.now).total_seconds())
    return max(waits)


_USER_COLUMNS: Final = """
    u.id AS user_id, u.username, u.org_id, u.role, u.language, u.disabled,
    (SELECT array_agg(us.site_id) FROM user_sites us WHERE us.user_id = u.id) AS site_ids
"""


# --- statements (f-strings only join the constant fragment above; every value is a parameter)

# Recorded as a failure (and committed) before the password is checked, and only taken back
# on success: parallel guesses see and count against each other instead of all passing the
# check before any of them is recorded.
_RECORD_ATTEMPT: Final = (
    "INSERT INTO login_failures (username, client) VALUES (%s, %s) RETURNING id"
)

# Everything the throttle weighs, in one pass over the two indexes (username, failed_at) and
# (client, failed_at).
_RECENT_FAILURES: Final = """
    SELECT now() AS now,
      count(*) FILTER (WHERE username = %(name)s AND client = %(client)s) AS pair,
      max(failed_at) FILTER (WHERE username = %(name)s AND client = %(client)s) AS pair_latest,
      count(*) FILTER (WHERE client = %(client)s) AS client,
      max(failed_at) FILTER (WHERE client = %(client)s) AS client_latest,
      count(*) FILTER (WHERE username = %(name)s) AS username
    FROM login_failures
    WHERE (username = %(name)s OR client = %(client)s)
      AND failed_at > now() - %(window)s AND id <> %(id)s
"""

_FORGET_ATTEMPT: Final = "DELETE FROM login_failures WHERE id = %s"

_USER_BY_NAME: Final = f"SELECT {_USER_COLUMNS}, u.password_hash FROM users u WHERE u.username = %s"  # noqa: S608 - constant fragments only

# Only this person's failures at this address: a success elsewhere must not reset the
# delays of someone guessing the same username from another address.
_FORGET_FAILURES: Final = "DELETE FROM login_failures WHERE username = %s AND client = %s"

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

    Raises LoginRateLimited, whatever the password, while this username failed too often from
    this client address, or this address failed too often across usernames (see
    :class:`LoginLimits`). ``client`` is the caller's address (:func:`api.deps.client_address`).
    """
    name = username.strip().lower()[:_MAX_NAME_CHARS]
    client = client[:_MAX_CLIENT_CHARS]
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_RECORD_ATTEMPT, (name, client))
        attempt = await cur.fetchone()
        assert attempt is not None
        attempt_id = attempt["id"]
        await conn.commit()  # visible to parallel attempts before any of them is judged
        await cur.execute(
            _RECENT_FAILURES,
            {
                "name": name,
                "client": client,
                "window": timedelta(seconds=limits.window_s),
                "id": attempt_id,
            },
        )
        counts = await cur.fetchone()
        assert counts is not None
        wait_s = wait_before_attempt_s(RecentFailures.from_row(counts), limits)
        if wait_s > 0:
            # A refused attempt is not a failure of its own: it must not lengthen the wait.
            await cur.execute(_FORGET_ATTEMPT, (attempt_id,))
            await conn.commit()
            log.warning("login refused, throttled: username %r from %s", name, client)
            raise LoginRateLimited(wait_s)
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
        await conn.execute(_FORGET_FAILURES, (name, client))
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
