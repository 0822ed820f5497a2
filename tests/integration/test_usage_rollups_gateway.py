"""The usage rollups through the real gateway: MQTT messages in, rollup rows out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from carewatch.db import rollups
from carewatch.settings import Settings
from tests.fixtures.gateway_process import GatewayProcess, wait_until
from tests.fixtures.mqtt import envelope, events_topic, publish_all
from tests.fixtures.services import SeededRegistry
from tests.integration.test_zigbee2mqtt_gateway import add_zigbee_device, state

STOCKHOLM = ZoneInfo("Europe/Stockholm")


@pytest.fixture
def gateway(settings: Settings, tmp_path: Path) -> Iterator[GatewayProcess]:
    with GatewayProcess(settings, tmp_path / "gateway.log") as process:
        yield process


def device_rollup(database_url: str, device_id: str) -> dict[str, tuple[int, float]]:
    """The device's hourly rollup summed over hours: {type: (events, duration_s)}."""
    with psycopg.connect(database_url) as conn:
        rows: list[Any] = conn.execute(
            "SELECT type, sum(events)::int, sum(duration_s) FROM usage_device_hourly"
            " WHERE device_id = %s GROUP BY type",
            (device_id,),
        ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_gateway_rolls_up_a_visit_and_counts_a_resend_once(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """Unlock, lock ten minutes later, the lock resent: one visit of 600 s, one lock.locked;
    a camera check's duration; heartbeats not rolled up; the site tables agree."""
    url = settings.database_url
    lock, cam = seeded.device("door_lock"), seeded.device("safety_camera")
    start = datetime.now(STOCKHOLM).replace(microsecond=0) - timedelta(minutes=30)
    who: dict[str, object] = {"by": "staff-1", "method": "app"}
    locked = (
        events_topic(lock),
        envelope("l2", "lock.locked", who, ts=start + timedelta(minutes=10)),
    )
    publish_all(publisher_url, [
        (events_topic(lock), envelope("l1", "lock.unlocked", who, ts=start)),
        (events_topic(lock), envelope("h1", "heartbeat", {"battery": 80}, ts=start)),
        (events_topic(cam), envelope("c1", "camera.check_ended",
                                     {"by": "staff-1", "duration_s": 42.5, "outcome": "seen"},
                                     ts=start)),
    ])  # fmt: skip
    publish_all(publisher_url, [locked])
    publish_all(publisher_url, [locked])
    wait_until(lambda: gateway.metric("carewatch_events_duplicate_total") == 1.0)
    assert device_rollup(url, lock) == {
        "lock.unlocked": (1, 0.0),
        "lock.locked": (1, 0.0),
        rollups.LOCK_VISIT: (1, 600.0),
    }
    assert device_rollup(url, cam) == {"camera.check_ended": (1, 42.5)}
    with psycopg.connect(url) as conn:
        site_rows = conn.execute(
            "SELECT type, sum(events)::int FROM usage_site_daily WHERE site_id = %s"
            " GROUP BY type ORDER BY type",
            (seeded.site_id,),
        ).fetchall()
    assert site_rows == [
        ("camera.check_ended", 1),
        ("lock.locked", 1),
        ("lock.unlocked", 1),
        (rollups.LOCK_VISIT, 1),
    ]


def test_zigbee_lock_repeating_locked_is_one_visit(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, gateway: GatewayProcess
) -> None:
    """A zigbee2mqtt lock reports its locked state again and again: every report is a
    lock.locked event, but only the one after the unlock ends a visit."""
    url = settings.database_url
    add_zigbee_device(url, seeded, "zlock-0002", "door_lock", "hall_lock", "0402946")
    # linkquality differs: identical bytes in one network read would be one message
    for n, lock_state in enumerate(("unlocked", "locked", "locked", "locked")):
        publish_all(
            publisher_url,
            [state("hall_lock", battery=90, linkquality=60 + n, lock_state=lock_state)],
        )
    wait_until(lambda: device_rollup(url, "zlock-0002").get("lock.locked", (0, 0.0))[0] == 3)
    rollup = device_rollup(url, "zlock-0002")
    assert rollup["lock.unlocked"] == (1, 0.0)
    assert rollup[rollups.LOCK_VISIT][0] == 1
