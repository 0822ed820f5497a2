"""The usage rollups: what they count, as SQL, shared by the gateway and the rebuild.

Three tables (migration 0005): ``usage_device_hourly``, ``usage_site_hourly`` and
``usage_site_daily``, each (key, type) -> events, duration_s, sessions. They are kept two ways
from the same definitions here, so the two cannot drift:

- incrementally by the gateway, inside the transaction that stores a batch, from the rows its
  ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` actually inserted (:func:`ingest_sql`): a
  resent event is not inserted, so never counted twice; a late event lands in the bucket of its
  own device time;
- from scratch for a time range, by :func:`rebuild` (``carewatch usage rebuild``, and the
  backfill): DELETE the range's rows, then the same upserts from a set-based recomputation.

Both compute *delta rows* ``(device_id, site_id, tz, time, type, events, duration_s)`` -- one per
counted event, visit or battery replacement -- and feed them through :func:`upsert_sql`.

What is counted (heartbeats never are: 98 % of the traffic, and no dashboard counts them):

- every other event, by its type; ``duration_s`` is ``data.duration_s`` for the types in
  :data:`DURATION_TYPES`, else 0;
- ``lock.visit``: a ``lock.locked`` whose previous lock event of the same device (by device
  time) is a ``lock.unlocked`` at most :data:`VISIT_MAX` earlier; bucketed by the locked time,
  ``duration_s`` = locked - unlocked. The gateway counts visits as a difference (visits among
  the device's lock events with the batch's minus without), so an unlock and its lock in one
  batch, in two batches, or arriving out of order all end as the rebuild counts them;
- ``battery.replaced``: a heartbeat whose battery is at least :data:`BATTERY_JUMP_POINTS` above
  the previous one. The gateway compares with ``devices.battery`` before the batch (the newest
  stored level) and within the batch with the previous heartbeat; the rebuild with the previous
  battery-reporting heartbeat by device time. They agree when heartbeats arrive in order.

Site attribution: the gateway attributes an event to its device's site when stored; the rebuild
to the device's site now (the same unless the device moved since).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg

log = logging.getLogger(__name__)

LOCK_VISIT: Final = "lock.visit"
BATTERY_REPLACED: Final = "battery.replaced"
# A door unlocked for longer than this was forgotten, not a visit.
VISIT_MAX: Final = timedelta(hours=12)
# A fresh battery: a drained one does not climb this far by itself (readings wobble a few points).
BATTERY_JUMP_POINTS: Final = 30
DURATION_TYPES: Final = ("camera.check_ended", "robot.interaction")
LOCK_TYPES: Final = ("lock.unlocked", "lock.locked")
ROLLUP_TABLES: Final = ("usage_device_hourly", "usage_site_hourly", "usage_site_daily")

# --- the shared expressions ------------------------------------------------------------------


def _list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


_VISIT_MAX_SQL = f"interval '{int(VISIT_MAX.total_seconds())} seconds'"
_LOCK_TYPES_SQL = _list(LOCK_TYPES)


def hour_bucket(time: str) -> str:
    """The UTC hour of ``time`` (date_trunc's one-argument form would use the session's zone)."""
    return f"date_trunc('hour', {time}, 'UTC')"


def local_day(time: str, tz: str) -> str:
    """The calendar date of ``time`` in time zone ``tz`` (an IANA name, sites.timezone)."""
    return f"(({time}) AT TIME ZONE {tz})::date"


def duration_s(type_: str, data: str) -> str:
    """The duration an event adds to ``duration_s``."""
    return (
        f"CASE WHEN {type_} IN ({_list(DURATION_TYPES)})"
        f" THEN coalesce(({data} ->> 'duration_s')::double precision, 0) ELSE 0 END"
    )


def is_visit(time: str, type_: str, prev_time: str, prev_type: str) -> str:
    """A lock event that ends a visit, given the device's previous lock event."""
    return (
        f"{type_} = 'lock.locked' AND {prev_type} = 'lock.unlocked'"
        f" AND {time} - {prev_time} <= {_VISIT_MAX_SQL}"
    )


def visit_s(time: str, prev_time: str) -> str:
    return f"extract(epoch FROM {time} - {prev_time})::double precision"


