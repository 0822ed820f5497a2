"""The broker enforces who may speak for which device (issue 4), with the shipped configuration
run as production runs it: ``carewatch broker run``, identities synced from the database.

No anonymous client connects; a device publishes only under its own id, and what it tries to
publish for another device never reaches anyone; a decommissioned device is cut off at once;
gateways only read; a zigbee2mqtt bridge speaks only for its own devices.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from broker.accounts import set_account
from broker.auth_files import Role
from carewatch.broker_passwords import hash_password, new_password
from carewatch.errors import AdminError
from tests.fixtures.broker import BrokerRun, Probe, connack, wait_for_connack
from tests.fixtures.gateway_process import GatewayProcess, wait_until
from tests.fixtures.mqtt import envelope, events_topic, status_topic
from tests.fixtures.services import MakeSettings, SeededRegistry
from tools.local.identities import GATEWAY_USERNAME
from tools.local.postgres import PostgresInstance

NOT_AUTHORIZED = 135
# What a CONNECT with wrong credentials gets: MQTT 5 has "Bad user name or password" (134);
# Mosquitto 2.0 answers "Not authorized" (135). Either is a refusal.
REFUSED = {134, NOT_AUTHORIZED}


@dataclass
class World:
    broker: BrokerRun
    database_url: str
    gateway_password: str
    lock: str
    lock_password: str
    other: str
    other_password: str

    def probe(self, username: str | None, password: str | None) -> Probe:
        probe = Probe(self.broker.port, username, password)
        code = probe.connect()
        assert not code.is_failure, f"{username} refused: {code}"
        return probe

    def gateway_probe(self) -> Probe:
        return self.probe(GATEWAY_USERNAME, self.gateway_password)


def issue_credentials(database_url: str, device_id: str) -> str:
    password = new_password()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE devices SET mqtt_password_hash = %s, credentials_issued_at = now()"
            " WHERE id = %s",
            (hash_password(password), device_id),
        )
    return password


def start_world(
    database_url: str, seeded: SeededRegistry, directory: Path
) -> Generator[World, None, None]:
    gateway_password = new_password()
    with psycopg.connect(database_url, autocommit=True) as conn:
        set_account(conn, GATEWAY_USERNAME, Role.GATEWAY, gateway_password)
    lock, other = seeded.device("door_lock", 0), seeded.device("door_lock", 1)
    lock_password = issue_credentials(database_url, lock)
    other_password = issue_credentials(database_url, other)
    with BrokerRun(database_url, directory) as broker:
        yield World(
            broker, database_url, gateway_password, lock, lock_password, other, other_password
        )


@pytest.fixture
def world(database_url: str, seeded: SeededRegistry, tmp_path: Path) -> Iterator[World]:
    yield from start_world(database_url, seeded, tmp_path / "broker")


def test_an_anonymous_client_cannot_connect(world: World) -> None:
    assert connack(world.broker.port, None, None).value == NOT_AUTHORIZED


def test_a_wrong_password_or_unknown_user_cannot_connect(world: World) -> None:
    assert connack(world.broker.port, world.lock, "not-the-password").value in REFUSED
    assert connack(world.broker.port, "nobody-0001", world.lock_password).value in REFUSED
    # A device that was registered but never given credentials cannot connect either.
    assert connack(world.broker.port, "admin", "").is_failure


def test_a_device_publishing_with_its_own_credentials_is_stored(
    world: World, make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(
        world.database_url,
        mqtt_url=world.broker.url(GATEWAY_USERNAME, world.gateway_password),
    )
    device = world.probe(world.lock, world.lock_password)
    with GatewayProcess(settings, tmp_path / "gateway.log") as gateway:
        locked = envelope("own-1", "lock.locked", {"by": "staff-1", "method": "app"})
        code = device.publish(events_topic(world.lock), locked)
        assert not code.is_failure
        wait_until(lambda: stored_events(world.database_url, world.lock) == ["own-1"], 20,
                   context=gateway.log_tail)  # fmt: skip
    device.close()


def test_a_device_cannot_publish_as_another_device(
    world: World, make_settings: MakeSettings, tmp_path: Path
) -> None:
    """The broker refuses it (PUBACK 'Not authorized') and the message reaches nobody: not a
    gateway's subscription, not the database."""
    listener = world.gateway_probe()
    assert not listener.subscribe("carewatch/devices/+/events").is_failure
    settings = make_settings(
        world.database_url,
        mqtt_url=world.broker.url(GATEWAY_USERNAME, world.gateway_password),
    )
    device = world.probe(world.lock, world.lock_password)
    with GatewayProcess(settings, tmp_path / "gateway.log") as gateway:
        unlocked = envelope("forged-1", "lock.unlocked", {"by": "x", "method": "app"})
        forged = device.publish(events_topic(world.other), unlocked)
        forged_status = device.publish(status_topic(world.other), b"offline")
        # Then a message of its own: messages of one client arrive in order, so once this one
        # is in, the forged ones would have been too.
        own = device.publish(events_topic(world.lock), envelope("own-2"))
        assert forged.value == NOT_AUTHORIZED
        assert forged_status.value == NOT_AUTHORIZED
        assert not own.is_failure
        wait_until(lambda: stored_events(world.database_url, world.lock) == ["own-2"], 20,
                   context=gateway.log_tail)  # fmt: skip
        wait_until(lambda: len(listener.received) >= 1, 10)
    assert [topic for topic, _ in listener.received] == [events_topic(world.lock)]
    assert stored_events(world.database_url, world.other) == []
    with psycopg.connect(world.database_url) as conn:
        online = conn.execute("SELECT online FROM devices WHERE id = %s", (world.other,))
        assert online.fetchone() == (False,)
    device.close()
    listener.close()


