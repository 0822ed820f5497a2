"""Night supervision on the managers' pages (+#11), in a real chromium: hand-built nights with
known verdicts at two sites with different minutes per visit, and the dashboard's section, its
CSV and the monthly report show exactly those figures with the assumptions beside them; a site
filter, a site-limited manager, English, and a period without plans.

The verdicts are written into ``supervision_checks`` as the gateway's supervision pass stores
them (tests/integration/test_supervision_summary_api.py proves the API counts them as
:func:`devices.supervision.tally` does), for nights of the last whole calendar month.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Page, expect

from carewatch import admin
from dashboards.usage import add_months
from devices.supervision import CheckState, Verdict, tally
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
# Site A's first night: every verdict the managers' figures count (as judge() sets the flags).
A_FIRST: Sequence[Verdict] = (
    Verdict(CheckState.DONE),
    Verdict(CheckState.DONE, not_seen=True),  # seen on the retry
    Verdict(CheckState.LATE),
    Verdict(CheckState.MISSED),
    Verdict(CheckState.PAUSED),
    Verdict(CheckState.VISIT_NEEDED, not_seen=True, visit_needed=True),
)
# Another residence, the same night: its camera failed and staff went instead.
A_FIRST_OTHER: Sequence[Verdict] = (
    Verdict(CheckState.VISITED, by_visit=True, camera_failed=True, visit_needed=True),
)
A_SECOND: Sequence[Verdict] = (
    Verdict(CheckState.LATE),
    Verdict(CheckState.DONE),
    Verdict(CheckState.DONE),
)
B_NIGHT: Sequence[Verdict] = (
    Verdict(CheckState.DONE),
    Verdict(CheckState.DONE),
    Verdict(CheckState.MISSED),
)
A_MINUTES, A_KEY_MINUTES = 25, 4  # site A's assumptions; site B keeps the defaults (20, 3)


@dataclass(frozen=True)
class Nights:
    """The nights written, and who they belong to."""

    month: date
    site_a: str
    site_b: str
    name_a: str
    name_b: str

    def night(self, index: int) -> str:
        return (self.month + timedelta(days=index)).isoformat()


def add_residence(conn: psycopg.Connection[Any], site: str, label: str) -> int:
    row = conn.execute(
        "INSERT INTO residences (site_id, label) VALUES (%s, %s) RETURNING id", (site, label)
    ).fetchone()
    assert row is not None
    residence_id: int = row[0]
    return residence_id


def store(
    conn: psycopg.Connection[Any], residence_id: int, night: date, verdicts: Sequence[Verdict]
) -> None:
    """The verdicts as the supervision pass stores them, one planned check each."""
    evening = datetime.combine(night, time(22), STOCKHOLM)
    for number, verdict in enumerate(verdicts):
        conn.execute(
            "INSERT INTO supervision_checks (residence_id, planned_at, night, state, not_seen,"
            " visit_needed, by_visit, camera_failed) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                residence_id,
                evening + timedelta(minutes=30 * number),
                night,
                verdict.state.value,
                verdict.not_seen,
                verdict.visit_needed,
                verdict.by_visit,
                verdict.camera_failed,
            ),
        )


@pytest.fixture
def nights(seeded: SeededRegistry, database_url: str, test_token: str) -> Nights:
    """Last month: site A's nights 3 and 10 (two residences), site B's night 5, two visits
    proved by site A's lock on night 3."""
    month = last_month()
    site_a, site_b = seeded.site_id, f"ek-{test_token}"
    name_a, name_b = f"Solgården {test_token}", f"Ekgården {test_token}"
    lock = seeded.device("door_lock")
    with psycopg.connect(database_url, autocommit=True) as conn:
        admin.ensure_site(conn, site_b, seeded.org_id, name_b)
        conn.execute(
            "UPDATE sites SET visit_minutes = %s, key_handling_minutes = %s WHERE id = %s",
            (A_MINUTES, A_KEY_MINUTES, site_a),
        )
        one, two = add_residence(conn, site_a, "Lgh 1"), add_residence(conn, site_a, "Lgh 2")
        store(conn, one, month + timedelta(days=2), A_FIRST)
        store(conn, two, month + timedelta(days=2), A_FIRST_OTHER)
        store(conn, one, month + timedelta(days=9), A_SECOND)
        store(conn, add_residence(conn, site_b, "Lgh 7"), month + timedelta(days=4), B_NIGHT)
        for residence, hour in ((one, 23), (two, 2)):  # 23:00 and 02:00: both night 3's
            day = month + timedelta(days=2 if hour > 12 else 3)
            conn.execute(
                "INSERT INTO physical_visits (residence_id, visited_at, source, lock_device_id)"
                " VALUES (%s, %s, 'lock', %s)",
                (residence, datetime.combine(day, time(hour), STOCKHOLM).astimezone(UTC), lock),
            )
    return Nights(month, site_a, site_b, name_a, name_b)


