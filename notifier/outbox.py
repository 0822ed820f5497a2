"""The notifier's SQL: sources become deliveries, deliveries are claimed, attempts recorded.

Two sources feed ``webhook_deliveries``: ``alert_changes`` (events ``alert.opened``,
``alert.updated``, ``alert.resolved``, for alerts of the response rules and of the rules a
webhook adds) and ``response_escalations`` steps with the ``call_out`` action (event
``alert.call_out``). :func:`enqueue` reads a source after its cursor (``notifier_cursors``,
locked for the transaction, so notifiers enqueue one at a time) plus the ids a NOTIFY named,
which covers a change that committed after a later one had moved the cursor past it. Each
(webhook, source row) is unique: a source row is enqueued once however often it is read. The
same pass makes the Web Push deliveries of those rows (:func:`notifier.push.enqueue`).

:func:`claim` takes due deliveries with ``FOR UPDATE SKIP LOCKED`` and leases them (their
``next_attempt_at`` moves past the attempt's timeout) in a transaction of its own, so several
notifiers share the queue and none holds a lock while it waits for a receiver. A notifier that
dies mid-attempt leaves the lease to expire and the delivery is tried again: delivery is at
least once, and receivers deduplicate by the delivery id.

The payload is the API's alert JSON (:data:`api.alert_queries.ALERT_COLUMNS`, validated as
:class:`api.schemas.AlertPublic`), as it is when the event is enqueued.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import orjson
import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

from api.alert_queries import ALERT_COLUMNS, ALERT_FROM
from api.schemas import AlertPublic
from carewatch.db import alert_feed, escalation_feed
from devices.response import DEFAULT_POLICY
from notifier import push

Source = Literal["alert_changes", "response_escalations"]
SOURCES: Final[tuple[Source, ...]] = ("alert_changes", "response_escalations")

# Where each source's writer announces a new row (its id as the payload).
CHANNELS: Final[dict[str, Source]] = {
    alert_feed.CHANNEL: "alert_changes",
    escalation_feed.CHANNEL: "response_escalations",  # the gateways' escalation watchdog
}
CALL_OUT_EVENT: Final = "alert.call_out"
CALL_OUT_ACTION: Final = "call_out"  # devices/response.toml's escalation action
RESPONSE_RULES: Final = sorted(DEFAULT_POLICY.rules)


class Payload(BaseModel):
    """What a delivery's body says, but for its ``id`` (the delivery's, added when sent)."""

    event: str
    occurred_at: datetime
    org_id: str
    alert_change_id: int | None = None
    escalation_id: int | None = None
    escalation_step: str | None = None
    alert: AlertPublic


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery leased for one attempt."""

    id: int
    webhook_id: int
    event: str
    body: bytes
    attempts: int  # this attempt's number, from 1
    url: str
    secret: str


# --- statements (f-strings only join constant fragments; every value is a parameter) ----------

_LOCK_CURSOR: Final = "SELECT last_id FROM notifier_cursors WHERE source = %s FOR UPDATE"
_ADVANCE_CURSOR: Final = "UPDATE notifier_cursors SET last_id = %s WHERE source = %s"

# The last id of the next batch after the cursor (NULL: nothing new).
_UPTO: Final[dict[Source, str]] = {
    "alert_changes": """
        SELECT max(id) FROM (SELECT id FROM alert_changes WHERE id > %(after)s
                              ORDER BY id LIMIT %(batch)s) AS batch""",
    "response_escalations": """
        SELECT max(id) FROM (SELECT id FROM response_escalations WHERE id > %(after)s
                              ORDER BY id LIMIT %(batch)s) AS batch""",
}

