"""The envelope parser: valid messages become events, everything else a precise rejection."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.catalog import DEFAULT_CATALOG, HEARTBEAT, FieldSpec, FieldType, build_catalog
from devices.envelope import (
    DEFAULT_MAX_CLOCK_SKEW_S,
    MAX_EVENT_ID_CHARS,
    MAX_PAYLOAD_BYTES,
    TOPIC_PREFIX,
    DeviceRef,
    Event,
    ParseResult,
    Rejected,
    RejectReason,
    StatusReport,
    device_id_of,
    parse,
)
from devices.ids import DEVICE_ID_RE

R = RejectReason
RECEIVED_AT = datetime(2026, 11, 22, 22, 41, 5, tzinfo=UTC)
TS = "2026-11-22T23:41:00.123+01:00"  # five seconds before RECEIVED_AT
TS_TIME = datetime(2026, 11, 22, 22, 41, 0, 123000, tzinfo=UTC)

DEVICE_OF_KIND = {
    "safety_camera": "cam-0001",
    "door_lock": "lock-0001",
    "companion_robot": "robot-0001",
    "alarm_button": "alarm-0001",
    "door_contact": "door-0001",
    "motion_sensor": "motion-0001",
    "water_sensor": "water-0001",
    "smoke_detector": "smoke-0001",
}
REGISTRY: dict[str, DeviceRef] = {
    **{device: DeviceRef(device, kind, active=True) for kind, device in DEVICE_OF_KIND.items()},
    "lock-0002": DeviceRef("lock-0002", "door_lock", active=False),
    "ghost-0001": DeviceRef("ghost-0001", "teleporter", active=True),  # kind not in catalog
}

# A valid `data` for every event type of the contract.
VALID_DATA: dict[str, tuple[str, dict[str, Any]]] = {
    "camera.check_started": ("safety_camera", {"by": "staff-4711"}),
    "camera.check_ended": (
        "safety_camera",
        {"by": "staff-4711", "duration_s": 41.5, "outcome": "seen"},
    ),
    "camera.stream_lost": ("safety_camera", {}),
    "camera.stream_restored": ("safety_camera", {}),
    "camera.tamper": ("safety_camera", {}),
    "camera.privacy_on": ("safety_camera", {}),
    "camera.privacy_off": ("safety_camera", {}),
    "lock.unlocked": ("door_lock", {"by": "staff-4711", "method": "app"}),
    "lock.locked": ("door_lock", {"by": "staff-4711", "method": "keypad"}),
    "lock.jammed": ("door_lock", {}),
    "lock.access_denied": ("door_lock", {"credential": "tag-00ab12"}),
    "lock.tamper": ("door_lock", {}),
    "robot.interaction": ("companion_robot", {"mode": "touch", "duration_s": 95}),
    "robot.fault": ("companion_robot", {"code": "E42"}),
    "alarm.pressed": ("alarm_button", {}),
    "alarm.cancelled": ("alarm_button", {}),
    # Issue 4, the Zigbee sensors: no fields.
    "door.opened": ("door_contact", {}),
    "door.closed": ("door_contact", {}),
    "door.tamper": ("door_contact", {}),
    "motion.detected": ("motion_sensor", {}),
    "motion.cleared": ("motion_sensor", {}),
    "motion.tamper": ("motion_sensor", {}),
    "water.leak_detected": ("water_sensor", {}),
    "water.leak_cleared": ("water_sensor", {}),
    "water.tamper": ("water_sensor", {}),
    "smoke.detected": ("smoke_detector", {}),
    "smoke.cleared": ("smoke_detector", {}),
    "smoke.tamper": ("smoke_detector", {}),
}
HEARTBEAT_DATA = {"battery": 87, "rssi": -61, "fw": "2.4.1"}


def topic(device_id: str = "lock-0001", leaf: str = "events") -> str:
    """The topic of a device's events (or status)."""
    return f"{TOPIC_PREFIX}{device_id}/{leaf}"


DROP = object()  # an envelope() override that removes the key


def envelope(**overrides: object) -> bytes:
    """A valid lock.unlocked envelope, with keys replaced (or dropped with DROP)."""
    fields: dict[str, object] = {
        "v": 1,
        "id": "0001842",
        "ts": TS,
        "type": "lock.unlocked",
        "data": {"by": "staff-4711", "method": "app"},
    }
    for key, value in overrides.items():
        if value is DROP:
            del fields[key]
        else:
            fields[key] = value
    return orjson.dumps(fields)


def data_of(**data: object) -> bytes:
    """A valid lock.unlocked envelope whose data fields are replaced."""
    merged: dict[str, object] = {"by": "staff-4711", "method": "app"}
    merged.update(data)
    return envelope(data={k: v for k, v in merged.items() if v is not DROP})


def run(payload: bytes, on: str | None = None, **kwargs: Any) -> ParseResult:
    """parse() at RECEIVED_AT against REGISTRY, on the lock's events topic by default."""
    return parse(topic() if on is None else on, payload, RECEIVED_AT, REGISTRY, **kwargs)


# --- valid messages ---------------------------------------------------------------------------


def valid_cases() -> Iterator[Any]:
    """Every event type of every kind, heartbeat once per kind."""
    for event_type, (kind, data) in VALID_DATA.items():
        yield pytest.param(kind, event_type, data, id=event_type)
    for kind in DEVICE_OF_KIND:
        yield pytest.param(kind, HEARTBEAT, HEARTBEAT_DATA, id=f"{kind}-heartbeat")


