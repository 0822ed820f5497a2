"""The board's "Paused now" in a real chromium (+#11): a resident away and a camera in repair,
folded by default with their count, their ends in the site's own time, in both languages,
refreshed every minute, and WCAG 2.1 AA with the section open."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import psycopg
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    DESKTOP,
    PHONE,
    AppServer,
    RecordedPage,
    axe_run,
    format_violations,
    sign_in,
)
from tests.fixtures.services import SeededRegistry

pytestmark = pytest.mark.browser

# The site's zone: neither the browser's (New York, conftest) nor the board's alert times
# (Stockholm), so a time shown in it can only have come from the site.
HELSINKI = ZoneInfo("Europe/Helsinki")


@dataclass(frozen=True)
class Paused:
    absence_id: int
    expected_end: datetime
    camera: str
    repair_ends: datetime


@pytest.fixture
def paused(seeded: SeededRegistry, database_url: str) -> Paused:
    """Lgh 12 at the seeded site (in Helsinki time): its resident in hospital until tomorrow,
    its camera in repair for two hours; and an absence that is over, which is not shown."""
    camera = seeded.device("safety_camera")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE sites SET timezone = 'Europe/Helsinki' WHERE id = %s", (seeded.site_id,)
        )
        row = conn.execute(
            "INSERT INTO residences (site_id, label) VALUES (%s, 'Lgh 12') RETURNING id",
            (seeded.site_id,),
        ).fetchone()
        assert row is not None
        residence_id = row[0]
        conn.execute("UPDATE devices SET residence_id = %s WHERE id = %s", (residence_id, camera))
        absence = conn.execute(
            "INSERT INTO absences (residence_id, reason, starts_at, expected_end, note, created_by)"
            " VALUES (%s, 'hospital', now() - interval '2 hours', now() + interval '1 day',"
            " 'Akademiska', 'test') RETURNING id, expected_end",
            (residence_id,),
        ).fetchone()
        conn.execute(
            "INSERT INTO absences (residence_id, reason, starts_at, expected_end, created_by)"
            " VALUES (%s, 'travel', now() - interval '3 days', now() - interval '1 day', 'test')",
            (residence_id,),
        )
        window = conn.execute(
            "INSERT INTO device_maintenance (device_id, starts_at, ends_at, note, created_by)"
            " VALUES (%s, now() - interval '10 minutes', now() + interval '2 hours',"
            " 'byter lins', 'test') RETURNING ends_at",
            (camera,),
        ).fetchone()
    assert absence is not None
    assert window is not None
    return Paused(absence[0], absence[1], camera, window[0])


def pauses_loaded(page: Page) -> None:
    page.locator("body[data-pauses-loaded='true']").wait_for(state="attached")


def test_the_board_shows_who_is_away_and_what_is_in_repair(
    browser_page: RecordedPage, app_server: AppServer, caregiver: str, paused: Paused
) -> None:
    """Folded with its count; opened, the absent residence and the camera in repair with their
    ends in the site's time and their notes; the same in English."""
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    pauses_loaded(page)
    section = page.locator("details#pauses")
    expect(section).to_be_visible()
    expect(section).not_to_have_attribute("open", "")
    expect(section.locator("summary")).to_have_text("Pausat just nu (2)")
    absent = section.locator("li.pause-absent")
    repair = section.locator("li.pause-repair")
    expect(absent).to_be_hidden()

    section.locator("summary").click()
    expect(section).to_have_attribute("open", "")
    expect(page.get_by_role("heading", name="Frånvarande boende")).to_be_visible()
    expect(page.get_by_role("heading", name="Enheter på reparation")).to_be_visible()
    expect(absent).to_have_count(1)  # the absence that is over is not there
    expect(absent.locator(".pause-label")).to_have_text("Lgh 12")
    expect(absent.locator(".pause-what")).to_contain_text("Sjukhus, till ")
    until = absent.locator("time")
    expect(until).to_contain_text(f"{paused.expected_end.astimezone(HELSINKI):%H:%M}")
    assert datetime.fromisoformat(until.get_attribute("datetime") or "") == paused.expected_end
    expect(absent.locator(".pause-note")).to_have_text("Akademiska")

    expect(repair).to_have_count(1)
    expect(repair).to_have_attribute("data-device-id", paused.camera)
    expect(repair.locator(".pause-label")).to_have_text("Lgh 1")
    expect(repair.locator(".pause-kind")).to_have_text("Trygghetskamera")
    expect(repair.locator(".pause-residence")).to_have_text("Lgh 12")
    expect(repair.locator(".pause-what")).to_contain_text("på reparation till ")
    expect(repair.locator("time")).to_contain_text(
        f"{paused.repair_ends.astimezone(HELSINKI):%H:%M}"
    )
    expect(repair.locator(".pause-note")).to_have_text("byter lins")

    page.get_by_role("button", name="Switch to English").click()
    expect(section.locator("summary")).to_have_text("Paused now (2)")
    expect(page.get_by_role("heading", name="Residents away")).to_be_visible()
    expect(absent.locator(".pause-what")).to_contain_text("Hospital, until ")
    expect(repair.locator(".pause-kind")).to_have_text("Safety camera")
    expect(section).to_have_attribute("open", "")  # re-rendered, still open


def test_the_section_is_refreshed_every_minute(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    paused: Paused,
    database_url: str,
) -> None:
    """An absence ended elsewhere leaves the open board within a minute, without a reload."""
    page = browser_page.page
    page.clock.install()  # before the board's scripts run: its timers are then the test's
    sign_in(page, app_server.url, caregiver)
    pauses_loaded(page)
    summary = page.locator("details#pauses summary")
    expect(summary).to_have_text("Pausat just nu (2)")
    page.evaluate("window.__sameDocument = true")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE absences SET ended_at = now() WHERE id = %s", (paused.absence_id,))
    page.clock.fast_forward("01:01")
    expect(summary).to_have_text("Pausat just nu (1)")
    summary.click()
    expect(page.locator("li.pause-absent")).to_have_count(0)
    expect(page.get_by_role("heading", name="Frånvarande boende")).to_be_hidden()
    expect(page.locator("li.pause-repair")).to_have_count(1)
    assert page.evaluate("window.__sameDocument") is True


def test_nothing_paused_shows_no_section(
    browser_page: RecordedPage, app_server: AppServer, caregiver: str
) -> None:
    """With nothing paused the board shows no section: it stays about the alerts."""
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    pauses_loaded(page)
    expect(page.locator("details#pauses")).to_be_hidden()


def test_the_open_section_is_accessible(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    paused: Paused,
    axe_source: str,
) -> None:
    """axe-core finds no WCAG 2.1 A or AA violation with the section folded and open, at a
    desktop's and a phone's size, in Swedish and English."""
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    pauses_loaded(page)
    findings: list[str] = []

    def audit(state: str) -> None:
        for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(viewport)  # type: ignore[arg-type]  # a ViewportSize TypedDict
            violations = axe_run(page, axe_source)
            if violations:
                findings.append(f"{state} [{name}]:\n{format_violations(violations)}")

    audit("folded")
    page.locator("details#pauses summary").click()
    expect(page.locator("li.pause-repair")).to_be_visible()
    audit("open")
    page.get_by_role("button", name="Switch to English").click()
    expect(page.locator("details#pauses summary")).to_have_text("Paused now (2)")
    audit("open, English")
    assert findings == [], "\n".join(findings)
