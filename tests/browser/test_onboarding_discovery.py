"""Discovery-assisted onboarding in a real chromium (issue 13, item 4): a zigbee2mqtt bridge
publishes its retained ``<base>/bridge/devices`` through the real broker (its ACL synced from
the database) and the real gateway; the onboarding page lists what may be onboarded and why
the rest may not, passes axe-core, and onboards one device by its row and another ticked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from playwright.sync_api import expect

from broker.accounts import set_account
from broker.auth_files import Role
from carewatch.broker_passwords import new_password
from carewatch.passwords import hash_password
from carewatch.settings import Settings
from tests.browser.conftest import PASSWORD, AppServer, RecordedPage, axe_run, sign_in
from tests.fixtures.broker import BrokerRun, wait_for_connack
from tests.fixtures.gateway_process import GatewayProcess, wait_until
from tests.fixtures.services import MakeSettings, SeededRegistry
from tests.integration.test_zigbee2mqtt_discovery import publish
from tools.local.identities import GATEWAY_USERNAME

pytestmark = pytest.mark.browser

BRIDGE = "zigbee2mqtt.hub-a"


def entry(ieee: str, name: str, model: str | None, **fields: Any) -> dict[str, Any]:
    """One entry of zigbee2mqtt's bridge/devices, in the shape zigbee2mqtt publishes it."""
    definition = (
        None
        if model is None
        else {
            "model": model,
            "vendor": "SONOFF" if model.startswith("SNZB") else "Acme",
            "description": "Contact sensor",
            "exposes": [{"type": "binary", "property": "contact"}],
        }
    )
    return {
        "ieee_address": ieee,
        "type": "EndDevice",
        "friendly_name": name,
        "definition": definition,
        "interview_completed": True,
        "power_source": "Battery",
        "supported": model is not None,
        "disabled": False,
        "model_id": "DS01",
        **fields,
    }


DEVICES = [
    entry("0x00124b0012345678", "Coordinator", None, type="Coordinator", power_source="Mains"),
    entry("0x00124b00aaaaaaa1", "hall_door", "SNZB-04"),
    entry("0x00124b00aaaaaaa2", "balcony_door", "SNZB-04"),
    entry("0x00124b00aaaaaaa3", "mystery_box", "XYZ-1000"),
    entry("0x00124b00aaaaaaa4", "new_contact", "SNZB-04", interview_completed=False),
]


@pytest.fixture
def gateway_password(database_url: str) -> str:
    """The gateway's broker account in this test's database."""
    password = new_password()
    with psycopg.connect(database_url, autocommit=True) as conn:
        set_account(conn, GATEWAY_USERNAME, Role.GATEWAY, password)
    return password


@pytest.fixture
def broker(database_url: str, gateway_password: str, tmp_path: Path) -> Iterator[BrokerRun]:
    """``carewatch broker run`` on this test's database: bridges' ACLs as in production."""
    with BrokerRun(database_url, tmp_path / "broker") as run:
        yield run


@pytest.fixture
def settings(
    make_settings: MakeSettings, database_url: str, broker: BrokerRun, gateway_password: str
) -> Settings:
    """This test's settings, with the database-synced broker (app_server uses them too)."""
    return make_settings(database_url, mqtt_url=broker.url(GATEWAY_USERNAME, gateway_password))


@pytest.fixture
def technician(seeded: SeededRegistry, database_url: str, test_token: str) -> str:
    """A technician of the seeded organisation who signs in with PASSWORD."""
    username = f"tekla-{test_token}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, org_id, role, password_hash, display_name)"
            " VALUES (%s, %s, 'technician', %s, 'Tekla')",
            (username, seeded.org_id, hash_password(PASSWORD)),
        )
    return username


