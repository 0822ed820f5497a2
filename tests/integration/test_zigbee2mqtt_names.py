"""zigbee2mqtt friendly names as users write them ("Lgh 14 lås", "kitchen/door"), in the
database and in the broker (issue 13): migration 0015's CHECK refuses what devices.ids refuses,
and the broker, its ACL synced from the database as production runs it, lets a bridge publish
exactly its own devices' names, spaces, UTF-8 and levels included, and nothing of another
organisation's. (The gateway's half is tests/integration/test_zigbee2mqtt_gateway.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from broker.accounts import set_account
from broker.auth_files import Role
from carewatch import admin
from carewatch.broker_passwords import new_password
from tests.fixtures.broker import BrokerRun, Probe, wait_for_connack
from tests.fixtures.gateway_process import wait_until
from tests.fixtures.services import SeededRegistry
from tests.unit.test_zigbee_names import ACCEPTED, REFUSED
from tools.local.identities import GATEWAY_USERNAME

NOT_AUTHORIZED = 135

# What only Python refuses (devices.ids.zigbee_name_problem), each for a reason: NUL cannot be
# sent to PostgreSQL at all; format characters, noncharacters and a trailing no-break space
# have no POSIX class the CHECK could name portably; 'bridge' was allowed by migration 0004's
# CHECK, and an old row must not stop migration 0015 (the gateway and the broker skip it).
PYTHON_ONLY = {
    "nul",
    "zero-width-space",
    "right-to-left-override",
    "line-separator",
    "noncharacter",
    "trailing-nbsp",
    "c1-next-line",
    "bridge",
    "bridge-devices",
}


def insert_zigbee_device(
    conn: psycopg.Connection[tuple[object, ...]],
    device_id: str,
    site_id: str,
    name: str,
    bridge: str,
    model: str = "TS0203",
) -> None:
    """A door contact behind ``bridge``, by SQL (the CHECKs are what is under test)."""
    conn.execute(
        "INSERT INTO devices (id, kind, site_id, label, source, zigbee_name, zigbee_model, bridge)"
        " VALUES (%s, 'door_contact', %s, 'Lgh', 'zigbee2mqtt', %s, %s, %s)",
        (device_id, site_id, name, model, bridge),
    )


def test_the_database_accepts_and_refuses_names_as_onboarding_does(
    database_url: str, seeded: SeededRegistry
) -> None:
    """Every name devices.ids accepts is stored; every name it refuses is refused by migration
    0015's CHECK too, but for the few the comment above says Python alone can judge."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        set_account(conn, "zigbee2mqtt.hub-db", Role.ZIGBEE2MQTT_BRIDGE, "x",
                    org_id=seeded.org_id)  # fmt: skip
        for i, param in enumerate(ACCEPTED):
            (name,) = param.values
            insert_zigbee_device(conn, f"zb-ok-{i:03d}", seeded.site_id, str(name),
                                 "zigbee2mqtt.hub-db")  # fmt: skip
        checked = 0
        for i, param in enumerate(REFUSED):
            name, _reason = param.values
            if param.id in PYTHON_ONLY:
                continue
            with pytest.raises(psycopg.errors.CheckViolation, match="devices_zigbee_name_check"):
                insert_zigbee_device(conn, f"zb-no-{i:03d}", seeded.site_id, str(name),
                                     "zigbee2mqtt.hub-db")  # fmt: skip
            checked += 1
        stored = conn.execute(
            "SELECT zigbee_name FROM devices WHERE id LIKE 'zb-ok-%' ORDER BY id"
        ).fetchall()
    assert [row[0] for row in stored] == [param.values[0] for param in ACCEPTED]
    assert checked >= 20  # the table really exercised the CHECK


@pytest.fixture
def broker(database_url: str, tmp_path: Path) -> Iterator[tuple[BrokerRun, str]]:
    """``carewatch broker run`` on this test's database, with a gateway account."""
    gateway_password = new_password()
    with psycopg.connect(database_url, autocommit=True) as conn:
        set_account(conn, GATEWAY_USERNAME, Role.GATEWAY, gateway_password)
    with BrokerRun(database_url, tmp_path / "broker") as run:
        yield run, gateway_password


