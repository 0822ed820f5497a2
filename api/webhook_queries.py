"""The webhooks resource (+#12): an organisation's outgoing webhooks and their delivery log.

Every statement is scoped by the caller's organisation: a webhook of another organisation is
never read, and the routes answer 404 for it. The secret is made here, returned once by
:func:`create_webhook` and never again (the notifier reads it to sign). Creating and deleting
a webhook is audited in the same transaction. The events and their payload are the contract's
(docs/contract.md, "Webhooks"); the notifier (``notifier/``) delivers them.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Final, Literal, get_args

from psycopg.rows import dict_row
from pydantic import AfterValidator, BaseModel, Field

from api.auth import UserContext
from api.pool import Pool
from api.schemas import RequestBody
from carewatch.db.audit import AuditEntry, write_audit
from devices.catalog import Rule
from devices.supervision import ALERT_SEVERITY

# What a webhook may ask for; migration 0009's CHECK holds the same list.
WebhookEvent = Literal["alert.opened", "alert.updated", "alert.resolved", "alert.call_out"]
WEBHOOK_EVENTS: Final[tuple[str, ...]] = get_args(WebhookEvent)
# 32 random bytes: as strong as the HMAC-SHA256 it keys.
SECRET_BYTES: Final = 32
# Recognisable in a receiver's configuration and by a leak scan; not itself a secret.
SECRET_PREFIX: Final = "whsec_"  # noqa: S105

DeliveryState = Literal["pending", "delivered", "dead"]

# Every rule an alert can carry: the device rules and the night checks' (devices.supervision).
KNOWN_RULES: Final = frozenset({rule.value for rule in Rule} | set(ALERT_SEVERITY))


def _known_rule(value: str) -> str:
    if value not in KNOWN_RULES:
        raise ValueError(f"unknown rule {value!r}")
    return value


class WebhookCreate(RequestBody):
    """A new webhook: where to POST, and which events. Alerts of the response rules are
    always sent; ``rules`` adds other rules' alerts (e.g. ``device_offline``)."""

    url: Annotated[str, Field(max_length=2000, pattern=r"^https?://[^\s/]+\S*$")]
    events: Annotated[list[WebhookEvent], Field(min_length=1, max_length=len(WEBHOOK_EVENTS))]
    rules: Annotated[
        list[Annotated[str, AfterValidator(_known_rule)]], Field(max_length=len(KNOWN_RULES))
    ] = Field(default_factory=list)
    description: Annotated[str, Field(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = ""


class WebhookPublic(BaseModel):
    """A webhook as admins see it (never its secret)."""

    id: int
    url: str
    events: list[str]
    rules: list[str]
    description: str
    enabled: bool
    created_by: str
    created_at: datetime


class WebhookCreated(WebhookPublic):
    """A webhook just created, with its signing secret: shown this once."""

    secret: str


class WebhookDelivery(BaseModel):
    """One entry of a webhook's delivery log."""

    id: int
    event: str
    alert_id: int
    state: DeliveryState
    attempts: int
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None  # null once delivered or dead
    last_status: int | None  # the receiver's HTTP status of the last attempt
    last_error: str | None
    delivered_at: datetime | None
    dead_at: datetime | None


class DeliverySummary(BaseModel):
    """A webhook's last delivery, and its deliveries of the last 24 hours by state."""

    webhook_id: int
    last_state: DeliveryState
    last_status: int | None
    last_error: str | None
    last_created_at: datetime
    delivered: int
    pending: int  # still being tried: not yet delivered, not given up
    dead: int


_COLUMNS: Final = "id, url, events, rules, description, enabled, created_by, created_at"

_CREATE: Final = f"""
    INSERT INTO webhooks (org_id, url, secret, events, rules, description, created_by)
    VALUES (%(org_id)s, %(url)s, %(secret)s, %(events)s, %(rules)s, %(description)s, %(by)s)
    RETURNING {_COLUMNS}, secret
"""  # noqa: S608 - constant fragments only

_LIST: Final = f"""
    SELECT {_COLUMNS} FROM webhooks
     WHERE org_id = %(org_id)s AND deleted_at IS NULL ORDER BY id
"""  # noqa: S608 - constant fragments only

_DELETE: Final = """
    UPDATE webhooks SET deleted_at = now(), enabled = false
     WHERE id = %(id)s AND org_id = %(org_id)s AND deleted_at IS NULL
    RETURNING url
"""

# Nothing more goes to a deleted webhook: what waited is given up, and says why.
_GIVE_UP_PENDING: Final = """
    UPDATE webhook_deliveries SET dead_at = now(), last_error = 'webhook deleted'
     WHERE webhook_id = %(id)s AND delivered_at IS NULL AND dead_at IS NULL
"""

_VISIBLE: Final = (
    "SELECT 1 FROM webhooks WHERE id = %(id)s AND org_id = %(org_id)s AND deleted_at IS NULL"
)

# A delivery's DeliveryState, from its row ``d``.
_STATE: Final = """CASE WHEN d.delivered_at IS NOT NULL THEN 'delivered'
                WHEN d.dead_at IS NOT NULL THEN 'dead' ELSE 'pending' END"""

_DELIVERIES: Final = f"""
    SELECT d.id, d.event, d.alert_id, d.attempts, d.created_at, d.last_attempt_at,
           CASE WHEN d.delivered_at IS NULL AND d.dead_at IS NULL THEN d.next_attempt_at END
               AS next_attempt_at,
           d.last_status, d.last_error, d.delivered_at, d.dead_at, {_STATE} AS state
      FROM webhook_deliveries d
      JOIN webhooks w ON w.id = d.webhook_id
     WHERE d.webhook_id = %(id)s AND w.org_id = %(org_id)s AND w.deleted_at IS NULL
       AND (%(state)s::text IS NULL OR {_STATE} = %(state)s::text)
     ORDER BY d.id DESC
     LIMIT %(limit)s
"""  # noqa: S608 - constant fragments only

# Per webhook of the organisation: its last delivery, and the deliveries made in the last
# 24 hours by state (what the admins' page lists; a webhook never used has no row).
_SUMMARIES: Final = f"""
    SELECT w.id AS webhook_id, last.state AS last_state, last.last_status,
           last.last_error, last.created_at AS last_created_at,
           day.delivered, day.pending, day.dead
      FROM webhooks w
      JOIN LATERAL (
          SELECT {_STATE} AS state, d.last_status, d.last_error, d.created_at
            FROM webhook_deliveries d WHERE d.webhook_id = w.id ORDER BY d.id DESC LIMIT 1
      ) last ON true
     CROSS JOIN LATERAL (
          SELECT count(*) FILTER (WHERE d.delivered_at IS NOT NULL) AS delivered,
                 count(*) FILTER (WHERE d.delivered_at IS NULL AND d.dead_at IS NULL) AS pending,
                 count(*) FILTER (WHERE d.dead_at IS NOT NULL) AS dead
            FROM webhook_deliveries d
           WHERE d.webhook_id = w.id AND d.created_at > now() - interval '24 hours'
      ) day
     WHERE w.org_id = %(org_id)s AND w.deleted_at IS NULL
"""  # noqa: S608 - constant fragments only


def new_secret() -> str:
    """A fresh signing secret."""
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


async def create_webhook(
    pool: Pool, user: UserContext, webhook: WebhookCreate, *, client: str | None = None
) -> WebhookCreated:
    """Add a webhook to the caller's organisation; its secret is in the answer, only here."""
    params = {
        "org_id": user.org_id,
        "url": webhook.url,
        "secret": new_secret(),
        # Sorted and without repeats: the same request makes the same webhook.
        "events": sorted(set(webhook.events)),
        "rules": sorted(set(webhook.rules)),
        "description": webhook.description,
        "by": user.username,
    }
    async with pool.connection() as conn, conn.transaction():
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_CREATE, params)
            row = await cur.fetchone()
        assert row is not None
        created = WebhookCreated.model_validate(row)
        entry = AuditEntry("webhook.create", org_id=user.org_id, note=f"{created.id} {created.url}")
        await write_audit(conn, user.auditor(client), [entry])
    return created


async def list_webhooks(pool: Pool, user: UserContext) -> list[WebhookPublic]:
    """The caller's organisation's webhooks, oldest first."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LIST, {"org_id": user.org_id})
        return [WebhookPublic.model_validate(row) for row in await cur.fetchall()]


async def delete_webhook(
    pool: Pool, user: UserContext, webhook_id: int, *, client: str | None = None
) -> bool:
    """Delete the caller's organisation's webhook (its log stays); False if there is none."""
    params = {"id": webhook_id, "org_id": user.org_id}
    async with pool.connection() as conn, conn.transaction():
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_DELETE, params)
            row = await cur.fetchone()
            if row is None:
                return False
            await cur.execute(_GIVE_UP_PENDING, params)
        entry = AuditEntry("webhook.delete", org_id=user.org_id, note=f"{webhook_id} {row['url']}")
        await write_audit(conn, user.auditor(client), [entry])
    return True


async def list_deliveries(
    pool: Pool,
    user: UserContext,
    webhook_id: int,
    *,
    state: DeliveryState | None = None,
    limit: int = 100,
) -> list[WebhookDelivery] | None:
    """The webhook's delivery log, newest first; None if the caller has no such webhook."""
    params = {"id": webhook_id, "org_id": user.org_id, "state": state, "limit": limit}
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_VISIBLE, params)
        if await cur.fetchone() is None:
            return None
        await cur.execute(_DELIVERIES, params)
        return [WebhookDelivery.model_validate(row) for row in await cur.fetchall()]


async def summarise_deliveries(pool: Pool, user: UserContext) -> dict[int, DeliverySummary]:
    """The organisation's webhooks' delivery summaries, by webhook id (none if never used)."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SUMMARIES, {"org_id": user.org_id})
        summaries = [DeliverySummary.model_validate(row) for row in await cur.fetchall()]
    return {summary.webhook_id: summary for summary in summaries}
