"""zigbee2mqtt friendly names as users write them, on the pages in a real chromium (issue 13):
a CSV onboards "Lgh 14 lås/<b>dörr</b>" and refuses a path-like and a wildcard name with their
reasons; the device's fleet page shows the name as the text it is, markup included, and passes
axe-core's WCAG 2.1 AA rules."""

from __future__ import annotations

import psycopg
import pytest
from playwright.sync_api import FilePayload, expect

from broker.accounts import set_account
from broker.auth_files import Role
from carewatch.passwords import hash_password
from tests.browser.conftest import PASSWORD, AppServer, RecordedPage, axe_run, sign_in
from tests.fixtures.services import SeededRegistry

pytestmark = pytest.mark.browser

NAME = "Lgh 14 lås/<b>dörr</b> & 'fönster'"


@pytest.fixture
def technician(seeded: SeededRegistry, database_url: str, test_token: str) -> str:
    """A technician of the seeded organisation who signs in with PASSWORD, and a bridge."""
    username = f"zelda-{test_token}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, org_id, role, password_hash)"
            " VALUES (%s, %s, 'technician', %s)",
            (username, seeded.org_id, hash_password(PASSWORD)),
        )
        set_account(conn, f"zigbee2mqtt.{test_token}", Role.ZIGBEE2MQTT_BRIDGE, "x",
                    org_id=seeded.org_id)  # fmt: skip
    return username


def test_names_with_spaces_utf8_levels_and_markup_are_onboarded_and_shown_as_text(
    browser_page: RecordedPage,
    app_server: AppServer,
    technician: str,
    seeded: SeededRegistry,
    test_token: str,
    axe_source: str,
) -> None:
    """The CSV's good name is onboarded, the path-like and wildcard ones refused saying why;
    the fleet page shows the good name verbatim (escaped, no element made of it)."""
    page = browser_page.page
    sign_in(page, app_server.url, technician)
    page.goto(f"{app_server.url}/onboarding")
    bridge = f"zigbee2mqtt.{test_token}"
    good = f"{test_token}-zdoor"
    rows = [
        (good, NAME),
        (f"{test_token}-zpath", "../other/door"),
        (f"{test_token}-zwild", "kitchen/+"),
    ]
    text = "id;kind;site;label;source;zigbee_name;zigbee_model;bridge\r\n" + "".join(
        f'{device_id};door_contact;{seeded.site_id};Lgh 14;zigbee2mqtt;"{name}";TS0203;{bridge}\r\n'
        for device_id, name in rows
    )
    upload: FilePayload = {"name": "zigbee.csv", "mimeType": "text/csv", "buffer": text.encode()}
    page.get_by_label("CSV-fil", exact=True).set_input_files(files=[upload])
    page.get_by_role("button", name="Läs in filen").click()
    expect(page.get_by_text("1 tillagda, 2 avvisade.")).to_be_visible()
    refused = page.locator("table.refused tbody tr")
    expect(refused).to_have_count(2)
    expect(refused.nth(0)).to_contain_text("invalid zigbee_name: a . or .. level looks like a path")
    expect(refused.nth(1)).to_contain_text("invalid zigbee_name: + and # are MQTT's wildcards")

    page.goto(f"{app_server.url}/fleet/{good}")
    source = page.locator("#facts .source")
    expect(source).to_contain_text(f"{NAME} (TS0203)")
    expect(source.locator("b")).to_have_count(0)
    assert axe_run(page, axe_source) == []