@pytest.mark.parametrize(("kind", "event_type", "data"), list(valid_cases()))
def test_valid_event_of_every_kind_and_type(
    kind: str, event_type: str, data: dict[str, Any]
) -> None:
    """A valid envelope of each kind and type parses into an Event carrying all of it."""
    device_id = DEVICE_OF_KIND[kind]
    payload = envelope(type=event_type, data=data)
    result = run(payload, on=topic(device_id))
    assert result == Event(
        device_id=device_id,
        kind=kind,
        event_id="0001842",
        time=TS_TIME,
        received_at=RECEIVED_AT,
        type=event_type,
        data=data,
    )


def test_valid_data_covers_every_event_type_in_the_catalog() -> None:
    """The table above really covers every type of every built-in kind."""
    catalog_types = {
        (kind.name, name) for kind in DEFAULT_CATALOG.values() for name in kind.event_types
    }
    table_types = {(kind, name) for name, (kind, _) in VALID_DATA.items()}
    table_types |= {(kind, HEARTBEAT) for kind in DEVICE_OF_KIND}
    assert table_types == catalog_types


def test_event_keeps_the_timestamps_offset() -> None:
    """Event.time is the device's ts, as sent: the same instant, the same offset."""
    result = run(envelope())
    assert isinstance(result, Event)
    assert result.time.utcoffset() == timedelta(hours=1)
    assert result.time == TS_TIME


def test_unknown_data_fields_are_kept() -> None:
    """Fields the catalog does not declare, nested or not, stay in Event.data."""
    extra = {"door": "front", "attempts": [1, 2, {"pin": None}], "meta": {"ok": True, "x": 1.5}}
    result = run(data_of(**extra))
    assert isinstance(result, Event)
    assert result.data == {"by": "staff-4711", "method": "app", **extra}


def test_unknown_envelope_fields_are_ignored() -> None:
    """Top-level keys besides v/id/ts/type/data do not stop an event."""
    result = run(envelope(seq=7, trace={"hop": 1}))
    assert isinstance(result, Event)
    assert "seq" not in result.data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (DROP, {}),
        (None, {}),
        ({}, {}),
    ],
    ids=["absent", "null", "empty"],
)
def test_data_may_be_absent_for_types_without_required_fields(
    data: object, expected: dict[str, Any]
) -> None:
    """data absent or null counts as {} (heartbeat has no required fields)."""
    result = run(envelope(type=HEARTBEAT, data=data))
    assert isinstance(result, Event)
    assert result.data == expected


@pytest.mark.parametrize(
    "data",
    [
        {"battery": None, "rssi": None, "fw": None},
        {"battery": 0},
        {"battery": 100},
        {"rssi": 12},
        {"fw": ""},
    ],
    ids=["all-null", "battery-0", "battery-100", "rssi-positive", "fw-empty"],
)
def test_heartbeat_edge_values_are_accepted(data: dict[str, Any]) -> None:
    """Optional heartbeat fields may be null; the battery range is inclusive."""
    assert isinstance(run(envelope(type=HEARTBEAT, data=data)), Event)


def test_an_integer_is_a_number() -> None:
    """An integer is acceptable where a number (duration_s) is declared."""
    payload = envelope(
        type="camera.check_ended", data={"by": "s", "duration_s": 0, "outcome": "seen"}
    )
    result = run(payload, on=topic("cam-0001"))
    assert isinstance(result, Event)


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-11-22T22:41:00Z", datetime(2026, 11, 22, 22, 41, tzinfo=UTC)),
        ("2026-11-22t22:41:00z", datetime(2026, 11, 22, 22, 41, tzinfo=UTC)),
        ("2026-11-22 22:41:00+00:00", datetime(2026, 11, 22, 22, 41, tzinfo=UTC)),
        ("2026-11-22T22:41:00-00:00", datetime(2026, 11, 22, 22, 41, tzinfo=UTC)),
        ("2026-11-23T04:11:00+05:30", datetime(2026, 11, 22, 22, 41, tzinfo=UTC)),
        ("2026-11-22T12:41:00-10:00", datetime(2026, 11, 22, 22, 41, tzinfo=UTC)),
        ("2026-11-22T22:41:00.5Z", datetime(2026, 11, 22, 22, 41, 0, 500000, tzinfo=UTC)),
        (
            "2026-11-22T22:41:00.123456789Z",
            datetime(2026, 11, 22, 22, 41, 0, 123456, tzinfo=UTC),
        ),
    ],
    ids=[
        "zulu",
        "lower-case-t-and-z",
        "space-separator",
        "unknown-local-offset",
        "half-hour-offset",
        "negative-offset",
        "one-fraction-digit",
        "nanoseconds-truncated",
    ],
)
def test_rfc3339_timestamps_are_accepted(ts: str, expected: datetime) -> None:
    """Every RFC 3339 form of ts parses to the instant it names."""
    result = run(envelope(ts=ts))
    assert isinstance(result, Event)
    assert result.time == expected
    assert result.time.tzinfo is not None


def test_payload_of_exactly_the_limit_is_accepted() -> None:
    """A payload of exactly MAX_PAYLOAD_BYTES is still an event."""
    base = envelope(type=HEARTBEAT, data={"pad": ""})
    payload = envelope(type=HEARTBEAT, data={"pad": "x" * (MAX_PAYLOAD_BYTES - len(base))})
    assert len(payload) == MAX_PAYLOAD_BYTES
    assert isinstance(run(payload), Event)


