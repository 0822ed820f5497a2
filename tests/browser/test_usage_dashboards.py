"""The usage dashboards in a real chromium, on a known month of history: every chart with the
bars of that history, filters in the URL, the site filter, the language, CSV downloads, the
printable monthly report, no way in for a caregiver or technician, and a phone screen.

The history is written straight into the rollup tables (and ``alerts``), as the gateway keeps
them, for the last whole calendar month, so that "last month" is always a full month of it.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect
from psycopg import sql

from app import cli
from carewatch import admin
from carewatch.passwords import hash_password
from dashboards.usage import add_months
from tests.browser.conftest import PASSWORD, PHONE, AppServer, RecordedPage, sign_in
from tests.fixtures.services import SeededRegistry

pytestmark = pytest.mark.browser

STOCKHOLM = ZoneInfo("Europe/Stockholm")
SV_MONTHS = ("januari", "februari", "mars", "april", "maj", "juni", "juli", "augusti",
             "september", "oktober", "november", "december")  # fmt: skip
EN_MONTHS = tuple(calendar.month_name[1:])


def last_month() -> date:
    return add_months(datetime.now(STOCKHOLM).date().replace(day=1), -1)


@dataclass(frozen=True)
class History:
    """What was inserted, and what the dashboards must show for it (day index -> value)."""

    month: date
    days: int
    site_a: str
    site_b: str
    name_a: str
    name_b: str
    night_checks: dict[int, int]
    visits: dict[int, int]
    visit_minutes: dict[int, float]
    robot_minutes: dict[int, float]
    alarms_a: dict[int, int]
    alarms_b: dict[int, int]
    replacements: dict[int, int]
    offline_camera: str

    @property
    def month_sv(self) -> str:
        return f"{SV_MONTHS[self.month.month - 1]} {self.month.year}"

    @property
    def month_en(self) -> str:
        return f"{EN_MONTHS[self.month.month - 1]} {self.month.year}"

    def series(self, values: dict[int, Any]) -> list[float]:
        return [float(values.get(i, 0)) for i in range(self.days)]


def at(month: date, day_index: int, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(month + timedelta(days=day_index), time(hour, minute), STOCKHOLM)


def add_usage(
    conn: psycopg.Connection[Any], site_id: str, device_id: str, when: datetime, kind: str,
    events: int = 1, duration_s: float = 0.0,
) -> None:  # fmt: skip
    """Count ``events`` of ``kind`` in all four rollups, as the gateway would."""
    hour = when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    day = when.astimezone(STOCKHOLM).date()
    upsert = sql.SQL(
        "INSERT INTO {table} ({key}, {bucket}, type, events, duration_s)"
        " VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT ({key}, {bucket}, type) DO UPDATE SET"
        " events = {table}.events + excluded.events,"
        " duration_s = {table}.duration_s + excluded.duration_s"
    )
    for table, key_column, key, bucket_column, bucket in (
        ("usage_device_hourly", "device_id", device_id, "bucket", hour),
        ("usage_site_hourly", "site_id", site_id, "bucket", hour),
        ("usage_site_daily", "site_id", site_id, "day", day),
        ("usage_device_daily", "device_id", device_id, "day", day),
    ):
        statement = upsert.format(
            table=sql.Identifier(table),
            key=sql.Identifier(key_column),
            bucket=sql.Identifier(bucket_column),
        )
        conn.execute(statement, (key, bucket, kind, events, duration_s))


def add_alert(
    conn: psycopg.Connection[Any], device_id: str, rule: str, severity: str, opened: datetime,
    ack_s: float | None, resolve_s: float | None, cleared_s: float | None = None,
) -> None:  # fmt: skip
    state = "resolved" if resolve_s is not None else "acknowledged" if ack_s else "open"
    conn.execute(
        "INSERT INTO alerts (device_id, rule, severity, state, opened_at, acknowledged_at,"
        " acknowledged_by, resolved_at, resolved_by, cleared_at, last_event_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, 'anna', %s, 'anna', %s, %s)",
        (
            device_id, rule, severity, state, opened,
            None if ack_s is None else opened + timedelta(seconds=ack_s),
            None if resolve_s is None else opened + timedelta(seconds=resolve_s),
            None if cleared_s is None else opened + timedelta(seconds=cleared_s),
            opened,
        ),
    )  # fmt: skip


@pytest.fixture
def history(seeded: SeededRegistry, database_url: str, test_token: str) -> History:
    """Last month at two sites: camera checks, lock visits, robot play, alarms, a battery swap,
    five alerts (one camera offline for two days)."""
    month = last_month()
    days = calendar.monthrange(month.year, month.month)[1]
    site_a, site_b = seeded.site_id, f"bjork-{test_token}"
    name_a, name_b = f"Solgården {test_token}", f"Björkbacken {test_token}"
    button_b = f"{test_token}-b-alarm"
    camera, lock = seeded.device("safety_camera"), seeded.device("door_lock")
    cat, cat2, button = (
        seeded.device("companion_robot"), seeded.device("companion_robot", 1),
        seeded.device("alarm_button"),
    )  # fmt: skip
    with psycopg.connect(database_url, autocommit=True) as conn:
        admin.ensure_site(conn, site_b, seeded.org_id, name_b)
        admin.add_devices_bulk(conn, [(button_b, "alarm_button", site_b, "Lgh 9")])
        # Every device existed long before the month (availability counts their life).
        conn.execute(
            "UPDATE devices SET created_at = %s WHERE site_id IN (%s, %s)",
            (at(month, -60, 0), site_a, site_b),
        )
        for _ in range(3):  # three night checks of a minute on the evening of day 2
            add_usage(conn, site_a, camera, at(month, 2, 22), "camera.check_ended", 1, 60.0)
        add_usage(conn, site_a, camera, at(month, 9, 2), "camera.check_ended", 2, 60.0)
        add_usage(conn, site_a, camera, at(month, 9, 12), "camera.check_ended", 1, 30.0)  # day
        add_usage(conn, site_a, lock, at(month, 4, 9), "lock.visit", 4, 3600.0)  # 15 min each
        add_usage(conn, site_a, lock, at(month, 14, 9), "lock.visit", 2, 1200.0)  # 10 min each
        add_usage(conn, site_a, cat, at(month, 1, 10), "robot.interaction", 3, 1800.0)
        add_usage(conn, site_a, cat2, at(month, 1, 11), "robot.interaction", 1, 900.0)
        add_usage(conn, site_a, cat, at(month, 20, 15), "robot.interaction", 2, 2700.0)
        add_usage(conn, site_a, button, at(month, 5, 10), "alarm.pressed", 2)
        add_usage(conn, site_a, button, at(month, 6, 3), "alarm.pressed", 1)
        add_usage(conn, site_b, button_b, at(month, 5, 12), "alarm.pressed", 5)
        # The month before: four alarms, for the monthly report's comparison.
        add_usage(conn, site_a, button, at(add_months(month, -1), 3, 9), "alarm.pressed", 4)
        add_usage(conn, site_a, lock, at(month, 7, 8), "battery.replaced", 1)
        add_alert(conn, button, "alarm_pressed", "critical", at(month, 5, 10), 120, 600)
        add_alert(conn, button, "alarm_pressed", "critical", at(month, 6, 3), 30, 300)
        add_alert(conn, camera, "device_offline", "critical", at(month, 10, 0),
                  2 * 86400 + 60, 2 * 86400 + 60, cleared_s=2 * 86400)  # fmt: skip
        add_alert(conn, lock, "battery_low", "warning", at(month, 7, 8), 3600, None)
        add_alert(conn, button_b, "alarm_pressed", "critical", at(month, 5, 12), 900, 1000)
    return History(
        month=month, days=days, site_a=site_a, site_b=site_b, name_a=name_a, name_b=name_b,
        night_checks={2: 3, 9: 2}, visits={4: 4, 14: 2}, visit_minutes={4: 15.0, 14: 10.0},
        robot_minutes={1: 45.0, 20: 45.0}, alarms_a={5: 2, 6: 1}, alarms_b={5: 5},
        replacements={7: 1}, offline_camera=camera,
    )  # fmt: skip


def add_user(database_url: str, org_id: str, username: str, role: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, org_id, role, password_hash) VALUES (%s, %s, %s, %s)",
            (username, org_id, role, hash_password(PASSWORD)),
        )
    return username


@pytest.fixture
def manager(seeded: SeededRegistry, database_url: str, test_token: str) -> str:
    """A manager of the seeded organisation (every site) who signs in with PASSWORD."""
    return add_user(database_url, seeded.org_id, f"maja-{test_token}", "manager")


def bar_values(page: Page, chart: str) -> list[float]:
    values: list[str] = page.locator(f"svg#chart-{chart} rect.bar").evaluate_all(
        "bars => bars.map(b => b.dataset.value)"
    )
    return [float(v) for v in values]


def column(page: Page, table: str, index: int) -> list[str]:
    cells: list[str] = page.locator(f"#table-{table} tbody tr").evaluate_all(
        f"rows => rows.map(r => r.children[{index}].textContent.trim())"
    )
    return cells


def watch_console(page: Page) -> list[str]:
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def open_dashboards(page: Page, app_server: AppServer, username: str, query: str = "") -> None:
    sign_in(page, app_server.url, username)
    page.goto(f"{app_server.url}/dashboards{query}")


def test_every_chart_shows_the_history(
    browser_page: RecordedPage, app_server: AppServer, manager: str, history: History
) -> None:
    """Last month: each chart has a bar per day with the inserted values, the tables the
    alerts, response times, availability and the two sites; nothing breaks the CSP."""
    page = browser_page.page
    errors = watch_console(page)
    open_dashboards(page, app_server, manager, "?period=last_month")
    expect(page.get_by_role("heading", name=f"Användning {history.month_sv}")).to_be_visible()
    assert bar_values(page, "camera_checks") == history.series(history.night_checks)
    assert bar_values(page, "lock_visits") == history.series(history.visits)
    dots: list[str] = page.locator("svg#chart-lock_visits circle.dot").evaluate_all(
        "dots => dots.map(d => d.dataset.value)"
    )
    assert [float(v) for v in dots] == [15.0, 10.0]
    assert bar_values(page, "robot_minutes") == history.series(history.robot_minutes)
    alarms = {d: history.alarms_a.get(d, 0) + history.alarms_b.get(d, 0) for d in range(31)}
    assert bar_values(page, "alarms") == history.series(alarms)
    assert bar_values(page, "battery_replacements") == history.series(history.replacements)
    # Labelled and accessible: a title, axes, and the bar's own words on hover.
    camera = page.locator("svg#chart-camera_checks")
    expect(camera).to_have_attribute("role", "img")
    expect(camera.locator("title").first).to_have_text("Kameratillsyn nattetid (18\N{EN DASH}06)")
    expect(camera.locator("text.y-axis")).to_have_text("Tillsyner")
    expect(camera.locator("text.x-axis")).to_have_text("Datum")
    third = history.month + timedelta(days=2)
    expect(camera.locator("rect.bar").nth(2).locator("title")).to_contain_text(
        f"{third.day} {SV_MONTHS[third.month - 1]} {third.year}: 3 tillsyner"
    )
    expect(camera.locator("text.x-tick").first).to_have_text(
        f"1 {SV_MONTHS[history.month.month - 1][:3]}"
    )
    # The tables.
    assert column(page, "per_robot", 3)[0].startswith("75")
    # Most first, then by rule.
    assert column(page, "alerts", 0) == ["Trygghetslarm utlöst", "Lågt batteri",
                                         "Enheten är offline"]  # fmt: skip
    assert column(page, "alerts", 2) == ["3", "1", "1"]
    assert column(page, "response_times", 0) == ["Kritisk", "Varning"]
    assert column(page, "slowest", 0)[0] == history.offline_camera
    assert column(page, "slowest", 6)[:4] == ["2 d 0 h", "1 h 0 min", "15 min", "2 min"]
    assert column(page, "least_available", 0)[0] == history.offline_camera
    # Two days offline out of the month's hours (a DST month has one more or less).
    month_s = (at(history.month, history.days, 0).astimezone(UTC)
               - at(history.month, 0, 0).astimezone(UTC)).total_seconds()  # fmt: skip
    share = 100 * (1 - 2 * 86400 / month_s)
    least = page.locator("#table-least_available tbody tr").first
    expect(least.locator("td.percent")).to_have_text(
        f"{share:.1f}".replace(".", ",") + "\N{NO-BREAK SPACE}%"
    )
    assert column(page, "sites", 0) == [history.name_b, history.name_a]
    assert column(page, "sites", 4) == ["5", "3"]
    expect(page.locator("#table-sites svg.cell-bar").first).to_be_attached()
    expect(page.locator(".key-figure[data-key='usage_key_alarms'] dd.value")).to_have_text("8")
    assert errors == []


def test_filters_change_the_url_and_the_content(
    browser_page: RecordedPage, app_server: AppServer, manager: str, history: History
) -> None:
    """A preset link, then the site and bucket in the form: each lands in the URL, changes the
    charts, and the URL opened again shows the same view."""
    page = browser_page.page
    open_dashboards(page, app_server, manager)
    expect(page.locator(".presets a[aria-current='true']")).to_have_text("Senaste 30 dagarna")
    page.get_by_role("link", name="Förra månaden").click()
    expect(page).to_have_url(f"{app_server.url}/dashboards?period=last_month")
    expect(page.locator(".presets a[aria-current='true']")).to_have_text("Förra månaden")
    assert sum(bar_values(page, "alarms")) == 8
    page.get_by_label("Boende/område").select_option(history.site_a)
    page.get_by_role("button", name="Visa").click()
    last = history.month + timedelta(days=history.days - 1)
    expected = (f"/dashboards?site={history.site_a}&since={history.month.isoformat()}"
                f"&until={last.isoformat()}&bucket=day")  # fmt: skip
    expect(page).to_have_url(f"{app_server.url}{expected}")
    expect(page.locator("#usage-heading")).to_have_text(
        f"Användning {history.month_sv} · {history.name_a}"
    )
    assert bar_values(page, "alarms") == history.series(history.alarms_a)
    assert column(page, "sites", 0) == [history.name_a]
    page.locator("#filter-bucket").select_option("week")
    page.get_by_role("button", name="Visa").click()
    assert "bucket=week" in page.url
    weekly = bar_values(page, "alarms")
    assert sum(weekly) == 3
    assert 4 <= len(weekly) <= 6
    expect(page.locator("svg#chart-alarms text.x-axis")).to_have_text("Vecka")
    expect(page.locator("svg#chart-alarms text.x-tick").first).to_contain_text("v. ")
    # The URL is the view: opened fresh, it shows the same.
    url = page.url
    page.goto(url)
    assert bar_values(page, "alarms") == weekly
    # One day by the hour: the two alarms of 10:00 in the eleventh bar of 24.
    day = (history.month + timedelta(days=5)).isoformat()
    page.goto(f"{app_server.url}/dashboards?since={day}&until={day}&site={history.site_a}")
    expect(page.locator("#filter-bucket")).to_have_value("hour")
    hourly = bar_values(page, "alarms")
    assert hourly == [2.0 if hour == 10 else 0.0 for hour in range(24)]
    expect(page.locator("svg#chart-alarms text.x-tick").nth(1)).to_have_text("02:00")


def test_language_switch_keeps_the_view(
    browser_page: RecordedPage, app_server: AppServer, manager: str, history: History
) -> None:
    """English: the same view with English words, month names and axes."""
    page = browser_page.page
    open_dashboards(page, app_server, manager, f"?period=last_month&site={history.site_a}")
    page.locator("#language-link").click()
    assert "lang=en" in page.url
    assert f"site={history.site_a}" in page.url
    expect(page.locator("#usage-heading")).to_have_text(
        f"Usage {history.month_en} · {history.name_a}"
    )
    chart = page.locator("svg#chart-alarms")
    expect(chart.locator("text.x-axis")).to_have_text("Date")
    expect(chart.locator("text.x-tick").first).to_have_text(
        f"1 {EN_MONTHS[history.month.month - 1][:3]}"
    )
    assert column(page, "alerts", 0)[0] == "Safety alarm pressed"
    # Links keep the language: a preset, then back to Swedish.
    page.get_by_role("link", name="This year").click()
    assert "lang=en" in page.url
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.locator("#language-link").click()
    expect(page.locator("html")).to_have_attribute("lang", "sv")


def read_download(page: Page, link_selector: str) -> tuple[str, str]:
    """Click a download link; the file's suggested name and its text."""
    with page.expect_download() as info:
        page.locator(link_selector).click()
    download = info.value
    path = download.path()
    return download.suggested_filename, Path(path).read_bytes().decode("utf-8")


