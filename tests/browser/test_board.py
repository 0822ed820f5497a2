"""The alert board in a real chromium: sign-in, live updates, acknowledge and resolve, the
connection-lost banner, language, a phone screen, and nothing loaded from anywhere else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import (
    DESKTOP,
    PASSWORD,
    PHONE,
    AppServer,
    RecordedPage,
    sign_in,
    wait_live,
)
from tests.fixtures.alerts import insert_alert, seed_full_board
from tests.fixtures.services import SeededRegistry

pytestmark = pytest.mark.browser

STOCKHOLM = ZoneInfo("Europe/Stockholm")


def card(page: Page, alert_id: int) -> Locator:
    return page.locator(f"li.card[data-id='{alert_id}']")


def alert_row(database_url: str, alert_id: int) -> tuple[str, str | None, str | None]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT state, acknowledged_by, resolved_by FROM alerts WHERE id = %s", (alert_id,)
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_sign_in_leads_to_the_board(
    browser_page: RecordedPage, app_server: AppServer, caregiver: str
) -> None:
    """The board sends a stranger to the login form; the right password leads back to it."""
    page = browser_page.page
    page.goto(f"{app_server.url}/")
    expect(page).to_have_url(f"{app_server.url}/login")
    expect(page.get_by_role("heading", name="Logga in på Carewatch")).to_be_visible()
    sign_in(page, app_server.url, caregiver)
    expect(page.get_by_role("heading", name="Carewatch Larmtavla")).to_be_visible()
    expect(page.locator("#summary")).to_have_text("0 aktiva larm")
    expect(page.locator("#empty")).to_have_text("Inga aktiva larm just nu.")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "carewatch_session"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/")


def test_wrong_password_shows_the_form_again_with_a_message(
    browser_page: RecordedPage, app_server: AppServer, caregiver: str
) -> None:
    """A wrong password gives the form back with a clear message, the username kept, no cookie."""
    page = browser_page.page
    page.goto(f"{app_server.url}/login")
    page.get_by_label("Användarnamn").fill(caregiver)
    page.get_by_label("Lösenord").fill(PASSWORD + "x")
    page.get_by_role("button", name="Logga in").click()
    expect(page.get_by_role("alert")).to_have_text("Fel användarnamn eller lösenord.")
    expect(page.get_by_label("Användarnamn")).to_have_value(caregiver)
    assert page.context.cookies() == []


def test_sign_out_ends_the_session(
    browser_page: RecordedPage, app_server: AppServer, caregiver: str
) -> None:
    """Logga ut revokes the session: back at the login form, and the board is closed again."""
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    page.get_by_role("button", name="Logga ut").click()
    expect(page).to_have_url(f"{app_server.url}/login")
    page.goto(f"{app_server.url}/")
    expect(page).to_have_url(f"{app_server.url}/login")


def test_a_new_alert_appears_on_the_open_board_without_reload(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    seeded: SeededRegistry,
    database_url: str,
) -> None:
    """An alert written as the gateway writes it shows up live, in words, in Stockholm time."""
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    page.evaluate("window.__sameDocument = true")
    requests_before = len(browser_page.requests)
    opened_at = datetime.now(UTC) - timedelta(seconds=40)
    alert_id = insert_alert(
        database_url, seeded.device("alarm_button"), "alarm_pressed", "critical",
        opened_at=opened_at, count=2,
    ).alert_id  # fmt: skip

    new = card(page, alert_id)
    expect(new.locator(".rule")).to_have_text("Trygghetslarm utlöst")
    expect(new.locator(".severity")).to_have_text("Kritisk")
    expect(new.locator(".label")).to_have_text("Lgh 1")
    expect(new.locator(".site")).to_have_text(f"Solgården {seeded.org_id.removeprefix('org-')}")
    expect(new.locator(".kind")).to_have_text("Trygghetslarm")
    expect(new.locator(".count")).to_contain_text("2 gånger")
    expect(new.locator(".since")).to_have_text(f"sedan {opened_at.astimezone(STOCKHOLM):%H:%M}")
    # An alarm press is a response (+#12): taken, not acknowledged.
    expect(new.get_by_role("button", name="Ta larmet")).to_be_visible()
    expect(page.locator("#announcer")).to_have_text(
        f"Nytt larm: Trygghetslarm utlöst, Lgh 1, Solgården {seeded.org_id.removeprefix('org-')}"
    )
    expect(page.locator("#summary")).to_have_text("1 aktivt larm")
    # How long it has been open moves on by itself.
    duration = new.locator(".duration")
    first = duration.inner_text()
    assert first.startswith("Öppet ")
    assert first.endswith(" s")
    expect(duration).not_to_have_text(first, timeout=8000)
    # The same document all along, and the list was not fetched again: the stream brought it.
    assert page.evaluate("window.__sameDocument") is True
    refetched = [u for u in browser_page.requests[requests_before:] if "/api/v1/alerts" in u]
    assert refetched == []


def test_a_card_names_the_residence_when_the_alert_has_one(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    seeded: SeededRegistry,
    database_url: str,
) -> None:
    """An alert of a device in a residence shows its label on the card; one without, nothing."""
    in_residence, elsewhere = seeded.device("alarm_button"), seeded.device("door_lock")
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "WITH r AS (INSERT INTO residences (site_id, label) VALUES (%s, 'Lgh 1204')"
            " RETURNING id) UPDATE devices SET residence_id = (SELECT id FROM r) WHERE id = %s",
            (seeded.site_id, in_residence),
        )
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    with_residence = insert_alert(database_url, in_residence, "alarm_pressed", "critical").alert_id
    without = insert_alert(database_url, elsewhere, "door_left_unlocked", "high").alert_id
    expect(card(page, with_residence).locator(".residence")).to_have_text("Lgh 1204")
    expect(card(page, with_residence).locator(".residence")).to_be_visible()
    expect(card(page, without).locator(".rule")).to_be_visible()
    expect(card(page, without).locator(".residence")).to_be_hidden()


def test_most_severe_and_newest_alerts_come_first(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    seeded: SeededRegistry,
    database_url: str,
) -> None:
    """Critical before high before warning; within a severity the newest first."""
    # The site gives batteries and lost streams to care staff too (issue 12), so the caregiver's
    # board has a warning and two highs to order.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE sites SET alert_audiences = %s::jsonb WHERE id = %s",
            ('{"battery_low": "both", "camera_stream_lost": "both"}', seeded.site_id),
        )
    now = datetime.now(UTC)
    battery = insert_alert(
        database_url, seeded.device("door_lock"), "battery_low", "warning", opened_at=now
    ).alert_id
    old_high = insert_alert(
        database_url, seeded.device("door_lock", 1), "lock_jammed", "high",
        opened_at=now - timedelta(hours=2),
    ).alert_id  # fmt: skip
    new_high = insert_alert(
        database_url, seeded.device("safety_camera"), "camera_stream_lost", "high",
        opened_at=now - timedelta(minutes=1),
    ).alert_id  # fmt: skip
    critical = insert_alert(
        database_url, seeded.device("alarm_button"), "alarm_pressed", "critical",
        opened_at=now - timedelta(hours=5),
    ).alert_id  # fmt: skip
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    expect(page.locator("li.card")).to_have_count(4)
    order = page.locator("li.card").evaluate_all("cards => cards.map(c => Number(c.dataset.id))")
    assert order == [critical, new_high, old_high, battery]
    expect(card(page, old_high).locator(".duration")).to_have_text("Öppet 2 h 0 min")


def test_acknowledge_by_clicking_kvittera(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    seeded: SeededRegistry,
    database_url: str,
) -> None:
    """Kvittera acknowledges the alert in the database, by this user, and the card says so."""
    alert_id = insert_alert(
        database_url, seeded.device("door_lock"), "lock_jammed", "high"
    ).alert_id
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    the_card = card(page, alert_id)
    the_card.get_by_role("button", name="Kvittera").click()
    expect(the_card.locator(".state")).to_contain_text(f"Kvitterat av {caregiver}")
    expect(the_card.get_by_role("button", name="Kvittera")).to_be_hidden()
    expect(the_card.get_by_role("button", name="Åtgärda")).to_be_visible()
    assert alert_row(database_url, alert_id)[:2] == ("acknowledged", caregiver)


def test_resolve_with_a_note_removes_the_card(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    seeded: SeededRegistry,
    database_url: str,
) -> None:
    """Åtgärda with a note resolves the alert, keeps the note in the audit log, removes the card."""
    alert_id = insert_alert(
        database_url, seeded.device("safety_camera"), "resident_not_seen", "high"
    ).alert_id
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    the_card = card(page, alert_id)
    the_card.get_by_label("Anteckning (valfri)").fill("Besökt, allt väl")
    the_card.get_by_role("button", name="Åtgärda").click()
    expect(the_card).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    assert alert_row(database_url, alert_id) == ("resolved", None, caregiver)
    with psycopg.connect(database_url) as conn:
        notes = conn.execute(
            "SELECT username, note FROM audit_log WHERE alert_id = %s AND action = 'alert.resolve'",
            (alert_id,),
        ).fetchall()
    assert notes == [(caregiver, "Besökt, allt väl")]


def test_connection_lost_banner_comes_and_goes_with_the_server(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    seeded: SeededRegistry,
    database_url: str,
) -> None:
    """The server going away shows the banner; back again, the banner goes and the board
    catches up with what opened meanwhile, without a reload."""
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    banner = page.locator("#connection-banner")
    expect(banner).to_be_hidden()
    page.evaluate("window.__sameDocument = true")

    app_server.stop()
    expect(banner).to_be_visible()
    # The en dash is the Swedish text's own punctuation.
    expect(banner).to_have_text("Live-anslutningen är bruten – försöker igen…")  # noqa: RUF001
    expect(banner).to_have_attribute("role", "alert")
    missed = insert_alert(
        database_url, seeded.device("door_lock"), "door_left_unlocked", "high"
    ).alert_id

    app_server.start()
    expect(banner).to_be_hidden(timeout=15_000)
    expect(card(page, missed).locator(".rule")).to_have_text("Dörren lämnades olåst")
    assert page.evaluate("window.__sameDocument") is True
    # And it is live again.
    wait_live(page)
    live = insert_alert(
        database_url, seeded.device("alarm_button"), "alarm_pressed", "critical"
    ).alert_id
    expect(card(page, live)).to_be_visible()


def test_english_toggle_changes_the_texts_and_is_remembered(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    seeded: SeededRegistry,
    database_url: str,
) -> None:
    """English switches every text of the board, cards included, and survives a reload."""
    alert_id = insert_alert(
        database_url, seeded.device("companion_robot"), "robot_inactive", "info"
    ).alert_id
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    page.get_by_role("button", name="Switch to English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", name="Carewatch Alert board")).to_be_visible()
    the_card = card(page, alert_id)
    expect(the_card.locator(".rule")).to_have_text("Robot cat not in use")
    expect(the_card.locator(".severity")).to_have_text("Info")
    expect(the_card.locator(".kind")).to_have_text("Companion robot")
    expect(the_card.get_by_role("button", name="Acknowledge")).to_be_visible()
    expect(the_card.get_by_role("button", name="Resolve")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.locator("#summary")).to_have_text("1 active alert")

    page.reload()
    wait_live(page)
    expect(card(page, alert_id).locator(".rule")).to_have_text("Robot cat not in use")
    page.get_by_role("button", name="Byt till svenska").click()
    expect(card(page, alert_id).locator(".rule")).to_have_text("Robotkatten används inte")


def test_sound_is_off_until_switched_on(
    browser_page: RecordedPage, app_server: AppServer, caregiver: str
) -> None:
    """No sound by default; the toggle is a pressed/unpressed button."""
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    toggle = page.locator("#sound-toggle")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    expect(toggle).to_have_text("Ljud av")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    expect(toggle).to_have_text("Ljud på")


def test_no_request_leaves_the_app(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    seeded: SeededRegistry,
    database_url: str,
) -> None:
    """Everything the pages load, and every call they make, goes to the app's own origin."""
    page = browser_page.page
    insert_alert(database_url, seeded.device("door_lock"), "lock_jammed", "high")
    sign_in(page, app_server.url, caregiver)
    page.locator("li.card").get_by_role("button", name="Kvittera").click()
    expect(page.locator("li.card .state")).to_contain_text("Kvitterat")
    page.get_by_role("button", name="Switch to English").click()
    paths = {url.split("?")[0].removeprefix(app_server.url) for url in browser_page.requests}
    assert {"/login", "/", "/static/board.css", "/static/board.js", "/api/v1/alerts"} <= paths
    assert "/api/v1/alerts/stream" in paths
    strangers = [u for u in browser_page.requests if not u.startswith(f"{app_server.url}/")]
    assert strangers == []


def test_screenshots_at_desktop_and_phone_size(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    seeded: SeededRegistry,
    database_url: str,
    tmp_path: Path,
) -> None:
    """A full board renders at 1280x800 and at 390x844 with no horizontal scrolling."""
    acknowledged = seed_full_board(database_url, seeded, door_state="open").door
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    card(page, acknowledged).get_by_role("button", name="Kvittera").click()
    expect(card(page, acknowledged).locator(".state")).to_contain_text("Kvitterat av")
    expect(page.locator("li.card")).to_have_count(5)

    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)  # type: ignore[arg-type]  # a ViewportSize TypedDict
        width, height = viewport["width"], viewport["height"]
        page.screenshot(path=tmp_path / f"board-{name}-{width}x{height}.png")
        scroll_width, client_width = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert scroll_width <= client_width, f"horizontal scroll at {width}x{height}"
    # On the phone every button is a large touch target.
    sizes = page.get_by_role("button").evaluate_all(
        "buttons => buttons.filter(b => b.offsetParent !== null)"
        ".map(b => [b.getBoundingClientRect().height, b.textContent])"
    )
    assert sizes, "no visible buttons"
    assert all(height >= 44 for height, _ in sizes), sizes
