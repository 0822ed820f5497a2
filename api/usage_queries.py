"""Every SQL statement of the usage report (``GET /api/v1/usage``).

:func:`selected_sites` is the one statement that decides the scope (:mod:`api.scope`: the
caller's organisation, then the user's sites), then the asked-for site. Every other statement
takes the ids it returned (``site_id = ANY (%(site_ids)s)``), so nothing outside them is read.

Nothing here reads ``events``. The grain follows the buckets shown, so that the cost follows the
number of buckets and sites, not the number of events:

- day and week buckets read ``usage_site_daily`` (a year of one site: ~365 rows per type);
- hour buckets and the night-hour camera checks read ``usage_site_hourly``;
- robot minutes per robot read ``usage_device_daily`` for day and week buckets (robots only,
  one type; ``usage_device_hourly`` for hour buckets, and for a robot whose site is in another
  time zone than the report's: its local days are not the report's);
- alert counts, response times and availability read ``alerts`` (small: thousands a year) with
  ``devices``; the first two and the slowest acknowledgements in one read of the period's.

The rollups are kept by the gateway (carewatch/db/rollups.py; migrations 0005 and 0018).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from api.auth import UserContext
from api.schemas import UsageBucket
from api.scope import SCOPE, scope_params
from carewatch.db.rollups import BATTERY_REPLACED, LOCK_VISIT

Connection = psycopg.AsyncConnection[Any]

# The rollup types the report reads (heartbeats are never rolled up). Lock visits and battery
# replacements are types the rollups derive; the others are event types as devices send them.
CAMERA_CHECK: Final = "camera.check_ended"
ROBOT_INTERACTION: Final = "robot.interaction"
ALARM: Final = "alarm.pressed"
REPORT_TYPES: Final = (CAMERA_CHECK, LOCK_VISIT, ROBOT_INTERACTION, ALARM, BATTERY_REPLACED)

# A night is 18:00-06:00 local: these local hours are not night.
_DAY_HOURS: Final = (6, 17)


@dataclass(frozen=True, slots=True)
class SiteRow:
    """A site the report covers."""

    id: str
    name: str
    timezone: str


@dataclass(frozen=True, slots=True)
class RollupRow:
    """One (site, bucket, type) sum. ``bucket``: a local date (day/week) or a UTC hour."""

    site_id: str
    bucket: date | datetime
    type: str
    events: int
    duration_s: float


@dataclass(frozen=True, slots=True)
class Period:
    """The report's period, already widened to whole buckets and in the report's time zone.

    ``first_day``/``end_day`` (exclusive) are the local dates it covers; for hour buckets they
    are the dates of its first and last hour (the daily rollup is not read then).
    """

    since: datetime
    until: datetime
    first_day: date
    end_day: date
    bucket: UsageBucket
    timezone: str


# --- statements (f-strings only join constant fragments; every value is a parameter) --------

_SELECTED_SITES: Final = f"""
    SELECT s.id, s.name, s.timezone FROM sites s
     WHERE {SCOPE}
       AND (%(site_id)s::text IS NULL OR s.id = %(site_id)s::text)
     ORDER BY s.name, s.id
"""  # noqa: S608 - constant fragments only

# Hour buckets read the hourly rollup; day and week buckets the daily one, where {bucket} is
# the bucket of a local date. Week buckets start on Monday: date_trunc('week', ...) is the ISO
# week, which does.
_HOURLY_ROLLUPS: Final = """
    SELECT site_id, bucket, type, sum(events)::bigint AS events, sum(duration_s) AS duration_s
      FROM usage_site_hourly
     WHERE site_id = ANY (%(site_ids)s::text[]) AND type = ANY (%(types)s::text[])
       AND bucket >= %(since)s AND bucket < %(until)s
     GROUP BY site_id, bucket, type
"""
_DAILY_ROLLUPS: Final = sql.SQL("""
    SELECT site_id, {bucket} AS bucket, type,
           sum(events)::bigint AS events, sum(duration_s) AS duration_s
      FROM usage_site_daily
     WHERE site_id = ANY (%(site_ids)s::text[]) AND type = ANY (%(types)s::text[])
       AND day >= %(first_day)s AND day < %(end_day)s
     GROUP BY 1, 2, 3
