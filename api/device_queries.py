"""Every SQL statement of the device read side (the list, one device, its events, the fleet
summary), each scoped by the caller's organisation and sites like :mod:`api.alert_queries`.

``events`` can hold hundreds of millions of rows. Nothing here scans it: every read names one
device and a time range, which the unique key (device_id, time, event_id) answers with a short
index range scan. A battery trend is a handful of such probes per device on the page ("the
latest reading in the day before each day boundary", ``LIMIT 1`` each), never an aggregate over
the device's whole history; a device that reports no battery gets no probes at all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

# An alert reads the same here as on the board: api.alert_queries' own columns and joins.
from api.alert_queries import ALERT_COLUMNS, ALERT_FROM, SEVERITY_RANK
from api.auth import UserContext
from api.pool import Pool
from api.schemas import (
    MAINTENANCE_LISTED_DAYS,
    AlertPublic,
    BatteryPoint,
    BatteryTrend,
    DeviceEventPublic,
    DevicePage,
    DevicePublic,
    DeviceSort,
    DeviceStatusFilter,
    FleetSummary,
    KindSummary,
    MaintenancePublic,
)
from api.scope import SCOPE, scope_params
from carewatch.fleet import MAINTENANCE_COLUMNS

# CONTRACT.md, battery_low: a heartbeat battery under 20 % opens the warning.
BATTERY_LOW_BELOW: Final = 20
# The list's trend: the change over the last week, one point per day (8 probes per device).
TREND_DAYS: Final = 7
# Caps that keep one request cheap whatever the caller asks for.
MAX_PAGE: Final = 500
MAX_EVENTS: Final = 1000

# Online; offline (seen before, silent now); never seen since onboarding. For active devices
# these three are disjoint and complete: the summary's numbers add up.
_OFFLINE: Final = "(d.status = 'active' AND NOT d.online AND d.last_seen IS NOT NULL)"
_NEVER_SEEN: Final = "(d.status = 'active' AND NOT d.online AND d.last_seen IS NULL)"

_STATUS_FILTER: Final = f"""
    CASE %(status)s::text
      WHEN 'all' THEN true
      WHEN 'decommissioned' THEN d.status = 'decommissioned'
      WHEN 'active' THEN d.status = 'active'
      WHEN 'online' THEN d.status = 'active' AND d.online
      WHEN 'offline' THEN {_OFFLINE}
      WHEN 'never_seen' THEN {_NEVER_SEEN}
    END
"""

_FILTERS: Final = f"""
    {SCOPE}
    AND (%(site_id)s::text IS NULL OR s.id = %(site_id)s::text)
    AND (%(kind)s::text IS NULL OR d.kind = %(kind)s::text)
    AND (%(battery_below)s::int IS NULL OR d.battery < %(battery_below)s::int)
    AND {_STATUS_FILTER}
"""

# Unresolved alerts are few (a partial index holds exactly them), so counting them all per
# device is cheaper than a probe per device.
_DEVICE_FROM: Final = """
    FROM devices d
    JOIN sites s ON s.id = d.site_id
    LEFT JOIN (SELECT device_id, count(*) AS n FROM alerts
                WHERE state <> 'resolved' GROUP BY device_id) oa ON oa.device_id = d.id
    LEFT JOIN residences r ON r.id = d.residence_id
"""

# The end of the maintenance window covering now (+#11): a short range scan of the device's
# windows by (device_id, starts_at); a device has a handful.
_MAINTENANCE_UNTIL: Final = """
    SELECT coalesce(m.ended_at, m.ends_at) FROM device_maintenance m
     WHERE m.device_id = d.id AND m.starts_at <= now() AND coalesce(m.ended_at, m.ends_at) > now()
     ORDER BY m.starts_at DESC LIMIT 1
"""

_DEVICE_COLUMNS: Final = f"""
    d.id, d.kind, d.site_id, s.name AS site_name, d.label, d.status, d.source, d.zigbee_name,
    d.zigbee_model, d.online, d.last_seen, d.last_seen IS NULL AS never_seen,
    CASE WHEN {_OFFLINE} THEN d.last_seen END AS offline_since,
    CASE WHEN {_OFFLINE} THEN extract(epoch FROM now() - d.last_seen)::float8 END
        AS offline_for_s,
    d.battery, d.firmware, coalesce(oa.n, 0)::int AS open_alerts, d.created_at,
    d.decommissioned_at, d.residence_id, r.label AS residence_label,
    ({_MAINTENANCE_UNTIL}) AS maintenance_until