def battery(data: str) -> str:
    """A heartbeat's battery level (numeric: the envelope checked it is an integer 0-100)."""
    return f"({data} ->> 'battery')::numeric"


def is_replacement(level: str, previous: str) -> str:
    return f"{level} >= {previous} + {BATTERY_JUMP_POINTS}"


# Heartbeats carrying a battery level; the ? operator uses no placeholder syntax of psycopg.
def _reports_battery(type_: str, data: str) -> str:
    return f"{type_} = 'heartbeat' AND {data} ? 'battery'"


# Ordering lock events: device time, then event id so that equal times order the same way in
# the gateway and the rebuild.
_LOCK_ORDER = "PARTITION BY device_id ORDER BY time, event_id"


def upsert_sql(delta: str, *, hourly_where: str = "TRUE", daily_where: str = "TRUE") -> list[str]:
    """The three upserts from a relation of delta rows, each in key order.

    Key order is what keeps two gateways upserting the same rows (the current hour of a busy
    site) from deadlocking: they take the row locks of a table in the same order. Across the
    tables, every gateway runs the same statement, so the same plan runs its CTEs in the same
    order; and the rollup rows are locked before the batch's devices rows (updated after).
    """
    columns = "events, duration_s"
    add = (
        "DO UPDATE SET events = u.events + EXCLUDED.events,"
        " duration_s = u.duration_s + EXCLUDED.duration_s"
    )
    sums = "sum(events)::integer, sum(duration_s)"
    return [
        f"INSERT INTO usage_device_hourly AS u (device_id, bucket, type, {columns})"
        f" SELECT device_id, {hour_bucket('time')}, type, {sums} FROM {delta}"
        f" WHERE {hourly_where} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        f" ON CONFLICT (device_id, bucket, type) {add}",
        f"INSERT INTO usage_site_hourly AS u (site_id, bucket, type, {columns})"
        f" SELECT site_id, {hour_bucket('time')}, type, {sums} FROM {delta}"
        f" WHERE {hourly_where} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        f" ON CONFLICT (site_id, bucket, type) {add}",
        f"INSERT INTO usage_site_daily AS u (site_id, day, type, {columns})"
        f" SELECT site_id, {local_day('time', 'tz')}, type, {sums} FROM {delta}"
        f" WHERE {daily_where} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        f" ON CONFLICT (site_id, day, type) {add}",
    ]


# --- the gateway's statement -----------------------------------------------------------------


