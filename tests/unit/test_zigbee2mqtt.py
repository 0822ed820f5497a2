"""The zigbee2mqtt adapter: real documented payloads of real models become the right events, the
mapping file is loaded strictly, and nothing a bridge sends makes the parser raise."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices import envelope
from devices.catalog import DEFAULT_CATALOG, HEARTBEAT
from devices.envelope import DeviceRef, Event, Rejected, RejectReason, StatusReport
from devices.zigbee2mqtt import (
    DEFAULT_MAPPING,
    Ignored,
    MappingError,
    ZigbeeDeviceRef,
    build_mapping,
    load_mapping,
    parse,
    parse_availability,
    zigbee_name_of,
)

R = RejectReason
RECEIVED_AT = datetime(2026, 11, 22, 22, 41, 5, 123456, tzinfo=UTC)

# friendly name -> (device id, kind, zigbee2mqtt model)
DEVICES: dict[str, ZigbeeDeviceRef] = {
    "hall_door": ZigbeeDeviceRef("z-door-0001", "door_contact", "SNZB-04", True),
    "balcony_door": ZigbeeDeviceRef("z-door-0002", "door_contact", "MCCGQ11LM", True),
    "bedroom_pir": ZigbeeDeviceRef("z-motion-0001", "motion_sensor", "RTCGQ11LM", True),
    "hue_motion": ZigbeeDeviceRef("z-motion-0002", "motion_sensor", "9290012607", True),
    "kitchen_leak": ZigbeeDeviceRef("z-water-0001", "water_sensor", "SJCGQ11LM", True),
    "hall_smoke": ZigbeeDeviceRef("z-smoke-0001", "smoke_detector", "HS1SA", True),
    "front_lock": ZigbeeDeviceRef("z-lock-0001", "door_lock", "0402946", True),
    "old_door": ZigbeeDeviceRef("z-door-0009", "door_contact", "SNZB-04", False),
    "mystery": ZigbeeDeviceRef("z-door-0010", "door_contact", "XYZ-123", True),
    "wrong_kind": ZigbeeDeviceRef("z-lock-0002", "door_lock", "SNZB-04", True),
    # The models added for issue 13, under names as their users write them.
    "Lgh 14 lås": ZigbeeDeviceRef("z-door-0003", "door_contact", "TS0203", True),
    "kitchen/window": ZigbeeDeviceRef("z-door-0004", "door_contact", "E2013", True),
    "Entré/Ytterdörr": ZigbeeDeviceRef("z-door-0005", "door_contact", "HS3DS", True),
    "Bedroom PIR": ZigbeeDeviceRef("z-motion-0003", "motion_sensor", "SNZB-03", True),
    "bathroom/floor leak": ZigbeeDeviceRef("z-water-0002", "water_sensor", "SNZB-05P", True),
    "Hall smoke 2": ZigbeeDeviceRef("z-smoke-0002", "smoke_detector", "HS3SA", True),
    "Front Door Lock": ZigbeeDeviceRef("z-lock-0003", "door_lock", "YRD226HA2619", True),
    "Balkongdörr": ZigbeeDeviceRef("z-door-0006", "door_contact", "SNZB-04P", True),
}

# Payloads as zigbee2mqtt publishes them, with the properties of each model's zigbee2mqtt.io
# page ("Exposes"), values as the page describes them.
REAL_PAYLOADS = [
    pytest.param(
        "hall_door",
        {
            "battery": 100,
            "battery_low": False,
            "contact": False,
            "linkquality": 102,
            "voltage": 3100,
        },
        ["heartbeat", "door.opened"],
        {"battery": 100, "battery_low": False, "linkquality": 102, "voltage_mv": 3100},
        id="SNZB-04-open",
    ),
    pytest.param(
        "hall_door",
        {"battery": 100, "battery_low": False, "contact": True, "linkquality": 96, "voltage": 3100},
        ["heartbeat", "door.closed"],
        {"battery": 100, "battery_low": False, "linkquality": 96, "voltage_mv": 3100},
        id="SNZB-04-closed",
    ),
    pytest.param(
        "balcony_door",
        {"battery": 91, "contact": False, "linkquality": 60, "temperature": 22, "voltage": 3005},
        ["heartbeat", "door.opened"],
        {"battery": 91, "linkquality": 60, "voltage_mv": 3005},
        id="MCCGQ11LM-open",
    ),
    pytest.param(
        "Balkongdörr",
        {
            "battery": 100,
            "battery_low": False,
            "contact": False,
            "linkquality": 141,
            "voltage": 3000,
        },
        ["heartbeat", "door.opened"],
        {"battery": 100, "battery_low": False, "linkquality": 141, "voltage_mv": 3000},
        id="SNZB-04P-open",
    ),
    pytest.param(
        "bedroom_pir",
        {
            "battery": 100,
            "device_temperature": 27,
            "illuminance": 17,
            "illuminance_lux": 17,
            "linkquality": 144,
            "occupancy": True,
            "power_outage_count": 12,
            "voltage": 3025,
        },
        ["heartbeat", "motion.detected"],
        {"battery": 100, "linkquality": 144, "voltage_mv": 3025},
        id="RTCGQ11LM-occupied",
    ),
    pytest.param(
        "hue_motion",
        {
            "battery": 74,
            "illuminance": 10,
            "illuminance_lux": 10,
            "linkquality": 81,
            "occupancy": False,
            "temperature": 20.3,
        },
        ["heartbeat", "motion.cleared"],
        {"battery": 74, "linkquality": 81},
        id="9290012607-clear",
    ),
    pytest.param(
        "kitchen_leak",
        {
            "battery": 97,
            "battery_low": False,
            "linkquality": 87,
            "temperature": 21,
            "voltage": 3015,
            "water_leak": True,
        },
        ["heartbeat", "water.leak_detected"],
        {"battery": 97, "battery_low": False, "linkquality": 87, "voltage_mv": 3015},
        id="SJCGQ11LM-leak",
    ),
    pytest.param(
        "kitchen_leak",
        {"battery": 97, "battery_low": False, "linkquality": 87, "water_leak": False},
        ["heartbeat", "water.leak_cleared"],
        {"battery": 97, "battery_low": False, "linkquality": 87},
        id="SJCGQ11LM-dry",
    ),
    pytest.param(
        "hall_smoke",
        {"battery": 83, "battery_low": False, "linkquality": 51, "smoke": True},
        ["heartbeat", "smoke.detected"],
        {"battery": 83, "battery_low": False, "linkquality": 51},
        id="HS1SA-smoke",
    ),
    pytest.param(
        "hall_smoke",
        {"battery": 83, "battery_low": True, "linkquality": 51, "smoke": False},
        ["heartbeat", "smoke.cleared"],
        {"battery": 83, "battery_low": True, "linkquality": 51},
        id="HS1SA-clear",
    ),
    pytest.param(
        "front_lock",
        {
            "action": "keypad_unlock",
            "action_source_name": "keypad",
            "action_user": 3,
            "battery": 88,
            "linkquality": 72,
            "lock_state": "unlocked",
            "state": "UNLOCK",
        },
        ["heartbeat", "lock.unlocked"],
        {"battery": 88, "linkquality": 72},
        id="0402946-unlocked",
    ),
    pytest.param(
        "front_lock",
        {"battery": 88, "linkquality": 72, "lock_state": "locked", "state": "LOCK"},
        ["heartbeat", "lock.locked"],
        {"battery": 88, "linkquality": 72},
        id="0402946-locked",
    ),
    pytest.param(
        "front_lock",
        {"battery": 88, "linkquality": 72, "lock_state": "not_fully_locked", "state": "UNLOCK"},
        ["heartbeat", "lock.jammed"],
        {"battery": 88, "linkquality": 72},
        id="0402946-jammed",
    ),
    # Issue 13's models: each payload has the properties its zigbee2mqtt.io page exposes.
    pytest.param(
        "Lgh 14 lås",
        {
            "battery": 100,
            "battery_low": False,
            "contact": False,
            "linkquality": 120,
            "tamper": False,
            "voltage": 3000,
        },
        ["heartbeat", "door.opened"],
        {"battery": 100, "battery_low": False, "linkquality": 120, "voltage_mv": 3000},
        id="TS0203-open",
    ),
    pytest.param(
        "Lgh 14 lås",
        {"battery": 100, "battery_low": False, "contact": True, "linkquality": 120, "tamper": True},
        ["heartbeat", "door.closed", "door.tamper"],
        {"battery": 100, "battery_low": False, "linkquality": 120},
        id="TS0203-closed-tampered",
    ),
    pytest.param(
        "kitchen/window",
        {"battery": 87, "contact": False, "linkquality": 159},
        ["heartbeat", "door.opened"],
        {"battery": 87, "linkquality": 159},
        id="E2013-open",
    ),
    pytest.param(
        "Entré/Ytterdörr",
        {"battery": 64, "battery_low": False, "contact": True, "linkquality": 44, "tamper": False},
        ["heartbeat", "door.closed"],
        {"battery": 64, "battery_low": False, "linkquality": 44},
        id="HS3DS-closed",
    ),
    pytest.param(
        "Bedroom PIR",
        {
            "battery": 100,
            "battery_low": False,
            "linkquality": 90,
            "occupancy": True,
            "voltage": 3100,
        },
        ["heartbeat", "motion.detected"],
        {"battery": 100, "battery_low": False, "linkquality": 90, "voltage_mv": 3100},
        id="SNZB-03-occupied",
    ),
    pytest.param(
        "bathroom/floor leak",
        {"battery": 100, "battery_low": False, "water_leak": True},
        ["heartbeat", "water.leak_detected"],
        {"battery": 100, "battery_low": False},
        id="SNZB-05P-leak",
    ),
    pytest.param(
        "Hall smoke 2",
        {"battery": 90, "battery_low": False, "linkquality": 66, "smoke": True},
        ["heartbeat", "smoke.detected"],
        {"battery": 90, "battery_low": False, "linkquality": 66},
        id="HS3SA-smoke",
    ),
    pytest.param(
        "Front Door Lock",
        {"battery": 71, "linkquality": 98, "lock_state": "not_fully_locked", "state": "UNLOCK"},
        ["heartbeat", "lock.jammed"],
        {"battery": 71, "linkquality": 98},
        id="YRD226HA2619-jammed",
    ),
    pytest.param(
        "Front Door Lock",
        {"battery": 71, "linkquality": 98, "lock_state": "locked", "state": "LOCK"},
        ["heartbeat", "lock.locked"],
        {"battery": 71, "linkquality": 98},
        id="YRD226HA2619-locked",
    ),
]


def z2m(name: str, payload: bytes | dict[str, Any], leaf: str = "") -> Any:
    """parse() of a message on zigbee2mqtt/<name>[/leaf]."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    topic = f"zigbee2mqtt/{name}" + (f"/{leaf}" if leaf else "")
    return parse(topic, body, RECEIVED_AT, DEVICES)