"""

# Sort keys (a closed set, never user text) and their SQL; d.id breaks ties so that pages
# are stable.
_SORT_SQL: Final[dict[DeviceSort, sql.Composable]] = {
    "id": sql.Identifier("d", "id"),
    "kind": sql.Identifier("d", "kind"),
    "site": sql.Identifier("s", "name"),
    "label": sql.Identifier("d", "label"),
    # Offline first, then never seen, then online, then decommissioned.
    "status": sql.SQL(
        "CASE WHEN d.status = 'decommissioned' THEN 3 WHEN d.online THEN 2"
        " WHEN d.last_seen IS NULL THEN 1 ELSE 0 END"
    ),
    "last_seen": sql.Identifier("d", "last_seen"),
    "battery": sql.Identifier("d", "battery"),
    "firmware": sql.Identifier("d", "firmware"),
    "open_alerts": sql.SQL("coalesce(oa.n, 0)"),
}
_DIRECTION: Final = {False: sql.SQL("ASC"), True: sql.SQL("DESC")}

# --- statements (f-strings only join the constant fragments above; every value is a parameter)

_COUNT: Final = (
    f"SELECT count(*) AS total FROM devices d JOIN sites s ON s.id = d.site_id"  # noqa: S608 - constant fragments only
    f" WHERE {_FILTERS}"
)

# {sort} and {direction}: psycopg.sql fills them from _SORT_SQL and _DIRECTION.
_PAGE: Final = sql.SQL(
    f"SELECT {_DEVICE_COLUMNS} {_DEVICE_FROM} WHERE {_FILTERS}"
    " ORDER BY {sort} {direction} NULLS LAST, d.id {direction}"
    " LIMIT %(limit)s OFFSET %(offset)s"
)

_ONE: Final = f"SELECT {_DEVICE_COLUMNS} {_DEVICE_FROM} WHERE d.id = %(device_id)s AND {SCOPE}"

_VISIBLE: Final = (
    f"SELECT 1 FROM devices d JOIN sites s ON s.id = d.site_id"  # noqa: S608 - constant fragments only
    f" WHERE d.id = %(device_id)s AND {SCOPE}"
)

_EVENTS: Final = """
    SELECT e.time, e.received_at, e.event_id, e.type, e.data
      FROM events e
     WHERE e.device_id = %(device_id)s
       AND (%(since)s::timestamptz IS NULL OR e.time >= %(since)s::timestamptz)
       AND (%(until)s::timestamptz IS NULL OR e.time < %(until)s::timestamptz)
     ORDER BY e.time DESC, e.event_id DESC
     LIMIT %(limit)s
"""

_SUMMARY: Final = f"""
    SELECT d.kind,
           count(*) FILTER (WHERE d.status = 'active') AS total,
           count(*) FILTER (WHERE d.status = 'active' AND d.online) AS online,
           count(*) FILTER (WHERE {_OFFLINE}) AS offline,
           count(*) FILTER (WHERE {_NEVER_SEEN}) AS never_seen,
           count(*) FILTER (WHERE d.status = 'active' AND d.battery < %(low)s) AS battery_low,
           count(*) FILTER (WHERE d.status = 'decommissioned') AS decommissioned
      FROM devices d
      JOIN sites s ON s.id = d.site_id
     WHERE {SCOPE}
       AND (%(site_id)s::text IS NULL OR s.id = %(site_id)s::text)
       AND (%(kind)s::text IS NULL OR d.kind = %(kind)s::text)
     GROUP BY d.kind
     ORDER BY d.kind
"""  # noqa: S608 - constant fragments only

_OPEN_ALERTS: Final = (
    f"SELECT {ALERT_COLUMNS} {ALERT_FROM}"
    f" WHERE a.device_id = %(device_id)s AND a.state <> 'resolved' AND {SCOPE}"
    f" ORDER BY {SEVERITY_RANK} DESC, a.opened_at DESC, a.id DESC"
)

_NOW: Final = "SELECT now()"

# A device's maintenance windows (+#11): current and upcoming, and those over for less than
# %(over_days)s days; oldest first.
_MAINTENANCE: Final = f"""
    SELECT {MAINTENANCE_COLUMNS}
      FROM device_maintenance m
     WHERE m.device_id = %(device_id)s
       AND coalesce(m.ended_at, m.ends_at) > now() - make_interval(days => %(over_days)s)
     ORDER BY m.starts_at, m.id
