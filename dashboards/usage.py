"""Usage dashboards for managers: ``/dashboards`` (charts and tables over a period),
``/dashboards/export/<table>.csv`` (every table as CSV) and ``/dashboards/report?month=``
(a printable monthly report).

Everything is drawn here from one ``UsageReport`` (api/usage_report.py, the same report as
``GET /api/v1/usage``, so the page and the API never disagree): SVG bars and lines with
presentation attributes only (the CSP allows no inline style and the page has no script), no
chart library, no CDN. Period, site, bucket and language are query parameters, so a view can be
bookmarked and shared; a stale or mistyped bookmark still opens (with a note) rather than fail.
The night supervision section (planned checks and the effect estimate, +#11) is drawn from
``GET /api/v1/supervision/summary``'s query in the same way: dashboards/usage_supervision.py;
the alarm response section (times against each site's promise, #12) from
api/response_report_queries.py: dashboards/usage_response.py.
The tables' machinery and the CSV writer are dashboards/usage_tables.py.

CSV: UTF-8 with a byte-order mark, ``;`` between fields, decimal comma, CRLF. That is what Excel
opens correctly by a double click on a PC with Swedish regional settings (Excel takes the list
separator and the decimal sign from the operating system's region, not from the page's language,
so the English page writes the same format; only the headers are translated). Without the BOM
Excel reads UTF-8 as Windows-1252 and "Solgården" turns into mojibake. Numbers are plain (no
thousands separator); durations are in seconds and shares in per cent, as the headers say.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Final, Literal, get_args
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import HTMLResponse

from api import site_queries
from api.auth import UserContext
from api.deps import PoolDep, SettingsDep
from api.pool import Pool
from api.response_report_queries import ResponseReport
from api.schemas import SitePublic, SupervisionSummary, UsageBucket, UsageReport
from api.usage_report import UsageQuery, UsageQueryError, UsageSiteNotFound, usage_report
from carewatch.roles import Permission
from dashboards.charts import BarChart, bar_chart
from dashboards.formatting import (
    DASH,
    HOME_TIME_ZONE,
    fill,
    format_duration,
    format_number,
    format_percent,
    kind_title,
    zone_named,
)
from dashboards.kit import (
    LANGUAGES,
    page_user,
    render_page,
    request_language,
    strings,
    switchable_context,
)
from dashboards.usage_response import (
    ResponseTableName,
    load_responses,
    response_section,
    response_tables,
)
from dashboards.usage_supervision import (
    SupervisionTableName,
    load_supervision,
    supervision_section,
    supervision_tables,
)
from dashboards.usage_tables import Cell, Column, Table, make_table

# Re-exported: where the page's cells and CSV were before they moved to usage_tables.
from dashboards.usage_tables import csv_cell as csv_cell
from dashboards.usage_tables import format_cell as format_cell
from dashboards.usage_tables import to_csv as to_csv

router = APIRouter(include_in_schema=False)

# Usage dashboards and reports are the managers' (CONTRACT.md roles); admins may do everything.
PERMISSION: Final = Permission.READ_USAGE
BUCKETS: Final[tuple[str, ...]] = get_args(UsageBucket)
Preset = Literal["this_month", "last_month", "last_30_days", "this_year", "last_12_months"]
PRESETS: Final[tuple[str, ...]] = get_args(Preset)
DEFAULT_PRESET: Final = "last_30_days"
# Two years: this year against the last. Longer periods are what Grafana is for.
MAX_DAYS: Final = 731
# An hourly chart of more than a month is 700+ bars too thin to see; such a view gets days.
MAX_HOUR_DAYS: Final = 31
# Automatic bucket: hours up to 3 days (72 bars), days up to a quarter, weeks beyond.
AUTO_HOUR_DAYS: Final = 3
AUTO_DAY_DAYS: Final = 92
SEVERITY_ORDER: Final = ("critical", "high", "warning", "info")


# --- periods (pure) ----------------------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    """The first of the month ``months`` after (or before) ``day``'s month."""
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def preset_range(preset: Preset, today: date) -> tuple[date, date]:
    """The days ``[since, until)`` a preset means on ``today`` (a local calendar date).

    Periods that run up to now end after today (its data so far), never in the future.
    """
    tomorrow = today + timedelta(days=1)
    first = today.replace(day=1)
    match preset:
        case "this_month":
            return first, tomorrow
        case "last_month":
            return add_months(first, -1), first
        case "last_30_days":
            return today - timedelta(days=29), tomorrow
        case "this_year":
            return date(today.year, 1, 1), tomorrow
        case "last_12_months":
            return add_months(first, -11), tomorrow


