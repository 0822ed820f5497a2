"""Every SQL statement of the API's resources, each scoped by the caller's organisation and sites.

The scope is part of each statement's WHERE clause, never a filter applied afterwards: a row
of another organisation, or of a site the caller is not given, is never read at all, and the
routes answer 404 for it as if it did not exist. The one unscoped query,
:func:`changes_for_fanout`, feeds the SSE hub, which hands each change only to the subscribers
of its organisation and sites.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import psycopg
import psycopg.errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from api.auth import UserContext
from api.errors import SiteIdTaken
from api.pool import Pool
from api.schemas import (
    AlertPublic,
    ChangeKind,
    Severity,
    SiteCreate,
    SiteDetail,
    SitePublic,
    SiteUpdate,
)

AlertStateFilter = Literal["unresolved", "open", "acknowledged", "resolved", "all"]
AlertAction = Literal["acknowledge", "resolve"]

# The caller's scope, for statements that join sites as ``s`` and take the parameters of
# _scope(): the organisation, and the sites if the user is limited to some.
_SCOPE: Final = (
    "s.org_id = %(org_id)s AND (%(site_ids)s::text[] IS NULL OR s.id = ANY (%(site_ids)s::text[]))"
)

_ALERT_FROM: Final = """
    FROM alerts a
    JOIN devices d ON d.id = a.device_id
    JOIN sites s ON s.id = d.site_id
"""

_ALERT_COLUMNS: Final = """
    a.id, a.device_id, d.label AS device_label, d.kind AS device_kind, d.site_id,
    s.name AS site_name, a.rule, a.severity, a.state,
    a.cleared_at IS NOT NULL AS cleared, a.cleared_reason,
    a.escalated_at IS NOT NULL AS escalated, a.count, a.reason, a.opened_at,
    a.acknowledged_at, a.acknowledged_by, a.resolved_at, a.resolved_by, a.escalated_at