def events_of(result: Any) -> tuple[Event, ...]:
    assert isinstance(result, tuple), result
    return result


@pytest.mark.parametrize(("name", "payload", "types", "heartbeat"), REAL_PAYLOADS)
def test_documented_payloads_become_the_right_events(
    name: str, payload: dict[str, Any], types: list[str], heartbeat: dict[str, Any]
) -> None:
    """A model's documented state becomes a heartbeat (battery, LQI under its own name) and the
    state events it implies, of the device's id and kind, at receipt time."""
    device = DEVICES[name]
    events = events_of(z2m(name, payload))
    assert [e.type for e in events] == types
    assert events[0].data == heartbeat
    assert "rssi" not in events[0].data  # LQI is not dBm
    for e in events:
        assert (e.device_id, e.kind) == (device.device_id, device.kind)
        assert e.time == e.received_at == RECEIVED_AT


@pytest.mark.parametrize(("name", "payload", "types", "heartbeat"), REAL_PAYLOADS)
def test_every_event_is_valid_under_the_envelope_rules(
    name: str, payload: dict[str, Any], types: list[str], heartbeat: dict[str, Any]
) -> None:
    """What the adapter makes would pass the envelope's own validation: sent as an envelope by
    the device itself, each event parses back unchanged."""
    registry = {
        DEVICES[name].device_id: DeviceRef(DEVICES[name].device_id, DEVICES[name].kind, True)
    }
    for e in events_of(z2m(name, payload)):
        body = orjson.dumps(
            {"v": 1, "id": e.event_id, "ts": e.time.isoformat(), "type": e.type, "data": e.data}
        )
        topic = f"carewatch/devices/{e.device_id}/events"
        assert envelope.parse(topic, body, RECEIVED_AT, registry) == e