def test_csv_downloads_have_the_rows(
    browser_page: RecordedPage, app_server: AppServer, manager: str, history: History
) -> None:
    """The alarms per day and the slowest acknowledgements download as Excel-ready CSV."""
    page = browser_page.page
    open_dashboards(page, app_server, manager, f"?period=last_month&site={history.site_a}")
    page.locator("#section-alarms summary").click()
    name, text = read_download(page, "#csv-alarms")
    last = history.month + timedelta(days=history.days - 1)
    assert name == f"carewatch-alarms-{history.site_a}-{history.month}-{last}.csv"
    assert text.startswith("\ufeff")
    lines = text.removeprefix("\ufeff").split("\r\n")
    assert lines[0] == "Datum;Larm"
    assert len(lines) == history.days + 2  # header, a row per day, the final line break
    rows = dict(line.split(";") for line in lines[1:-1])
    assert rows[(history.month + timedelta(days=5)).isoformat()] == "2"
    assert rows[(history.month + timedelta(days=6)).isoformat()] == "1"
    assert sum(int(v) for v in rows.values()) == 3
    _, slowest = read_download(page, "#csv-slowest")
    slow = slowest.removeprefix("\ufeff").split("\r\n")
    assert slow[0].split(";")[-1] == "Tid till kvittens (s)"
    assert slow[1].split(";")[0] == history.offline_camera
    assert slow[1].split(";")[-1] == "172860,0"
    assert len(slow) == 2 + 4  # four alerts acknowledged at site A


