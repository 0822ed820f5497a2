"""The gateway's view of the device registry: which device ids exist, their kind, whether active.

The topic names the device; the registry, not the payload, says what it is. The gateway keeps
all devices in a dict (a few hundred bytes each: 100,000 devices are tens of MB) so the hot path
is a dict lookup. It re-reads what changed every few seconds, and asks the database straight
away about an id it has never seen (a device onboarded a moment ago) — at most once per refresh
interval per id, so a misconfigured device cannot make every batch query the database.

Devices behind zigbee2mqtt are also found by their friendly name (``zigbee2mqtt/<name>``):
``zigbee`` maps each name to the device that has it — the active one, when a decommissioned
device left its name to a new one. A device renamed, or moved off zigbee2mqtt, loses its old
name at the next refresh (the updated_at trigger of migration 0004 moves on those columns).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Container, Iterable
from datetime import datetime, timedelta

import psycopg

from devices.catalog import DEFAULT_CATALOG
from devices.envelope import DeviceRef
from devices.ids import is_zigbee_name
from devices.zigbee2mqtt import ZigbeeDeviceRef
from gateway import alerting, discovery, store

log = logging.getLogger(__name__)

# Rows committed just before our last look may carry an updated_at slightly older than the
# newest one we saw (concurrent transactions); look back a little to never miss them.
REFRESH_OVERLAP = timedelta(seconds=30)


class DeviceRegistry:
    """The gateway's copy of the device registry: ids and zigbee2mqtt names to devices."""

    def __init__(self, *, miss_ttl_s: float) -> None:
        self.devices: dict[str, DeviceRef] = {}
        self.zigbee: dict[str, ZigbeeDeviceRef] = {}  # friendly name -> device
        self._zigbee_names: dict[str, str] = {}  # device id -> the name it holds in `zigbee`
        self._watermark: datetime | None = None
        self._misses: dict[str, float] = {}
        self._name_misses: dict[str, float] = {}
        self._miss_ttl_s = miss_ttl_s
        self.loaded = False
        # The zigbee2mqtt bridges' base topics (+#13), re-read with every refresh.
        self.bridges = discovery.Bridges()
        # Heartbeats with a battery below this go through the alert rules (the highest
        # "warning below" of the catalog and of every site's override).
        self.battery_watch_below = _catalog_battery_watch_below()

    def kind_of(self, device_id: str) -> str:
        """The device's kind, or ``unknown`` (a metric label)."""
        ref = self.devices.get(device_id)
        return ref.kind if ref else "unknown"

    async def refresh(self, conn: psycopg.AsyncConnection[object]) -> int:
        """Load everything the first time, then what changed since. Returns rows read."""
        since = None if self._watermark is None else self._watermark - REFRESH_OVERLAP
        refs, zigbee, newest = await store.load_devices(conn, changed_since=since)
        self._remember(refs)
        self._remember_zigbee(zigbee)
        if newest is not None and (self._watermark is None or newest > self._watermark):
            self._watermark = newest
        async with conn.cursor() as cur:
            await cur.execute(alerting.BATTERY_WATCH_BELOW)
            row = await cur.fetchone()
        sites_max = int(row[0]) if row is not None else 0  # type: ignore[index]
        self.battery_watch_below = max(_catalog_battery_watch_below(), sites_max)
        self.bridges = await discovery.load_bridges(conn)
        self.loaded = True
        return len(refs)

    async def resolve(self, conn: psycopg.AsyncConnection[object], ids: Iterable[str]) -> bool:
        """Look up ids we do not know, unless we asked about them within the miss TTL.

        True if that taught us a device we did not know.
        """
        now = time.monotonic()
        unknown = self._worth_asking(ids, self.devices, self._misses, now)
        if not unknown:
            return False
        refs, zigbee, _ = await store.load_devices(conn, ids=sorted(unknown))
        self._remember(refs)
        self._remember_zigbee(zigbee)
        _note_misses(self._misses, unknown - {r.id for r in refs}, now)
        return bool(refs)

    async def resolve_zigbee(
        self, conn: psycopg.AsyncConnection[object], names: Iterable[str]
    ) -> bool:
        """:meth:`resolve` for zigbee2mqtt friendly names; True if that taught us one."""
        now = time.monotonic()
        unknown = self._worth_asking(names, self.zigbee, self._name_misses, now)
        if not unknown:
            return False
        refs, zigbee, _ = await store.load_devices(conn, zigbee_names=sorted(unknown))
        self._remember(refs)
        self._remember_zigbee(zigbee)
        _note_misses(self._name_misses, unknown - self.zigbee.keys(), now)
        return bool(unknown & self.zigbee.keys())

    def _worth_asking(
        self, keys: Iterable[str], known: Container[str], misses: dict[str, float], now: float
    ) -> set[str]:
        """The keys we do not know and have not asked the database about within the miss TTL."""
        return {k for k in keys if k not in known and now - misses.get(k, -1e9) > self._miss_ttl_s}

    def _remember(self, refs: Iterable[DeviceRef]) -> None:
        for ref in refs:
            self.devices[ref.id] = ref
            self._misses.pop(ref.id, None)

    def _remember_zigbee(self, rows: dict[str, store.ZigbeeRow]) -> None:
        for device_id, row in rows.items():
            old_name = self._zigbee_names.pop(device_id, None)
            if old_name is not None:
                holder = self.zigbee.get(old_name)
                if holder is not None and holder.device_id == device_id:
                    del self.zigbee[old_name]
            if row is None:
                continue
            name, ref = row
            if not is_zigbee_name(name):
                # A name the old CHECK allowed and onboarding now refuses ('bridge', which could
                # never be told from zigbee2mqtt's own namespace): never mapped.
                log.warning("device %s: zigbee2mqtt name %r cannot be used", device_id, name)
                continue
            holder = self.zigbee.get(name)
            if (
                holder is not None
                and holder.device_id != device_id
                and holder.active
                and not ref.active
            ):
                continue  # an old, decommissioned device does not take the name back
            if holder is not None and holder.device_id != device_id:
                self._zigbee_names.pop(holder.device_id, None)
            self.zigbee[name] = ref
            self._zigbee_names[device_id] = name
            self._name_misses.pop(name, None)


def _catalog_battery_watch_below() -> int:
    levels = [
        kind.rules.battery_low.warning_below
        for kind in DEFAULT_CATALOG.values()
        if kind.rules.battery_low is not None
    ]
    return max(levels, default=0)


def _note_misses(misses: dict[str, float], keys: Iterable[str], now: float) -> None:
    """Remember when the database last said it had none of ``keys``."""
    for key in keys:
        misses[key] = now
    if len(misses) > 100_000:  # bound the memory a flood of made-up ids can take
        misses.clear()