def ingest_sql(source: str) -> str:
    """INSERT the rows of ``source`` into ``events`` and roll up the ones actually inserted.

    ``source`` is a SELECT of (time, received_at, device_id, event_id, type, data). One
    statement: the data-modifying CTEs all see the snapshot from before the insert, so the
    ``events`` they read (a lock's previous lock event) are the ones stored by earlier batches
    and ``devices.battery`` is the level before this batch. Returns (device_id, event_id, time)
    of each inserted row, like the plain INSERT ... RETURNING it replaces.
    """
    ups = upsert_sql("delta")
    return f"""
WITH ins AS (
    INSERT INTO events (time, received_at, device_id, event_id, type, data)
    {source}
    ON CONFLICT DO NOTHING
    RETURNING device_id, event_id, time, type, data
),
counted AS (
    SELECT device_id, time, type, 1 AS events, {duration_s("type", "data")} AS duration_s
    FROM ins WHERE type <> 'heartbeat'
),
-- Lock visits: the device's lock events around the new ones, with and without them.
new_locks AS (
    SELECT device_id, event_id, time, type FROM ins WHERE type IN ({_LOCK_TYPES_SQL})
),
span AS (
    SELECT device_id, min(time) AS lo, max(time) AS hi FROM new_locks GROUP BY device_id
),
old_locks AS (
    SELECT s.device_id, o.event_id, o.time, o.type FROM span s CROSS JOIN LATERAL (
        (SELECT e.event_id, e.time, e.type FROM events e
         WHERE e.device_id = s.device_id AND e.type IN ({_LOCK_TYPES_SQL}) AND e.time < s.lo
         ORDER BY e.time DESC LIMIT 1)
        UNION ALL
        (SELECT e.event_id, e.time, e.type FROM events e
         WHERE e.device_id = s.device_id AND e.type IN ({_LOCK_TYPES_SQL})
           AND e.time >= s.lo AND e.time <= s.hi)
        UNION ALL
        (SELECT e.event_id, e.time, e.type FROM events e
         WHERE e.device_id = s.device_id AND e.type IN ({_LOCK_TYPES_SQL}) AND e.time > s.hi
         ORDER BY e.time LIMIT 1)
    ) o
),
with_new AS (
    SELECT device_id, time, type, lag(time) OVER w AS prev_time, lag(type) OVER w AS prev_type
    FROM (SELECT * FROM new_locks UNION ALL SELECT * FROM old_locks) l WINDOW w AS ({_LOCK_ORDER})
),
without_new AS (
    SELECT device_id, time, type, lag(time) OVER w AS prev_time, lag(type) OVER w AS prev_type
    FROM old_locks WINDOW w AS ({_LOCK_ORDER})
),
visits AS (
    SELECT device_id, time, 1 AS events, {visit_s("time", "prev_time")} AS duration_s
    FROM with_new WHERE {is_visit("time", "type", "prev_time", "prev_type")}
    UNION ALL
    SELECT device_id, time, -1, -{visit_s("time", "prev_time")}
    FROM without_new WHERE {is_visit("time", "type", "prev_time", "prev_type")}
),
-- Battery replacements. Most batches have none, so first the devices where one is possible
-- at all (the batch's highest level 30+ above its lowest or the stored one): one aggregate and
-- one devices lookup per device, and the exact per-heartbeat test only for those.
levels AS (
    SELECT device_id, time, {battery("data")} AS level
    FROM ins WHERE {_reports_battery("type", "data")}
),
possible AS MATERIALIZED (
    SELECT r.device_id, d.battery AS stored
    FROM (SELECT device_id, min(level) AS low, max(level) AS high FROM levels GROUP BY device_id) r
    JOIN devices d ON d.id = r.device_id
    WHERE {is_replacement("r.high", "least(r.low, coalesce(d.battery, r.low))")}
),
replacements AS (
    SELECT device_id, time FROM (
        SELECT l.device_id, l.time, l.level,
               coalesce(lag(l.level) OVER (PARTITION BY l.device_id ORDER BY l.time), p.stored)
                   AS previous
        FROM levels l JOIN possible p ON p.device_id = l.device_id
    ) x
    WHERE {is_replacement("level", "previous")}
),
-- LATERAL: an index probe for each of the few rows (a batch is nearly all heartbeats), where
-- a hash join would read all of devices every batch.
delta AS (
    SELECT x.device_id, ds.site_id, ds.tz, x.time, x.type, x.events, x.duration_s
    FROM (
        SELECT device_id, time, type, events, duration_s FROM counted
        UNION ALL
        SELECT device_id, time, '{LOCK_VISIT}', events, duration_s FROM visits
        UNION ALL
        SELECT device_id, time, '{BATTERY_REPLACED}', 1, 0 FROM replacements
    ) x
    CROSS JOIN LATERAL (
        SELECT d.site_id, s.timezone AS tz FROM devices d JOIN sites s ON s.id = d.site_id
        WHERE d.id = x.device_id
        LIMIT 1  -- (one row anyway: it keeps the planner from flattening this into a join)
    ) ds
),
device_hourly AS ({ups[0]}),
site_hourly AS ({ups[1]}),
site_daily AS ({ups[2]})
SELECT device_id, event_id, time FROM ins
"""


# --- the rebuild -------------------------------------------------------------------------------

REBUILD_DELTA_TABLE: Final = "usage_rebuild_delta"

_CREATE_REBUILD_DELTA = f"""
CREATE TEMP TABLE {REBUILD_DELTA_TABLE} (
    device_id text NOT NULL, site_id text NOT NULL, tz text NOT NULL, time timestamptz NOT NULL,
    type text NOT NULL, events integer NOT NULL, duration_s double precision NOT NULL
) ON COMMIT DROP
"""

