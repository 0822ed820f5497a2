"""Migrations (idempotent, recorded, safe concurrently) and plain-PostgreSQL retention."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import pytest

from carewatch.db import timescale
from carewatch.db.migrate import migrate, packaged_migrations
from tools.local.postgres import PostgresInstance

RETENTION_DAYS = 730
T = TypeVar("T")


@pytest.fixture
def empty_database_url(pg: PostgresInstance, test_token: str) -> Iterator[str]:
    """A new database with no schema at all."""
    name = f"empty_{test_token}"
    url = pg.create_database(name)
    yield url
    pg.drop_database(name)


def test_packaged_migrations_are_numbered_in_order() -> None:
    """The package ships its SQL files, versions unique and sorted, starting with 0001."""
    migrations = packaged_migrations()
    versions = [m.version for m in migrations]
    assert versions[0] == "0001"
    assert versions == sorted(set(versions))
    assert all(m.sql.strip() for m in migrations)


def test_migrate_applies_everything_once_and_then_nothing(empty_database_url: str) -> None:
    """A second migrate applies nothing and leaves the recorded versions as they were."""
    first = migrate(empty_database_url, retention_days=RETENTION_DAYS)
    second = migrate(empty_database_url, retention_days=RETENTION_DAYS)
    assert first == [m.version for m in packaged_migrations()]
    assert second == []
    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute(
            "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
        ).fetchall()
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
    assert [row[0] for row in rows] == first
    assert rows[0][1] == "registry_and_events"
    assert all(isinstance(row[2], datetime) for row in rows)
    assert {"organisations", "sites", "devices", "events", "dead_letters"} <= tables


def _migrate_as_release_before(database_url: str, version: str) -> None:
    """Apply the migrations before ``version`` and record them, as the release before did."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version text PRIMARY KEY,"
            " name text NOT NULL DEFAULT '', applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in packaged_migrations():
            if migration.version >= version:
                break
            with conn.transaction():
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )


def test_supervision_migration_applies_on_top_of_a_database_in_use(
    empty_database_url: str,
) -> None:
    """0007 (+#11) on a database of the release before, with rows in the tables it changes:
    only the new versions are applied, the rows keep their values and get the defaults."""
    _migrate_as_release_before(empty_database_url, "0007")
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO organisations (id, name) VALUES ('kommun', 'Kommun')")
        conn.execute("INSERT INTO sites (id, org_id, name) VALUES ('site-a', 'kommun', 'A')")
        conn.execute("INSERT INTO devices (id, kind, site_id) VALUES ('cam-1', 'camera', 'site-a')")
        conn.execute(
            "INSERT INTO alerts (device_id, rule, severity, state, opened_at)"
            " VALUES ('cam-1', 'camera_offline', 'high', 'open', now())"
        )
        conn.execute(
            "INSERT INTO audit_log (username, org_id, action, device_id)"
            " VALUES ('admin', 'kommun', 'device.create', 'cam-1')"
        )
    applied = migrate(empty_database_url, retention_days=RETENTION_DAYS)
    assert applied == [m.version for m in packaged_migrations() if m.version >= "0007"]
    with psycopg.connect(empty_database_url) as conn:
        site = conn.execute(
            "SELECT name, visit_minutes, key_handling_minutes FROM sites"
        ).fetchone()
        device = conn.execute("SELECT id, residence_id FROM devices").fetchone()
        alert = conn.execute("SELECT rule, residence_id, planned_at FROM alerts").fetchone()
        audit = conn.execute("SELECT action, residence_id FROM audit_log").fetchone()
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
    assert site == ("A", 20, 3)
    assert device == ("cam-1", None)
    assert alert == ("camera_offline", None, None)
    assert audit == ("device.create", None)
    assert {
        "residences",
        "supervision_plans",
        "absences",
        "device_maintenance",
        "physical_visits",
        "supervision_checks",
    } <= tables


def test_concurrent_migrations_apply_each_version_exactly_once(empty_database_url: str) -> None:
    """Several processes starting at once: the advisory lock lets one apply, the others wait."""
    workers = 4
    barrier = threading.Barrier(workers)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(migrate(empty_database_url, retention_days=RETENTION_DAYS))
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(v for applied in results for v in applied) == [
        m.version for m in packaged_migrations()
    ]
    with psycopg.connect(empty_database_url) as conn:
        row = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert row == (len(packaged_migrations()),)


