"""Rule states held in memory and checked by version (gateway.rule_states), on a real PostgreSQL.

Each RuleStates stands for one gateway; each connection for one of its transactions.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from carewatch.settings import Settings
from devices.catalog import DEFAULT_CATALOG
from devices.envelope import Event
from devices.rules import DeviceState
from gateway import alerting, store
from gateway.errors import RuleStateConflictError
from gateway.rule_states import RuleStates
from gateway.service import Gateway
from tests.fixtures.services import SeededRegistry

LOCK = "door_lock"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
_ids = itertools.count()


def lock_event(device: str, type_: str, minutes: int) -> Event:
    at = T0 + timedelta(minutes=minutes)
    return Event(
        device_id=device,
        kind=LOCK,
        event_id=f"v{next(_ids)}",
        time=at,
        received_at=at,
        type=type_,
        data={"by": "staff-1", "method": "tag"},
    )


async def connect(database_url: str) -> psycopg.AsyncConnection[Any]:
    conn = await psycopg.AsyncConnection.connect(database_url)
    await store.prepare_connection(conn)
    return conn


async def evaluate(
    conn: psycopg.AsyncConnection[Any], states: RuleStates, *events: Event
) -> alerting.AlertOutcome:
    """One transaction of the rules over ``events``; remembered once committed, as ingest does."""
    async with conn.transaction(), conn.cursor() as cur:
        outcome = await alerting.evaluate_messages(
            cur, events, datetime.now(UTC), DEFAULT_CATALOG, states
        )
    states.remember(outcome.states)
    return outcome


def stored_state(database_url: str, device: str) -> tuple[int, DeviceState]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT version, state FROM device_rule_state WHERE device_id = %s", (device,)
        ).fetchone()
    assert row is not None
    return row[0], DeviceState.from_record(row[1])


def test_a_state_written_meanwhile_is_evaluated_again_not_overwritten(
    database_url: str, seeded: SeededRegistry
) -> None:
    """Two gateways evaluate one lock at once: the second to save finds the row moved on,
    conflicts, and evaluated again from the first one's state, keeps both events' effects."""
    lock = seeded.device(LOCK)

    async def scenario() -> None:
        first, second = RuleStates(), RuleStates()
        a, b = await connect(database_url), await connect(database_url)
        try:
            await evaluate(a, first, lock_event(lock, "lock.unlocked", 0))
            await evaluate(b, second, lock_event(lock, "lock.unlocked", 0))  # b holds it too
            unlock_again = lock_event(lock, "lock.unlocked", 5)
            # a's lock.locked is saved, not yet committed, when b evaluates the next unlock.
            async with a.transaction(), a.cursor() as cur:
                locked = await alerting.evaluate_messages(
                    cur,
                    [lock_event(lock, "lock.locked", 2)],
                    datetime.now(UTC),
                    DEFAULT_CATALOG,
                    first,
                )
                pending = asyncio.create_task(evaluate(b, second, unlock_again))
                await asyncio.sleep(0.3)
                assert not pending.done(), "b's save waits for a's row"
            first.remember(locked.states)
            with pytest.raises(RuleStateConflictError) as conflict:
                await pending
            assert conflict.value.device_ids == [lock]
            assert second.versions([lock]) == [-1], "the conflicting state is forgotten"
            await evaluate(b, second, unlock_again)  # what ingest does: again, at once
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())
    _, state = stored_state(database_url, lock)
    # Evaluated on the stale state, the new unlock would have found the door still unlocked
    # since minute 0 (a's lock.locked lost): the timer would run from minute 0, not 5.
    assert state.unlocked_since == T0 + timedelta(minutes=5)
    assert state.lock_event_at == T0 + timedelta(minutes=5)


def test_a_gateway_evaluates_from_what_it_holds_until_the_version_moves(
    database_url: str, seeded: SeededRegistry
) -> None:
    """The load sends the versions held: at the same version the row's state is not even read
    (a row changed behind the version's back is not seen); a new version is."""
    lock = seeded.device(LOCK)
    states = RuleStates()

    async def run(*events: Event) -> None:
        conn = await connect(database_url)
        try:
            await evaluate(conn, states, *events)
        finally:
            await conn.close()

    asyncio.run(run(lock_event(lock, "lock.unlocked", 0)))
    version, saved = stored_state(database_url, lock)
    assert states.versions([lock]) == [version]
    assert saved.unlocked_since == T0

    # Behind the version's back: the gateway does not see it and keeps its own.
    tampered = saved._replace(unlocked_since=T0 + timedelta(minutes=1))
    write = "UPDATE device_rule_state SET state = %s::jsonb WHERE device_id = %s"
    with psycopg.connect(database_url) as conn:
        conn.execute(write, (psycopg.types.json.Jsonb(tampered.to_record()), lock))
    asyncio.run(run(lock_event(lock, "lock.unlocked", 3)))  # a repeat: the timer runs from 0
    _, after = stored_state(database_url, lock)
    assert after.unlocked_since == T0, "evaluated from the state held, not the row"

    # Another writer with a new version: read, and evaluated from.
    moved = after._replace(unlocked_since=None, lock_event_at=T0 + timedelta(minutes=4))
    bump = """
        UPDATE device_rule_state SET state = %s::jsonb,
               version = nextval('device_rule_state_version') WHERE device_id = %s
    """
    with psycopg.connect(database_url) as conn:
        conn.execute(bump, (psycopg.types.json.Jsonb(moved.to_record()), lock))
    asyncio.run(run(lock_event(lock, "lock.unlocked", 6)))
    version_now, final = stored_state(database_url, lock)
    assert final.unlocked_since == T0 + timedelta(minutes=6), "the other writer's lock seen"
    assert states.versions([lock]) == [version_now]


def test_a_watchdog_pass_ends_when_ingest_writes_a_state_it_is_ticking(
    database_url: str, seeded: SeededRegistry
) -> None:
    """The tick's save finds a lock's state written meanwhile: the chunk is ticked without
    it, then the lock alone, from the new state; the pass ends, nothing raised."""
    lock, other = seeded.device(LOCK, 0), seeded.device(LOCK, 1)
    gateway = Gateway(Settings(database_url=database_url))
    hours_ago = [lock_event(device, "lock.unlocked", -110) for device in (lock, other)]

    async def scenario() -> int:
        await gateway.pool.open()
        writer = await connect(database_url)
        try:
            async with gateway.pool.connection() as conn:
                await evaluate(conn, gateway.rule_states, *hours_ago)
                # Another transaction writes the lock's state and commits while the tick runs.
                await writer.execute(
                    "UPDATE device_rule_state SET version = nextval('device_rule_state_version')"
                    " WHERE device_id = %s",
                    (lock,),
                )
                tick = asyncio.create_task(gateway._tick(conn, [lock, other], datetime.now(UTC)))
                await asyncio.sleep(0.3)
                await writer.commit()
                return await asyncio.wait_for(tick, 10)
        finally:
            await writer.close()
            await gateway.pool.close()

    # For both: door_left_unlocked, and device_offline (silent since the unlock).
    assert asyncio.run(scenario()) == 4
    with psycopg.connect(database_url) as conn:
        rules = conn.execute(
            "SELECT device_id, rule FROM alerts WHERE device_id = ANY(%s) ORDER BY 1, 2",
            ([lock, other],),
        ).fetchall()
    assert rules == sorted(
        (d, r) for d in (lock, other) for r in ("device_offline", "door_left_unlocked")
    )
    sample = gateway.metrics.registry.get_sample_value
    assert sample("carewatch_rule_state_conflicts_total", {"path": "tick"}) == 1
    for device in (lock, other):
        _, state = stored_state(database_url, device)
        assert state.door_alerted
