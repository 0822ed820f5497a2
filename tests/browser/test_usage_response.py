"""The alarm response on the managers' pages (#12), in a real chromium: hand-built responses with
known times at a site with a promise and one without, and the dashboard's section, its CSV and
the monthly report show exactly those medians, percentiles and shares, each promise beside its
share and "no promise set" where there is none; the slowest responses by residence; English; a
site-limited manager; a period without responses.

The responses are written into ``alerts`` and ``alert_responses`` as the API's moves leave them
(tests/integration/test_response_report.py proves the query's figures), on days of the last
whole calendar month.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Page, expect

from carewatch import admin
from dashboards.formatting import DASH
from dashboards.usage import add_months
from tests.browser import test_usage_dashboards
from tests.browser.conftest import AppServer, RecordedPage
from tests.browser.test_usage_dashboards import (
    STOCKHOLM,
    add_user,
    column,
    last_month,
    open_dashboards,
    read_download,
    watch_console,
)
from tests.fixtures.services import SeededRegistry

pytestmark = pytest.mark.browser

manager = test_usage_dashboards.manager  # the usage dashboards' manager, every site

NBSP = "\N{NO-BREAK SPACE}"
NO_PROMISE = "inget löfte satt \N{EN DASH} bara mätt"


@dataclass(frozen=True)
class Step:
    """One hand-built response: its day of the month (0: the first), seconds from the opening
    to each step (None: not reached) and how it ended."""

    day: int
    contact_s: int | None = None
    on_site_s: int | None = None
    source: str | None = None
    close_s: int | None = None
    action: str | None = None


# Site A promises contact within 5 min and someone on site within 30 min. Contact 60/120/240/
# 600 s (median 180, p90 492), on site 600 lock/1500 by hand/2400 lock (median 1500, p90 2220),
# closed 900/1200/2400/3000 (median 1800, p90 2820); the fifth nobody took.
A_STEPS = (
    (0, Step(1, 60, 600, "lock", 1200, "help_given")),
    (0, Step(4, 120, 1500, "staff", 2400, "help_given")),
    (1, Step(9, 240, 2400, "lock", 3000, "help_given")),
    (1, Step(14, 600, None, None, 900, "false_alarm")),
    (0, Step(19)),
)
B_STEP = Step(6, 100, 200, "staff", 400, "help_given")  # site B promises nothing


@dataclass(frozen=True)
class Responses:
    """The responses written, and who they belong to."""

    month: date
    site_a: str
    site_b: str
    name_a: str
    name_b: str

    def opened(self, day: int) -> str:
        return f"{self.month + timedelta(days=day)} 10:00"


def store(conn: psycopg.Connection[Any], device: str, month: date, step: Step) -> None:
    """The alert at 10:00 local on its day, resolved when its response closed (or an hour on,
    by itself), and its response row as the API's moves leave it."""
    opened = datetime.combine(month + timedelta(days=step.day), time(10), STOCKHOLM)

    def later(seconds: int | None) -> datetime | None:
        return None if seconds is None else opened + timedelta(seconds=seconds)

    closed = later(step.close_s)
    row = conn.execute(
        "INSERT INTO alerts (device_id, rule, severity, state, opened_at, acknowledged_at,"
        " resolved_at, last_event_at) VALUES (%s, 'alarm_pressed', 'critical', 'resolved', %s,"
        " %s, %s, %s) RETURNING id",
        (device, opened, later(step.contact_s), closed or later(3600), opened),
    ).fetchone()
    assert row is not None
    if step.contact_s is None:
        return
    conn.execute(
        "INSERT INTO alert_responses (alert_id, state, holder, accepted_at, on_site_at,"
        " on_site_by, on_site_source, closed_at, closed_by, action)"
        " VALUES (%s, 'closed', 'anna', %s, %s, %s, %s, %s, 'anna', %s)",
        (
            row[0],
            later(step.contact_s),
            later(step.on_site_s),
            None if step.source is None else "anna",
            step.source,
            closed,
            step.action,
        ),
    )


