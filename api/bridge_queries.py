"""What the organisation's zigbee2mqtt bridges announced (+#13): its SQL, scoped by organisation.

The gateway stores each bridge's ``<base>/bridge/devices`` (``gateway/discovery.py``); this is
the reading side, for ``GET /api/v1/bridges/{id}/announced`` and the onboarding page. Each
announced device comes with what Carewatch makes of it: the kind its model maps to in
``devices/zigbee2mqtt.toml`` (None: not mapped, shown as such and never guessed), the active
device already onboarded under that friendly name behind this bridge, and whether onboarding
offers it (:func:`devices.zigbee2mqtt_bridges.is_offered`, mapped, not yet onboarded). Nothing
here onboards anything: that is a person's decision, through :func:`carewatch.fleet.create_devices`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from carewatch.errors import NotFoundError
from devices.device_specs import ZIGBEE_MODELS
from devices.ids import BRIDGE_USERNAME_PREFIX
from devices.zigbee2mqtt_bridges import AnnouncedDevice, is_offered

__all__ = ["AnnouncedRow", "BridgeAnnouncements", "announced", "announced_by_bridge"]

Connection = psycopg.AsyncConnection[Any]

# The organisation's bridges (%(org_id)s; %(username)s NULL: all of them) with their last
# announcement, if any.
_BRIDGES: Final = """
SELECT substr(b.username, length('zigbee2mqtt.') + 1) AS id, b.username, b.label, b.base_topic,
       a.received_at
  FROM broker_accounts b LEFT JOIN bridge_announcements a ON a.bridge = b.username
 WHERE b.role = 'zigbee2mqtt_bridge' AND b.org_id = %(org_id)s
   AND (%(username)s::text IS NULL OR b.username = %(username)s::text)
 ORDER BY b.username
"""
# Their announced devices, each with the active device onboarded under its name behind the
# same bridge (a device of another bridge is not this one, whatever its name).
_DEVICES: Final = """
SELECT a.bridge, a.ieee_address, a.friendly_name, a.type, a.model, a.vendor, a.description,
       a.model_id, a.interview_completed, a.power_source, a.supported, a.disabled, a.seen_at,
       d.id AS device_id
  FROM bridge_announced_devices a
  JOIN broker_accounts b ON b.username = a.bridge
  LEFT JOIN devices d
         ON d.bridge = a.bridge AND d.zigbee_name = a.friendly_name AND d.status = 'active'
 WHERE b.org_id = %(org_id)s AND a.bridge = ANY (%(bridges)s::text[])
 ORDER BY a.bridge, a.friendly_name, a.ieee_address
"""


@dataclass(frozen=True, slots=True)
class AnnouncedRow:
    """One announced device and what Carewatch makes of it."""

    device: AnnouncedDevice
    seen_at: datetime
    kind: str | None  # the kind its model maps to; None: Carewatch has no mapping for it
    device_id: str | None  # the active device onboarded under its name behind this bridge

    @property
    def mapped(self) -> bool:
        """Whether devices/zigbee2mqtt.toml maps the device's model."""
        return self.kind is not None

    @property
    def offered(self) -> bool:
        """Whether onboarding offers it: a mapped, interviewed, enabled end device or router
        that is not onboarded yet."""
        return self.mapped and self.device_id is None and is_offered(self.device)


@dataclass(frozen=True, slots=True)
class BridgeAnnouncements:
    """A bridge of the organisation and what it last announced (nothing yet: ``received_at``
    None)."""

    id: str
    username: str
    label: str
    base_topic: str
    received_at: datetime | None
    devices: list[AnnouncedRow] = field(default_factory=list)

    @property
    def offered(self) -> list[AnnouncedRow]:
        """The devices onboarding offers."""
        return [row for row in self.devices if row.offered]

    @property
    def not_offered(self) -> list[AnnouncedRow]:
        """The others: onboarded already, unknown models, the coordinator, interviews not done."""
        return [row for row in self.devices if not row.offered]


async def announced_by_bridge(
    conn: Connection,
    org_id: str,
    *,
    bridge_id: str | None = None,
    zigbee_models: Mapping[str, str] = ZIGBEE_MODELS,
) -> list[BridgeAnnouncements]:
    """The organisation's bridges (or the one ``bridge_id``) with what each announced."""
    username = None if bridge_id is None else BRIDGE_USERNAME_PREFIX + bridge_id
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_BRIDGES, {"org_id": org_id, "username": username})
        bridges = {row["username"]: BridgeAnnouncements(**row) for row in await cur.fetchall()}
        if not bridges:
            return []
        await cur.execute(_DEVICES, {"org_id": org_id, "bridges": sorted(bridges)})
        for row in await cur.fetchall():
            bridges[row.pop("bridge")].devices.append(_row(row, zigbee_models))
    return list(bridges.values())


async def announced(
    conn: Connection,
    org_id: str,
    bridge_id: str,
    *,
    zigbee_models: Mapping[str, str] = ZIGBEE_MODELS,
) -> BridgeAnnouncements:
    """One bridge of the organisation with what it announced; NotFoundError if the organisation
    has no such bridge (another organisation's is not found either)."""
    found = await announced_by_bridge(
        conn, org_id, bridge_id=bridge_id, zigbee_models=zigbee_models
    )
    if not found:
        raise NotFoundError("bridge", bridge_id)
    return found[0]


def _row(row: dict[str, Any], zigbee_models: Mapping[str, str]) -> AnnouncedRow:
    seen_at, device_id = row.pop("seen_at"), row.pop("device_id")
    device = AnnouncedDevice(**row)
    kind = None if device.model is None else zigbee_models.get(device.model)
    return AnnouncedRow(device, seen_at, kind, device_id)
