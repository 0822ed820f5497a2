"""Schema migrations: ordered SQL files, each applied once, safe to run from every process start.

Files are package data, ``carewatch/db/migrations/NNNN_description.sql``; ``NNNN`` is the
version recorded in ``schema_migrations``. A migration is never edited once released: a change
is a new file. Each file runs in its own transaction that first takes a transaction-scoped
advisory lock, so several gateways starting at once apply each migration exactly once (the others
wait for the lock, then see it recorded). Then :mod:`carewatch.db.timescale` sets up storage.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from carewatch.db import timescale
from carewatch.errors import MigrationError

log = logging.getLogger(__name__)

# Any constant will do as long as no other code of ours takes the same advisory lock:
# the bytes of "cwmigrat" read as a big-endian integer.
MIGRATION_LOCK_ID = int.from_bytes(b"cwmigrat", "big", signed=True)

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One packaged SQL migration: ``<version>_<name>.sql`` and its text."""

    version: str
    name: str
    sql: bytes


def packaged_migrations() -> list[Migration]:
    """The migrations shipped in the package, in version order."""
    found: dict[str, Migration] = {}
    for entry in resources.files("carewatch.db").joinpath("migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"{entry.name}: name must look like NNNN_description.sql")
        version = match["version"]
        if version in found:
            raise MigrationError(f"version {version} used twice ({entry.name})")
        found[version] = Migration(version, match["name"], entry.read_bytes())
    return [found[version] for version in sorted(found)]


def migrate(database_url: str, *, retention_days: int) -> list[str]:
    """Apply pending migrations and the storage policies; the versions applied by this call."""
    applied_now: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        for migration in packaged_migrations():
            with conn.transaction():
                _lock(conn)
                _ensure_ledger(conn)
                if _is_applied(conn, migration.version):
                    continue
                # bytes without parameters: psycopg sends the file as one simple query, so it
                # may hold many statements, and a % in it is not a placeholder.
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                applied_now.append(migration.version)
                log.info("applied migration %s_%s", migration.version, migration.name)
        with conn.transaction():
            _lock(conn)
            mode = timescale.apply_storage_policies(conn, retention_days=retention_days)
        _warn_about_unknown_versions(conn)
    log.info("schema up to date (%s migration(s) applied now, storage: %s)", len(applied_now), mode)
    return applied_now


def _lock(conn: psycopg.Connection[Any]) -> None:
    """Serialise migrators: wait for the others; the lock ends with the transaction."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))


def _ensure_ledger(conn: psycopg.Connection[Any]) -> None:
    """Create schema_migrations; called under the lock, so two first starts cannot race."""
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NULL").fetchone()
    if row and row[0]:
        conn.execute(
            "CREATE TABLE schema_migrations ("
            " version text PRIMARY KEY,"
            " name text NOT NULL DEFAULT '',"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )


def _is_applied(conn: psycopg.Connection[Any], version: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = %s)", (version,)
    ).fetchone()
    return bool(row and row[0])


def _warn_about_unknown_versions(conn: psycopg.Connection[Any]) -> None:
    known = {migration.version for migration in packaged_migrations()}
    recorded = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    if unknown := sorted(recorded - known):
        # A newer release migrated this database; older code may still run against it, since
        # migrations only add, but say so.
        log.warning("database has migrations this release does not know: %s", ", ".join(unknown))