def auto_bucket(since: date, until: date) -> UsageBucket:
    """Hours for a few days, days up to a quarter, weeks beyond (a year is 53 bars)."""
    days = (until - since).days
    if days <= AUTO_HOUR_DAYS:
        return "hour"
    return "day" if days <= AUTO_DAY_DAYS else "week"


def parse_day(text: str | None) -> date | None:
    """``YYYY-MM-DD`` (what ``<input type=date>`` sends), else None."""
    if not text or len(text) != 10:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None
    # The years parse_month takes too: far from the ends of the calendar (OverflowError).
    return day if 2000 <= day.year <= 2999 else None


def parse_month(text: str | None) -> date | None:
    """``YYYY-MM`` (what ``<input type=month>`` sends) as the month's first day, else None."""
    if not text or len(text) != 7 or text[4] != "-":
        return None
    year, month = text[:4], text[5:]
    if not (year.isdigit() and month.isdigit()) or not 1 <= int(month) <= 12:
        return None
    if not 2000 <= int(year) <= 2999:
        return None
    return date(int(year), int(month), 1)


@dataclass(frozen=True, slots=True)
class UsageView:
    """What /dashboards shows, from its query parameters.

    ``until`` is exclusive inside; the URL and the form carry the last day shown (inclusive),
    as people read "1-31 October". ``error`` names the note shown when a parameter was refused
    and the default used instead.
    """

    since: date
    until: date
    bucket: UsageBucket
    site: str | None = None
    preset: Preset | None = DEFAULT_PRESET
    bucket_chosen: bool = False
    lang: str | None = None
    error: str | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str], today: date) -> UsageView:
        """The view a query string asks for; a refused parameter falls back, with a note."""
        site = query.get("site") or None
        lang = query.get("lang") if query.get("lang") in LANGUAGES else None
        error: str | None = None
        preset: Preset | None = None
        raw_since, raw_until = query.get("since"), query.get("until")
        since, last = parse_day(raw_since), parse_day(raw_until)
        if raw_since or raw_until:
            if since is None or last is None:
                error = "usage_error_date"
            elif last < since:
                error = "usage_error_order"
            elif (last - since).days + 1 > MAX_DAYS:
                error = "usage_error_too_long"
        if since is None or last is None or error is not None:
            period = query.get("period", DEFAULT_PRESET)
            preset = period if period in PRESETS else DEFAULT_PRESET  # type: ignore[assignment]  # checked against the Literal's values
            assert preset is not None
            since, until = preset_range(preset, today)
        else:
            until = last + timedelta(days=1)
        raw_bucket = query.get("bucket")
        bucket_chosen = raw_bucket in BUCKETS
        bucket: UsageBucket = raw_bucket if bucket_chosen else auto_bucket(since, until)  # type: ignore[assignment]  # as above
        if bucket == "hour" and (until - since).days > MAX_HOUR_DAYS:
            bucket, bucket_chosen = "day", False
            error = error or "usage_error_hours"
        return cls(since, until, bucket, site, preset, bucket_chosen, lang, error)

    @property
    def last_day(self) -> date:
        """The period's last day (inclusive), as the form and the URL carry it."""
        return self.until - timedelta(days=1)

    @property
    def days(self) -> int:
        """How many days the period has."""
        return (self.until - self.since).days

    def params(self, **changes: object) -> dict[str, str]:
        """The view's query parameters (defaults left out), with ``changes`` applied."""
        custom = self.preset is None
        values: dict[str, object] = {
            "period": None if custom or self.preset == DEFAULT_PRESET else self.preset,
            "since": self.since.isoformat() if custom else None,
            "until": self.last_day.isoformat() if custom else None,
            "site": self.site,
            "bucket": self.bucket if self.bucket_chosen else None,
            "lang": self.lang,
        }
        values.update(changes)
        return {key: str(value) for key, value in values.items() if value not in (None, "")}

    def url(self, path: str = "/dashboards", **changes: object) -> str:
        """This view's address at ``path``, with ``changes`` to its parameters (None drops one)."""
        query = urllib.parse.urlencode(self.params(**changes))
        return f"{path}?{query}" if query else path

    def preset_url(self, preset: str) -> str:
        """This view over another preset period (the bucket chosen anew for its length)."""
        return self.url(
            period=None if preset == DEFAULT_PRESET else preset, since=None, until=None,
            bucket=None,
        )  # fmt: skip

    def export_url(self, table: str) -> str:
        """The CSV of ``table`` over this view."""
        return self.url(f"/dashboards/export/{table}.csv")

    def report_month(self, today: date) -> date:
        """The month the "monthly report" link opens: the period's, if it is one calendar
        month; otherwise the last whole month (the one a budget meeting talks about)."""
        if self.since.day == 1 and self.until == add_months(self.since, 1):
            return self.since
        return add_months(today.replace(day=1), -1)

    def report_url(self, today: date) -> str:
        """The monthly report of :meth:`report_month`, for this view's site and language."""
        params = {"month": self.report_month(today).strftime("%Y-%m"), "site": self.site,
                  "lang": self.lang}  # fmt: skip
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v})
        return f"/dashboards/report?{query}"


