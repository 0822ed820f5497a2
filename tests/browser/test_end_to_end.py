"""End to end: a device presses its alarm over MQTT, the gateway stores it and opens the alert,
the board shows it live in chromium, a caregiver acknowledges it by clicking."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import expect

from carewatch.settings import Settings
from tests.browser.conftest import AppServer, RecordedPage, sign_in
from tests.fixtures.gateway_process import GatewayProcess, wait_until
from tests.fixtures.mqtt import envelope, events_topic, publish_all
from tests.fixtures.services import SeededRegistry

pytestmark = pytest.mark.browser


@pytest.fixture
def gateway(settings: Settings, tmp_path: Path) -> Iterator[GatewayProcess]:
    with GatewayProcess(settings, tmp_path / "gateway.log") as process:
        yield process


def test_alarm_pressed_over_mqtt_appears_on_the_board_and_is_acknowledged(
    publisher_url: str,
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    seeded: SeededRegistry,
    settings: Settings,
    gateway: GatewayProcess,
) -> None:
    """alarm.pressed published by a device shows up on the open board and taking it sticks
    (a response, +#12: the alert is acknowledged by whoever took it)."""
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    button = seeded.device("alarm_button")
    publish_all(publisher_url, [(events_topic(button), envelope("press-1", "alarm.pressed"))])

    the_card = page.locator("li.card").filter(has_text="Trygghetslarm utlöst")
    expect(the_card).to_have_count(1, timeout=10_000)
    expect(the_card.locator(".severity")).to_have_text("Kritisk")
    the_card.get_by_role("button", name="Ta larmet").click()
    expect(the_card.get_by_role("button", name="Ta larmet")).to_be_hidden()

    def acknowledged() -> object:
        with psycopg.connect(settings.database_url) as conn:
            return conn.execute(
                "SELECT state, acknowledged_by FROM alerts"
                " WHERE device_id = %s AND rule = 'alarm_pressed'",
                (button,),
            ).fetchone() == ("acknowledged", caregiver)

    wait_until(acknowledged, 10)
