"""The alerts resource's SQL and its change feed, each statement scoped by the caller's sites.

The scope (:mod:`api.scope`) is part of each statement's WHERE clause, never a filter applied
afterwards: an alert of another organisation, or of a site the caller is not given, is never
read at all, and the routes answer 404 for it as if it did not exist. The one unscoped query,
:func:`changes_for_fanout`, feeds the SSE hub, which hands each change only to the subscribers
of its organisation and sites.

An acknowledgement or resolution is recorded through the kernel's owners of those writes:
:func:`carewatch.db.alert_feed.record_changes` (the change row and its NOTIFY) and
:func:`carewatch.db.audit.write_audit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
import psycopg
from psycopg.rows import dict_row

from api.auth import UserContext
from api.pool import Pool
from api.schemas import AlertPublic, ChangeKind, Severity
from api.scope import SCOPE, scope_params
from carewatch.db import alert_feed
from carewatch.db.audit import AuditEntry, write_audit
from devices.audience import DEFAULT_AUDIENCES
from devices.response import DEFAULT_POLICY

AlertStateFilter = Literal["unresolved", "open", "acknowledged", "resolved", "all"]
AlertAction = Literal["acknowledge", "resolve"]
Audience = Literal["care", "technical"]

# An alert's residence (+#11): a supervision alert names its own (the planned check's), a
# device rule's alert takes its device's.
_RESIDENCE_JOIN: Final = (
    "LEFT JOIN residences r ON r.id = coalesce(a.residence_id, d.residence_id)"
    " LEFT JOIN alert_responses ar ON ar.alert_id = a.id"
)

# The response (+#12) of an alert of a response rule, as one JSON object (api.schemas'
# AlertResponse); null for other alerts. No alert_responses row yet: nobody has touched it.
# ``site_promise`` (the alert's opening and the site's promise) gives the promise's deadlines
# and whether they were kept; with ``site_chain`` (the site's step times and whether it has a
# second group, migration 0016; null once the alert is resolved: nothing comes) it is what the
# next step of the escalation chain is computed from, in Python by the pure core
# (AlertResponse consumes both).
_RESPONSE_RULES: Final = "{" + ",".join(sorted(DEFAULT_POLICY.rules)) + "}"
RESPONSE_COLUMN: Final = f"""
    CASE WHEN a.rule = ANY ('{_RESPONSE_RULES}'::text[]) THEN jsonb_build_object(
        'state', coalesce(ar.state, 'open'), 'holder', ar.holder, 'offered_to', ar.offered_to,
        'accepted_at', ar.accepted_at, 'on_site_at', ar.on_site_at, 'on_site_by', ar.on_site_by,
        'on_site_source', ar.on_site_source, 'contact_made', ar.contact_made,
        'closed_at', ar.closed_at, 'closed_by', ar.closed_by, 'action', ar.action,
        'note', coalesce(ar.note, ''), 'escalated', coalesce(ar.escalated, '{{}}'::text[]),
        'site_chain', CASE WHEN a.state <> 'resolved' THEN jsonb_build_object(
            'steps', s.escalation_steps,
            'second_group', EXISTS (SELECT 1 FROM site_second_group g WHERE g.site_id = s.id))
            END,
        'site_promise', jsonb_build_object('opened_at', a.opened_at,
            'contact_s', s.contact_promise_s, 'on_site_s', s.on_site_promise_s))
    END AS response
"""  # noqa: S608 - constant fragments only

# Whether the alert's residence has a supervision plan in force (+#11): the latest version
# recorded, with check times, its nights (the evening's date, in the site's time zone) covering
# tonight or last night. A safety exception may need it (devices/audience.toml).
RESIDENCE_HAS_PLAN: Final = """
    coalesce((SELECT cardinality(p.check_times) > 0
                     AND (p.valid_from IS NULL
                          OR p.valid_from <= (now() AT TIME ZONE s.timezone)::date)
                     AND (p.valid_to IS NULL
                          OR p.valid_to >= (now() AT TIME ZONE s.timezone)::date - 1)
                FROM supervision_plans p
               WHERE p.residence_id = r.id AND p.recorded_at <= now()
               ORDER BY p.recorded_at DESC LIMIT 1), false)
"""

# An alert as the board shows it: these columns from these joins (the device page reads the
# same, api.device_queries).
ALERT_FROM: Final = f"""
    FROM alerts a
    JOIN devices d ON d.id = a.device_id
    JOIN sites s ON s.id = d.site_id
    {_RESIDENCE_JOIN}