def test_monthly_report_prints_without_the_chrome(
    browser_page: RecordedPage, app_server: AppServer, manager: str, history: History
) -> None:
    """One click from the dashboard to last month's report; printed, the navigation and the
    form are gone and the charts remain."""
    page = browser_page.page
    errors = watch_console(page)
    open_dashboards(page, app_server, manager)
    page.get_by_role("link", name="Månadsrapport").click()
    month = history.month.strftime("%Y-%m")
    expect(page).to_have_url(f"{app_server.url}/dashboards/report?month={month}")
    expect(page.locator("#report-heading")).to_have_text(f"Månadsrapport {history.month_sv}")
    expect(page.locator("#key-figures")).to_be_visible()
    alarms = page.locator(".key-figure[data-key='usage_key_alarms']")
    expect(alarms.locator("dd.value")).to_have_text("8")
    before = add_months(history.month, -1)
    expect(alarms.locator("dd.previous")).to_have_text(
        f"Månaden före ({SV_MONTHS[before.month - 1]} {before.year}): 4"
    )
    assert bar_values(page, "alarms") == history.series(
        {d: history.alarms_a.get(d, 0) + history.alarms_b.get(d, 0) for d in range(31)}
    )
    expect(page.locator("header.topbar")).to_be_visible()
    page.emulate_media(media="print")
    expect(page.locator("header.topbar")).to_be_hidden()
    expect(page.locator("#report-filters")).to_be_hidden()
    expect(page.locator(".csv-link").first).to_be_hidden()
    expect(page.locator("svg#chart-alarms")).to_be_visible()
    breaks = page.locator("#section-alarms").evaluate("s => getComputedStyle(s).breakBefore")
    assert breaks == "page"
    pdf = page.pdf(format="A4")
    assert pdf.startswith(b"%PDF")
    page.emulate_media(media="screen")
    # Another month through the form; a mistyped one falls back with a note.
    page.goto(f"{app_server.url}/dashboards/report?month=2026-99&site={history.site_b}")
    expect(page.locator("#usage-error")).to_be_visible()
    expect(page.locator("#report-heading")).to_have_text(f"Månadsrapport {history.month_sv}")
    assert sum(bar_values(page, "alarms")) == 5
    assert errors == []