""")
_ROLLUPS: Final[dict[UsageBucket, sql.SQL | sql.Composed]] = {
    "hour": sql.SQL(_HOURLY_ROLLUPS),
    "day": _DAILY_ROLLUPS.format(bucket=sql.Identifier("day")),
    "week": _DAILY_ROLLUPS.format(bucket=sql.SQL("date_trunc('week', day)::date")),
}

# The type is a literal, not a parameter, here and in _ROBOT_MINUTES: the planner must see it
# to use the partial index of that type (migration 0006), even in a generic plan. {bucket} is
# the hourly rollup's UTC hour as a bucket of the report's time zone.
_NIGHT_CHECKS_BY: Final = sql.SQL("""
    SELECT {bucket} AS b, sum(events)::bigint
      FROM usage_site_hourly
     WHERE site_id = ANY (%(site_ids)s::text[]) AND type = {camera_check}
       AND bucket >= %(since)s AND bucket < %(until)s
       AND extract(hour FROM bucket AT TIME ZONE %(tz)s) NOT BETWEEN %(day_from)s AND %(day_to)s
     GROUP BY 1
""")
_NIGHT_CHECKS: Final[dict[UsageBucket, sql.Composed]] = {
    "hour": _NIGHT_CHECKS_BY.format(
        bucket=sql.Identifier("bucket"), camera_check=sql.Literal(CAMERA_CHECK)
    ),
    "day": _NIGHT_CHECKS_BY.format(
        bucket=sql.SQL("(bucket AT TIME ZONE %(tz)s)::date"),
        camera_check=sql.Literal(CAMERA_CHECK),
    ),
    "week": _NIGHT_CHECKS_BY.format(
        bucket=sql.SQL("date_trunc('week', bucket AT TIME ZONE %(tz)s)::date"),
        camera_check=sql.Literal(CAMERA_CHECK),
    ),
}

# The devices that existed at some point in the period: created before its end and not
# decommissioned before its start.
_LIVED_IN_PERIOD: Final = """
    d.site_id = ANY (%(site_ids)s::text[])
    AND d.created_at < %(until)s
    AND (d.decommissioned_at IS NULL OR d.decommissioned_at > %(since)s)
"""

# A robot's interaction seconds in the period: its hours, or its local days (a year: 365 index
# entries instead of up to 8,760). The days are those of its site's time zone, so they are the
# report's days only for a robot whose site is in the report's zone; any other reads its hours.
_ROBOT_HOURS_S: Final = f"""(SELECT sum(u.duration_s) FROM usage_device_hourly u
     WHERE u.device_id = d.id AND u.type = '{ROBOT_INTERACTION}'
       AND u.bucket >= %(since)s AND u.bucket < %(until)s)"""  # noqa: S608 - constants only
_ROBOT_DAYS_S: Final = f"""(SELECT sum(u.duration_s) FROM usage_device_daily u
     WHERE u.device_id = d.id AND u.type = '{ROBOT_INTERACTION}'
       AND u.day >= %(first_day)s AND u.day < %(end_day)s)"""  # noqa: S608 - constants only
_ROBOT_MINUTES_OF: Final = f"""
    SELECT d.id AS device_id, d.label, d.site_id, coalesce({{seconds}}, 0) AS duration_s
      FROM devices d
      JOIN sites s ON s.id = d.site_id
     WHERE d.kind = 'companion_robot' AND {_LIVED_IN_PERIOD}
     ORDER BY duration_s DESC, d.id