"""

ALERT_COLUMNS: Final = (
    f"""
    a.id, a.device_id, d.label AS device_label, d.kind AS device_kind, d.site_id,
    s.name AS site_name, a.rule, a.severity, a.state,
    a.cleared_at IS NOT NULL AS cleared, a.cleared_reason,
    a.escalated_at IS NOT NULL AS escalated, a.count, a.reason, a.opened_at,
    a.reason_code, a.reason_args, a.cleared_reason_code, a.cleared_reason_args,
    a.acknowledged_at, a.acknowledged_by, a.resolved_at, a.resolved_by, a.escalated_at,
    r.id AS residence_id, r.label AS residence_label,
    s.alert_audiences AS site_audiences, {RESIDENCE_HAS_PLAN} AS residence_has_plan,
"""
    + RESPONSE_COLUMN
)

# Most severe first, then newest (the board's order).
SEVERITY_RANK: Final = (
    "CASE a.severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'warning' THEN 2 ELSE 1 END"
)


def _jsonb_literal(value: object) -> str:
    """Trusted data (the packaged audience table) as a jsonb constant of a statement."""
    text = orjson.dumps(value).decode()
    # Neither ends the literal nor reads as a placeholder: the table's names are [a-z_] words.
    assert "'" not in text
    assert "%" not in text
    return f"'{text}'::jsonb"


# Who an alert is for (issue 12), in SQL for the list's ``audience=`` filter and the notifier's
# push recipients: the same answer as devices.audience.AudienceTable.audiences, which gives the
# JSON's ``audiences`` (tests/integration/test_alert_audiences.py holds the two together).
_ROUTES: Final = _jsonb_literal(
    {rule: routing.value for rule, routing in DEFAULT_AUDIENCES.rules.items()}
)
_SAFETY: Final = _jsonb_literal(
    [
        {
            "kind": e.kind,
            "rule": e.rule,
            # SEVERITY_RANK counts from 1 (info); Severity.rank from 0.
            "min_rank": 0 if e.min_severity is None else e.min_severity.rank + 1,
            "needs_plan": e.needs_plan,
        }
        for e in DEFAULT_AUDIENCES.safety
    ]
)
_DEFAULT_ROUTE: Final = f"({_ROUTES} ->> a.rule)"
_SITE_ROUTE: Final = (
    "CASE WHEN s.alert_audiences ->> a.rule IN ('care', 'technical', 'both')"
    " THEN s.alert_audiences ->> a.rule END"
)
_ROUTE: Final = f"coalesce({_SITE_ROUTE}, {_DEFAULT_ROUTE})"
# A rule the table does not know reaches everyone.
IS_TECHNICAL: Final = f"({_DEFAULT_ROUTE} IS NULL OR {_ROUTE} IN ('technical', 'both'))"
IS_CARE: Final = f"""({_DEFAULT_ROUTE} IS NULL
    OR {_DEFAULT_ROUTE} IN ('care', 'both') OR {_ROUTE} IN ('care', 'both')
    OR EXISTS (SELECT 1 FROM jsonb_to_recordset({_SAFETY})
                        AS e(kind text, rule text, min_rank integer, needs_plan boolean)
                WHERE e.kind = d.kind AND e.rule = a.rule AND {SEVERITY_RANK} >= e.min_rank
                  AND (NOT e.needs_plan OR {RESIDENCE_HAS_PLAN})))"""  # noqa: S608 - constant fragments only

# --- statements (f-strings only join the constant fragments above; every value is a parameter)

_LIST: Final = f"""
    SELECT {ALERT_COLUMNS} {ALERT_FROM}
     WHERE {SCOPE}
       AND CASE %(state)s::text
             WHEN 'all' THEN true
             WHEN 'unresolved' THEN a.state <> 'resolved'
             ELSE a.state = %(state)s::text END
       AND (%(site_id)s::text IS NULL OR s.id = %(site_id)s::text)
       AND (%(severity)s::text IS NULL OR a.severity = %(severity)s::text)
       AND CASE %(audience)s::text
             WHEN 'care' THEN {IS_CARE}
             WHEN 'technical' THEN {IS_TECHNICAL}
             ELSE true END
     ORDER BY {SEVERITY_RANK} DESC, a.opened_at DESC, a.id DESC
     LIMIT %(limit)s
