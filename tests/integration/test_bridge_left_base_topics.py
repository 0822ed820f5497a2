"""A base topic a bridge left keeps its retained device list in the broker (issue 13, migration
0017): another organisation may not take it until an operator clears it with ``carewatch broker
clear-announcement``; then the broker holds nothing there and the new bridge's announced list
stays empty until its own zigbee2mqtt publishes. Real broker, gateway and API."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from app.cli import main
from broker.accounts import set_account
from broker.auth_files import Role
from broker.left_base_topics import clear_announcement
from carewatch.broker_passwords import new_password
from carewatch.errors import AdminError
from carewatch.processes import LOOPBACK
from tests.fixtures.api_client import ApiResponse, call
from tests.fixtures.broker import wait_for_connack
from tests.fixtures.gateway_process import GatewayProcess, wait_until
from tests.integration import test_zigbee2mqtt_discovery
from tests.integration.test_zigbee2mqtt_discovery import (
    CONTACT,
    COORDINATOR,
    UNKNOWN,
    World,
)

# The discovery tests' fixture: the broker synced from the database, the API, two organisations.
world = test_zigbee2mqtt_discovery.world
# A retained message reaches a new subscriber right after its SUBACK; this is ample.
RETAINED_WAIT_S = 1.0


def retained_on(port: int, username: str, password: str, topic: str) -> list[bytes] | None:
    """What a fresh MQTT 5 subscriber gets on ``topic`` at once (the retained message, if the
    broker holds one); None while the ACL refuses the subscription."""
    subscribed = threading.Event()
    granted: list[bool] = []
    payloads: list[bytes] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"fresh-{time.monotonic_ns()}", protocol=mqtt.MQTTv5
    )
    client.username_pw_set(username, password)

    def on_subscribe(
        _c: mqtt.Client, _u: object, _mid: int, codes: list[ReasonCode], _p: object
    ) -> None:
        granted.append(not codes[0].is_failure)
        subscribed.set()

    client.on_connect = lambda c, *_args: c.subscribe(topic, qos=1)
    client.on_subscribe = on_subscribe
    client.on_message = lambda _c, _u, message: payloads.append(bytes(message.payload))
    client.connect(LOOPBACK, port, clean_start=True)
    client.loop_start()
    try:
        assert subscribed.wait(5), "no SUBACK"
        if not granted[0]:
            return None
        time.sleep(RETAINED_WAIT_S)
    finally:
        client.disconnect()
        client.loop_stop()
    return payloads


def bridge_of_other_org(world: World, bridge_id: str, base_topic: str) -> ApiResponse:
    return call(
        "POST",
        f"{world.api}/api/v1/bridges",
        token=world.other_admin,
        json_body={"id": bridge_id, "label": "Annexet", "base_topic": base_topic},
    )


def move(world: World, bridge_id: str, base_topic: str, token: str) -> ApiResponse:
    return call(
        "PATCH",
        f"{world.api}/api/v1/bridges/{bridge_id}",
        token=token,
        json_body={"base_topic": base_topic},
    )


def test_a_left_base_topic_is_refused_to_other_organisations_until_an_operator_clears_it(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Org A's bridge announces on X and moves to Y: org B creating or moving a bridge to X is
    409 (the shell refuses too), A may move back; the operator's clear-announcement deletes the
    retained list, then B takes X and nothing is stored for B until B's bridge announces."""
    base_x, base_y = f"z2m-x-{world.token}", f"z2m-y-{world.token}"
    password_a = world.create_bridge("hub-a", base_x)
    gateway_url = world.settings.mqtt
    assert gateway_url.username is not None
    assert gateway_url.password is not None
    as_gateway = (world.broker.port, gateway_url.username, gateway_url.password)
    with GatewayProcess(world.settings, tmp_path / "gateway.log") as gateway:
        world.announce("hub-a", password_a, base_x, [COORDINATOR, CONTACT])
        wait_until(
            lambda: len(world.announced("hub-a").json()["devices"]) == 2,
            20,
            context=gateway.log_tail,
        )
        assert move(world, "hub-a", base_y, world.technician).status == 200

        refused = bridge_of_other_org(world, "hub-b", base_x)
        assert refused.status == 409, refused.body
        assert f"carewatch broker clear-announcement {base_x}" in refused.json()["detail"]
        created = bridge_of_other_org(world, "hub-b", f"z2m-b-{world.token}")
        assert created.status == 201, created.body
        password_b: str = created.json()["credentials"]["password"]
        assert move(world, "hub-b", base_x, world.other_admin).status == 409
        with (
            psycopg.connect(world.settings.database_url, autocommit=True) as conn,
            pytest.raises(AdminError, match="clear-announcement"),
        ):
            set_account(
                conn, "zigbee2mqtt.hub-s", Role.ZIGBEE2MQTT_BRIDGE, "pw",
                org_id=f"annan-{world.token}", base_topic=base_x,
            )  # fmt: skip

        # The same organisation may take it back: the list there is its own, and still held.
        assert move(world, "hub-a", base_x, world.technician).status == 200
        topic = f"{base_x}/bridge/devices"
        wait_until(lambda: retained_on(*as_gateway, topic) is not None, 10)
        assert retained_on(*as_gateway, topic) == [orjson.dumps([COORDINATOR, CONTACT])]
        assert move(world, "hub-a", base_y, world.technician).status == 200

        operator_password = new_password()
        with psycopg.connect(world.settings.database_url, autocommit=True) as conn:
            set_account(conn, "carewatch.operator", Role.OPERATOR, operator_password)
            wait_for_connack(
                world.broker.port, "carewatch.operator", operator_password, accepted=True
            )
            # A bridge may not clear it (nor may anyone but an operator): the table stays.
            with pytest.raises(AdminError, match="refused"):
                clear_announcement(
                    conn, world.settings.mqtt, "zigbee2mqtt.hub-b", password_b, base_x
                )
        monkeypatch.setattr("sys.stdin", io.StringIO(operator_password + "\n"))
        cleared = main(
            [
                "broker", "clear-announcement", base_x, "--password-stdin",
                "--database-url", world.settings.database_url,
                "--mqtt-url", f"mqtt://{LOOPBACK}:{world.broker.port}",
            ]
        )  # fmt: skip
        assert cleared == 0
        with (
            psycopg.connect(world.settings.database_url, autocommit=True) as conn,
            pytest.raises(AdminError, match="nothing to clear"),
        ):
            clear_announcement(
                conn, world.settings.mqtt, "carewatch.operator", operator_password, base_x
            )

        assert move(world, "hub-b", base_x, world.other_admin).status == 200
        wait_until(lambda: retained_on(*as_gateway, topic) is not None, 10)
        assert retained_on(*as_gateway, topic) == []
        # Many registry refreshes (0.2 s): the gateway follows X by now, and stores nothing.
        time.sleep(2)
        assert world.announced("hub-b", world.other_admin).json() == {
            "id": "hub-b",
            "base_topic": base_x,
            "received_at": None,
            "devices": [],
        }
        world.announce("hub-b", password_b, base_x, [UNKNOWN])
        wait_until(
            lambda: len(world.announced("hub-b", world.other_admin).json()["devices"]) == 1,
            20,
            context=gateway.log_tail,
        )


