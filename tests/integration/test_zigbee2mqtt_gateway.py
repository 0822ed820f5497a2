"""Devices behind zigbee2mqtt through the real gateway: zigbee2mqtt payloads published over MQTT
become stored events and alerts (jam, water leak, offline, a door open at night)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, cast

import orjson
import psycopg
import pytest

from carewatch.broker_passwords import hash_password
from carewatch.processes import free_port
from carewatch.settings import Settings
from devices.zigbee2mqtt import DEFAULT_MAPPING
from tests.fixtures.api_client import module_database
from tests.fixtures.gateway_process import GatewayProcess, wait_until
from tests.fixtures.mqtt import publish_all
from tests.fixtures.services import MakeSettings, SeededRegistry, end_mqtt_session, seed_registry
from tests.integration.test_gateway_alerts import alerts_of
from tests.unit.test_zigbee2mqtt import DEVICES, REAL_PAYLOADS
from tools.local.postgres import PostgresInstance

# 0.3 s watchdog: the clock-driven rules (door_left_open) run often enough to wait for.
WATCHDOG_S = 0.3


@pytest.fixture
def settings(make_settings: MakeSettings, database_url: str) -> Settings:
    """This test's settings, with a fast watchdog."""
    return make_settings(database_url, watchdog_interval_s=WATCHDOG_S)


@pytest.fixture
def gateway(settings: Settings, tmp_path: Path) -> Iterator[GatewayProcess]:
    with GatewayProcess(settings, tmp_path / "gateway.log") as process:
        yield process


def bridge_account(database_url: str, seeded: SeededRegistry) -> str:
    """A zigbee2mqtt bridge account of the seeded organisation."""
    username = f"{seeded.site_id}.z2m"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO broker_accounts (username, role, org_id, password_hash)"
            " VALUES (%s, 'zigbee2mqtt_bridge', %s, %s) ON CONFLICT DO NOTHING",
            (username, seeded.org_id, hash_password("x", iterations=1000)),
        )
    return username


def add_zigbee_device(
    database_url: str, seeded: SeededRegistry, device_id: str, kind: str, name: str, model: str
) -> None:
    """Onboard a device behind the seeded organisation's bridge, by SQL."""
    bridge = bridge_account(database_url, seeded)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO devices (id, kind, site_id, label, source, zigbee_name, zigbee_model,"
            " bridge) VALUES (%s, %s, %s, 'Lgh 1', 'zigbee2mqtt', %s, %s, %s)",
            (device_id, kind, seeded.site_id, name, model, bridge),
        )