def test_a_device_receives_nothing_even_when_it_subscribes_to_everything(world: World) -> None:
    """Mosquitto's ACL file grants a SUBSCRIBE but checks read access on every delivery: a
    device, which may read nothing, gets nothing, so it cannot listen to other devices."""
    eavesdropper = world.probe(world.lock, world.lock_password)
    for topic in ("#", "carewatch/devices/+/events", f"carewatch/devices/{world.other}/#"):
        eavesdropper.subscribe(topic)
    gateway = world.gateway_probe()
    gateway.subscribe("carewatch/devices/+/events")
    other = world.probe(world.other, world.other_password)
    assert not other.publish(events_topic(world.other), envelope("o-1")).is_failure
    wait_until(lambda: len(gateway.received) == 1, 10)
    time.sleep(0.2)  # the same broker pass delivers to every matching subscriber
    assert eavesdropper.received == []
    for probe in (eavesdropper, gateway, other):
        probe.close()


def test_a_gateway_can_read_but_cannot_publish(world: World) -> None:
    gateway = world.gateway_probe()
    assert not gateway.subscribe("$share/g1/carewatch/devices/+/events").is_failure
    assert not gateway.subscribe("carewatch/devices/+/status").is_failure
    assert gateway.publish(events_topic(world.lock), envelope("gw-1")).value == NOT_AUTHORIZED
    assert gateway.publish(status_topic(world.lock), b"offline").value == NOT_AUTHORIZED
    gateway.close()


def test_a_decommissioned_device_is_cut_off_at_once_and_cannot_connect_again(world: World) -> None:
    device = world.probe(world.lock, world.lock_password)
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE devices SET status = 'decommissioned', decommissioned_at = now(),"
            " mqtt_password_hash = NULL WHERE id = %s",
            (world.lock,),
        )
    # The sync hears the change, rewrites the files and reloads: the live session ends.
    assert device.disconnected.wait(10), "the decommissioned device is still connected"
    assert connack(world.broker.port, world.lock, world.lock_password).is_failure
    # Everybody else is untouched.
    other = world.probe(world.other, world.other_password)
    other.close()
    device.close()