"""  # noqa: S608 - constant fragments only


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """What the device list and its count are narrowed to; None (or ``all``) narrows nothing."""

    site_id: str | None = None
    kind: str | None = None
    status: DeviceStatusFilter = "active"
    battery_below: int | None = None

    def params(self) -> dict[str, Any]:
        """The named parameters of ``_FILTERS``."""
        return {
            "site_id": self.site_id,
            "kind": self.kind,
            "status": self.status,
            "battery_below": self.battery_below,
        }


# --- battery readings --------------------------------------------------------------------------

# One probe per (device, boundary): the latest heartbeat with a battery in (at - step, at].
# The unique key (device_id, time, event_id) answers each with a short backward range scan.
_BATTERY_PROBES: Final = """
    SELECT p.device_id, r.time, r.battery
      FROM unnest(%(ids)s::text[]) AS p (device_id)
     CROSS JOIN generate_series(0, %(count)s - 1) AS g (i)
     CROSS JOIN LATERAL (
           SELECT e.time, round((e.data ->> 'battery')::numeric)::int AS battery
             FROM events e
            WHERE e.device_id = p.device_id
              AND e.time <= coalesce(%(end)s::timestamptz, now()) - g.i * %(step)s
              AND e.time > coalesce(%(end)s::timestamptz, now()) - (g.i + 1) * %(step)s
              AND e.type = 'heartbeat'
              AND jsonb_typeof(e.data -> 'battery') = 'number'
            ORDER BY e.time DESC
            LIMIT 1) r
     ORDER BY p.device_id, r.time
"""


async def _battery_probes(
    conn: psycopg.AsyncConnection[Any],
    device_ids: Sequence[str],
    *,
    end: datetime | None,
    step: timedelta,
    count: int,
) -> dict[str, list[BatteryPoint]]:
    """Per device, up to ``count`` readings: the latest in each ``step`` before ``end`` (now)."""
    if not device_ids:
        return {}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _BATTERY_PROBES, {"ids": list(device_ids), "count": count, "end": end, "step": step}
        )
        points: dict[str, list[BatteryPoint]] = defaultdict(list)
        for row in await cur.fetchall():
            points[row["device_id"]].append(BatteryPoint(time=row["time"], battery=row["battery"]))
        return points


def _trend(points: list[BatteryPoint]) -> BatteryTrend:
    change = points[-1].battery - points[0].battery if len(points) >= 2 else None
    return BatteryTrend(days=TREND_DAYS, change=change, points=points)


async def _devices_with_trends(
    conn: psycopg.AsyncConnection[Any], rows: list[dict[str, Any]], *, trend: bool
) -> list[DevicePublic]:
    # Only devices that report a battery at all get probes: a mains-powered camera's week of
    # heartbeats would otherwise be read in vain.
    with_battery = [row["id"] for row in rows if row["battery"] is not None] if trend else []
    points = await _battery_probes(
        conn, with_battery, end=None, step=timedelta(days=1), count=TREND_DAYS + 1
    )
    return [
        DevicePublic.model_validate(
            {
                **row,
                "battery_trend": _trend(points.get(row["id"], []))
                if row["id"] in with_battery
                else None,
            }
        )
        for row in rows
    ]


# --- the list, one device, the summary ---------------------------------------------------------


async def list_devices(
    pool: Pool,
    user: UserContext,
    device_filter: DeviceFilter,
    *,
    sort: DeviceSort = "id",
    descending: bool = False,
    limit: int = 100,
    offset: int = 0,
    trend: bool = True,
) -> DevicePage:
    """One page of the caller's devices that match, in the order asked for."""
    limit = max(1, min(limit, MAX_PAGE))
    params = {**scope_params(user), **device_filter.params(), "limit": limit, "offset": offset}
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_COUNT, params)
        total_row = await cur.fetchone()
        assert total_row is not None
        total: int = total_row["total"]
        await cur.execute(
            _PAGE.format(sort=_SORT_SQL[sort], direction=_DIRECTION[descending]), params
        )
        rows = await cur.fetchall()
        items = await _devices_with_trends(conn, rows, trend=trend)
    next_offset = offset + limit if offset + limit < total else None
    return DevicePage(items=items, total=total, limit=limit, offset=offset, next_offset=next_offset)