def test_storage_mode_is_plain_postgresql_without_timescaledb(database_url: str) -> None:
    """This machine has no TimescaleDB: events stay a plain table, retention by delete."""
    with psycopg.connect(database_url) as conn:
        assert timescale.storage_mode(conn) == "postgresql"
        assert timescale.apply_storage_policies(conn, retention_days=30) == "postgresql"
    assert not asyncio.run(_on_async_connection(database_url, timescale.events_is_hypertable))


async def _on_async_connection(
    database_url: str,
    work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
    *,
    autocommit: bool = False,
) -> T:
    """``work`` done on an asyncio connection of its own, as the gateway's pool lends one."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=autocommit) as conn:
        return await work(conn)


def _delete_expired(database_url: str, *, batch_rows: int, now: datetime) -> int:
    """The number of events delete_expired_events deleted, on an autocommit connection."""
    return asyncio.run(
        _on_async_connection(
            database_url,
            lambda conn: timescale.delete_expired_events(
                conn, retention_days=RETENTION_DAYS, batch_rows=batch_rows, now=now
            ),
            autocommit=True,
        )
    )


def _insert_events(conn: psycopg.Connection[tuple[object, ...]], times: list[datetime]) -> None:
    with conn.cursor().copy(
        "COPY events (time, received_at, device_id, event_id, type) FROM STDIN"
    ) as copy:
        for n, moment in enumerate(times):
            copy.write_row((moment, moment, "t-lock-1", f"e{n}", "heartbeat"))


def _event_times(now: datetime) -> tuple[list[datetime], list[datetime]]:
    expired = [now - timedelta(days=RETENTION_DAYS + 1, minutes=n) for n in range(23)]
    kept = [now - timedelta(days=RETENTION_DAYS - 1, minutes=n) for n in range(5)] + [now]
    return expired, kept


def test_delete_expired_events_deletes_only_rows_past_retention(database_url: str) -> None:
    """Rows older than the retention period go, in bounded chunks; younger rows stay."""
    now = datetime.now(UTC)
    expired, kept = _event_times(now)
    with psycopg.connect(database_url, autocommit=True) as conn:
        _insert_events(conn, expired + kept)
    deleted = _delete_expired(database_url, batch_rows=5, now=now)
    with psycopg.connect(database_url) as conn:
        remaining = [row[0] for row in conn.execute("SELECT time FROM events ORDER BY time")]
    again = _delete_expired(database_url, batch_rows=50_000, now=now)
    assert deleted == len(expired)
    assert remaining == sorted(kept)
    assert again == 0


def test_delete_expired_events_commits_on_a_connection_in_a_transaction(database_url: str) -> None:
    """On a non-autocommit connection (a pool's) the deletes are committed, not left pending."""
    now = datetime.now(UTC)
    expired, kept = _event_times(now)
    with psycopg.connect(database_url, autocommit=True) as setup:
        _insert_events(setup, expired + kept)

    async def delete_in_a_transaction(conn: psycopg.AsyncConnection[Any]) -> tuple[int, Any]:
        await conn.execute("SELECT 1")  # the caller's transaction is open
        deleted = await timescale.delete_expired_events(
            conn, retention_days=RETENTION_DAYS, batch_rows=10, now=now
        )
        # Seen from elsewhere while the caller's connection is still open.
        observer = await psycopg.AsyncConnection.connect(database_url)
        async with observer:
            row = await (await observer.execute("SELECT count(*) FROM events")).fetchone()
        return deleted, row

    deleted, row = asyncio.run(_on_async_connection(database_url, delete_in_a_transaction))
    assert deleted == len(expired)
    assert row == (len(kept),)


def test_the_gateway_sees_plain_postgresql_and_deletes_in_small_chunks(database_url: str) -> None:
    """The gateway's view: storage mode postgresql, and chunks smaller than the backlog."""
    now = datetime.now(UTC)
    expired, kept = _event_times(now)
    with psycopg.connect(database_url, autocommit=True) as setup:
        _insert_events(setup, expired + kept)

    async def run(conn: psycopg.AsyncConnection[Any]) -> tuple[str, int]:
        mode = await timescale.storage_mode_async(conn)
        deleted = await timescale.delete_expired_events(
            conn, retention_days=RETENTION_DAYS, batch_rows=4, now=now
        )
        return mode, deleted

    assert asyncio.run(_on_async_connection(database_url, run)) == ("postgresql", len(expired))
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (len(kept),)


@pytest.mark.parametrize("days", [0, -1], ids=["zero", "negative"])
def test_retention_must_be_at_least_a_day(database_url: str, days: int) -> None:
    """A retention of zero days would delete everything: refused."""
    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(
            _on_async_connection(
                database_url,
                lambda conn: timescale.delete_expired_events(conn, retention_days=days),
            )
        )
