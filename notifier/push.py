"""Web Push (+#12): an alarm nobody has taken reaches the phones of the caregivers who may take
it, whether or not a board is open (the board's own notification and sound are for the open
tab; a phone in a pocket has no open tab to ask); a device fault that needs someone soon
reaches the technicians' phones.

Sources, read in :func:`notifier.outbox.enqueue`'s transaction after the same cursor:

- a new alert of a response rule (``alert.opened``): one push per live subscription of every
  user of the site's first group, while the response is still nobody's. The first group is
  whoever may take the alert at its site (the organisation's, of a role that acts on the
  alert's audience, and the site among the user's sites or no site limit: as the API's forward
  check), but for the members of the site's second group (migration 0016);
- an escalation step with the ``notify_second_group`` action (``alert.escalated``): the first
  group again, saying that still nobody has it, and the second group's members (``group``
  says which). A site without a second group alerts its first group again;
- a new technical alert (devices/audience.py, as the API's ``audience=technical``) of severity
  high or critical, not cleared, not of a response rule (``alert.opened``): the users of the
  roles that act on technical alerts (technicians, admins) who may see the site. Other device
  faults wait for the board and the fleet page.

Each push is encrypted for its subscription (RFC 8291, ``aes128gcm``, by ``pywebpush``) and
signed with the deployment's VAPID key (RFC 8292, :mod:`carewatch.vapid`), then POSTed with
``httpx``. A 404 or 410 means the browser's subscription is gone: it is disabled and nothing
more is sent to it. Other failures are retried on the webhooks' schedule (:mod:`notifier.retry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

import httpx
import orjson
import psycopg
import psycopg_pool
from prometheus_client import CollectorRegistry, Counter
from psycopg.rows import dict_row
from pywebpush import WebPusher

from api.alert_queries import ALERT_FROM, IS_CARE, IS_TECHNICAL
from carewatch import vapid
from carewatch.roles import GRANTS, Permission, act_audiences
from carewatch.settings import Settings
from devices.audience import Audience
from devices.response import DEFAULT_POLICY, EscalationAction
from notifier.retry import RetryPolicy

log = logging.getLogger(__name__)

Pool = psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[Any]]

OPENED_EVENT: Final = "alert.opened"
ESCALATED_EVENT: Final = "alert.escalated"
RESPONSE_RULES: Final = sorted(DEFAULT_POLICY.rules)
RESPONDER_ROLES: Final = sorted(GRANTS[Permission.ACT_ON_ALERTS])
# Which of them act on which audience's alerts (carewatch.roles).
CARE_ROLES: Final = sorted(r for r in RESPONDER_ROLES if Audience.CARE in act_audiences(r))
TECHNICAL_ROLES: Final = sorted(
    r for r in RESPONDER_ROLES if Audience.TECHNICAL in act_audiences(r)
)
# Technical alerts are pushed to those who mend devices, at these severities: a device fault
# that needs someone soon (device_offline of a lock or an alarm button, lock_jammed).
TECHNICIAN_ROLES: Final = sorted(GRANTS[Permission.ACT_ON_TECHNICAL_ALERTS])
TECHNICAL_SEVERITIES: Final = ["high", "critical"]
# What the push service answers for a subscription that no longer exists (RFC 8030 §7.3).
GONE_STATUSES: Final = frozenset({404, 410})
# Client errors that a retry may cure: a timeout on their side, and "too many requests".
RETRIED_CLIENT_ERRORS: Final = frozenset({408, 429})
RESULTS: Final = ("delivered", "retry", "dead", "gone")
LAST_ERROR_MAX: Final = 500  # migration 0010's CHECK
# How long a lease outlives the attempt's timeout before another notifier may take the push.
LEASE_MARGIN_S: Final = 30.0


# --- enqueue: SQL run inside notifier.outbox.enqueue's transaction ------------------------------

# Allowed at the alert's site: no site limit, or the site among the user's.
_AT_SITE: Final = """(NOT EXISTS (SELECT 1 FROM user_sites us WHERE us.user_id = u.id)
                       OR EXISTS (SELECT 1 FROM user_sites us
                                   WHERE us.user_id = u.id AND us.site_id = s.id))"""

# The caregivers who may act on the alert: of its site's organisation, not disabled, of a role
# that acts on alerts and on alerts of its audience (issue 12: devices/audience.py), allowed at
# the site. The site's second group is among them (the API admits only such members).
_RESPONDERS: Final = f"""
      JOIN users u ON u.org_id = s.org_id AND NOT u.disabled
                  AND u.role = ANY (%(roles)s::text[])
                  AND ((u.role = ANY (%(care_roles)s::text[]) AND {IS_CARE})
                       OR (u.role = ANY (%(technical_roles)s::text[]) AND {IS_TECHNICAL}))
                  AND {_AT_SITE}
      JOIN push_subscriptions p ON p.user_id = u.id AND p.disabled_at IS NULL
