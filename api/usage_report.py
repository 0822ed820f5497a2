"""The usage report: what the night cameras, locks, robots and alarms were used for, and how
fast alerts were handled, per bucket of local time — ``GET /api/v1/usage`` and the dashboards.

:func:`usage_report` decides the period and the buckets (pure, :func:`plan_period`), reads the
sums with :mod:`api.usage_queries` (rollups and alerts, never ``events``) and puts the answer
together. Buckets are local: the selected sites' time zone (Europe/Stockholm unless they all say
otherwise; when they differ, the first site's by name, and the answer says so). A day is a local
calendar day (23 or 25 hours across a DST change), a week starts on Monday.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import psycopg_pool

from api import usage_queries as q
from api.auth import UserContext
from api.errors import ApiError
from api.pool import Pool
from api.schemas import (
    Severity,
    UsageAlarmBucket,
    UsageAlarms,
    UsageAlertCount,
    UsageAlerts,
    UsageAvailability,
    UsageBatteryBucket,
    UsageBatteryReplacements,
    UsageBucket,
    UsageCameraBucket,
    UsageCameraChecks,
    UsageDeviceAvailability,
    UsageKindAvailability,
    UsageLockBucket,
    UsageLockVisits,
    UsageReport,
    UsageResponseTimes,
    UsageRobotBucket,
    UsageRobotMinutes,
    UsageRobotPublic,
    UsageSeverityTimes,
    UsageSiteComparison,
    UsageSlowAck,
)
from carewatch.db.rollups import BATTERY_REPLACED, LOCK_VISIT

DEFAULT_TIMEZONE: Final = "Europe/Stockholm"
DEFAULT_DAYS: Final = 30
# Two years and a day (a leap year in them): enough for "this year against last year".
MAX_PERIOD: Final = timedelta(days=731)
# 744 hour buckets is about what a chart can still show; longer periods take day buckets.
MAX_HOUR_PERIOD: Final = timedelta(days=31)
NIGHT_STARTS_AT: Final = time(18)
# The years a period may start or end in: far wider than any data (Carewatch began in the 2020s)
# and far from the ends of Python's dates, which widening to whole weeks or moving between time
# zones would otherwise run past (OverflowError).
YEARS: Final = range(1970, 9000)
SEVERITIES: Final[tuple[Severity, ...]] = ("critical", "high", "warning", "info")
TOP: Final = 10
# How long a report waits for a second connection for its alerts' statement: hardly at all,
# as a report must not hold one connection while it waits for another.
_SECOND_CONNECTION_WAIT_S: Final = 0.01


class UsageQueryError(ApiError, ValueError):
    """The period or bucket asked for cannot be answered (HTTP 422); the message says why."""


class UsageSiteNotFound(ApiError):  # noqa: N818 - an outcome, like SiteIdTaken
    """No such site, or not one the caller may see (HTTP 404, as if it did not exist)."""

    def __init__(self, site_id: str) -> None:
        self.site_id = site_id
        super().__init__(f"site {site_id!r} not found")


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """What to report on. ``site`` None: every site the caller may see. ``since``/``until``:
    aware, or naive (read as local time of the report's time zone); either may be None (the
    defaults: the last 30 days up to the end of today, or 30 days from/to the other one)."""

    site: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    bucket: UsageBucket = "day"


def plan_period(query: UsageQuery, timezone: str, now: datetime) -> q.Period:
    """The period to report: the one asked for, checked, in ``timezone`` and widened to whole
    buckets (hours, local midnights, local Monday midnights). Raises UsageQueryError."""
    for name, moment in (("since", query.since), ("until", query.until)):
        if moment is not None and moment.year not in YEARS:
            raise UsageQueryError(f"{name} must be in the years {YEARS.start} to {YEARS.stop - 1}")
    tz = ZoneInfo(timezone)
    since, until = _local(query.since, tz), _local(query.until, tz)
    if since is None and until is None:
        until = datetime.combine(now.astimezone(tz).date() + timedelta(days=1), time(), tz)
    if since is None:
        assert until is not None
        since = _days_before(until, DEFAULT_DAYS, tz)
    if until is None:
        until = _days_before(since, -DEFAULT_DAYS, tz)
    # Aware datetimes of one tzinfo subtract and compare by wall clock in Python (a DST day
    # would be 24 h): every difference and comparison here is taken in UTC.
    asked = f"since {since.isoformat()}, until {until.isoformat()}"
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    if since >= until:
        raise UsageQueryError(f"since must be before until ({asked})")
    if until - since > MAX_PERIOD:
        raise UsageQueryError(f"the period may be at most {MAX_PERIOD.days} days ({asked})")
    if query.bucket == "hour" and until - since > MAX_HOUR_PERIOD:
        raise UsageQueryError(
            f"hour buckets cover at most {MAX_HOUR_PERIOD.days} days; use bucket=day"
        )
    if query.bucket == "hour":
        # Hours of UTC: the same as local hours in zones with whole-hour offsets (ours).
        start = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        end = until.astimezone(UTC)
        if end != end.replace(minute=0, second=0, microsecond=0):
            end = end.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        first_day = start.astimezone(tz).date()
        end_day = (end - timedelta(microseconds=1)).astimezone(tz).date() + timedelta(days=1)
        return q.Period(start.astimezone(tz), end.astimezone(tz), first_day, end_day, "hour",
                        timezone)  # fmt: skip
    local_since, local_until = since.astimezone(tz), until.astimezone(tz)
    first_day = local_since.date()
    end_day = local_until.date()
    if local_until.timetz().replace(tzinfo=None) != time():
        end_day += timedelta(days=1)
    if query.bucket == "week":
        first_day -= timedelta(days=first_day.weekday())
        end_day += timedelta(days=-end_day.weekday() % 7)
    return q.Period(_midnight(first_day, tz), _midnight(end_day, tz), first_day, end_day,
                    query.bucket, timezone)  # fmt: skip


def bucket_starts(period: q.Period) -> list[datetime]:
    """The local start of every bucket of the period, oldest first."""
    tz = ZoneInfo(period.timezone)
    if period.bucket == "hour":
        count = int(_elapsed(period) / timedelta(hours=1))
        start = period.since.astimezone(UTC)
        return [(start + timedelta(hours=i)).astimezone(tz) for i in range(count)]
    step = 7 if period.bucket == "week" else 1
    days = (period.end_day - period.first_day).days
    return [_midnight(period.first_day + timedelta(days=i), tz) for i in range(0, days, step)]


def period_days(period: q.Period) -> float:
    """Days in the period: local calendar days (a DST day counts as one), or hours / 24."""
    if period.bucket == "hour":
        return _elapsed(period) / timedelta(hours=1) / 24
    return float((period.end_day - period.first_day).days)


def nights_in(period: q.Period) -> int:
    """Nights that start (18:00 local) inside the period. The checks counted against them are
    those in night hours inside it: the first morning's and not the last morning's, which
    balances out (a month of day buckets: 30 nights for the checks of 30 nights)."""
    tz = ZoneInfo(period.timezone)
    day = period.since.astimezone(tz).date()
    count = 0
    while day <= period.until.astimezone(tz).date():
        night = datetime.combine(day, NIGHT_STARTS_AT, tz).astimezone(UTC)
        if period.since.astimezone(UTC) <= night < period.until.astimezone(UTC):
            count += 1
        day += timedelta(days=1)
    return count


def report_timezone(sites: Iterable[q.SiteRow]) -> tuple[str, str | None]:
    """The sites' time zone and, if they do not share one, a note that says which one is used."""
    zones = [site.timezone for site in sites]
    if not zones:
        return DEFAULT_TIMEZONE, None
    if len(set(zones)) == 1:
        return zones[0], None
    return zones[0], (
        f"the sites are in {len(set(zones))} time zones ({', '.join(sorted(set(zones)))});"
        f" buckets are in {zones[0]}, the first site's"
    )


