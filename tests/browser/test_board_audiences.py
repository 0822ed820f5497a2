"""Who sees what on the board (issue 12): caregivers the care alerts and the faults that take
someone's safety away, technicians device health, each acting on their own, in real chromium."""

from __future__ import annotations

from typing import NamedTuple

import psycopg
import pytest
from playwright.sync_api import Locator, Page, expect

from carewatch.passwords import hash_password
from tests.browser.conftest import PASSWORD, AppServer, RecordedPage, sign_in
from tests.fixtures.alerts import insert_alert
from tests.fixtures.services import SeededRegistry

pytestmark = pytest.mark.browser


class Board(NamedTuple):
    robot_offline: int  # technical
    lock_battery: int  # technical (warning: not out of battery yet)
    lock_jammed: int  # both: a safety exception
    button_offline: int  # both: a silent alarm button
    door_unlocked: int  # care


def card(page: Page, alert_id: int) -> Locator:
    return page.locator(f"li.card[data-id='{alert_id}']")


def seed(database_url: str, seeded: SeededRegistry) -> Board:
    return Board(
        insert_alert(database_url, seeded.device("companion_robot"), "device_offline").alert_id,
        insert_alert(database_url, seeded.device("door_lock"), "battery_low", "warning").alert_id,
        insert_alert(database_url, seeded.device("door_lock", 1), "lock_jammed").alert_id,
        insert_alert(
            database_url, seeded.device("alarm_button"), "device_offline", "critical"
        ).alert_id,
        insert_alert(database_url, seeded.device("door_lock", 2), "door_left_unlocked").alert_id,
    )


@pytest.fixture
def technician(seeded: SeededRegistry, database_url: str, test_token: str) -> str:
    """A technician of the seeded organisation who signs in with PASSWORD."""
    username = f"tove-{test_token}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, org_id, role, password_hash, display_name)"
            " VALUES (%s, %s, 'technician', %s, 'Tove')",
            (username, seeded.org_id, hash_password(PASSWORD)),
        )
    return username


def test_a_caregivers_board_shows_care_alerts_and_safety_faults(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    seeded: SeededRegistry,
    database_url: str,
) -> None:
    """A robot offline and a low lock battery stay off the caregiver's board, before and after
    it is open; a jammed lock, a silent alarm button and an unlocked door are on it."""
    board = seed(database_url, seeded)
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    for alert_id in (board.lock_jammed, board.button_offline, board.door_unlocked):
        expect(card(page, alert_id).get_by_role("button", name="Kvittera")).to_be_visible()
    expect(page.locator("#summary")).to_have_text("3 aktiva larm")
    for alert_id in (board.robot_offline, board.lock_battery):
        expect(card(page, alert_id)).to_have_count(0)
    # Live: a tamper (technical) then an alarm press (care); once the second is shown, the
    # first has been through the stream too, and stayed off.
    tamper = insert_alert(database_url, seeded.device("door_lock", 1), "tamper").alert_id
    alarm = insert_alert(
        database_url, seeded.device("alarm_button", 1), "alarm_pressed", "critical"
    ).alert_id
    expect(card(page, alarm)).to_be_visible()
    expect(card(page, tamper)).to_have_count(0)
    expect(page.locator("#summary")).to_have_text("4 aktiva larm")
    # The list and the stream are both asked for care alerts: the tamper was never sent.
    for path in ("/api/v1/alerts", "/api/v1/alerts/stream"):
        assert f"{app_server.url}{path}?audience=care" in browser_page.requests, path


def test_a_technicians_board_shows_device_health_and_acts_on_it(
    browser_page: RecordedPage,
    app_server: AppServer,
    technician: str,
    seeded: SeededRegistry,
    database_url: str,
) -> None:
    """The technician sees every device fault (safety ones too) with its buttons, not the
    unlocked door, and acknowledges the robot's offline alert."""
    board = seed(database_url, seeded)
    page = browser_page.page
    sign_in(page, app_server.url, technician)
    for alert_id in (board.robot_offline, board.lock_battery, board.lock_jammed):
        expect(card(page, alert_id).get_by_role("button", name="Kvittera")).to_be_visible()
    expect(card(page, board.button_offline)).to_be_visible()
    expect(page.locator("#summary")).to_have_text("4 aktiva larm")
    expect(card(page, board.door_unlocked)).to_have_count(0)
    assert f"{app_server.url}/api/v1/alerts/stream?audience=technical" in browser_page.requests
    robot = card(page, board.robot_offline)
    robot.get_by_role("button", name="Kvittera").click()
    expect(robot.locator(".state")).to_contain_text(f"Kvitterat av {technician}")
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT state, acknowledged_by FROM alerts WHERE id = %s", (board.robot_offline,)
        ).fetchone()
    assert row == ("acknowledged", technician)