def bounds(since: date, until: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Local midnights starting ``since`` and ``until`` as aware datetimes (DST-proof: the
    zone decides each one's offset)."""
    return (datetime.combine(since, time(0), zone), datetime.combine(until, time(0), zone))


def time_zone(sites: Sequence[SitePublic], site: str | None) -> ZoneInfo:
    """The chosen site's zone; for all sites the first one's (as the report's buckets)."""
    chosen = [s for s in sites if s.id == site] if site else list(sites)
    return zone_named(chosen[0].timezone) if chosen else HOME_TIME_ZONE


# --- words and numbers (pure) ------------------------------------------------------------------


def _month_name(t: Mapping[str, Any], day: date, *, short: bool) -> str:
    names = t["usage_months_short" if short else "usage_months"]
    return str(names[day.month - 1])


def bucket_label(start: datetime, bucket: UsageBucket, t: Mapping[str, Any]) -> str:
    """The short label under a bar: ``3 nov`` · ``v. 45`` · ``06:00`` (a new day: ``3 nov``).

    Month and weekday names come from strings.json, not the OS locale (which a server may
    not have, and which is the server's language, not the reader's).
    """
    if bucket == "week":
        return str(t["usage_week_short"]).replace("{n}", str(start.isocalendar().week))
    if bucket == "hour" and (start.hour or start.minute):
        return start.strftime("%H:%M")
    return f"{start.day} {_month_name(t, start.date(), short=True)}"


def bucket_title(start: datetime, bucket: UsageBucket, t: Mapping[str, Any]) -> str:
    """The full name of a bucket: ``tisdag 3 november 2026`` · ``vecka 45, 2-8 nov 2026`` ·
    ``3 nov 2026 06:00``."""
    day = start.date()
    if bucket == "week":
        end = day + timedelta(days=6)
        first = (
            f"{day.day} {_month_name(t, day, short=True)}"
            if day.month != end.month
            else (str(day.day))
        )
        span = f"{first}{DASH}{end.day} {_month_name(t, end, short=True)} {end.year}"
        return (
            str(t["usage_week_long"])
            .replace("{n}", str(start.isocalendar().week))
            .replace("{span}", span)
        )
    if bucket == "hour":
        return f"{day.day} {_month_name(t, day, short=True)} {day.year} {start:%H:%M}"
    weekday = str(t["usage_weekdays"][day.weekday()])
    return f"{weekday} {day.day} {_month_name(t, day, short=False)} {day.year}"


def period_title(since: date, until: date, t: Mapping[str, Any]) -> str:
    """``1 okt-31 okt 2026`` (an en dash), or ``oktober 2026`` for a calendar month."""
    last = until - timedelta(days=1)
    if since.day == 1 and until == add_months(since, 1):
        return f"{_month_name(t, since, short=False)} {since.year}"
    first = f"{since.day} {_month_name(t, since, short=True)}"
    if since.year != last.year:
        first += f" {since.year}"
    return f"{first}{DASH}{last.day} {_month_name(t, last, short=True)} {last.year}"


def bucket_csv(start: datetime, bucket: UsageBucket) -> str:
    """A bucket in a CSV cell: its local start, which Excel reads as a date (and time)."""
    return start.strftime("%Y-%m-%d %H:%M" if bucket == "hour" else "%Y-%m-%d")


# --- tables (pure; their machinery and the CSV in dashboards/usage_tables.py) -----------------

TABLES: Final = (
    "camera_checks", "lock_visits", "robot_minutes", "per_robot", "alarms", "alerts",
    "response_times", "slowest", "availability", "least_available", "battery_replacements",
    "sites",
)  # fmt: skip
TableName = Literal[
    "camera_checks", "lock_visits", "robot_minutes", "per_robot", "alarms", "alerts",
    "response_times", "slowest", "availability", "least_available", "battery_replacements",
    "sites",
]  # fmt: skip


def build_tables(report: UsageReport, t: Mapping[str, Any], lang: str) -> dict[str, Table]:
    """Every table of the page from the report, with words in ``lang`` (rules, kinds, sites)."""
    zone = zone_named(report.timezone)
    site_names = {s.site_id: s.name for s in report.sites}

    def site(site_id: str) -> str:
        return site_names.get(site_id, site_id)

    def rule(name: str) -> str:
        return str(t["rule"].get(name, name))

    def severity(name: str) -> str:
        return str(t["severity"].get(name, name))

    def buckets(series: Sequence[Any], *fields: str) -> list[list[Cell]]:
        return [
            [bucket_csv(item.bucket.astimezone(zone), report.bucket),
             *(getattr(item, f) for f in fields)]
            for item in series
        ]  # fmt: skip

    bucket_col = Column(f"usage_col_bucket_{report.bucket}", "text")
    by_severity = sorted(
        # A severity with no alerts in the period has no times: no row of dashes.
        (s for s in report.response_times.by_severity if s.alerts),
        key=lambda s: SEVERITY_ORDER.index(s.severity) if s.severity in SEVERITY_ORDER else 9,
    )
    return {
        "camera_checks": make_table("camera_checks", (
            bucket_col, Column("usage_col_checks", "count"),
            Column("usage_col_night_checks", "count"),
            Column("usage_col_mean_duration", "duration"),
        ), buckets(report.camera_checks.series, "checks", "night_checks", "mean_duration_s")),
        "lock_visits": make_table("lock_visits", (
            bucket_col, Column("usage_col_visits", "count"),
            Column("usage_col_mean_duration", "duration"),
        ), buckets(report.lock_visits.series, "visits", "mean_duration_s")),
        "robot_minutes": make_table("robot_minutes", (
            bucket_col, Column("usage_col_minutes", "minutes"),
        ), buckets(report.robot_minutes.series, "minutes")),
        "per_robot": make_table("per_robot", (
            Column("usage_col_device", "text"), Column("usage_col_label", "text"),
            Column("usage_col_site", "text"), Column("usage_col_minutes", "minutes", "minutes"),
            Column("usage_col_minutes_per_day", "number"),
        ), [[r.device_id, r.label, site(r.site_id), r.minutes, r.minutes_per_day]
            for r in report.robot_minutes.per_robot]),
        "alarms": make_table("alarms", (
            bucket_col, Column("usage_col_alarms", "count"),
        ), buckets(report.alarms.series, "alarms")),
        "alerts": make_table("alerts", (
            Column("usage_col_rule", "text"), Column("usage_col_severity", "text"),
            Column("usage_col_count", "count", "count"),
        ), [[rule(a.rule), severity(a.severity), a.count]
            for a in report.alerts.by_rule_severity]),
        "response_times": make_table("response_times", (
            Column("usage_col_severity", "text"), Column("usage_col_alerts", "count"),
            Column("usage_col_acknowledged", "count"),
            Column("usage_col_ack_median", "duration", "ack"),
            Column("usage_col_ack_p90", "duration", "ack"),
            Column("usage_col_resolved", "count"),
            Column("usage_col_resolve_median", "duration", "resolve"),
            Column("usage_col_resolve_p90", "duration", "resolve"),
        ), [[severity(s.severity), s.alerts, s.acknowledged, s.ack_median_s, s.ack_p90_s,
             s.resolved, s.resolve_median_s, s.resolve_p90_s] for s in by_severity]),
        "slowest": make_table("slowest", (
            Column("usage_col_device", "text"), Column("usage_col_label", "text"),
            Column("usage_col_site", "text"), Column("usage_col_rule", "text"),
            Column("usage_col_severity", "text"), Column("usage_col_opened", "time"),
            Column("usage_col_ack_time", "duration", "ack"),
        ), [[s.device_id, s.label, site(s.site_id), rule(s.rule), severity(s.severity),
             s.opened_at, s.ack_s] for s in report.response_times.slowest]),
        "availability": make_table("availability", (
            Column("usage_col_kind", "text"), Column("usage_col_devices", "count"),
            Column("usage_col_share_online", "percent", "share"),
        ), [[kind_title(k.kind, lang), k.devices, k.share_online]
            for k in report.availability.by_kind]),
        "least_available": make_table("least_available", (
            Column("usage_col_device", "text"), Column("usage_col_label", "text"),
            Column("usage_col_site", "text"), Column("usage_col_kind", "text"),
            Column("usage_col_share_online", "percent", "share"),
        ), [[d.device_id, d.label, site(d.site_id), kind_title(d.kind, lang), d.share_online]
            for d in report.availability.least_available]),
        "battery_replacements": make_table("battery_replacements", (
            bucket_col, Column("usage_col_replacements", "count"),
        ), buckets(report.battery_replacements.series, "replacements")),
        "sites": make_table("sites", (
            Column("usage_col_site", "text"),
            Column("usage_col_checks", "count", "checks"),
            Column("usage_col_visits", "count", "visits"),
            Column("usage_col_minutes", "minutes", "minutes"),
            Column("usage_col_alarms", "count", "alarms"),
            Column("usage_col_alerts", "count", "alerts"),
            Column("usage_col_share_online", "percent", "share"),
        ), [[s.name, s.camera_checks, s.lock_visits, s.robot_minutes, s.alarms, s.alerts,
             s.share_online] for s in report.sites]),
    }  # fmt: skip


# --- charts (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChartSpec:
    """A chart with what the template writes around it: its words and the table behind it."""

    name: str
    title_key: str
    y_key: str
    chart: BarChart | None
    summary: str
    line_key: str | None = None


def build_charts(report: UsageReport, t: Mapping[str, Any], lang: str) -> list[ChartSpec]:
    """The bar charts over time, in the page's order; a chart is None when it has no data."""
    zone = zone_named(report.timezone)
    starts = [b.astimezone(zone) for b in report.buckets]
    labels = [bucket_label(s, report.bucket, t) for s in starts]
    names = [bucket_title(s, report.bucket, t) for s in starts]

    def count(value: float) -> str:
        return format_number(value, lang)

    def titled(values: Sequence[float], unit_key: str, decimals: int = 0) -> list[str]:
        unit = str(t[unit_key])
        return [
            f"{name}: {format_number(v, lang, decimals)} {unit}"
            for name, v in zip(names, values, strict=True)
        ]

    def series(items: Sequence[Any], attribute: str) -> list[float]:
        values = [float(getattr(item, attribute)) for item in items]
        # The report promises one item per bucket; a short series would shift every bar.
        if len(values) != len(starts):
            raise ValueError(f"{attribute}: {len(values)} values for {len(starts)} buckets")
        return values

    camera = report.camera_checks
    night = series(camera.series, "night_checks")
    visits = series(report.lock_visits.series, "visits")
    visit_minutes = [
        None if b.mean_duration_s is None else b.mean_duration_s / 60
        for b in report.lock_visits.series
    ]
    minutes = series(report.robot_minutes.series, "minutes")
    alarms = series(report.alarms.series, "alarms")
    replacements = series(report.battery_replacements.series, "replacements")
    lock_chart = bar_chart(
        visits, labels, titled(visits, "usage_unit_visits"), count,
        line=visit_minutes,
        line_titles=[
            f"{name}: {t['usage_mean_duration']} {format_number(v, lang, 1)} min" if v else ""
            for name, v in zip(names, visit_minutes, strict=True)
        ],
        format_line=lambda v: format_number(v, lang, 0 if v.is_integer() else 1),
    )  # fmt: skip
    return [
        ChartSpec("camera_checks", "usage_chart_camera", "usage_axis_checks",
                  bar_chart(night, labels, titled(night, "usage_unit_checks"), count),
                  fill(t["usage_summary_camera"], per_night=format_number(
                      camera.checks_per_night, lang, 1),
                      duration=format_duration(camera.mean_duration_s, t))),
        ChartSpec("lock_visits", "usage_chart_locks", "usage_axis_visits", lock_chart,
                  fill(t["usage_summary_locks"],
                        per_day=format_number(report.lock_visits.visits_per_day, lang, 1),
                        duration=format_duration(report.lock_visits.mean_duration_s, t)),
                  line_key="usage_axis_visit_minutes"),
        ChartSpec("robot_minutes", "usage_chart_robots", "usage_axis_minutes",
                  bar_chart(minutes, labels, titled(minutes, "usage_unit_minutes"),
                            lambda v: format_number(v, lang, 0), whole=False),
                  fill(t["usage_summary_robots"],
                        minutes=format_number(report.robot_minutes.minutes, lang),
                        robots=str(len(report.robot_minutes.per_robot)))),
        ChartSpec("alarms", "usage_chart_alarms", "usage_axis_alarms",
                  bar_chart(alarms, labels, titled(alarms, "usage_unit_alarms"), count),
                  fill(t["usage_summary_alarms"], total=format_number(report.alarms.total, lang),
                        per_day=format_number(report.alarms.per_day, lang, 1))),
        ChartSpec("battery_replacements", "usage_chart_battery", "usage_axis_replacements",
                  bar_chart(replacements, labels, titled(replacements, "usage_unit_replacements"),
                            count),
                  fill(t["usage_summary_battery"],
                        total=format_number(report.battery_replacements.total, lang))),
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class KeyFigure:
    """One of the numbers a manager reads first: its label's key and its written value."""

    key: str
    value: str
    # The same figure for the period before (the monthly report: the month before).
    previous: str | None = None


def key_figures(
    report: UsageReport, t: Mapping[str, Any], lang: str, previous: UsageReport | None = None
) -> list[KeyFigure]:
    """The handful of numbers a manager reads first (the report's summary, the page's top),
    each beside its value in ``previous`` if given."""
    figures = _key_figures(report, t, lang)
    if previous is None:
        return figures
    before = _key_figures(previous, t, lang)
    return [
        KeyFigure(now.key, now.value, then.value) for now, then in zip(figures, before, strict=True)
    ]


def _key_figures(report: UsageReport, t: Mapping[str, Any], lang: str) -> list[KeyFigure]:
    critical = next(
        (s for s in report.response_times.by_severity if s.severity == "critical"), None
    )
    kinds = [k for k in report.availability.by_kind if k.share_online is not None and k.devices]
    devices = sum(k.devices for k in kinds)
    online = sum((k.share_online or 0.0) * k.devices for k in kinds) / devices if devices else None
    return [
        KeyFigure("usage_key_checks_per_night",
                  format_number(report.camera_checks.checks_per_night, lang, 1)),
        KeyFigure("usage_key_visits_per_day",
                  format_number(report.lock_visits.visits_per_day, lang, 1)),
        KeyFigure("usage_key_robot_minutes", format_number(report.robot_minutes.minutes, lang)),
        KeyFigure("usage_key_alarms", format_number(report.alarms.total, lang)),
        KeyFigure("usage_key_alerts", format_number(report.alerts.total, lang)),
        KeyFigure("usage_key_critical_ack",
                  format_duration(critical.ack_median_s if critical else None, t)),
        KeyFigure("usage_key_online", format_percent(online, lang)),
        KeyFigure("usage_key_battery", format_number(report.battery_replacements.total, lang)),
    ]  # fmt: skip


# --- the report --------------------------------------------------------------------------------


async def load_report(
    pool: Pool, user: UserContext, site: str | None, since: datetime, until: datetime,
    bucket: UsageBucket,
) -> UsageReport:  # fmt: skip
    """The usage report of api/usage_report.py (the same as GET /api/v1/usage)."""
    return await usage_report(
        pool, user, UsageQuery(site=site, since=since, until=until, bucket=bucket)
    )


# --- pages -------------------------------------------------------------------------------------


def _context(request: Request, user: UserContext, **values: object) -> dict[str, Any]:
    return switchable_context(request, user, "/dashboards", heading_key="usage_title", **values)


def _message(
    request: Request,
    user: UserContext,
    title_key: str,
    text_key: str,
    status_code: int,
    *,
    detail: str = "",
) -> HTMLResponse:
    context = _context(request, user, title_key=title_key, text_key=text_key, detail=detail)
    return render_page(request, "usage_message.html", context, status_code)


def _forbidden(request: Request, user: UserContext) -> Response:
    return _message(request, user, "usage_forbidden_title", "usage_forbidden", 403)


@dataclass(frozen=True, slots=True)
class _Viewed:
    user: UserContext
    lang: str
    view: UsageView
    sites: list[SitePublic]
    today: date

    @property
    def t(self) -> Mapping[str, Any]:
        texts: Mapping[str, Any] = strings()[self.lang]
        return texts


@dataclass(frozen=True, slots=True)
class _Loaded(_Viewed):
    report: UsageReport

    @property
    def zone(self) -> ZoneInfo:
        return zone_named(self.report.timezone)


async def _viewed(
    request: Request, pool: Pool, settings: SettingsDep, *, monthly: bool = False
) -> _Viewed | Response:
    """The signed-in manager, the view of the query (``monthly``: the report's ``month``) and
    the caller's sites. Else the login redirect, a 403 page for another role, or a 404 page for
    a site the caller cannot see (another organisation's, or outside a site-limited manager's),
    as the API answers."""
    user = await page_user(request, pool, settings, PERMISSION, _forbidden)
    if isinstance(user, Response):
        return user
    query = request.query_params
    sites = await site_queries.list_sites(pool, user)
    site = query.get("site") or None
    if site is not None and site not in {s.id for s in sites}:
        return _message(request, user, "usage_not_found_title", "usage_not_found", 404)
    today = datetime.now(time_zone(sites, site)).date()
    if monthly:
        month = parse_month(query.get("month"))
        first = month or add_months(today.replace(day=1), -1)
        error = "usage_error_month" if query.get("month") and month is None else None
        lang = query.get("lang") if query.get("lang") in LANGUAGES else None
        view = UsageView(first, add_months(first, 1), "day", site, None, False, lang, error)
    else:
        view = UsageView.from_query(query, today)
    return _Viewed(user, request_language(request, user), view, sites, today)


async def _load(
    request: Request, pool: Pool, settings: SettingsDep, *, monthly: bool = False
) -> _Loaded | Response:
    """:func:`_viewed` with the usage report of the view."""
    viewed = await _viewed(request, pool, settings, monthly=monthly)
    if isinstance(viewed, Response):
        return viewed
    user, view = viewed.user, viewed.view
    since, until = bounds(view.since, view.until, time_zone(viewed.sites, view.site))
    try:
        report = await load_report(pool, user, view.site, since, until, view.bucket)
    except UsageSiteNotFound:
        return _message(request, user, "usage_not_found_title", "usage_not_found", 404)
    except UsageQueryError as error:
        # The view keeps to the API's limits, so this is a bug's or a race's message.
        return _message(request, user, "usage_error_title", "usage_error_query", 422,
                        detail=str(error))  # fmt: skip
    return _Loaded(viewed.user, viewed.lang, view, viewed.sites, viewed.today, report)


async def _supervision(
    request: Request, pool: Pool, viewed: _Viewed
) -> SupervisionSummary | Response:
    """The night supervision summary of the view's nights (see dashboards/usage_supervision)."""
    view = viewed.view
    summary = await load_supervision(pool, viewed.user, view.since, view.last_day, view.site)
    if summary is None:  # the site went away since _viewed looked (a race): as the API, 404
        return _message(request, viewed.user, "usage_not_found_title", "usage_not_found", 404)
    return summary


async def _responses(request: Request, pool: Pool, viewed: _Viewed) -> ResponseReport | Response:
    """The alarm responses of the view's days (see dashboards/usage_response)."""
    view = viewed.view
    report = await load_responses(pool, viewed.user, view.since, view.last_day, view.site)
    if report is None:  # the site went away since _viewed looked (a race): as the API, 404
        return _message(request, viewed.user, "usage_not_found_title", "usage_not_found", 404)
    return report


def _sections(
    loaded: _Loaded, supervision: SupervisionSummary, responses: ResponseReport
) -> dict[str, Any]:
    t, lang = loaded.t, loaded.lang
    return {
        "report": loaded.report,
        "charts": {chart.name: chart for chart in build_charts(loaded.report, t, lang)},
        "tables": build_tables(loaded.report, t, lang),
        "key_figures": key_figures(loaded.report, t, lang),
        "supervision": supervision_section(supervision, t, lang),
        "alarm_response": response_section(responses, t, lang),
        "format_cell": lambda value, kind: format_cell(value, kind, lang, t, loaded.zone),
        "site_name": next((s.name for s in loaded.sites if s.id == loaded.view.site), None),
    }


@router.get("/dashboards", response_class=HTMLResponse)
async def dashboards(request: Request, pool: PoolDep, settings: SettingsDep) -> Response:
    """Usage over a period: charts, tables, night supervision and the comparison between
    sites."""
    loaded = await _load(request, pool, settings)
    if isinstance(loaded, Response):
        return loaded
    supervision = await _supervision(request, pool, loaded)
    if isinstance(supervision, Response):
        return supervision
    responses = await _responses(request, pool, loaded)
    if isinstance(responses, Response):
        return responses
    context = _context(
        request,
        loaded.user,
        view=loaded.view,
        sites=loaded.sites,
        presets=PRESETS,
        buckets=BUCKETS,
        today=loaded.today,
        period=period_title(loaded.view.since, loaded.view.until, loaded.t),
        **_sections(loaded, supervision, responses),
    )
    return render_page(request, "usage.html", context)


def _csv_response(body: bytes, table: str, view: UsageView) -> Response:
    filename = f"carewatch-{table}-{view.site or 'all'}-{view.since}-{view.last_day}.csv"
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


# Before the route below: its path would take these names too, and refuse them (not a table).
@router.get("/dashboards/export/supervision_{name}.csv")
async def export_supervision_csv(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    name: Annotated[SupervisionTableName, Path()],
) -> Response:
    """A table of the night supervision section (same filters) as CSV for Excel; the nights'
    table with each night's effect and the site's assumptions on every row."""
    viewed = await _viewed(request, pool, settings)
    if isinstance(viewed, Response):
        return viewed
    summary = await _supervision(request, pool, viewed)
    if isinstance(summary, Response):
        return summary
    table = f"supervision_{name}"
    built = supervision_tables(summary, for_csv=True)[table]
    zone = time_zone(viewed.sites, viewed.view.site)
    return _csv_response(to_csv(built, viewed.t, zone), table, viewed.view)


@router.get("/dashboards/export/alarm_response_{name}.csv")
async def export_response_csv(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    name: Annotated[ResponseTableName, Path()],
) -> Response:
    """A table of the alarm response section (same filters) as CSV for Excel; each promise as
    its seconds, the count within and the share."""
    viewed = await _viewed(request, pool, settings)
    if isinstance(viewed, Response):
        return viewed
    responses = await _responses(request, pool, viewed)
    if isinstance(responses, Response):
        return responses
    table = f"alarm_response_{name}"
    built = response_tables(responses, viewed.t, viewed.lang, for_csv=True)[table]
    zone = time_zone(viewed.sites, viewed.view.site)
    return _csv_response(to_csv(built, viewed.t, zone), table, viewed.view)


@router.get("/dashboards/export/{table}.csv")
async def export_csv(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    table: Annotated[TableName, Path()],
) -> Response:
    """One table of /dashboards (same filters) as CSV for Excel."""
    loaded = await _load(request, pool, settings)
    if isinstance(loaded, Response):
        return loaded
    built = build_tables(loaded.report, loaded.t, loaded.lang)[table]
    return _csv_response(to_csv(built, loaded.t, loaded.zone), table, loaded.view)


@router.get("/dashboards/report", response_class=HTMLResponse)
async def monthly_report(request: Request, pool: PoolDep, settings: SettingsDep) -> Response:
    """One calendar month, by day, laid out for paper (A4) with a summary first; its night
    supervision is the month's nights."""
    loaded = await _load(request, pool, settings, monthly=True)
    if isinstance(loaded, Response):
        return loaded
    supervision = await _supervision(request, pool, loaded)
    if isinstance(supervision, Response):
        return supervision
    responses = await _responses(request, pool, loaded)
    if isinstance(responses, Response):
        return responses
    t, lang, view = loaded.t, loaded.lang, loaded.view
    # The month before, for the summary's comparison (a budget meeting asks "more or less?").
    before = add_months(view.since, -1)
    since, until = bounds(before, view.since, loaded.zone)
    previous = await load_report(pool, loaded.user, view.site, since, until, "day")
    context = _context(
        request,
        loaded.user,
        view=view,
        sites=loaded.sites,
        month=view.since.strftime("%Y-%m"),
        period=period_title(view.since, view.until, t),
        generated=datetime.now(loaded.zone).strftime("%Y-%m-%d %H:%M"),
        previous_label=fill(t["usage_previous"], period=period_title(before, view.since, t)),
        **{
            **_sections(loaded, supervision, responses),
            "key_figures": key_figures(loaded.report, t, lang, previous),
        },
    )
    return render_page(request, "usage_report.html", context)
