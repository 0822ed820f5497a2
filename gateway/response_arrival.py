"""Arrival by lock (+#12): the residence's door unlocked after the alarm was taken is the arrival.

A ``lock.unlocked`` of a lock that belongs to a residence moves every *accepted* response of an
unresolved response-rule alert at that residence (the alert's own residence, else its
device's) ``on_site``, with the lock as the source and its device id as ``on_site_by``, when
the unlock's device time is at or after the acceptance; the pure core decides
(:func:`devices.response.apply_move` with :class:`~devices.response.LockOpened`). It runs in
the batch's transaction, after the rules, so an arrival is recorded exactly when its event is
stored: a redelivered event is a duplicate and never gets here, and an unlock the batch did
not store changes nothing.

Cheap on the hot path: a batch without ``lock.unlocked`` costs a loop over its events and no
query; one with unlocks costs one indexed look-up of the locks' residences, and only where
some lock has a residence a second, set-based one for the accepted responses there (locking
the alerts in id order, as the API's moves do). The responses are read again after the lock:
a statement that waited for a colleague's move would otherwise see the response as it was
before it. Two gateways storing unlocks of the same door serialise on the alert rows; the
second finds the response on site already, and apply_move changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from carewatch.db.alert_feed import record_changes
from carewatch.db.audit import AuditEntry, Auditor, write_audit
from devices.envelope import Event, StatusReport
from devices.response import (
    DEFAULT_POLICY,
    LockOpened,
    Response,
    ResponseState,
    apply_move,
)

UNLOCKED: Final = "lock.unlocked"
_RULES: Final = sorted(DEFAULT_POLICY.rules)
_SYSTEM: Final = Auditor(username="system")  # as the gateway's resolved_by: no person acted

# Which of the unlocked locks belong to a residence (a primary key look-up).
LOCK_RESIDENCES: Final = """
SELECT id, residence_id FROM devices WHERE id = ANY(%(locks)s) AND residence_id IS NOT NULL
"""

# The unresolved response-rule alerts at those residences whose response someone has taken;
# the alert rows are locked in id order (the API's moves lock them too).
LOCK_ACCEPTED: Final = """
SELECT a.id
FROM alerts AS a
JOIN devices AS ad ON ad.id = a.device_id
JOIN alert_responses AS ar ON ar.alert_id = a.id
WHERE a.state <> 'resolved' AND a.rule = ANY(%(rules)s) AND ar.state = 'accepted'
  AND coalesce(a.residence_id, ad.residence_id) = ANY(%(residences)s)
ORDER BY a.id
FOR UPDATE OF a
"""

# Read after the lock above, in a statement of its own: a fresh look at each response.
READ_RESPONSES: Final = """
SELECT a.id, a.device_id, a.opened_at, coalesce(a.residence_id, ad.residence_id) AS residence_id,
       ar.state, ar.holder, ar.offered_to, ar.accepted_at, ar.on_site_at, ar.on_site_by,
       ar.on_site_source, ar.contact_made, ar.closed_at, ar.closed_by, ar.action, ar.note,
       ar.escalated
FROM alerts AS a
JOIN devices AS ad ON ad.id = a.device_id
JOIN alert_responses AS ar ON ar.alert_id = a.id
WHERE a.id = ANY(%(ids)s) AND a.state <> 'resolved'
ORDER BY a.id
"""

SAVE_ARRIVALS: Final = """
UPDATE alert_responses AS r
SET state = v.state, on_site_at = v.on_site_at, on_site_by = v.on_site_by,
    on_site_source = v.on_site_source, updated_at = now()
FROM unnest(%(ids)s::bigint[], %(states)s::text[], %(on_site_at)s::timestamptz[],
            %(on_site_by)s::text[], %(on_site_source)s::text[])
     AS v(alert_id, state, on_site_at, on_site_by, on_site_source)
WHERE r.alert_id = v.alert_id
"""


def unlocks_of(messages: Sequence[Event | StatusReport]) -> list[Event]:
    """The batch's ``lock.unlocked`` events (the rest never needs a query here)."""
    return [m for m in messages if type(m) is Event and m.type == UNLOCKED]


async def arrive_by_lock(
    cur: psycopg.AsyncCursor[Any], messages: Sequence[Event | StatusReport], now: datetime
) -> list[int]:
    """Move the accepted responses at the residences whose lock the batch saw unlocked on
    site; the alert change ids recorded, ascending. Runs in the caller's transaction."""
    unlocks = unlocks_of(messages)
    if not unlocks:
        return []
    await cur.execute(LOCK_RESIDENCES, {"locks": sorted({u.device_id for u in unlocks})})
    residence_of: dict[str, int] = {row[0]: row[1] for row in await cur.fetchall()}
    if not residence_of:
        return []
    by_residence: defaultdict[int, list[LockOpened]] = defaultdict(list)
    for unlock in unlocks:
        if (residence := residence_of.get(unlock.device_id)) is not None:
            by_residence[residence].append(LockOpened(unlock.device_id, unlock.time))
    await cur.execute(LOCK_ACCEPTED, {"rules": _RULES, "residences": sorted(by_residence)})
    locked = [row[0] for row in await cur.fetchall()]
    if not locked:
        return []
    conn = cur.connection
    async with conn.cursor(row_factory=dict_row) as reader:
        await reader.execute(READ_RESPONSES, {"ids": locked})
        rows = await reader.fetchall()
    arrived: list[tuple[int, Response]] = []
    audit: list[AuditEntry] = []
    for row in rows:
        response = _response(row)
        # In device time: the first unlock at or after the acceptance is the arrival.
        for move in sorted(by_residence[row["residence_id"]], key=lambda m: m.at):
            response, changed = apply_move(response, move, DEFAULT_POLICY)
            if changed:
                arrived.append((row["id"], response))
                audit.append(
                    AuditEntry(
                        action="alert.on_site",
                        alert_id=row["id"],
                        device_id=row["device_id"],
                        note=f"lock {move.device_id}",
                        residence_id=row["residence_id"],
                    )
                )
                break
    if not arrived:
        return []
    await cur.execute(
        SAVE_ARRIVALS,
        {
            "ids": [alert_id for alert_id, _ in arrived],
            "states": [r.state.value for _, r in arrived],
            "on_site_at": [r.on_site_at for _, r in arrived],
            "on_site_by": [r.on_site_by for _, r in arrived],
            "on_site_source": [r.on_site_source for _, r in arrived],
        },
    )
    change_ids = await record_changes(
        conn, [(alert_id, "alert.updated") for alert_id, _ in arrived], at=now
    )
    await write_audit(conn, _SYSTEM, audit)
    return change_ids


def _response(row: dict[str, Any]) -> Response:
    return Response(
        opened_at=row["opened_at"],
        state=ResponseState(row["state"]),
        holder=row["holder"],
        offered_to=row["offered_to"],
        accepted_at=row["accepted_at"],
        on_site_at=row["on_site_at"],
        on_site_by=row["on_site_by"],
        on_site_source=row["on_site_source"],
        contact_made=row["contact_made"],
        closed_at=row["closed_at"],
        closed_by=row["closed_by"],
        action=row["action"],
        note=row["note"],
        escalated=tuple(row["escalated"]),
    )
