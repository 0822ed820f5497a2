"""The usage dashboards' pure parts: periods from query parameters, bucket labels in Swedish and
English, chart geometry, the tables and their CSV."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from api.schemas import UsageReport
from dashboards.charts import bar_chart, nice_scale, share_of
from dashboards.formatting import format_number
from dashboards.kit import strings
from dashboards.usage import (
    UsageView,
    add_months,
    auto_bucket,
    bucket_csv,
    bucket_label,
    bucket_title,
    build_charts,
    build_tables,
    csv_cell,
    format_cell,
    key_figures,
    parse_month,
    period_title,
    preset_range,
    to_csv,
)

SV, EN = strings()["sv"], strings()["en"]
STOCKHOLM = ZoneInfo("Europe/Stockholm")
TODAY = date(2026, 11, 23)  # a Monday
DASH = "\N{EN DASH}"


# --- periods -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "since", "until"),
    [
        pytest.param("this_month", date(2026, 11, 1), date(2026, 11, 24), id="this-month"),
        pytest.param("last_month", date(2026, 10, 1), date(2026, 11, 1), id="last-month"),
        pytest.param("last_30_days", date(2026, 10, 25), date(2026, 11, 24), id="last-30-days"),
        pytest.param("this_year", date(2026, 1, 1), date(2026, 11, 24), id="this-year"),
        pytest.param("last_12_months", date(2025, 12, 1), date(2026, 11, 24), id="12-months"),
    ],
)
def test_preset_ranges(preset: Any, since: date, until: date) -> None:
    """Each preset is a range of whole local days that ends after today, never later."""
    assert preset_range(preset, TODAY) == (since, until)


def test_last_month_in_january_is_last_december() -> None:
    """Months wrap over the new year."""
    assert preset_range("last_month", date(2027, 1, 15)) == (date(2026, 12, 1), date(2027, 1, 1))
    assert add_months(date(2026, 1, 31), -1) == date(2025, 12, 1)


@pytest.mark.parametrize(
    ("days", "bucket"),
    [(1, "hour"), (3, "hour"), (4, "day"), (92, "day"), (93, "week"), (365, "week")],
)
def test_auto_bucket(days: int, bucket: str) -> None:
    """Hours for a few days, days up to a quarter, weeks beyond."""
    assert auto_bucket(TODAY, TODAY + timedelta(days=days)) == bucket


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(
            {}, UsageView(date(2026, 10, 25), date(2026, 11, 24), "day"), id="default-30-days"
        ),
        pytest.param(
            {"period": "last_month", "site": "sol", "lang": "en"},
            UsageView(date(2026, 10, 1), date(2026, 11, 1), "day", "sol", "last_month",
                      lang="en"),
            id="preset-site-language",
        ),
        pytest.param(
            {"since": "2026-10-01", "until": "2026-10-31", "bucket": "week"},
            UsageView(date(2026, 10, 1), date(2026, 11, 1), "week", None, None, True),
            id="custom-period-until-inclusive",
        ),
        pytest.param(
            {"since": "2026-11-20", "until": "2026-11-21"},
            UsageView(date(2026, 11, 20), date(2026, 11, 22), "hour", None, None),
            id="two-days-by-hour",
        ),
        pytest.param(
            {"since": "2026-13-01", "until": "2026-10-31"},
            UsageView(date(2026, 10, 25), date(2026, 11, 24), "day", error="usage_error_date"),
            id="bad-date-falls-back",
        ),
        pytest.param(
            {"since": "2026-10-01"},
            UsageView(date(2026, 10, 25), date(2026, 11, 24), "day", error="usage_error_date"),
            id="half-a-period",
        ),
        pytest.param(
            {"since": "2026-10-31", "until": "2026-10-01"},
            UsageView(date(2026, 10, 25), date(2026, 11, 24), "day", error="usage_error_order"),
            id="reversed",
        ),
        pytest.param(
            {"since": "2020-01-01", "until": "2026-10-01"},
            UsageView(date(2026, 10, 25), date(2026, 11, 24), "day",
                      error="usage_error_too_long"),
            id="too-long",
        ),
        pytest.param(
            {"period": "this_year", "bucket": "hour"},
            UsageView(date(2026, 1, 1), date(2026, 11, 24), "day", None, "this_year",
                      error="usage_error_hours"),
            id="hours-for-a-year-become-days",
        ),
        pytest.param(
            {"period": "forever", "bucket": "minute", "lang": "de"},
            UsageView(date(2026, 10, 25), date(2026, 11, 24), "day"),
            id="unknown-values-are-defaults",
        ),
    ],
)  # fmt: skip
def test_view_from_query(query: dict[str, str], expected: UsageView) -> None:
    """Query parameters become a view; what cannot be used falls back, with a note if asked."""
    assert UsageView.from_query(query, TODAY) == expected


def test_view_urls_round_trip() -> None:
    """A view's URL opens the same view; presets, exports and the report keep site and language."""
    view = UsageView.from_query(
        {"since": "2026-10-01", "until": "2026-10-31", "site": "sol", "lang": "en"}, TODAY
    )
    url = view.url()
    assert url == "/dashboards?since=2026-10-01&until=2026-10-31&site=sol&lang=en"
    query = dict(pair.split("=") for pair in url.split("?")[1].split("&"))
    assert UsageView.from_query(query, TODAY) == view
    assert view.preset_url("this_year") == "/dashboards?period=this_year&site=sol&lang=en"
    assert view.preset_url("last_30_days") == "/dashboards?site=sol&lang=en"
    assert view.export_url("alarms") == (
        "/dashboards/export/alarms.csv?since=2026-10-01&until=2026-10-31&site=sol&lang=en"
    )
    # A calendar month reports on itself; any other period on the last whole month.
    assert view.report_url(TODAY) == "/dashboards/report?month=2026-10&site=sol&lang=en"
    other = UsageView.from_query({"period": "this_year"}, TODAY)
    assert other.report_url(TODAY) == "/dashboards/report?month=2026-10"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2026-10", date(2026, 10, 1)), ("2026-1", None), ("2026-13", None), ("26-10-01", None),
     ("abcd-ef", None), ("1999-12", None), (None, None)],
)  # fmt: skip
def test_parse_month(text: str | None, expected: date | None) -> None:
    """Only YYYY-MM of a real month is a month."""
    assert parse_month(text) == expected


