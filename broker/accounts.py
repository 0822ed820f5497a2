"""Broker accounts that are not devices: gateways, zigbee2mqtt bridges, the simulator."""

from __future__ import annotations

from typing import Final

import psycopg

from broker.auth_files import Role
from carewatch.broker_passwords import hash_password
from carewatch.errors import AdminError

_SET_ACCOUNT: Final = """
INSERT INTO broker_accounts (username, role, org_id, label, password_hash)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (username) DO UPDATE
    SET role = EXCLUDED.role, org_id = EXCLUDED.org_id,
        label = EXCLUDED.label, password_hash = EXCLUDED.password_hash
RETURNING (xmax = 0)
"""
_REMOVE_ACCOUNT: Final = "DELETE FROM broker_accounts WHERE username = %s"


def set_account(
    conn: psycopg.Connection[tuple[object, ...]],
    username: str,
    role: Role,
    password: str,
    *,
    org_id: str | None = None,
    label: str = "",
) -> bool:
    """Create the account, or give an existing one this role and password; True if created.

    Idempotent, so deployment scripts may run it on every start with the secret they hold.
    The database CHECKs refuse a username without a dot (it could be a device id) and a
    bridge without an organisation.
    """
    if not password:
        raise AdminError("the password is empty")
    try:
        row = conn.execute(
            _SET_ACCOUNT, (username, role.value, org_id, label, hash_password(password))
        ).fetchone()
    except psycopg.errors.CheckViolation as error:
        raise AdminError(
            f"broker account {username!r} refused: a name needs a dot (carewatch.gateway), "
            f"and a zigbee2mqtt bridge an organisation ({error.diag.constraint_name})"
        ) from error
    except psycopg.errors.ForeignKeyViolation as error:
        raise AdminError(f"no organisation {org_id!r}") from error
    return bool(row and row[0])


def remove_account(conn: psycopg.Connection[tuple[object, ...]], username: str) -> bool:
    """Delete the account (the broker refuses it at once); True if there was one."""
    return conn.execute(_REMOVE_ACCOUNT, (username,)).rowcount > 0
