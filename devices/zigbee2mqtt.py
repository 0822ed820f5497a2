"""Devices behind zigbee2mqtt: their topics and payloads in, the same events as the envelope's out.

A Zigbee device onboarded with ``source = 'zigbee2mqtt'`` has a ``zigbee_name`` (zigbee2mqtt's
friendly name) and a ``zigbee_model`` (the model as zigbee2mqtt names it). Its bridge publishes

- ``zigbee2mqtt/<name>``: the device's whole state as a JSON object, on every report, and
- ``zigbee2mqtt/<name>/availability``: ``online``/``offline`` (legacy) or ``{"state":"online"}``.

A friendly name is written as zigbee2mqtt's users write it: UTF-8, spaces, and ``/`` to group
devices (``kitchen/door`` publishes on ``zigbee2mqtt/kitchen/door`` and
``zigbee2mqtt/kitchen/door/availability``). A topic is matched to a device by its exact name;
:func:`devices.ids.zigbee_name_problem` refuses the names that could not be told from
zigbee2mqtt's own topics (``.../availability``, ``.../set``, ``.../get``, ``bridge/...``).

How a model's state becomes events is data (``zigbee2mqtt.toml``, read by :func:`load_mapping`,
strictly, like the catalog); :class:`Zigbee2MqttMapping` interprets it, and :func:`parse` turns
one MQTT message into :class:`~devices.envelope.Event` values (a heartbeat first, then the
state events), a :class:`~devices.envelope.StatusReport`, a :class:`~devices.envelope.Rejected`
with the envelope's reasons, or :class:`Ignored` for zigbee2mqtt's own ``bridge`` namespace —
so storage, metrics and rules need no special case. Pure: no I/O.

zigbee2mqtt messages carry no event id and no time. The time is the gateway's ``received_at``;
the id is derived from ``received_at``, a digest of the payload and the event's index in the
message, so that the gateway's retry of a batch (same messages, same ``received_at``) stores each
event once, while two different reports received in one network read stay two.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections.abc import Iterable
from collections.abc import Mapping as AbstractMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final, TypeAlias

import orjson

from devices.catalog import (
    DEFAULT_CATALOG,
    HEARTBEAT,
    Catalog,
    CatalogError,
    EventType,
    FieldSpec,
    FieldType,
    load_data_file,
)
from devices.envelope import MAX_PAYLOAD_BYTES, Event, Rejected, RejectReason, StatusReport
from devices.ids import ZIGBEE_BRIDGE_LEVEL, ZIGBEE_RESERVED_LEVELS, is_zigbee_name

__all__ = [
    "BRIDGE_NAME",
    "DEFAULT_MAPPING",
    "TOPIC_PREFIX",
    "Ignored",
    "MappingError",
    "ModelMapping",
    "Zigbee2MqttMapping",
    "Zigbee2MqttResult",
    "ZigbeeDeviceRef",
    "build_mapping",
    "device_topic",
    "load_mapping",
    "parse",
    "parse_availability",
    "zigbee_name_of",
]

_log = logging.getLogger(__name__)

TOPIC_PREFIX: Final = "zigbee2mqtt/"  # under the default base topic (a bridge may have another)
AVAILABILITY: Final = "availability"
_AVAILABILITY_SUFFIX: Final = f"/{AVAILABILITY}"
# <name>/set[/<property>] and <name>/get[/<property>]: commands to a device, never its report.
_COMMAND_LEVELS: Final = ZIGBEE_RESERVED_LEVELS - {AVAILABILITY}
BRIDGE_NAME: Final = ZIGBEE_BRIDGE_LEVEL
"""zigbee2mqtt's own namespace (``zigbee2mqtt/bridge/state``, ``.../devices``): never a device."""
_FIELD_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_DETAIL_CHARS: Final = 80

Scalar: TypeAlias = str | int | float | bool
_SCALAR_TYPES: Final = (str, int, float, bool)

# A number some zigbee2mqtt releases and converters send as a string ("80.00", " 80 "): decimal
# digits only (float() would also take "nan", "1_000" and Arabic-Indic digits).
_NUMBER_TEXT_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER_TEXT_RE: Final = re.compile(r"[+-]?[0-9]+")
# Longer than any reading a sensor sends; it also bounds int()'s work on a hostile string.
_NUMBER_TEXT_CHARS: Final = 32
_NUMERIC_FIELD_TYPES: Final = frozenset({FieldType.INTEGER, FieldType.NUMBER})
_HEARTBEAT_FIELD_KEYS: Final = frozenset({"type", "minimum", "maximum"})