"""

_ONE: Final = f"SELECT {ALERT_COLUMNS} {ALERT_FROM} WHERE a.id = %(alert_id)s AND {SCOPE}"

_VISIBLE: Final = f"SELECT 1 {ALERT_FROM} WHERE a.id = %(alert_id)s AND {SCOPE}"

# Locks the alert row: a gateway resolving it, or a colleague acknowledging it at the same
# moment, waits for us and then sees the state we leave.
_LOCK: Final = (
    f"SELECT a.state, a.cleared_at IS NOT NULL AS cleared {ALERT_FROM}"
    f" WHERE a.id = %(alert_id)s AND {SCOPE} FOR UPDATE OF a"
)

_ACKNOWLEDGE: Final = """
    UPDATE alerts SET state = 'acknowledged', acknowledged_at = now(), acknowledged_by = %(by)s,
           updated_at = now()
     WHERE id = %(id)s
"""

# A cleared alert's condition is gone; it only waited for someone to take note.
_ACKNOWLEDGE_CLEARED: Final = """
    UPDATE alerts SET state = 'resolved', acknowledged_at = now(), acknowledged_by = %(by)s,
           resolved_at = now(), resolved_by = %(by)s, updated_at = now()
     WHERE id = %(id)s
"""

_RESOLVE: Final = """
    UPDATE alerts SET state = 'resolved', resolved_at = now(), resolved_by = %(by)s,
           updated_at = now()
     WHERE id = %(id)s
"""

_CHANGE_SELECT: Final = f"""
    SELECT c.id AS change_id, c.change, s.org_id, {ALERT_COLUMNS}
      FROM alert_changes c
      JOIN alerts a ON a.id = c.alert_id
      JOIN devices d ON d.id = a.device_id
      JOIN sites s ON s.id = d.site_id
      {_RESIDENCE_JOIN}
