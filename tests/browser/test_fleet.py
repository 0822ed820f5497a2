"""The fleet pages in a real chromium: the summary and list, a filter, sorting, a device's page
with its battery chart and events, a phone screen, and no way in for a caregiver."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect
from psycopg.types.json import Jsonb

from carewatch.passwords import hash_password
from tests.browser.conftest import PASSWORD, PHONE, AppServer, RecordedPage, sign_in
from tests.fixtures.alerts import insert_alert
from tests.fixtures.services import SeededRegistry

pytestmark = pytest.mark.browser

NOW = datetime.now(UTC)
DASH = "\N{EN DASH}"


@pytest.fixture
def technician(seeded: SeededRegistry, database_url: str, test_token: str) -> str:
    """A technician of the seeded organisation who signs in with PASSWORD."""
    username = f"tove-{test_token}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, org_id, role, password_hash)"
            " VALUES (%s, %s, 'technician', %s)",
            (username, seeded.org_id, hash_password(PASSWORD)),
        )
    return username


def heartbeat(conn: psycopg.Connection[Any], device_id: str, at: datetime, data: object) -> None:
    conn.execute(
        "INSERT INTO events (time, received_at, device_id, event_id, type, data)"
        " VALUES (%s, %s, %s, %s, 'heartbeat', %s)",
        (at, at, device_id, f"hb-{at.timestamp():.0f}", Jsonb(data)),
    )


@pytest.fixture
def fleet(seeded: SeededRegistry, database_url: str) -> SeededRegistry:
    """Of the seeded devices (3 of every kind): 3 online (a lock at 15 % that lost 2 % a day
    for 30 days), a lock offline for 3 hours, the rest never seen since onboarding."""
    lock, offline_lock = seeded.device("door_lock"), seeded.device("door_lock", 1)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for device_id, online, last_seen, battery in (
            (lock, True, NOW, 15),
            (offline_lock, False, NOW - timedelta(hours=3), 50),
            (seeded.device("safety_camera"), True, NOW, None),
            (seeded.device("alarm_button"), True, NOW, 80),
        ):
            conn.execute(
                "UPDATE devices SET online = %s, last_seen = %s, battery = %s, firmware = '2.1'"
                " WHERE id = %s",
                (online, last_seen, battery, device_id),
            )
        for days_ago in range(30):
            at = NOW - timedelta(days=days_ago, hours=1)
            heartbeat(conn, lock, at, {"battery": 15 + 2 * days_ago})
        for minutes_ago in range(60):
            heartbeat(conn, lock, NOW - timedelta(minutes=minutes_ago, seconds=30), {"rssi": -50})
    insert_alert(database_url, lock, "battery_low", "warning")
    return seeded


def open_fleet(page: Page, app_server: AppServer, username: str, query: str = "") -> None:
    sign_in(page, app_server.url, username)
    page.goto(f"{app_server.url}/fleet{query}")


def row_ids(page: Page) -> list[str]:
    ids: list[str] = page.locator("#fleet-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.id)"
    )
    return ids


def test_fleet_lists_every_device_with_a_summary(
    browser_page: RecordedPage, app_server: AppServer, technician: str, fleet: SeededRegistry
) -> None:
    """The summary counts offline, low battery and never seen; each row shows health and trend."""
    page = browser_page.page
    open_fleet(page, app_server, technician)
    expect(page.get_by_role("heading", name="Carewatch Enheter")).to_be_visible()
    total = len(fleet.all_devices())  # every kind of the catalog, DEVICES_PER_KIND each
    expect(page.locator("#summary-total")).to_have_text(f"{total} enheter")
    expect(page.locator("#summary-offline")).to_have_text("1 offline")
    expect(page.locator("#summary-battery")).to_have_text("1 med batteri under 20 %")
    expect(page.locator("#summary-never-seen")).to_have_text(
        f"{total - 4} aldrig hörda sedan installation"
    )
    assert sorted(row_ids(page)) == sorted(fleet.all_devices())
    lock = page.locator(f"tr[data-id='{fleet.device('door_lock')}']")
    expect(lock.locator(".status")).to_have_text("Online")
    expect(lock.locator(".battery .battery-value")).to_have_text("15 %")
    expect(lock.locator(".battery .trend")).to_have_text("-14 på 7 dygn")
    expect(lock.locator(".battery svg.sparkline polyline")).to_have_count(1)
    expect(lock.locator(".alerts")).to_have_text("1")
    expect(lock.locator(".label")).to_have_text("Lgh 1")
    expect(lock.locator(".kind")).to_have_text("Nyckelfritt lås")
    offline = page.locator(f"tr[data-id='{fleet.device('door_lock', 1)}']")
    # Seeded 3 h before the fleet fixture: the browser tests before this one may take minutes.
    expect(offline.locator(".status")).to_have_text(re.compile(r"Offline i 3 h \d{1,2} min"))
    never = page.locator(f"tr[data-id='{fleet.device('companion_robot')}']")
    expect(never.locator(".status")).to_have_text("Aldrig hörd")
    expect(never.locator(".last-seen")).to_have_text(DASH)


def test_filters_are_query_parameters(
    browser_page: RecordedPage, app_server: AppServer, technician: str, fleet: SeededRegistry
) -> None:
    """Choosing a status and a kind in the form narrows the list and lands in the URL."""
    page = browser_page.page
    open_fleet(page, app_server, technician)
    page.get_by_label("Status").select_option("offline")
    page.get_by_role("button", name="Visa").click()
    expect(page).to_have_url(f"{app_server.url}/fleet?site=&kind=&status=offline")
    assert row_ids(page) == [fleet.device("door_lock", 1)]
    expect(page.locator("#fleet-count")).to_have_text(f"Visar 1{DASH}1 av 1")
    page.get_by_label("Status").select_option("active")
    page.get_by_label("Typ").select_option("door_lock")
    page.get_by_label("Bara batteri under 20 %").check()
    page.get_by_role("button", name="Visa").click()
    assert row_ids(page) == [fleet.device("door_lock")]
    # The summary's links are filters too, and a bookmark of one opens the same view.
    page.goto(f"{app_server.url}/fleet")
    page.locator("#summary-never-seen a").click()
    never_seen = len(fleet.all_devices()) - 4
    expect(page.locator("#fleet-count")).to_have_text(f"Visar 1{DASH}{never_seen} av {never_seen}")


def test_sorting_by_a_column(
    browser_page: RecordedPage, app_server: AppServer, technician: str, fleet: SeededRegistry
) -> None:
    """A column header sorts by it, ascending first; clicking again turns the order round."""
    page = browser_page.page
    open_fleet(page, app_server, technician)
    header = page.locator("th[data-column='battery']")
    header.get_by_role("link").click()
    expect(header).to_have_attribute("aria-sort", "ascending")
    assert row_ids(page)[:3] == [
        fleet.device("door_lock"), fleet.device("door_lock", 1), fleet.device("alarm_button"),
    ]  # fmt: skip
    header.get_by_role("link").click()
    expect(header).to_have_attribute("aria-sort", "descending")
    assert row_ids(page)[:3] == [
        fleet.device("alarm_button"), fleet.device("door_lock", 1), fleet.device("door_lock"),
    ]  # fmt: skip
    assert "sort=battery" in page.url
    assert "order=desc" in page.url


def test_device_page_has_a_battery_chart_and_recent_events(
    browser_page: RecordedPage, app_server: AppServer, technician: str, fleet: SeededRegistry
) -> None:
    """A device's page: facts, its open alert, a labelled 30-day battery chart in SVG, and its
    latest 50 events; the page breaks no rule of the Content-Security-Policy."""
    page = browser_page.page
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    lock = fleet.device("door_lock")
    open_fleet(page, app_server, technician)
    page.get_by_role("link", name=lock, exact=True).click()
    expect(page).to_have_url(f"{app_server.url}/fleet/{lock}")
    expect(page.get_by_role("heading", name=f"Enhet {lock}")).to_be_visible()
    expect(page.locator("#facts .battery")).to_have_text("15 % (-14 på 7 dygn)")
    expect(page.locator("#device-alerts li")).to_contain_text("Lågt batteri")
    chart = page.locator("svg#battery-chart")
    expect(chart).to_be_visible()
    expect(chart.locator("polyline.battery-line")).to_have_count(1)
    points = chart.locator("polyline.battery-line").get_attribute("points")
    assert points is not None
    assert len(points.split()) == 30  # one reading a day for 30 days
    expect(chart.locator("text.y-axis")).to_have_text("Batteri (%)")
    expect(chart.locator("text.x-axis")).to_have_text("Datum")
    expect(chart.locator("text.y-tick")).to_have_text(["0 %", "25 %", "50 %", "75 %", "100 %"])
    expect(chart.locator("desc")).to_have_text("Batterinivån gick från 73 % till 15 %.")
    rows = page.locator("#events-table tbody tr")
    expect(rows).to_have_count(50)
    expect(rows.first.locator(".type")).to_have_text("heartbeat")
    expect(rows.first.locator(".data")).to_have_text("rssi=-50")
    assert errors == []


def test_unknown_or_other_device_is_a_404_page(
    browser_page: RecordedPage, app_server: AppServer, technician: str, fleet: SeededRegistry
) -> None:
    """A device the technician cannot see gets a friendly 404 page."""
    page = browser_page.page
    sign_in(page, app_server.url, technician)
    response = page.goto(f"{app_server.url}/fleet/no-such-device")
    assert response is not None
    assert response.status == 404
    expect(page.get_by_role("heading", name="Enheten finns inte")).to_be_visible()


def test_caregiver_cannot_see_the_fleet(
    browser_page: RecordedPage, app_server: AppServer, caregiver: str, fleet: SeededRegistry
) -> None:
    """A caregiver gets a friendly 403 page, for the list and for a device, and no device data."""
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    for path in ("/fleet", f"/fleet/{fleet.device('door_lock')}"):
        response = page.goto(f"{app_server.url}{path}")
        assert response is not None
        assert response.status == 403
        expect(page.get_by_role("heading", name="Ingen åtkomst")).to_be_visible()
        expect(page.locator("table")).to_have_count(0)


def test_a_stranger_is_sent_to_the_login_form(
    browser_page: RecordedPage, app_server: AppServer, fleet: SeededRegistry
) -> None:
    """Without a session /fleet leads to the login form."""
    page = browser_page.page
    page.goto(f"{app_server.url}/fleet")
    expect(page).to_have_url(f"{app_server.url}/login")


@pytest.fixture
def phone_page(chromium: Browser, app_server: AppServer) -> Iterator[Page]:
    context = chromium.new_context(viewport=PHONE)  # type: ignore[arg-type]  # ViewportSize
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def test_phone_has_no_sideways_page_scroll(
    phone_page: Page, app_server: AppServer, technician: str, fleet: SeededRegistry
) -> None:
    """At 390 px the page never scrolls sideways: the table scrolls inside its own box."""
    open_fleet(phone_page, app_server, technician)
    expect(phone_page.locator("#fleet-table")).to_be_visible()
    for path in ("/fleet", f"/fleet/{fleet.device('door_lock')}"):
        phone_page.goto(f"{app_server.url}{path}")
        width = phone_page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], path
    scroller = phone_page.locator(".table-scroll").first
    assert scroller.evaluate("el => el.scrollWidth > el.clientWidth")


def test_a_device_shows_its_residence(
    browser_page: RecordedPage,
    app_server: AppServer,
    technician: str,
    fleet: SeededRegistry,
    database_url: str,
) -> None:
    """The list and the device's page name the residence a device belongs to; a dash if none."""
    camera = fleet.device("safety_camera")
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO residences (site_id, label) VALUES (%s, 'Lgh 7') RETURNING id",
            (fleet.site_id,),
        ).fetchone()
        assert row is not None
        conn.execute("UPDATE devices SET residence_id = %s WHERE id = %s", (row[0], camera))
    page = browser_page.page
    open_fleet(page, app_server, technician)
    expect(page.locator("#fleet-table thead th").nth(4)).to_have_text("Bostad")
    expect(page.locator(f"tr[data-id='{camera}'] .residence")).to_have_text("Lgh 7")
    expect(page.locator(f"tr[data-id='{fleet.device('door_lock')}'] .residence")).to_have_text(DASH)
    page.locator(f"tr[data-id='{camera}'] a").click()
    expect(page.locator("#facts .residence")).to_have_text("Lgh 7")
    page.goto(f"{app_server.url}/fleet/{camera}?lang=en")
    expect(page.locator("#facts dt").nth(3)).to_have_text("Residence")
