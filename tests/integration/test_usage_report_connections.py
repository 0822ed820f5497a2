"""The usage report's alert figures on a second connection, or on the caller's when the pool
has none free (api.usage_report): the same figures either way, and no wait for the pool."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import psycopg_pool

from api import usage_queries as q
from api import usage_report
from tests.fixtures.services import SeededRegistry

NOW = datetime.now(UTC).replace(microsecond=0)


def seed_alerts(database_url: str, device: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for minutes in (5, 30, 90):
            opened = NOW - timedelta(hours=2)
            conn.execute(
                "INSERT INTO alerts (device_id, rule, severity, state, opened_at,"
                " acknowledged_at, resolved_at)"
                " VALUES (%s, 'alarm_pressed', 'critical', 'resolved', %s, %s, %s)",
                (device, opened, opened + timedelta(minutes=minutes), opened + timedelta(hours=1)),
            )


def test_the_alert_figures_are_the_same_with_or_without_a_free_connection(
    database_url: str, seeded: SeededRegistry
) -> None:
    seed_alerts(database_url, seeded.device("alarm_button"))
    period = q.Period(
        NOW - timedelta(days=1), NOW + timedelta(days=1), NOW.date(), NOW.date(), "day", "UTC"
    )

    async def figures(max_size: int) -> tuple[q.AlertFigures, float]:
        async with psycopg_pool.AsyncConnectionPool(
            database_url, min_size=1, max_size=max_size, open=False
        ) as pool:
            await pool.wait()
            async with pool.connection() as conn:
                started = asyncio.get_running_loop().time()
                result = await usage_report._alert_figures(pool, conn, [seeded.site_id], period)
                return result, asyncio.get_running_loop().time() - started

    beside, _ = asyncio.run(figures(max_size=2))
    alone, took_s = asyncio.run(figures(max_size=1))  # the caller holds the only connection
    assert alone == beside
    assert [t["alerts"] for t in alone.times] == [3]
    assert [s["ack_s"] for s in alone.slowest] == [5400.0, 1800.0, 300.0]
    assert took_s < 1, "it did not wait for the pool"
