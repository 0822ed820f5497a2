"""Base topics per bridge and discovery (issue 13, items 3 and 4), through the real broker (its
files synced from the database, as in production), the real gateway and the API: a bridge
publishes its retained ``<base>/bridge/devices``; the list appears via the API; a second base
topic carries device reports; another organisation sees nothing of it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from broker.accounts import set_account
from broker.auth_files import Role
from carewatch.broker_passwords import new_password
from carewatch.errors import AdminError
from carewatch.processes import LOOPBACK
from carewatch.settings import Settings
from tests.fixtures.api_client import ApiResponse, add_org_with_sites, add_user, call, login
from tests.fixtures.api_server import running_api
from tests.fixtures.broker import BrokerRun, wait_for_connack
from tests.fixtures.gateway_process import GatewayProcess, wait_until
from tests.fixtures.services import MakeSettings, SeededRegistry
from tools.local.identities import GATEWAY_USERNAME

NOT_AUTHORIZED = 135


def announced_entry(
    ieee: str,
    name: str,
    model: str | None,
    *,
    type_: str = "EndDevice",
    interviewed: bool = True,
    vendor: str = "SONOFF",
) -> dict[str, Any]:
    """One entry of zigbee2mqtt's bridge/devices, in the shape zigbee2mqtt publishes it."""
    definition = None
    if model is not None:
        definition = {
            "model": model,
            "vendor": vendor,
            "description": "Contact sensor",
            "exposes": [{"type": "binary", "name": "contact", "property": "contact"}],
            "supports_ota": False,
        }
    return {
        "ieee_address": ieee,
        "type": type_,
        "network_address": 12345,
        "supported": definition is not None,
        "disabled": False,
        "friendly_name": name,
        "definition": definition,
        "power_source": "Battery",
        "model_id": "DS01",
        "manufacturer": "eWeLink",
        "interview_completed": interviewed,
        "interviewing": not interviewed,
        "endpoints": {"1": {"bindings": [], "clusters": {"input": [], "output": []}}},
    }


COORDINATOR = announced_entry("0x00124b0012345678", "Coordinator", None, type_="Coordinator")
CONTACT = announced_entry("0x00124b00aaaaaaa1", "hall_door", "SNZB-04")
UNKNOWN = announced_entry("0x00124b00aaaaaaa2", "mystery", "XYZ-1000", vendor="Acme")
PAIRING = announced_entry("0x00124b00aaaaaaa3", "new_contact", "SNZB-04", interviewed=False)


Expose = dict[str, Any]  # one entry of a definition's exposes


def _binary(name: str, label: str, description: str, *, diagnostic: bool = False) -> Expose:
    expose: Expose = {
        "access": 1,
        "description": description,
        "label": label,
        "name": name,
        "property": name,
        "type": "binary",
        "value_off": name == "contact",  # zigbee2mqtt's contact is true when closed
        "value_on": name != "contact",
    }
    return expose | ({"category": "diagnostic"} if diagnostic else {})


def _numeric(name: str, label: str, description: str, unit: str, top: int | None) -> Expose:
    expose: Expose = {
        "access": 1,
        "category": "diagnostic",
        "description": description,
        "label": label,
        "name": name,
        "property": name,
        "type": "numeric",
        "unit": unit,
    }
    return expose | ({"value_max": top, "value_min": 0} if top is not None else {})


