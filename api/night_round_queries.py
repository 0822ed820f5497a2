"""The night round's SQL: each planned check of a night at the caller's sites, and where it
stands (+#11).

The checks are expanded from the residences' plan versions by the core
(:func:`devices.supervision.planned_checks`, as the gateway's supervision pass expands them), so
the board lists the same checks the gateway judges. A check's state is the pass's verdict as
stored in ``supervision_checks`` once it has judged the check; until then it is ``paused`` (an
absence covers the planned time), ``upcoming`` (its window has not opened) or ``due`` (open, and
the next pass judges it). Five statements per answer, whatever the number of residences: sites,
residences, plan versions, stored verdicts with absences and alerts.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, Final

from psycopg.rows import dict_row

from api.auth import UserContext
from api.pool import Pool
from api.schemas import (
    MAX_SUPERVISION_S,
    NIGHT_ROUND_RESIDENCES_MAX,
    NightRound,
    NightRoundCheck,
    NightRoundResidence,
    NightRoundSite,
)
from api.scope import SCOPE, scope_params
from carewatch.site_time import site_tz
from devices.supervision import (
    NIGHT_STARTS,
    CheckState,
    Interval,
    PlannedCheck,
    PlanVersion,
    local_instant,
    night_of,
    planned_checks,
)

log = logging.getLogger(__name__)

# --- statements (f-strings only join the constant fragments; every value is a parameter) ----

_SITES: Final = f"""
    SELECT s.id, s.name, s.timezone FROM sites s
     WHERE {SCOPE} AND (%(site_id)s::text IS NULL OR s.id = %(site_id)s::text)
     ORDER BY s.name, s.id
"""  # noqa: S608 - constant fragments only

# Only residences with a plan have checks; one more than the bound says it was exceeded.
_RESIDENCES: Final = f"""
    SELECT r.id, r.site_id, r.label FROM residences r JOIN sites s ON s.id = r.site_id
     WHERE {SCOPE} AND r.site_id = ANY (%(sites)s::text[])
       AND EXISTS (SELECT 1 FROM supervision_plans p WHERE p.residence_id = r.id)
     ORDER BY s.name, s.id, r.label, r.id
     LIMIT %(limit)s
"""  # noqa: S608 - constant fragments only

# The versions that can be in force when a window of the night opens: the latest one recorded
# by ``since`` (before every window) and those recorded after it until the night's end.
_PLANS: Final = """
    SELECT p.residence_id, p.recorded_at, p.check_times, p.weekdays, p.valid_from, p.valid_to,
           p.window_s, p.retry_s, p.follow_up
      FROM supervision_plans p
     WHERE p.residence_id = ANY (%(ids)s::bigint[]) AND p.recorded_at <= %(until)s
       AND p.recorded_at >= coalesce(
           (SELECT max(q.recorded_at) FROM supervision_plans q
             WHERE q.residence_id = p.residence_id AND q.recorded_at <= %(since)s),
           '-infinity')
     ORDER BY p.residence_id, p.recorded_at
"""

_STORED: Final = """
    SELECT residence_id, planned_at, state, seen_at, duration_s::float8 AS duration_s, not_seen,
           visit_needed, by_visit, camera_failed, retry_at, visited_at
      FROM supervision_checks
     WHERE residence_id = ANY (%(ids)s::bigint[])
       AND planned_at >= %(since)s AND planned_at < %(until)s
"""

# An absence covers [starts_at, least(expected_end, ended_at)) (migration 0007).
_ABSENCES: Final = """
    SELECT residence_id, starts_at, least(expected_end, ended_at) AS ends_at
      FROM absences
     WHERE residence_id = ANY (%(ids)s::bigint[]) AND starts_at < %(until)s
       AND (least(expected_end, ended_at) IS NULL OR least(expected_end, ended_at) > %(since)s)
"""

# The predicate of alerts_one_per_planned_check: its index answers.
_ALERTS: Final = """
    SELECT id, residence_id, planned_at FROM alerts
     WHERE residence_id = ANY (%(ids)s::bigint[]) AND planned_at IS NOT NULL
       AND planned_at >= %(since)s AND planned_at < %(until)s AND state <> 'resolved'
     ORDER BY id
