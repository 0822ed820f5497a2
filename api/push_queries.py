"""Push subscriptions (+#12): each caregiver's (or technician's) browsers that get alarms
while no board is open.

A subscription is the caller's own: created, replaced and deleted for the signed-in user only,
never listed for anyone else. Its endpoint is the push service's capability URL for one
browser, unique across users: a browser's subscription registered by another user is refused
(409), so nobody can take over another caregiver's alarms by posting their endpoint. The board
unsubscribes the browser's old subscription before it makes a new one, so a phone handed to
the next shift gets a new endpoint (the old one answers 410 and is disabled by the notifier).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Final
from urllib.parse import urlsplit

from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from api.auth import UserContext
from api.pool import Pool
from api.schemas import RequestBody

ENDPOINT_MAX: Final = 2000  # migration 0010's CHECK
USER_AGENT_MAX: Final = 300
_LOOPBACK_NAMES: Final = frozenset({"localhost"})

# base64url, as PushSubscription.toJSON() gives them (padding tolerated): 65 and 16 bytes.
P256dh = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{86,88}={0,2}$")]
AuthSecret = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{21,24}={0,2}$")]
Endpoint = Annotated[str, Field(max_length=ENDPOINT_MAX, pattern=r"^https?://[^\s/]+\S*$")]


class PushKeys(RequestBody):
    """The browser's keys: its P-256 public key and the auth secret (RFC 8291)."""

    p256dh: P256dh
    auth: AuthSecret


class PushSubscriptionCreate(RequestBody):
    """A browser's ``PushSubscription.toJSON()`` (``expirationTime`` is allowed and ignored)."""

    endpoint: Endpoint
    keys: PushKeys
    expirationTime: int | None = None  # noqa: N815 - the browser's name


class PushSubscriptionDelete(RequestBody):
    """Which of the caller's subscriptions to delete."""

    endpoint: Endpoint


class PushSubscriptionPublic(BaseModel):
    """A subscription as its owner sees it (the keys are the browser's, not echoed)."""

    id: int
    endpoint: str


class VapidPublicKey(BaseModel):
    """The key browsers subscribe with (``applicationServerKey``), base64url."""

    public_key: str


class EndpointTakenError(Exception):
    """The endpoint is another user's subscription."""

    def __init__(self) -> None:
        super().__init__("this push endpoint is registered by another user")


def endpoint_refusal(endpoint: str, *, allow_http_loopback: bool) -> str | None:
    """Why ``endpoint`` may not be pushed to, or None. Only https, but for loopback addresses
    when allowed (a local push service in tests): an http endpoint would carry the VAPID token
    in clear, and a push to an address of our own network is not a push service's."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if not host:
        return "the endpoint names no host"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and allow_http_loopback and _is_loopback(host):
        return None
    return "push endpoints must be https"


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- statements ---------------------------------------------------------------------------------

# A browser subscribing again (new keys, or after being disabled) replaces its row; another
# user's endpoint is left alone and nothing is returned.
_UPSERT: Final = """
    INSERT INTO push_subscriptions AS p (user_id, endpoint, p256dh, auth, user_agent)
    VALUES (%(user_id)s, %(endpoint)s, %(p256dh)s, %(auth)s, %(user_agent)s)
    ON CONFLICT (endpoint) DO UPDATE
       SET p256dh = excluded.p256dh, auth = excluded.auth, user_agent = excluded.user_agent,
           created_at = now(), failures = 0, disabled_at = NULL
     WHERE p.user_id = excluded.user_id
    RETURNING id, endpoint
"""

_DELETE: Final = """
    DELETE FROM push_subscriptions WHERE user_id = %(user_id)s AND endpoint = %(endpoint)s
"""


async def subscribe(
    pool: Pool, user: UserContext, subscription: PushSubscriptionCreate, *, user_agent: str
) -> PushSubscriptionPublic:
    """Store (or renew) the caller's subscription; :class:`EndpointTakenError` if it is
    another user's."""
    params = {
        "user_id": user.user_id,
        "endpoint": subscription.endpoint,
        "p256dh": subscription.keys.p256dh,
        "auth": subscription.keys.auth,
        "user_agent": user_agent[:USER_AGENT_MAX],
    }
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_UPSERT, params)
        row = await cur.fetchone()
    if row is None:
        raise EndpointTakenError
    return PushSubscriptionPublic.model_validate(row)


async def unsubscribe(pool: Pool, user: UserContext, endpoint: str) -> bool:
    """Delete the caller's subscription at ``endpoint``; False if the caller has none there."""
    async with pool.connection() as conn:
        cursor = await conn.execute(_DELETE, {"user_id": user.user_id, "endpoint": endpoint})
    return cursor.rowcount > 0