# The events a chunk reads: [lo, hi) widened to the whole local days of every site.
_LO = "%(lo)s::timestamptz"
_LAST = "%(hi)s::timestamptz - interval '1 microsecond'"  # the last instant of [lo, hi)
_READ_WINDOW = f"""
SELECT least(%(lo)s, min({local_day(_LO, "timezone")}::timestamp AT TIME ZONE timezone)),
       greatest(%(hi)s,
                max(({local_day(_LAST, "timezone")} + 1)::timestamp AT TIME ZONE timezone))
FROM sites
"""

# Everything the rollups count among events in [w_lo, w_hi), to the device's current site.
# Visits read lock events from VISIT_MAX earlier, so that a visit ending just after w_lo finds
# its unlock; battery levels take each device's last level before w_lo as the first previous.
_REBUILD_DELTA = f"""
INSERT INTO {REBUILD_DELTA_TABLE} (device_id, site_id, tz, time, type, events, duration_s)
WITH counted AS (
    SELECT device_id, time, type, 1 AS events, {duration_s("type", "data")} AS duration_s
    FROM events
    WHERE time >= %(w_lo)s AND time < %(w_hi)s AND type <> 'heartbeat'
),
locks AS (
    SELECT device_id, time, type, lag(time) OVER w AS prev_time, lag(type) OVER w AS prev_type
    FROM events
    WHERE time >= %(w_lo)s::timestamptz - {_VISIT_MAX_SQL} AND time < %(w_hi)s
      AND type IN ({_LOCK_TYPES_SQL})
    WINDOW w AS ({_LOCK_ORDER})
),
visits AS (
    SELECT device_id, time, 1 AS events, {visit_s("time", "prev_time")} AS duration_s
    FROM locks
    WHERE time >= %(w_lo)s AND {is_visit("time", "type", "prev_time", "prev_type")}
),
in_window AS (
    SELECT device_id, time, {battery("data")} AS level FROM events
    WHERE time >= %(w_lo)s AND time < %(w_hi)s AND {_reports_battery("type", "data")}
),
-- One index probe per device with levels in the window (a device that never reports a battery
-- is not probed, so no probe walks back over a camera's whole history).
before_window AS (
    SELECT p.device_id, b.time, b.level
    FROM (SELECT DISTINCT device_id FROM in_window) p
    CROSS JOIN LATERAL (
        SELECT e.time, {battery("e.data")} AS level FROM events e
        WHERE e.device_id = p.device_id AND e.time < %(w_lo)s
          AND {_reports_battery("e.type", "e.data")}
        ORDER BY e.time DESC LIMIT 1
    ) b
),
levels AS (
    SELECT device_id, time, level,
           lag(level) OVER (PARTITION BY device_id ORDER BY time) AS previous
    FROM (SELECT * FROM in_window UNION ALL SELECT * FROM before_window) l
),
replacements AS (
    SELECT device_id, time FROM levels
    WHERE time >= %(w_lo)s AND {is_replacement("level", "previous")}
)
SELECT x.device_id, d.site_id, s.timezone, x.time, x.type, x.events, x.duration_s
FROM (
    SELECT device_id, time, type, events, duration_s FROM counted
    UNION ALL
    SELECT device_id, time, '{LOCK_VISIT}', events, duration_s FROM visits
    UNION ALL
    SELECT device_id, time, '{BATTERY_REPLACED}', 1, 0 FROM replacements
) x
JOIN devices d ON d.id = x.device_id
JOIN sites s ON s.id = d.site_id
"""

# Gateways' upserts wait while a chunk is rebuilt (ROW EXCLUSIVE conflicts with this mode), so
# that an event they store meanwhile is either in the rebuild's snapshot or added after it.
_LOCK_ROLLUPS = f"LOCK TABLE {', '.join(ROLLUP_TABLES)} IN SHARE ROW EXCLUSIVE MODE"

