"""The residences page in a real chromium: a manager adds a residence, records its supervision
plan and changes it (two versions, both kept and audited), records an absence and ends it; a
caregiver records absences but cannot plan; a technician has no way in."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from playwright.sync_api import Page, expect

from carewatch.passwords import hash_password
from dashboards.formatting import DASH
from tests.browser.conftest import PASSWORD, AppServer, RecordedPage, sign_in
from tests.fixtures.services import SeededRegistry

pytestmark = pytest.mark.browser


def add_user(database_url: str, org_id: str, username: str, role: str) -> str:
    """A user of ``org_id`` (every site) who signs in with PASSWORD."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, org_id, role, password_hash) VALUES (%s, %s, %s, %s)",
            (username, org_id, role, hash_password(PASSWORD)),
        )
    return username


@pytest.fixture
def planner(seeded: SeededRegistry, database_url: str, test_token: str) -> str:
    """A manager of the seeded organisation: managers plan supervision."""
    return add_user(database_url, seeded.org_id, f"mona-{test_token}", "manager")


@pytest.fixture
def residence(seeded: SeededRegistry, database_url: str) -> int:
    """Residence "Lgh 7" at the seeded site with its camera, and no plan yet."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO residences (site_id, label, external_ref) VALUES (%s, 'Lgh 7', 'ÄR-7')"
            " RETURNING id",
            (seeded.site_id,),
        ).fetchone()
        assert row is not None
        conn.execute(
            "UPDATE devices SET residence_id = %s WHERE id = %s",
            (row[0], seeded.device("safety_camera")),
        )
    residence_id: int = row[0]
    return residence_id


def rows(database_url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()


def save_plan(page: Page, times: str, window_min: str = "15") -> None:
    page.get_by_label("Tillsynstider").fill(times)
    page.get_by_label("Fönster kring varje tid (± minuter)").fill(window_min)
    page.get_by_role("button", name="Spara ny version").click()


def test_a_manager_adds_a_residence_and_records_two_versions_of_its_plan(
    browser_page: RecordedPage,
    app_server: AppServer,
    planner: str,
    seeded: SeededRegistry,
    database_url: str,
) -> None:
    """The residence is added; a plan with checks 22:00 and 02:00 is in force; a change is a
    second version, both listed and audited; the list shows the plan in force."""
    page = browser_page.page
    sign_in(page, app_server.url, planner)
    page.get_by_role("link", name="Bostäder").click()
    expect(page.locator("#residences-count")).to_have_text("Inga bostäder ännu.")
    page.get_by_label("Enhet/boende").select_option(seeded.site_id)
    page.get_by_label("Bostadens namn").fill("Lgh 21")
    page.get_by_label("Extern referens (valfri)").fill("ÄR-2026-21")
    page.get_by_role("button", name="Lägg till bostad").click()
    expect(page.get_by_role("heading", name="Bostad Lgh 21")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("Bostaden är tillagd.")
    expect(page.locator("#plan-in-force")).to_contain_text("Ingen plan")
    residence_id = int(page.locator("main").get_attribute("data-residence") or "0")
    assert rows(database_url, "SELECT label, external_ref FROM residences WHERE id = %s",
                residence_id) == [("Lgh 21", "ÄR-2026-21")]  # fmt: skip

    save_plan(page, "22:00, 2:00")
    expect(page.get_by_role("status")).to_contain_text("En ny version av planen är sparad")
    expect(page.locator("#plan-in-force")).to_contain_text("22:00, 02:00 · alla nätter · ±15 min")
    expect(page.locator("#plan-history tbody tr")).to_have_count(1)
    # The form shows the version in force: the next change starts from it.
    expect(page.get_by_label("Tillsynstider")).to_have_value("22:00, 02:00")

    page.get_by_label("lördag").uncheck()
    page.get_by_label("Ring först, sedan besök").check()
    save_plan(page, "22:00, 02:00, 05:00", window_min="20")
    history = page.locator("#plan-history tbody tr")
    expect(history).to_have_count(2)
    expect(history.first).to_contain_text("22:00, 02:00, 05:00")
    expect(history.first).to_contain_text("gäller")
    expect(history.first).to_contain_text("Ring först, sedan besök")
    expect(history.nth(1)).to_contain_text("22:00, 02:00")
    expect(page.locator("#plan-in-force")).to_contain_text("mån, tis, ons, tor, fre, sön · ±20 min")

    versions = rows(
        database_url,
        "SELECT to_char(check_times[1], 'HH24:MI'), array_length(check_times, 1), weekdays,"
        " window_s, follow_up, recorded_by FROM supervision_plans WHERE residence_id = %s"
        " ORDER BY id",
        residence_id,
    )
    assert versions == [
        ("22:00", 2, [0, 1, 2, 3, 4, 5, 6], 900, "physical_visit", planner),
        ("22:00", 3, [0, 1, 2, 3, 4, 6], 1200, "phone_then_visit", planner),
    ]
    actions = rows(
        database_url,
        "SELECT action, username FROM audit_log WHERE residence_id = %s ORDER BY id",
        residence_id,
    )
    assert actions == [
        ("residence.create", planner),
        ("plan.change", planner),
        ("plan.change", planner),
    ]

    page.get_by_role("link", name="Alla bostäder").click()
    row = page.locator(f"tr[data-residence='{residence_id}']")
    expect(row.locator(".ref")).to_have_text("ÄR-2026-21")
    expect(row.locator(".plan")).to_contain_text("22:00, 02:00, 05:00")


def test_a_plan_the_api_would_refuse_is_refused_with_the_form_kept(
    browser_page: RecordedPage, app_server: AppServer, planner: str, residence: int
) -> None:
    """A check time that does not exist is refused, nothing is recorded, what was typed stays;
    the page keeps its language across the post."""
    page = browser_page.page
    sign_in(page, app_server.url, planner)
    page.goto(f"{app_server.url}/residences/{residence}?lang=en")
    page.get_by_label("Check times").fill("22:00, 25:00")
    page.get_by_role("button", name="Save new version").click()
    expect(page.get_by_role("alert")).to_contain_text("Not saved: check_times.1")
    expect(page.get_by_label("Check times")).to_have_value("22:00, 25:00")
    expect(page.locator("#no-history")).to_have_text("No plan")
    page.get_by_label("Check times").fill("23:00")
    page.get_by_role("button", name="Save new version").click()
    expect(page.get_by_role("status")).to_contain_text("A new version of the plan was saved")
    expect(page.locator("html")).to_have_attribute("lang", "en")


def test_an_absence_is_recorded_and_ended(
    browser_page: RecordedPage,
    app_server: AppServer,
    planner: str,
    residence: int,
    database_url: str,
) -> None:
    """Recorded from now until ended, it is current on the residence and in the list; ended,
    it is over, and both are audited."""
    page = browser_page.page
    sign_in(page, app_server.url, planner)
    page.goto(f"{app_server.url}/residences")
    row = page.locator(f"tr[data-residence='{residence}']")
    expect(row.locator(".devices")).to_contain_text("safety_camera")
    expect(row.locator(".absence")).to_have_text(DASH)
    row.get_by_role("link", name="Lgh 7").click()
    expect(page.locator("#no-absences")).to_be_visible()
    page.get_by_label("Orsak").select_option("hospital")
    page.get_by_label("Anteckning").last.fill("Akut till sjukhus")
    page.get_by_role("button", name="Registrera frånvaro").click()
    expect(page.get_by_role("status")).to_have_text("Frånvaron är registrerad.")
    absence = page.locator("#absences tbody tr")
    expect(absence).to_have_count(1)
    expect(absence.locator(".state")).to_have_text("Pågår")
    expect(absence).to_contain_text("tills vidare")
    page.get_by_role("link", name="Alla bostäder").click()
    expect(page.locator(f"tr[data-residence='{residence}'] .absence")).to_have_text(
        "Sjukhus, tills vidare"
    )

    page.goto(f"{app_server.url}/residences/{residence}")
    page.get_by_role("button", name="Avsluta nu").click()
    expect(page.get_by_role("status")).to_have_text("Frånvaron är avslutad.")
    expect(page.locator("#absences tbody tr .state")).to_have_text("Avslutad")
    expect(page.get_by_role("button", name="Avsluta nu")).to_have_count(0)
    stored = rows(
        database_url,
        "SELECT reason, note, ended_at IS NOT NULL FROM absences WHERE residence_id = %s",
        residence,
    )
    assert stored == [("hospital", "Akut till sjukhus", True)]
    actions = rows(
        database_url,
        "SELECT action FROM audit_log WHERE residence_id = %s ORDER BY id",
        residence,
    )
    assert actions == [("absence.create",), ("absence.end",)]


def test_a_caregiver_records_an_absence_but_cannot_plan(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    residence: int,
    database_url: str,
) -> None:
    """Care staff see the plan without its form, record an absence, and a plan or a residence
    posted anyway is refused (403) with nothing recorded."""
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    # Not in their navigation (the page is for planning), but they may open it.
    expect(page.locator("a.nav-link[href='/residences']")).to_have_count(0)
    page.goto(f"{app_server.url}/residences")
    expect(page.locator("#add-form")).to_have_count(0)
    page.get_by_role("link", name="Lgh 7").click()
    expect(page.locator("#plan-read-only")).to_be_visible()
    expect(page.locator("#plan-form")).to_have_count(0)
    page.get_by_label("Orsak").select_option("travel")
    page.get_by_role("button", name="Registrera frånvaro").click()
    expect(page.locator("#absences tbody tr .state")).to_have_text("Pågår")

    plan = page.request.post(
        f"{app_server.url}/residences/{residence}/plan",
        form={"check_times": "22:00", "weekday": "0", "window_min": "15", "retry_min": "15",
              "follow_up": "physical_visit"},
        max_redirects=0,
    )  # fmt: skip
    assert plan.status == 403
    created = page.request.post(
        f"{app_server.url}/residences", form={"site": "x", "label": "Lgh 99"}, max_redirects=0
    )
    assert created.status == 403
    assert rows(database_url, "SELECT count(*) FROM supervision_plans") == [(0,)]
    assert rows(database_url, "SELECT count(*) FROM residences") == [(1,)]


def test_a_technician_and_a_stranger_get_no_residence(
    browser_page: RecordedPage,
    app_server: AppServer,
    planner: str,
    seeded: SeededRegistry,
    database_url: str,
    test_token: str,
) -> None:
    """Technicians have no way in (403); a residence of no site of the user's is not found
    (404), whether read or posted to."""
    page = browser_page.page
    technician = add_user(database_url, seeded.org_id, f"tim-{test_token}", "technician")
    sign_in(page, app_server.url, technician)
    response = page.goto(f"{app_server.url}/residences")
    assert response is not None
    assert response.status == 403
    expect(page.locator("main")).to_contain_text("vårdpersonal, chefer och administratörer")
    page.context.clear_cookies()
    sign_in(page, app_server.url, planner)
    response = page.goto(f"{app_server.url}/residences/999999")
    assert response is not None
    assert response.status == 404
    posted = page.request.post(
        f"{app_server.url}/residences/999999/absences", form={"reason": "other"}
    )
    assert posted.status == 404