# --- words -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "bucket", "sv", "en"),
    [
        pytest.param(datetime(2026, 11, 3, tzinfo=STOCKHOLM), "day", "3 nov", "3 Nov", id="day"),
        pytest.param(datetime(2026, 5, 1, tzinfo=STOCKHOLM), "day", "1 maj", "1 May", id="maj"),
        pytest.param(datetime(2026, 11, 2, tzinfo=STOCKHOLM), "week", "v. 45", "wk 45",
                     id="week"),
        pytest.param(datetime(2026, 11, 3, 6, tzinfo=STOCKHOLM), "hour", "06:00", "06:00",
                     id="hour"),
        pytest.param(datetime(2026, 11, 3, 0, tzinfo=STOCKHOLM), "hour", "3 nov", "3 Nov",
                     id="midnight-names-the-day"),
    ],
)  # fmt: skip
def test_bucket_labels(start: datetime, bucket: Any, sv: str, en: str) -> None:
    """Short labels under the bars, with the language's month names (not the OS locale's)."""
    assert bucket_label(start, bucket, SV) == sv
    assert bucket_label(start, bucket, EN) == en


def test_bucket_titles_and_periods() -> None:
    """Full bucket names for hover text and tables, and the period in the heading."""
    tuesday = datetime(2026, 11, 3, tzinfo=STOCKHOLM)
    assert bucket_title(tuesday, "day", SV) == "tisdag 3 november 2026"
    assert bucket_title(tuesday, "day", EN) == "Tuesday 3 November 2026"
    week = datetime(2026, 10, 26, tzinfo=STOCKHOLM)
    assert bucket_title(week, "week", SV) == f"vecka 44, 26 okt{DASH}1 nov 2026"
    assert bucket_title(week + timedelta(days=7), "week", EN) == f"week 45, 2{DASH}8 Nov 2026"
    assert bucket_title(tuesday.replace(hour=14), "hour", SV) == "3 nov 2026 14:00"
    assert period_title(date(2026, 10, 1), date(2026, 11, 1), SV) == "oktober 2026"
    assert period_title(date(2025, 12, 20), date(2026, 1, 19), EN) == (
        f"20 Dec 2025{DASH}18 Jan 2026"
    )
    assert bucket_csv(tuesday.replace(hour=14), "hour") == "2026-11-03 14:00"
    assert bucket_csv(tuesday, "week") == "2026-11-03"


