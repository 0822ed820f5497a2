"""A batch with resent events (gateway.store): stored once, and the rules see them once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from devices.catalog import DEFAULT_CATALOG
from devices.envelope import Event
from gateway import store
from gateway.device_state import fold_batch
from gateway.rule_states import RuleStates
from tests.fixtures.services import SeededRegistry

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


def pressed(device: str, event_id: str) -> Event:
    return Event(
        device_id=device,
        kind="alarm_button",
        event_id=event_id,
        time=T0,
        received_at=T0,
        type="alarm.pressed",
        data={},
    )


def write(database_url: str, states: RuleStates, *batch: Event) -> store.BatchOutcome:
    async def run() -> store.BatchOutcome:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await store.prepare_connection(conn)
            return await store.write_batch(
                conn, batch, fold_batch(batch, []), [], DEFAULT_CATALOG, 30, states
            )

    return asyncio.run(run())


def alarm_alerts(database_url: str, device: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT rule, count FROM alerts WHERE device_id = %s", (device,)
        ).fetchall()


def test_a_resent_event_is_stored_once_and_evaluated_once(
    database_url: str, seeded: SeededRegistry
) -> None:
    """Resent in a later batch and repeated within one: one row, one alert counted once; the
    new event beside them is stored and evaluated."""
    first, second = seeded.device("alarm_button", 0), seeded.device("alarm_button", 1)
    states = RuleStates()
    outcome = write(database_url, states, pressed(first, "p1"), pressed(first, "p1"))
    assert (outcome.duplicates, outcome.alerts.opened) == (1, 1)
    outcome = write(database_url, states, pressed(first, "p1"), pressed(second, "p2"))
    assert outcome.duplicates == 1
    assert outcome.stored_by_kind == {"alarm_button": 1}
    assert outcome.alerts.opened == 1  # the second button's, not the first's again
    assert alarm_alerts(database_url, first) == [("alarm_pressed", 1)]
    assert alarm_alerts(database_url, second) == [("alarm_pressed", 1)]
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE type = 'alarm.pressed'").fetchone()
    assert row == (2,)