def counts(verdicts: Sequence[Verdict]) -> list[str]:
    """A tally's eight counts as the tables show them, in NightTally's order."""
    t = tally(verdicts)
    return [str(v) for v in (t.planned, t.paused, t.done_in_window, t.late, t.missed,
                             t.not_seen, t.visits_needed, t.replaced_by_visits)]  # fmt: skip


def rows(page: Page, table: str) -> list[list[str]]:
    found: list[list[str]] = page.locator(f"#table-{table} tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.children].map(c => c.textContent.trim()))"
    )
    return found


def minutes(value: int) -> str:
    return f"{value}{NBSP}min"


A_ALL = [*A_FIRST, *A_FIRST_OTHER, *A_SECOND]
SV_SUMMARY = (
    "13 planerade tillsyner: 8 gjorda med kamera (6 inom tidsfönstret, 2 sena), 2 missade, 2 där"
    " den boende inte syntes, 2 som krävde fysiskt besök och 1 som ersattes av besök för att"
    " kameran inte fungerade. Pausade för frånvaro: 1."
)
SV_EFFECT = (
    "Uppskattning: 8 fysiska nattbesök undvikna, 190 min (3,2 timmar) sparad personaltid;"
    " 2 besök med digitalt lås sparade 8 min nyckelhantering."
)


def test_dashboard_shows_the_nights_figures_and_the_assumptions(
    browser_page: RecordedPage, app_server: AppServer, manager: str, nights: Nights
) -> None:
    """Last month: the totals per site, the effect per site with each site's minutes beside it,
    the assumptions in words, and night by night the counts of the verdicts written."""
    page = browser_page.page
    errors = watch_console(page)
    open_dashboards(page, app_server, manager, "?period=last_month")
    section = page.locator("#section-supervision")
    expect(section.get_by_role("heading", name="Nattillsyn")).to_be_visible()
    last = add_months(nights.month, 1) - timedelta(days=1)
    expect(section.locator(".section-summary")).to_contain_text(
        f"nätterna {nights.month.isoformat()}\N{EN DASH}{last.isoformat()}"
    )
    expect(page.locator("#supervision-summary")).to_have_text(SV_SUMMARY)
    expect(page.locator("#supervision-empty")).to_have_count(0)
    # Sites by name: Ekgården before Solgården.
    assert rows(page, "supervision_totals") == [
        [nights.name_b, *counts(B_NIGHT)],
        [nights.name_a, *counts(A_ALL)],
    ]
    expect(page.locator("#supervision-effect-summary")).to_have_text(SV_EFFECT)
    assert rows(page, "supervision_effect") == [
        [nights.name_b, "2", minutes(20), minutes(40), "0", minutes(3), minutes(0)],
        [nights.name_a, "6", minutes(A_MINUTES), minutes(6 * A_MINUTES), "2",
         minutes(A_KEY_MINUTES), minutes(2 * A_KEY_MINUTES)],
    ]  # fmt: skip
    headers = page.locator("#table-supervision_effect thead th").all_text_contents()
    assert headers[2] == "Tid per nattbesök, antagande"
    assert headers[5] == "Nyckelhantering per besök, antagande"
    expect(page.locator("#supervision-assumptions")).to_contain_text("Antaganden, per boende")
    # Night by night, behind "show": the nights with checks only, the sites of a night together.
    nights_table = page.locator("#table-supervision_nights")
    expect(nights_table).to_be_hidden()
    page.locator("#supervision-nights summary").click()
    expect(nights_table).to_be_visible()
    assert rows(page, "supervision_nights") == [
        [nights.night(2), nights.name_a, *counts([*A_FIRST, *A_FIRST_OTHER]), "2"],
        [nights.night(4), nights.name_b, *counts(B_NIGHT), "0"],
        [nights.night(9), nights.name_a, *counts(A_SECOND), "0"],
    ]
    assert errors == []