_COMMON_EXPOSES: list[Expose] = [
    _binary("battery_low", "Battery low", "Indicates if the battery of this device is almost empty",
            diagnostic=True),
    _binary("tamper", "Tamper", "Indicates whether the device is tampered", diagnostic=True),
    _numeric("battery", "Battery",
             "Remaining battery in %, can take up to 24 hours before reported", "%", 100),
    _numeric("voltage", "Voltage", "Voltage of the battery in millivolts", "mV", None),
    _numeric("linkquality", "Linkquality", "Link quality (signal strength)", "lqi", 255),
]  # fmt: skip
_LOCK_EXPOSE: Expose = {
    "type": "lock",
    "features": [
        {"access": 7, "description": "State of the lock", "label": "State", "name": "state",
         "property": "state", "type": "binary", "value_on": "LOCK", "value_off": "UNLOCK"},
        {"access": 1, "description": "Actual state of the lock", "label": "Lock state",
         "name": "lock_state", "property": "lock_state", "type": "enum",
         "values": ["not_fully_locked", "locked", "unlocked"]},
    ],
}  # fmt: skip
# model -> (vendor, description, Zigbee model id, the exposes that tell the kind)
_REALISTIC_MODELS: dict[str, tuple[str, str, str, list[Expose]]] = {
    "SNZB-04": ("SONOFF", "Contact sensor", "DS01", [_binary(
        "contact", "Contact", "Indicates if the contact is closed (= true) or open (= false)")]),
    "SNZB-03": ("SONOFF", "Motion sensor", "MS01", [_binary(
        "occupancy", "Occupancy", "Indicates whether the device detected occupancy")]),
    "SNZB-05P": ("SONOFF", "Zigbee water leak sensor", "SNZB-05P", [_binary(
        "water_leak", "Water leak", "Indicates whether the device detected a water leak")]),
    "HS1SA": ("HEIMAN", "Smoke detector", "SmokeSensor-EM", [_binary(
        "smoke", "Smoke", "Indicates whether the device detected smoke")]),
    "0402946": ("Datek", "Zigbee module for ID lock 150", "ID Lock 150", [_LOCK_EXPOSE]),
}  # fmt: skip


def realistic_entry(index: int) -> dict[str, Any]:
    """Entry ``index`` of a large bridge/devices, as zigbee2mqtt publishes it: a care-kind
    device of a mapped model with its whole definition (exposes, options), endpoints and
    reporting configuration: 2-3 KiB, as real entries of such sensors are."""
    model = list(_REALISTIC_MODELS)[index % len(_REALISTIC_MODELS)]
    vendor, description, model_id, exposes = _REALISTIC_MODELS[model]
    ieee = f"0x00124b00{index:08x}"
    return {
        "date_code": "20230424",
        "definition": {
            "description": description,
            "exposes": [*exposes, *_COMMON_EXPOSES],
            "model": model,
            "options": [
                {"access": 2, "description": "Number of digits after decimal point for "
                 "battery, takes into effect on next report of device.",
                 "label": "Battery precision", "name": "battery_precision",
                 "property": "battery_precision", "type": "numeric", "value_max": 3,
                 "value_min": 0},
            ],
            "source": "native",
            "supports_ota": True,
            "vendor": vendor,
        },
        "disabled": False,
        "endpoints": {
            "1": {
                "bindings": [{"cluster": "genPowerCfg",
                              "target": {"endpoint": 1, "ieee_address": "0x00124b0012345678",
                                         "type": "endpoint"}}],
                "clusters": {"input": ["genBasic", "genPowerCfg", "genIdentify", "ssIasZone"],
                             "output": ["genIdentify", "genOta"]},
                "configured_reportings": [
                    {"attribute": "batteryPercentageRemaining", "cluster": "genPowerCfg",
                     "maximum_report_interval": 62000, "minimum_report_interval": 3600,
                     "reportable_change": 0},
                ],
                "scenes": [],
            }
        },
        "friendly_name": f"Hus B/Lgh {index + 1:03d} {description.lower()}",
        "ieee_address": ieee,
        "interview_completed": True,
        "interviewing": False,
        "manufacturer": vendor,
        "model_id": model_id,
        "network_address": 1000 + index,
        "power_source": "Battery",
        "software_build_id": "2.1.1",
        "supported": True,
        "type": "EndDevice",
    }  # fmt: skip


