"""A zigbee2mqtt bridge's base topic, and the devices it announces on ``<base>/bridge/devices``.

**Base topics.** zigbee2mqtt publishes under its ``mqtt.base_topic`` (``zigbee2mqtt`` unless
configured); installations with one coordinator per building or floor give each bridge its own.
A base topic is a topic prefix: one or more levels separated by ``/``, none empty, no MQTT
wildcard (``+``, ``#``). Carewatch asks more of it than MQTT does, each for a reason:

- levels of ``A-Z a-z 0-9 _ . : -`` only, as zigbee2mqtt's own configuration examples use: the
  base topic is written into Mosquitto's ACL file, where a space or a control character would
  end or split a line;
- no level starting with ``$`` (the broker's own ``$SYS``, ``$share``), and not under
  ``carewatch/`` (the devices' own topics);
- not a level prefix of another bridge's base topic nor one of them of it (``zigbee2mqtt`` and
  ``zigbee2mqtt/floor2``): ``zigbee2mqtt/floor2/door`` would otherwise name two devices. The
  default ``zigbee2mqtt`` counts as taken by everyone, as the gateway always subscribes to it.

**Announcements.** Each bridge publishes its devices, retained, on ``<base>/bridge/devices``: a
JSON array of objects (zigbee2mqtt's documented format) with ``ieee_address``,
``friendly_name``, ``type`` (``Coordinator``, ``Router``, ``EndDevice``, ...), ``definition``
(``{model, vendor, description, exposes, ...}`` or null for an unsupported device),
``interview_completed``, ``power_source``, ``supported``, ``disabled``, ``model_id``... and
republishes the whole list on every change. :func:`parse_announcement` reads it tolerantly: an
entry without an IEEE address or a friendly name is skipped, a field of the wrong type is read as
absent; only a payload that is not a JSON array at all is refused. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from devices.envelope import Rejected, RejectReason

__all__ = [
    "ANNOUNCEMENT_LEVELS",
    "BASE_TOPIC_RULE",
    "COORDINATOR",
    "DEFAULT_BASE_TOPIC",
    "MAX_ANNOUNCED_DEVICES",
    "AnnouncedDevice",
    "Announcement",
    "announcement_topic",
    "base_topic_conflict",
    "check_base_topic",
    "is_offered",
    "parse_announcement",
]

DEFAULT_BASE_TOPIC: Final = "zigbee2mqtt"
# What a bridge publishes its device list on, under its base topic.
ANNOUNCEMENT_LEVELS: Final = "bridge/devices"
COORDINATOR: Final = "Coordinator"
_LEVEL: Final = r"[A-Za-z0-9_.:-]{1,64}"
# Eight levels and 200 characters are far beyond any base topic seen in zigbee2mqtt's issues.
BASE_TOPIC_RE: Final = re.compile(f"{_LEVEL}(?:/{_LEVEL}){{0,7}}")
_MAX_BASE_TOPIC_CHARS: Final = 200
BASE_TOPIC_RULE: Final = (
    "1-8 levels of A-Z a-z 0-9 _ . : - separated by /, none empty, no wildcard (+ #),"
    " at most 200 characters, not under carewatch/"
)
# A Zigbee network holds at most a few hundred devices per coordinator; a list longer than
# this is not a bridge's and is refused rather than stored.
MAX_ANNOUNCED_DEVICES: Final = 2000
_TEXT_CHARS: Final = 200
_IEEE_RE: Final = re.compile(r"0x[0-9a-fA-F]{16}")


def check_base_topic(base_topic: str) -> str | None:
    """Why ``base_topic`` cannot be a bridge's base topic (its shape alone), or None."""
    if len(base_topic) > _MAX_BASE_TOPIC_CHARS or not BASE_TOPIC_RE.fullmatch(base_topic):
        return BASE_TOPIC_RULE
    if base_topic.split("/", 1)[0] == "carewatch":
        return "carewatch/... is the devices' own namespace"
    return None