def test_event_id_of_64_characters_is_accepted() -> None:
    """An id of exactly 64 characters (not bytes) is accepted."""
    result = run(envelope(id="å" * MAX_EVENT_ID_CHARS))
    assert isinstance(result, Event)
    assert result.event_id == "å" * 64


@pytest.mark.parametrize(
    "skew", [timedelta(days=7), -timedelta(days=7)], ids=["week-late", "week-early"]
)
def test_clock_skew_up_to_the_limit_is_accepted(skew: timedelta) -> None:
    """ts exactly max_clock_skew_s from received_at is still accepted."""
    assert skew.total_seconds() in {DEFAULT_MAX_CLOCK_SKEW_S, -DEFAULT_MAX_CLOCK_SKEW_S}
    ts = (RECEIVED_AT - skew).isoformat()
    assert isinstance(run(envelope(ts=ts)), Event)


def test_clock_skew_limit_is_a_parameter() -> None:
    """max_clock_skew_s narrows (or widens) the accepted window."""
    ts = (RECEIVED_AT - timedelta(minutes=10)).isoformat()
    assert isinstance(run(envelope(ts=ts)), Event)
    narrow = run(envelope(ts=ts), max_clock_skew_s=60)
    assert isinstance(narrow, Rejected)
    assert narrow.reason is R.CLOCK_SKEW


def test_resent_event_parses_identically() -> None:
    """The same bytes received twice (a resend) give equal events: same id, time and data."""
    payload = envelope(type="lock.access_denied", data={"credential": "tag-1"})
    first, second = run(payload), run(payload)
    assert isinstance(first, Event)
    assert first == second
    assert (first.device_id, first.event_id, first.time) == (
        second.device_id,
        second.event_id,
        second.time,
    )


def test_resent_events_collapse_in_a_set() -> None:
    """Events are hashable values: a resend and its original are one set member."""
    payload = envelope()
    assert len({run(payload), run(payload), run(envelope(id="other"))}) == 2


def test_a_catalog_can_be_passed_in() -> None:
    """parse() validates against the catalog it is given, e.g. one with an extra kind."""
    document = {
        "heartbeat": {"fields": {}},
        "kinds": {
            "bed_sensor": {
                "title_sv": "Sängsensor",
                "title_en": "Bed sensor",
                "heartbeat_interval_s": 120,
                "events": {"bed.left": {"fields": {"awake": {"type": "boolean"}}}},
            }
        },
    }
    catalog = build_catalog(document)
    registry = {"bed-0001": DeviceRef("bed-0001", "bed_sensor", active=True)}
    payload = envelope(type="bed.left", data={"awake": True})
    result = parse(topic("bed-0001"), payload, RECEIVED_AT, registry, catalog=catalog)
    assert isinstance(result, Event)
    wrong = envelope(type="bed.left", data={"awake": 1})
    rejected = parse(topic("bed-0001"), wrong, RECEIVED_AT, registry, catalog=catalog)
    assert rejected == Rejected(R.WRONG_TYPE, "data.awake: expected boolean, got integer")


@pytest.mark.parametrize(
    ("event_type", "data", "battery", "firmware"),
    [
        (HEARTBEAT, {"battery": 15, "fw": "1.0"}, 15, "1.0"),
        (HEARTBEAT, {"rssi": -70}, None, None),
        (HEARTBEAT, {"battery": None}, None, None),
        ("lock.unlocked", {"by": "a", "method": "b", "battery": 15, "fw": "1.0"}, None, None),
    ],
    ids=["heartbeat-with-both", "heartbeat-with-neither", "battery-null", "not-a-heartbeat"],
)
def test_battery_and_firmware_come_from_heartbeats_only(
    event_type: str, data: dict[str, Any], battery: int | None, firmware: str | None
) -> None:
    """Event.battery and .firmware read a heartbeat's data, and are None otherwise."""
    result = run(envelope(type=event_type, data=data))
    assert isinstance(result, Event)
    assert (result.battery, result.firmware) == (battery, firmware)


# --- status topic -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "online"),
    [
        (b"online", True),
        (b"offline", False),
        (b" online\n", True),
        (b"\toffline\r\n", False),
    ],
    ids=["online", "offline", "online-with-whitespace", "offline-with-crlf"],
)
def test_status_payloads(payload: bytes, online: bool) -> None:
    """online/offline on the status topic become a StatusReport."""
    result = run(payload, on=topic("cam-0001", "status"))
    assert result == StatusReport(device_id="cam-0001", online=online, received_at=RECEIVED_AT)


# --- rejections -------------------------------------------------------------------------------

LONG_ID = "x" * (MAX_EVENT_ID_CHARS + 1)
CHECK_ENDED = {"by": "s", "duration_s": 3, "outcome": "seen"}
STATUS = topic("lock-0001", "status")


def ts_off(delta: timedelta) -> str:
    """A ts `delta` after RECEIVED_AT."""
    return (RECEIVED_AT + delta).isoformat()


def camera(data: dict[str, Any]) -> tuple[str, bytes]:
    """A camera.check_ended message with the given data, and the camera's topic."""
    return topic("cam-0001"), envelope(type="camera.check_ended", data=data)


def robot(data: dict[str, Any]) -> tuple[str, bytes]:
    """A robot.interaction message with the given data, and the robot's topic."""
    return topic("robot-0001"), envelope(type="robot.interaction", data=data)


