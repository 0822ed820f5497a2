"""The alarm response's moves in SQL (+#12): accept, forward, on site, close.

Each move locks the alert (scoped to the caller, as every alert statement: another
organisation's alert does not exist for them), reads where its response stands
(``alert_responses``; no row is a response nobody has touched), lets the pure core decide
(:func:`devices.response.apply_move`) and, if anything changed, writes the response, moves the
alert's own state along (taken: ``acknowledged``; back to nobody: ``open``; closed:
``resolved``), records the change in the alert feed (so every board sees it at once) and the
audit log, all in one transaction. The same move again changes and records nothing. Times are
the database's (``now()`` of the transaction), the clock the gateways' rules use.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from api.alert_queries import ALERT_FROM, audit_entry, read_alert
from api.auth import UserContext
from api.pool import Pool
from api.schemas import AlertPublic
from api.scope import SCOPE, scope_params
from carewatch.db import alert_feed
from carewatch.db.audit import write_audit
from carewatch.roles import Permission, may
from devices.response import (
    DEFAULT_POLICY,
    Close,
    Forward,
    Move,
    MoveRefused,
    Response,
    ResponseState,
    apply_move,
)

# The alert is locked first, and its response read after, in a statement of its own: under
# READ COMMITTED a statement that waited for the lock still sees the rows as they were when it
# began, so reading the response in the locking statement would let two caregivers accepting at
# the same moment both succeed, the second overwriting the first (and a lock's arrival, or an
# escalation step, committed meanwhile).
_LOCK: Final = f"""
    SELECT a.rule, a.state AS alert_state, a.opened_at, now() AS now, s.org_id, s.id AS site_id
    {ALERT_FROM}
    WHERE a.id = %(alert_id)s AND {SCOPE}
    FOR UPDATE OF a
"""

_READ_RESPONSE: Final = """
    SELECT state, holder, offered_to, accepted_at, on_site_at, on_site_by, on_site_source,
           contact_made, closed_at, closed_by, action, note, escalated
    FROM alert_responses WHERE alert_id = %(alert_id)s
"""

_SAVE: Final = """
    INSERT INTO alert_responses AS r (alert_id, state, holder, offered_to, accepted_at,
        on_site_at, on_site_by, on_site_source, contact_made, closed_at, closed_by, action,
        note, escalated, updated_at)
    VALUES (%(alert_id)s, %(state)s, %(holder)s, %(offered_to)s, %(accepted_at)s,
        %(on_site_at)s, %(on_site_by)s, %(on_site_source)s, %(contact_made)s, %(closed_at)s,
        %(closed_by)s, %(action)s, %(note)s, %(escalated)s, now())
    ON CONFLICT (alert_id) DO UPDATE SET state = EXCLUDED.state, holder = EXCLUDED.holder,
        offered_to = EXCLUDED.offered_to, accepted_at = EXCLUDED.accepted_at,
        on_site_at = EXCLUDED.on_site_at, on_site_by = EXCLUDED.on_site_by,
        on_site_source = EXCLUDED.on_site_source, contact_made = EXCLUDED.contact_made,
        closed_at = EXCLUDED.closed_at, closed_by = EXCLUDED.closed_by,
        action = EXCLUDED.action, note = EXCLUDED.note, escalated = EXCLUDED.escalated,
        updated_at = now()
"""

# The alert's own state follows the response: someone has it, nobody has it, it is over.
_TAKEN: Final = """
    UPDATE alerts SET state = 'acknowledged', acknowledged_at = coalesce(acknowledged_at, now()),
           acknowledged_by = coalesce(acknowledged_by, %(by)s), updated_at = now()
     WHERE id = %(id)s AND state = 'open'
"""
_UNTAKEN: Final = """
    UPDATE alerts SET state = 'open', updated_at = now()
     WHERE id = %(id)s AND state = 'acknowledged'
"""
_CLOSED: Final = """
    UPDATE alerts SET state = 'resolved', resolved_at = now(), resolved_by = %(by)s,
           acknowledged_at = coalesce(acknowledged_at, now()),
           acknowledged_by = coalesce(acknowledged_by, %(by)s), updated_at = now()
     WHERE id = %(id)s AND state <> 'resolved'
"""

# A colleague the response may be forwarded to: of the organisation, not disabled, allowed to
# act on alerts, and given the alert's site (no user_sites rows: every site).
_COLLEAGUE: Final = """
    SELECT u.role FROM users u
     WHERE u.username = %(username)s AND u.org_id = %(org_id)s AND NOT u.disabled
       AND (NOT EXISTS (SELECT 1 FROM user_sites us WHERE us.user_id = u.id)
            OR EXISTS (SELECT 1 FROM user_sites us
                        WHERE us.user_id = u.id AND us.site_id = %(site_id)s))