"""


@dataclass(slots=True)
class _Site:
    id: str
    name: str
    timezone: str
    tz: tzinfo
    night: date
    residences: list[tuple[int, str]] = field(default_factory=list)


async def night_round(
    pool: Pool, user: UserContext, *, site_id: str | None = None, night: date | None = None
) -> NightRound | None:
    """The night round of the caller's sites (of ``site_id`` only; None if it is not theirs)
    for ``night`` (default: the current night in each site's time zone)."""
    now = datetime.now(UTC)
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SITES, {**scope_params(user), "site_id": site_id})
        sites = {
            row["id"]: _Site(
                row["id"], row["name"], row["timezone"], tz, night or night_of(now, tz)
            )
            for row in await cur.fetchall()
            for tz in [site_tz(row["timezone"])]
        }
        if site_id is not None and not sites:
            return None
        if not sites:
            return NightRound(sites=[], truncated=False)
        await cur.execute(
            _RESIDENCES,
            {**scope_params(user), "sites": list(sites), "limit": NIGHT_ROUND_RESIDENCES_MAX + 1},
        )
        rows = await cur.fetchall()
        truncated = len(rows) > NIGHT_ROUND_RESIDENCES_MAX
        labels: dict[int, str] = {}
        site_of: dict[int, _Site] = {}
        for row in rows[:NIGHT_ROUND_RESIDENCES_MAX]:
            site = sites[row["site_id"]]
            site.residences.append((row["id"], row["label"]))
            labels[row["id"]] = row["label"]
            site_of[row["id"]] = site
        if not labels:
            return NightRound(
                sites=[_answer(site, [], {}) for site in sites.values()], truncated=False
            )
        # Every check of the nights asked is planned from the first noon on and before the last
        # noon after; a window opens at most MAX_SUPERVISION_S before its check.
        since = min(local_instant(s.night, NIGHT_STARTS, s.tz) for s in sites.values())
        until = max(
            local_instant(s.night + timedelta(days=1), NIGHT_STARTS, s.tz) for s in sites.values()
        )
        span = {
            "ids": sorted(labels),
            "since": since - timedelta(seconds=MAX_SUPERVISION_S),
            "until": until,
        }
        await cur.execute(_PLANS, span)
        versions: dict[int, list[PlanVersion]] = defaultdict(list)
        for row in await cur.fetchall():
            version = _version(row)
            if version is not None:
                versions[row["residence_id"]].append(version)
        await cur.execute(_STORED, span)
        stored = {(row["residence_id"], row["planned_at"]): row for row in await cur.fetchall()}
        await cur.execute(_ABSENCES, span)
        absences: dict[int, list[Interval]] = defaultdict(list)
        for row in await cur.fetchall():
            absences[row["residence_id"]].append(Interval(row["starts_at"], row["ends_at"]))
        await cur.execute(_ALERTS, span)
        alerts: dict[tuple[int, datetime], list[int]] = defaultdict(list)
        for row in await cur.fetchall():
            alerts[row["residence_id"], row["planned_at"]].append(row["id"])

    checks: dict[str, list[NightRoundCheck]] = defaultdict(list)
    open_alerts: dict[int, list[int]] = defaultdict(list)
    for residence_id, site in site_of.items():
        for check in planned_checks(versions[residence_id], site.night, site.tz):
            key = (residence_id, check.planned_at)
            open_alerts[residence_id] += alerts.get(key, [])
            checks[site.id].append(
                _check(
                    check,
                    labels[residence_id],
                    site.tz,
                    stored.get(key),
                    absences[residence_id],
                    alerts.get(key, []),
                    now,
                )
            )
    answered = []
    for site in sites.values():
        in_order = sorted(
            checks[site.id], key=lambda c: (c.planned_at, c.residence_label, c.residence_id)
        )
        answered.append(_answer(site, in_order, open_alerts))
    return NightRound(sites=answered, truncated=truncated)


def _answer(
    site: _Site, checks: list[NightRoundCheck], open_alerts: dict[int, list[int]]
) -> NightRoundSite:
    return NightRoundSite(
        site_id=site.id,
        site_name=site.name,
        timezone=site.timezone,
        night=site.night,
        residences=[
            NightRoundResidence(
                id=residence_id,
                label=label,
                open_alert_ids=sorted(open_alerts.get(residence_id, [])),
            )
            for residence_id, label in site.residences
        ],
        checks=checks,
    )


def _check(
    check: PlannedCheck,
    label: str,
    tz: tzinfo,
    stored: dict[str, Any] | None,
    absences: list[Interval],
    alert_ids: list[int],
    now: datetime,
) -> NightRoundCheck:
    common: dict[str, Any] = {
        "residence_id": int(check.residence_id),
        "residence_label": label,
        "planned_at": check.planned_at,
        "planned_local": check.planned_at.astimezone(tz).strftime("%H:%M"),
        "window_start": check.window_start,
        "window_end": check.window_end,
        "alert_ids": sorted(alert_ids),
    }
    if stored is not None:
        return NightRoundCheck(
            **common,
            state=CheckState(stored["state"]),
            judged=True,
            seen_at=stored["seen_at"],
            duration_s=stored["duration_s"],
            not_seen=stored["not_seen"],
            visit_needed=stored["visit_needed"],
            by_visit=stored["by_visit"],
            camera_failed=stored["camera_failed"],
            retry_at=stored["retry_at"],
            visited_at=stored["visited_at"],
        )
    if any(absence.contains(check.planned_at) for absence in absences):
        state = CheckState.PAUSED
    elif now < check.window_start:
        state = CheckState.UPCOMING
    else:
        state = CheckState.DUE  # the next supervision pass judges it
    return NightRoundCheck(**common, state=state, judged=False)


def _version(row: dict[str, Any]) -> PlanVersion | None:
    """A stored version as the core's; None if the core refuses it (the gateway leaves such a
    version out too, and logs it)."""
    try:
        return PlanVersion.from_row(
            str(row["residence_id"]),
            row["recorded_at"],
            row["check_times"],
            row["weekdays"],
            row["valid_from"],
            row["valid_to"],
            row["window_s"],
            row["retry_s"],
            row["follow_up"],
        )
    except ValueError:
        return None
