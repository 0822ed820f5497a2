"""The alarm response's escalation chain (+#12), taken by the watchdog.

For each unresolved alert of a response rule, the site's chain (the policy's steps with the
site's times and promise, :func:`devices.site_response.site_chain`) says which steps are due
(:func:`devices.response.due_steps`: due by now, not taken, not stopped by where the response
has come). Each step due is taken once:

- a row in ``response_escalations`` (the outbox the notifier delivers from), its key
  (alert_id, step) making it exactly once, even with two gateways or a pass run twice;
- the step appended to ``alert_responses.escalated`` (a row created ``open`` if nobody has
  touched the response yet), which is what stops :func:`~devices.response.due_steps` from
  naming it again and what the board shows;
- its actions that are the gateway's own: ``raise_severity`` makes the alert critical;
- for every step, a ``NOTIFY`` with the row's id on the outbox's channel
  (:mod:`carewatch.db.escalation_feed`: the notifier carries out ``notify_second_group`` and
  ``call_out``), and an ``alert.updated`` change in the alert feed.

A first read without locks finds the alerts with a step due; they are then locked in id order
and read again in a statement of their own, so that an acceptance that committed meanwhile
stops the step (a statement that waited for the API's lock would still see the response as it
was). All of it commits together: a step is never in the outbox without its alert showing it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from carewatch.db.alert_feed import record_changes
from carewatch.db.escalation_feed import CHANNEL
from devices.response import (
    DEFAULT_POLICY,
    STALE_STEP_AFTER,
    EscalationAction,
    EscalationStep,
    Response,
    ResponseState,
    due_steps,
    is_stale,
)
from devices.site_response import site_chain

log = logging.getLogger("gateway.response_escalation")

_RULES: Final = sorted(DEFAULT_POLICY.rules)
# States from which some step of the chain can still come (stops_at further on).
_LIVE_STATES: Final = sorted(
    state.value
    for state in ResponseState
    if any(state.progress < step.stops_at.progress for step in DEFAULT_POLICY.chain)
)

# Every site's chain is read first (few rows) and resolved here, by the same function as the
# board's, so that the SQL below needs no copy of the chain's rules.
_SITES: Final = "SELECT id, contact_promise_s, on_site_promise_s, escalation_steps FROM sites"

# The alerts a step may be due for, with what the chain needs: unresolved alerts of the
# response rules whose response is not yet where every step stops and still lacks a step of
# its site's chain. An alarm that nobody closes has every step on its response within the
# chain's span, and is then read no more: without that, every pass read every open alarm
# (a soak's 7,200 after an hour) and the gateway's memory grew with them.
_CANDIDATES: Final = """
SELECT a.id, a.opened_at, s.contact_promise_s, s.on_site_promise_s, s.escalation_steps,
       coalesce(ar.state, 'open') AS state, coalesce(ar.escalated, '{}') AS escalated
FROM alerts AS a
JOIN devices AS d ON d.id = a.device_id
JOIN sites AS s ON s.id = d.site_id
JOIN jsonb_to_recordset(%(chains)s::jsonb) AS c(site_id text, steps text[])
  ON c.site_id = s.id
LEFT JOIN alert_responses AS ar ON ar.alert_id = a.id
WHERE a.state <> 'resolved' AND a.rule = ANY(%(rules)s)
  AND coalesce(ar.state, 'open') = ANY(%(live)s)
  AND NOT coalesce(ar.escalated, '{}') @> c.steps
"""

_LOCK: Final = """
SELECT id FROM alerts WHERE id = ANY(%(ids)s) AND state <> 'resolved' ORDER BY id FOR UPDATE
"""

# After the lock: the same columns, seen afresh.
_READ_LOCKED: Final = """
SELECT a.id, a.opened_at, s.contact_promise_s, s.on_site_promise_s, s.escalation_steps,
       coalesce(ar.state, 'open') AS state, coalesce(ar.escalated, '{}') AS escalated
FROM alerts AS a
JOIN devices AS d ON d.id = a.device_id
JOIN sites AS s ON s.id = d.site_id
LEFT JOIN alert_responses AS ar ON ar.alert_id = a.id
WHERE a.id = ANY(%(ids)s) AND a.state <> 'resolved'
ORDER BY a.id
"""

_TAKE: Final = """
INSERT INTO response_escalations (alert_id, step, actions, due_at, taken_at)
SELECT v.alert_id, v.step, string_to_array(v.actions, ','), v.due_at, %(now)s
FROM unnest(%(alert_ids)s::bigint[], %(steps)s::text[], %(actions)s::text[],
            %(due_at)s::timestamptz[]) AS v(alert_id, step, actions, due_at)