def publish(
    port: int, username: str, password: str, topic: str, payload: bytes, *, retain: bool = False
) -> ReasonCode:
    """One QoS 1 publish as ``username``; the PUBACK's reason code (135: not authorized)."""
    acked = threading.Event()
    codes: list[ReasonCode] = []
    connected = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bridge-{time.monotonic_ns()}", protocol=mqtt.MQTTv5
    )
    client.username_pw_set(username, password)
    client.on_connect = lambda *_args: connected.set()

    def on_publish(_c: mqtt.Client, _u: object, _mid: int, code: ReasonCode, _p: object) -> None:
        codes.append(code)
        acked.set()

    client.on_publish = on_publish
    client.connect(LOOPBACK, port, clean_start=True)
    client.loop_start()
    try:
        assert connected.wait(5), "no CONNACK"
        client.publish(topic, payload, qos=1, retain=retain)
        assert acked.wait(5), "no PUBACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return codes[0]


@dataclass
class World:
    broker: BrokerRun
    settings: Settings
    api: str
    technician: str  # a bearer token, the seeded organisation's technician
    other_admin: str  # a bearer token, another organisation's admin
    token: str

    def create_bridge(self, bridge_id: str, base_topic: str) -> str:
        """A bridge through the API; its password once the broker accepts it."""
        created = call(
            "POST",
            f"{self.api}/api/v1/bridges",
            token=self.technician,
            json_body={"id": bridge_id, "label": "Källaren", "base_topic": base_topic},
        )
        assert created.status == 201, created.body
        assert created.json()["base_topic"] == base_topic
        password: str = created.json()["credentials"]["password"]
        wait_for_connack(self.broker.port, f"zigbee2mqtt.{bridge_id}", password, accepted=True)
        return password

    def announced(self, bridge_id: str, token: str | None = None) -> ApiResponse:
        return call(
            "GET",
            f"{self.api}/api/v1/bridges/{bridge_id}/announced",
            token=token or self.technician,
        )

    def onboard_door(self, device_id: str, zigbee_name: str, bridge_id: str, **extra: str) -> None:
        """A door contact behind ``bridge_id``, onboarded as a technician does (POST /devices)."""
        onboarded = call(
            "POST",
            f"{self.api}/api/v1/devices",
            token=self.technician,
            json_body={
                "id": device_id,
                "kind": "door_contact",
                "site": f"site-{self.token}",
                "source": "zigbee2mqtt",
                "zigbee_name": zigbee_name,
                "zigbee_model": "SNZB-04",
                "bridge": bridge_id,
                **extra,
            },
        )
        assert onboarded.status == 201, onboarded.body

    def event_types(self, device_id: str) -> list[str]:
        """The types of the events stored for ``device_id``, sorted."""
        with psycopg.connect(self.settings.database_url) as conn:
            rows = conn.execute(
                "SELECT type FROM events WHERE device_id = %s ORDER BY type", (device_id,)
            ).fetchall()
        return [row[0] for row in rows]

    def announce(self, bridge_id: str, password: str, base: str, entries: list[Any]) -> None:
        code = publish(
            self.broker.port,
            f"zigbee2mqtt.{bridge_id}",
            password,
            f"{base}/bridge/devices",
            orjson.dumps(entries),
            retain=True,
        )
        assert not code.is_failure, code


@pytest.fixture
def world(
    database_url: str,
    seeded: SeededRegistry,
    make_settings: MakeSettings,
    test_token: str,
    tmp_path: Path,
) -> Iterator[World]:
    gateway_password = new_password()
    with psycopg.connect(database_url, autocommit=True) as conn:
        set_account(conn, GATEWAY_USERNAME, Role.GATEWAY, gateway_password)
        add_user(conn, f"tekla-{test_token}", seeded.org_id, "technician")
        for role in ("caregiver", "manager"):
            add_user(conn, f"{role}-{test_token}", seeded.org_id, role)
        add_org_with_sites(conn, f"annan-{test_token}", f"annan-site-{test_token}")
        add_user(conn, f"admin-annan-{test_token}", f"annan-{test_token}", "admin")
    with BrokerRun(database_url, tmp_path / "broker") as broker:
        settings = make_settings(
            database_url, mqtt_url=broker.url(GATEWAY_USERNAME, gateway_password)
        )
        with running_api(settings) as api:
            yield World(
                broker,
                settings,
                api,
                login(api, f"tekla-{test_token}"),
                login(api, f"admin-annan-{test_token}"),
                test_token,
            )


