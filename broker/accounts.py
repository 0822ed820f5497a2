"""Broker accounts that are not devices: gateways, zigbee2mqtt bridges, the simulator."""

from __future__ import annotations

from typing import Final

import psycopg

from broker.auth_files import Role
from carewatch.broker_passwords import hash_password
from carewatch.errors import AdminError
from carewatch.fleet import BASE_TOPIC_LEFT_BY_OTHERS, base_topic_left_detail
from devices.zigbee2mqtt_bridges import DEFAULT_BASE_TOPIC, base_topic_conflict, check_base_topic

# base_topic NULL: the default for a new account, unchanged for an existing one.
_SET_ACCOUNT: Final = """
INSERT INTO broker_accounts AS a (username, role, org_id, label, password_hash, base_topic)
VALUES (%(username)s, %(role)s, %(org_id)s, %(label)s, %(hash)s,
        coalesce(%(base_topic)s, 'zigbee2mqtt'))
ON CONFLICT (username) DO UPDATE
    SET role = EXCLUDED.role, org_id = EXCLUDED.org_id,
        label = EXCLUDED.label, password_hash = EXCLUDED.password_hash,
        base_topic = coalesce(%(base_topic)s, a.base_topic)
RETURNING (xmax = 0)
"""
_OTHER_BASE_TOPICS: Final = (
    "SELECT DISTINCT base_topic FROM broker_accounts"
    " WHERE role = 'zigbee2mqtt_bridge' AND username <> %s"
)
_REMOVE_ACCOUNT: Final = "DELETE FROM broker_accounts WHERE username = %s"
_BASE_TOPIC_OF: Final = "SELECT base_topic FROM broker_accounts WHERE username = %s"
# A bridge moved to another base topic: what it announced under the old one is dropped, as
# carewatch.fleet.change_bridge_base_topic does.
_FORGET_ANNOUNCED: Final = "DELETE FROM bridge_announcements WHERE bridge = %s"


def set_account(
    conn: psycopg.Connection[tuple[object, ...]],
    username: str,
    role: Role,
    password: str,
    *,
    org_id: str | None = None,
    label: str = "",
    base_topic: str | None = None,
) -> bool:
    """Create the account, or give an existing one this role and password; True if created.

    Idempotent, so deployment scripts may run it on every start with the secret they hold.
    The database CHECKs refuse a username without a dot (it could be a device id) and a
    bridge without an organisation. ``base_topic`` (a bridge's, +#13; None keeps it, or the
    default for a new account) is checked as the API checks it: its shape, another bridge's
    own base topic, one nested in another's, one a bridge of another organisation left (its
    retained device list may still be in the broker; migration 0017); a bridge moved to another
    base topic drops what it announced under the old one.
    """
    if not password:
        raise AdminError("the password is empty")
    moved = False
    before = conn.execute(_BASE_TOPIC_OF, (username,)).fetchone()
    if base_topic is not None:
        _check_base_topic(conn, username, base_topic)
        moved = before is not None and before[0] != base_topic
    # The base topic a bridge takes: a new one's (the default unless told), or a move's.
    taking = (
        (base_topic or DEFAULT_BASE_TOPIC) if before is None else (base_topic if moved else None)
    )
    if role is Role.ZIGBEE2MQTT_BRIDGE and taking is not None:
        left = conn.execute(BASE_TOPIC_LEFT_BY_OTHERS, (taking, org_id)).fetchone()
        if left is not None:
            raise AdminError(f"base topic {taking!r}: {base_topic_left_detail(taking)}")
    params = {
        "username": username,
        "role": role.value,
        "org_id": org_id,
        "label": label,
        "hash": hash_password(password),
        "base_topic": base_topic,
    }
    try:
        row = conn.execute(_SET_ACCOUNT, params).fetchone()
    except psycopg.errors.CheckViolation as error:
        raise AdminError(
            f"broker account {username!r} refused: a name needs a dot (carewatch.gateway), "
            f"and a zigbee2mqtt bridge an organisation ({error.diag.constraint_name})"
        ) from error
    except psycopg.errors.ForeignKeyViolation as error:
        raise AdminError(f"no organisation {org_id!r}") from error
    except psycopg.errors.UniqueViolation as error:
        raise AdminError(f"base topic {base_topic!r}: another bridge publishes there") from error
    if moved:
        conn.execute(_FORGET_ANNOUNCED, (username,))
    return bool(row and row[0])


def remove_account(conn: psycopg.Connection[tuple[object, ...]], username: str) -> bool:
    """Delete the account (the broker refuses it at once); True if there was one."""
    return conn.execute(_REMOVE_ACCOUNT, (username,)).rowcount > 0


def _check_base_topic(
    conn: psycopg.Connection[tuple[object, ...]], username: str, base_topic: str
) -> None:
    if (reason := check_base_topic(base_topic)) is not None:
        raise AdminError(f"base topic {base_topic!r}: {reason}")
    others = [str(row[0]) for row in conn.execute(_OTHER_BASE_TOPICS, (username,)).fetchall()]
    if (other := base_topic_conflict(base_topic, others)) is not None:
        raise AdminError(f"base topic {base_topic!r} overlaps {other!r}")