def test_numbers_in_each_language() -> None:
    """Swedish: no-break space between thousands and a decimal comma; English: 1,234.5."""
    assert format_number(12345.67, "sv", 1) == "12\N{NO-BREAK SPACE}345,7"
    assert format_number(12345.67, "en", 1) == "12,345.7"
    assert format_number(None, "sv") == DASH


# --- chart geometry ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("maximum", "whole", "top", "step"),
    [(3, True, 3, 1), (7, True, 8, 2), (10, True, 10, 5), (45, False, 60, 20),
     (0.3, False, 0.3, 0.1), (1234, True, 1500, 500), (0, True, 1, 1)],
)  # fmt: skip
def test_nice_scale(maximum: float, whole: bool, top: float, step: float) -> None:
    """A scale from 0 that holds the maximum in round steps; counts never get 0.5 or 2.5."""
    scale = nice_scale(maximum, whole=whole)
    assert scale.top == pytest.approx(top)
    assert scale.step == pytest.approx(step)
    assert scale.top >= maximum


def test_bar_chart_geometry() -> None:
    """Bar heights are proportional to values on a shared baseline, in order left to right."""
    values = [0.0, 2.0, 4.0]
    chart = bar_chart(values, ["a", "b", "c"], ["A: 0", "B: 2", "C: 4"], str)
    assert chart is not None
    bottoms = {round(bar.y + bar.height, 6) for bar in chart.bars}
    assert bottoms == {chart.bottom}
    zero, two, four = chart.bars
    assert zero.height == 0
    assert four.height == pytest.approx(2 * two.height)
    assert four.y == pytest.approx(chart.top)  # 4 is the top of the scale
    assert zero.x < two.x < four.x
    assert [b.title for b in chart.bars] == ["A: 0", "B: 2", "C: 4"]
    assert [tick.label for tick in chart.y_ticks] == ["0.0", "1.0", "2.0", "3.0", "4.0"]
    assert [tick.label for tick in chart.x_ticks] == ["a", "b", "c"]
    assert chart.dots == ()


def test_an_empty_chart_is_none_and_labels_thin_out() -> None:
    """All zero is "no data", not an empty axis; 60 buckets get at most 12 labels."""
    assert bar_chart([0, 0], ["a", "b"], ["a", "b"], str) is None
    assert bar_chart([], [], [], str) is None
    many = bar_chart([1.0] * 60, [str(i) for i in range(60)], ["x"] * 60, str)
    assert many is not None
    assert [tick.label for tick in many.x_ticks] == [str(i) for i in range(0, 60, 5)]
    with pytest.raises(ValueError, match="equally long"):
        bar_chart([1.0], [], [], str)


def test_line_on_its_own_axis_breaks_where_there_is_no_value() -> None:
    """The mean-duration line: a dot per value, segments cut at a bucket without one."""
    chart = bar_chart(
        [1.0, 2.0, 0.0, 1.0, 1.0], list("abcde"), list("abcde"), str,
        line=[10.0, 20.0, None, 5.0, 5.0],
    )  # fmt: skip
    assert chart is not None
    assert [dot.value for dot in chart.dots] == [10.0, 20.0, 5.0, 5.0]
    assert len(chart.line_segments) == 2
    assert chart.dots[1].y == pytest.approx(chart.top)  # 20 is the top of the line's scale
    assert chart.line_ticks[-1].label == "20.0"
    assert chart.right < chart.width - 40  # room for the second axis
    assert share_of(5, 20) == 0.25
    assert share_of(None, 20) == 0.0


# --- tables, CSV, charts from a report ------------------------------------------------------------