"""

# Most severe first, then newest (the board's order).
_SEVERITY_RANK: Final = (
    "CASE a.severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'warning' THEN 2 ELSE 1 END"
)


def _scope(user: UserContext) -> dict[str, Any]:
    return {"org_id": user.org_id, "site_ids": user.site_list}


# --- alerts ------------------------------------------------------------------------------------


async def list_alerts(
    pool: Pool,
    user: UserContext,
    *,
    state: AlertStateFilter = "unresolved",
    site_id: str | None = None,
    severity: Severity | None = None,
    limit: int = 500,
) -> list[AlertPublic]:
    """The caller's alerts, most severe and newest first."""
    params = {
        **_scope(user),
        "state": state,
        "site_id": site_id,
        "severity": severity,
        "limit": limit,
    }
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""
            SELECT {_ALERT_COLUMNS} {_ALERT_FROM}
             WHERE {_SCOPE}
               AND CASE %(state)s::text
                     WHEN 'all' THEN true
                     WHEN 'unresolved' THEN a.state <> 'resolved'
                     ELSE a.state = %(state)s::text END
               AND (%(site_id)s::text IS NULL OR s.id = %(site_id)s::text)
               AND (%(severity)s::text IS NULL OR a.severity = %(severity)s::text)
             ORDER BY {_SEVERITY_RANK} DESC, a.opened_at DESC, a.id DESC
             LIMIT %(limit)s
            """,
            params,
        )
        return [AlertPublic.model_validate(row) for row in await cur.fetchall()]


async def _select_alert(
    cur: psycopg.AsyncCursor[dict[str, Any]], user: UserContext, alert_id: int
) -> AlertPublic | None:
    await cur.execute(
        f"SELECT {_ALERT_COLUMNS} {_ALERT_FROM} WHERE a.id = %(alert_id)s AND {_SCOPE}",
        {**_scope(user), "alert_id": alert_id},
    )
    row = await cur.fetchone()
    return None if row is None else AlertPublic.model_validate(row)


async def _audit(
    cur: psycopg.AsyncCursor[dict[str, Any]],
    user: UserContext,
    action: str,
    alert: AlertPublic,
    *,
    note: str | None = None,
    client: str | None = None,
) -> None:
    await cur.execute(
        "INSERT INTO audit_log (user_id, username, org_id, action, alert_id, device_id, note,"
        " client) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (user.user_id, user.username, user.org_id, action, alert.id, alert.device_id, note, client),
    )


async def alert_visible(pool: Pool, user: UserContext, alert_id: int) -> bool:
    """True if the caller may see the alert (decides 403 against 404); writes no audit row."""
    async with pool.connection() as conn, conn.cursor() as cur:
        await cur.execute(
            f"SELECT 1 {_ALERT_FROM} WHERE a.id = %(alert_id)s AND {_SCOPE}",
            {**_scope(user), "alert_id": alert_id},
        )
        return await cur.fetchone() is not None


async def view_alert(
    pool: Pool, user: UserContext, alert_id: int, *, client: str | None = None
) -> AlertPublic | None:
    """The alert if the caller may see it, recording the access in the audit log."""
    async with (
        pool.connection() as conn,
        conn.transaction(),
        conn.cursor(row_factory=dict_row) as cur,
    ):
        alert = await _select_alert(cur, user, alert_id)
        if alert is not None:
            await _audit(cur, user, "alert.view", alert, client=client)
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
    async with (
        pool.connection() as conn,
        conn.transaction(),
        conn.cursor(row_factory=dict_row) as cur,
    ):
        # Locks the alert row: a gateway resolving it, or a colleague acknowledging it at the
        # same moment, waits for us and then sees the state we leave.
        await cur.execute(
            f"SELECT a.state, a.cleared_at IS NOT NULL AS cleared {_ALERT_FROM}"
            f" WHERE a.id = %(alert_id)s AND {_SCOPE} FOR UPDATE OF a",
            {**_scope(user), "alert_id": alert_id},
        )
        row = await cur.fetchone()
        if row is None:
            return None
        change: ChangeKind | None = None
        if action == "acknowledge" and row["state"] == "open" and not row["cleared"]:
            await cur.execute(
                "UPDATE alerts SET state = 'acknowledged', acknowledged_at = now(),"
                " acknowledged_by = %s, updated_at = now() WHERE id = %s",
                (user.username, alert_id),
            )
            change = "alert.updated"
        elif action == "acknowledge" and row["state"] == "open":
            await cur.execute(
                "UPDATE alerts SET state = 'resolved', acknowledged_at = now(),"
                " acknowledged_by = %(by)s, resolved_at = now(), resolved_by = %(by)s,"
                " updated_at = now() WHERE id = %(id)s",
                {"by": user.username, "id": alert_id},
            )
            change = "alert.resolved"
        elif action == "resolve" and row["state"] != "resolved":
            await cur.execute(
                "UPDATE alerts SET state = 'resolved', resolved_at = now(), resolved_by = %s,"
                " updated_at = now() WHERE id = %s",
                (user.username, alert_id),
            )
            change = "alert.resolved"
        alert = await _select_alert(cur, user, alert_id)
        assert alert is not None  # locked above, and still in scope
        if change is not None:
            await cur.execute(
                "INSERT INTO alert_changes (alert_id, change) VALUES (%s, %s) RETURNING id",
                (alert_id, change),
            )
            change_row = await cur.fetchone()
            assert change_row is not None
            # Delivered to the listeners when (and only if) this transaction commits.
            await cur.execute("SELECT pg_notify('carewatch_alerts', %s)", (str(change_row["id"]),))
            audit_action = "alert.acknowledge" if action == "acknowledge" else "alert.resolve"
            await _audit(cur, user, audit_action, alert, note=note, client=client)
        return alert


# --- the change feed (SSE) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertChange:
    """One alert_changes row with the alert as it is now and where it belongs."""

    change_id: int
    change: ChangeKind
    org_id: str
    site_id: str
    alert: AlertPublic


_CHANGE_SELECT: Final = f"""
    SELECT c.id AS change_id, c.change, s.org_id, {_ALERT_COLUMNS}
      FROM alert_changes c
      JOIN alerts a ON a.id = c.alert_id
      JOIN devices d ON d.id = a.device_id
      JOIN sites s ON s.id = d.site_id
