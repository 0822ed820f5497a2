"""The gateway registry's view of zigbee2mqtt friendly names: renames, decommissioning, names
passed on to a new device, and names that can never be a device."""

from __future__ import annotations

from devices.zigbee2mqtt import ZigbeeDeviceRef
from gateway.registry import DeviceRegistry
from gateway.store import ZigbeeRow


def ref(device_id: str, active: bool = True) -> ZigbeeDeviceRef:
    return ZigbeeDeviceRef(device_id, "door_contact", "SNZB-04", active)


def remember(registry: DeviceRegistry, rows: dict[str, ZigbeeRow]) -> None:
    registry._remember_zigbee(rows)


def test_a_device_is_found_by_its_name() -> None:
    """A zigbee2mqtt device's row puts its name in the registry."""
    registry = DeviceRegistry(miss_ttl_s=5)
    remember(registry, {"z-1": ("hall", ref("z-1"))})
    assert registry.zigbee == {"hall": ref("z-1")}


def test_a_renamed_device_loses_its_old_name() -> None:
    """After a rename only the new name leads to the device."""
    registry = DeviceRegistry(miss_ttl_s=5)
    remember(registry, {"z-1": ("hall", ref("z-1"))})
    remember(registry, {"z-1": ("entrance", ref("z-1"))})
    assert registry.zigbee == {"entrance": ref("z-1")}


def test_a_device_moved_off_zigbee2mqtt_loses_its_name() -> None:
    """A row without zigbee fields removes the device's name."""
    registry = DeviceRegistry(miss_ttl_s=5)
    remember(registry, {"z-1": ("hall", ref("z-1"))})
    remember(registry, {"z-1": None})
    assert registry.zigbee == {}


def test_a_decommissioned_device_does_not_take_the_name_back() -> None:
    """A new active device holds the name even if the old one's row is read after it."""
    registry = DeviceRegistry(miss_ttl_s=5)
    remember(registry, {"z-2": ("hall", ref("z-2"))})
    remember(registry, {"z-1": ("hall", ref("z-1", active=False))})
    assert registry.zigbee == {"hall": ref("z-2")}


def test_decommissioning_marks_the_name_inactive() -> None:
    """The device that holds a name, decommissioned, stays there as inactive (dead letters say
    decommissioned_device) until another device takes the name."""
    registry = DeviceRegistry(miss_ttl_s=5)
    remember(registry, {"z-1": ("hall", ref("z-1"))})
    remember(registry, {"z-1": ("hall", ref("z-1", active=False))})
    assert registry.zigbee == {"hall": ref("z-1", active=False)}
    remember(registry, {"z-2": ("hall", ref("z-2"))})
    assert registry.zigbee == {"hall": ref("z-2")}
    remember(registry, {"z-1": ("hall", ref("z-1", active=False))})
    assert registry.zigbee == {"hall": ref("z-2")}


def test_bridge_and_invalid_names_are_never_mapped() -> None:
    """zigbee2mqtt's own "bridge", and names devices.ids refuses (an empty level, one that
    reads as availability), map to nothing; a name with levels and spaces maps as it is."""
    registry = DeviceRegistry(miss_ttl_s=5)
    remember(
        registry,
        {
            "z-1": ("bridge", ref("z-1")),
            "z-2": ("a//b", ref("z-2")),
            "z-3": ("a/availability", ref("z-3")),
            "z-4": ("kitchen/Lgh 14 lås", ref("z-4")),
        },
    )
    assert registry.zigbee == {"kitchen/Lgh 14 lås": ref("z-4")}
