"""The board says every alert's reason in the reader's language (issue 12): from its code and
arguments, as they come from the list and from the stream; an alert stored before reasons had
codes keeps its English text."""

from __future__ import annotations

import pytest
from playwright.sync_api import Locator, Page, expect

from devices.reasons import Reason, ReasonCode
from tests.browser.conftest import (
    AppServer,
    RecordedPage,
    axe_run,
    format_violations,
    sign_in,
    wait_live,
)
from tests.fixtures.alerts import insert_alert
from tests.fixtures.services import SeededRegistry

pytestmark = pytest.mark.browser


def card(page: Page, alert_id: int) -> Locator:
    return page.locator(f"li.card[data-id='{alert_id}']")


def test_reasons_are_said_in_the_pages_language(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    seeded: SeededRegistry,
    database_url: str,
    axe_source: str,
) -> None:
    """A Swedish board says "batteri 9 %", a held silence with its durations and a resident's
    cancel in Swedish; English says them as the API does; an old row keeps its English."""
    page = browser_page.page
    battery = insert_alert(
        database_url, seeded.device("alarm_button", 1), "battery_low", "high",
        why=Reason.of(ReasonCode.BATTERY, level=9),
    ).alert_id  # fmt: skip
    sign_in(page, app_server.url, caregiver)
    # These arrive on the stream, after the list was loaded. Alerts care staff see: an alarm
    # button's battery and silence are theirs too (devices/audience.toml).
    silent = insert_alert(
        database_url, seeded.device("alarm_button"), "device_offline", "critical",
        why=Reason.of(ReasonCode.SILENT, silent_s=1900, heartbeat_s=600).held(),
    ).alert_id  # fmt: skip
    cancelled = insert_alert(
        database_url, seeded.device("alarm_button"), "alarm_pressed", "critical",
        why=Reason.of(ReasonCode.ALARM_PRESSED),
        cleared_why=Reason.of(ReasonCode.CANCELLED_BY_RESIDENT),
    ).alert_id  # fmt: skip
    old = insert_alert(
        database_url, seeded.device("door_lock"), "door_left_unlocked", "high",
        reason="unlocked for 12 min",
    ).alert_id  # fmt: skip

    expect(card(page, battery).locator(".reason")).to_have_text("batteri 9 %")
    expect(card(page, silent).locator(".reason")).to_have_text(
        "inget meddelande på 31 min (livstecken var 10 min) (under reparation)"
    )
    expect(card(page, cancelled).locator(".reason")).to_have_text("larmknappen trycktes")
    expect(card(page, cancelled).locator(".cleared-reason")).to_have_text("avbrutet av den boende")
    expect(card(page, old).locator(".reason")).to_have_text("unlocked for 12 min")
    violations = axe_run(page, axe_source)
    assert violations == [], format_violations(violations)

    page.get_by_role("button", name="Switch to English").click()
    expect(card(page, battery).locator(".reason")).to_have_text("battery 9 %")
    expect(card(page, silent).locator(".reason")).to_have_text(
        "no message for 31 min (heartbeat every 10 min) (during maintenance)"
    )
    expect(card(page, cancelled).locator(".cleared-reason")).to_have_text(
        "cancelled by the resident"
    )

    page.reload()
    wait_live(page)
    page.get_by_role("button", name="Byt till svenska").click()
    expect(card(page, silent).locator(".reason")).to_have_text(
        "inget meddelande på 31 min (livstecken var 10 min) (under reparation)"
    )