"""


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
            f"{_CHANGE_SELECT} WHERE c.id > %(after_id)s AND {_SCOPE}"
            " ORDER BY c.id LIMIT %(limit)s",
            {**_scope(user), "after_id": after_id, "limit": limit},
        )
        return [_alert_change(row) for row in await cur.fetchall()]


async def latest_change_id(pool: Pool) -> int:
    """The highest alert_changes id so far (0 if none): where the SSE hub starts."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT coalesce(max(id), 0) AS latest FROM alert_changes")
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
            f"{_CHANGE_SELECT} WHERE c.id > %(after_id)s OR c.id = ANY (%(missing)s::bigint[])"
            " ORDER BY c.id LIMIT %(limit)s",
            {"after_id": after_id, "missing": list(missing_ids), "limit": limit},
        )
        return [_alert_change(row) for row in await cur.fetchall()]


# --- sites -------------------------------------------------------------------------------------


async def list_sites(pool: Pool, user: UserContext) -> list[SitePublic]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT s.id, s.name, s.timezone FROM sites s WHERE {_SCOPE} ORDER BY s.name, s.id",
            _scope(user),
        )
        return [SitePublic.model_validate(row) for row in await cur.fetchall()]


_SITE_DETAIL: Final = "s.id, s.name, s.timezone, s.rule_settings"


async def get_site(pool: Pool, user: UserContext, site_id: str) -> SiteDetail | None:
    """The site with its rule settings, if the caller may see it."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_SITE_DETAIL} FROM sites s WHERE s.id = %(site_id)s AND {_SCOPE}",
            {**_scope(user), "site_id": site_id},
        )
        row = await cur.fetchone()
    return None if row is None else SiteDetail.model_validate(row)


async def update_site(
    pool: Pool, user: UserContext, site_id: str, change: SiteUpdate, *, client: str | None = None
) -> SiteDetail | None:
    """Apply ``change`` to a site the caller may see (None if not), with an audit row naming
    what changed. The gateways read rule settings with every evaluation: no restart."""
    values = change.model_dump(exclude_none=True)
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"""
            UPDATE sites s SET
                name = coalesce(%(name)s, s.name),
                timezone = coalesce(%(timezone)s, s.timezone),
                rule_settings = coalesce(%(rule_settings)s, s.rule_settings)
            WHERE s.id = %(site_id)s AND {_SCOPE}
            RETURNING {_SITE_DETAIL}
            """,
            {
                **_scope(user),
                "site_id": site_id,
                "name": change.name,
                "timezone": change.timezone,
                "rule_settings": None
                if change.rule_settings is None
                else Jsonb(change.rule_settings),
            },
        )
        row = await cur.fetchone()
        if row is None:
            return None
        await cur.execute(
            "INSERT INTO audit_log (user_id, username, org_id, action, note, client)"
            " VALUES (%s, %s, %s, 'site.update', %s, %s)",
            (user.user_id, user.username, user.org_id, f"{site_id}: {values}", client),
        )
    return SiteDetail.model_validate(row)


async def create_site(pool: Pool, user: UserContext, site: SiteCreate) -> SitePublic:
    """Add a site to the caller's organisation; SiteIdTaken if the id is in use."""
    try:
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "INSERT INTO sites (id, org_id, name, timezone) VALUES (%s, %s, %s, %s)"
                " RETURNING id, name, timezone",
                (site.id, user.org_id, site.name, site.timezone),
            )
            row = await cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise SiteIdTaken(site.id) from None
    assert row is not None
    return SitePublic.model_validate(row)