def test_the_csv_has_the_nights_with_their_effect_and_the_assumptions(
    browser_page: RecordedPage, app_server: AppServer, manager: str, nights: Nights
) -> None:
    """The nights' CSV: Excel's format (BOM, ``;``, CRLF, decimal comma), a row per night and
    site with each night's effect and both of the site's assumptions; the site filter holds."""
    page = browser_page.page
    open_dashboards(page, app_server, manager, "?period=last_month")
    page.locator("#supervision-nights summary").click()
    name, text = read_download(page, "#csv-supervision_nights")
    last = add_months(nights.month, 1) - timedelta(days=1)
    assert name == f"carewatch-supervision_nights-all-{nights.month}-{last}.csv"
    assert text.startswith("\ufeff")
    lines = text.removeprefix("\ufeff").split("\r\n")
    assert lines[0].split(";")[-5:] == [
        "Undvikna nattbesök", "Sparad personaltid (min)", "Sparad nyckelhantering (min)",
        "Tid per nattbesök, antagande (min)", "Nyckelhantering per besök, antagande (min)",
    ]  # fmt: skip
    first = [*A_FIRST, *A_FIRST_OTHER]
    assert lines[1:] == [
        ";".join([nights.night(2), nights.name_a, *counts(first), "2", "3", "75,0", "8,0",
                  "25,0", "4,0"]),
        ";".join([nights.night(4), nights.name_b, *counts(B_NIGHT), "0", "2", "40,0", "0,0",
                  "20,0", "3,0"]),
        ";".join([nights.night(9), nights.name_a, *counts(A_SECOND), "0", "3", "75,0", "0,0",
                  "25,0", "4,0"]),
        "",
    ]  # fmt: skip
    # The effect per site downloads too, its assumptions beside it.
    _, effect = read_download(page, "#csv-supervision_effect")
    assert effect.removeprefix("\ufeff").split("\r\n")[1] == (
        f"{nights.name_b};2;20,0;40,0;0;3,0;0,0"
    )
    # One site: its rows only.
    only_b = page.request.get(
        f"{app_server.url}/dashboards/export/supervision_nights.csv"
        f"?period=last_month&site={nights.site_b}"
    )
    assert only_b.ok
    assert only_b.headers["content-disposition"].startswith(
        f'attachment; filename="carewatch-supervision_nights-{nights.site_b}-'
    )
    b_lines = only_b.body().decode("utf-8").removeprefix("\ufeff").split("\r\n")
    assert [line.split(";")[1] for line in b_lines[1:-1]] == [nights.name_b]
    assert page.request.get(
        f"{app_server.url}/dashboards/export/supervision_weeks.csv"
    ).status == 422  # fmt: skip