def test_an_empty_period_says_no_data(
    browser_page: RecordedPage, app_server: AppServer, manager: str, history: History
) -> None:
    """A month without history shows "no data" for every chart, not empty axes; a bad date
    and an unknown site are answered clearly."""
    page = browser_page.page
    before = add_months(history.month, -3)
    last = add_months(before, 1) - timedelta(days=1)
    open_dashboards(page, app_server, manager, f"?since={before}&until={last}")
    expect(page.locator("svg.bar-chart")).to_have_count(0)
    expect(page.locator("p.no-data[id^='chart-']")).to_have_count(5)
    expect(page.locator("#chart-alarms-empty")).to_have_text("Inga data för perioden.")
    page.goto(f"{app_server.url}/dashboards?since=2026-02-30&until=2026-03-10")
    expect(page.locator("#usage-error")).to_contain_text("Datumen kunde inte läsas")
    expect(page.locator(".presets a[aria-current='true']")).to_have_text("Senaste 30 dagarna")
    response = page.goto(f"{app_server.url}/dashboards?site=someone-elses")
    assert response is not None
    assert response.status == 404
    expect(page.get_by_role("heading", name="Boendet finns inte")).to_be_visible()


def test_only_managers_and_admins_get_in(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    seeded: SeededRegistry,
    database_url: str,
    test_token: str,
) -> None:
    """A caregiver and a technician get a friendly 403 for the page, the CSV and the report,
    and no link to them; a stranger is sent to the login form."""
    page = browser_page.page
    page.goto(f"{app_server.url}/dashboards")
    expect(page).to_have_url(f"{app_server.url}/login")
    technician = add_user(database_url, seeded.org_id, f"tove-{test_token}", "technician")
    for username in (caregiver, technician):
        page.context.clear_cookies()
        sign_in(page, app_server.url, username)
        expect(page.locator("a.nav-link[href='/dashboards']")).to_have_count(0)
        for path in ("/dashboards", "/dashboards/export/alarms.csv", "/dashboards/report"):
            answer = page.request.get(f"{app_server.url}{path}")
            assert answer.status == 403, (username, path)
        response = page.goto(f"{app_server.url}/dashboards")
        assert response is not None
        assert response.status == 403
        expect(page.get_by_role("heading", name="Ingen åtkomst")).to_be_visible()
        expect(page.locator("svg")).to_have_count(0)