"""

# The technicians (and admins) who may act on a technical alert at the site.
_TECHNICIANS: Final = f"""
      JOIN users u ON u.org_id = s.org_id AND NOT u.disabled
                  AND u.role = ANY (%(technician_roles)s::text[]) AND {_AT_SITE}
      JOIN push_subscriptions p ON p.user_id = u.id AND p.disabled_at IS NULL
"""

_IN_SECOND_GROUP: Final = (
    "EXISTS (SELECT 1 FROM site_second_group g WHERE g.site_id = s.id AND g.user_id = u.id)"
)

# The push's JSON: no resident's name exists to leak; the service worker words it in ``lang``.
# ``audience``: care (a response) or technical (a device fault); ``group``: the response's
# first or second group (null for a technical push).
_PAYLOAD: Final = """
    jsonb_build_object('alert_id', a.id, 'event', %(event)s::text, 'step', {step},
                       'rule', a.rule, 'residence_label', coalesce(r.label, d.label),
                       'site_name', s.name, 'severity', a.severity, 'lang', u.language,
                       'audience', {audience}::text, 'group', {group}::text)
"""

# Only while nobody has the alarm: a push that comes after someone accepted it is noise.
_NOBODYS: Final = "a.state <> 'resolved' AND coalesce(ar.state, 'open') IN ('open', 'forwarded')"

_GROUP: Final = f"CASE WHEN {_IN_SECOND_GROUP} THEN 'second' ELSE 'first' END"

_ENQUEUE: Final[dict[str, str]] = {
    "alert_changes": f"""
        INSERT INTO push_deliveries (subscription_id, alert_id, alert_change_id, payload)
        SELECT p.id, a.id, c.id,
               {_PAYLOAD.format(step="NULL::text", audience="'care'", group="'first'")}
          {ALERT_FROM}
          JOIN alert_changes c ON c.alert_id = a.id
          {_RESPONDERS}
         WHERE ((c.id > %(after)s AND c.id <= %(upto)s) OR c.id = ANY (%(ids)s::bigint[]))
           AND c.change = %(event)s AND a.rule = ANY (%(rules)s::text[]) AND {_NOBODYS}
           AND NOT {_IN_SECOND_GROUP}
        UNION ALL
        SELECT p.id, a.id, c.id,
               {_PAYLOAD.format(step="NULL::text", audience="'technical'", group="NULL")}
          {ALERT_FROM}
          JOIN alert_changes c ON c.alert_id = a.id
          {_TECHNICIANS}
         WHERE ((c.id > %(after)s AND c.id <= %(upto)s) OR c.id = ANY (%(ids)s::bigint[]))
           AND c.change = %(event)s AND a.rule <> ALL (%(rules)s::text[])
           AND a.severity = ANY (%(technical_severities)s::text[])
           AND a.state <> 'resolved' AND a.cleared_at IS NULL AND {IS_TECHNICAL}
        ON CONFLICT DO NOTHING
        RETURNING id""",
    "response_escalations": f"""
        INSERT INTO push_deliveries (subscription_id, alert_id, escalation_id, payload)
        SELECT p.id, a.id, e.id, {_PAYLOAD.format(step="e.step", audience="'care'", group=_GROUP)}
          {ALERT_FROM}
          JOIN response_escalations e ON e.alert_id = a.id
          {_RESPONDERS}
         WHERE ((e.id > %(after)s AND e.id <= %(upto)s) OR e.id = ANY (%(ids)s::bigint[]))
           AND %(action)s = ANY (e.actions) AND {_NOBODYS}
        ON CONFLICT DO NOTHING
        RETURNING id""",
}


async def enqueue(
    cur: psycopg.AsyncCursor[Any], source: str, *, after: int, upto: int, ids: Collection[int]
) -> int:
    """Pushes for ``source``'s rows in (``after``, ``upto``] and ``ids``; how many were made.

    Runs on the caller's cursor, in its transaction: the pushes commit with the cursor's move.
    """
    await cur.execute(
        _ENQUEUE[source],
        {
            "after": after,
            "upto": upto,
            "ids": sorted(ids),
            "roles": RESPONDER_ROLES,
            "care_roles": CARE_ROLES,
            "technical_roles": TECHNICAL_ROLES,
            "technician_roles": TECHNICIAN_ROLES,
            "technical_severities": TECHNICAL_SEVERITIES,
            "rules": RESPONSE_RULES,
            "event": OPENED_EVENT if source == "alert_changes" else ESCALATED_EVENT,
            "action": EscalationAction.NOTIFY_SECOND_GROUP.value,
        },
    )
    return len(await cur.fetchall())


# --- claim and record ---------------------------------------------------------------------------

_CLAIM: Final = """
    WITH due AS (
        SELECT d.id
          FROM push_deliveries d
          JOIN push_subscriptions p ON p.id = d.subscription_id AND p.disabled_at IS NULL
         WHERE d.delivered_at IS NULL AND d.dead_at IS NULL AND d.next_attempt_at <= now()
         ORDER BY d.next_attempt_at
         LIMIT %(limit)s
           FOR UPDATE OF d SKIP LOCKED
    )
    UPDATE push_deliveries d
       SET attempts = d.attempts + 1, last_attempt_at = now(),
           next_attempt_at = now() + make_interval(secs => %(lease_s)s)
      FROM due, push_subscriptions p
     WHERE d.id = due.id AND p.id = d.subscription_id
    RETURNING d.id, d.subscription_id, d.alert_id, d.payload, d.attempts,
              p.endpoint, p.p256dh, p.auth
