"""Every SQL statement of the device read side (the list, one device, its events, the fleet
summary), each scoped by the caller's organisation and sites like :mod:`api.queries`.

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
from psycopg.rows import dict_row

from api.auth import UserContext
from api.pool import Pool

# An alert reads the same here as on the board: api.queries' own columns and joins.
from api.queries import _ALERT_COLUMNS as ALERT_COLUMNS
from api.queries import _ALERT_FROM as ALERT_FROM
from api.queries import _SEVERITY_RANK as SEVERITY_RANK
from api.schemas import (
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
)

# CONTRACT.md, battery_low: a heartbeat battery under 20 % opens the warning.
BATTERY_LOW_BELOW: Final = 20
# The list's trend: the change over the last week, one point per day (8 probes per device).
TREND_DAYS: Final = 7
# Caps that keep one request cheap whatever the caller asks for.
MAX_PAGE: Final = 500
MAX_EVENTS: Final = 1000

# The same scope as api.queries: statements join sites as ``s``.
_SCOPE: Final = (
    "s.org_id = %(org_id)s AND (%(site_ids)s::text[] IS NULL OR s.id = ANY (%(site_ids)s::text[]))"
)

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
    {_SCOPE}
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
"""

_DEVICE_COLUMNS: Final = f"""
    d.id, d.kind, d.site_id, s.name AS site_name, d.label, d.status, d.source, d.zigbee_name,
    d.zigbee_model, d.online, d.last_seen, d.last_seen IS NULL AS never_seen,
    CASE WHEN {_OFFLINE} THEN d.last_seen END AS offline_since,
    CASE WHEN {_OFFLINE} THEN extract(epoch FROM now() - d.last_seen)::float8 END
        AS offline_for_s,
    d.battery, d.firmware, coalesce(oa.n, 0)::int AS open_alerts, d.created_at,
    d.decommissioned_at
"""

# Sort keys (a closed set, never user text) and their SQL; d.id breaks ties so that pages
# are stable.
_SORT_SQL: Final[dict[str, str]] = {
    "id": "d.id",
    "kind": "d.kind",
    "site": "s.name",
    "label": "d.label",
    # Offline first, then never seen, then online, then decommissioned.
    "status": (
        "CASE WHEN d.status = 'decommissioned' THEN 3 WHEN d.online THEN 2"
        " WHEN d.last_seen IS NULL THEN 1 ELSE 0 END"
    ),
    "last_seen": "d.last_seen",
    "battery": "d.battery",
    "firmware": "d.firmware",
    "open_alerts": "coalesce(oa.n, 0)",
}


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    site_id: str | None = None
    kind: str | None = None
    status: DeviceStatusFilter = "active"
    battery_below: int | None = None

    def params(self) -> dict[str, Any]:
        return {
            "site_id": self.site_id,
            "kind": self.kind,
            "status": self.status,
            "battery_below": self.battery_below,
        }


def _scope(user: UserContext) -> dict[str, Any]:
    return {"org_id": user.org_id, "site_ids": user.site_list}


def _order_by(sort: DeviceSort, descending: bool) -> str:
    direction = "DESC" if descending else "ASC"
    return f"{_SORT_SQL[sort]} {direction} NULLS LAST, d.id {direction}"


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
    params = {**_scope(user), **device_filter.params(), "limit": limit, "offset": offset}
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT count(*) AS total FROM devices d JOIN sites s ON s.id = d.site_id"
            f" WHERE {_FILTERS}",
            params,
        )
        total_row = await cur.fetchone()
        assert total_row is not None
        total: int = total_row["total"]
        await cur.execute(
            f"SELECT {_DEVICE_COLUMNS} {_DEVICE_FROM} WHERE {_FILTERS}"
            f" ORDER BY {_order_by(sort, descending)} LIMIT %(limit)s OFFSET %(offset)s",
            params,
        )
        rows = await cur.fetchall()
        items = await _devices_with_trends(conn, rows, trend=trend)
    next_offset = offset + limit if offset + limit < total else None
    return DevicePage(items=items, total=total, limit=limit, offset=offset, next_offset=next_offset)


async def get_device(pool: Pool, user: UserContext, device_id: str) -> DevicePublic | None:
    """The device if the caller may see it (any status), with its week's battery trend."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_DEVICE_COLUMNS} {_DEVICE_FROM} WHERE d.id = %(device_id)s AND {_SCOPE}",
            {**_scope(user), "device_id": device_id},
        )
        row = await cur.fetchone()
        if row is None:
            return None
        (device,) = await _devices_with_trends(conn, [row], trend=True)
        return device


async def _visible(cur: psycopg.AsyncCursor[Any], user: UserContext, device_id: str) -> bool:
    await cur.execute(
        f"SELECT 1 FROM devices d JOIN sites s ON s.id = d.site_id"
        f" WHERE d.id = %(device_id)s AND {_SCOPE}",
        {**_scope(user), "device_id": device_id},
    )
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
            """
            SELECT e.time, e.received_at, e.event_id, e.type, e.data
              FROM events e
             WHERE e.device_id = %(device_id)s
               AND (%(since)s::timestamptz IS NULL OR e.time >= %(since)s::timestamptz)
               AND (%(until)s::timestamptz IS NULL OR e.time < %(until)s::timestamptz)
             ORDER BY e.time DESC, e.event_id DESC
             LIMIT %(limit)s
            """,
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
            f"""
            SELECT d.kind,
                   count(*) FILTER (WHERE d.status = 'active') AS total,
                   count(*) FILTER (WHERE d.status = 'active' AND d.online) AS online,
                   count(*) FILTER (WHERE {_OFFLINE}) AS offline,
                   count(*) FILTER (WHERE {_NEVER_SEEN}) AS never_seen,
                   count(*) FILTER (WHERE d.status = 'active' AND d.battery < %(low)s)
                       AS battery_low,
                   count(*) FILTER (WHERE d.status = 'decommissioned') AS decommissioned
              FROM devices d
              JOIN sites s ON s.id = d.site_id
             WHERE {_SCOPE}
               AND (%(site_id)s::text IS NULL OR s.id = %(site_id)s::text)
               AND (%(kind)s::text IS NULL OR d.kind = %(kind)s::text)
             GROUP BY d.kind
             ORDER BY d.kind
            """,
            {**_scope(user), "site_id": site_id, "kind": kind, "low": battery_low_below},
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
        await cur.execute(
            f"SELECT {ALERT_COLUMNS} {ALERT_FROM}"
            f" WHERE a.device_id = %(device_id)s AND a.state <> 'resolved' AND {_SCOPE}"
            f" ORDER BY {SEVERITY_RANK} DESC, a.opened_at DESC, a.id DESC",
            {**_scope(user), "device_id": device_id},
        )
        return [AlertPublic.model_validate(row) for row in await cur.fetchall()]


async def database_now(pool: Pool) -> datetime:
    """The database's clock: the end of a chart drawn from rows it timestamped."""
    async with pool.connection() as conn, conn.cursor() as cur:
        await cur.execute("SELECT now()")
        row = await cur.fetchone()
        assert row is not None
        now: datetime = row[0]
        return now