def test_a_site_limited_manager_sees_only_their_sites(
    browser_page: RecordedPage, app_server: AppServer, history: History, database_url: str,
    seeded: SeededRegistry, test_token: str,
) -> None:  # fmt: skip
    """A manager limited to one site gets its numbers only, and another site is a 404 (as if it
    did not exist), for the page, the CSV and the report; an admin sees every site."""
    page = browser_page.page
    limited = add_user(database_url, seeded.org_id, f"mats-{test_token}", "manager")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO user_sites (user_id, site_id)"
            " SELECT id, %s FROM users WHERE username = %s",
            (history.site_a, limited),
        )
    open_dashboards(page, app_server, limited, "?period=last_month")
    options: list[str] = page.locator("#filter-site option").evaluate_all(
        "options => options.map(o => o.value)"
    )
    assert options == ["", history.site_a]
    assert bar_values(page, "alarms") == history.series(history.alarms_a)
    assert column(page, "sites", 0) == [history.name_a]
    for path in (
        f"/dashboards?site={history.site_b}",
        f"/dashboards/export/alarms.csv?site={history.site_b}",
        f"/dashboards/report?site={history.site_b}",
    ):
        answer = page.request.get(f"{app_server.url}{path}")
        assert answer.status == 404, path
        assert history.name_b not in answer.text()
    page.context.clear_cookies()
    admin_user = add_user(database_url, seeded.org_id, f"ada-{test_token}", "admin")
    open_dashboards(page, app_server, admin_user, "?period=last_month")
    assert column(page, "sites", 0) == [history.name_b, history.name_a]


