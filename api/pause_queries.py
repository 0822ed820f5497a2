"""What is paused now at the caller's sites (+#11): residences whose resident is away and devices
in repair, for the board's "Paused now". Scoped like every query (a residence and a device are
seen through their site, ``s``).

"Now" is the database's ``now()``, the clock the absences and windows were recorded and ended
by: a pause is current from ``starts_at`` until the first of its ends, so one that expired, was
ended early (an upcoming one ended is cancelled: its end lies before its start) or has not begun
is not listed.
"""

from __future__ import annotations

from typing import Any, Final

from psycopg.rows import dict_row

from api.auth import UserContext
from api.pool import Pool
from api.schemas import PAUSES_LISTED_MAX, PausedDevice, PausedResidence, PausesPublic
from api.scope import SCOPE, scope_params
from carewatch.site_time import site_tz

_SITE: Final = f"SELECT 1 FROM sites s WHERE s.id = %(site_id)s AND {SCOPE}"  # noqa: S608 - constant fragments only

_SITE_FILTER: Final = f"{SCOPE} AND (%(site_id)s::text IS NULL OR s.id = %(site_id)s::text)"

# The absence's cover ends at least(expected_end, ended_at); least() skips NULLs, both NULL is
# open-ended. Absences are few; the residences of the caller's sites bound the join.
_ABSENCES: Final = f"""
    SELECT a.id AS absence_id, r.id AS residence_id, r.label AS residence_label,
           s.id AS site_id, s.name AS site_name, s.timezone,
           a.reason, a.starts_at, a.expected_end, a.note
      FROM absences a
      JOIN residences r ON r.id = a.residence_id
      JOIN sites s ON s.id = r.site_id
     WHERE {_SITE_FILTER}
       AND a.starts_at <= now()
       AND coalesce(least(a.expected_end, a.ended_at), 'infinity') > now()
     ORDER BY s.name, s.id, r.label, a.starts_at, a.id
     LIMIT %(limit)s
"""  # noqa: S608 - constant fragments only

# A window's end is least(ends_at, ended_at) (ends_at is never NULL). A decommissioned device is
# off the board whatever its window says.
_MAINTENANCE: Final = f"""
    SELECT m.id AS maintenance_id, d.id AS device_id, d.kind AS device_kind,
           d.label AS device_label, r.id AS residence_id, r.label AS residence_label,
           s.id AS site_id, s.name AS site_name, s.timezone,
           m.starts_at, least(m.ends_at, m.ended_at) AS ends_at, m.note
      FROM device_maintenance m
      JOIN devices d ON d.id = m.device_id
      JOIN sites s ON s.id = d.site_id
      LEFT JOIN residences r ON r.id = d.residence_id
     WHERE {_SITE_FILTER}
       AND d.status = 'active'
       AND m.starts_at <= now()
       AND least(m.ends_at, m.ended_at) > now()
     ORDER BY s.name, s.id, d.label, d.id, m.starts_at, m.id
     LIMIT %(limit)s
"""  # noqa: S608 - constant fragments only


def _local(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its site's time zone as one the browser knows (the default if unknown)."""
    return {**row, "timezone": str(site_tz(row["timezone"]))}


async def paused_now(
    pool: Pool, user: UserContext, *, site_id: str | None = None
) -> PausesPublic | None:
    """The current absences and maintenance windows of the caller's sites (of ``site_id`` only;
    None if it is not theirs), each by site and label, at most ``PAUSES_LISTED_MAX`` of each."""
    params = {**scope_params(user), "site_id": site_id, "limit": PAUSES_LISTED_MAX + 1}
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        if site_id is not None:
            await cur.execute(_SITE, params)
            if await cur.fetchone() is None:
                return None
        await cur.execute(_ABSENCES, params)
        absences = await cur.fetchall()
        await cur.execute(_MAINTENANCE, params)
        windows = await cur.fetchall()
    return PausesPublic(
        absences=[PausedResidence.model_validate(_local(r)) for r in absences[:PAUSES_LISTED_MAX]],
        maintenance=[PausedDevice.model_validate(_local(r)) for r in windows[:PAUSES_LISTED_MAX]],
        truncated=max(len(absences), len(windows)) > PAUSES_LISTED_MAX,
    )