"""

# Each outcome only for the attempt that was leased (as for webhook deliveries).
_DELIVERED: Final = """
    WITH done AS (
        UPDATE push_deliveries
           SET delivered_at = now(), last_status = %(status)s, last_error = NULL
         WHERE id = %(id)s AND attempts = %(attempts)s
           AND delivered_at IS NULL AND dead_at IS NULL
        RETURNING subscription_id
    )
    UPDATE push_subscriptions SET last_success_at = now(), failures = 0
     WHERE id IN (SELECT subscription_id FROM done)
"""

_FAILED: Final = """
    WITH failed AS (
        UPDATE push_deliveries
           SET last_status = %(status)s, last_error = %(error)s,
               next_attempt_at = CASE WHEN %(wait_s)s::float8 IS NULL THEN next_attempt_at
                                      ELSE now() + make_interval(secs => %(wait_s)s) END,
               dead_at = CASE WHEN %(wait_s)s::float8 IS NULL THEN now() END
         WHERE id = %(id)s AND attempts = %(attempts)s
           AND delivered_at IS NULL AND dead_at IS NULL
        RETURNING subscription_id
    )
    UPDATE push_subscriptions
       SET failures = failures + 1,
           disabled_at = CASE WHEN %(gone)s THEN now() ELSE disabled_at END
     WHERE id IN (SELECT subscription_id FROM failed)
"""


@dataclass(frozen=True, slots=True)
class ClaimedPush:
    """A push leased for one attempt."""

    id: int
    subscription_id: int
    alert_id: int
    payload: dict[str, Any]
    attempts: int  # this attempt's number, from 1
    endpoint: str
    p256dh: str
    auth: str


async def claim(
    conn: psycopg.AsyncConnection[Any], limit: int, *, lease_s: float
) -> list[ClaimedPush]:
    """Lease up to ``limit`` due pushes for one attempt each (commits at once)."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_CLAIM, {"limit": limit, "lease_s": lease_s})
        rows = await cur.fetchall()
    return [ClaimedPush(**row) for row in rows]


# --- one push, pure but for the randomness of the encryption -----------------------------------


@dataclass(frozen=True, slots=True)
class PushRequest:
    """What is POSTed to the push service."""

    url: str
    headers: dict[str, str]
    body: bytes