_DELETE_HOURLY = [
    "DELETE FROM usage_device_hourly WHERE bucket >= %(lo)s AND bucket < %(hi)s",
    "DELETE FROM usage_site_hourly WHERE bucket >= %(lo)s AND bucket < %(hi)s",
]
_FIRST_DAY = local_day(_LO, "s.timezone")
_LAST_DAY = local_day(_LAST, "s.timezone")
_DELETE_DAILY = f"""
DELETE FROM usage_site_daily u USING sites s
WHERE u.site_id = s.id AND u.day >= {_FIRST_DAY} AND u.day <= {_LAST_DAY}
"""
_HOURLY_WHERE = "time >= %(lo)s AND time < %(hi)s"
_DAILY_WHERE = (
    f"{local_day('time', 'tz')} >= {local_day(_LO, 'tz')}"
    f" AND {local_day('time', 'tz')} <= {local_day(_LAST, 'tz')}"
)
_REBUILD_UPSERTS = upsert_sql(
    REBUILD_DELTA_TABLE, hourly_where=_HOURLY_WHERE, daily_where=_DAILY_WHERE
)


@dataclass(frozen=True, slots=True)
class RebuildResult:
    since: datetime  # the range rebuilt, rounded out to whole hours
    until: datetime
    chunks: int
    delta_rows: int  # events, visits and replacements computed (chunk margins counted again)


def hour_range(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """[since, until) rounded out to whole UTC hours; a ValueError for an empty or naive range."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until need a time zone")
    if until <= since:
        raise ValueError(f"until ({until.isoformat()}) must be after since ({since.isoformat()})")
    lo = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hi = until.astimezone(UTC)
    if hi != hi.replace(minute=0, second=0, microsecond=0):
        hi = hi.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return lo, hi


def chunks(lo: datetime, hi: datetime, size: timedelta) -> list[tuple[datetime, datetime]]:
    """[lo, hi) cut into consecutive pieces of ``size`` (the last may be shorter)."""
    if size <= timedelta(0):
        raise ValueError(f"chunk size must be positive, not {size}")
    pieces: list[tuple[datetime, datetime]] = []
    start = lo
    while start < hi:
        end = min(start + size, hi)
        pieces.append((start, end))
        start = end
    return pieces


def rebuild(
    conn: psycopg.Connection[Any],
    since: datetime,
    until: datetime,
    *,
    chunk: timedelta = timedelta(days=1),
    progress: Callable[[datetime, datetime, int], None] | None = None,
) -> RebuildResult:
    """Recompute the rollups of [since, until) (rounded out to hours) from ``events``.

    Hourly rows of the range, and daily rows of every local day the range touches, are deleted
    and computed again, one transaction per ``chunk`` (a day of a large fleet is a few hundred
    thousand rows to read). A day cut by a chunk boundary is recomputed whole by both chunks.
    Safe while gateways run: each chunk holds their rollup upserts back until it commits.
    ``conn`` must be in autocommit mode (each chunk is its own transaction).
    """
    if not conn.autocommit:
        raise ValueError("rebuild needs an autocommit connection: one transaction per chunk")
    lo, hi = hour_range(since, until)
    total = 0
    pieces = chunks(lo, hi, chunk)
    for start, end in pieces:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(_LOCK_ROLLUPS)
            # A week of a large fleet's battery levels sorts in memory, not in temp files; and
            # JIT compilation would cost a chunk more than it saves (measured: 0.5 of 3.6 s).
            cur.execute("SET LOCAL work_mem = '64MB'")
            cur.execute("SET LOCAL jit = off")
            params: dict[str, Any] = {"lo": start, "hi": end}
            row = cur.execute(_READ_WINDOW, params).fetchone()
            w_lo, w_hi = (start, end) if row is None or row[0] is None else (row[0], row[1])
            params |= {"w_lo": w_lo, "w_hi": w_hi}
            cur.execute(_CREATE_REBUILD_DELTA)
            cur.execute(_REBUILD_DELTA, params)
            rows = cur.rowcount
            for statement in [*_DELETE_HOURLY, _DELETE_DAILY, *_REBUILD_UPSERTS]:
                cur.execute(statement, params)
        total += rows
        if progress is not None:
            progress(start, end, rows)
    log.info(
        "usage rollups rebuilt for %s..%s (%s chunk(s))",
        lo.isoformat(),
        hi.isoformat(),
        len(pieces),
    )
    return RebuildResult(lo, hi, len(pieces), total)
