"""The envelope parser: an MQTT message in, an :class:`Event`, a :class:`StatusReport` or a
:class:`Rejected` with a precise reason out.

Bad input is a value, not an exception: :func:`parse` returns ``Rejected(reason, detail)`` for
anything a device can send, and the reason becomes ``dead_letters.reason`` and the label of
``carewatch_dead_letters_total``. This is the gateway's hot path, so the happy path is a regular
expression for the topic, dict lookups, one ``orjson.loads``, one regular expression and
``datetime.fromisoformat`` for ``ts``, and one ``type()`` test per declared field; working out
*why* something is wrong happens only once it is known to be wrong.

Checks, in order (the first failure is the reason):
topic → device in the registry (unknown / decommissioned) → size → UTF-8 and JSON → object →
``v`` → ``id`` → ``ts`` → clock skew → ``type`` → ``data`` and its fields.
A ``status`` topic skips the envelope: after the size check its payload must be ``online`` or
``offline``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, TypeAlias

import orjson

from devices.catalog import DEFAULT_CATALOG, HEARTBEAT, Catalog
from devices.ids import DEVICE_ID_BODY

__all__ = [
    "DEFAULT_MAX_CLOCK_SKEW_S",
    "MAX_EVENT_ID_CHARS",
    "MAX_PAYLOAD_BYTES",
    "TOPIC_PREFIX",
    "DeviceRef",
    "Event",
    "ParseResult",
    "RejectReason",
    "Rejected",
    "StatusReport",
    "device_id_of",
    "parse",
]

_log = logging.getLogger(__name__)

TOPIC_PREFIX: Final = "carewatch/devices/"
_TOPIC_PREFIX_CHARS: Final = len(TOPIC_PREFIX)
MAX_PAYLOAD_BYTES: Final = 16 * 1024  # CONTRACT.md: "JSON, UTF-8, at most 16 KiB"
MAX_EVENT_ID_CHARS: Final = 64  # CONTRACT.md: "id ... at most 64 characters"
# A device that buffered events while offline sends them late; a week is far longer than any
# outage we keep buffers for, and anything beyond is a device clock that was never set.
DEFAULT_MAX_CLOCK_SKEW_S: Final = 7 * 24 * 3600.0

_TOPIC_RE: Final = re.compile(f"{re.escape(TOPIC_PREFIX)}({DEVICE_ID_BODY})/(events|status)")
# RFC 3339 date-time (section 5.6), with ' ' allowed as the separator (its note) and the offset
# mandatory. ASCII only: `\d` would also match other scripts' digits. Ranges of the date and time
# fields are left to datetime.fromisoformat; the offset's are checked here because fromisoformat
# accepts "+05:60" and offsets with seconds.
_TIMESTAMP_RE: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)
# PostgreSQL's jsonb and text refuse U+0000. A JSON string can only contain it escaped (orjson
# rejects raw control characters), so a payload without this escape has none, and the search
# for it is skipped.
_NUL_ESCAPE: Final = b"\\u0000"
_DETAIL_CHARS: Final = 80  # details quote device input; keep them short enough for a log line


class RejectReason(StrEnum):
    """Why a message is not an event. The value is ``dead_letters.reason`` and a metric label:
    a small, closed set."""

    # not carewatch/devices/{valid id}/events|status (nor zigbee2mqtt/{name}[/availability])
    BAD_TOPIC = "bad_topic"
    TOO_LARGE = "too_large"  # more than MAX_PAYLOAD_BYTES
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"  # JSON, but not {...}
    MISSING_FIELD = "missing_field"  # an envelope field, or a required data field
    WRONG_TYPE = "wrong_type"  # wrong type, out of range, not a choice, or contains NUL
    UNSUPPORTED_VERSION = "unsupported_version"  # v is an integer other than 1
    BAD_TIMESTAMP = "bad_timestamp"  # ts not RFC 3339 with an offset
    CLOCK_SKEW = "clock_skew"  # ts absurdly far from received_at
    UNKNOWN_DEVICE = "unknown_device"  # not in the registry (or a kind the catalog lacks)
    DECOMMISSIONED_DEVICE = "decommissioned_device"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"  # not a type of the device's kind
    BAD_STATUS = "bad_status"  # status payload not online/offline
    # zigbee2mqtt: the device's zigbee_model is not in devices/zigbee2mqtt.toml, or maps to
    # another kind than the device's
    UNKNOWN_MODEL = "unknown_model"
    STORAGE_REJECTED = "storage_rejected"  # set by the gateway when PostgreSQL refuses a row
    # A bug in this module, caught by parse's last-resort guard (and logged with its traceback)
    # so that it dead-letters one message instead of stopping the gateway. The property tests
    # assert that no input produces it.
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """What the registry says about a device."""

    id: str
    kind: str
    active: bool  # False once decommissioned


@dataclass(frozen=True, slots=True)
class Event:
    """A valid event from ``carewatch/devices/{device_id}/events``.

    ``time`` is the device's ``ts`` with the offset it was sent with; ``data`` is the payload's
    ``data`` object as decoded (unknown fields included, ``{}`` when absent); treat it as
    read-only.
    """

    device_id: str
    kind: str
    event_id: str
    time: datetime
    received_at: datetime
    type: str
    # Left out of the hash (a dict has none); equal events still hash equal, by the rest.
    data: dict[str, Any] = field(hash=False)

    @property
    def battery(self) -> int | None:
        """A heartbeat's battery level in percent, if it reported one."""
        if self.type != HEARTBEAT:
            return None
        battery = self.data.get("battery")
        return battery if type(battery) is int else None

    @property
    def firmware(self) -> str | None:
        """A heartbeat's firmware version (``fw``), if it reported one."""
        if self.type != HEARTBEAT:
            return None
        firmware = self.data.get("fw")
        return firmware if type(firmware) is str else None