def test_a_retained_device_list_reaches_the_api_and_each_publish_replaces_it(
    world: World, tmp_path: Path
) -> None:
    """A list published before the gateway starts arrives (retained) and is listed with what
    Carewatch makes of each device; a later publish replaces it; onboarding one takes it off
    the offer; another organisation gets 404."""
    base = f"z2m-{world.token}"
    password = world.create_bridge("hub-a", base)
    world.announce("hub-a", password, base, [COORDINATOR, CONTACT, UNKNOWN, PAIRING])
    with GatewayProcess(world.settings, tmp_path / "gateway.log") as gateway:
        wait_until(
            lambda: len(world.announced("hub-a").json()["devices"]) == 4,
            20,
            context=gateway.log_tail,
        )
        listed = world.announced("hub-a").json()
        assert listed["base_topic"] == base
        by_name = {d["friendly_name"]: d for d in listed["devices"]}
        expected = {
            "ieee_address": "0x00124b00aaaaaaa1",
            "model": "SNZB-04",
            "vendor": "SONOFF",
            "interview_completed": True,
            "power_source": "Battery",
            "mapped": True,
            "kind": "door_contact",
            "device_id": None,
            "offered": True,
        }
        assert {key: by_name["hall_door"][key] for key in expected} == expected
        assert (by_name["mystery"]["mapped"], by_name["mystery"]["kind"]) == (False, None)
        assert not by_name["mystery"]["offered"]
        assert not by_name["Coordinator"]["offered"]
        assert not by_name["new_contact"]["offered"]  # its interview is not complete

        # The same way a technician would: the device onboarded through POST /devices.
        device_id = f"{world.token}-hall"
        world.onboard_door(device_id, "hall_door", "hub-a", label="Lgh 3")
        hall = next(
            d
            for d in world.announced("hub-a").json()["devices"]
            if d["friendly_name"] == "hall_door"
        )
        assert (hall["device_id"], hall["offered"]) == (device_id, False)

        # A new list replaces the old one: mystery is gone, the pairing device finished.
        world.announce(
            "hub-a",
            password,
            base,
            [COORDINATOR, CONTACT, {**PAIRING, "interview_completed": True}],
        )
        wait_until(
            lambda: len(world.announced("hub-a").json()["devices"]) == 3,
            20,
            context=gateway.log_tail,
        )
        names = {
            d["friendly_name"]: d["offered"] for d in world.announced("hub-a").json()["devices"]
        }
        assert names == {"Coordinator": False, "hall_door": False, "new_contact": True}

    # Another organisation's bridge does not exist for its admin, in the list or by id.
    assert world.announced("hub-a", world.other_admin).status == 404
    others = call("GET", f"{world.api}/api/v1/bridges", token=world.other_admin).json()
    assert others == []


def test_a_device_list_far_over_64_kib_gets_through_the_shipped_broker(
    world: World, tmp_path: Path
) -> None:
    """A bridge of 100 devices publishes its list as zigbee2mqtt does (each entry with its
    definition and exposes): over the 64 KiB the broker once allowed, accepted by the shipped
    broker/mosquitto.conf, and every device is listed through the API."""
    base = f"z2m-{world.token}"
    password = world.create_bridge("hub-big", base)
    entries = [realistic_entry(index) for index in range(100)]
    assert len(orjson.dumps(entries)) > 64 * 1024
    world.announce("hub-big", password, base, entries)  # a refused publish fails here
    with GatewayProcess(world.settings, tmp_path / "gateway.log") as gateway:
        wait_until(
            lambda: len(world.announced("hub-big").json()["devices"]) == 100,
            20,
            context=gateway.log_tail,
        )
    listed = world.announced("hub-big").json()["devices"]
    assert sorted(d["friendly_name"] for d in listed) == sorted(e["friendly_name"] for e in entries)
    assert {d["model"] for d in listed} == set(_REALISTIC_MODELS)
    assert all(d["mapped"] and d["offered"] for d in listed)