# (id, topic, payload, reason). Each RejectReason that parse can produce appears at least once.
REJECTIONS: list[tuple[str, str, bytes, RejectReason]] = [
    ("topic-other-prefix", "carewatch/device/lock-0001/events", envelope(), R.BAD_TOPIC),
    ("topic-shared-prefix", "$share/carewatch/" + topic(), envelope(), R.BAD_TOPIC),
    ("topic-upper-case-id", topic("Lock-0001"), envelope(), R.BAD_TOPIC),
    ("topic-id-too-short", topic("lk"), envelope(), R.BAD_TOPIC),
    ("topic-id-too-long", topic("l" * 65), envelope(), R.BAD_TOPIC),
    ("topic-id-leading-dash", topic("-lock-0001"), envelope(), R.BAD_TOPIC),
    ("topic-other-leaf", topic(leaf="telemetry"), envelope(), R.BAD_TOPIC),
    ("topic-extra-level", topic() + "/x", envelope(), R.BAD_TOPIC),
    ("topic-trailing-newline", topic() + "\n", envelope(), R.BAD_TOPIC),
    ("topic-empty", "", envelope(), R.BAD_TOPIC),
    ("device-unregistered", topic("lock-9999"), envelope(), R.UNKNOWN_DEVICE),
    ("device-unregistered-status", topic("lock-9999", "status"), b"online", R.UNKNOWN_DEVICE),
    ("device-kind-not-in-catalog", topic("ghost-0001"), envelope(), R.UNKNOWN_DEVICE),
    ("device-decommissioned", topic("lock-0002"), envelope(), R.DECOMMISSIONED_DEVICE),
    (
        "device-decommissioned-status",
        topic("lock-0002", "status"),
        b"offline",
        R.DECOMMISSIONED_DEVICE,
    ),
    ("too-large", topic(), b" " * (MAX_PAYLOAD_BYTES + 1), R.TOO_LARGE),
    ("too-large-status", STATUS, b" " * (MAX_PAYLOAD_BYTES + 1) + b"online", R.TOO_LARGE),
    ("utf8-invalid-byte", topic(), b'{"v": 1, "id": "\xff"}', R.NOT_UTF8),
    ("utf8-truncated", topic(), b'{"id": "\xc3"}', R.NOT_UTF8),
    ("utf8-overlong", topic(), b'{"id": "\xc0\xaf"}', R.NOT_UTF8),
    ("utf8-encoded-surrogate", topic(), b'{"id": "\xed\xa0\x80"}', R.NOT_UTF8),
    ("utf8-latin1", topic(), '{"by": "Åsa"}'.encode("latin-1"), R.NOT_UTF8),
    ("json-empty", topic(), b"", R.NOT_JSON),
    ("json-garbage", topic(), b"hello", R.NOT_JSON),
    ("json-truncated", topic(), envelope()[:-1], R.NOT_JSON),
    ("json-trailing-comma", topic(), b'{"v": 1,}', R.NOT_JSON),
    ("json-nan", topic(), b'{"v": NaN}', R.NOT_JSON),
    ("json-bom", topic(), b"\xef\xbb\xbf" + envelope(), R.NOT_JSON),
    ("json-raw-control-char", topic(), b'{"id": "a\x00b"}', R.NOT_JSON),
    ("json-lone-surrogate-escape", topic(), b'{"id": "\\ud800"}', R.NOT_JSON),
    ("json-too-deep", topic(), b"[" * 2000 + b"]" * 2000, R.NOT_JSON),
    ("object-array", topic(), b"[1, 2]", R.NOT_AN_OBJECT),
    ("object-string", topic(), b'"lock.unlocked"', R.NOT_AN_OBJECT),
    ("object-number", topic(), b"1", R.NOT_AN_OBJECT),
    ("object-null", topic(), b"null", R.NOT_AN_OBJECT),
    ("v-missing", topic(), envelope(v=DROP), R.MISSING_FIELD),
    ("v-string", topic(), envelope(v="1"), R.WRONG_TYPE),
    ("v-true", topic(), envelope(v=True), R.WRONG_TYPE),
    ("v-float", topic(), envelope(v=1.0), R.WRONG_TYPE),
    ("v-null", topic(), envelope(v=None), R.WRONG_TYPE),
    ("v-2", topic(), envelope(v=2), R.UNSUPPORTED_VERSION),
    ("v-0", topic(), envelope(v=0), R.UNSUPPORTED_VERSION),
    ("id-missing", topic(), envelope(id=DROP), R.MISSING_FIELD),
    ("id-integer", topic(), envelope(id=1842), R.WRONG_TYPE),
    ("id-empty", topic(), envelope(id=""), R.WRONG_TYPE),
    ("id-too-long", topic(), envelope(id=LONG_ID), R.WRONG_TYPE),
    ("id-with-nul", topic(), envelope(id="18\x0042"), R.WRONG_TYPE),
    ("ts-missing", topic(), envelope(ts=DROP), R.MISSING_FIELD),
    ("ts-epoch-number", topic(), envelope(ts=1795473660), R.WRONG_TYPE),
    ("ts-no-offset", topic(), envelope(ts="2026-11-22T23:41:00"), R.BAD_TIMESTAMP),
    ("ts-date-only", topic(), envelope(ts="2026-11-22"), R.BAD_TIMESTAMP),
    ("ts-no-seconds", topic(), envelope(ts="2026-11-22T23:41+01:00"), R.BAD_TIMESTAMP),
    ("ts-basic-format", topic(), envelope(ts="20261122T234100Z"), R.BAD_TIMESTAMP),
    ("ts-offset-no-colon", topic(), envelope(ts="2026-11-22T23:41:00+0100"), R.BAD_TIMESTAMP),
    ("ts-offset-hours-only", topic(), envelope(ts="2026-11-22T23:41:00+01"), R.BAD_TIMESTAMP),
    ("ts-offset-24h", topic(), envelope(ts="2026-11-22T23:41:00+24:00"), R.BAD_TIMESTAMP),
    ("ts-offset-60min", topic(), envelope(ts="2026-11-22T23:41:00+05:60"), R.BAD_TIMESTAMP),
    ("ts-comma-fraction", topic(), envelope(ts="2026-11-22T23:41:00,5Z"), R.BAD_TIMESTAMP),
    ("ts-empty-fraction", topic(), envelope(ts="2026-11-22T23:41:00.Z"), R.BAD_TIMESTAMP),
    ("ts-month-13", topic(), envelope(ts="2026-13-22T23:41:00Z"), R.BAD_TIMESTAMP),
    ("ts-february-30", topic(), envelope(ts="2026-02-30T23:41:00Z"), R.BAD_TIMESTAMP),
    ("ts-leap-second", topic(), envelope(ts="2026-12-31T23:59:60Z"), R.BAD_TIMESTAMP),
    ("ts-hour-24", topic(), envelope(ts="2026-11-22T24:00:00Z"), R.BAD_TIMESTAMP),
    ("ts-other-digits", topic(), envelope(ts="٢٠٢٦-11-22T23:41:00Z"), R.BAD_TIMESTAMP),
    ("ts-trailing-newline", topic(), envelope(ts=TS + "\n"), R.BAD_TIMESTAMP),
    ("ts-with-nul", topic(), envelope(ts=TS + "\x00"), R.BAD_TIMESTAMP),
    ("ts-8-days-early", topic(), envelope(ts=ts_off(-timedelta(days=8))), R.CLOCK_SKEW),
    ("ts-8-days-late", topic(), envelope(ts=ts_off(timedelta(days=8))), R.CLOCK_SKEW),
    ("ts-year-1", topic(), envelope(ts="0001-01-01T00:00:00+05:00"), R.CLOCK_SKEW),
    ("ts-year-9999", topic(), envelope(ts="9999-12-31T23:59:59-23:59"), R.CLOCK_SKEW),
    ("type-missing", topic(), envelope(type=DROP), R.MISSING_FIELD),
    ("type-number", topic(), envelope(type=7), R.WRONG_TYPE),
    ("type-with-nul", topic(), envelope(type="lock.unlocked\x00"), R.WRONG_TYPE),
    ("type-of-other-kind", topic(), envelope(type="camera.tamper"), R.UNKNOWN_EVENT_TYPE),
    ("type-made-up", topic(), envelope(type="lock.exploded"), R.UNKNOWN_EVENT_TYPE),
    ("type-wrong-case", topic(), envelope(type="Heartbeat"), R.UNKNOWN_EVENT_TYPE),
    ("type-empty", topic(), envelope(type=""), R.UNKNOWN_EVENT_TYPE),
    ("data-missing-but-required", topic(), envelope(data=DROP), R.MISSING_FIELD),
    ("data-array", topic(), envelope(data=["staff-4711", "app"]), R.WRONG_TYPE),
    ("data-string", topic(), envelope(data="staff-4711"), R.WRONG_TYPE),
    ("by-missing", topic(), data_of(by=DROP), R.MISSING_FIELD),
    ("by-null", topic(), data_of(by=None), R.WRONG_TYPE),
    ("by-integer", topic(), data_of(by=4711), R.WRONG_TYPE),
    ("by-object", topic(), data_of(by={"id": 4711}), R.WRONG_TYPE),
    ("by-with-nul", topic(), data_of(by="staff\x004711"), R.WRONG_TYPE),
    ("extra-value-with-nul", topic(), data_of(note="a\x00"), R.WRONG_TYPE),
    ("extra-key-with-nul", topic(), data_of(**{"no\x00te": 1}), R.WRONG_TYPE),
    ("extra-deep-nul", topic(), data_of(x={"y": [1, {"z": ["\x00"]}]}), R.WRONG_TYPE),
    ("credential-missing", topic(), envelope(type="lock.access_denied", data={}), R.MISSING_FIELD),
    ("outcome-missing", *camera({"by": "s", "duration_s": 3}), R.MISSING_FIELD),
    ("outcome-not-a-choice", *camera({**CHECK_ENDED, "outcome": "maybe"}), R.WRONG_TYPE),
    ("outcome-wrong-case", *camera({**CHECK_ENDED, "outcome": "Seen"}), R.WRONG_TYPE),
    ("outcome-integer", *camera({**CHECK_ENDED, "outcome": 1}), R.WRONG_TYPE),
    ("duration-string", *camera({**CHECK_ENDED, "duration_s": "3"}), R.WRONG_TYPE),
    ("duration-bool", *camera({**CHECK_ENDED, "duration_s": True}), R.WRONG_TYPE),
    ("duration-negative", *camera({**CHECK_ENDED, "duration_s": -0.5}), R.WRONG_TYPE),
    ("mode-not-a-choice", *robot({"mode": "purr", "duration_s": 3}), R.WRONG_TYPE),
    ("mode-missing", *robot({"duration_s": 3}), R.MISSING_FIELD),
    ("robot-duration-missing", *robot({"mode": "voice"}), R.MISSING_FIELD),
    ("battery-101", topic(), envelope(type=HEARTBEAT, data={"battery": 101}), R.WRONG_TYPE),
    ("battery-negative", topic(), envelope(type=HEARTBEAT, data={"battery": -1}), R.WRONG_TYPE),
    ("battery-fraction", topic(), envelope(type=HEARTBEAT, data={"battery": 50.5}), R.WRONG_TYPE),
    ("battery-float", topic(), envelope(type=HEARTBEAT, data={"battery": 50.0}), R.WRONG_TYPE),
    ("battery-bool", topic(), envelope(type=HEARTBEAT, data={"battery": True}), R.WRONG_TYPE),
    ("battery-string", topic(), envelope(type=HEARTBEAT, data={"battery": "87"}), R.WRONG_TYPE),
    ("rssi-float", topic(), envelope(type=HEARTBEAT, data={"rssi": -61.5}), R.WRONG_TYPE),
    ("fw-number", topic(), envelope(type=HEARTBEAT, data={"fw": 2.4}), R.WRONG_TYPE),
    ("status-upper-case", STATUS, b"ONLINE", R.BAD_STATUS),
    ("status-empty", STATUS, b"", R.BAD_STATUS),
    ("status-json-string", STATUS, b'"online"', R.BAD_STATUS),
    ("status-boolean", STATUS, b"true", R.BAD_STATUS),
    ("status-envelope", STATUS, envelope(), R.BAD_STATUS),
    ("status-not-utf8", STATUS, b"\xffonline", R.BAD_STATUS),
]


