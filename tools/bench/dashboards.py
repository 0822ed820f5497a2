"""``carewatch bench dashboards``: the usage report over a backfilled year, against raw events.

On a private PostgreSQL in a temporary directory (or ``--database-url``: an existing, already
backfilled database, to measure again without waiting for the backfill):

1. migrate; backfill ``--days`` of history for ``--devices`` devices with
   ``carewatch simulate --backfill`` (a child process, timed: events and rollups, COPY);
2. start the API as production does (``python -m api``), add a manager and log in;
3. for each view (a month by day, a year by week): ``--requests`` timed HTTP GETs of
   ``/api/v1/usage`` (the first one a warm-up, not counted), then ``--raw-runs`` runs of one SQL
   statement that computes the same rollup-based measures from raw ``events`` (camera checks
   and night checks, lock visits by window functions, robot minutes, alarms, battery jumps),
   per bucket, over the same period and buckets as the API's answer;
4. the raw answer must equal the API's, bucket by bucket (checks, night checks, visits, robot
   minutes, alarms, battery replacements): the comparison is between two ways to the same
   numbers, and a rollup bug stops the benchmark. The alerts-based measures (alerts by rule,
   response times, availability) read the small ``alerts`` table in both cases - alerts are
   not events - so they are not part of the raw side.

Reported: events, devices, days, database size, backfill time, and per view the API's p50/p95/
max in ms, the raw SQL's median ms and the speedup (raw / API p95). Progress on stderr, the
table (and with ``--json`` a last line of JSON) on stdout.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import httpx
import psycopg
from psycopg import sql

from carewatch import admin
from carewatch.db.migrate import migrate
from carewatch.processes import free_port
from tools.bench.children import BenchChild
from tools.bench.errors import BenchError
from tools.bench.harness import (
    answer_json,
    api_url,
    default_retention_days,
    login,
    machine,
    print_report,
    run_benchmark,
    start_api,
    wait_ready,
)
from tools.local.postgres import PostgresInstance
from tools.simulate import DEMO_ORG_ID

log = logging.getLogger("tools.bench.dashboards")

_MANAGER: Final = "bench-manager"
_BACKFILL_TIMEOUT_S: Final = 3 * 3600.0
# The report's figures are rounded to 2 decimals; minutes summed over buckets may differ by
# that much per bucket.
_MINUTES_TOLERANCE: Final = 0.011


@dataclass(frozen=True, slots=True)
class View:
    """A period of the usage report and its buckets, as a manager looks at it."""

    name: str
    bucket: str
    days: int


VIEWS: Final = (View("month_by_day", "day", 30), View("year_by_week", "week", 364))


@dataclass(frozen=True, slots=True)
class ViewResult:
    """One view's figures."""

    view: str
    buckets: int
    api_p50_ms: float
    api_p95_ms: float
    api_max_ms: float
    api_requests: int
    raw_ms: float
    raw_runs: int
    speedup: float
    checks: int
    visits: int
    robot_minutes: float
    alarms: int
    battery_replacements: int


def run(args: argparse.Namespace) -> int:
    """``carewatch bench dashboards``; the exit code."""
    if min(args.days, args.devices, args.requests - 1, args.raw_runs) < 1:
        print(
            "carewatch bench dashboards: --days, --devices and --raw-runs must be positive and"
            " --requests at least 2 (the first is a warm-up)",
            file=sys.stderr,
        )
        return 2

    def measure_and_report(base_dir: Path) -> int:
        result = measure(base_dir, args)
        print_report(render_table(result), result, as_json=args.json)
        return 0

    return run_benchmark(
        measure_and_report, dir_prefix="carewatch-bench-dashboards-", keep=args.keep
    )