# The webhooks it applies to: live, of the alert's organisation, asking for the event, and
# created before it happened (a new webhook does not receive the past).
_MATCH: Final[dict[Source, str]] = {
    "alert_changes": f"""
        SELECT c.id AS alert_change_id, NULL::bigint AS escalation_id,
               NULL::text AS escalation_step, c.change AS event, c.changed_at AS occurred_at,
               w.id AS webhook_id, s.org_id, {ALERT_COLUMNS}
          {ALERT_FROM}
          JOIN alert_changes c ON c.alert_id = a.id
          JOIN webhooks w ON w.org_id = s.org_id
         WHERE ((c.id > %(after)s AND c.id <= %(upto)s) OR c.id = ANY (%(ids)s::bigint[]))
           AND w.enabled AND w.deleted_at IS NULL
           AND c.change = ANY (w.events)
           AND (a.rule = ANY (%(response_rules)s::text[]) OR a.rule = ANY (w.rules))
           AND w.created_at <= c.changed_at
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries x
                            WHERE x.webhook_id = w.id AND x.alert_change_id = c.id)
         ORDER BY c.id, w.id""",  # noqa: S608 - constant fragments only
    "response_escalations": f"""
        SELECT NULL::bigint AS alert_change_id, e.id AS escalation_id,
               e.step AS escalation_step, '{CALL_OUT_EVENT}' AS event,
               e.taken_at AS occurred_at, w.id AS webhook_id, s.org_id, {ALERT_COLUMNS}
          {ALERT_FROM}
          JOIN response_escalations e ON e.alert_id = a.id
          JOIN webhooks w ON w.org_id = s.org_id
         WHERE ((e.id > %(after)s AND e.id <= %(upto)s) OR e.id = ANY (%(ids)s::bigint[]))
           AND '{CALL_OUT_ACTION}' = ANY (e.actions)
           AND w.enabled AND w.deleted_at IS NULL
           AND '{CALL_OUT_EVENT}' = ANY (w.events)
           AND w.created_at <= e.taken_at
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries x
                            WHERE x.webhook_id = w.id AND x.escalation_id = e.id)
         ORDER BY e.id, w.id""",  # noqa: S608 - constant fragments only
}

_INSERT: Final = """
    INSERT INTO webhook_deliveries
           (webhook_id, event, alert_id, alert_change_id, escalation_id, payload)
    SELECT w, e, a, c, x, p::jsonb
      FROM unnest(%(webhooks)s::bigint[], %(events)s::text[], %(alerts)s::bigint[],
                  %(changes)s::bigint[], %(escalations)s::bigint[], %(payloads)s::text[])
           AS t(w, e, a, c, x, p)
    ON CONFLICT DO NOTHING
    RETURNING id, event
"""

_CLAIM: Final = """
    WITH due AS (
        SELECT d.id
          FROM webhook_deliveries d
          JOIN webhooks w ON w.id = d.webhook_id AND w.enabled AND w.deleted_at IS NULL
         WHERE d.delivered_at IS NULL AND d.dead_at IS NULL AND d.next_attempt_at <= now()
         ORDER BY d.next_attempt_at
         LIMIT %(limit)s
           FOR UPDATE OF d SKIP LOCKED
    )
    UPDATE webhook_deliveries d
       SET attempts = d.attempts + 1, last_attempt_at = now(),
           next_attempt_at = now() + make_interval(secs => %(lease_s)s)
      FROM due, webhooks w
     WHERE d.id = due.id AND w.id = d.webhook_id
    RETURNING d.id, d.webhook_id, d.event, d.payload, d.attempts, w.url, w.secret
"""

# Each outcome only for the attempt that was leased: a notifier whose lease ran out (and whose
# delivery another took) changes nothing.
_DELIVERED: Final = """
    UPDATE webhook_deliveries
       SET delivered_at = now(), last_status = %(status)s, last_error = NULL
     WHERE id = %(id)s AND attempts = %(attempts)s
       AND delivered_at IS NULL AND dead_at IS NULL
    RETURNING extract(epoch FROM now() - created_at) AS waited_s
"""

_RETRY: Final = """
    UPDATE webhook_deliveries
       SET last_status = %(status)s, last_error = %(error)s,
           next_attempt_at = now() + make_interval(secs => %(wait_s)s)
     WHERE id = %(id)s AND attempts = %(attempts)s
       AND delivered_at IS NULL AND dead_at IS NULL
"""

_DEAD: Final = """
    UPDATE webhook_deliveries
       SET last_status = %(status)s, last_error = %(error)s, dead_at = now()
     WHERE id = %(id)s AND attempts = %(attempts)s
       AND delivered_at IS NULL AND dead_at IS NULL
"""

_QUEUE: Final = """
    SELECT count(*) AS depth,
           coalesce(extract(epoch FROM now() - min(d.created_at)), 0) AS oldest_s
      FROM webhook_deliveries d
      JOIN webhooks w ON w.id = d.webhook_id AND w.enabled AND w.deleted_at IS NULL
     WHERE d.delivered_at IS NULL AND d.dead_at IS NULL
"""

_DEAD_COUNT: Final = "SELECT count(*) FROM webhook_deliveries WHERE dead_at IS NOT NULL"

LAST_ERROR_MAX: Final = 500  # the column's CHECK


@dataclass(frozen=True, slots=True)
class Enqueued:
    """One :func:`enqueue` pass: deliveries made, and whether the source has more after it."""

    deliveries: list[tuple[int, str]]  # (delivery id, event)
    more: bool
    pushes: int = 0  # Web Push deliveries made (notifier.push)