@pytest.fixture
def responses(seeded: SeededRegistry, database_url: str, test_token: str) -> Responses:
    """Last month: five responses at site A (two alarm buttons, the first in a residence), one
    at site B; site A's promises set, site B's not."""
    month = last_month()
    site_a, site_b = seeded.site_id, f"ek-{test_token}"
    name_a, name_b = f"Solgården {test_token}", f"Ekgården {test_token}"
    buttons = (seeded.device("alarm_button", 0), seeded.device("alarm_button", 1))
    b_button = f"{test_token}-ek-alarm"
    with psycopg.connect(database_url, autocommit=True) as conn:
        admin.ensure_site(conn, site_b, seeded.org_id, name_b)
        admin.add_devices_bulk(conn, [(b_button, "alarm_button", site_b, "Lgh 7")])
        conn.execute(
            "UPDATE sites SET contact_promise_s = 300, on_site_promise_s = 1800 WHERE id = %s",
            (site_a,),
        )
        row = conn.execute(
            "INSERT INTO residences (site_id, label) VALUES (%s, 'Lägenhet 12') RETURNING id",
            (site_a,),
        ).fetchone()
        assert row is not None
        conn.execute("UPDATE devices SET residence_id = %s WHERE id = %s", (row[0], buttons[0]))
        for button, step in A_STEPS:
            store(conn, buttons[button], month, step)
        store(conn, b_button, month, B_STEP)
    return Responses(month, site_a, site_b, name_a, name_b)


def rows(page: Page, table: str) -> list[list[str]]:
    found: list[list[str]] = page.locator(f"#table-{table} tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.children].map(c => c.textContent.trim()))"
    )
    return found


def percent(text: str) -> str:
    return f"{text}{NBSP}%"


def site_rows(r: Responses) -> list[list[str]]:
    """The sites' table as the page shows it: Ekgården (no promise) before Solgården."""
    return [
        [r.name_b, "1", "1", "1 min", "1 min", NO_PROMISE, "1", "3 min", "3 min", NO_PROMISE,
         "0", "1", "1", "6 min", "6 min"],
        [r.name_a, "5", "4", "3 min", "8 min", f"inom 5 min: {percent('75,0')}", "3", "25 min",
         "37 min", f"inom 30 min: {percent('66,7')}", "2", "1", "4", "30 min", "47 min"],
    ]  # fmt: skip


A_LINE = (
    "Solgården {token}: 5 larm. Kontakt (accepterat): 4, median 3 min, inom 5 min: 75,0 %."
    " På plats: 3, median 25 min, inom 30 min: 66,7 %; 2 visade av låset, 1 registrerade för"
    " hand."
).replace(" %", f"{NBSP}%")
B_LINE = (
    "Ekgården {token}: 1 larm. Kontakt (accepterat): 1, median 1 min, " + NO_PROMISE + "."
    " På plats: 1, median 3 min, " + NO_PROMISE + "; 0 visade av låset, 1 registrerade för hand."
)


def token_of(r: Responses) -> str:
    return r.name_a.removeprefix("Solgården ")


def test_dashboard_shows_the_times_against_each_promise(
    browser_page: RecordedPage, app_server: AppServer, manager: str, responses: Responses
) -> None:
    """Last month: each site's figures in words with the promise beside its share (or "no
    promise set"), the sites' table, month by month behind "show", and the slowest responses
    by residence, slowest arrival first."""
    page = browser_page.page
    errors = watch_console(page)
    open_dashboards(page, app_server, manager, "?period=last_month")
    section = page.locator("#section-alarm-response")
    expect(section.get_by_role("heading", name="Larmrespons")).to_be_visible()
    last = add_months(responses.month, 1) - timedelta(days=1)
    expect(section.locator(".section-summary")).to_contain_text(
        f"{responses.month.isoformat()}\N{EN DASH}{last.isoformat()}"
    )
    token = token_of(responses)
    expect(page.locator("#alarm-response-summary li")).to_have_text(
        [B_LINE.format(token=token), A_LINE.format(token=token)]
    )
    expect(page.locator("#alarm-response-empty")).to_have_count(0)
    assert rows(page, "alarm_response_sites") == site_rows(responses)
    months = page.locator("#table-alarm_response_months")
    expect(months).to_be_hidden()
    page.locator("#alarm-response-months summary").click()
    expect(months).to_be_visible()
    month = f"{responses.month:%Y-%m}"
    assert rows(page, "alarm_response_months") == [[month, *row] for row in site_rows(responses)]
    r = responses
    assert rows(page, "alarm_response_slowest") == [
        [r.opened(9), r.name_a, "Lgh 2", "Trygghetslarm utlöst", "4 min", "40 min", "50 min",
         "Låset", "Hjälp given"],
        [r.opened(4), r.name_a, "Lägenhet 12", "Trygghetslarm utlöst", "2 min", "25 min",
         "40 min", "För hand", "Hjälp given"],
        [r.opened(1), r.name_a, "Lägenhet 12", "Trygghetslarm utlöst", "1 min", "10 min",
         "20 min", "Låset", "Hjälp given"],
        [r.opened(14), r.name_a, "Lgh 2", "Trygghetslarm utlöst", "10 min", DASH, "15 min",
         DASH, "Falsklarm"],
        [r.opened(6), r.name_b, "Lgh 7", "Trygghetslarm utlöst", "1 min", "3 min", "6 min",
         "För hand", "Hjälp given"],
    ]  # fmt: skip
    assert errors == []