@dataclass(frozen=True, slots=True)
class StatusReport:
    """``online``/``offline`` from ``carewatch/devices/{device_id}/status`` (retained, and the
    device's Last Will)."""

    device_id: str
    online: bool
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that is not an event or status report, and why."""

    reason: RejectReason
    detail: str  # short and human-readable: "data.duration_s: expected number, got string"


ParseResult: TypeAlias = Event | StatusReport | Rejected


def device_id_of(topic: str) -> str | None:
    """The device id in ``carewatch/devices/{id}/events`` or ``.../status``; else None."""
    match = _TOPIC_RE.fullmatch(topic)
    return None if match is None else match.group(1)


def parse(
    topic: str,
    payload: bytes,
    received_at: datetime,
    registry: Mapping[str, DeviceRef],
    *,
    catalog: Catalog = DEFAULT_CATALOG,
    max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S,
) -> ParseResult:
    """Validate one MQTT message; never raises on anything a device can send.

    ``payload`` is the message's bytes as received (``bytes``: the U+0000 pre-check is a byte
    search that a memoryview would not do).

    ``received_at`` (timezone-aware) is when the gateway received it; ``registry`` maps device
    ids to what the registry knows of them. A naive ``received_at`` is the caller's bug and
    raises ValueError.
    """
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    try:
        return _parse(topic, payload, received_at, registry, catalog, max_clock_skew_s)
    except Exception as exc:
        # Not reached by any input the tests can find; if a bug does reach it, one message is
        # dead-lettered with a traceback in the log, and the gateway carries on.
        _log.exception("envelope parser failed on a message on %r", topic)
        return Rejected(RejectReason.INTERNAL_ERROR, f"parser error: {type(exc).__name__}")


def _parse(
    topic: str,
    payload: bytes,
    received_at: datetime,
    registry: Mapping[str, DeviceRef],
    catalog: Catalog,
    max_clock_skew_s: float,
) -> ParseResult:
    # Fast path: a registered device's id is valid (the registry only holds valid ids), so a
    # topic that splits into a registered id and a known leaf needs no regular expression.
    device_id, _, leaf = topic[_TOPIC_PREFIX_CHARS:].partition("/")
    device = registry.get(device_id) if topic.startswith(TOPIC_PREFIX) else None
    if device is None or (leaf != "events" and leaf != "status"):
        match = _TOPIC_RE.fullmatch(topic)
        if match is None:
            return Rejected(
                RejectReason.BAD_TOPIC,
                f"{_show(topic)} is not {TOPIC_PREFIX}{{device id}}/events or /status",
            )
        device_id, leaf = match.groups()
        device = registry.get(device_id)
    if device is None:
        return Rejected(RejectReason.UNKNOWN_DEVICE, f"device {device_id} is not registered")
    if not device.active:
        return Rejected(RejectReason.DECOMMISSIONED_DEVICE, f"device {device_id} is decommissioned")
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejected(
            RejectReason.TOO_LARGE, f"{len(payload)} bytes; at most {MAX_PAYLOAD_BYTES}"
        )
    if leaf == "status":
        return _parse_status(device_id, payload, received_at)
    kind = catalog.kinds.get(device.kind)
    if kind is None:
        # The registry and the catalog disagree: a deployment mistake, not the device's.
        return Rejected(
            RejectReason.UNKNOWN_DEVICE,
            f"device {device_id} has kind {_show(device.kind)}, which the catalog lacks",
        )

    try:
        envelope = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return _undecodable(payload, exc)
    if type(envelope) is not dict:
        return Rejected(
            RejectReason.NOT_AN_OBJECT, f"expected a JSON object, got {_json_type(envelope)}"
        )
    may_hold_nul = _NUL_ESCAPE in payload

    version = envelope.get("v", _MISSING)
    if type(version) is not int or version != 1:
        if type(version) is int:
            return Rejected(RejectReason.UNSUPPORTED_VERSION, f"v: {version} is not 1")
        return _wrong("v", "integer", version)

    event_id = envelope.get("id", _MISSING)
    if type(event_id) is not str or not 0 < len(event_id) <= MAX_EVENT_ID_CHARS:
        if type(event_id) is str:
            return Rejected(
                RejectReason.WRONG_TYPE,
                f"id: expected 1 to {MAX_EVENT_ID_CHARS} characters, got {len(event_id)}",
            )
        return _wrong("id", "string", event_id)
    if may_hold_nul and "\x00" in event_id:
        return _nul("id")

    ts = envelope.get("ts", _MISSING)
    if type(ts) is not str:
        return _wrong("ts", "string", ts)
    time = _parse_timestamp(ts)
    if time is None:
        return Rejected(
            RejectReason.BAD_TIMESTAMP,
            f"ts: {_show(ts)} is not an RFC 3339 date-time with an offset",
        )
    skew_s = (time - received_at).total_seconds()
    if not -max_clock_skew_s <= skew_s <= max_clock_skew_s:
        return Rejected(
            RejectReason.CLOCK_SKEW,
            f"ts: {_show(ts)} is {abs(skew_s) / 3600:.1f} h {'after' if skew_s > 0 else 'before'}"
            " its receipt",
        )

    type_name = envelope.get("type", _MISSING)
    if type(type_name) is not str:
        return _wrong("type", "string", type_name)
    event_type = kind.event_types.get(type_name)
    if event_type is None:
        if may_hold_nul and "\x00" in type_name:
            return _nul("type")
        return Rejected(
            RejectReason.UNKNOWN_EVENT_TYPE,
            f"type: {_show(type_name)} is not an event type of {kind.name}",
        )

    data = envelope.get("data")
    if data is None:
        data = {}
    elif type(data) is not dict:
        return _wrong("data", "object", data)
    for spec in event_type.fields:
        value = data.get(spec.name)
        if value is None:  # absent or null
            if spec.required:
                return _wrong(f"data.{spec.name}", spec.type, data.get(spec.name, _MISSING))
            continue
        if type(value) not in spec.python_types:
            return _wrong(f"data.{spec.name}", spec.type, value)
        if spec.choices is not None and value not in spec.choices:
            return Rejected(
                RejectReason.WRONG_TYPE,
                f"data.{spec.name}: {_show(value)} is not one of {', '.join(sorted(spec.choices))}",
            )
        if spec.minimum is not None and value < spec.minimum:
            return Rejected(
                RejectReason.WRONG_TYPE, f"data.{spec.name}: {value} is below {spec.minimum:g}"
            )
        if spec.maximum is not None and value > spec.maximum:
            return Rejected(
                RejectReason.WRONG_TYPE, f"data.{spec.name}: {value} is above {spec.maximum:g}"
            )
    if may_hold_nul and (where := _find_nul(data)) is not None:
        return _nul(where)

    return Event(device_id, kind.name, event_id, time, received_at, type_name, data)


def _parse_status(device_id: str, payload: bytes, received_at: datetime) -> ParseResult:
    state = payload.strip()
    if state == b"online":
        return StatusReport(device_id, True, received_at)
    if state == b"offline":
        return StatusReport(device_id, False, received_at)
    return Rejected(RejectReason.BAD_STATUS, f"{_show(payload)} is neither online nor offline")


def _parse_timestamp(ts: str) -> datetime | None:
    """``ts`` as an aware datetime if it is an RFC 3339 date-time with an offset; else None."""
    if _TIMESTAMP_RE.fullmatch(ts) is None:
        return None
    if ts[10] == "t" or ts[-1] == "z":
        ts = ts.upper()  # RFC 3339 allows lower case; fromisoformat does not
    try:
        # Aware, because the pattern demands an offset. Fractions beyond microseconds are
        # truncated.
        return datetime.fromisoformat(ts)
    except ValueError:  # a month 13, a leap second 60 (datetime has no room for it), ...
        return None


# --- the slow path: saying what is wrong ------------------------------------------------------


class _Missing:
    """The type of the marker for "no such key" (so that a JSON null is not mistaken for it)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()