def test_a_bridge_publishes_its_names_as_written_and_no_other_organisations(
    database_url: str, seeded: SeededRegistry, broker: tuple[BrokerRun, str]
) -> None:
    """Through the real broker: the bridge may publish "zigbee2mqtt/Lgh 14 lås",
    "zigbee2mqtt/kitchen/door" and their availability, and the gateway reads them; it may not
    publish another organisation's "Lgh 15 dörr", a level of its own name, a longer name, or
    commands to its devices."""
    run, gateway_password = broker
    password_a, password_b = new_password(), new_password()
    with psycopg.connect(database_url, autocommit=True) as conn:
        admin.ensure_org(conn, "other-org", "Annan kommun")
        admin.ensure_site(conn, "other-site", "other-org", "Annat boende")
        set_account(conn, "zigbee2mqtt.hub-a", Role.ZIGBEE2MQTT_BRIDGE, password_a,
                    org_id=seeded.org_id)  # fmt: skip
        set_account(conn, "zigbee2mqtt.hub-b", Role.ZIGBEE2MQTT_BRIDGE, password_b,
                    org_id="other-org")  # fmt: skip
        insert_zigbee_device(conn, "zb-a-1", seeded.site_id, "Lgh 14 lås", "zigbee2mqtt.hub-a")
        insert_zigbee_device(conn, "zb-a-2", seeded.site_id, "kitchen/door", "zigbee2mqtt.hub-a")
        insert_zigbee_device(conn, "zb-b-1", "other-site", "Lgh 15 dörr", "zigbee2mqtt.hub-b")
    wait_for_connack(run.port, "zigbee2mqtt.hub-a", password_a, accepted=True)
    wait_for_connack(run.port, "zigbee2mqtt.hub-b", password_b, accepted=True)
    gateway = Probe(run.port, GATEWAY_USERNAME, gateway_password)
    assert not gateway.connect().is_failure
    assert not gateway.subscribe("zigbee2mqtt/#").is_failure
    bridge_a = Probe(run.port, "zigbee2mqtt.hub-a", password_a)
    assert not bridge_a.connect().is_failure

    # The sync may still be writing the ACL for the devices inserted a moment ago.
    wait_until(
        lambda: not bridge_a.publish("zigbee2mqtt/Lgh 14 lås", b'{"contact":true}').is_failure, 20
    )
    allowed = [
        ("zigbee2mqtt/Lgh 14 lås/availability", b"online"),
        ("zigbee2mqtt/kitchen/door", b'{"contact":false}'),
        ("zigbee2mqtt/kitchen/door/availability", b'{"state":"online"}'),
    ]
    for topic, payload in allowed:
        assert not bridge_a.publish(topic, payload).is_failure, topic
    refused = [
        "zigbee2mqtt/Lgh 15 dörr",  # another organisation's device
        "zigbee2mqtt/Lgh 15 dörr/availability",
        "zigbee2mqtt/Lgh 14",  # a prefix of its own name
        "zigbee2mqtt/Lgh 14 lås ",  # a longer one
        "zigbee2mqtt/lgh 14 lås",  # another case
        "zigbee2mqtt/kitchen",  # a level of its own name
        "zigbee2mqtt/kitchen/door/set",  # a command, zigbee2mqtt's to read
        "zigbee2mqtt/kitchen/window",
    ]
    for topic in refused:
        assert bridge_a.publish(topic, b"{}").value == NOT_AUTHORIZED, topic

    wait_until(lambda: len(gateway.received) >= 1 + len(allowed), 10)
    time.sleep(0.2)  # nothing refused may arrive after the allowed ones
    assert gateway.received == [
        ("zigbee2mqtt/Lgh 14 lås", b'{"contact":true}'),
        *allowed,
    ]
    for probe in (gateway, bridge_a):
        probe.close()
