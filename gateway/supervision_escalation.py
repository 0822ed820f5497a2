"""Escalation of the night checks' alerts: the lifecycle's rule, applied to supervision alerts.

The device rules escalate their own alerts (``devices.rules.evaluate_tick`` over each device's
board). A supervision alert (``supervision_missed``, ``physical_visit_needed``: ``planned_at``
set) belongs to a planned check, not to a device's rule state, so it is escalated here, by the
same rule: open (nobody acknowledged it), high or critical, and waiting since it opened (or was
raised) for the site's escalation time (``sites.rule_settings.escalation_s``, else the
catalog's) → ``escalated_at`` and an ``alert.updated`` change in the feed, which the board
announces again. One statement per watchdog pass; the watchdog's advisory lock keeps two
gateways from doing it twice, and ``escalated_at IS NULL`` makes a repeat harmless.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import psycopg

from carewatch.db.alert_feed import record_changes
from devices.rules import SITE_RULE_BOUNDS

_BOUNDS: Final = SITE_RULE_BOUNDS["escalation_s"]

# A site's override that is not a number within its bounds (stored before the bounds existed)
# is passed over for the catalog's value, as the device rules do (SiteRuleSettings.usable_part).
ESCALATE_SUPERVISION: Final = f"""
WITH due AS (
    SELECT a.id
    FROM alerts AS a
    JOIN devices AS d ON d.id = a.device_id
    JOIN sites AS s ON s.id = d.site_id
    WHERE a.planned_at IS NOT NULL AND a.state = 'open' AND a.escalated_at IS NULL
      AND a.severity IN ('high', 'critical')
      AND coalesce(a.raised_at, a.opened_at) <= %(now)s - make_interval(secs => CASE
            WHEN jsonb_typeof(s.rule_settings -> 'escalation_s') = 'number'
             AND (s.rule_settings ->> 'escalation_s')::numeric
                 BETWEEN {_BOUNDS.minimum} AND {_BOUNDS.maximum}
            THEN (s.rule_settings ->> 'escalation_s')::numeric
            ELSE %(default_s)s END)
    ORDER BY a.id
    FOR UPDATE OF a
)
UPDATE alerts SET escalated_at = %(now)s, updated_at = now()
FROM due WHERE alerts.id = due.id
RETURNING alerts.id
"""  # noqa: S608 - the bounds are constants, every value a parameter


async def escalate_supervision(
    conn: psycopg.AsyncConnection[Any], now: datetime, default_s: int
) -> int:
    """Escalate the supervision alerts that waited too long, in one transaction; how many."""
    async with conn.transaction():
        cur = await conn.execute(ESCALATE_SUPERVISION, {"now": now, "default_s": default_s})
        ids = sorted(row[0] for row in await cur.fetchall())
        if ids:
            await record_changes(conn, [(alert_id, "alert.updated") for alert_id in ids], at=now)
    return len(ids)