async def get_device(pool: Pool, user: UserContext, device_id: str) -> DevicePublic | None:
    """The device if the caller may see it (any status), with its week's battery trend."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_ONE, {**scope_params(user), "device_id": device_id})
        row = await cur.fetchone()
        if row is None:
            return None
        (device,) = await _devices_with_trends(conn, [row], trend=True)
        return device


async def _visible(cur: psycopg.AsyncCursor[Any], user: UserContext, device_id: str) -> bool:
    await cur.execute(_VISIBLE, {**scope_params(user), "device_id": device_id})
    return await cur.fetchone() is not None


async def battery_history(
    pool: Pool,
    user: UserContext,
    device_id: str,
    *,
    days: int = 30,
    step: timedelta = timedelta(hours=6),
) -> list[BatteryPoint] | None:
    """The device's battery over ``days``: the latest reading in each ``step`` (a bounded
    number of index probes, not every heartbeat); None if the caller may not see it."""
    async with pool.connection() as conn, conn.cursor() as cur:
        if not await _visible(cur, user, device_id):
            return None
        count = int(timedelta(days=days) / step)
        points = await _battery_probes(conn, [device_id], end=None, step=step, count=count)
        return points.get(device_id, [])


async def device_events(
    pool: Pool,
    user: UserContext,
    device_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[DeviceEventPublic] | None:
    """The device's events in [since, until), newest first, at most ``limit`` (capped);
    None if the caller may not see the device."""
    limit = max(1, min(limit, MAX_EVENTS))
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        if not await _visible(cur, user, device_id):
            return None
        await cur.execute(
            _EVENTS,
            {"device_id": device_id, "since": since, "until": until, "limit": limit},
        )
        return [DeviceEventPublic.model_validate(row) for row in await cur.fetchall()]


async def fleet_summary(
    pool: Pool,
    user: UserContext,
    *,
    site_id: str | None = None,
    kind: str | None = None,
    battery_low_below: int = BATTERY_LOW_BELOW,
) -> FleetSummary:
    """Counts over the caller's devices (optionally of one site or kind), in all and by kind."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            _SUMMARY,
            {**scope_params(user), "site_id": site_id, "kind": kind, "low": battery_low_below},
        )
        rows = await cur.fetchall()
    fields = ("total", "online", "offline", "never_seen", "battery_low")
    by_kind = {row["kind"]: KindSummary.model_validate(row) for row in rows if row["total"] > 0}
    totals = {name: sum(row[name] for row in rows) for name in fields}
    return FleetSummary(
        **totals,
        battery_low_below=battery_low_below,
        decommissioned=sum(row["decommissioned"] for row in rows),
        by_kind=by_kind,
    )


# --- for the device page -----------------------------------------------------------------------


async def open_alerts(pool: Pool, user: UserContext, device_id: str) -> list[AlertPublic]:
    """The device's unresolved alerts, most severe and newest first (scoped like the rest)."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_OPEN_ALERTS, {**scope_params(user), "device_id": device_id})
        return [AlertPublic.model_validate(row) for row in await cur.fetchall()]


async def database_now(pool: Pool) -> datetime:
    """The database's clock: the end of a chart drawn from rows it timestamped."""
    async with pool.connection() as conn, conn.cursor() as cur:
        await cur.execute(_NOW)
        row = await cur.fetchone()
        assert row is not None
        now: datetime = row[0]
        return now


async def maintenance_windows(
    pool: Pool, user: UserContext, device_id: str
) -> list[MaintenancePublic] | None:
    """The device's current and upcoming maintenance windows and those over for less than
    30 days, oldest first; None if the caller may not see the device."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        if not await _visible(cur, user, device_id):
            return None
        await cur.execute(
            _MAINTENANCE, {"device_id": device_id, "over_days": MAINTENANCE_LISTED_DAYS}
        )
        return [MaintenancePublic.model_validate(row) for row in await cur.fetchall()]