"""  # noqa: S608 - constant fragments only
_ROBOT_DAYS_OR_HOURS_S: Final = (
    f"CASE WHEN s.timezone = %(tz)s THEN {_ROBOT_DAYS_S} ELSE {_ROBOT_HOURS_S} END"
)
_ROBOT_MINUTES: Final[dict[UsageBucket, str]] = {
    "hour": _ROBOT_MINUTES_OF.format(seconds=_ROBOT_HOURS_S),
    "day": _ROBOT_MINUTES_OF.format(seconds=_ROBOT_DAYS_OR_HOURS_S),
    "week": _ROBOT_MINUTES_OF.format(seconds=_ROBOT_DAYS_OR_HOURS_S),
}

# The alerts opened in the period are read and joined once, for three figures: counts per
# site, rule and severity; response times per severity; the slowest acknowledgements (only
# those ten are joined again for their columns). As three statements, each of which read a
# year of alerts, they took a quarter longer (measured on a year of 400 devices, 15,500 alerts).
# The figures come back as one row of three JSON arrays, each the rows of one figure.
# Seconds are date_part('epoch', ...), a double precision: extract() computes a numeric
# (PostgreSQL 14+) to be cast, about twice the cost per alert.
_ALERT_FIGURES: Final = """
    WITH period_alerts AS MATERIALIZED (
        SELECT a.id, d.site_id, a.rule, a.severity,
               date_part('epoch', a.acknowledged_at - a.opened_at) AS ack_s,
               date_part('epoch', a.resolved_at - a.opened_at) AS resolve_s
          FROM alerts a
          JOIN devices d ON d.id = a.device_id
         WHERE d.site_id = ANY (%(site_ids)s::text[])
           AND a.opened_at >= %(since)s AND a.opened_at < %(until)s
    ),
    counts AS (
        SELECT site_id, rule, severity, count(*) AS count
          FROM period_alerts GROUP BY site_id, rule, severity
    ),
    -- Both percentiles of a measure from one sort (the array form), not one sort each.
    times AS (
        SELECT severity, alerts, acknowledged, ack[1] AS ack_median_s, ack[2] AS ack_p90_s,
               resolved, res[1] AS resolve_median_s, res[2] AS resolve_p90_s
          FROM (SELECT severity, count(*) AS alerts, count(ack_s) AS acknowledged,
                       percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY ack_s) AS ack,
                       count(resolve_s) AS resolved,
                       percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY resolve_s) AS res
                  FROM period_alerts GROUP BY severity) p
    ),
    top AS (
        SELECT id, ack_s FROM period_alerts WHERE ack_s IS NOT NULL
         ORDER BY ack_s DESC, id
         LIMIT %(limit)s
    ),
    slowest AS (
        SELECT a.id AS alert_id, a.device_id, d.label, d.site_id, a.rule, a.severity,
               a.opened_at, top.ack_s
          FROM top JOIN alerts a ON a.id = top.id JOIN devices d ON d.id = a.device_id
    )
    SELECT (SELECT coalesce(json_agg(c), '[]') FROM counts c) AS counts,
           (SELECT coalesce(json_agg(t), '[]') FROM times t) AS times,
           (SELECT coalesce(json_agg(s ORDER BY s.ack_s DESC, s.alert_id), '[]') FROM slowest s)
             AS slowest
"""

# See device_availability for what counts as offline.
_AVAILABILITY: Final = f"""
    WITH life AS (
        SELECT d.id, d.kind, d.label, d.site_id,
               greatest(d.created_at, %(since)s) AS life_from,
               least(coalesce(d.decommissioned_at, 'infinity'), %(until)s, %(now)s) AS life_to
          FROM devices d
         WHERE {_LIVED_IN_PERIOD}
    ),
    offline AS (
        SELECT l.id,
               sum(extract(epoch FROM
                   least(coalesce(a.cleared_at, a.resolved_at, %(now)s), l.life_to)
                   - greatest(a.opened_at, l.life_from)))::float8 AS offline_s
          FROM life l
          JOIN alerts a ON a.device_id = l.id AND a.rule = 'device_offline'
         WHERE a.opened_at < l.life_to
           AND coalesce(a.cleared_at, a.resolved_at, %(now)s) > l.life_from
         GROUP BY l.id
    )
    SELECT l.id AS device_id, l.kind, l.label, l.site_id,
           extract(epoch FROM l.life_to - l.life_from)::float8 AS life_s,
           coalesce(o.offline_s, 0) AS offline_s
      FROM life l LEFT JOIN offline o ON o.id = l.id
     WHERE l.life_to > l.life_from
