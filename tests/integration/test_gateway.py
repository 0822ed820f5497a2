"""The gateway end to end: real MQTT messages in, rows in a real PostgreSQL out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import LiteralString

import psycopg
import pytest

from carewatch.settings import Settings
from tests.fixtures.gateway_process import GatewayProcess, wait_until
from tests.fixtures.mqtt import envelope, events_topic, publish_all, status_topic
from tests.fixtures.services import SeededRegistry


def scalar(database_url: str, query: LiteralString, params: tuple[object, ...] = ()) -> object:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def count_events(database_url: str, device_id: str | None = None) -> int:
    if device_id is None:
        value = scalar(database_url, "SELECT count(*) FROM events")
    else:
        value = scalar(
            database_url, "SELECT count(*) FROM events WHERE device_id = %s", (device_id,)
        )
    assert isinstance(value, int)
    return value


@pytest.fixture
def gateway(settings: Settings, tmp_path: Path) -> Iterator[GatewayProcess]:
    with GatewayProcess(settings, tmp_path / "gateway.log") as process:
        yield process


def test_valid_events_are_stored_and_update_the_device(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """Events of every kind are stored with their data, and the device row records the battery."""
    lock, camera = seeded.device("door_lock"), seeded.device("safety_camera")
    publish_all(
        publisher_url,
        [
            (events_topic(lock), envelope("1", "heartbeat", {"battery": 57, "fw": "2.1.0"})),
            (
                events_topic(lock),
                envelope("2", "lock.unlocked", {"by": "staff-4711", "method": "app"}),
            ),
            (
                events_topic(camera),
                envelope(
                    "1", "camera.check_ended", {"by": "s-1", "duration_s": 41, "outcome": "seen"}
                ),
            ),
        ],
    )
    wait_until(lambda: count_events(settings.database_url) == 3)
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT battery, firmware, online, last_seen IS NOT NULL FROM devices WHERE id = %s",
            (lock,),
        ).fetchone()
        assert row == (57, "2.1.0", True, True)
        data = conn.execute(
            "SELECT data FROM events WHERE device_id = %s AND type = 'lock.unlocked'", (lock,)
        ).fetchone()
        assert data == ({"by": "staff-4711", "method": "app"},)
    assert gateway.metric("carewatch_events_stored_total", 'kind="door_lock"') == 2.0


def test_resent_event_is_stored_once(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """A flaky device resending the same event (same id and ts) leaves exactly one row."""
    lock = seeded.device("door_lock")
    payload = envelope("resent-1", "lock.locked", {"by": "staff-1", "method": "keypad"})
    publish_all(publisher_url, [(events_topic(lock), payload)] * 3)
    publish_all(publisher_url, [(events_topic(lock), payload)])
    wait_until(lambda: gateway.metric("carewatch_events_duplicate_total") == 3.0)
    assert count_events(settings.database_url, lock) == 1


BAD_MESSAGES = [
    pytest.param("events", b"\xff\xfe not utf-8", "not_utf8", id="not-utf8"),
    pytest.param("events", b"{not json", "not_json", id="not-json"),
    pytest.param("events", b"[1, 2]", "not_an_object", id="not-an-object"),
    pytest.param(
        "events",
        b'{"v": 1, "ts": "2026-11-22T23:41:00+01:00", "type": "heartbeat"}',
        "missing_field",
        id="missing-id",
    ),
    pytest.param(
        "events",
        b'{"v": 2, "id": "1", "ts": "2026-11-22T23:41:00+01:00", "type": "heartbeat"}',
        "unsupported_version",
        id="version-2",
    ),
    pytest.param(
        "events",
        b'{"v": 1, "id": "1", "ts": "2026-11-22T23:41:00", "type": "heartbeat"}',
        "bad_timestamp",
        id="ts-without-offset",
    ),
    pytest.param(
        "events",
        b'{"v": 1, "id": "1", "ts": "1999-01-01T00:00:00Z", "type": "heartbeat"}',
        "clock_skew",
        id="ts-absurdly-old",
    ),
    pytest.param(
        "events",
        b'{"v": 1, "id": "1", "ts": "NOW", "type": "camera.tamper"}',
        "unknown_event_type",
        id="type-of-another-kind",
    ),
    pytest.param(
        "events",
        b'{"v": 1, "id": "1", "ts": "NOW", "type": "heartbeat", "data": {"battery": "full"}}',
        "wrong_type",
        id="battery-as-string",
    ),
    pytest.param(
        "events",
        b'{"v": 1, "id": "1", "ts": "NOW", "type": "heartbeat", "data": {"fw": "a\\u0000b"}}',
        "wrong_type",
        id="nul-in-string",
    ),
    pytest.param("events", b"x" * (16 * 1024 + 1), "too_large", id="too-large"),
    pytest.param("status", b"maybe", "bad_status", id="bad-status"),
]


@pytest.mark.parametrize(("channel", "payload", "reason"), BAD_MESSAGES)
def test_invalid_message_goes_to_dead_letters_with_its_reason(
    publisher_url: str,
    settings: Settings,
    seeded: SeededRegistry,
    gateway: GatewayProcess,
    channel: str,
    payload: bytes,
    reason: str,
) -> None:
    """Each kind of invalid message is kept as received, with its reason, and counted."""
    lock = seeded.device("door_lock")
    now = datetime.now(UTC).isoformat().encode()
    payload = payload.replace(b'"NOW"', b'"' + now + b'"')
    topic = events_topic(lock) if channel == "events" else status_topic(lock)
    good = envelope("after-the-bad-one", "heartbeat", {"battery": 80})
    publish_all(publisher_url, [(topic, payload), (events_topic(lock), good)])
    wait_until(lambda: gateway.metric("carewatch_dead_letters_total", f'reason="{reason}"') == 1.0)
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT topic, payload, reason FROM dead_letters").fetchall()
    assert rows == [(topic, payload, reason)]
    # The gateway carried on: the good message after the bad one was stored.
    wait_until(lambda: count_events(settings.database_url, lock) == 1)


def test_an_envelope_far_over_the_contract_is_a_dead_letter_of_bounded_size(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """The broker takes up to 1 MiB (for bridges' device lists): a 900 KiB envelope is a
    too_large dead letter keeping its first 64 KiB, its size in the detail, and the gateway
    carries on; over 1 MiB the broker drops it."""
    lock = seeded.device("door_lock")
    big = b"x" * (900 * 1024)
    good = envelope("after-the-big-one", "heartbeat", {"battery": 80})
    publish_all(publisher_url, [(events_topic(lock), big), (events_topic(lock), good)])
    wait_until(lambda: count_events(settings.database_url, lock) == 1)
    wait_until(lambda: scalar(settings.database_url, "SELECT count(*) FROM dead_letters") == 1)
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT reason, payload, detail FROM dead_letters").fetchall()
    [(reason, payload, detail)] = rows
    assert (reason, bytes(payload)) == ("too_large", big[: 64 * 1024])
    size = len(big)
    assert detail == f"{size} bytes; at most 16384 (payload: the first 65536 of {size} bytes)"
    # Over 1 MiB the broker drops it (to a QoS 1 publish it answers PUBACK 0x95, on which
    # paho-mqtt drops the connection and resends, so QoS 0 here): sent ahead of a good
    # envelope, it never reaches the gateway.
    huge = b"x" * (1024 * 1024 + 1)
    after = envelope("after-the-huge-one", "heartbeat", {"battery": 81})
    publish_all(publisher_url, [(events_topic(lock), huge), (events_topic(lock), after)], qos=0)
    wait_until(lambda: count_events(settings.database_url, lock) == 2)
    assert scalar(settings.database_url, "SELECT count(*) FROM dead_letters") == 1


@pytest.mark.parametrize(
    ("device_id", "reason"),
    [
        pytest.param("never-registered", "unknown_device", id="unknown"),
        pytest.param("DECOMMISSIONED", "decommissioned_device", id="decommissioned"),
    ],
)
def test_message_from_unknown_or_decommissioned_device_is_dead_lettered(
    publisher_url: str,
    settings: Settings,
    seeded: SeededRegistry,
    gateway: GatewayProcess,
    device_id: str,
    reason: str,
) -> None:
    """The registry, not the payload, decides: unknown and decommissioned devices are refused."""
    if device_id == "DECOMMISSIONED":
        device_id = seeded.device("alarm_button")
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("UPDATE devices SET status = 'decommissioned' WHERE id = %s", (device_id,))
        wait_until(lambda: gateway.metric("carewatch_broker_connected") == 1.0)
        # The gateway re-reads changed devices every registry_refresh_s.
        time.sleep(settings.registry_refresh_s * 2 + 0.5)
    publish_all(publisher_url, [(events_topic(device_id), envelope("1"))])
    wait_until(lambda: gateway.metric("carewatch_dead_letters_total", f'reason="{reason}"') == 1.0)
    assert count_events(settings.database_url) == 0


def test_status_topic_sets_online_and_last_will_sets_offline(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """ "online" marks the device online; "offline" (its Last Will) marks it offline."""
    camera = seeded.device("safety_camera")

    def online() -> object:
        return scalar(settings.database_url, "SELECT online FROM devices WHERE id = %s", (camera,))

    publish_all(publisher_url, [(status_topic(camera), b"online")])
    wait_until(lambda: online() is True)
    publish_all(publisher_url, [(status_topic(camera), b"offline")])
    wait_until(lambda: online() is False)


def test_old_event_still_lands_in_its_device_time(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """An event sent late is stored under the time it happened, not when it arrived."""
    robot = seeded.device("companion_robot")
    happened = datetime.now(UTC) - timedelta(hours=5)
    publish_all(
        publisher_url,
        [
            (
                events_topic(robot),
                envelope(
                    "late", "robot.interaction", {"mode": "touch", "duration_s": 30}, ts=happened
                ),
            )
        ],
    )
    wait_until(lambda: count_events(settings.database_url, robot) == 1)
    stored = scalar(settings.database_url, "SELECT time FROM events WHERE device_id = %s", (robot,))
    assert isinstance(stored, datetime)
    assert abs((stored - happened).total_seconds()) < 0.002


CONTRACT_METRICS = [
    "carewatch_messages_received_total",
    "carewatch_events_stored_total",
    "carewatch_events_duplicate_total",
    "carewatch_dead_letters_total",
    "carewatch_ingest_batch_seconds_bucket",
    "carewatch_ingest_delay_seconds_bucket",
    "carewatch_devices_online",
]


def test_metrics_carry_the_contract_names(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """/metrics exposes the contract's ingest metrics once traffic has flowed."""
    lock = seeded.device("door_lock")
    publish_all(
        publisher_url,
        [(events_topic(lock), envelope("m1")), (events_topic(lock), b"not json")],
    )
    # The delay is observed after the commit, when every other counter has been counted.
    wait_until(lambda: gateway.metric("carewatch_ingest_delay_seconds_count") == 2.0)
    wait_until(lambda: gateway.metric("carewatch_devices_online", 'kind="door_lock"') is not None)
    text = gateway.metrics_text()
    missing = [name for name in CONTRACT_METRICS if f"\n{name}" not in text]
    assert missing == []
    assert gateway.metric("carewatch_messages_received_total") == 2.0


def test_awkward_text_is_stored_exactly(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """Tabs, newlines, backslashes and non-ASCII in ids and data survive the COPY unchanged."""
    lock = seeded.device("door_lock")
    event_id = "id\twith\\all\nthe\rbits ö 🔒"
    data: dict[str, object] = {
        "by": 'staff "ö"\\n\t\\',
        "method": "app",
        "extra": {"path": "C:\\temp\\x", "emoji": "🐈"},
    }
    publish_all(publisher_url, [(events_topic(lock), envelope(event_id, "lock.unlocked", data))])
    wait_until(lambda: count_events(settings.database_url, lock) == 1)
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT event_id, data FROM events WHERE device_id = %s", (lock,)
        ).fetchone()
    assert row == (event_id, data)