@pytest.mark.parametrize(
    ("on", "payload", "reason"),
    [case[1:] for case in REJECTIONS],
    ids=[case[0] for case in REJECTIONS],
)
def test_invalid_message_is_rejected_with_its_reason(
    on: str, payload: bytes, reason: RejectReason
) -> None:
    """Each kind of invalid message is rejected with the precise reason and a short detail."""
    result = run(payload, on=on)
    assert isinstance(result, Rejected)
    assert result.reason is reason, result.detail
    assert 0 < len(result.detail) <= 200
    assert "\x00" not in result.detail


def test_rejection_table_covers_every_reason_parse_produces() -> None:
    """The table above has a case for every RejectReason except the three parse never gives
    (unknown_model is the zigbee2mqtt adapter's, tests/unit/test_zigbee2mqtt.py)."""
    covered = {case[3] for case in REJECTIONS}
    assert covered == set(RejectReason) - {R.STORAGE_REJECTED, R.INTERNAL_ERROR, R.UNKNOWN_MODEL}


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (envelope(v=DROP), "v: missing"),
        (envelope(v=2), "v: 2 is not 1"),
        (envelope(id=True), "id: expected string, got boolean"),
        (envelope(id=LONG_ID), "id: expected 1 to 64 characters, got 65"),
        (envelope(type="lock.exploded"), "type: 'lock.exploded' is not an event type of door_lock"),
        (data_of(method=None), "data.method: expected string, got null"),
        (data_of(method=DROP), "data.method: missing"),
        (envelope(data=[]), "data: expected object, got array"),
        (envelope(type=HEARTBEAT, data={"battery": 101}), "data.battery: 101 is above 100"),
        (data_of(x=[{"y": "\x00"}]), "data.x[0].y: contains U+0000, which PostgreSQL cannot store"),
        (b"\x80", "invalid UTF-8 at byte 0"),
    ],
    ids=[
        "missing-field",
        "version",
        "wrong-type",
        "id-length",
        "unknown-type",
        "null",
        "missing-data-field",
        "data-not-object",
        "range",
        "nul-path",
        "utf8-position",
    ],
)
def test_rejection_detail_says_where_and_what(payload: bytes, detail: str) -> None:
    """The detail names the field and what is wrong with it."""
    result = run(payload)
    assert isinstance(result, Rejected)
    assert result.detail == detail