@dataclass(frozen=True, slots=True)
class UsageRows:
    """Everything the report reads for its sites and period, before it is put together."""

    sites: list[q.SiteRow]
    rollups: list[q.RollupRow]
    night_checks: list[tuple[date | datetime, int]]
    robots: list[dict[str, object]]
    alert_counts: list[dict[str, object]]
    response_times: list[dict[str, object]]
    slowest: list[dict[str, object]]
    availability: list[dict[str, object]]


async def usage_report(
    pool: Pool, user: UserContext, query: UsageQuery, *, now: datetime | None = None
) -> UsageReport:
    """The report of ``query`` for ``user``. Raises UsageSiteNotFound for a site the caller may
    not see and UsageQueryError for a period or bucket that cannot be answered."""
    now = now or datetime.now(UTC)
    async with pool.connection() as conn:
        sites = await q.selected_sites(conn, user, query.site)
        if query.site is not None and not sites:
            raise UsageSiteNotFound(query.site)
        timezone, note = report_timezone(sites)
        period = plan_period(query, timezone, now)
        rows = await _fetch(pool, conn, sites, period, now)
    return _assemble(query, period, note, rows)


async def _fetch(
    pool: Pool, conn: q.Connection, sites: list[q.SiteRow], period: q.Period, now: datetime
) -> UsageRows:
    """Read every sum the report needs, one statement each (rollups and alerts only; the
    alerts' counts, response times and slowest acknowledgements share one).

    The alerts' statement is the largest (it reads every alert of the period: a year of a
    thousand devices is some 40,000, most of a year report's time), so it runs on a second
    connection beside the rest when the pool has one free (waiting 10 ms at most, so that
    reports cannot hold the pool's connections while waiting for more of them).
    """
    site_ids = [site.id for site in sites]
    alerts_task = asyncio.create_task(_alert_figures(pool, conn, site_ids, period))
    try:
        rollups = await q.rollup_rows(conn, site_ids, period)
        night_checks = await q.night_checks(conn, site_ids, period)
        robots = await q.robot_minutes(conn, site_ids, period)
        availability = await q.device_availability(conn, site_ids, period, now)
    except BaseException:
        alerts_task.cancel()
        raise
    alerts = await alerts_task
    return UsageRows(
        sites=sites,
        rollups=rollups,
        night_checks=night_checks,
        robots=robots,
        alert_counts=alerts.counts,
        response_times=alerts.times,
        slowest=alerts.slowest,
        availability=availability,
    )