def base_topic_conflict(base_topic: str, others: Iterable[str]) -> str | None:
    """The base topic among ``others`` (and the default) that ``base_topic`` overlaps: one a
    level prefix of the other without being equal; None when there is none."""
    for other in {*others, DEFAULT_BASE_TOPIC}:
        if other == base_topic:
            continue
        if base_topic.startswith(other + "/") or other.startswith(base_topic + "/"):
            return other
    return None


def announcement_topic(base_topic: str) -> str:
    """``<base>/bridge/devices``: where the bridge announces its devices."""
    return f"{base_topic}/{ANNOUNCEMENT_LEVELS}"


@dataclass(frozen=True, slots=True)
class AnnouncedDevice:
    """One device a bridge announced, as far as its entry said (None: absent or unfit)."""

    ieee_address: str
    friendly_name: str
    type: str | None
    model: str | None  # definition.model: the name devices/zigbee2mqtt.toml knows models by
    vendor: str | None
    description: str | None
    model_id: str | None  # the Zigbee model identifier the device itself reports
    interview_completed: bool
    power_source: str | None
    supported: bool | None
    disabled: bool


@dataclass(frozen=True, slots=True)
class Announcement:
    """A bridge's device list: the entries read and how many were skipped as unreadable."""

    devices: tuple[AnnouncedDevice, ...]
    skipped: int = 0


def parse_announcement(payload: bytes) -> Announcement | Rejected:
    """The devices in a ``bridge/devices`` payload, or why the payload is not a device list
    (the envelope's reasons, as a dead letter keeps them).

    Never raises on bytes. A friendly name or IEEE address seen twice keeps its first entry.
    """
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as error:
            return Rejected(RejectReason.NOT_UTF8, f"invalid UTF-8 at byte {error.start}")
        return Rejected(RejectReason.NOT_JSON, "bridge/devices is not JSON")
    if type(document) is not list:
        return Rejected(RejectReason.WRONG_TYPE, "bridge/devices is not a JSON array")
    if len(document) > MAX_ANNOUNCED_DEVICES:
        return Rejected(
            RejectReason.TOO_LARGE, f"{len(document)} devices; at most {MAX_ANNOUNCED_DEVICES}"
        )
    devices: list[AnnouncedDevice] = []
    seen: set[str] = set()
    skipped = 0
    for entry in document:
        device = _device(entry)
        if device is None or device.ieee_address in seen or device.friendly_name in seen:
            skipped += 1
            continue
        seen.update((device.ieee_address, device.friendly_name))
        devices.append(device)
    return Announcement(tuple(devices), skipped)


def is_offered(device: AnnouncedDevice) -> bool:
    """Whether onboarding may offer the device at all: not the coordinator, interviewed, not
    disabled in zigbee2mqtt (being mapped and not yet onboarded are the caller's to check)."""
    return device.type != COORDINATOR and device.interview_completed and not device.disabled


def _device(entry: object) -> AnnouncedDevice | None:
    if type(entry) is not dict:
        return None
    ieee = entry.get("ieee_address")
    name = entry.get("friendly_name")
    if type(name) is not str or len(name) > _TEXT_CHARS or _text(name) is None:
        name = None  # a name is matched exactly: never cut short
    if type(ieee) is not str or not _IEEE_RE.fullmatch(ieee) or name is None:
        return None
    definition = entry.get("definition")
    if type(definition) is not dict:
        definition = {}
    return AnnouncedDevice(
        ieee_address=ieee.lower(),
        friendly_name=name,
        type=_text(entry.get("type")),
        model=_text(definition.get("model")),
        vendor=_text(definition.get("vendor")),
        description=_text(definition.get("description")),
        model_id=_text(entry.get("model_id")),
        interview_completed=entry.get("interview_completed") is True,
        power_source=_text(entry.get("power_source")),
        supported=_flag(entry.get("supported")),
        disabled=entry.get("disabled") is True,
    )


def _text(value: Any) -> str | None:
    """A non-empty string without control characters (PostgreSQL refuses U+0000), cut short."""
    if type(value) is not str or not value or any(ord(c) < 0x20 or c == "\x7f" for c in value):
        return None
    return value[:_TEXT_CHARS]


def _flag(value: Any) -> bool | None:
    return value if type(value) is bool else None
