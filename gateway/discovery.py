"""The zigbee2mqtt bridges as the gateway sees them (+#13): their base topics, and the devices
each announces on ``<base>/bridge/devices``, with their SQL.

The gateway subscribes under every bridge's base topic (:class:`Bridges`, re-read with the
device registry) and stores each bridge's device list as it arrives: the bridge publishes it
retained and whole on every change, so each publish replaces the bridge's rows. A base topic is
one bridge's own unless it is the shared default ``zigbee2mqtt``; a list published on a base
several bridges share cannot be told apart and is not stored (the broker lets none of them
publish it, broker/auth_files.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

import psycopg

from devices.zigbee2mqtt_bridges import (
    ANNOUNCEMENT_LEVELS,
    DEFAULT_BASE_TOPIC,
    Announcement,
)

__all__ = ["BridgeAnnouncement", "Bridges", "load_bridges", "store_announcements"]

LOAD_BRIDGES: Final = (
    "SELECT username, base_topic FROM broker_accounts WHERE role = 'zigbee2mqtt_bridge'"
)
# The newer publish wins: the upsert takes the header row's lock, so concurrent batches with a
# list of the same bridge wait for each other, and an older one (a batch committed late) finds
# a newer received_at and changes nothing. RETURNING says whether this one is the newest.
# Nothing is stored for a bridge on a base topic that another organisation's bridge left and
# no operator has cleared since (migration 0017): the retained list there may be theirs. The
# API refuses such a topic to new bridges; this covers a bridge that shared the topic (the
# default) with the one that left, and an organisation changed from the shell.
_CLAIM: Final = """
INSERT INTO bridge_announcements AS a (bridge, received_at, skipped)
SELECT %(bridge)s, %(received_at)s, %(skipped)s
 WHERE EXISTS (SELECT 1 FROM broker_accounts WHERE username = %(bridge)s)
   AND NOT EXISTS (SELECT 1 FROM broker_accounts AS b
                   JOIN bridge_left_base_topics AS l
                     ON l.base_topic = b.base_topic AND l.org_id <> b.org_id
                   WHERE b.username = %(bridge)s)
ON CONFLICT (bridge) DO UPDATE SET received_at = EXCLUDED.received_at, skipped = EXCLUDED.skipped
 WHERE a.received_at <= EXCLUDED.received_at
RETURNING bridge
"""
_FORGET: Final = "DELETE FROM bridge_announced_devices WHERE bridge = %s"
_INSERT: Final = """
INSERT INTO bridge_announced_devices (bridge, ieee_address, friendly_name, type, model, vendor,
    description, model_id, interview_completed, power_source, supported, disabled, seen_at)
SELECT %s, i.* , %s
  FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
              %s::text[], %s::boolean[], %s::text[], %s::boolean[], %s::boolean[]) AS i
"""


@dataclass(frozen=True, slots=True)
class BridgeAnnouncement:
    """A device list received from the one bridge on its base topic."""

    bridge: str  # the bridge's broker username
    received_at: datetime
    announcement: Announcement


class Bridges:
    """The bridges' base topics: which to subscribe to, and whose a topic is."""

    __slots__ = ("_base_of_topic", "by_base")

    def __init__(self, bridges: Mapping[str, str] | None = None) -> None:
        by_base: dict[str, list[str]] = {DEFAULT_BASE_TOPIC: []}
        for username, base in sorted((bridges or {}).items()):
            by_base.setdefault(base, []).append(username)
        # base topic -> the bridges publishing under it (none: the default, always subscribed)
        self.by_base: Mapping[str, Sequence[str]] = MappingProxyType(
            {base: tuple(users) for base, users in by_base.items()}
        )
        # Longest first: with nested bases refused (devices.zigbee2mqtt_bridges) at most one
        # matches, but a topic must never be read under a shorter base by accident.
        self._base_of_topic = sorted(self.by_base, key=len, reverse=True)

    @property
    def base_topics(self) -> list[str]:
        """Every base topic the gateway subscribes under, the default included, sorted."""
        return sorted(self.by_base)

    def base_of(self, topic: str) -> str | None:
        """The base topic ``topic`` lies under, or None."""
        for base in self._base_of_topic:
            if topic.startswith(base) and topic[len(base) : len(base) + 1] == "/":
                return base
        return None

    def announcing_bridge(self, topic: str) -> str | None:
        """The bridge whose device list ``topic`` is: ``<base>/bridge/devices`` of a base topic
        exactly one bridge has; None for any other topic."""
        base = self.base_of(topic)
        if base is None or topic[len(base) + 1 :] != ANNOUNCEMENT_LEVELS:
            return None
        users = self.by_base[base]
        return users[0] if len(users) == 1 else None

    def is_announcement(self, topic: str) -> bool:
        """True for ``<base>/bridge/devices`` under any base topic, whoever's."""
        base = self.base_of(topic)
        return base is not None and topic[len(base) + 1 :] == ANNOUNCEMENT_LEVELS


async def load_bridges(conn: psycopg.AsyncConnection[Any]) -> Bridges:
    """Every bridge's base topic, as the database says now."""
    async with conn.cursor() as cur:
        await cur.execute(LOAD_BRIDGES)
        rows: list[Any] = await cur.fetchall()
    return Bridges({str(row[0]): str(row[1]) for row in rows})


async def store_announcements(
    conn: psycopg.AsyncConnection[Any], announcements: Iterable[BridgeAnnouncement]
) -> int:
    """Replace each bridge's announced devices with its newest list, one transaction for all;
    the number of lists stored (an older one than already stored is not)."""
    newest: dict[str, BridgeAnnouncement] = {}
    for item in announcements:
        if item.bridge not in newest or newest[item.bridge].received_at <= item.received_at:
            newest[item.bridge] = item
    stored = 0
    async with conn.transaction(), conn.cursor() as cur:
        for item in newest.values():
            params = {
                "bridge": item.bridge,
                "received_at": item.received_at,
                "skipped": item.announcement.skipped,
            }
            await cur.execute(_CLAIM, params)
            if await cur.fetchone() is None:
                continue  # a newer list is stored already, or the bridge is gone
            await cur.execute(_FORGET, (item.bridge,))
            devices = item.announcement.devices
            if devices:
                await cur.execute(
                    _INSERT,
                    (
                        item.bridge,
                        item.received_at,
                        [d.ieee_address for d in devices],
                        [d.friendly_name for d in devices],
                        [d.type for d in devices],
                        [d.model for d in devices],
                        [d.vendor for d in devices],
                        [d.description for d in devices],
                        [d.model_id for d in devices],
                        [d.interview_completed for d in devices],
                        [d.power_source for d in devices],
                        [d.supported for d in devices],
                        [d.disabled for d in devices],
                    ),
                )
            stored += 1
    return stored