def events_of(database_url: str, device_id: str) -> list[tuple[str, dict[str, Any]]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT type, data FROM events WHERE device_id = %s ORDER BY time, event_id",
            (device_id,),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def dead_letters(database_url: str) -> list[tuple[str, str]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT topic, reason FROM dead_letters ORDER BY received_at"
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def state(name: str, **properties: object) -> tuple[str, bytes]:
    return f"zigbee2mqtt/{name}", orjson.dumps(properties)


def test_a_lock_jam_opens_lock_jammed_and_locking_clears_it(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """An ID Lock reporting lock_state not_fully_locked: heartbeat and lock.jammed stored,
    lock_jammed open (high); lock_state locked clears it."""
    url = settings.database_url
    add_zigbee_device(url, seeded, "zlock-0001", "door_lock", "front_door_lock", "0402946")
    jam = {"battery": 88, "linkquality": 72, "lock_state": "not_fully_locked", "state": "UNLOCK"}
    publish_all(publisher_url, [state("front_door_lock", **jam)])
    wait_until(lambda: [a["rule"] for a in alerts_of(url, "zlock-0001")] == ["lock_jammed"])
    assert events_of(url, "zlock-0001") == [
        ("heartbeat", {"battery": 88, "linkquality": 72}),
        ("lock.jammed", {}),
    ]
    assert alerts_of(url, "zlock-0001")[0]["severity"] == "high"
    publish_all(publisher_url, [state("front_door_lock", battery=88, lock_state="locked")])
    wait_until(lambda: alerts_of(url, "zlock-0001")[0]["cleared"] is True)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT battery FROM devices WHERE id = 'zlock-0001'").fetchone()
    assert row == (88,)


def test_a_water_leak_is_one_critical_alert_however_often_reported(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """water_leak true, reported three times: every report stored, one critical alert, count
    1; dry clears it (cleared until acknowledged)."""
    url = settings.database_url
    add_zigbee_device(url, seeded, "zwater-0001", "water_sensor", "kitchen_leak", "SJCGQ11LM")
    leak = {"battery": 97, "battery_low": False, "linkquality": 87, "water_leak": True}
    for i in range(3):  # three reports (identical bytes in one network read would be one)
        publish_all(publisher_url, [state("kitchen_leak", **{**leak, "linkquality": 87 + i})])
    wait_until(lambda: len(events_of(url, "zwater-0001")) == 6)
    [alert] = alerts_of(url, "zwater-0001")
    assert (alert["rule"], alert["severity"], alert["count"]) == ("water_leak", "critical", 1)
    publish_all(publisher_url, [state("kitchen_leak", **{**leak, "water_leak": False})])
    wait_until(lambda: alerts_of(url, "zwater-0001")[0]["cleared"] is True)
    assert events_of(url, "zwater-0001")[-1] == ("water.leak_cleared", {})


def test_availability_offline_opens_device_offline_and_online_clears(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """zigbee2mqtt/<name>/availability {"state":"offline"} opens device_offline (critical for a
    smoke detector); the legacy plain "online" clears it."""
    url = settings.database_url
    add_zigbee_device(url, seeded, "zsmoke-0001", "smoke_detector", "hall_smoke", "HS1SA")
    publish_all(publisher_url, [("zigbee2mqtt/hall_smoke/availability", b'{"state":"offline"}')])
    wait_until(lambda: [a["rule"] for a in alerts_of(url, "zsmoke-0001")] == ["device_offline"])
    assert alerts_of(url, "zsmoke-0001")[0]["severity"] == "critical"
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT online FROM devices WHERE id = 'zsmoke-0001'").fetchone()
    assert row == (False,)
    publish_all(publisher_url, [("zigbee2mqtt/hall_smoke/availability", b"online")])
    wait_until(lambda: alerts_of(url, "zsmoke-0001")[0]["cleared"] is True)


def night_zone_now() -> str:
    """An Etc/GMT zone in which it is now 23:xx or 00:xx: night by the catalog's 22-07."""
    hour = datetime.now(UTC).hour
    for offset in range(-12, 15):
        if (hour + offset) % 24 == 23 and -14 <= -offset <= 12:
            # Etc/GMT-N is N hours *ahead* of UTC (POSIX sign).
            return f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT"
    return "Etc/GMT"  # unreachable: some offset always fits


def test_a_door_open_at_night_opens_door_left_open_and_closing_clears(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """A door contact open for 15 min while it is night in the site's time zone opens
    door_left_open, once; closing clears it."""
    url = settings.database_url
    add_zigbee_device(url, seeded, "zdoor-0001", "door_contact", "entrance", "SNZB-04")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE sites SET timezone = %s WHERE id = %s", (night_zone_now(), seeded.site_id)
        )
    publish_all(publisher_url, [state("entrance", battery=100, contact=False, linkquality=96)])
    wait_until(lambda: [t for t, _ in events_of(url, "zdoor-0001")] == ["heartbeat", "door.opened"])

    def open_since() -> object:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT state->>'door_open_since' FROM device_rule_state WHERE device_id = %s",
                ("zdoor-0001",),
            ).fetchone()
        return None if row is None else row[0]

    wait_until(open_since)
    # Sixteen minutes pass: the rules' memory of the opening moves back (the watchdog then
    # opens the alert), and the sensor's next report repeats contact false, which changes
    # nothing (tests/unit/test_rules_zigbee.py proves it keeps the timer). A new version, as
    # every writer gives it, or the gateway keeps evaluating from the state it holds.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            UPDATE device_rule_state SET state = state
                || jsonb_build_object('door_open_since', (now() - interval '16 min')::text,
                                      'door_event_at', (now() - interval '16 min')::text),
                version = nextval('device_rule_state_version')
            WHERE device_id = 'zdoor-0001'
            """
        )
    publish_all(publisher_url, [state("entrance", battery=100, contact=False, linkquality=90)])
    wait_until(lambda: [a["rule"] for a in alerts_of(url, "zdoor-0001")] == ["door_left_open"])
    wait_until(lambda: len(events_of(url, "zdoor-0001")) == 4)
    [alert] = alerts_of(url, "zdoor-0001")
    assert (alert["severity"], alert["count"]) == ("high", 1)
    publish_all(publisher_url, [state("entrance", battery=100, contact=True, linkquality=90)])
    wait_until(lambda: alerts_of(url, "zdoor-0001")[0]["cleared"] is True)


def test_unknown_names_are_dead_letters_and_the_bridge_is_ignored(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """An unregistered friendly name and a decommissioned device's are dead-lettered; a bare
    zigbee2mqtt/bridge is not; a device onboarded while the gateway runs is found at once."""
    url = settings.database_url
    add_zigbee_device(url, seeded, "zdoor-0002", "door_contact", "old_door", "MCCGQ11LM")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE devices SET status = 'decommissioned' WHERE id = 'zdoor-0002'")
    publish_all(
        publisher_url,
        [
            state("nobody_here", contact=True),
            ("zigbee2mqtt/bridge", b'{"state":"online"}'),
            state("old_door", contact=True),
        ],
    )
    wait_until(lambda: len(dead_letters(url)) == 2)
    assert dead_letters(url) == [
        ("zigbee2mqtt/nobody_here", "unknown_device"),
        ("zigbee2mqtt/old_door", "decommissioned_device"),
    ]
    # Onboarded now: the gateway asks the database about a name it does not know.
    add_zigbee_device(url, seeded, "zmotion-0001", "motion_sensor", "new_pir", "RTCGQ11LM")
    publish_all(publisher_url, [state("new_pir", battery=100, occupancy=True, linkquality=144)])
    wait_until(lambda: len(events_of(url, "zmotion-0001")) == 2, timeout_s=10)
    assert [t for t, _ in events_of(url, "zmotion-0001")] == ["heartbeat", "motion.detected"]
    assert len(dead_letters(url)) == 2


def devices_row(database_url: str, device_id: str) -> tuple[object, ...] | None:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT battery, online FROM devices WHERE id = %s", (device_id,)
        ).fetchone()


def test_names_as_users_write_them_reach_their_devices_over_mqtt(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """Issue 13: state on "zigbee2mqtt/Lgh 14 lås" and "zigbee2mqtt/kitchen/door" and the
    availability of "kitchen/door" reach their devices through the broker and the gateway's
    zigbee2mqtt/# subscription; numbers sent as strings are read ("80.00" is 80) and what is
    not a number is left out, the report kept; commands and bad names are no device's."""
    url = settings.database_url
    add_zigbee_device(url, seeded, "zdoor-0101", "door_contact", "Lgh 14 lås", "TS0203")
    add_zigbee_device(url, seeded, "zdoor-0102", "door_contact", "kitchen/door", "E2013")
    lgh_14 = {
        "battery": "80.00",
        "voltage": " 3000 ",
        "linkquality": "n/a",
        "battery_low": None,
        "contact": False,
    }
    publish_all(
        publisher_url,
        [
            state("Lgh 14 lås", **lgh_14),
            state("kitchen/door", battery=True, linkquality="96", contact=True),
            ("zigbee2mqtt/kitchen/door/set", b'{"identify": 3}'),  # zigbee2mqtt's to read
            state("kitchen", contact=True),  # a level of a name: nobody's
            ("zigbee2mqtt/kitchen/./door", b"{}"),  # looks like a path: not a name
        ],
    )
    wait_until(lambda: len(events_of(url, "zdoor-0101")) == 2)
    assert events_of(url, "zdoor-0101") == [
        ("heartbeat", {"battery": 80, "voltage_mv": 3000}),
        ("door.opened", {}),
    ]
    wait_until(lambda: len(events_of(url, "zdoor-0102")) == 2)
    assert events_of(url, "zdoor-0102") == [("heartbeat", {"linkquality": 96}), ("door.closed", {})]
    wait_until(lambda: devices_row(url, "zdoor-0101") == (80, True))
    wait_until(lambda: len(dead_letters(url)) == 2)
    assert dead_letters(url) == [
        ("zigbee2mqtt/kitchen", "unknown_device"),
        ("zigbee2mqtt/kitchen/./door", "bad_topic"),
    ]
    publish_all(publisher_url, [("zigbee2mqtt/kitchen/door/availability", b"offline")])
    wait_until(lambda: devices_row(url, "zdoor-0102") == (None, False))
    assert len(dead_letters(url)) == 2  # the command was ignored, not dead-lettered


def test_any_value_in_a_numeric_field_keeps_the_report_over_mqtt(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """A battery of "abc", "", null, "NaN", "inf", true, [] or {} is left out and every one of
    those reports is still stored as a heartbeat with its door event: nothing is dead-lettered.
    """
    url = settings.database_url
    add_zigbee_device(url, seeded, "zdoor-0103", "door_contact", "Bedroom Window", "HS3DS")
    odd: list[object] = ["abc", "", None, "NaN", "inf", "1e999", True, [], {"v": 80}, " 80 "]
    for i, battery in enumerate(odd):  # one report per publish: each gets its own events
        publish_all(
            publisher_url, [state("Bedroom Window", battery=battery, linkquality=i, contact=True)]
        )
    wait_until(lambda: len(events_of(url, "zdoor-0103")) == 2 * len(odd))
    heartbeats = [data for type_, data in events_of(url, "zdoor-0103") if type_ == "heartbeat"]
    assert sorted(heartbeats, key=lambda d: int(d["linkquality"])) == [
        {"linkquality": i} for i in range(len(odd) - 1)
    ] + [{"linkquality": len(odd) - 1, "battery": 80}]
    assert dead_letters(url) == []


# --- every mapped model, over MQTT -------------------------------------------------------------

# (friendly name, payload, event types, heartbeat data), as in the unit tests' table
ModelPayload = tuple[str, dict[str, Any], list[str], dict[str, Any]]


def payload_of_model() -> dict[str, ModelPayload]:
    """Per model, the first payload of tests/unit/test_zigbee2mqtt.py's table (zigbee2mqtt's
    documented shape for it) whose device has that model."""
    found: dict[str, ModelPayload] = {}
    for param in REAL_PAYLOADS:
        entry = cast(ModelPayload, tuple(param.values))
        found.setdefault(DEVICES[entry[0]].model, entry)
    return found


PAYLOAD_OF_MODEL: Final = payload_of_model()


@dataclass(frozen=True)
class ModelsRun:
    database_url: str
    seeded: SeededRegistry
    gateway: GatewayProcess


@pytest.fixture(scope="module")
def models_run(
    pg: PostgresInstance,
    template_database: str,
    gateway_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ModelsRun]:
    """One database and one gateway (on the session broker) for every model's test."""
    token = "tz2mmodels"  # test_token's are t0001...: nothing else in the session uses this one
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(module_database(pg, template_database))
        seeded = seed_registry(database_url, token)
        settings = Settings(
            database_url=database_url,
            mqtt_url=gateway_url,
            metrics_port=free_port(),
            gateway_client_id=f"gateway-{token}",
            gateway_share_group=f"carewatch-{token}",
            batch_max_wait_s=0.02,
            reconnect_min_s=0.05,
            reconnect_max_s=1.0,
            registry_refresh_s=0.2,
        )
        stack.callback(end_mqtt_session, gateway_url, settings.gateway_client_id)
        log_path = tmp_path_factory.mktemp("z2m-models") / "gateway.log"
        gateway = stack.enter_context(GatewayProcess(settings, log_path))
        yield ModelsRun(database_url, seeded, gateway)


@pytest.mark.parametrize("model", sorted(DEFAULT_MAPPING.models))
def test_every_mapped_model_reports_through_the_broker_and_the_gateway(
    model: str, publisher_url: str, models_run: ModelsRun
) -> None:
    """Each model of devices/zigbee2mqtt.toml: a device of it onboarded, one report in the
    shape zigbee2mqtt publishes for it (tests/unit/test_zigbee2mqtt.py's table) sent through
    the broker, and its heartbeat fields and state events stored, nothing dead-lettered."""
    if model not in PAYLOAD_OF_MODEL:
        pytest.fail(f"{model}: no payload in tests/unit/test_zigbee2mqtt.py's REAL_PAYLOADS")
    name, payload, types, heartbeat = PAYLOAD_OF_MODEL[model]
    device = DEVICES[name]
    url = models_run.database_url
    add_zigbee_device(url, models_run.seeded, device.device_id, device.kind, name, model)
    publish_all(publisher_url, [state(name, **payload)])
    wait_until(
        lambda: len(events_of(url, device.device_id)) == len(types),
        context=models_run.gateway.log_tail,
    )
    stored = events_of(url, device.device_id)
    assert sorted(type_ for type_, _ in stored) == sorted(types)
    assert dict(stored)["heartbeat"] == heartbeat
    with psycopg.connect(url) as conn:
        letters = conn.execute(
            "SELECT reason FROM dead_letters WHERE topic = %s", (f"zigbee2mqtt/{name}",)
        ).fetchall()
    assert letters == []