async def _alert_figures(
    pool: Pool, conn: q.Connection, site_ids: list[str], period: q.Period
) -> q.AlertFigures:
    """The alerts' figures on a connection of their own if the pool has one free now, else on
    the caller's (whose lock then runs them after the statement in progress)."""
    try:
        async with pool.connection(timeout=_SECOND_CONNECTION_WAIT_S) as other:
            return await q.alert_figures(other, site_ids, period, limit=TOP)
    except psycopg_pool.PoolTimeout:
        return await q.alert_figures(conn, site_ids, period, limit=TOP)


# --- putting the answer together ---------------------------------------------------------------


def _assemble(
    query: UsageQuery, period: q.Period, note: str | None, rows: UsageRows
) -> UsageReport:
    """The answer: one section per measure, each from the rows it needs."""
    buckets = bucket_starts(period)
    days = period_days(period)
    sums = _Sums.of(rows.rollups, buckets, ZoneInfo(period.timezone))
    alerts, alerts_per_site = _alerts(rows.alert_counts)
    availability, share_online = _availability(rows.availability)
    return UsageReport(
        site=query.site,
        since=period.since,
        until=period.until,
        bucket=period.bucket,
        timezone=period.timezone,
        timezone_note=note,
        buckets=buckets,
        days=days,
        camera_checks=_camera_checks(sums, rows.night_checks, period),
        lock_visits=_lock_visits(sums, days),
        robot_minutes=_robot_minutes(sums, rows.robots, days),
        alarms=_alarms(sums, days),
        alerts=alerts,
        response_times=UsageResponseTimes(
            by_severity=_severity_times_all(rows.response_times),
            slowest=[UsageSlowAck.model_validate(row) for row in rows.slowest],
        ),
        availability=availability,
        battery_replacements=_battery_replacements(sums),
        sites=[
            _site_comparison(site, sums, alerts_per_site.get(site.id, 0), share_online)
            for site in rows.sites
        ],
    )


