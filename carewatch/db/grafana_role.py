"""The read-only PostgreSQL role Grafana logs in as: ``carewatch grafana role --password-stdin``.

Not a migration: roles belong to the whole cluster, not to one database, and their password
is a deployment secret. ``docker-compose.yml`` runs this right after ``carewatch migrate`` on
every start; it is idempotent and converges, so a table added to :data:`GRAFANA_READS` (or
removed from it) takes effect on the next start and the password follows the environment.

Least privilege, because Grafana runs whatever SQL a dashboard editor types (Grafana's own docs
ask for a SELECT-only user): the role may log in and SELECT from the tables and columns below,
nothing else. Not users, tokens, audit log or broker accounts; not the devices' MQTT password
hashes (a column grant leaves them out); not the dead letters' raw payloads. Its sessions are
read-only by default and a runaway query stops after ``statement_timeout``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from typing import Any, Final

import psycopg
from psycopg import sql

from carewatch.errors import AdminError
from carewatch.settings import Settings

DEFAULT_ROLE: Final = "carewatch_grafana"
# A dashboard panel that needs longer than this is a query to rewrite against the rollups.
STATEMENT_TIMEOUT: Final = "30s"

# Table -> the columns Grafana may read (None: every column; nothing in it is secret). An
# allowlist: a column added later (perhaps a secret) stays invisible until it is listed here.
GRAFANA_READS: Final[Mapping[str, tuple[str, ...] | None]] = {
    "organisations": ("id", "name"),
    "sites": ("id", "org_id", "name", "timezone"),
    "devices": (
        "id",
        "kind",
        "site_id",
        "label",
        "status",
        "last_seen",
        "online",
        "battery",
        "firmware",
        "source",
        "zigbee_model",
        "created_at",
        "decommissioned_at",
    ),
    "alerts": None,
    "alert_changes": None,
    # Not payload: whatever a device (or anyone on the broker) sent, kept for forensics only.
    "dead_letters": ("id", "received_at", "topic", "reason", "detail"),
    "events": None,
    "usage_device_hourly": None,
    "usage_site_hourly": None,
    "usage_site_daily": None,
    "usage_device_daily": None,
}

_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def ensure_grafana_role(
    conn: psycopg.Connection[Any], password: str, *, role: str = DEFAULT_ROLE
) -> bool:
    """Create or update ``role`` with exactly the grants of :data:`GRAFANA_READS`; True if created.

    Needs a connection as a superuser or a role with CREATEROLE, on the migrated database.
    One transaction: Grafana never sees the role between the REVOKE and the GRANTs.
    """
    if not _ROLE_NAME.match(role):
        raise AdminError(f"invalid role name {role!r}: lower-case letters, digits and _")
    if not password or "\n" in password:
        raise AdminError("the password is empty")
    ident = sql.Identifier(role)
    with conn.transaction():
        schema, database = _one(conn, "SELECT current_schema(), current_database()")
        missing = [
            table
            for table in GRAFANA_READS
            if _one(conn, "SELECT to_regclass(%s)", (f"{schema}.{table}",))[0] is None
        ]
        if missing:
            raise AdminError(
                f"no table {', '.join(missing)} in database {database}: run carewatch migrate first"
            )
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        # Hashed here (SCRAM-SHA-256, as the server's password_encryption says), so the clear
        # password never reaches the server or its statement log.
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode()).decode()
        conn.execute(
            sql.SQL(
                "ALTER ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                " NOBYPASSRLS NOINHERIT PASSWORD {}"
            ).format(ident, sql.Literal(verifier))
        )
        for setting, value in (
            ("default_transaction_read_only", "on"),
            ("statement_timeout", STATEMENT_TIMEOUT),
        ):
            conn.execute(
                sql.SQL("ALTER ROLE {} SET {} = {}").format(
                    ident, sql.Identifier(setting), sql.Literal(value)
                )
            )
        # Revoking a table's privileges revokes its column privileges too: what was granted
        # before and is no longer listed goes away.
        conn.execute(
            sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(
                sql.Identifier(schema), ident
            )
        )
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), ident)
        )
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), ident)
        )
        for table, columns in GRAFANA_READS.items():
            target = sql.Identifier(schema, table)
            if columns is None:
                conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(target, ident))
            else:
                conn.execute(
                    sql.SQL("GRANT SELECT ({}) ON {} TO {}").format(
                        sql.SQL(", ").join(map(sql.Identifier, columns)), target, ident
                    )
                )
    return exists is None


def _one(
    conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()
) -> tuple[Any, ...]:
    row = conn.execute(query, params).fetchone()
    assert row is not None  # these queries always return one row
    return tuple(row)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``carewatch grafana role``, the password on stdin; 0 on success, 2 if refused."""
    password = sys.stdin.readline().rstrip("\n")
    try:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            created = ensure_grafana_role(conn, password, role=args.name)
    except AdminError as error:
        print(f"carewatch grafana: {error}", file=sys.stderr)
        return 2
    except psycopg.errors.InsufficientPrivilege as error:
        print(
            f"carewatch grafana: {error.diag.message_primary} "
            "(connect as the database owner with CREATEROLE, or a superuser)",
            file=sys.stderr,
        )
        return 2
    print(f"grafana role {args.name} {'created' if created else 'updated'} (read-only)")
    return 0