def test_choice_detail_lists_the_choices() -> None:
    """A value outside a closed set is reported with the allowed values."""
    on, payload = camera({**CHECK_ENDED, "outcome": "maybe"})
    result = run(payload, on=on)
    assert result == Rejected(
        R.WRONG_TYPE, "data.outcome: 'maybe' is not one of not_seen, seen, technical_failure"
    )


def test_long_input_is_cut_short_in_the_detail() -> None:
    """Details quote device input only up to a bounded length."""
    result = run(envelope(type="x" * 5000))
    assert isinstance(result, Rejected)
    assert result.reason is R.UNKNOWN_EVENT_TYPE
    assert len(result.detail) < 150


@pytest.mark.parametrize(
    ("on", "payload", "reason"),
    [
        (topic("Lock-9999"), b"\xff", R.BAD_TOPIC),
        (topic("lock-9999"), b"\xff", R.UNKNOWN_DEVICE),
        (topic("lock-0002"), b" " * (MAX_PAYLOAD_BYTES + 1), R.DECOMMISSIONED_DEVICE),
        (topic(), b"\xff" * (MAX_PAYLOAD_BYTES + 1), R.TOO_LARGE),
        (topic(), envelope(v=2, id=None, ts="yesterday"), R.UNSUPPORTED_VERSION),
        (topic(), envelope(id=None, ts="yesterday"), R.WRONG_TYPE),
        (topic(), envelope(ts="yesterday", type="lock.exploded"), R.BAD_TIMESTAMP),
        (topic(), envelope(ts=ts_off(timedelta(days=30)), type="x"), R.CLOCK_SKEW),
        (topic(), envelope(type="lock.exploded", data=[]), R.UNKNOWN_EVENT_TYPE),
    ],
    ids=[
        "topic-before-registry",
        "registry-before-encoding",
        "decommissioned-before-size",
        "size-before-encoding",
        "version-before-id",
        "id-before-ts",
        "ts-before-type",
        "skew-before-type",
        "type-before-data",
    ],
)
def test_checks_run_in_the_documented_order(on: str, payload: bytes, reason: RejectReason) -> None:
    """When several things are wrong, the first check in the documented order decides."""
    result = run(payload, on=on)
    assert isinstance(result, Rejected)
    assert result.reason is reason