def test_a_bridge_on_a_base_topic_another_organisation_left_gets_no_list_stored_until_cleared(
    world: World, tmp_path: Path
) -> None:
    """A bridge already on the topic when another organisation's bridge left it (the shared
    default, or an organisation changed from the shell): the retained list there may be the
    other's, so the gateway stores none for it until the operator has cleared the topic."""
    base, control_base = f"z2m-shared-{world.token}", f"z2m-control-{world.token}"
    password = world.create_bridge("hub-s", base)
    control_password = world.create_bridge("hub-t", control_base)
    with psycopg.connect(world.settings.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO bridge_left_base_topics (base_topic, org_id) VALUES (%s, 'another-org')",
            (base,),
        )
    with GatewayProcess(world.settings, tmp_path / "gateway.log") as gateway:
        world.announce("hub-s", password, base, [COORDINATOR, CONTACT])
        # Published after it: once the control's list is stored, the gateway has had both.
        world.announce("hub-t", control_password, control_base, [COORDINATOR])
        wait_until(
            lambda: len(world.announced("hub-t").json()["devices"]) == 1,
            20,
            context=gateway.log_tail,
        )
        assert world.announced("hub-s").json()["devices"] == []
        with psycopg.connect(world.settings.database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM bridge_left_base_topics WHERE base_topic = %s", (base,))
        world.announce("hub-s", password, base, [COORDINATOR, CONTACT])
        wait_until(
            lambda: len(world.announced("hub-s").json()["devices"]) == 2,
            20,
            context=gateway.log_tail,
        )