def test_new_and_rotated_credentials_take_effect_without_a_restart(world: World) -> None:
    old_password = world.lock_password
    new = issue_credentials(world.database_url, world.lock)
    wait_for_connack(world.broker.port, world.lock, new, accepted=True)
    assert connack(world.broker.port, world.lock, old_password).is_failure


def test_a_zigbee2mqtt_bridge_speaks_only_for_its_own_devices(
    world: World, seeded: SeededRegistry
) -> None:
    bridge_password = new_password()
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        set_account(conn, "zigbee2mqtt.hub-1", Role.ZIGBEE2MQTT_BRIDGE, bridge_password,
                    org_id=seeded.org_id)  # fmt: skip
        conn.execute(
            "INSERT INTO devices (id, kind, site_id, source, zigbee_name, zigbee_model, bridge)"
            " VALUES ('zb-door-1', 'door_lock', %s, 'zigbee2mqtt', 'front_door', 'YRD256HA20BP',"
            " 'zigbee2mqtt.hub-1')",
            (seeded.site_id,),
        )
    wait_for_connack(world.broker.port, "zigbee2mqtt.hub-1", bridge_password, accepted=True)
    bridge = world.probe("zigbee2mqtt.hub-1", bridge_password)
    assert not bridge.publish("zigbee2mqtt/front_door", b'{"lock_state":"locked"}').is_failure
    assert not bridge.publish("zigbee2mqtt/front_door/availability", b"online").is_failure
    for topic in ("zigbee2mqtt/back_door", "zigbee2mqtt/bridge/state", events_topic(world.lock)):
        assert bridge.publish(topic, b"{}").value == NOT_AUTHORIZED, topic
    bridge.close()


def test_no_device_can_take_a_service_name_and_no_service_a_device_id(
    world: World, seeded: SeededRegistry
) -> None:
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO devices (id, kind, site_id)"
                " VALUES ('carewatch.gateway', 'door_lock', %s)",
                (seeded.site_id,),
            )
        with pytest.raises(AdminError, match="needs a dot"):
            set_account(conn, world.lock, Role.GATEWAY, "x")


def test_identities_outlive_a_database_outage(
    private_pg: PostgresInstance,
    private_database_url: str,
    private_seeded: SeededRegistry,
    tmp_path: Path,
) -> None:
    """The broker keeps the identities it last had while the database is away, even across a
    restart of the broker, and catches up when the database is back."""
    worlds = start_world(private_database_url, private_seeded, tmp_path / "broker")
    world = next(worlds)
    private_pg.stop()
    world.broker.stop()
    world.broker.start()  # the database is down: the files of the last sync serve
    time.sleep(0.5)
    assert not connack(world.broker.port, world.lock, world.lock_password).is_failure
    private_pg.start()
    newer = issue_credentials(private_database_url, world.other)
    wait_for_connack(world.broker.port, world.other, newer, accepted=True, timeout_s=30)
    worlds.close()


def stored_events(database_url: str, device_id: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT event_id FROM events WHERE device_id = %s ORDER BY time", (device_id,)
        ).fetchall()
    return [str(row[0]) for row in rows]


def _mosquittos_of(directory: Path) -> list[int]:
    """Pids of Mosquitto processes running with the configuration under ``directory``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(directory).encode() in arg for arg in argv) and b"mosquitto" in argv[0]:
            pids.append(int(proc.name))
    return pids


def test_broker_run_stopped_at_once_takes_its_broker_with_it(
    database_url: str, tmp_path: Path
) -> None:
    """A SIGTERM that comes as soon as the broker listens still stops Mosquitto with it."""
    for attempt in range(5):
        directory = tmp_path / f"broker-{attempt}"
        with BrokerRun(database_url, directory) as broker:
            assert _mosquittos_of(directory), broker.log()
        deadline = time.monotonic() + 10
        while _mosquittos_of(directory) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _mosquittos_of(directory) == [], f"attempt {attempt}: Mosquitto outlived its owner"