"""

_AUDIT_ACTIONS: Final = {
    ResponseState.ACCEPTED: "alert.accept",
    ResponseState.ON_SITE: "alert.on_site",
    ResponseState.CLOSED: "alert.close",
}


class ColleagueUnknownError(ValueError):
    """The colleague to forward to is not one who may take this alert."""


async def move_response(
    pool: Pool,
    user: UserContext,
    alert_id: int,
    make_move: Callable[[datetime], Move],
    *,
    client: str | None = None,
) -> AlertPublic | None:
    """Apply the caller's move (made with the transaction's time) to the alert's response;
    the alert as it is after it, or None if the caller may not see it. Raises
    :class:`~devices.response.MoveRefused` when the response's state does not allow the move,
    and :class:`ColleagueUnknownError` for a forward to someone who may not take it."""
    scoped = {**scope_params(user), "alert_id": alert_id}
    async with pool.connection() as conn, conn.transaction():
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_LOCK, scoped)
            row = await cur.fetchone()
            if row is None:
                return None
            if not DEFAULT_POLICY.is_response(row["rule"]):
                raise MoveRefused(
                    "not_a_response", "this alert is not a response: acknowledge or resolve it"
                )
            await cur.execute(_READ_RESPONSE, {"alert_id": alert_id})
            stored = await cur.fetchone()
        before = _response(row["opened_at"], stored)
        move = make_move(row["now"])
        # A condition that cleared by itself (the smoke is gone) may have resolved the alert:
        # the response is still closed with what was done, but nothing else moves it.
        if (
            row["alert_state"] == "resolved"
            and before.state is not ResponseState.CLOSED
            and not isinstance(move, Close)
        ):
            raise MoveRefused("resolved", "the alert is already resolved: close the response")
        if isinstance(move, Forward) and move.to is not None:
            await _check_colleague(conn, move.to, row["org_id"], row["site_id"])
        after, changed = apply_move(before, move, DEFAULT_POLICY)
        if changed:
            await _save(conn, alert_id, before, after, user.username)
            change = "alert.resolved" if after.state is ResponseState.CLOSED else "alert.updated"
            await alert_feed.record_changes(conn, [(alert_id, change)])
        alert = await read_alert(conn, user, alert_id)
        assert alert is not None  # locked above, and still in scope
        if changed:
            entry = audit_entry(user, _audit_action(move, after), alert, note=_audit_note(move))
            await write_audit(conn, user.auditor(client), [entry])
        return alert


def _response(opened_at: datetime, row: dict[str, Any] | None) -> Response:
    if row is None:
        return Response(opened_at=opened_at)
    return Response(
        opened_at=opened_at,
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


async def _save(
    conn: psycopg.AsyncConnection[Any],
    alert_id: int,
    before: Response,
    after: Response,
    by: str,
) -> None:
    await conn.execute(
        _SAVE,
        {
            "alert_id": alert_id,
            "state": after.state.value,
            "holder": after.holder,
            "offered_to": after.offered_to,
            "accepted_at": after.accepted_at,
            "on_site_at": after.on_site_at,
            "on_site_by": after.on_site_by,
            "on_site_source": after.on_site_source,
            "contact_made": after.contact_made,
            "closed_at": after.closed_at,
            "closed_by": after.closed_by,
            "action": after.action,
            "note": after.note,
            "escalated": list(after.escalated),
        },
    )
    params = {"id": alert_id, "by": by}
    if after.state is ResponseState.CLOSED:
        await conn.execute(_CLOSED, params)
    elif after.holder is not None and before.holder is None:
        await conn.execute(_TAKEN, {**params, "by": after.holder})
    elif after.holder is None and before.holder is not None:
        await conn.execute(_UNTAKEN, params)


async def _check_colleague(
    conn: psycopg.AsyncConnection[Any], username: str, org_id: str, site_id: str
) -> None:
    cur = await conn.execute(
        _COLLEAGUE, {"username": username, "org_id": org_id, "site_id": site_id}
    )
    row = await cur.fetchone()
    if row is None or not may(row[0], Permission.ACT_ON_ALERTS):
        raise ColleagueUnknownError(f"{username} cannot take alerts at this site")


def _audit_action(move: Move, after: Response) -> str:
    if isinstance(move, Forward):
        return "alert.forward"
    return _AUDIT_ACTIONS.get(after.state, "alert.update")


def _audit_note(move: Move) -> str | None:
    if isinstance(move, Forward):
        return f"to {move.to}" if move.to else "to the team"
    if isinstance(move, Close):
        return f"{move.action}: {move.note}" if move.note else move.action
    return None