def build_request(
    push: ClaimedPush, key: Any, *, subject: str, ttl_s: int, now_s: int
) -> PushRequest:
    """The encrypted, signed request for ``push``: RFC 8291 aes128gcm, RFC 8292 VAPID, and
    RFC 8030's TTL, Urgency (an alarm is ``high``) and Topic (a later push about the same alert
    replaces one still waiting for an offline phone)."""
    data = orjson.dumps({"id": push.id, **push.payload})
    subscription = {"endpoint": push.endpoint, "keys": {"p256dh": push.p256dh, "auth": push.auth}}
    body: bytes = WebPusher(subscription).encode(data, "aes128gcm")["body"]
    headers = {
        "Authorization": vapid.authorization(key, push.endpoint, subject, now_s=now_s),
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
        "TTL": str(ttl_s),
        "Urgency": "high",
        "Topic": f"alert-{push.alert_id}",
    }
    return PushRequest(push.endpoint, headers, body)


def outcome(status: int | None) -> str:
    """What a push service's answer means: delivered, gone (disable), retry or dead."""
    if status is None:
        return "retry"
    if 200 <= status < 300:
        return "delivered"
    if status in GONE_STATUSES:
        return "gone"
    if 400 <= status < 500 and status not in RETRIED_CLIENT_ERRORS:
        return "dead"  # our request is wrong (a bad key, too large): retrying changes nothing
    return "retry"


# --- the loop -----------------------------------------------------------------------------------


class PushSender:
    """Claims due pushes, sends them, records the outcomes; woken by :attr:`wake`."""

    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        policy: RetryPolicy,
        registry: CollectorRegistry,
        rng: random.Random,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.policy = policy
        self.key = vapid.load(settings.vapid_private_key)  # a bad key stops the start
        self.wake = asyncio.Event()
        self._rng = rng
        self.deliveries = Counter(
            "carewatch_push_deliveries_total",
            "Web Push attempts by result: delivered, retry, dead (failed for the last time),"
            " gone (the subscription no longer exists: disabled)",
            ["result"],
            registry=registry,
        )
        for result in RESULTS:
            self.deliveries.labels(result)

    async def run(self, client: httpx.AsyncClient) -> None:
        """Send pushes until cancelled."""
        lease_s = self.settings.webhook_timeout_s + LEASE_MARGIN_S
        while True:
            self.wake.clear()  # before the claim: a wake-up during it is not lost
            claimed: list[ClaimedPush] = []
            try:
                async with self.pool.connection() as conn:
                    claimed = await claim(conn, self.settings.webhook_concurrency, lease_s=lease_s)
            except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
                log.warning("claiming pushes failed: %s", error)
            if claimed:
                await asyncio.gather(*(self._attempt(client, push) for push in claimed))
                continue  # more may be due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.settings.notifier_poll_s)

    async def _attempt(self, client: httpx.AsyncClient, push: ClaimedPush) -> None:
        """One POST and its outcome; never raises (the lease covers a lost outcome)."""
        status: int | None = None
        error = ""
        try:
            request = build_request(
                push,
                self.key,
                subject=self.settings.vapid_subject,
                ttl_s=self.settings.push_ttl_s,
                now_s=int(time.time()),
            )
            response = await client.post(request.url, content=request.body, headers=request.headers)
            status = response.status_code
            if not response.is_success:
                error = f"HTTP {status}: {response.text[:200]}"
        except httpx.HTTPError as failure:
            error = (
                f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
            )
        # Whatever a subscription's keys or a push service do must not end the loop.
        except Exception as failure:
            log.exception("push %s: unexpected failure", push.id)
            error = f"{type(failure).__name__}: {failure}"
        result = "delivered" if not error else outcome(status)
        try:
            await self._record(push, result, status, error)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as failure:
            log.warning("push %s: outcome not recorded (%s)", push.id, failure)

    async def _record(self, push: ClaimedPush, result: str, status: int | None, error: str) -> None:
        wait_s: float | None = None
        if result == "retry":
            wait_s = self.policy.wait_s(push.attempts, self._rng)
            if wait_s is None:
                result = "dead"
        async with self.pool.connection() as conn, conn.transaction():
            if result == "delivered":
                await conn.execute(
                    _DELIVERED, {"id": push.id, "attempts": push.attempts, "status": status}
                )
            else:
                await conn.execute(
                    _FAILED,
                    {
                        "id": push.id,
                        "attempts": push.attempts,
                        "status": status,
                        "error": error[:LAST_ERROR_MAX],
                        "wait_s": wait_s,
                        "gone": result == "gone",
                    },
                )
        self.deliveries.labels(result).inc()
        log.info(
            "push %s (alert %s) to subscription %s: %s, attempt %s%s",
            push.id,
            push.alert_id,
            push.subscription_id,
            result,
            push.attempts,
            f" ({error})" if error else "",
        )