def test_lock_events_say_unknown_for_who_and_how() -> None:
    """zigbee2mqtt repeats stale action_* properties, so lock events carry by/method unknown."""
    payload = {"action_source_name": "keypad", "action_user": 3, "lock_state": "locked"}
    locked = events_of(z2m("front_lock", payload))[1]
    assert locked.data == {"by": "unknown", "method": "unknown"}


def test_a_repeated_report_yields_the_same_events_again() -> None:
    """zigbee2mqtt publishes the whole state on every report: each report yields its events."""
    payload = {"battery": 99, "contact": True, "linkquality": 80}
    first = events_of(z2m("hall_door", payload))
    later = parse(
        "zigbee2mqtt/hall_door",
        orjson.dumps(payload),
        RECEIVED_AT + timedelta(hours=1),
        DEVICES,
    )
    assert (
        [e.type for e in first]
        == [e.type for e in events_of(later)]
        == [
            "heartbeat",
            "door.closed",
        ]
    )


def test_a_report_without_state_properties_is_a_heartbeat() -> None:
    """A report of only battery and link quality is proof of life, nothing more."""
    events = events_of(z2m("kitchen_leak", {"battery": 50, "linkquality": 3}))
    assert [(e.type, e.data) for e in events] == [(HEARTBEAT, {"battery": 50, "linkquality": 3})]


