"""The one place that knows about TimescaleDB.

With the ``timescaledb`` extension, ``events`` becomes a hypertable (one chunk per day of device
time), chunks older than a week are compressed, and TimescaleDB drops chunks past the retention
period itself; the usage rollup ``usage_device_hourly`` becomes a compressed hypertable too.
On plain PostgreSQL the same schema works unchanged (``events_time_brin`` serves time ranges)
and the gateway calls :func:`delete_expired_events` periodically instead.

The TimescaleDB statements cannot run on the development machines (the extension is not
installable there), so they are few and follow the TimescaleDB 2.13+ API as documented:
``create_hypertable`` with ``by_range``, ``add_compression_policy``, ``add_retention_policy``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

StorageMode = Literal["timescaledb", "postgresql"]

Connection = psycopg.Connection[Any]
AsyncConnection = psycopg.AsyncConnection[Any]


_STORAGE_MODE_SQL = """
    SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),
           EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
           'timescaledb' = ANY (string_to_array(
               replace(current_setting('shared_preload_libraries'), ' ', ''), ','))
"""
_HAS_TIMESCALE_CATALOG_SQL = "SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL"
_EVENTS_IS_HYPERTABLE_SQL = (
    "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables"
    " WHERE hypertable_schema = current_schema() AND hypertable_name = 'events')"
)
# ctid is the physical row address: the cheapest way to name the rows the time index found.
# The LIMIT is what bounds each transaction.
_DELETE_CHUNK_SQL = (
    "DELETE FROM events WHERE ctid = ANY (ARRAY( SELECT ctid FROM events WHERE time < %s LIMIT %s))"
)


def _mode_from(row: tuple[Any, ...] | None) -> StorageMode:
    installed, available, preloaded = row if row is not None else (False, False, False)
    if installed or (available and preloaded):
        return "timescaledb"
    if available:
        log.warning(
            "the timescaledb extension is available but not in shared_preload_libraries; "
            "storing events in a plain table with scheduled deletes"
        )
    return "postgresql"


def storage_mode(conn: Connection) -> StorageMode:
    """``"timescaledb"`` when the extension is installed in this database or can be.

    "Can be" means available and preloaded: CREATE EXTENSION fails without
    ``shared_preload_libraries = 'timescaledb'``, and a server that has the package but not
    the preload is served as plain PostgreSQL (with a warning) rather than not at all.
    """
    return _mode_from(conn.execute(_STORAGE_MODE_SQL).fetchone())


async def storage_mode_async(conn: AsyncConnection) -> StorageMode:
    """:func:`storage_mode` for an asyncio connection (the gateway's pool)."""
    cursor = await conn.execute(_STORAGE_MODE_SQL)
    return _mode_from(await cursor.fetchone())


def apply_storage_policies(conn: Connection, *, retention_days: int) -> StorageMode:
    """Make ``events`` a compressed hypertable with retention, if TimescaleDB is there.

    Idempotent; call it inside the migration transaction. Changing ``retention_days`` and
    migrating again replaces the retention policy. Returns the storage mode.
    """
    if retention_days < 1:
        raise ValueError(f"retention_days must be at least 1, not {retention_days}")
    mode = storage_mode(conn)
    if mode == "postgresql":
        # Nothing to set up: retention is delete_expired_events(), called by the gateway.
        return mode
    conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    # One chunk per day of device time: a day of a large municipality's events fits in memory
    # many times over, and retention then drops whole days. Chunk exclusion narrows time
    # ranges to chunks and the BRIN index of migration 0001 within them, hence no default
    # B-tree: one index less to keep up on every insert. segmentby device_id: per-device reads
    # (a device's history) decompress one segment. A week leaves late heartbeats and resent
    # events to land in uncompressed chunks, where inserting (and the duplicate check) is
    # cheap; older chunks are read-mostly.
    _compressed_hypertable(
        conn,
        "events",
        by="time",
        chunk="1 day",
        segment_by="device_id",
        order_by="time DESC",
        compress_after="7 days",
    )
    # add_retention_policy(if_not_exists) keeps an existing policy even if its interval
    # differs, so replace it to follow the setting.
    conn.execute("SELECT remove_retention_policy('events', if_exists => true)")
    conn.execute(
        "SELECT add_retention_policy('events', drop_after => make_interval(days => %s))",
        (retention_days,),
    )
    _usage_rollups_as_hypertable(conn)
    log.info("events is a TimescaleDB hypertable; retention %s days", retention_days)
    return mode


# Composed (psycopg.sql) rather than bound: the names and intervals go into the text exactly as
# TimescaleDB's documentation writes them (some of these functions take "any").
_CREATE_HYPERTABLE: Final = sql.SQL(
    "SELECT create_hypertable({table}, by_range({by}, INTERVAL {chunk}),"
    " create_default_indexes => false, if_not_exists => true, migrate_data => true)"
)
_COMPRESSION_ENABLED: Final = (
    "SELECT compression_enabled FROM timescaledb_information.hypertables"
    " WHERE hypertable_schema = current_schema() AND hypertable_name = %s"
)
_ENABLE_COMPRESSION: Final = sql.SQL(
    "ALTER TABLE {table} SET (timescaledb.compress,"
    " timescaledb.compress_segmentby = {segment_by}, timescaledb.compress_orderby = {order_by})"
)
_ADD_COMPRESSION_POLICY: Final = sql.SQL(
    "SELECT add_compression_policy({table}, compress_after => INTERVAL {after},"
    " if_not_exists => true)"
)


def _compressed_hypertable(
    conn: Connection,
    table: str,
    *,
    by: str,
    chunk: str,
    segment_by: str,
    order_by: str,
    compress_after: str,
) -> None:
    """Make ``table`` a hypertable (chunks of ``chunk`` by column ``by``), compressed after
    ``compress_after``; idempotent."""
    name = sql.Literal(table)
    conn.execute(
        _CREATE_HYPERTABLE.format(table=name, by=sql.Literal(by), chunk=sql.Literal(chunk))
    )
    row = conn.execute(_COMPRESSION_ENABLED, (table,)).fetchone()
    if row is None or not row[0]:
        # Only once: changing these settings is refused once chunks are compressed.
        conn.execute(
            _ENABLE_COMPRESSION.format(
                table=sql.Identifier(table),
                segment_by=sql.Literal(segment_by),
                order_by=sql.Literal(order_by),
            )
        )
    conn.execute(_ADD_COMPRESSION_POLICY.format(table=name, after=sql.Literal(compress_after)))


def _usage_rollups_as_hypertable(conn: Connection) -> None:
    """``usage_device_hourly`` (devices x hours x types: the rollup that grows with the fleet)
    as a hypertable of 30-day chunks, compressed after 60 days.

    Not a continuous aggregate: the gateway keeps the rollups in the batch's transaction on
    both kinds of server (carewatch/db/rollups.py), exact for late and resent events and with
    the device's site at the time, which a continuous aggregate cannot join. The site tables
    stay plain: a few rows per site and hour; so does ``usage_device_daily`` (migration 0018):
    a row per day instead of up to 24, read only by device and day range through its index,
    and plain it needs none of these statements that cannot be tested here. Upserts of late
    events and the rebuild's DELETE reach compressed chunks too (DML on compressed chunks,
    TimescaleDB 2.11+); after 60 days that is rare. No retention policy: a year of rollups is
    small and outlives the events.
    segmentby device_id: a device's year (the fleet pages) decompresses one segment.
    """
    _compressed_hypertable(
        conn,
        "usage_device_hourly",
        by="bucket",
        chunk="30 days",
        segment_by="device_id",
        order_by="bucket DESC, type",
        compress_after="60 days",
    )


async def events_is_hypertable(conn: AsyncConnection) -> bool:
    """True if ``events`` is a TimescaleDB hypertable in this database."""
    row = await (await conn.execute(_HAS_TIMESCALE_CATALOG_SQL)).fetchone()
    if row is None or not row[0]:
        return False
    row = await (await conn.execute(_EVENTS_IS_HYPERTABLE_SQL)).fetchone()
    return bool(row and row[0])


def _cutoff(retention_days: int, now: datetime | None) -> datetime:
    if retention_days < 1:
        raise ValueError(f"retention_days must be at least 1, not {retention_days}")
    return (now or datetime.now(UTC)) - timedelta(days=retention_days)


async def delete_expired_events(
    conn: AsyncConnection,
    *,
    retention_days: int,
    batch_rows: int = 50_000,
    now: datetime | None = None,
) -> int:
    """Delete events whose device time is older than ``retention_days``; the number deleted.

    For plain PostgreSQL (the gateway calls it periodically): under TimescaleDB the retention
    policy drops whole chunks and this returns 0. Deletes ``batch_rows`` at a time and commits
    each chunk before the next, so that locks, WAL bursts and the inserts waiting behind them
    stay small even when years of data expire at once. On an autocommit connection each chunk
    is its own transaction; on one inside a transaction, that transaction is committed with the
    first chunk.
    """
    cutoff = _cutoff(retention_days, now)
    if await events_is_hypertable(conn):
        return 0
    total = 0
    while True:
        if conn.autocommit:
            async with conn.transaction():
                deleted = (await conn.execute(_DELETE_CHUNK_SQL, (cutoff, batch_rows))).rowcount
        else:
            deleted = (await conn.execute(_DELETE_CHUNK_SQL, (cutoff, batch_rows))).rowcount
            await conn.commit()
        total += deleted
        if deleted < batch_rows:
            break
    if total:
        log.info("deleted %s events older than %s", total, cutoff.isoformat())
    return total