def _report(**changes: Any) -> UsageReport:
    days = [datetime(2026, 10, d, tzinfo=STOCKHOLM) for d in (1, 2, 3)]
    data: dict[str, Any] = {
        "site": None, "since": days[0], "until": days[-1] + timedelta(days=1), "bucket": "day",
        "timezone": "Europe/Stockholm", "timezone_note": None, "buckets": days, "days": 3.0,
        "camera_checks": {
            "series": [{"bucket": b, "checks": c, "night_checks": n, "mean_duration_s": m}
                       for b, c, n, m in zip(days, (3, 0, 2), (3, 0, 1), (60.0, None, 30.0),
                                             strict=True)],
            "nights": 3, "checks_per_night": 1.33, "mean_duration_s": 48.0,
        },
        "lock_visits": {
            "series": [{"bucket": b, "visits": v, "mean_duration_s": m}
                       for b, v, m in zip(days, (4, 0, 2), (900.0, None, 600.0), strict=True)],
            "visits": 6, "visits_per_day": 2.0, "mean_duration_s": 800.0,
        },
        "robot_minutes": {
            "series": [{"bucket": b, "minutes": m} for b, m in zip(days, (45.0, 0, 0),
                                                                     strict=True)],
            "minutes": 45.0,
            "per_robot": [{"device_id": "cat-1", "label": "Lgh 1", "site_id": "sol",
                           "minutes": 45.0, "minutes_per_day": 15.0}],
        },
        "alarms": {"series": [{"bucket": b, "alarms": 0} for b in days], "total": 0,
                   "per_day": 0.0},
        "alerts": {"by_rule_severity": [{"rule": "alarm_pressed", "severity": "critical",
                                         "count": 2}], "total": 2},
        "response_times": {
            "by_severity": [
                {"severity": "critical", "alerts": 2, "acknowledged": 2, "ack_median_s": 75.0,
                 "ack_p90_s": 111.0, "resolved": 2, "resolve_median_s": 450.0,
                 "resolve_p90_s": 570.0},
                {"severity": "info", "alerts": 0, "acknowledged": 0, "ack_median_s": None,
                 "ack_p90_s": None, "resolved": 0, "resolve_median_s": None,
                 "resolve_p90_s": None},
            ],
            "slowest": [{"alert_id": 7, "device_id": "btn-1", "label": "Lgh 2",
                         "site_id": "sol", "rule": "alarm_pressed", "severity": "critical",
                         "opened_at": datetime(2026, 10, 2, 8, 0, tzinfo=ZoneInfo("UTC")),
                         "ack_s": 120.0}],
        },
        "availability": {
            "by_kind": [{"kind": "safety_camera", "devices": 2, "share_online": 0.975}],
            "least_available": [{"device_id": "cam-1", "label": "Lgh 3", "site_id": "sol",
                                 "kind": "safety_camera", "share_online": 0.95}],
        },
        "battery_replacements": {"series": [{"bucket": b, "replacements": 0} for b in days],
                                 "total": 0},
        "sites": [{"site_id": "sol", "name": "Solgården", "camera_checks": 5, "lock_visits": 6,
                   "robot_minutes": 45.0, "alarms": 0, "alerts": 2, "share_online": 0.975}],
    }  # fmt: skip
    data.update(changes)
    return UsageReport.model_validate(data)


def test_tables_from_a_report() -> None:
    """Each table has one row per item, words translated, empty severities left out."""
    tables = build_tables(_report(), SV, "sv")
    assert set(tables) == {
        "camera_checks", "lock_visits", "robot_minutes", "per_robot", "alarms", "alerts",
        "response_times", "slowest", "availability", "least_available",
        "battery_replacements", "sites",
    }  # fmt: skip
    assert tables["camera_checks"].rows[0] == ("2026-10-01", 3, 3, 60.0)
    assert tables["alerts"].rows == (("Trygghetslarm utlöst", "Kritisk", 2),)
    assert [row[0] for row in tables["response_times"].rows] == ["Kritisk"]
    assert tables["availability"].rows == (("Trygghetskamera", 2, 0.975),)
    assert tables["slowest"].rows[0][2] == "Solgården"  # the site's name, not its id
    # Small bars in cells: the median and p90 share one scale.
    response = tables["response_times"]
    assert response.bar_share(3, 75.0) == pytest.approx(75 / 111)
    assert response.bar_share(4, 111.0) == 1.0
    assert response.bar_share(1, 2) is None
    zone = STOCKHOLM
    assert format_cell(0.975, "percent", "sv", SV, zone) == "97,5\N{NO-BREAK SPACE}%"
    assert format_cell(120.0, "duration", "en", EN, zone) == "2 min"
    slow_at = tables["slowest"].rows[0][5]
    assert format_cell(slow_at, "time", "sv", SV, zone) == "2026-10-02 10:00"