# --- the API around parse ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on", "expected"),
    [
        (topic("lock-0001"), "lock-0001"),
        (topic("cam_7-b", "status"), "cam_7-b"),
        (topic("abc"), "abc"),
        (topic("ab"), None),
        (topic("lock-0001", "state"), None),
        (topic("lock-0001") + "\n", None),
        ("carewatch/devices/lock-0001", None),
        ("other/devices/lock-0001/events", None),
        ("", None),
    ],
    ids=[
        "events",
        "status",
        "shortest-id",
        "id-too-short",
        "other-leaf",
        "trailing-newline",
        "no-leaf",
        "other-prefix",
        "empty",
    ],
)
def test_device_id_of_topic(on: str, expected: str | None) -> None:
    """device_id_of returns the id of events and status topics, and None for anything else."""
    assert device_id_of(on) == expected


@pytest.mark.parametrize(
    ("device_id", "valid"),
    [("lock-0001", True), ("a" * 64, True), ("a" * 65, False), ("lock-0001\n", False)],
    ids=["typical", "64-chars", "65-chars", "trailing-newline"],
)
def test_device_id_pattern(device_id: str, valid: bool) -> None:
    """DEVICE_ID_RE.fullmatch accepts the contract's ids and nothing else."""
    assert (DEVICE_ID_RE.fullmatch(device_id) is not None) is valid


def test_naive_received_at_is_a_caller_bug() -> None:
    """A naive received_at raises ValueError instead of silently dead-lettering everything."""
    with pytest.raises(ValueError, match="timezone-aware"):
        parse(topic(), envelope(), datetime(2026, 11, 22, 22, 41), REGISTRY)  # noqa: DTZ001


class ExplodingRegistry(Mapping[str, DeviceRef]):
    """A registry with a bug: every lookup raises."""

    def __getitem__(self, key: str) -> DeviceRef:
        raise RuntimeError("registry is broken")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_last_resort_guard_turns_a_bug_into_a_rejection(caplog: pytest.LogCaptureFixture) -> None:
    """An exception inside parse becomes Rejected(internal_error), logged with its traceback."""
    with caplog.at_level(logging.ERROR, logger="devices.envelope"):
        result = parse(topic(), envelope(), RECEIVED_AT, ExplodingRegistry())
    assert result == Rejected(R.INTERNAL_ERROR, "parser error: RuntimeError")
    assert caplog.records[0].exc_info is not None


# --- properties -------------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=12)  # any string orjson can encode
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=16,
)
DEVICE_TOPICS = st.sampled_from(
    [topic(device, leaf) for device in REGISTRY for leaf in ("events", "status")]
)
REASONS_EXCEPT_BUGS = set(RejectReason) - {R.INTERNAL_ERROR, R.STORAGE_REJECTED}


def assert_well_formed(result: object) -> None:
    """result is one of parse's three types, and not the guard's internal_error."""
    assert isinstance(result, Event | StatusReport | Rejected)
    if isinstance(result, Rejected):
        assert result.reason in REASONS_EXCEPT_BUGS, result.detail


def has_nul(value: object) -> bool:
    """Whether a JSON value holds U+0000 in any string, key or value."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(item) for item in value)
    return False


@given(on=DEVICE_TOPICS, payload=st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(on: str, payload: bytes) -> None:
    """Any bytes on any device's topic give an Event, StatusReport or Rejected, never an error."""
    assert_well_formed(run(payload, on=on))


@given(on=st.text() | st.builds(lambda rest: TOPIC_PREFIX + rest, st.text()), payload=st.binary())
def test_arbitrary_topics_never_raise(on: str, payload: bytes) -> None:
    """Any topic string is handled; one that does not name a registered device is rejected."""
    result = run(payload, on=on)
    assert_well_formed(result)
    if device_id_of(on) not in REGISTRY:
        assert isinstance(result, Rejected)


@given(
    on=DEVICE_TOPICS,
    overrides=st.dictionaries(
        st.sampled_from(["v", "id", "ts", "type", "data"]) | TEXT, JSON_VALUES, max_size=6
    ),
    dropped=st.sets(st.sampled_from(["v", "id", "ts", "type", "data"])),
)
def test_arbitrary_json_in_the_envelope_never_raises(
    on: str, overrides: dict[str, Any], dropped: set[str]
) -> None:
    """A valid envelope with any keys replaced by any JSON, or dropped, never raises."""
    document = orjson.loads(envelope()) | overrides
    for key in dropped:
        document.pop(key, None)
    assert_well_formed(run(orjson.dumps(document), on=on))