def test_the_csv_has_the_promise_in_seconds_the_count_within_and_the_share(
    browser_page: RecordedPage, app_server: AppServer, manager: str, responses: Responses
) -> None:
    """The sites' CSV: Excel's format (BOM, ``;``, CRLF, decimal comma), seconds, each promise
    as its seconds, the count within and the share (empty without a promise); the slowest
    CSV; the site filter holds."""
    page = browser_page.page
    open_dashboards(page, app_server, manager, "?period=last_month")
    name, text = read_download(page, "#csv-alarm_response_sites")
    last = add_months(responses.month, 1) - timedelta(days=1)
    assert name == f"carewatch-alarm_response_sites-all-{responses.month}-{last}.csv"
    assert text.startswith("\ufeff")
    lines = text.removeprefix("\ufeff").split("\r\n")
    assert lines[0].split(";")[:9] == [
        "Boende/område", "Larm", "Accepterade", "Till kontakt, median (s)",
        "Till kontakt, 90:e percentil (s)", "Kontaktlöfte (s)", "Kontakt inom löftet",
        "Andel kontakt inom löftet (%)", "På plats",
    ]  # fmt: skip
    assert lines[1:] == [
        f"{responses.name_b};1;1;100,0;100,0;;;;1;200,0;200,0;;;;0;1;1;400,0;400,0",
        f"{responses.name_a};5;4;180,0;492,0;300,0;3;75,0;3;1500,0;2220,0;1800,0;2;66,7;2;1;4;"
        "1800,0;2820,0",
        "",
    ]
    _, slowest = read_download(page, "#csv-alarm_response_slowest")
    first = slowest.removeprefix("\ufeff").split("\r\n")[1]
    assert first == (
        f"{responses.opened(9)};{responses.name_a};Lgh 2;Trygghetslarm utlöst;240,0;2400,0;"
        "3000,0;Låset;Hjälp given"
    )
    only_b = page.request.get(
        f"{app_server.url}/dashboards/export/alarm_response_months.csv"
        f"?period=last_month&site={responses.site_b}"
    )
    assert only_b.ok
    assert only_b.headers["content-disposition"].startswith(
        f'attachment; filename="carewatch-alarm_response_months-{responses.site_b}-'
    )
    b_lines = only_b.body().decode("utf-8").removeprefix("\ufeff").split("\r\n")
    assert [line.split(";")[1] for line in b_lines[1:-1]] == [responses.name_b]
    assert page.request.get(
        f"{app_server.url}/dashboards/export/alarm_response_weeks.csv"
    ).status == 422  # fmt: skip
    # The usage report's own response times are still theirs (the paths do not collide).
    assert page.request.get(f"{app_server.url}/dashboards/export/response_times.csv").ok