def test_a_bridge_added_while_the_gateway_runs_gets_its_base_topic_followed(
    world: World, tmp_path: Path
) -> None:
    """A second bridge on its own base topic, created after the gateway started: its device's
    reports are stored and its list is read; it may publish under its own base only."""
    base_a, base_b = f"z2m-a-{world.token}", f"building-b/z2m-{world.token}"
    password_a = world.create_bridge("hub-a", base_a)
    with GatewayProcess(world.settings, tmp_path / "gateway.log") as gateway:
        password_b = world.create_bridge("hub-b", base_b)
        device_id = f"{world.token}-door-b"
        world.onboard_door(device_id, "back_door", "hub-b")
        user_b = "zigbee2mqtt.hub-b"
        state = orjson.dumps({"contact": False, "battery": 90, "linkquality": 60})

        def stored_b() -> list[str]:
            # The broker grants the new device's topic once its files are re-rendered, and the
            # gateway subscribes under the new base within a registry refresh: publish until
            # both have happened (a refused or unsubscribed message is simply not stored).
            publish(world.broker.port, user_b, password_b, f"{base_b}/back_door", state)
            return world.event_types(device_id)

        wait_until(lambda: "door.opened" in stored_b(), 20, context=gateway.log_tail)
        world.announce("hub-b", password_b, base_b, [CONTACT])
        wait_until(
            lambda: len(world.announced("hub-b").json()["devices"]) == 1,
            20,
            context=gateway.log_tail,
        )
        assert world.announced("hub-a").json()["devices"] == []

    # The broker keeps each bridge to its own base topic and its own devices.
    for topic in (
        f"{base_a}/back_door",
        f"{base_a}/bridge/devices",
        "zigbee2mqtt/back_door",
        "zigbee2mqtt/bridge/devices",
        f"{base_b}/bridge/state",
    ):
        assert publish(world.broker.port, user_b, password_b, topic, b"[]").value == (
            NOT_AUTHORIZED
        ), topic
    assert not publish(
        world.broker.port, "zigbee2mqtt.hub-a", password_a, f"{base_a}/bridge/devices", b"[]"
    ).is_failure


def test_a_bridge_moved_to_another_base_topic_is_followed_there(
    world: World, tmp_path: Path
) -> None:
    """PATCH /bridges/{id} with a new base topic while the gateway runs: the broker lets the
    bridge publish under the new base and no longer the old, the gateway stores its device's
    reports and its list from there, and the list from the old base is forgotten."""
    old_base, new_base = f"z2m-old-{world.token}", f"hus-c/z2m-{world.token}"
    password = world.create_bridge("hub-c", old_base)
    device_id = f"{world.token}-door-c"
    world.onboard_door(device_id, "Lgh 7/ytterdörr", "hub-c")
    user = "zigbee2mqtt.hub-c"
    with GatewayProcess(world.settings, tmp_path / "gateway.log") as gateway:
        world.announce("hub-c", password, old_base, [COORDINATOR, CONTACT])
        wait_until(
            lambda: len(world.announced("hub-c").json()["devices"]) == 2,
            20,
            context=gateway.log_tail,
        )
        moved = call(
            "PATCH",
            f"{world.api}/api/v1/bridges/hub-c",
            token=world.technician,
            json_body={"base_topic": new_base},
        )
        assert moved.status == 200, moved.body
        assert (moved.json()["base_topic"], moved.json()["active_devices"]) == (new_base, 1)
        assert world.announced("hub-c").json() == {
            "id": "hub-c",
            "base_topic": new_base,
            "received_at": None,
            "devices": [],
        }
        state = orjson.dumps({"contact": False, "battery": 90, "linkquality": 60})

        def door_events() -> list[str]:
            # Publish until the broker's files are re-rendered and the gateway has subscribed
            # under the new base (before that a message is refused or not delivered).
            publish(world.broker.port, user, password, f"{new_base}/Lgh 7/ytterdörr", state)
            return world.event_types(device_id)

        wait_until(lambda: "door.opened" in door_events(), 20, context=gateway.log_tail)
        world.announce("hub-c", password, new_base, [COORDINATOR, CONTACT, UNKNOWN])
        wait_until(
            lambda: len(world.announced("hub-c").json()["devices"]) == 3,
            20,
            context=gateway.log_tail,
        )
    for topic in (f"{old_base}/Lgh 7/ytterdörr", f"{old_base}/bridge/devices"):
        assert publish(world.broker.port, user, password, topic, b"[]").value == (NOT_AUTHORIZED), (
            topic
        )
    with psycopg.connect(world.settings.database_url) as conn:
        audited = conn.execute(
            "SELECT note FROM audit_log WHERE action = 'bridge.base_topic'"
        ).fetchall()
    assert audited == [(f"zigbee2mqtt.hub-c from {old_base}/ to {new_base}/",)]