def test_a_technician_onboards_what_the_bridge_announced(
    browser_page: RecordedPage,
    app_server: AppServer,
    technician: str,
    seeded: SeededRegistry,
    database_url: str,
    broker: BrokerRun,
    settings: Settings,
    test_token: str,
    axe_source: str,
    tmp_path: Path,
) -> None:
    """Offered: the two interviewed contacts of a mapped model; shown with why not: the
    coordinator, the unknown model (never guessed), the unfinished interview. One is onboarded
    by its row's button, the other ticked; both are then rows of the registry behind the
    bridge, and the page offers nothing more."""
    base = f"z2m-{test_token}"
    bridge_password = new_password()
    # One transaction: the broker's files are rendered once, with the bridge's base topic.
    with psycopg.connect(database_url) as conn:
        set_account(conn, BRIDGE, Role.ZIGBEE2MQTT_BRIDGE, bridge_password, org_id=seeded.org_id)
        conn.execute(
            "UPDATE broker_accounts SET base_topic = %s WHERE username = %s", (base, BRIDGE)
        )
        conn.execute(
            "INSERT INTO residences (site_id, label) VALUES (%s, 'Lgh 7')", (seeded.site_id,)
        )
    wait_for_connack(broker.port, BRIDGE, bridge_password, accepted=True)
    code = publish(
        broker.port,
        BRIDGE,
        bridge_password,
        f"{base}/bridge/devices",
        orjson.dumps(DEVICES),
        retain=True,
    )
    assert not code.is_failure, code

    def announced() -> int:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT count(*) FROM bridge_announced_devices").fetchone()
        return int(row[0]) if row else 0

    with GatewayProcess(settings, tmp_path / "gateway.log") as gateway:
        wait_until(lambda: announced() == len(DEVICES), 20, context=gateway.log_tail)

    page = browser_page.page
    sign_in(page, app_server.url, technician)
    page.goto(f"{app_server.url}/onboarding")
    bridge = page.locator("section.bridge[data-bridge='hub-a']")
    expect(bridge.get_by_role("heading", name="Bryggan hub-a")).to_be_visible()
    expect(bridge.locator("code.base-topic")).to_have_text(f"{base}/")
    offered = bridge.locator("table.offered tbody tr")
    expect(offered).to_have_count(2)
    expect(offered.locator("td.zigbee-name")).to_have_text(["balcony_door", "hall_door"])
    why = {
        "Coordinator": "Bryggans koordinator, ingen enhet",
        "mystery_box": "Okänd modell: Carewatch kan inte läsa den",
        "new_contact": "Parkopplingen (intervjun) är inte klar",
    }
    rows = bridge.locator("table.not-offered tbody tr")
    expect(rows).to_have_count(len(why))
    for name, text in why.items():
        expect(rows.filter(has_text=name).locator("td.why")).to_have_text(text)
    # The unknown model is named as zigbee2mqtt named it, with no kind guessed for it.
    expect(rows.filter(has_text="mystery_box")).to_contain_text("XYZ-1000")
    assert axe_run(page, axe_source) == []

    # One by its row: the suggested id, a residence and a location chosen.
    hall = offered.filter(has_text="hall_door")
    expect(hall.get_by_label("Enhets-id för hall_door")).to_have_value("zb-00124b00aaaaaaa1")
    hall.get_by_label("Enhet/boende för hall_door").select_option(seeded.site_id)
    hall.get_by_label("Bostad för hall_door").select_option(label="Lgh 7")
    hall.get_by_label("Placering för hall_door").fill("Lgh 7, hallen")
    hall.get_by_role("button", name="Installera hall_door").click()
    created = page.locator("table.credentials tr[data-device='zb-00124b00aaaaaaa1']")
    expect(created).to_be_visible()
    expect(created).to_contain_text("Ansluter via Zigbee-bryggan zigbee2mqtt.hub-a")
    expect(created.locator("td.residence")).to_have_text("Lgh 7")
    expect(page.locator("table.offered tbody tr")).to_have_count(1)
    expect(page.locator("table.not-offered tbody tr").filter(has_text="hall_door")).to_contain_text(
        "Redan installerad som zb-00124b00aaaaaaa1"
    )

    # Ticked: nothing happens until the button, then the ticked one is onboarded.
    balcony = page.locator("table.offered tbody tr").filter(has_text="balcony_door")
    balcony.get_by_label("Välj balcony_door").check()
    balcony.get_by_label("Enhets-id för balcony_door").fill(f"{test_token}-balcony")
    page.get_by_role("button", name="Installera markerade").click()
    expect(
        page.locator(f"table.credentials tr[data-device='{test_token}-balcony']")
    ).to_be_visible()
    expect(
        page.get_by_text("Bryggan har inga nya enheter som Carewatch kan installera.")
    ).to_be_visible()
    assert axe_run(page, axe_source) == []

    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT d.id, d.kind, d.source, d.zigbee_name, d.zigbee_model, d.bridge, d.label,"
            " r.label FROM devices d LEFT JOIN residences r ON r.id = d.residence_id"
            " WHERE d.bridge = %s ORDER BY d.zigbee_name",
            (BRIDGE,),
        ).fetchall()
        audited = conn.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'device.create' AND username = %s",
            (technician,),
        ).fetchone()
    assert stored == [
        (
            f"{test_token}-balcony",
            "door_contact",
            "zigbee2mqtt",
            "balcony_door",
            "SNZB-04",
            BRIDGE,
            "",
            None,
        ),
        (
            "zb-00124b00aaaaaaa1",
            "door_contact",
            "zigbee2mqtt",
            "hall_door",
            "SNZB-04",
            BRIDGE,
            "Lgh 7, hallen",
            "Lgh 7",
        ),
    ]
    assert audited == (2,)