def test_an_empty_object_is_a_bare_heartbeat() -> None:
    """{} (a device that only checked in) is a heartbeat with no data."""
    assert [(e.type, e.data) for e in events_of(z2m("hall_door", {}))] == [(HEARTBEAT, {})]


@pytest.mark.parametrize(
    ("battery", "expected"),
    [
        pytest.param(91.5, {"battery": 92}, id="fraction-rounded"),
        pytest.param(100, {"battery": 100}, id="whole"),
        pytest.param(150, {}, id="above-100-left-out"),
        pytest.param(-1, {}, id="negative-left-out"),
        pytest.param("high", {}, id="string-left-out"),
        pytest.param(True, {}, id="boolean-left-out"),
        pytest.param({"level": 5}, {}, id="object-left-out"),
        pytest.param(None, {}, id="null-left-out"),
    ],
)
def test_heartbeat_battery_fits_the_catalog_or_is_left_out(
    battery: object, expected: dict[str, Any]
) -> None:
    """The battery becomes the catalog's integer 0-100 or is left out; the heartbeat stays."""
    events = events_of(z2m("hall_smoke", {"battery": battery}))
    assert events[0].data == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("80", 80, id="integer-text"),
        pytest.param("80.00", 80, id="decimal-text"),
        pytest.param(" 80 ", 80, id="spaces-around"),
        pytest.param("+80", 80, id="plus-sign"),
        pytest.param("79.6", 80, id="fraction-rounded"),
        pytest.param("8e1", 80, id="exponent"),
        pytest.param("abc", None, id="letters"),
        pytest.param("", None, id="empty"),
        pytest.param("  ", None, id="blank"),
        pytest.param("80%", None, id="with-unit"),
        pytest.param("NaN", None, id="nan-text"),
        pytest.param("inf", None, id="inf-text"),
        pytest.param("Infinity", None, id="infinity-text"),
        pytest.param("1e999", None, id="overflows-to-infinity"),
        pytest.param("0x50", None, id="hexadecimal"),
        pytest.param("8_0", None, id="underscore"),
        pytest.param("\u0668\u0660", None, id="arabic-indic-digits"),
        pytest.param("1" * 40, None, id="too-long"),
        pytest.param("-5", None, id="out-of-range-text"),
        pytest.param(None, None, id="null"),
        pytest.param(True, None, id="true-is-not-1"),
        pytest.param(False, None, id="false-is-not-0"),
        pytest.param([80], None, id="list"),
    ],
)
@pytest.mark.parametrize("field", ["battery", "linkquality", "voltage"])
def test_numbers_in_strings_are_read_and_anything_else_left_out(
    field: str, value: object, expected: int | None
) -> None:
    """Every numeric heartbeat field reads a number sent as a string ("80.00" is 80) and leaves
    out what is not one (or is out of range), keeping the report and its state events."""
    name = {"battery": "battery", "linkquality": "linkquality", "voltage": "voltage_mv"}[field]
    events = events_of(z2m("Lgh 14 lås", {field: value, "contact": False, "battery_low": True}))
    assert [e.type for e in events] == [HEARTBEAT, "door.opened"]
    assert events[0].data.get(name) == expected
    assert events[0].data["battery_low"] is True


def test_numbers_above_a_battery_percentage_fit_their_own_field() -> None:
    """A voltage and an LQI in strings keep values a battery could not have."""
    payload = {"voltage": "3000", "linkquality": "255.0", "battery": "100"}
    events = events_of(z2m("Lgh 14 lås", payload))
    assert events[0].data == {"voltage_mv": 3000, "linkquality": 255, "battery": 100}


def test_a_boolean_field_takes_only_booleans() -> None:
    """battery_low "true" or 1 is not a boolean: left out, the heartbeat kept."""
    for value in ("true", 1, "1", None):
        events = events_of(z2m("Lgh 14 lås", {"battery_low": value, "battery": 5}))
        assert events[0].data == {"battery": 5}


# Any JSON value orjson can write (finite floats: JavaScript's JSON.stringify, zigbee2mqtt's,
# writes null for NaN and infinities), nested.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what orjson writes
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.from_regex(r"\s*[+-]?[0-9]{0,4}(\.[0-9]{0,3})?([eE][+-]?[0-9]{1,3})?\s*", fullmatch=True),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
MAPPED_PROPERTIES = sorted(
    {prop for m in DEFAULT_MAPPING.mappings.values() for _, prop in m.heartbeat}
    | {prop for m in DEFAULT_MAPPING.mappings.values() for r in m.events for prop, _ in r.when}
)