def test_a_base_topic_is_changed_with_the_checks_of_its_creation(world: World) -> None:
    """PATCH /bridges/{id}: the shapes creation refuses are 422, another bridge's base topic
    (of any organisation) or one overlapping it 409, its own base topic again 200 with nothing
    changed; another organisation's bridge 404; a caregiver 403."""
    world.create_bridge("hub-1", f"z2m-{world.token}")
    world.create_bridge("hub-2", f"z2m-2-{world.token}")

    def patch(base_topic: str, bridge_id: str = "hub-2", token: str | None = None) -> ApiResponse:
        return call(
            "PATCH",
            f"{world.api}/api/v1/bridges/{bridge_id}",
            token=token or world.technician,
            json_body={"base_topic": base_topic},
        )

    for bad in ("z2m/+", "z2m/#", "z2m//a", "/z2m", "z2m/", "carewatch/x", "$SYS/z", "a b"):
        assert patch(bad).status == 422, bad
    for taken in (f"z2m-{world.token}", f"z2m-{world.token}/floor2", "zigbee2mqtt/floor2"):
        response = patch(taken)
        assert response.status == 409, (taken, response.body)
    assert patch(f"z2m-2-{world.token}").status == 200
    assert patch(f"z2m-2-{world.token}/hus-a").status == 200  # nested only in its own old one
    assert patch("zigbee2mqtt").status == 200  # the default may be shared
    assert patch(f"z2m-x-{world.token}", token=world.other_admin).status == 404
    caregiver = login(world.api, f"caregiver-{world.token}")
    assert patch(f"z2m-x-{world.token}", token=caregiver).status == 403
    listed = call("GET", f"{world.api}/api/v1/bridges", token=world.technician).json()
    assert {b["id"]: b["base_topic"] for b in listed} == {
        "hub-1": f"z2m-{world.token}",
        "hub-2": "zigbee2mqtt",
    }


def test_base_topics_that_would_name_one_topic_twice_are_refused(world: World) -> None:
    """Wildcards, empty levels and the devices' namespace are 422; another bridge's base topic
    (of any organisation) and one nested in another are 409; the default may be shared."""
    for bad in ("z2m/+", "z2m/#", "z2m//a", "/z2m", "z2m/", "carewatch/x", "$SYS/z", "a b"):
        response = call(
            "POST",
            f"{world.api}/api/v1/bridges",
            token=world.technician,
            json_body={"id": "hub-bad", "base_topic": bad},
        )
        assert response.status == 422, (bad, response.body)
    world.create_bridge("hub-1", f"z2m-{world.token}")
    for taken in (f"z2m-{world.token}", f"z2m-{world.token}/floor2", "zigbee2mqtt/floor2"):
        response = call(
            "POST",
            f"{world.api}/api/v1/bridges",
            token=world.other_admin,
            json_body={"id": "hub-2", "base_topic": taken},
        )
        assert response.status == 409, (taken, response.body)
    world.create_bridge("hub-d1", "zigbee2mqtt")
    world.create_bridge("hub-d2", "zigbee2mqtt")