def test_manager_finds_the_dashboards_from_the_board(
    browser_page: RecordedPage, app_server: AppServer, manager: str, history: History
) -> None:
    """The board's navigation has the dashboards for a manager."""
    page = browser_page.page
    sign_in(page, app_server.url, manager)
    page.locator("a.nav-link[href='/dashboards']").click()
    expect(page).to_have_url(f"{app_server.url}/dashboards")
    expect(page.locator("a.nav-link[aria-current='page']")).to_have_text("Användning")


def test_the_page_draws_the_apis_numbers_for_a_simulated_month(
    browser_page: RecordedPage, app_server: AppServer, manager: str, seeded: SeededRegistry,
    database_url: str, test_token: str,
) -> None:  # fmt: skip
    """A month of simulated history (events, then the rollups rebuilt from them, as the backfill
    does): every chart's bars and every table's rows are those of GET /api/v1/usage for the
    same period."""
    code = cli.main(["simulate", "--database-url", database_url, "--backfill", "31d",
                     "--devices", "40", "--site", seeded.site_id, "--seed", "5",
                     "--id-prefix", f"p{test_token}"])  # fmt: skip
    assert code == 0
    page = browser_page.page
    open_dashboards(page, app_server, manager)
    since = page.locator("#filter-since").input_value()
    until = date.fromisoformat(page.locator("#filter-until").input_value()) + timedelta(days=1)
    answer = page.request.get(
        f"{app_server.url}/api/v1/usage?since={since}T00:00:00&until={until}T00:00:00&bucket=day"
    )
    assert answer.ok, answer.text()
    report = answer.json()
    assert len(report["buckets"]) == 30
    for chart, series, field in (
        ("camera_checks", "camera_checks", "night_checks"),
        ("lock_visits", "lock_visits", "visits"),
        ("robot_minutes", "robot_minutes", "minutes"),
        ("alarms", "alarms", "alarms"),
    ):
        expected = [float(item[field]) for item in report[series]["series"]]
        assert sum(expected) > 0, chart  # the simulation uses every kind
        assert bar_values(page, chart) == expected, chart
    replacements = [float(i["replacements"]) for i in report["battery_replacements"]["series"]]
    if sum(replacements):
        assert bar_values(page, "battery_replacements") == replacements
    else:
        expect(page.locator("#chart-battery_replacements-empty")).to_be_visible()
    rows = page.locator("#table-per_robot tbody tr")
    expect(rows).to_have_count(len(report["robot_minutes"]["per_robot"]))
    expect(page.locator("#table-alerts tbody tr")).to_have_count(
        len(report["alerts"]["by_rule_severity"])
    )
    expect(page.locator("#table-slowest tbody tr")).to_have_count(
        len(report["response_times"]["slowest"])
    )
    expect(page.locator(".key-figure[data-key='usage_key_alarms'] dd.value")).to_have_text(
        f"{report['alarms']['total']:,}".replace(",", "\N{NO-BREAK SPACE}")
    )


@pytest.fixture
def phone_page(chromium: Browser, app_server: AppServer) -> Iterator[Page]:
    context = chromium.new_context(viewport=PHONE)  # type: ignore[arg-type]  # ViewportSize
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def test_phone_has_no_sideways_page_scroll(
    phone_page: Page, app_server: AppServer, manager: str, history: History
) -> None:
    """At 390 px neither the dashboard nor the report scrolls sideways."""
    open_dashboards(phone_page, app_server, manager, "?period=last_month")
    expect(phone_page.locator("svg#chart-alarms")).to_be_visible()
    for path in ("/dashboards?period=last_month", "/dashboards/report"):
        phone_page.goto(f"{app_server.url}{path}")
        phone_page.locator("details.as-table summary").evaluate_all(
            "items => items.forEach(s => s.parentElement.open = true)"
        )
        width = phone_page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], path