def test_the_monthly_report_has_the_same_figures(
    browser_page: RecordedPage, app_server: AppServer, manager: str, responses: Responses
) -> None:
    """The month's report shows the same section with the months' table open, printed too;
    the month before had no responses and says so."""
    page = browser_page.page
    errors = watch_console(page)
    open_dashboards(page, app_server, manager)
    page.goto(f"{app_server.url}/dashboards/report?month={responses.month:%Y-%m}")
    token = token_of(responses)
    expect(page.locator("#alarm-response-summary li").last).to_have_text(A_LINE.format(token=token))
    expect(page.locator("#table-alarm_response_months")).to_be_visible()
    assert rows(page, "alarm_response_sites") == site_rows(responses)
    page.emulate_media(media="print")
    expect(page.locator("#section-alarm-response")).to_be_visible()
    expect(page.locator("#table-alarm_response_slowest")).to_be_visible()
    expect(page.locator("#csv-alarm_response_sites")).to_be_hidden()
    page.emulate_media(media="screen")
    before = add_months(responses.month, -1)
    page.goto(f"{app_server.url}/dashboards/report?month={before:%Y-%m}")
    expect(page.locator("#alarm-response-empty")).to_have_text(
        "Inga larm som krävde insats under perioden."
    )
    expect(page.locator("#section-alarm-response table")).to_have_count(0)
    assert errors == []


def test_one_site_in_english_and_an_empty_period(
    browser_page: RecordedPage, app_server: AppServer, manager: str, responses: Responses
) -> None:
    """The site filter narrows the section to its site; English words and numbers; a period
    without responses says so and shows no tables."""
    page = browser_page.page
    open_dashboards(page, app_server, manager, f"?period=last_month&site={responses.site_a}")
    assert column(page, "alarm_response_sites", 0) == [responses.name_a]
    page.locator("#language-link").click()
    assert "lang=en" in page.url
    expect(page.locator("#h-alarm-response")).to_have_text("Alarm response")
    expect(page.locator("#alarm-response-summary li")).to_have_text(
        f"{responses.name_a}: 5 alarms. Contact (accepted): 4, median 3 min, within 5 min:"
        f" 75.0{NBSP}%. On site: 3, median 25 min, within 30 min: 66.7{NBSP}%; 2 proved by the"
        " lock, 1 recorded by hand."
    )
    headers = page.locator("#table-alarm_response_sites thead th").all_text_contents()
    assert headers[5] == "Contact promise"
    assert column(page, "alarm_response_slowest", 8)[0] == "Help given"
    page.goto(f"{app_server.url}/dashboards?period=last_month&site={responses.site_b}&lang=en")
    assert column(page, "alarm_response_sites", 5) == ["no promise set — measured only"]
    before = add_months(responses.month, -3)
    last = add_months(before, 1) - timedelta(days=1)
    page.goto(f"{app_server.url}/dashboards?since={before}&until={last}&lang=en")
    expect(page.locator("#alarm-response-empty")).to_have_text(
        "No alarms that needed a response in the period."
    )
    expect(page.locator("#alarm-response-summary")).to_have_count(0)
    expect(page.locator("#section-alarm-response table")).to_have_count(0)


def test_a_site_limited_manager_sees_only_their_sites_responses(
    browser_page: RecordedPage, app_server: AppServer, responses: Responses, database_url: str,
    seeded: SeededRegistry, test_token: str,
) -> None:  # fmt: skip
    """A manager limited to site B gets B's figures and slowest only, on the page and in the
    CSV; site A is a 404 for the CSV as for the page."""
    page = browser_page.page
    limited = add_user(database_url, seeded.org_id, f"mats-{test_token}", "manager")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO user_sites (user_id, site_id)"
            " SELECT id, %s FROM users WHERE username = %s",
            (responses.site_b, limited),
        )
    open_dashboards(page, app_server, limited, "?period=last_month")
    assert column(page, "alarm_response_sites", 0) == [responses.name_b]
    assert column(page, "alarm_response_slowest", 1) == [responses.name_b]
    text = page.request.get(
        f"{app_server.url}/dashboards/export/alarm_response_slowest.csv?period=last_month"
    ).text()
    assert responses.name_a not in text
    answer = page.request.get(
        f"{app_server.url}/dashboards/export/alarm_response_sites.csv?site={responses.site_a}"
    )
    assert answer.status == 404
    assert responses.name_a not in answer.text()