@dataclass(frozen=True, slots=True)
class _Sums:
    """The rollups summed per (type, bucket) and per (site, type).

    Buckets are keyed by their start in UTC: local datetimes of one tzinfo compare and hash by
    wall clock, and the two 02:00 hours of the night summer time ends would be one key.
    """

    buckets: list[datetime]
    events: dict[tuple[str, datetime], int]
    duration_s: dict[tuple[str, datetime], float]
    # Per (site, type): events, or minutes for robot interactions (what the comparison shows).
    per_site: dict[tuple[str, str], float]

    @classmethod
    def of(cls, rollups: list[q.RollupRow], buckets: list[datetime], tz: ZoneInfo) -> _Sums:
        """Sum ``rollups`` into the report's ``buckets`` (local starts in ``tz``)."""
        events: dict[tuple[str, datetime], int] = defaultdict(int)
        duration_s: dict[tuple[str, datetime], float] = defaultdict(float)
        per_site: dict[tuple[str, str], float] = defaultdict(float)
        for row in rollups:
            start = _key(_bucket_start(row.bucket, tz))
            events[row.type, start] += row.events
            duration_s[row.type, start] += row.duration_s
            amount = row.duration_s / 60 if row.type == q.ROBOT_INTERACTION else row.events
            per_site[row.site_id, row.type] += amount
        return cls(buckets, dict(events), dict(duration_s), dict(per_site))

    def count(self, kind: str, bucket: datetime) -> int:
        """Events of ``kind`` in the bucket that starts at ``bucket``."""
        return self.events.get((kind, _key(bucket)), 0)

    def seconds(self, kind: str, bucket: datetime) -> float:
        """Seconds of ``kind`` in the bucket that starts at ``bucket``."""
        return self.duration_s.get((kind, _key(bucket)), 0.0)

    def total(self, kind: str) -> int:
        """Events of ``kind`` in the whole period."""
        return sum(self.count(kind, bucket) for bucket in self.buckets)

    def total_s(self, kind: str) -> float:
        """Seconds of ``kind`` in the whole period."""
        return sum(self.seconds(kind, bucket) for bucket in self.buckets)

    def mean_s(self, kind: str, bucket: datetime | None = None) -> float | None:
        """Mean seconds per event of ``kind`` in one bucket, or in the period (None if none)."""
        if bucket is None:
            return _mean(self.total_s(kind), self.total(kind))
        return _mean(self.seconds(kind, bucket), self.count(kind, bucket))

    def of_site(self, site_id: str, kind: str) -> float:
        """The site's events of ``kind`` in the period (minutes for robot interactions)."""
        return self.per_site.get((site_id, kind), 0.0)


def _camera_checks(
    sums: _Sums, night_checks: list[tuple[date | datetime, int]], period: q.Period
) -> UsageCameraChecks:
    """Camera checks per bucket and per night, and how long they take."""
    tz = ZoneInfo(period.timezone)
    at_night = {_key(_bucket_start(bucket, tz)): count for bucket, count in night_checks}
    nights = nights_in(period)
    return UsageCameraChecks(
        series=[
            UsageCameraBucket(
                bucket=b,
                checks=sums.count(q.CAMERA_CHECK, b),
                night_checks=at_night.get(_key(b), 0),
                mean_duration_s=sums.mean_s(q.CAMERA_CHECK, b),
            )
            for b in sums.buckets
        ],
        nights=nights,
        checks_per_night=_round(sum(at_night.values()) / nights) if nights else None,
        mean_duration_s=sums.mean_s(q.CAMERA_CHECK),
    )