"""  # noqa: S608 - constant fragments only


async def _rows(
    conn: Connection, statement: str | sql.SQL | sql.Composed, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every row of ``statement``, as dicts."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(statement, params)
        return await cur.fetchall()


def _period_params(site_ids: Sequence[str], period: Period) -> dict[str, Any]:
    """The parameters every statement after :func:`selected_sites` takes."""
    return {"site_ids": list(site_ids), "since": period.since, "until": period.until}


async def selected_sites(conn: Connection, user: UserContext, site_id: str | None) -> list[SiteRow]:
    """The caller's sites (organisation, then the user's sites), or only ``site_id`` among them;
    by name. An empty list for a ``site_id`` the caller may not see (the route answers 404)."""
    rows = await _rows(conn, _SELECTED_SITES, {**scope_params(user), "site_id": site_id})
    return [SiteRow(r["id"], r["name"], r["timezone"]) for r in rows]


async def rollup_rows(conn: Connection, site_ids: Sequence[str], period: Period) -> list[RollupRow]:
    """Events and durations of the report's types per site, bucket and type.

    Day and week buckets read the daily rollup (local calendar dates, so a DST day is its 23 or
    25 hours and a week is Monday to Monday); hour buckets read the hourly one.
    """
    params = {
        **_period_params(site_ids, period),
        "types": list(REPORT_TYPES),
        "first_day": period.first_day,
        "end_day": period.end_day,
    }
    return [
        RollupRow(r["site_id"], r["bucket"], r["type"], int(r["events"]), r["duration_s"])
        for r in await _rows(conn, _ROLLUPS[period.bucket], params)
    ]


async def night_checks(
    conn: Connection, site_ids: Sequence[str], period: Period
) -> list[tuple[date | datetime, int]]:
    """Camera checks in night hours (18:00-06:00 in the report's time zone), per bucket.

    Read from the hourly rollup: its hours are UTC, and the local hour of each says whether it
    is night (whole-hour offsets, as every zone of our sites has).
    """
    params = {
        **_period_params(site_ids, period),
        "tz": period.timezone,
        "day_from": _DAY_HOURS[0],
        "day_to": _DAY_HOURS[1],
    }
    async with conn.cursor() as cur:
        await cur.execute(_NIGHT_CHECKS[period.bucket], params)
        return [(bucket, int(count)) for bucket, count in await cur.fetchall()]


async def robot_minutes(
    conn: Connection, site_ids: Sequence[str], period: Period
) -> list[dict[str, Any]]:
    """Every robot of the sites that lived in the period, with its interaction seconds (0 for a
    robot nobody played with: that is what a manager looks for), most played-with first.
    Per robot an index-only scan of a partial index of robot interactions: the daily rollup's
    for day and week buckets (migration 0018), the hourly one's for hour buckets (0006)."""
    params = {
        **_period_params(site_ids, period),
        "first_day": period.first_day,
        "end_day": period.end_day,
        "tz": period.timezone,
    }
    return await _rows(conn, _ROBOT_MINUTES[period.bucket], params)


@dataclass(frozen=True, slots=True)
class AlertFigures:
    """What the report shows of the alerts opened in the period (each device's site now).

    ``counts``: per site, rule and severity. ``times``: per severity, how many, how many were
    acknowledged and resolved, and the median and 90th percentile of the seconds it took
    (continuous percentiles, interpolated; an alert not yet acknowledged or resolved is not in
    that percentile). ``slowest``: the acknowledged alerts that waited longest for it, longest
    first. Times are JSON text (ISO 8601) here.
    """

    counts: list[dict[str, Any]]
    times: list[dict[str, Any]]
    slowest: list[dict[str, Any]]


async def alert_figures(
    conn: Connection, site_ids: Sequence[str], period: Period, *, limit: int = 10
) -> AlertFigures:
    """The alerts' figures of the period, from one read of its alerts; ``limit`` slowest."""
    async with conn.cursor() as cur:
        await cur.execute(_ALERT_FIGURES, {**_period_params(site_ids, period), "limit": limit})
        row = await cur.fetchone()
    assert row is not None  # an aggregate without GROUP BY: always one row
    counts, times, slowest = row
    return AlertFigures(counts, times, slowest)


async def device_availability(
    conn: Connection, site_ids: Sequence[str], period: Period, now: datetime
) -> list[dict[str, Any]]:
    """Per device that lived in the period: seconds of its life in the period (``life_s``) and of
    those, seconds offline (``offline_s``).

    Offline is the time from a ``device_offline`` alert's ``opened_at`` until its condition
    ended, which is ``cleared_at``: the gateway sets it when the device is heard again, both
    when that resolves the alert (``resolved_by = 'system'``, cleared_at = resolved_at) and when
    it only marks an unacknowledged critical/high alert ``cleared`` (the alert then waits for an
    acknowledgement, while the device is long back). Without ``cleared_at``:
    - a resolved alert was resolved by staff while the device was still silent; its return is
      not recorded anywhere (the rules clear nothing when no alert is on the board), so the
      resolve time is the best bound we have (it undercounts);
    - an unresolved one is still going on: offline until now.
    A ``cleared`` alert that repeats (offline again before anyone acknowledged it) loses its
    ``cleared_at`` until the next return, so the short time online in between counts as
    offline. Each interval is clipped to the period, the device's life and now; the alerts of
    one device never overlap (at most one unresolved per device and rule).
    """
    return await _rows(conn, _AVAILABILITY, {**_period_params(site_ids, period), "now": now})