@given(
    name=st.sampled_from(
        sorted(
            n
            for n, d in DEVICES.items()
            if d.active
            and d.model in DEFAULT_MAPPING.models
            and DEFAULT_MAPPING.models[d.model].kind == d.kind
        )
    ),
    state=st.dictionaries(st.sampled_from([*MAPPED_PROPERTIES, "state", "x"]), JSON_VALUES),
)
def test_any_json_value_in_any_field_never_loses_the_report(
    name: str, state: dict[str, Any]
) -> None:
    """Whatever JSON a mapped device's report carries in any property, the report becomes a
    heartbeat (plus state events), each value of it valid for its field: never an exception,
    never a dead letter."""
    events = events_of(z2m(name, state))
    heartbeat = events[0]
    assert heartbeat.type == HEARTBEAT
    specs = DEFAULT_MAPPING.models[DEVICES[name].model].heartbeat_specs
    for field_name, value in heartbeat.data.items():
        spec = specs[field_name]
        assert type(value) in spec.python_types, (field_name, value)
        if spec.minimum is not None:
            assert value >= spec.minimum
        if spec.maximum is not None:
            assert value <= spec.maximum


def test_property_types_must_match_exactly() -> None:
    """contact "false" (a string) or 0 is not false: no door event, just the heartbeat."""
    for contact in ("false", 0, None, [False]):
        assert [e.type for e in events_of(z2m("hall_door", {"contact": contact}))] == [HEARTBEAT]


def test_a_string_with_nul_is_left_out() -> None:
    """PostgreSQL cannot store U+0000: such a heartbeat value is dropped, not the message."""
    events = events_of(z2m("hall_door", b'{"linkquality": 5, "battery_low": "a\\u0000"}'))
    assert events[0].data == {"linkquality": 5}


# --- event ids -----------------------------------------------------------------------------------


def test_event_ids_are_deterministic_per_message_and_index() -> None:
    """The same message received at the same moment (a gateway's retry) gets the same ids."""
    payload = {"contact": False, "battery": 80}
    first, again = events_of(z2m("hall_door", payload)), events_of(z2m("hall_door", payload))
    assert [e.event_id for e in first] == [e.event_id for e in again]
    assert len({e.event_id for e in first}) == len(first)
    assert all(len(e.event_id) <= envelope.MAX_EVENT_ID_CHARS for e in first)


def test_two_reports_in_one_network_read_get_different_ids() -> None:
    """Messages of one read share received_at: different payloads still differ."""
    opened = events_of(z2m("hall_door", {"contact": False}))
    closed = events_of(z2m("hall_door", {"contact": True}))
    assert not {e.event_id for e in opened} & {e.event_id for e in closed}


def test_the_same_report_received_later_is_a_new_event() -> None:
    """A later identical report is a later fact: a different id."""
    payload = orjson.dumps({"contact": True})
    now = events_of(parse("zigbee2mqtt/hall_door", payload, RECEIVED_AT, DEVICES))
    later = events_of(
        parse("zigbee2mqtt/hall_door", payload, RECEIVED_AT + timedelta(microseconds=1), DEVICES)
    )
    assert now[0].event_id != later[0].event_id


# --- availability --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "online"),
    [
        (b"online", True),
        (b"offline", False),
        (b"online\n", True),
        (b'{"state":"online"}', True),
        (b'{"state": "offline"}', False),
        (b'{"state":"offline","extra":1}', False),
        (b"ONLINE", None),
        (b'{"state":"gone"}', None),
        (b'"online"', None),
        (b"[]", None),
        (b"", None),
        (b"\xff", None),
    ],
)
def test_availability_payloads(payload: bytes, online: bool | None) -> None:
    """Legacy plain online/offline and the JSON {"state": ...} both count; nothing else."""
    assert parse_availability(payload) is online


def test_availability_becomes_a_status_report() -> None:
    """zigbee2mqtt/<name>/availability offline is the device's status, offline."""
    result = z2m("hall_smoke", b'{"state":"offline"}', "availability")
    assert result == StatusReport("z-smoke-0001", False, RECEIVED_AT)


def test_bad_availability_is_bad_status() -> None:
    """An availability payload that says neither is a dead letter, bad_status."""
    result = z2m("hall_smoke", b"maybe", "availability")
    assert isinstance(result, Rejected)
    assert result.reason is R.BAD_STATUS


# --- what is not a device's event ----------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    ["zigbee2mqtt/bridge", "zigbee2mqtt/bridge/state", "zigbee2mqtt/bridge/devices"],
)
def test_the_bridge_namespace_is_ignored(topic: str) -> None:
    """zigbee2mqtt's own topics are ignored (not dead-lettered), and never a device."""
    result = parse(
        topic, b'{"state":"online"}', RECEIVED_AT, {**DEVICES, "bridge": DEVICES["hall_door"]}
    )
    assert isinstance(result, Ignored)
    assert zigbee_name_of(topic) is None