def _lock_visits(sums: _Sums, days: float) -> UsageLockVisits:
    """Lock visits per bucket and per day, and how long they last."""
    return UsageLockVisits(
        series=[
            UsageLockBucket(
                bucket=b,
                visits=sums.count(LOCK_VISIT, b),
                mean_duration_s=sums.mean_s(LOCK_VISIT, b),
            )
            for b in sums.buckets
        ],
        visits=sums.total(LOCK_VISIT),
        visits_per_day=_round(sums.total(LOCK_VISIT) / days),
        mean_duration_s=sums.mean_s(LOCK_VISIT),
    )


def _robot_minutes(sums: _Sums, robots: list[dict[str, object]], days: float) -> UsageRobotMinutes:
    """Minutes of robot interaction per bucket, in all and per robot."""
    return UsageRobotMinutes(
        series=[
            UsageRobotBucket(bucket=b, minutes=_round(sums.seconds(q.ROBOT_INTERACTION, b) / 60))
            for b in sums.buckets
        ],
        minutes=_round(sums.total_s(q.ROBOT_INTERACTION) / 60),
        per_robot=[
            UsageRobotPublic(
                device_id=str(r["device_id"]),
                label=str(r["label"]),
                site_id=str(r["site_id"]),
                minutes=_round(_float(r["duration_s"]) / 60),
                minutes_per_day=_round(_float(r["duration_s"]) / 60 / days),
            )
            for r in robots
        ],
    )


def _alarms(sums: _Sums, days: float) -> UsageAlarms:
    """Alarm presses per bucket, in all and per day."""
    return UsageAlarms(
        series=[UsageAlarmBucket(bucket=b, alarms=sums.count(q.ALARM, b)) for b in sums.buckets],
        total=sums.total(q.ALARM),
        per_day=_round(sums.total(q.ALARM) / days),
    )


def _battery_replacements(sums: _Sums) -> UsageBatteryReplacements:
    """Batteries replaced per bucket and in all."""
    return UsageBatteryReplacements(
        series=[
            UsageBatteryBucket(bucket=b, replacements=sums.count(BATTERY_REPLACED, b))
            for b in sums.buckets
        ],
        total=sums.total(BATTERY_REPLACED),
    )


def _alerts(rows: list[dict[str, object]]) -> tuple[UsageAlerts, dict[str, int]]:
    """Alerts per rule and severity, most frequent first; and the number per site."""
    by_rule: dict[tuple[str, str], int] = defaultdict(int)
    per_site: dict[str, int] = defaultdict(int)
    for row in rows:
        count = _int(row["count"])
        by_rule[str(row["rule"]), str(row["severity"])] += count
        per_site[str(row["site_id"])] += count
    alerts = UsageAlerts(
        by_rule_severity=[
            UsageAlertCount.model_validate({"rule": rule, "severity": sev, "count": count})
            for (rule, sev), count in sorted(
                by_rule.items(), key=lambda item: (-item[1], item[0][0], item[0][1])
            )
        ],
        total=sum(by_rule.values()),
    )
    return alerts, dict(per_site)


def _site_comparison(
    site: q.SiteRow, sums: _Sums, alerts: int, share_online: dict[str, float | None]
) -> UsageSiteComparison:
    """One site's row of the comparison of the sites."""
    return UsageSiteComparison(
        site_id=site.id,
        name=site.name,
        camera_checks=int(sums.of_site(site.id, q.CAMERA_CHECK)),
        lock_visits=int(sums.of_site(site.id, LOCK_VISIT)),
        robot_minutes=_round(sums.of_site(site.id, q.ROBOT_INTERACTION)),
        alarms=int(sums.of_site(site.id, q.ALARM)),
        alerts=alerts,
        share_online=share_online.get(site.id),
    )


def _severity_times_all(rows: list[dict[str, object]]) -> list[UsageSeverityTimes]:
    """Response times for every severity, most severe first (zeros where none were opened)."""
    by_severity = {str(row["severity"]): row for row in rows}
    return [_severity_times(sev, by_severity.get(sev)) for sev in SEVERITIES]