@given(
    case=st.sampled_from(list(VALID_DATA.items())),
    extra=st.dictionaries(TEXT, JSON_VALUES, max_size=6),
)
def test_arbitrary_extra_data_is_kept_or_refused_for_nul(
    case: tuple[str, tuple[str, dict[str, Any]]], extra: dict[str, Any]
) -> None:
    """Arbitrary JSON beside the declared fields is kept as is, unless it holds a NUL."""
    event_type, (kind, declared) = case
    extra = {key: value for key, value in extra.items() if key not in declared}
    data = {**extra, **declared}
    result = run(envelope(type=event_type, data=data), on=topic(DEVICE_OF_KIND[kind]))
    if has_nul(extra):
        assert isinstance(result, Rejected)
        assert result.reason is R.WRONG_TYPE
    else:
        assert isinstance(result, Event)
        assert result.data == data


@given(
    case=st.sampled_from(list(VALID_DATA.items())),
    replacements=st.dictionaries(
        st.sampled_from(["by", "duration_s", "mode", "code"]), JSON_VALUES
    ),
)
def test_arbitrary_values_in_declared_fields_never_raise(
    case: tuple[str, tuple[str, dict[str, Any]]], replacements: dict[str, Any]
) -> None:
    """Any JSON value in a declared field gives an Event or a field-level rejection."""
    event_type, (kind, declared) = case
    data = {**declared, **replacements}
    result = run(envelope(type=event_type, data=data), on=topic(DEVICE_OF_KIND[kind]))
    assert_well_formed(result)
    if not isinstance(result, Event):
        assert isinstance(result, Rejected)
        assert result.reason in {R.WRONG_TYPE, R.MISSING_FIELD}, result.detail


@given(
    ts=st.text(st.characters(codec="ascii"), max_size=40)
    | st.from_regex(
        r"\A\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,12})?([Zz]|[+-]\d{2}:\d{2})\Z"
    )
)
def test_arbitrary_timestamps_never_raise(ts: str) -> None:
    """Any ts string is an aware event time, a bad timestamp or clock skew: never an exception."""
    result = run(envelope(ts=ts))
    assert_well_formed(result)
    if isinstance(result, Event):
        assert result.time.tzinfo is not None
    else:
        assert isinstance(result, Rejected)
        assert result.reason in {R.BAD_TIMESTAMP, R.CLOCK_SKEW}


# --- valid envelopes round-trip ---------------------------------------------------------------


def field_values(spec: FieldSpec) -> st.SearchStrategy[Any]:
    """Values a field spec accepts (a null too, when the field is optional)."""
    values: st.SearchStrategy[Any]
    if spec.choices is not None:
        values = st.sampled_from(sorted(spec.choices))
    elif spec.type is FieldType.STRING:
        values = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
    elif spec.type is FieldType.BOOLEAN:
        values = st.booleans()
    else:
        # orjson encodes 64-bit integers (signed or not); the rest are not JSON it can send.
        low = -(2**63) if spec.minimum is None else int(spec.minimum)
        high = 2**64 - 1 if spec.maximum is None else int(spec.maximum)
        values = st.integers(min_value=low, max_value=high)
        if spec.type is FieldType.NUMBER:
            values |= st.floats(
                min_value=spec.minimum,
                max_value=spec.maximum,
                allow_nan=False,
                allow_infinity=False,
            )
    return values if spec.required else values | st.none()


@st.composite
def valid_messages(draw: st.DrawFn) -> tuple[str, str, dict[str, Any], datetime, str, str]:
    """(kind, event type, data, time, ts as sent, id) of a valid event of any kind and type."""
    kind = draw(st.sampled_from(sorted(DEFAULT_CATALOG)))
    event_type = DEFAULT_CATALOG[kind].event_types[
        draw(st.sampled_from(sorted(DEFAULT_CATALOG[kind].event_types)))
    ]
    data: dict[str, Any] = {}
    for spec in event_type.fields:
        if spec.required or draw(st.booleans()):
            data[spec.name] = draw(field_values(spec))
    offset = timezone(timedelta(minutes=draw(st.integers(-(24 * 60 - 1), 24 * 60 - 1))))
    # Within the accepted window, [-max, +max), with the microseconds added.
    max_s = int(DEFAULT_MAX_CLOCK_SKEW_S)
    skew_s = draw(st.integers(-max_s, max_s - 1))
    micros = draw(st.integers(0, 999_999))
    time = (RECEIVED_AT + timedelta(seconds=skew_s, microseconds=micros)).astimezone(offset)
    if draw(st.booleans()):
        time = time.replace(microsecond=0)
    ts = time.isoformat(sep=draw(st.sampled_from(["T", " "])))
    if time.utcoffset() == timedelta(0) and draw(st.booleans()):
        ts = ts.removesuffix("+00:00") + "Z"
    event_id = draw(
        st.text(
            st.characters(codec="utf-8", exclude_characters="\x00"),
            min_size=1,
            max_size=MAX_EVENT_ID_CHARS,
        )
    )
    return kind, event_type.name, data, time, ts, event_id


@given(message=valid_messages())
def test_valid_generated_envelopes_round_trip(
    message: tuple[str, str, dict[str, Any], datetime, str, str],
) -> None:
    """Any valid envelope the catalog allows parses into an Event holding exactly what was sent."""
    kind, event_type, data, time, ts, event_id = message
    device_id = DEVICE_OF_KIND[kind]
    payload = envelope(id=event_id, ts=ts, type=event_type, data=data)
    result = run(payload, on=topic(device_id))
    assert result == Event(device_id, kind, event_id, time, RECEIVED_AT, event_type, data)
    assert result.time.utcoffset() == time.utcoffset()
