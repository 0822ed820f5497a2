"""Large batches split into lanes (gateway.lanes) through the real gateway: every event stored
once, and each device's rule state as its last event left it."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import psycopg

from devices.rules import DeviceState
from gateway.ingest import SPLIT_FROM_MESSAGES
from tests.fixtures.gateway_process import GatewayProcess, wait_until
from tests.fixtures.mqtt import STOCKHOLM, envelope, events_topic, publish_all
from tests.fixtures.services import MakeSettings, SeededRegistry

EVENTS_PER_LOCK = 600


def test_a_storm_in_large_batches_is_stored_in_lanes_in_order(
    make_settings: MakeSettings,
    publisher_url: str,
    database_url: str,
    seeded: SeededRegistry,
    tmp_path: Path,
) -> None:
    # A second's wait fills batches of hundreds: the gateway splits them into its two lanes.
    settings = make_settings(database_url, batch_max_wait_s=1.0, ingest_lanes=2)
    locks = seeded.devices_by_kind["door_lock"]
    start = (datetime.now(STOCKHOLM) - timedelta(minutes=30)).replace(microsecond=0)
    messages: list[tuple[str, bytes]] = []
    for n in range(EVENTS_PER_LOCK):  # unlock, lock, unlock, ... each lock in turn
        for lock in locks:
            kind = "lock.unlocked" if n % 2 == 0 else "lock.locked"
            data: dict[str, object] = {"by": "staff-1", "method": "tag"}
            at = start + timedelta(seconds=n)
            messages.append((events_topic(lock), envelope(f"s{n}", kind, data, ts=at)))
    with GatewayProcess(settings, tmp_path / "gateway.log") as gateway:
        publish_all(publisher_url, messages)
        total = len(messages)
        wait_until(
            lambda: gateway.metric("carewatch_events_stored_total", 'kind="door_lock"') == total
        )
        # Some batch held more messages than a split needs.
        batches = gateway.metric("carewatch_ingest_batch_messages_count")
        up_to_500 = gateway.metric("carewatch_ingest_batch_messages_bucket", 'le="500.0"')
        assert SPLIT_FROM_MESSAGES <= 500
        assert batches is not None
        assert up_to_500 is not None
        assert batches > up_to_500
    last = start + timedelta(seconds=EVENTS_PER_LOCK - 1)  # a lock.locked, the last of each
    with psycopg.connect(database_url) as conn:
        for lock in locks:
            stored = conn.execute(
                "SELECT count(*) FROM events WHERE device_id = %s", (lock,)
            ).fetchone()
            assert stored == (EVENTS_PER_LOCK,)
            row = conn.execute(
                "SELECT state FROM device_rule_state WHERE device_id = %s", (lock,)
            ).fetchone()
            assert row is not None
            state = DeviceState.from_record(row[0])
            assert state.lock_event_at == last
            assert state.unlocked_since is None