_JSON_TYPE_NAMES: Final[Mapping[type, str]] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
    list: "array",
    dict: "object",
}


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _wrong(where: str, expected: str, value: object) -> Rejected:
    if value is _MISSING:
        return Rejected(RejectReason.MISSING_FIELD, f"{where}: missing")
    return Rejected(
        RejectReason.WRONG_TYPE, f"{where}: expected {expected}, got {_json_type(value)}"
    )


def _nul(where: str) -> Rejected:
    return Rejected(
        RejectReason.WRONG_TYPE,
        f"{_shorten(where)}: contains U+0000, which PostgreSQL cannot store",
    )


def _find_nul(data: dict[str, Any]) -> str | None:
    """Where in ``data`` a string (key or value) contains U+0000, or None.

    Iterative: orjson accepts nesting 1024 deep, which a recursive walk would not survive.
    """
    pending: list[tuple[str, object]] = [("data", data)]
    while pending:
        where, value = pending.pop()
        if type(value) is str:
            if "\x00" in value:
                return where
        elif type(value) is dict:
            for key, item in value.items():
                if "\x00" in key:
                    return f"{where} (a key)"
                pending.append((f"{where}.{key}", item))
        elif type(value) is list:
            pending.extend((f"{where}[{index}]", item) for index, item in enumerate(value))
    return None


def _undecodable(payload: bytes, exc: orjson.JSONDecodeError) -> Rejected:
    # orjson validates UTF-8 itself; only when it fails is it worth asking whether that was why.
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as error:
        return Rejected(RejectReason.NOT_UTF8, f"invalid UTF-8 at byte {error.start}")
    return Rejected(RejectReason.NOT_JSON, _shorten(str(exc)))


def _show(value: str | bytes) -> str:
    """``value`` quoted for a detail, escapes visible, cut short."""
    return _shorten(repr(value[:_DETAIL_CHARS]) if len(value) > _DETAIL_CHARS else repr(value))


def _shorten(text: str) -> str:
    return text if len(text) <= _DETAIL_CHARS else f"{text[: _DETAIL_CHARS - 1]}…"