@pytest.mark.parametrize(
    "topic",
    [
        "zigbee2mqtt/hall_door/availability/x",
        "zigbee2mqtt/",
        "zigbee2mqtt//hall_door",
        "zigbee2mqtt/kitchen//window",
        "zigbee2mqtt/kitchen/window/",
        "zigbee2mqtt/../hall_door",
        "zigbee2mqtt/kitchen/./window",
        "zigbee2mqtt/kitchen/window/4",
        "zigbee2mqtt/ hall_door",
        "zigbee2mqtt/availability/availability/availability",
        "carewatch/devices/lock-0001/events",
    ],
)
def test_other_topics_are_bad_topics(topic: str) -> None:
    """Only zigbee2mqtt/<acceptable name> and .../availability are devices' topics: an empty,
    . or .. level, an endpoint or a space at an end is not a name."""
    result = parse(topic, b"{}", RECEIVED_AT, DEVICES)
    assert isinstance(result, Rejected)
    assert result.reason is R.BAD_TOPIC
    assert zigbee_name_of(topic) is None


@pytest.mark.parametrize(
    ("name", "payload", "reason"),
    [
        pytest.param("nobody", b"{}", R.UNKNOWN_DEVICE, id="unknown-name"),
        pytest.param("old_door", b"{}", R.DECOMMISSIONED_DEVICE, id="decommissioned"),
        pytest.param("mystery", b"{}", R.UNKNOWN_MODEL, id="model-not-mapped"),
        pytest.param("wrong_kind", b"{}", R.UNKNOWN_MODEL, id="model-of-another-kind"),
        pytest.param("hall_door", b"{", R.NOT_JSON, id="not-json"),
        pytest.param("hall_door", b"\xff\xfe", R.NOT_UTF8, id="not-utf8"),
        pytest.param("hall_door", b"[1]", R.NOT_AN_OBJECT, id="array"),
        pytest.param("hall_door", b"online", R.NOT_JSON, id="status-on-the-state-topic"),
        pytest.param("hall_door", b'{"a":"' + b"x" * 17_000 + b'"}', R.TOO_LARGE, id="too-large"),
    ],
)
def test_rejects(name: str, payload: bytes, reason: RejectReason) -> None:
    """Unknown or decommissioned names, unmapped models and bad payloads are dead letters."""
    result = z2m(name, payload)
    assert isinstance(result, Rejected)
    assert result.reason is reason
    assert result.detail


def test_zigbee_name_of() -> None:
    """The friendly name of a state or availability topic, levels and UTF-8 included."""
    assert zigbee_name_of("zigbee2mqtt/hall_door") == "hall_door"
    assert zigbee_name_of("zigbee2mqtt/Hall.Door:1/availability") == "Hall.Door:1"
    assert zigbee_name_of("zigbee2mqtt/Lgh 14 lås") == "Lgh 14 lås"
    assert zigbee_name_of("zigbee2mqtt/kitchen/window/availability") == "kitchen/window"
    assert zigbee_name_of("zigbee2mqtt/kitchen/window/set") is None


@pytest.mark.parametrize(
    "topic",
    [
        "zigbee2mqtt/hall_door/set",
        "zigbee2mqtt/hall_door/get",
        "zigbee2mqtt/kitchen/window/set",
        "zigbee2mqtt/kitchen/window/set/state",
        "zigbee2mqtt/Front Door Lock/get/battery",
    ],
)
def test_commands_to_a_device_are_ignored(topic: str) -> None:
    """<name>/set and <name>/get (zigbee2mqtt reads them) are no report and no mistake."""
    result = parse(topic, b'{"state": "LOCK"}', RECEIVED_AT, DEVICES)
    assert isinstance(result, Ignored)
    assert zigbee_name_of(topic) is None


@pytest.mark.parametrize(
    ("name", "device_id"),
    [
        pytest.param("Lgh 14 lås", "z-door-0003", id="utf8-and-spaces"),
        pytest.param("kitchen/window", "z-door-0004", id="hierarchy"),
        pytest.param("Entré/Ytterdörr", "z-door-0005", id="utf8-hierarchy"),
    ],
)
def test_names_as_users_write_them_are_matched_exactly(name: str, device_id: str) -> None:
    """State and availability under a name with spaces, UTF-8 or levels reach its device; the
    same name in another case, or one level of it, is another (unknown) name."""
    assert events_of(z2m(name, {"contact": True}))[0].device_id == device_id
    assert z2m(name, b"offline", "availability") == StatusReport(device_id, False, RECEIVED_AT)
    for other in (name.upper(), name.split("/")[0] + "/x"):
        result = z2m(other, {"contact": True})
        assert isinstance(result, Rejected)
        assert result.reason is R.UNKNOWN_DEVICE