def measure(base_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Backfill (unless ``--database-url``), then time both views; the JSON result."""
    if args.database_url:
        log.info("using the existing database (no backfill)")
        migrate(args.database_url, retention_days=default_retention_days())
        return _measure_on(base_dir, args.database_url, args, backfill_s=None)
    with PostgresInstance(base_dir / "postgres") as postgres:
        url = postgres.create_database("carewatch")
        # A year is kept whatever the default retention: the backfill is a year old at its start.
        migrate(url, retention_days=max(default_retention_days(), args.days + 30))
        backfill_s = _backfill(base_dir, url, args)
        return _measure_on(base_dir, url, args, backfill_s=backfill_s)


def _backfill(base_dir: Path, url: str, args: argparse.Namespace) -> float:
    log.info("backfilling %d days of %d devices", args.days, args.devices)
    argv = [sys.executable, "-m", "app.cli", "simulate", "--database-url", url,
            "--backfill", f"{args.days}d", "--devices", str(args.devices),
            "--seed", str(args.seed)]  # fmt: skip
    started = time.perf_counter()
    with BenchChild(
        "backfill", argv, log_path=base_dir / "backfill.log", stdout="log", stdin_pipe=False
    ) as child:
        try:
            code = child.wait(_BACKFILL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise child.failed(f"did not finish within {_BACKFILL_TIMEOUT_S:.0f} s") from None
        if code != 0:
            raise child.failed(f"exited with {code}")
    elapsed = time.perf_counter() - started
    log.info("backfill took %.1f s", elapsed)
    return elapsed


def _measure_on(
    base_dir: Path, url: str, args: argparse.Namespace, *, backfill_s: float | None
) -> dict[str, Any]:
    facts = _facts(url)
    log.info("%s events, %s devices, %s", facts["events"], facts["devices"], facts["db_size"])
    password = _add_manager(url)
    api_port = free_port()
    env = {**os.environ, "CAREWATCH_DATABASE_URL": url}
    with start_api(api_port, env, base_dir / "api.log") as api:
        base_url = api_url(api_port)
        wait_ready(f"{base_url}/readyz", api)
        token = login(base_url, _MANAGER, password)
        until_day = facts["last_day"] + timedelta(days=1)
        # One client for every request: a connection (and a client) each would be timed too.
        with httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=120.0
        ) as client:
            views = [_measure_view(client, url, view, until_day, args) for view in VIEWS]
    return {
        "benchmark": "dashboards",
        "events": facts["events"],
        "devices": facts["devices"],
        "sites": facts["sites"],
        "days": facts["days"],
        "db_size_bytes": facts["db_size_bytes"],
        "db_size": facts["db_size"],
        "rollup_rows": facts["rollup_rows"],
        "backfill_s": None if backfill_s is None else round(backfill_s, 1),
        "views": {v.view: asdict(v) for v in views},
        "machine": machine(url, with_mosquitto=False),
    }


def _facts(url: str) -> dict[str, Any]:
    """What the database holds: events (an exact count), devices, sites, the days covered (local
    dates of the demo organisation's first site), its size and the rollups' rows."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            """
            SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM devices),
                   (SELECT count(*) FROM sites WHERE org_id = %(org)s),
                   (SELECT timezone FROM sites WHERE org_id = %(org)s ORDER BY name, id LIMIT 1),
                   (SELECT min(time) FROM events), (SELECT max(time) FROM events),
                   pg_database_size(current_database()),
                   pg_size_pretty(pg_database_size(current_database())),
                   (SELECT count(*) FROM usage_device_hourly),
                   (SELECT count(*) FROM usage_site_hourly),
                   (SELECT count(*) FROM usage_site_daily)
            """,
            {"org": DEMO_ORG_ID},
        ).fetchone()
    assert row is not None
    events, devices, sites, tz_name, first, last, size, size_text = row[:8]
    if not events or tz_name is None:
        raise BenchError(f"no events or no site of organisation {DEMO_ORG_ID!r} to report on")
    tz = ZoneInfo(tz_name)
    first_day: date = first.astimezone(tz).date()
    last_day: date = last.astimezone(tz).date()
    return {
        "events": events,
        "devices": devices,
        "sites": sites,
        "days": (last_day - first_day).days + 1,
        "last_day": last_day,
        "db_size_bytes": size,
        "db_size": size_text,
        "rollup_rows": {"device_hourly": row[8], "site_hourly": row[9], "site_daily": row[10]},
    }


def _add_manager(url: str) -> str:
    password = "bench-" + os.urandom(12).hex()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM users WHERE username = %s", (_MANAGER,))
        admin.add_user(conn, _MANAGER, DEMO_ORG_ID, "manager", password)
    return password


def _measure_view(
    client: httpx.Client, url: str, view: View, until_day: date, args: argparse.Namespace
) -> ViewResult:
    since_day = until_day - timedelta(days=view.days)
    params = {"since": since_day.isoformat(), "until": until_day.isoformat(), "bucket": view.bucket}
    request = client.build_request("GET", "/api/v1/usage", params=params)
    log.info("%s: %d requests of GET %s", view.name, args.requests, request.url.raw_path.decode())
    usage: dict[str, Any] = {}

    def get() -> None:
        usage.update(answer_json(client.send(request), f"GET {request.url}"))

    api_ms = _timed(get, args.requests)[1:]  # the first one warms up caches and the pool
    log.info("%s: %d raw-events runs", view.name, args.raw_runs)
    raw: list[dict[str, Any]] = []

    def raw_run() -> None:
        raw[:] = raw_measures(url, usage)

    raw_ms = _timed(raw_run, args.raw_runs)
    api = api_measures(usage)
    _check_equal(view.name, api, raw)
    p95 = _percentile(api_ms, 0.95)
    raw_median = statistics.median(raw_ms)
    return ViewResult(
        view=view.name,
        buckets=len(usage["buckets"]),
        api_p50_ms=round(_percentile(api_ms, 0.5), 1),
        api_p95_ms=round(p95, 1),
        api_max_ms=round(max(api_ms), 1),
        api_requests=len(api_ms),
        raw_ms=round(raw_median, 1),
        raw_runs=len(raw_ms),
        speedup=round(raw_median / p95, 1),
        checks=sum(b["checks"] for b in api),
        visits=sum(b["visits"] for b in api),
        robot_minutes=round(sum(b["robot_minutes"] for b in api), 2),
        alarms=sum(b["alarms"] for b in api),
        battery_replacements=sum(b["battery_replacements"] for b in api),
    )


def _timed(action: Callable[[], None], times: int) -> list[float]:
    """Milliseconds of each of ``times`` calls of ``action``."""
    elapsed: list[float] = []
    for _ in range(times):
        started = time.perf_counter()
        action()
        elapsed.append((time.perf_counter() - started) * 1000)
    return elapsed


def _percentile(values: list[float], share: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default, and PostgreSQL's
    percentile_cont): with 19 timed requests a nearest-rank p95 would simply be the maximum."""
    ordered = sorted(values)
    rank = share * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --- the same measures, two ways ---------------------------------------------------------------

MEASURES: Final = ("checks", "night_checks", "visits", "robot_minutes", "alarms",
                   "battery_replacements")  # fmt: skip


def api_measures(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's rollup-based measures per bucket, oldest first."""
    return [
        {
            "bucket": bucket,
            "checks": camera["checks"],
            "night_checks": camera["night_checks"],
            "visits": lock["visits"],
            "robot_minutes": robot["minutes"],
            "alarms": alarm["alarms"],
            "battery_replacements": battery["replacements"],
        }
        for bucket, camera, lock, robot, alarm, battery in zip(
            report["buckets"],
            report["camera_checks"]["series"],
            report["lock_visits"]["series"],
            report["robot_minutes"]["series"],
            report["alarms"]["series"],
            report["battery_replacements"]["series"],
            strict=True,
        )
    ]


# One statement over raw events: what the report reads from the rollups, computed directly.
# Visits need each lock event's predecessor of the same device (window functions, from 12 h
# before the period: a visit is at most that long); a battery replacement the previous battery
# reading (from a day before the period: devices report far more often than that).
RAW_SQL: Final = """
WITH scope AS (
    SELECT d.id FROM devices d JOIN sites s ON s.id = d.site_id WHERE s.org_id = %(org)s
),
counted AS (
    SELECT e.time, e.type, e.data FROM events e
     WHERE e.device_id IN (SELECT id FROM scope)
       AND e.time >= %(since)s AND e.time < %(until)s
       AND e.type IN ('camera.check_ended', 'robot.interaction', 'alarm.pressed')
),
lock_events AS (
    SELECT e.time, e.type,
           lag(e.type) OVER w AS prev_type, lag(e.time) OVER w AS prev_time
      FROM events e
     WHERE e.device_id IN (SELECT id FROM scope)
       AND e.time >= %(since)s - interval '12 hours' AND e.time < %(until)s
       AND e.type IN ('lock.unlocked', 'lock.locked')
    WINDOW w AS (PARTITION BY e.device_id ORDER BY e.time, e.event_id)
),
visits AS (
    SELECT time FROM lock_events
     WHERE time >= %(since)s AND type = 'lock.locked' AND prev_type = 'lock.unlocked'
       AND time - prev_time <= interval '12 hours'
),
readings AS (
    SELECT e.time, (e.data ->> 'battery')::numeric AS level,
           lag((e.data ->> 'battery')::numeric) OVER (
               PARTITION BY e.device_id ORDER BY e.time, e.event_id) AS previous
      FROM events e
     WHERE e.device_id IN (SELECT id FROM scope)
       AND e.time >= %(since)s - interval '1 day' AND e.time < %(until)s
       AND e.type = 'heartbeat' AND e.data ? 'battery'
),
replacements AS (
    SELECT time FROM readings WHERE time >= %(since)s AND level >= previous + 30
),
facts AS (
    SELECT time,
           (type = 'camera.check_ended')::int AS checks,
           (type = 'camera.check_ended'
            AND extract(hour FROM time AT TIME ZONE %(tz)s) NOT BETWEEN 6 AND 17)::int
             AS night_checks,
           0 AS visits,
           CASE WHEN type = 'robot.interaction'
                THEN coalesce((data ->> 'duration_s')::float8, 0) ELSE 0 END AS robot_s,
           (type = 'alarm.pressed')::int AS alarms,
           0 AS replacements
      FROM counted
    UNION ALL SELECT time, 0, 0, 1, 0, 0, 0 FROM visits
    UNION ALL SELECT time, 0, 0, 0, 0, 0, 1 FROM replacements
)
SELECT {bucket} AS bucket, sum(checks)::int, sum(night_checks)::int, sum(visits)::int,
       sum(robot_s) / 60, sum(alarms)::int, sum(replacements)::int
  FROM facts GROUP BY 1 ORDER BY 1
"""
_RAW_BUCKET: Final = {
    "hour": "date_trunc('hour', time, 'UTC')",
    "day": "(time AT TIME ZONE %(tz)s)::date",
    "week": "date_trunc('week', time AT TIME ZONE %(tz)s)::date",
}


def raw_measures(url: str, report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's rollup-based measures per bucket, computed from raw events in one statement
    over the report's own period, buckets and time zone; a bucket with nothing is zeros."""
    tz = ZoneInfo(report["timezone"])
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            sql.SQL(RAW_SQL).format(bucket=sql.SQL(_RAW_BUCKET[report["bucket"]])),
            {
                "org": DEMO_ORG_ID,
                "since": datetime.fromisoformat(report["since"]),
                "until": datetime.fromisoformat(report["until"]),
                "tz": report["timezone"],
            },
        ).fetchall()
    found: dict[str, tuple[Any, ...]] = {}
    for bucket, *values in rows:
        start = bucket.astimezone(tz) if isinstance(bucket, datetime) else _midnight(bucket, tz)
        found[start.isoformat()] = tuple(values)
    zeros = (0, 0, 0, 0.0, 0, 0)
    return [
        {"bucket": bucket, **dict(zip(MEASURES, found.get(bucket, zeros), strict=True))}
        for bucket in report["buckets"]
    ]


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, datetime.min.time(), tz)


def _check_equal(view: str, api: list[dict[str, Any]], raw: list[dict[str, Any]]) -> None:
    """BenchError naming the first bucket and measure where the two ways differ."""
    for from_api, from_raw in zip(api, raw, strict=True):
        for measure in MEASURES:
            a, r = from_api[measure], from_raw[measure]
            same = abs(a - r) <= _MINUTES_TOLERANCE if measure == "robot_minutes" else a == r
            if not same:
                raise BenchError(
                    f"{view}: {measure} of the bucket {from_api['bucket']} is {a} from the API"
                    f" (rollups) but {r} from raw events"
                )


def render_table(result: dict[str, Any]) -> str:
    """The human-readable report of :func:`measure`'s result."""
    backfill = "-" if result["backfill_s"] is None else f"{result['backfill_s']:.0f} s"
    lines = [
        f"carewatch bench dashboards: {result['events']:,} events of {result['devices']:,}"
        f" devices over {result['days']} days; database {result['db_size']};"
        f" backfill {backfill}",
        "",
        f"{'view':<14} {'buckets':>7} {'API p50 ms':>10} {'p95 ms':>8} {'max ms':>8}"
        f" {'raw SQL ms':>11} {'speedup':>8}  checks / visits / robot min / alarms / batteries",
    ]
    for view in result["views"].values():
        lines.append(
            f"{view['view']:<14} {view['buckets']:>7} {view['api_p50_ms']:>10.1f}"
            f" {view['api_p95_ms']:>8.1f} {view['api_max_ms']:>8.1f} {view['raw_ms']:>11.1f}"
            f" {view['speedup']:>7.0f}x  {view['checks']} / {view['visits']} /"
            f" {view['robot_minutes']:.0f} / {view['alarms']} / {view['battery_replacements']}"
        )
    lines.append("")
    lines.append(
        "raw SQL: the same rollup-based measures from events in one statement, checked equal"
        " bucket by bucket; alert-based measures read alerts both ways (alerts are not events)"
    )
    return "\n".join(lines)