class MappingError(CatalogError):
    """``zigbee2mqtt.toml`` is malformed or does not fit the catalog; the message says where."""


@dataclass(frozen=True, slots=True)
class ZigbeeDeviceRef:
    """What the registry says about a device behind zigbee2mqtt, found by its friendly name."""

    device_id: str
    kind: str
    model: str
    active: bool  # False once decommissioned


@dataclass(frozen=True, slots=True)
class Ignored:
    """A message on a subscribed topic that is nobody's event and no mistake either
    (zigbee2mqtt's ``bridge`` namespace): acknowledged, counted, not stored."""

    detail: str


Zigbee2MqttResult: TypeAlias = tuple[Event, ...] | StatusReport | Rejected | Ignored


@dataclass(frozen=True, slots=True)
class _FromProperty:
    """A data field taken from a payload property, ``default`` when absent or unfit."""

    property: str
    default: Scalar | None


@dataclass(frozen=True, slots=True)
class _EventRule:
    when: tuple[tuple[str, Scalar], ...]
    type: EventType
    data: tuple[tuple[FieldSpec, Scalar | _FromProperty], ...]


@dataclass(frozen=True, slots=True)
class ModelMapping:
    """How one way of reading a state payload (``[mappings.<name>]``) becomes events."""

    name: str
    kind: str
    heartbeat: tuple[tuple[str, str], ...]  # (heartbeat data field, payload property)
    events: tuple[_EventRule, ...]
    heartbeat_specs: AbstractMapping[str, FieldSpec]

    def interpret(self, state: AbstractMapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The events one report implies, as (event type, data): a heartbeat, then the state
        events in the file's order. Never raises on a JSON object."""
        heartbeat: dict[str, Any] = {}
        for name, prop in self.heartbeat:
            value = state.get(prop)
            if value is None:
                continue
            spec = self.heartbeat_specs.get(name)
            fitted = _fit(value) if spec is None else _fit_spec(spec, value)
            if fitted is not None:
                heartbeat[name] = fitted
        out: list[tuple[str, dict[str, Any]]] = [(HEARTBEAT, heartbeat)]
        for rule in self.events:
            if all(_matches(state.get(prop), expected) for prop, expected in rule.when):
                data: dict[str, Any] = {}
                for spec, source in rule.data:
                    value = _data_value(spec, source, state)
                    if value is not None:
                        data[spec.name] = value
                out.append((rule.type.name, data))
        return out


class Zigbee2MqttMapping:
    """The models zigbee2mqtt devices may have, by zigbee2mqtt model name."""

    __slots__ = ("mappings", "models")

    def __init__(
        self, mappings: AbstractMapping[str, ModelMapping], models: AbstractMapping[str, str]
    ) -> None:
        self.mappings = MappingProxyType(dict(mappings))
        # model -> its ModelMapping
        self.models: AbstractMapping[str, ModelMapping] = MappingProxyType(
            {model: self.mappings[name] for model, name in models.items()}
        )

    def for_model(self, model: str) -> ModelMapping | None:
        """The mapping of a zigbee2mqtt model, or None if Carewatch cannot read it."""
        return self.models.get(model)

    def interpret(self, model: str, payload: bytes) -> list[tuple[str, dict[str, Any]]] | Rejected:
        """``(model, payload bytes)`` to [(event type, data), ...], or why not."""
        mapping = self.models.get(model)
        if mapping is None:
            return Rejected(RejectReason.UNKNOWN_MODEL, f"model {_show(model)} is not mapped")
        state = _decode_state(payload)
        if isinstance(state, Rejected):
            return state
        return mapping.interpret(state)


# --- parsing messages -----------------------------------------------------------------------


def zigbee_name_of(topic: str, base_topic: str = TOPIC_PREFIX[:-1]) -> str | None:
    """The friendly name in ``<base>/<name>`` or ``<base>/<name>/availability`` (base
    ``zigbee2mqtt`` unless given), if it is one Carewatch accepts (and not ``bridge``); else
    None."""
    prefix = base_topic + "/"
    if not topic.startswith(prefix):
        return None
    found = device_topic(topic[len(prefix) :])
    return found[0] if isinstance(found, tuple) else None


def device_topic(rest: str) -> tuple[str, bool] | Ignored | None:
    """``rest``, a topic after its base topic and ``/``, as (friendly name, availability?);
    :class:`Ignored` for zigbee2mqtt's own topics (``bridge/...``, commands to a device); None
    if no acceptable name could publish it.

    Unambiguous because a name has no ``availability``, ``set`` or ``get`` level after its first
    (:func:`devices.ids.zigbee_name_problem`): ``kitchen/door/availability`` is always the
    availability of ``kitchen/door``.
    """
    levels = rest.split("/")
    if levels[0] == BRIDGE_NAME:
        return Ignored(f"zigbee2mqtt's own {_show(rest)}")
    if len(levels) > 1 and levels[-1] == AVAILABILITY:
        name = rest[: -len(_AVAILABILITY_SUFFIX)]
        return (name, True) if is_zigbee_name(name) else None
    if _COMMAND_LEVELS.intersection(levels[1:]):
        return Ignored(f"a command to a device, {_show(rest)}, not its report")
    return (rest, False) if is_zigbee_name(rest) else None


def parse(
    topic: str,
    payload: bytes,
    received_at: datetime,
    devices: AbstractMapping[str, ZigbeeDeviceRef],
    *,
    mapping: Zigbee2MqttMapping | None = None,
    catalog: Catalog = DEFAULT_CATALOG,
    base_topic: str = TOPIC_PREFIX[:-1],
) -> Zigbee2MqttResult:
    """One message on a ``<base_topic>/...`` topic (the bridge's mqtt.base_topic, +#13, default
    ``zigbee2mqtt``); never raises on anything a bridge can send.

    ``devices`` maps friendly names to what the registry knows; ``received_at`` (aware) is the
    events' time and the seed of their ids. A naive ``received_at`` raises ValueError.
    """
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    try:
        return _parse(
            topic,
            payload,
            received_at,
            devices,
            DEFAULT_MAPPING if mapping is None else mapping,
            base_topic + "/",
        )
    except Exception as exc:  # a bug here must cost one message, not the gateway
        _log.exception("zigbee2mqtt parser failed on a message on %r", topic)
        return Rejected(RejectReason.INTERNAL_ERROR, f"parser error: {type(exc).__name__}")


def _parse(
    topic: str,
    payload: bytes,
    received_at: datetime,
    devices: AbstractMapping[str, ZigbeeDeviceRef],
    mapping: Zigbee2MqttMapping,
    prefix: str = TOPIC_PREFIX,
) -> Zigbee2MqttResult:
    if not topic.startswith(prefix):
        return Rejected(RejectReason.BAD_TOPIC, f"{_show(topic)} is not {prefix}...")
    found = device_topic(topic[len(prefix) :])
    if found is None:
        return Rejected(
            RejectReason.BAD_TOPIC,
            f"{_show(topic)} is not zigbee2mqtt/{{friendly name}} or .../availability",
        )
    if isinstance(found, Ignored):
        return found
    name, availability = found
    device = devices.get(name)
    if device is None:
        return Rejected(
            RejectReason.UNKNOWN_DEVICE, f"zigbee2mqtt device {_show(name)} is not registered"
        )
    if not device.active:
        return Rejected(
            RejectReason.DECOMMISSIONED_DEVICE,
            f"zigbee2mqtt device {_show(name)} ({device.device_id}) is decommissioned",
        )
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejected(
            RejectReason.TOO_LARGE, f"{len(payload)} bytes; at most {MAX_PAYLOAD_BYTES}"
        )
    if availability:
        online = parse_availability(payload)
        if online is None:
            return Rejected(
                RejectReason.BAD_STATUS,
                f'{_show(payload)} is neither online/offline nor {{"state": ...}} with one',
            )
        return StatusReport(device.device_id, online, received_at)

    model = mapping.for_model(device.model)
    if model is None:
        return Rejected(
            RejectReason.UNKNOWN_MODEL,
            f"model {_show(device.model)} of {device.device_id} is not in zigbee2mqtt.toml",
        )
    if model.kind != device.kind:
        return Rejected(
            RejectReason.UNKNOWN_MODEL,
            f"model {_show(device.model)} is a {model.kind}; {device.device_id} is a {device.kind}",
        )
    state = _decode_state(payload)
    if isinstance(state, Rejected):
        return state
    stem = _event_id_stem(received_at, payload)
    return tuple(
        Event(device.device_id, device.kind, f"{stem}-{i}", received_at, received_at, type_, data)
        for i, (type_, data) in enumerate(model.interpret(state))
    )


def parse_availability(payload: bytes) -> bool | None:
    """``online`` → True, ``offline`` → False, in the legacy plain form or the current JSON
    (``{"state": "online"}``); None for anything else."""
    text = payload.strip()
    if text == b"online":
        return True
    if text == b"offline":
        return False
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    state = document.get("state") if type(document) is dict else None
    if state == "online":
        return True
    if state == "offline":
        return False
    return None


def _decode_state(payload: bytes) -> dict[str, Any] | Rejected:
    try:
        state = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as error:
            return Rejected(RejectReason.NOT_UTF8, f"invalid UTF-8 at byte {error.start}")
        return Rejected(RejectReason.NOT_JSON, _shorten(str(exc)))
    if type(state) is not dict:
        return Rejected(RejectReason.NOT_AN_OBJECT, "expected a JSON object of properties")
    return state


def _event_id_stem(received_at: datetime, payload: bytes) -> str:
    micros = (received_at - _EPOCH) // _MICROSECOND
    return f"z2m-{micros}-{hashlib.blake2b(payload, digest_size=6).hexdigest()}"


def _matches(value: object, expected: Scalar) -> bool:
    # The type must match too: true is not 1 (bool is an int) and not "true".
    return type(value) is type(expected) and value == expected


def _fit(value: object) -> Scalar | None:
    """A property value kept as it is: JSON scalars only, and no U+0000 (PostgreSQL refuses
    it)."""
    if type(value) is str:
        return None if "\x00" in value else value
    if type(value) in (int, float, bool):
        return value  # type: ignore[return-value]  # narrowed by the test above
    return None


def _fit_spec(spec: FieldSpec, value: object) -> Scalar | None:
    """``value`` as ``spec`` wants it (a whole number for an integer field, a number for a
    number in a string), or None."""
    if type(value) is str and spec.type in _NUMERIC_FIELD_TYPES:
        value = _number_in(value)
        if value is None:
            return None
    if type(value) is float and int in spec.python_types and float not in spec.python_types:
        if value != value or value in (float("inf"), float("-inf")):
            return None
        value = round(value)
    fitted = _fit(value)
    if fitted is None or type(fitted) not in spec.python_types:
        return None
    if spec.choices is not None and fitted not in spec.choices:
        return None
    if spec.minimum is not None and fitted < spec.minimum:  # type: ignore[operator]
        return None
    if spec.maximum is not None and fitted > spec.maximum:  # type: ignore[operator]
        return None
    return fitted


def _number_in(text: str) -> int | float | None:
    """The number a string clearly holds ("80", " 80.00 ", "3.1e3"), or None ("abc", "",
    "NaN", "inf", "1e999", "0x50")."""
    text = text.strip()
    if len(text) > _NUMBER_TEXT_CHARS or _NUMBER_TEXT_RE.fullmatch(text) is None:
        return None
    if _INTEGER_TEXT_RE.fullmatch(text):
        return int(text)
    number = float(text)
    return number if math.isfinite(number) else None


def _data_value(
    spec: FieldSpec, source: Scalar | _FromProperty, state: AbstractMapping[str, Any]
) -> Scalar | None:
    if not isinstance(source, _FromProperty):
        return source
    value = state.get(source.property)
    if value is not None and spec.type == "string" and type(value) is int:
        value = str(value)  # ids like action_user are names, not quantities
    fitted = None if value is None else _fit_spec(spec, value)
    return source.default if fitted is None else fitted


def _show(value: str | bytes) -> str:
    text = repr(value[:_DETAIL_CHARS]) if len(value) > _DETAIL_CHARS else repr(value)
    return _shorten(text)


def _shorten(text: str) -> str:
    return text if len(text) <= _DETAIL_CHARS else f"{text[: _DETAIL_CHARS - 1]}…"


# --- loading the data file ------------------------------------------------------------------


def load_mapping(
    path: str | os.PathLike[str] | None = None, *, catalog: Catalog = DEFAULT_CATALOG
) -> Zigbee2MqttMapping:
    """Read a mapping TOML file; without ``path``, the built-in ``devices/zigbee2mqtt.toml``."""
    return load_data_file(
        path,
        "zigbee2mqtt.toml",
        lambda document: build_mapping(document, catalog=catalog),
        MappingError,
    )


def build_mapping(
    document: AbstractMapping[str, object], *, catalog: Catalog = DEFAULT_CATALOG
) -> Zigbee2MqttMapping:
    """Build the mapping from its TOML document (as ``tomllib`` returns it); strict."""
    _check_keys(
        document, "zigbee2mqtt", required={"mappings", "models"}, optional={"heartbeat_fields"}
    )
    heartbeat_specs = {spec.name: spec for spec in catalog.heartbeat.fields}
    for name, value in _table(document.get("heartbeat_fields", {}), "heartbeat_fields").items():
        if name in heartbeat_specs:
            raise MappingError(
                f"heartbeat_fields.{name}: the catalog's heartbeat has it (devices/catalog.toml)"
            )
        heartbeat_specs[name] = _heartbeat_field(name, value, f"heartbeat_fields.{name}")
    mappings_table = _table(document["mappings"], "mappings")
    specs = MappingProxyType(heartbeat_specs)
    mappings = {
        name: _model_mapping(name, value, catalog, specs) for name, value in mappings_table.items()
    }
    models: dict[str, str] = {}
    for model, value in _table(document["models"], "models").items():
        where = f"models.{model}"
        if not model or model != model.strip():
            raise MappingError(f"{where}: a model name is zigbee2mqtt's, without spaces around")
        table = _table(value, where)
        _check_keys(table, where, required={"mapping", "vendor", "description"}, optional={"docs"})
        for key in ("vendor", "description", "docs"):
            if key in table:
                _string(table[key], f"{where}.{key}")
        name = _string(table["mapping"], f"{where}.mapping")
        if name not in mappings:
            raise MappingError(f"{where}.mapping: no [mappings.{name}]")
        models[model] = name
    if unused := sorted(set(mappings) - set(models.values())):
        raise MappingError(f"mappings.{unused[0]}: no model uses it")
    return Zigbee2MqttMapping(mappings, models)


def _heartbeat_field(name: str, value: object, where: str) -> FieldSpec:
    """A heartbeat field zigbee2mqtt devices report beyond the catalog's: its type and range."""
    if not _FIELD_NAME_RE.fullmatch(name):
        raise MappingError(f"{where}: lower-case letters, digits and _")
    table = _table(value, where)
    _check_keys(table, where, required={"type"}, optional=_HEARTBEAT_FIELD_KEYS - {"type"})
    type_name = table["type"]
    if type(type_name) is not str or type_name not in {t.value for t in FieldType}:
        raise MappingError(f"{where}.type: one of {', '.join(FieldType)}")
    bounds: list[float | None] = []
    for key in ("minimum", "maximum"):
        bound = table.get(key)
        if bound is None:
            bounds.append(None)
        elif isinstance(bound, int | float) and not isinstance(bound, bool):
            bounds.append(float(bound))
        else:
            raise MappingError(f"{where}.{key}: expected a number")
    try:
        return FieldSpec(
            name, FieldType(type_name), required=False, minimum=bounds[0], maximum=bounds[1]
        )
    except CatalogError as exc:
        raise MappingError(f"{where}: {exc}") from exc


def _model_mapping(
    name: str, value: object, catalog: Catalog, heartbeat_specs: AbstractMapping[str, FieldSpec]
) -> ModelMapping:
    where = f"mappings.{name}"
    table = _table(value, where)
    _check_keys(table, where, required={"kind", "heartbeat"}, optional={"events"})
    kind_name = _string(table["kind"], f"{where}.kind")
    kind = catalog.kinds.get(kind_name)
    if kind is None:
        raise MappingError(f"{where}.kind: the catalog has no kind {kind_name!r}")
    heartbeat: list[tuple[str, str]] = []
    for field_name, prop in _table(table["heartbeat"], f"{where}.heartbeat").items():
        if not _FIELD_NAME_RE.fullmatch(field_name):
            raise MappingError(f"{where}.heartbeat.{field_name}: lower-case letters, digits and _")
        heartbeat.append((field_name, _string(prop, f"{where}.heartbeat.{field_name}")))
    events_value = table.get("events", [])
    if not isinstance(events_value, list):
        raise MappingError(f"{where}.events: expected [[{where}.events]] entries")
    events = [
        _event_rule(entry, f"{where}.events[{i}]", kind.event_types)
        for i, entry in enumerate(events_value)
    ]
    return ModelMapping(
        name=name,
        kind=kind_name,
        heartbeat=tuple(heartbeat),
        events=tuple(events),
        heartbeat_specs=heartbeat_specs,
    )


def _event_rule(
    value: object, where: str, event_types: AbstractMapping[str, EventType]
) -> _EventRule:
    table = _table(value, where)
    _check_keys(table, where, required={"when", "type"}, optional={"data"})
    when_table = _table(table["when"], f"{where}.when")
    if not when_table:
        raise MappingError(f"{where}.when: at least one property")
    when = tuple((prop, _scalar(v, f"{where}.when.{prop}")) for prop, v in when_table.items())
    type_name = _string(table["type"], f"{where}.type")
    event_type = event_types.get(type_name)
    if event_type is None or type_name == HEARTBEAT:
        raise MappingError(f"{where}.type: {type_name!r} is not an event type of the kind")
    specs = {spec.name: spec for spec in event_type.fields}
    data: list[tuple[FieldSpec, Scalar | _FromProperty]] = []
    data_table = _table(table.get("data", {}), f"{where}.data")
    for field_name, source_value in data_table.items():
        field_where = f"{where}.data.{field_name}"
        spec = specs.get(field_name)
        if spec is None:
            raise MappingError(f"{field_where}: {type_name} has no field {field_name!r}")
        data.append((spec, _source(spec, source_value, field_where)))
    given = {spec.name for spec, source in data if _always_has_value(source)}
    if missing := sorted(s.name for s in event_type.fields if s.required and s.name not in given):
        raise MappingError(f"{where}.data: required {', '.join(missing)} need a value or default")
    return _EventRule(when, event_type, tuple(data))


def _source(spec: FieldSpec, value: object, where: str) -> Scalar | _FromProperty:
    if isinstance(value, dict):
        _check_keys(value, where, required={"from"}, optional={"default"})
        prop = _string(value["from"], f"{where}.from")
        default = value.get("default")
        if default is not None:
            default = _constant(spec, default, f"{where}.default")
        return _FromProperty(prop, default)
    return _constant(spec, value, where)


def _constant(spec: FieldSpec, value: object, where: str) -> Scalar:
    scalar = _scalar(value, where)
    fitted = _fit_spec(spec, scalar)
    if fitted is None or type(fitted) is not type(scalar) or fitted != scalar:
        raise MappingError(f"{where}: {scalar!r} is not a valid {spec.type} for {spec.name}")
    return scalar


def _always_has_value(source: Scalar | _FromProperty) -> bool:
    return not isinstance(source, _FromProperty) or source.default is not None


def _scalar(value: object, where: str) -> Scalar:
    if type(value) not in _SCALAR_TYPES:
        raise MappingError(f"{where}: expected a string, number or boolean")
    return value  # type: ignore[return-value]  # narrowed by the test above


def _table(value: object, where: str) -> AbstractMapping[str, object]:
    if not isinstance(value, dict):
        raise MappingError(f"{where}: expected a table")
    return value


def _string(value: object, where: str) -> str:
    if type(value) is not str or not value:
        raise MappingError(f"{where}: expected a non-empty string")
    return value


def _check_keys(
    table: AbstractMapping[str, object],
    where: str,
    *,
    required: Iterable[str] = (),
    optional: Iterable[str] = (),
) -> None:
    required, optional = set(required), set(optional)
    if missing := sorted(key for key in required if key not in table):
        raise MappingError(f"{where}: missing {', '.join(missing)}")
    if unknown := sorted(key for key in table if key not in required and key not in optional):
        raise MappingError(f"{where}: unknown key(s) {', '.join(unknown)}")


DEFAULT_MAPPING: Final[Zigbee2MqttMapping] = load_mapping()
"""The built-in models (``devices/zigbee2mqtt.toml``), checked against the built-in catalog."""