def test_csv_is_excel_ready() -> None:
    """BOM, semicolons, decimal comma, CRLF, local times, units in the headers."""
    tables = build_tables(_report(), SV, "sv")
    body = to_csv(tables["camera_checks"], SV, STOCKHOLM)
    assert body.startswith(b"\xef\xbb\xbf")
    lines = body.decode("utf-8-sig").split("\r\n")
    assert lines[0] == "Datum;Tillsyner;Varav nattetid;Snittid (s)"
    assert lines[1:4] == ["2026-10-01;3;3;60,0", "2026-10-02;0;0;", "2026-10-03;2;1;30,0"]
    assert lines[4] == ""
    slowest = to_csv(tables["slowest"], SV, STOCKHOLM).decode("utf-8-sig").split("\r\n")
    assert slowest[1] == (
        "btn-1;Lgh 2;Solgården;Trygghetslarm utlöst;Kritisk;2026-10-02 10:00;120,0"
    )
    sites = to_csv(build_tables(_report(), EN, "en")["sites"], EN, STOCKHOLM)
    assert sites.decode("utf-8-sig").split("\r\n")[:2] == [
        "Site;Checks;Visits;Minutes (min);Alarms;Alerts;Online (%)",
        "Solgården;5;6;45,0;0;2;97,5",
    ]


@pytest.mark.parametrize(
    ("text", "cell"),
    [("Lgh 12", "Lgh 12"), ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"), ("+46", "'+46"),
     ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"), ("", "")],
)  # fmt: skip
def test_csv_text_never_runs_as_a_formula(text: str, cell: str) -> None:
    """Text that Excel would take for a formula is written as text (CSV injection)."""
    assert csv_cell(text, "text", STOCKHOLM) == cell


def test_charts_from_a_report() -> None:
    """One bar per bucket with the report's values; a chart with only zeros has no data."""
    charts = {c.name: c for c in build_charts(_report(), SV, "sv")}
    camera = charts["camera_checks"].chart
    assert camera is not None
    assert [bar.value for bar in camera.bars] == [3, 0, 1]  # the night checks
    assert camera.bars[0].title == "torsdag 1 oktober 2026: 3 tillsyner"
    locks = charts["lock_visits"].chart
    assert locks is not None
    assert [dot.value for dot in locks.dots] == [15.0, 10.0]  # mean minutes per visit
    assert charts["alarms"].chart is None
    assert charts["battery_replacements"].chart is None
    assert charts["camera_checks"].summary == "1,3 tillsyner per natt, i snitt 48 s långa."
    figures = {f.key: f.value for f in key_figures(_report(), SV, "sv")}
    assert figures["usage_key_critical_ack"] == "1 min"
    assert figures["usage_key_online"] == "97,5\N{NO-BREAK SPACE}%"
    quieter = _report(alerts={"by_rule_severity": [], "total": 0})
    compared = {f.key: f for f in key_figures(_report(), SV, "sv", previous=quieter)}
    assert (compared["usage_key_alerts"].value, compared["usage_key_alerts"].previous) == ("2", "0")


def test_a_series_that_misses_buckets_is_refused() -> None:
    """Bars must line up with buckets: a short series is an error, not a shifted chart."""
    report = _report()
    short = report.model_copy(
        update={"alarms": report.alarms.model_copy(update={"series": report.alarms.series[:2]})}
    )
    with pytest.raises(ValueError, match="alarms: 2 values for 3 buckets"):
        build_charts(short, SV, "sv")