ORDER BY v.alert_id, v.due_at
ON CONFLICT ON CONSTRAINT response_escalations_one_per_step DO NOTHING
RETURNING id, alert_id, step
"""

# The steps taken go onto the response (created open where nobody has touched it).
_RECORD_TAKEN: Final = """
INSERT INTO alert_responses AS r (alert_id, state, escalated, updated_at)
SELECT v.alert_id, 'open', v.steps, now()
FROM jsonb_to_recordset(%(taken)s::jsonb) AS v(alert_id bigint, steps text[])
ORDER BY v.alert_id
ON CONFLICT (alert_id) DO UPDATE
SET escalated = r.escalated
        || ARRAY(SELECT s FROM unnest(EXCLUDED.escalated) AS s WHERE s <> ALL (r.escalated)),
    updated_at = now()
"""

_RAISE: Final = """
UPDATE alerts SET severity = 'critical', raised_at = %(now)s, updated_at = now()
WHERE id = ANY(%(ids)s) AND severity <> 'critical'
"""

_NOTIFY: Final = "SELECT pg_notify(%(channel)s, e::text) FROM unnest(%(ids)s::bigint[]) AS e"


@dataclass(slots=True)
class EscalationOutcome:
    """What a pass took: the steps by name (a metric label), and the alert change ids."""

    steps: dict[str, int] = field(default_factory=dict)
    change_ids: list[int] = field(default_factory=list)


async def escalate_responses(
    conn: psycopg.AsyncConnection[Any], now: datetime
) -> EscalationOutcome:
    """Take every step of the chain due by ``now``, in one transaction; what was taken."""
    outcome = EscalationOutcome()
    async with conn.cursor(row_factory=dict_row) as cur:
        candidates = [row["id"] for row in await read_candidates(cur) if _due(row, now)]
    await conn.commit()  # end the read's transaction: the lock below sees what commits now
    if not candidates:
        return outcome
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LOCK, {"ids": candidates})
        locked = [row["id"] for row in await cur.fetchall()]
        await cur.execute(_READ_LOCKED, {"ids": locked})
        due = [(row["id"], step, at) for row in await cur.fetchall() for step, at in _due(row, now)]
        if not due:
            return outcome
        # A step due long ago is recorded on the response but not carried out (is_stale).
        fresh = [(alert_id, step, at) for alert_id, step, at in due if not is_stale(at, now)]
        if len(fresh) < len(due):
            log.warning(
                "%s escalation steps fell due over %s ago: recorded, not carried out",
                len(due) - len(fresh),
                STALE_STEP_AFTER,
            )
        await cur.execute(
            _TAKE,
            {
                "now": now,
                "alert_ids": [alert_id for alert_id, _, _ in fresh],
                "steps": [step.name for _, step, _ in fresh],
                "actions": [",".join(step.actions) for _, step, _ in fresh],
                "due_at": [at for _, _, at in fresh],
            },
        )
        taken = await cur.fetchall()  # the steps newly in the outbox
        # Every due step goes onto the response, also one already in the outbox: a response
        # written from an older read (a move that waited for our lock) may have lost it.
        steps_of: dict[int, list[str]] = {}
        for alert_id, step, _ in due:
            steps_of.setdefault(alert_id, []).append(step.name)
        await cur.execute(
            _RECORD_TAKEN,
            {"taken": Jsonb([{"alert_id": a, "steps": s} for a, s in steps_of.items()])},
        )
        by_name = {step.name: step for _, step, _ in due}
        for row in taken:
            outcome.steps[row["step"]] = outcome.steps.get(row["step"], 0) + 1
        raise_ids = sorted(
            {
                row["alert_id"]
                for row in taken
                if EscalationAction.RAISE_SEVERITY in by_name[row["step"]].actions
            }
        )
        if raise_ids:
            await cur.execute(_RAISE, {"now": now, "ids": raise_ids})
        if taken:
            await cur.execute(_NOTIFY, {"channel": CHANNEL, "ids": sorted(r["id"] for r in taken)})
        outcome.change_ids = await record_changes(
            conn, [(alert_id, "alert.updated") for alert_id in sorted(steps_of)], at=now
        )
    return outcome


async def read_candidates(cur: psycopg.AsyncCursor[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alerts whose site's chain can still take a step, with what ``_due`` needs."""
    await cur.execute(_SITES)
    chains = [
        {
            "site_id": row["id"],
            "steps": [
                step.name
                for step, _ in site_chain(
                    row["contact_promise_s"], row["on_site_promise_s"], row["escalation_steps"]
                )
            ],
        }
        for row in await cur.fetchall()
    ]
    await cur.execute(_CANDIDATES, {"rules": _RULES, "live": _LIVE_STATES, "chains": Jsonb(chains)})
    return await cur.fetchall()


def _due(row: dict[str, Any], now: datetime) -> list[tuple[EscalationStep, datetime]]:
    """The steps due for the alert of ``row``, each with when it fell due."""
    chain = site_chain(row["contact_promise_s"], row["on_site_promise_s"], row["escalation_steps"])
    response = Response(
        opened_at=row["opened_at"],
        state=ResponseState(row["state"]),
        escalated=tuple(row["escalated"]),
    )
    after_s = {step.name: seconds for step, seconds in chain}
    return [
        (step, response.opened_at + timedelta(seconds=after_s[step.name]))
        for step in due_steps(response, chain, now)
    ]