def test_name_slash_availability_is_always_the_availability_of_name() -> None:
    """kitchen/window/availability is kitchen/window's status, never a device of that name
    (onboarding refuses such names), even if one were in the registry."""
    devices = {**DEVICES, "kitchen/window/availability": DEVICES["hall_door"]}
    result = parse("zigbee2mqtt/kitchen/window/availability", b"online", RECEIVED_AT, devices)
    assert result == StatusReport("z-door-0004", True, RECEIVED_AT)


def test_a_naive_received_at_is_the_callers_bug() -> None:
    """parse() refuses a naive received_at."""
    with pytest.raises(ValueError, match="aware"):
        parse("zigbee2mqtt/hall_door", b"{}", datetime(2026, 1, 1), DEVICES)  # noqa: DTZ001


@given(
    topic=st.sampled_from(
        ["zigbee2mqtt/hall_door", "zigbee2mqtt/front_lock", "zigbee2mqtt/kitchen_leak/availability"]
    )
    | st.text(max_size=40).map(lambda s: f"zigbee2mqtt/{s}"),
    payload=st.binary(max_size=200)
    | st.dictionaries(
        st.sampled_from(["contact", "lock_state", "battery", "water_leak", "smoke", "x"]),
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats()
        | st.text(max_size=5),
    ).map(orjson.dumps),
)
def test_nothing_a_bridge_sends_raises_or_hits_the_guard(topic: str, payload: bytes) -> None:
    """Any topic and payload gives events, a status, an ignore or a precise reject; never an
    exception or the internal_error guard."""
    result = parse(topic, payload, RECEIVED_AT, DEVICES)
    assert not (isinstance(result, Rejected) and result.reason is R.INTERNAL_ERROR)


# --- the mapping file ----------------------------------------------------------------------------