def test_only_the_organisations_onboarders_see_what_its_bridges_announced(world: World) -> None:
    """Technicians and admins of the bridge's organisation: 200; its caregivers and managers:
    403; another organisation's admin: 404, as for a bridge that does not exist; no token: 401."""
    world.create_bridge("hub-a", f"z2m-{world.token}")
    listed = world.announced("hub-a")
    assert listed.status == 200
    assert listed.json() == {
        "id": "hub-a",
        "base_topic": f"z2m-{world.token}",
        "received_at": None,
        "devices": [],
    }
    for role in ("caregiver", "manager"):
        assert world.announced("hub-a", login(world.api, f"{role}-{world.token}")).status == 403
    assert world.announced("hub-a", world.other_admin).status == 404
    assert world.announced("no-such-hub").status == 404
    assert call("GET", f"{world.api}/api/v1/bridges/hub-a/announced").status == 401


def test_a_bridge_account_set_from_the_shell_gets_its_base_topic_checked(
    database_url: str, seeded: SeededRegistry
) -> None:
    """``carewatch broker account set --base-topic``: the same checks as the API; without it
    a new bridge is on the default and an existing one keeps its base topic; moving one drops
    what it announced under the old base."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        set_account(
            conn,
            "zigbee2mqtt.hub-a",
            Role.ZIGBEE2MQTT_BRIDGE,
            "pw",
            org_id=seeded.org_id,
            base_topic="z2m-a",
        )
        set_account(conn, "zigbee2mqtt.hub-a", Role.ZIGBEE2MQTT_BRIDGE, "pw2", org_id=seeded.org_id)
        set_account(conn, "zigbee2mqtt.hub-d", Role.ZIGBEE2MQTT_BRIDGE, "pw", org_id=seeded.org_id)
        for bad, why in (("z2m-a", "another bridge"), ("z2m-a/x", "overlaps"), ("a+b", "levels")):
            with pytest.raises(AdminError, match=why):
                set_account(
                    conn,
                    "zigbee2mqtt.hub-b",
                    Role.ZIGBEE2MQTT_BRIDGE,
                    "pw",
                    org_id=seeded.org_id,
                    base_topic=bad,
                )
        rows = conn.execute(
            "SELECT username, base_topic FROM broker_accounts ORDER BY username"
        ).fetchall()
        assert rows == [("zigbee2mqtt.hub-a", "z2m-a"), ("zigbee2mqtt.hub-d", "zigbee2mqtt")]

        def announced_lists() -> list[tuple[object, ...]]:
            return conn.execute("SELECT bridge FROM bridge_announcements ORDER BY 1").fetchall()

        for bridge in ("zigbee2mqtt.hub-a", "zigbee2mqtt.hub-d"):
            conn.execute(
                "INSERT INTO bridge_announcements (bridge, received_at) VALUES (%s, now())",
                (bridge,),
            )
        set_account(
            conn, "zigbee2mqtt.hub-a", Role.ZIGBEE2MQTT_BRIDGE, "pw3", org_id=seeded.org_id,
            base_topic="z2m-a",
        )  # fmt: skip
        assert announced_lists() == [("zigbee2mqtt.hub-a",), ("zigbee2mqtt.hub-d",)]
        set_account(
            conn, "zigbee2mqtt.hub-a", Role.ZIGBEE2MQTT_BRIDGE, "pw4", org_id=seeded.org_id,
            base_topic="z2m-a2",
        )  # fmt: skip
        assert announced_lists() == [("zigbee2mqtt.hub-d",)]
