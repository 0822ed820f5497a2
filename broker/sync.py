"""Keep Mosquitto's password and ACL files in step with the database, and reload the broker.

The database triggers of migration 0004 NOTIFY ``carewatch_broker_auth`` whenever an identity
changes (onboarding, decommissioning, a new password, a bridge); :func:`run_sync` listens,
renders both files, replaces them atomically and reloads the broker (SIGHUP). On reload
Mosquitto re-reads both files and disconnects every client whose credentials no longer hold,
so a decommissioned device is cut off at once, not at its next reconnect.

If the database goes away the files stay as they are: devices keep connecting with the
identities the broker last knew, and the sync catches up when the database is back. A full
re-render every ``resync_s`` covers a notification lost with a dropped connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psycopg
from psycopg import sql

from broker.auth_files import Account, AuthFiles, BrokerAuth, Role, render
from carewatch.backoff import Backoff

log = logging.getLogger(__name__)

CHANNEL: Final = "carewatch_broker_auth"
PASSWORD_FILE: Final = "passwd"  # noqa: S105 - a file name
ACL_FILE: Final = "acl"

_DEVICES_SQL: Final = """
SELECT id, mqtt_password_hash FROM devices
WHERE status = 'active' AND source = 'mqtt' AND mqtt_password_hash IS NOT NULL
"""
_LISTEN: Final = sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL))
_ACCOUNTS_SQL: Final = "SELECT username, role, password_hash, base_topic FROM broker_accounts"
_LEFT_BASE_TOPICS_SQL: Final = "SELECT DISTINCT base_topic FROM bridge_left_base_topics"
# A bridge speaks only for active devices of its own organisation (the API checks this on
# onboarding; checked again here because this is what the broker enforces). The friendly
# name "bridge" is zigbee2mqtt's own namespace and never a device's.
_BRIDGED_SQL: Final = """
SELECT d.bridge, d.zigbee_name
FROM devices d
JOIN sites s ON s.id = d.site_id
JOIN broker_accounts b ON b.username = d.bridge AND b.org_id = s.org_id
WHERE d.status = 'active' AND d.source = 'zigbee2mqtt' AND d.zigbee_name <> 'bridge'
"""


@dataclass(frozen=True, slots=True)
class AuthPaths:
    """Where the broker's password and ACL files are written: one directory."""

    directory: Path

    @property
    def password_file(self) -> Path:
        """The password file Mosquitto reads (``password_file``)."""
        return self.directory / PASSWORD_FILE

    @property
    def acl_file(self) -> Path:
        """The ACL file Mosquitto reads (``acl_file``)."""
        return self.directory / ACL_FILE


def load_auth(conn: psycopg.Connection[tuple[object, ...]]) -> BrokerAuth:
    """Everyone who may connect, as the database says, in one snapshot."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        devices = {str(i): str(h) for i, h in conn.execute(_DEVICES_SQL).fetchall()}
        accounts = [
            Account(str(user), Role(str(role)), str(hash_), str(base))
            for user, role, hash_, base in conn.execute(_ACCOUNTS_SQL).fetchall()
        ]
        bridged: dict[str, list[str]] = {}
        for bridge, name in conn.execute(_BRIDGED_SQL).fetchall():
            bridged.setdefault(str(bridge), []).append(str(name))
        left = [str(row[0]) for row in conn.execute(_LEFT_BASE_TOPICS_SQL).fetchall()]
    return BrokerAuth(devices=devices, accounts=accounts, bridged=bridged, left_base_topics=left)


def ensure_files(paths: AuthPaths) -> None:
    """Empty files if there are none yet: Mosquitto refuses to start without them, and with
    empty ones nobody can connect until the first sync, which is the safe way round."""
    paths.directory.mkdir(parents=True, exist_ok=True)
    for path in (paths.password_file, paths.acl_file):
        if not path.exists():
            _replace(path, "")


def write_files(paths: AuthPaths, files: AuthFiles) -> bool:
    """Replace both files if their content changed; True if anything was written.

    Each file is written to a temporary file and renamed over the old one, so the broker never
    reads half a file. The ACL goes first: for a moment a new device may be known to the ACL
    and not yet to the password file, never the other way round.
    """
    paths.directory.mkdir(parents=True, exist_ok=True)
    changed = False
    for path, content in (
        (paths.acl_file, files.acl_file),
        (paths.password_file, files.password_file),
    ):
        try:
            if path.read_text(encoding="utf-8") == content:
                continue
        except FileNotFoundError:
            pass
        _replace(path, content)
        changed = True
    return changed


def sync_once(conn: psycopg.Connection[tuple[object, ...]], paths: AuthPaths) -> bool:
    """Render both files from the database once; True if either changed."""
    return write_files(paths, render(load_auth(conn)))


def _replace(path: Path, content: str) -> None:
    # The password file holds hashes only, but nobody else on the host needs to read them.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def run_sync(
    database_url: str,
    paths: AuthPaths,
    reload: Callable[[], None],
    *,
    debounce_s: float = 0.05,
    resync_s: float = 60.0,
    on_synced: Callable[[bool], None] | None = None,
) -> None:
    """Forever: LISTEN, re-render on every change (and every ``resync_s``), reload on change.

    ``on_synced(changed)`` is called after every pass (tests and the demo wait on it).
    """
    backoff = Backoff(0.2, 10.0)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                await conn.execute(_LISTEN)
                backoff.reset()
                while True:
                    # LISTEN is active before we read, so no change can slip between the two.
                    changed = await asyncio.to_thread(_sync_blocking, database_url, paths)
                    if changed:
                        reload()
                        log.info("broker identities changed; broker reloaded")
                    if on_synced is not None:
                        on_synced(changed)
                    await _wait_for_change(conn, resync_s, debounce_s)
        except (psycopg.Error, OSError) as error:
            delay = backoff.next()
            log.warning(
                "broker identity sync: %s; the broker keeps its identities; retry in %.1f s",
                error,
                delay,
            )
            await asyncio.sleep(delay)


def _sync_blocking(database_url: str, paths: AuthPaths) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return sync_once(conn, paths)


async def _wait_for_change(
    conn: psycopg.AsyncConnection[tuple[object, ...]], resync_s: float, debounce_s: float
) -> None:
    """Return after a notification (plus ``debounce_s`` to gather a burst) or ``resync_s``."""
    async for _ in conn.notifies(timeout=resync_s, stop_after=1):
        break
    else:
        return
    # A bulk import commits once, but a burst of single onboardings would otherwise reload
    # the broker once per device: gather what arrives within the debounce window.
    async for _ in conn.notifies(timeout=debounce_s):
        pass