def builtin_document() -> dict[str, Any]:
    text = resources.files("devices").joinpath("zigbee2mqtt.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def test_the_builtin_file_maps_at_least_five_real_models_onto_catalog_kinds() -> None:
    """The built-in mapping has real models, each onto a kind of the catalog."""
    assert len(DEFAULT_MAPPING.models) >= 5
    assert {"SNZB-04", "MCCGQ11LM", "RTCGQ11LM", "SJCGQ11LM", "HS1SA", "0402946"} <= set(
        DEFAULT_MAPPING.models
    )


def test_each_kind_has_several_models_each_with_its_documentation() -> None:
    """Issue 13: at least four door/window contacts, two motion, water, smoke sensors and locks,
    every model with its zigbee2mqtt.io page."""
    kinds = [m.kind for m in DEFAULT_MAPPING.models.values()]
    assert kinds.count("door_contact") >= 4
    for kind in ("motion_sensor", "water_sensor", "smoke_detector", "door_lock"):
        assert kinds.count(kind) >= 2, kind
    for model, table in builtin_document()["models"].items():
        assert table["docs"] == f"https://www.zigbee2mqtt.io/devices/{model}.html"
    assert {m.kind for m in DEFAULT_MAPPING.models.values()} <= set(DEFAULT_CATALOG)


def test_a_new_model_is_configuration(tmp_path: Path) -> None:
    """A model added to the file, reusing a mapping, works with no code."""
    text = resources.files("devices").joinpath("zigbee2mqtt.toml").read_text(encoding="utf-8")
    text += (
        '\n[models."HS1DS"]\nmapping = "contact"\nvendor = "HEIMAN"\ndescription = "Door sensor"\n'
    )
    path = tmp_path / "zigbee2mqtt.toml"
    path.write_text(text, encoding="utf-8")
    mapping = load_mapping(path)
    devices = {"d": ZigbeeDeviceRef("z-door-0100", "door_contact", "HS1DS", True)}
    result = parse(
        "zigbee2mqtt/d",
        b'{"contact": false, "tamper": true}',
        RECEIVED_AT,
        devices,
        mapping=mapping,
    )
    assert [e.type for e in events_of(result)] == [HEARTBEAT, "door.opened", "door.tamper"]


def test_interpret_by_model_and_bytes() -> None:
    """The mapping maps (model, payload bytes) to (event type, data) pairs."""
    assert DEFAULT_MAPPING.interpret("SJCGQ11LM", b'{"water_leak": true, "battery": 40}') == [
        (HEARTBEAT, {"battery": 40}),
        ("water.leak_detected", {}),
    ]
    unknown = DEFAULT_MAPPING.interpret("nope", b"{}")
    assert isinstance(unknown, Rejected)
    assert unknown.reason is R.UNKNOWN_MODEL


def test_data_from_a_property_with_a_default() -> None:
    """A data field may come from a payload property (ids as strings) with a default."""
    document = builtin_document()
    document["mappings"]["lock"]["events"][0]["data"] = {
        "by": {"from": "action_user", "default": "unknown"},
        "method": {"from": "action_source_name", "default": "zigbee"},
    }
    mapping = build_mapping(document)
    pairs = mapping.interpret("0402946", b'{"lock_state":"locked","action_user":3}')
    assert isinstance(pairs, list)
    assert pairs[1] == ("lock.locked", {"by": "3", "method": "zigbee"})


def _broken(path: list[str | int], value: object) -> dict[str, Any]:
    document = builtin_document()
    target: Any = document
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        pytest.param(["mappings", "contact", "kynd"], "x", "unknown key", id="misspelt-key"),
        pytest.param(["mappings", "contact", "kind"], "door_sensor", "no kind", id="unknown-kind"),
        pytest.param(
            ["mappings", "contact", "events", 0, "type"],
            "door.opend",
            "not an event type",
            id="misspelt-event-type",
        ),
        pytest.param(
            ["mappings", "contact", "events", 0, "type"],
            "heartbeat",
            "not an event type",
            id="heartbeat-as-event",
        ),
        pytest.param(
            ["mappings", "contact", "events", 0, "type"],
            "lock.locked",
            "not an event type",
            id="event-type-of-another-kind",
        ),
        pytest.param(
            ["mappings", "contact", "events", 0, "when"], {}, "at least one", id="empty-when"
        ),
        pytest.param(
            ["mappings", "contact", "events", 0, "when"],
            {"contact": [1]},
            "string, number",
            id="when-not-scalar",
        ),
        pytest.param(
            ["mappings", "lock", "events", 0, "data"],
            {"by": "unknown"},
            "method",
            id="required-field-without-value",
        ),
        pytest.param(
            ["mappings", "lock", "events", 0, "data", "by"],
            7,
            "not a valid string",
            id="constant-of-wrong-type",
        ),
        pytest.param(
            ["mappings", "lock", "events", 0, "data", "who"],
            "x",
            "has no field",
            id="field-the-type-lacks",
        ),
        pytest.param(
            ["mappings", "lock", "events", 0, "data", "by"],
            {"frum": "x"},
            "from",
            id="misspelt-from",
        ),
        pytest.param(
            ["mappings", "contact", "heartbeat", "Battery"],
            "battery",
            "lower-case",
            id="bad-field-name",
        ),
        pytest.param(
            ["models", "SNZB-04", "mapping"],
            "contacts",
            "no [mappings.contacts]",
            id="unknown-mapping",
        ),
        pytest.param(
            ["models", "SNZB-04", "vendor"], _DELETE, "missing vendor", id="missing-vendor"
        ),
        pytest.param(
            ["mappings", "spare"],
            {"kind": "door_contact", "heartbeat": {}},
            "no model uses it",
            id="unused-mapping",
        ),
        pytest.param(
            ["heartbeat_fields", "battery"],
            {"type": "integer"},
            "the catalog's heartbeat has it",
            id="heartbeat-field-of-the-catalog",
        ),
        pytest.param(
            ["heartbeat_fields", "linkquality", "type"],
            "int",
            "one of string, integer",
            id="heartbeat-field-type",
        ),
        pytest.param(
            ["heartbeat_fields", "linkquality", "maximum"],
            "255",
            "expected a number",
            id="heartbeat-field-bound",
        ),
        pytest.param(
            ["heartbeat_fields", "linkquality", "minimum"],
            300,
            "minimum",
            id="heartbeat-field-bounds-crossed",
        ),
        pytest.param(
            ["heartbeat_fields", "linkquality", "choices"],
            ["a"],
            "unknown key",
            id="heartbeat-field-key",
        ),
        pytest.param(["modles"], {}, "unknown key", id="misspelt-top-level"),
    ],
)
def test_the_loader_refuses_mistakes(path: list[str | int], value: object, message: str) -> None:
    """Misspellings and anything that does not fit the catalog stop the start-up, named."""
    with pytest.raises(MappingError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_mapping(_broken(path, value))


def test_a_broken_file_names_the_file(tmp_path: Path) -> None:
    """A file that is not TOML raises MappingError naming it."""
    path = tmp_path / "z.toml"
    path.write_text("[models\n", encoding="utf-8")
    with pytest.raises(MappingError, match=r"z\.toml"):
        load_mapping(path)