async def enqueue(
    conn: psycopg.AsyncConnection[Any],
    source: Source,
    notified_ids: Collection[int] = (),
    *,
    batch: int = 500,
    pushes: bool = False,
) -> Enqueued:
    """Turn the next ``batch`` rows of ``source`` (and ``notified_ids``) into deliveries, and
    into Web Push deliveries too when ``pushes`` (the notifier has a VAPID key).

    Runs in one transaction on ``conn``: the cursor's lock, the inserts and the cursor's move
    commit together.
    """
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LOCK_CURSOR, (source,))
        cursor_row = await cur.fetchone()
        assert cursor_row is not None  # migration 0009 made one per source
        after: int = cursor_row["last_id"]
        await cur.execute(_UPTO[source], {"after": after, "batch": batch})
        upto_row = await cur.fetchone()
        upto: int = after if upto_row is None or upto_row["max"] is None else upto_row["max"]
        if upto == after and not notified_ids:
            return Enqueued([], more=False)
        await cur.execute(
            _MATCH[source],
            {
                "after": after,
                "upto": upto,
                "ids": sorted(notified_ids),
                "response_rules": RESPONSE_RULES,
            },
        )
        rows = await cur.fetchall()
        made: list[tuple[int, str]] = []
        if rows:
            await cur.execute(_INSERT, _insert_params(rows))
            made = [(row["id"], row["event"]) for row in await cur.fetchall()]
        pushed = 0
        if pushes:
            pushed = await push.enqueue(cur, source, after=after, upto=upto, ids=notified_ids)
        if upto > after:
            await cur.execute(_ADVANCE_CURSOR, (upto, source))
    return Enqueued(made, more=upto - after >= batch, pushes=pushed)


def _insert_params(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    payloads = [
        Payload(
            event=row["event"],
            occurred_at=row["occurred_at"],
            org_id=row["org_id"],
            alert_change_id=row["alert_change_id"],
            escalation_id=row["escalation_id"],
            escalation_step=row["escalation_step"],
            alert=AlertPublic.model_validate(row),
        ).model_dump_json()
        for row in rows
    ]
    return {
        "webhooks": [row["webhook_id"] for row in rows],
        "events": [row["event"] for row in rows],
        "alerts": [row["id"] for row in rows],
        "changes": [row["alert_change_id"] for row in rows],
        "escalations": [row["escalation_id"] for row in rows],
        "payloads": payloads,
    }


async def claim(conn: psycopg.AsyncConnection[Any], limit: int, *, lease_s: float) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries for one attempt each (commits at once)."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_CLAIM, {"limit": limit, "lease_s": lease_s})
        rows = await cur.fetchall()
    return [
        Claimed(
            id=row["id"],
            webhook_id=row["webhook_id"],
            event=row["event"],
            # The delivery's id first: a receiver deduplicates by it (also a header).
            body=orjson.dumps({"id": row["id"], **row["payload"]}),
            attempts=row["attempts"],
            url=row["url"],
            secret=row["secret"],
        )
        for row in rows
    ]


async def record_delivered(
    conn: psycopg.AsyncConnection[Any], delivery: Claimed, status: int
) -> float | None:
    """The attempt succeeded; the seconds from enqueue to delivery (None: lease was lost)."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _DELIVERED, {"id": delivery.id, "attempts": delivery.attempts, "status": status}
        )
        row = await cur.fetchone()
    return None if row is None else float(row["waited_s"])


async def record_failed(
    conn: psycopg.AsyncConnection[Any],
    delivery: Claimed,
    *,
    status: int | None,
    error: str,
    wait_s: float | None,
) -> None:
    """The attempt failed: try again after ``wait_s``, or (None) the delivery is dead."""
    params = {
        "id": delivery.id,
        "attempts": delivery.attempts,
        "status": status,
        "error": error[:LAST_ERROR_MAX],
        "wait_s": wait_s,
    }
    async with conn.transaction():
        await conn.execute(_DEAD if wait_s is None else _RETRY, params)


async def queue_state(conn: psycopg.AsyncConnection[Any]) -> tuple[int, float, int]:
    """Pending deliveries, the oldest one's age in seconds, and dead deliveries in the log."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_QUEUE)
        queue = await cur.fetchone()
        await cur.execute(_DEAD_COUNT)
        dead = await cur.fetchone()
    assert queue is not None
    assert dead is not None
    return int(queue["depth"]), float(queue["oldest_s"]), int(dead["count"])