def _severity_times(severity: Severity, row: dict[str, object] | None) -> UsageSeverityTimes:
    if row is None:
        return UsageSeverityTimes(
            severity=severity, alerts=0, acknowledged=0, ack_median_s=None, ack_p90_s=None,
            resolved=0, resolve_median_s=None, resolve_p90_s=None,
        )  # fmt: skip
    return UsageSeverityTimes(
        severity=severity,
        alerts=_int(row["alerts"]),
        acknowledged=_int(row["acknowledged"]),
        ack_median_s=_optional_round(row["ack_median_s"]),
        ack_p90_s=_optional_round(row["ack_p90_s"]),
        resolved=_int(row["resolved"]),
        resolve_median_s=_optional_round(row["resolve_median_s"]),
        resolve_p90_s=_optional_round(row["resolve_p90_s"]),
    )


def _availability(
    rows: list[dict[str, object]],
) -> tuple[UsageAvailability, dict[str, float | None]]:
    """Shares of time online, weighted by time: per kind, per site, and the least available
    devices (only those that were offline at all: a list of 100 % says nothing)."""
    life: dict[str, float] = defaultdict(float)
    offline: dict[str, float] = defaultdict(float)
    devices: dict[str, int] = defaultdict(int)
    site_life: dict[str, float] = defaultdict(float)
    site_offline: dict[str, float] = defaultdict(float)
    least: list[UsageDeviceAvailability] = []
    for row in rows:
        kind, site_id = str(row["kind"]), str(row["site_id"])
        life_s, offline_s = (
            _float(row["life_s"]),
            min(_float(row["offline_s"]), _float(row["life_s"])),
        )
        life[kind] += life_s
        offline[kind] += offline_s
        devices[kind] += 1
        site_life[site_id] += life_s
        site_offline[site_id] += offline_s
        if offline_s > 0:
            least.append(
                UsageDeviceAvailability(
                    device_id=str(row["device_id"]),
                    label=str(row["label"]),
                    site_id=site_id,
                    kind=kind,
                    share_online=_share(life_s, offline_s) or 0.0,
                )
            )
    least.sort(key=lambda d: (d.share_online, d.device_id))
    report = UsageAvailability(
        by_kind=[
            UsageKindAvailability(
                kind=kind, devices=devices[kind], share_online=_share(life[kind], offline[kind])
            )
            for kind in sorted(devices)
        ],
        least_available=least[:TOP],
    )
    return report, {site: _share(site_life[site], site_offline[site]) for site in site_life}


# --- small helpers -----------------------------------------------------------------------------


def _local(moment: datetime | None, tz: ZoneInfo) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=tz)
    return moment


def _key(bucket: datetime) -> datetime:
    return bucket.astimezone(UTC)


def _elapsed(period: q.Period) -> timedelta:
    """The period's real length (in UTC: across a DST change it is not the wall clock's)."""
    return period.until.astimezone(UTC) - period.since.astimezone(UTC)


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tz)


def _days_before(moment: datetime, days: int, tz: ZoneInfo) -> datetime:
    """``moment`` minus ``days`` calendar days, at the same local time of day."""
    local = moment.astimezone(tz)
    return datetime.combine(
        local.date() - timedelta(days=days), local.timetz().replace(tzinfo=None), tz
    )


def _bucket_start(bucket: date | datetime, tz: ZoneInfo) -> datetime:
    if isinstance(bucket, datetime):
        return bucket.astimezone(tz)
    return _midnight(bucket, tz)


def _mean(total: float, count: int) -> float | None:
    return _round(total / count) if count else None


def _share(life_s: float, offline_s: float) -> float | None:
    return None if life_s <= 0 else round(1 - offline_s / life_s, 4)


def _round(value: float) -> float:
    return round(value, 2)


def _optional_round(value: object) -> float | None:
    return None if value is None else _round(_float(value))


def _float(value: object) -> float:
    assert isinstance(value, int | float), value
    return float(value)


def _int(value: object) -> int:
    assert isinstance(value, int), value
    return value