"""  # noqa: S608 - constant fragments only

_CHANGES_AFTER: Final = (
    f"{_CHANGE_SELECT} WHERE c.id > %(after_id)s AND {SCOPE} ORDER BY c.id LIMIT %(limit)s"
)

_CHANGES_FOR_FANOUT: Final = (
    f"{_CHANGE_SELECT} WHERE c.id > %(after_id)s OR c.id = ANY (%(missing)s::bigint[])"
    " ORDER BY c.id LIMIT %(limit)s"
)

_LATEST_CHANGE: Final = "SELECT coalesce(max(id), 0) AS latest FROM alert_changes"


# --- alerts ------------------------------------------------------------------------------------


async def list_alerts(
    pool: Pool,
    user: UserContext,
    *,
    state: AlertStateFilter = "unresolved",
    site_id: str | None = None,
    severity: Severity | None = None,
    audience: Audience | None = None,
    limit: int = 500,
) -> list[AlertPublic]:
    """The caller's alerts, most severe and newest first; with ``audience``, only those for
    that audience (devices/audience.py)."""
    params = {
        **scope_params(user),
        "state": state,
        "site_id": site_id,
        "severity": severity,
        "audience": audience,
        "limit": limit,
    }
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LIST, params)
        return [AlertPublic.model_validate(row) for row in await cur.fetchall()]


async def alert_visible(pool: Pool, user: UserContext, alert_id: int) -> bool:
    """True if the caller may see the alert (decides 403 against 404); writes no audit row."""
    async with pool.connection() as conn, conn.cursor() as cur:
        await cur.execute(_VISIBLE, {**scope_params(user), "alert_id": alert_id})
        return await cur.fetchone() is not None


async def peek_alert(pool: Pool, user: UserContext, alert_id: int) -> AlertPublic | None:
    """The alert if the caller may see it, without an audit row (a permission check's look)."""
    async with pool.connection() as conn:
        return await read_alert(conn, user, alert_id)


async def read_alert(
    conn: psycopg.AsyncConnection[Any], user: UserContext, alert_id: int
) -> AlertPublic | None:
    """The alert as the caller may see it, read on ``conn`` (in its transaction); no audit."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_ONE, {**scope_params(user), "alert_id": alert_id})
        row = await cur.fetchone()
    return None if row is None else AlertPublic.model_validate(row)


async def view_alert(
    pool: Pool, user: UserContext, alert_id: int, *, client: str | None = None
) -> AlertPublic | None:
    """The alert if the caller may see it, recording the access in the audit log."""
    async with pool.connection() as conn, conn.transaction():
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_ONE, {**scope_params(user), "alert_id": alert_id})
            row = await cur.fetchone()
        if row is None:
            return None
        alert = AlertPublic.model_validate(row)
        await write_audit(conn, user.auditor(client), [audit_entry(user, "alert.view", alert)])
        return alert


async def change_alert(
    pool: Pool,
    user: UserContext,
    alert_id: int,
    action: AlertAction,
    *,
    note: str | None = None,
    client: str | None = None,
) -> AlertPublic | None:
    """Acknowledge or resolve the alert if the caller may see it; None if they may not.

    Idempotent: acknowledging an acknowledged or resolved alert, or resolving a resolved one,
    changes nothing and records nothing. Acknowledging a ``cleared`` alert resolves it (its
    condition is gone; it only waited for someone to take note). A change, its alert_changes
    row, the NOTIFY that announces it and the audit row commit together or not at all.
    """
    scoped = {**scope_params(user), "alert_id": alert_id}
    async with pool.connection() as conn, conn.transaction():
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_LOCK, scoped)
            row = await cur.fetchone()
            if row is None:
                return None
            update, change = _transition(action, row["state"], cleared=row["cleared"])
            if update is not None:
                await cur.execute(update, {"by": user.username, "id": alert_id})
            await cur.execute(_ONE, scoped)
            changed = await cur.fetchone()
        assert changed is not None  # locked above, and still in scope
        alert = AlertPublic.model_validate(changed)
        if change is not None:
            await alert_feed.record_changes(conn, [(alert_id, change)])
            audit_action = "alert.acknowledge" if action == "acknowledge" else "alert.resolve"
            entry = audit_entry(user, audit_action, alert, note=note)
            await write_audit(conn, user.auditor(client), [entry])
        return alert


def _transition(
    action: AlertAction, state: str, *, cleared: bool
) -> tuple[str | None, ChangeKind | None]:
    """The UPDATE that ``action`` makes of an alert in ``state``, and the change it announces;
    (None, None) when it changes nothing."""
    if action == "acknowledge" and state == "open":
        if cleared:
            return _ACKNOWLEDGE_CLEARED, "alert.resolved"
        return _ACKNOWLEDGE, "alert.updated"
    if action == "resolve" and state != "resolved":
        return _RESOLVE, "alert.resolved"
    return None, None


def audit_entry(
    user: UserContext, action: str, alert: AlertPublic, *, note: str | None = None
) -> AuditEntry:
    """The audit line of ``user`` doing ``action`` to ``alert``."""
    return AuditEntry(
        action=action, org_id=user.org_id, alert_id=alert.id, device_id=alert.device_id, note=note
    )


# --- the change feed (SSE) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertChange:
    """One alert_changes row with the alert as it is now and where it belongs."""

    change_id: int
    change: ChangeKind
    org_id: str
    site_id: str
    alert: AlertPublic


def _alert_change(row: dict[str, Any]) -> AlertChange:
    return AlertChange(
        change_id=row["change_id"],
        change=row["change"],
        org_id=row["org_id"],
        site_id=row["site_id"],
        alert=AlertPublic.model_validate(row),
    )


async def changes_after(
    pool: Pool, user: UserContext, after_id: int, *, limit: int = 1000
) -> list[AlertChange]:
    """The caller's alert changes with an id above ``after_id`` (an SSE resume), oldest first."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _CHANGES_AFTER, {**scope_params(user), "after_id": after_id, "limit": limit}
        )
        return [_alert_change(row) for row in await cur.fetchall()]


async def latest_change_id(pool: Pool) -> int:
    """The highest alert_changes id so far (0 if none): where the SSE hub starts."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LATEST_CHANGE)
        row = await cur.fetchone()
        assert row is not None
        latest: int = row["latest"]
        return latest


async def changes_for_fanout(
    pool: Pool, after_id: int, missing_ids: Sequence[int], *, limit: int = 1000
) -> list[AlertChange]:
    """Every organisation's alert changes above ``after_id`` or among ``missing_ids``.

    Unscoped on purpose: one query per notification batch for the whole process; the SSE hub
    delivers each change only to subscribers whose organisation and sites include it.
    """
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _CHANGES_FOR_FANOUT,
            {"after_id": after_id, "missing": list(missing_ids), "limit": limit},
        )
        return [_alert_change(row) for row in await cur.fetchall()]
