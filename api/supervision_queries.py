"""The SQL of ``GET /api/v1/supervision/summary`` (+#11): planned checks counted per site and
night, and the effect estimate's lock visits and assumptions.

:data:`_SITES` is the one statement that decides the scope (:mod:`api.scope`, then the asked-for
site); the others take the ids it returned. The counts are those of
:class:`devices.supervision.NightTally`, over the verdicts the gateway's supervision pass stored
in ``supervision_checks`` (one row per planned check); ``tests/integration/
test_supervision_summary_api.py`` checks the two agree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

from psycopg.rows import dict_row

from api.auth import UserContext
from api.pool import Pool
from api.schemas import (
    SupervisionAssumptions,
    SupervisionEffect,
    SupervisionNight,
    SupervisionSiteSummary,
    SupervisionSummary,
    SupervisionTally,
)
from api.scope import SCOPE, scope_params

ASSUMPTIONS_EXPLAINED: Final = {
    "visit_minutes": (
        "staff minutes one physical night visit takes, travel included: each check the camera"
        " did (done in its window or late) avoided one"
    ),
    "key_handling_minutes": (
        "staff minutes of fetching and returning keys that one visit proved by a digital lock saves"
    ),
}
TALLY_FIELDS: Final = tuple(SupervisionTally.model_fields)

# --- statements (f-strings only join constant fragments; every value is a parameter) --------

_SITES: Final = f"""
    SELECT s.id, s.name, s.timezone, s.visit_minutes, s.key_handling_minutes FROM sites s
     WHERE {SCOPE}
       AND (%(site_id)s::text IS NULL OR s.id = %(site_id)s::text)
     ORDER BY s.name, s.id
"""  # noqa: S608 - constant fragments only

# NightTally.add, column by column: every row is a planned check (paused ones included);
# replaced_by_visits is a visited check whose camera had failed.
_NIGHTS: Final = """
    SELECT r.site_id, c.night,
           count(*) AS planned,
           count(*) FILTER (WHERE c.state = 'paused') AS paused,
           count(*) FILTER (WHERE c.state = 'done') AS done_in_window,
           count(*) FILTER (WHERE c.state = 'late') AS late,
           count(*) FILTER (WHERE c.state = 'missed') AS missed,
           count(*) FILTER (WHERE c.not_seen) AS not_seen,
           count(*) FILTER (WHERE c.visit_needed) AS visits_needed,
           count(*) FILTER (WHERE c.state = 'visited' AND c.camera_failed) AS replaced_by_visits
      FROM supervision_checks c
      JOIN residences r ON r.id = c.residence_id
     WHERE r.site_id = ANY (%(site_ids)s::text[])
       AND c.night >= %(since)s AND c.night <= %(until)s
     GROUP BY r.site_id, c.night
"""

# A lock visit's night as devices.supervision.night_of names it: local time from noon on is
# that date's night, before noon the previous date's (local time minus 12 hours, its date).
_LOCK_NIGHT: Final = "((v.visited_at AT TIME ZONE s.timezone) - interval '12 hours')::date"
# The bounds on visited_at itself (a day wider than any time zone either side) let the
# planner use the visits' unique (residence_id, visited_at, source) index.
_LOCK_VISITS: Final = f"""
    SELECT r.site_id, {_LOCK_NIGHT} AS night, count(*) AS lock_visits
      FROM physical_visits v
      JOIN residences r ON r.id = v.residence_id
      JOIN sites s ON s.id = r.site_id
     WHERE r.site_id = ANY (%(site_ids)s::text[]) AND v.source = 'lock'
       AND v.visited_at >= %(since)s::date - interval '1 day'
       AND v.visited_at < %(until)s::date + interval '3 days'
       AND {_LOCK_NIGHT} >= %(since)s AND {_LOCK_NIGHT} <= %(until)s
     GROUP BY 1, 2
"""  # noqa: S608 - constant fragments only


@dataclass(frozen=True, slots=True)
class SummaryQuery:
    """Nights ``since`` to ``until`` (both included, already checked); ``site`` None: every
    site the caller may see."""

    since: date
    until: date
    site: str | None = None


async def supervision_summary(
    pool: Pool, user: UserContext, query: SummaryQuery
) -> SupervisionSummary | None:
    """The summary of the caller's sites (None: the asked-for site is not one of them)."""
    params: dict[str, Any] = {**scope_params(user), "site_id": query.site}
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SITES, params)
        sites = await cur.fetchall()
        if query.site is not None and not sites:
            return None
        ids = {
            "site_ids": [site["id"] for site in sites],
            "since": query.since,
            "until": query.until,
        }
        await cur.execute(_NIGHTS, ids)
        tallies = await cur.fetchall()
        await cur.execute(_LOCK_VISITS, ids)
        locks = await cur.fetchall()
    nights: dict[str, dict[date, dict[str, int]]] = defaultdict(dict)
    for row in tallies:
        nights[row["site_id"]][row["night"]] = {name: row[name] for name in TALLY_FIELDS}
    for row in locks:
        nights[row["site_id"]].setdefault(row["night"], {})["lock_visits"] = row["lock_visits"]
    return SupervisionSummary(
        since=query.since,
        until=query.until,
        sites=[_site_summary(site, nights[site["id"]]) for site in sites],
        assumptions_explained=ASSUMPTIONS_EXPLAINED,
    )


def _site_summary(
    site: dict[str, Any], nights: dict[date, dict[str, int]]
) -> SupervisionSiteSummary:
    listed = [SupervisionNight(night=night, **nights[night]) for night in sorted(nights)]
    totals = SupervisionTally(
        **{name: sum(getattr(night, name) for night in listed) for name in TALLY_FIELDS}
    )
    assumptions = SupervisionAssumptions(
        visit_minutes=site["visit_minutes"], key_handling_minutes=site["key_handling_minutes"]
    )
    visits_avoided = totals.done_in_window + totals.late
    lock_visits = sum(night.lock_visits for night in listed)
    return SupervisionSiteSummary(
        site_id=site["id"],
        site_name=site["name"],
        timezone=site["timezone"],
        nights=listed,
        totals=totals,
        effect=SupervisionEffect(
            visits_avoided=visits_avoided,
            staff_minutes_saved=visits_avoided * assumptions.visit_minutes,
            lock_visits=lock_visits,
            key_minutes_saved=lock_visits * assumptions.key_handling_minutes,
        ),
        assumptions=assumptions,
    )