def test_the_monthly_report_has_the_same_figures_in_print(
    browser_page: RecordedPage, app_server: AppServer, manager: str, nights: Nights
) -> None:
    """The month's report shows the same section with the nights' table open; printed, the
    figures and the assumptions remain and the download links go."""
    page = browser_page.page
    errors = watch_console(page)
    sign_in_and_open(page, app_server, manager, f"/dashboards/report?month={nights.month:%Y-%m}")
    expect(page.locator("#supervision-summary")).to_have_text(SV_SUMMARY)
    expect(page.locator("#supervision-effect-summary")).to_have_text(SV_EFFECT)
    expect(page.locator("#table-supervision_nights")).to_be_visible()
    assert [row[0] for row in rows(page, "supervision_nights")] == [
        nights.night(2), nights.night(4), nights.night(9),
    ]  # fmt: skip
    assert rows(page, "supervision_effect")[1][2] == minutes(A_MINUTES)
    page.emulate_media(media="print")
    expect(page.locator("#section-supervision")).to_be_visible()
    expect(page.locator("#supervision-assumptions")).to_be_visible()
    expect(page.locator("#table-supervision_effect")).to_be_visible()
    expect(page.locator("#csv-supervision_nights")).to_be_hidden()
    page.emulate_media(media="screen")
    # The month before had no plans: said in words, not as a row of zeros.
    before = add_months(nights.month, -1)
    page.goto(f"{app_server.url}/dashboards/report?month={before:%Y-%m}")
    expect(page.locator("#supervision-empty")).to_have_text(
        "Inga planerade tillsyner under perioden: inget boende hade en tillsynsplan för de här"
        " nätterna."
    )
    expect(page.locator("#section-supervision table")).to_have_count(0)
    assert errors == []


def sign_in_and_open(page: Page, app_server: AppServer, username: str, path: str) -> None:
    open_dashboards(page, app_server, username)
    page.goto(f"{app_server.url}{path}")


def test_one_site_english_and_an_empty_period(
    browser_page: RecordedPage, app_server: AppServer, manager: str, nights: Nights
) -> None:
    """The site filter narrows the section to its site; English words; a period without plans
    says so and shows no tables and no estimate."""
    page = browser_page.page
    open_dashboards(page, app_server, manager, f"?period=last_month&site={nights.site_a}")
    assert column(page, "supervision_totals", 0) == [nights.name_a]
    expect(page.locator("#supervision-summary")).to_contain_text("10 planerade tillsyner")
    page.locator("#language-link").click()
    assert "lang=en" in page.url
    expect(page.locator("#h-supervision")).to_have_text("Night supervision")
    expect(page.locator("#supervision-effect-summary")).to_have_text(
        "Estimate: 6 physical night visits avoided, 150 min (2.5 hours) of staff time saved;"
        " 2 visits proved by a digital lock saved 8 min of key handling."
    )
    headers = page.locator("#table-supervision_effect thead th").all_text_contents()
    assert headers[2] == "Minutes per night visit, assumed"
    before = add_months(nights.month, -3)
    last = add_months(before, 1) - timedelta(days=1)
    page.goto(f"{app_server.url}/dashboards?since={before}&until={last}")
    expect(page.locator("#supervision-empty")).to_be_visible()
    expect(page.locator("#supervision-summary")).to_have_count(0)
    expect(page.locator("#supervision-effect-summary")).to_have_count(0)
    expect(page.locator("#section-supervision table")).to_have_count(0)


def test_a_site_limited_manager_sees_only_their_sites_nights(
    browser_page: RecordedPage, app_server: AppServer, nights: Nights, database_url: str,
    seeded: SeededRegistry, test_token: str,
) -> None:  # fmt: skip
    """A manager limited to site B gets B's figures only, on the page and in the CSV; site A is
    a 404 for the CSV as for the page."""
    page = browser_page.page
    limited = add_user(database_url, seeded.org_id, f"mats-{test_token}", "manager")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO user_sites (user_id, site_id)"
            " SELECT id, %s FROM users WHERE username = %s",
            (nights.site_b, limited),
        )
    open_dashboards(page, app_server, limited, "?period=last_month")
    assert column(page, "supervision_totals", 0) == [nights.name_b]
    expect(page.locator("#supervision-effect-summary")).to_contain_text(
        "2 fysiska nattbesök undvikna, 40 min"
    )
    text = page.request.get(
        f"{app_server.url}/dashboards/export/supervision_nights.csv?period=last_month"
    ).text()
    assert nights.name_a not in text
    answer = page.request.get(
        f"{app_server.url}/dashboards/export/supervision_nights.csv?site={nights.site_a}"
    )
    assert answer.status == 404
    assert nights.name_a not in answer.text()
