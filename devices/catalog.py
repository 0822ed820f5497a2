"""The device catalog: the kinds of device, their heartbeat intervals, event types and fields.

The catalog is data: ``catalog.toml`` next to this module holds the built-in kinds of the
contract, and :func:`load_catalog` reads it (or another file with more kinds) into frozen values.
The loader is strict — an unknown key, a misspelt type or a bad range raises
:class:`CatalogError` naming the entry — because a catalog mistake found at start-up costs a
restart, while one found in production dead-letters every message of a kind.

Every kind has the event type ``heartbeat``, defined once in the ``[heartbeat]`` table and
shared by all kinds.

The default alert rules of each kind (CONTRACT.md, "Alerts (default rules)") sit in
``[kinds.<kind>.rules]``, one entry per rule with all of its parameters, and become
:attr:`DeviceKind.rules`; the default escalation time sits in ``[alerts]``. What each rule *does*
is code (:mod:`devices.rules`); which kinds have it, how severe it is and its thresholds are data
here. A site may override some of them (:class:`devices.rules.SiteRuleSettings`).
"""

from __future__ import annotations

import builtins
import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeAlias, TypeVar

__all__ = [
    "DEFAULT_CATALOG",
    "DEFAULT_ESCALATION_S",
    "HEARTBEAT",
    "TAMPER_SUFFIX",
    "BatteryRule",
    "Catalog",
    "CatalogError",
    "DeviceKind",
    "DurationRule",
    "EventRule",
    "EventType",
    "FieldSpec",
    "FieldType",
    "KindRules",
    "NightDurationRule",
    "Rule",
    "RuleSpec",
    "Severity",
    "SilenceRule",
    "build_catalog",
    "default_catalog",
    "load_catalog",
]

_T = TypeVar("_T")

HEARTBEAT: Final = "heartbeat"
"""The event type every kind has."""

_KIND_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Dotted lower-case words, like "lock.unlocked"; the dot groups the types of one kind.
_EVENT_TYPE_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")


class CatalogError(ValueError):
    """The catalog data is malformed; the message says where (``kinds.door_lock...``) and why."""


class FieldType(StrEnum):
    """The JSON type a data field must have."""

    STRING = "string"
    INTEGER = "integer"  # a JSON number without fraction or exponent; never true/false
    NUMBER = "number"  # integer or not; never true/false
    BOOLEAN = "boolean"


# What orjson returns for each field type; `type(value) in ...` keeps bool out of the numbers
# (bool is a subclass of int, so isinstance would let `true` pass as 1).
_PYTHON_TYPES: Final[Mapping[FieldType, tuple[builtins.type, ...]]] = {
    FieldType.STRING: (str,),
    FieldType.INTEGER: (int,),
    FieldType.NUMBER: (int, float),
    FieldType.BOOLEAN: (bool,),
}


_FIELD_TYPE_NAMES: Final = frozenset(FieldType)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of an event type's ``data``.

    ``choices`` (strings only) and ``minimum``/``maximum`` (integers and numbers only, inclusive)
    narrow the values. A field that is not required may be absent or ``null``.
    """

    name: str
    type: FieldType
    required: bool = True
    choices: frozenset[str] | None = None
    minimum: float | None = None
    maximum: float | None = None
    # Derived from `type`: the Python types orjson gives for an acceptable value.
    python_types: tuple[builtins.type, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise CatalogError("a field needs a name")
        if self.choices is not None and (self.type is not FieldType.STRING or not self.choices):
            raise CatalogError(f"{self.name}: choices must be a non-empty set, for strings only")
        numeric = self.type in (FieldType.INTEGER, FieldType.NUMBER)
        if (self.minimum is not None or self.maximum is not None) and not numeric:
            raise CatalogError(f"{self.name}: minimum/maximum are for integers and numbers only")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise CatalogError(f"{self.name}: minimum {self.minimum} > maximum {self.maximum}")
        object.__setattr__(self, "python_types", _PYTHON_TYPES[self.type])


@dataclass(frozen=True, slots=True)
class EventType:
    """An event type (``lock.unlocked``) and the fields of its ``data``."""

    name: str
    fields: tuple[FieldSpec, ...] = ()

    def field_spec(self, name: str) -> FieldSpec | None:
        """The spec of the field called ``name``, or None."""
        for spec in self.fields:
            if spec.name == name:
                return spec
        return None


class Severity(StrEnum):
    """How urgent an alert is (``alerts.severity``).

    Compare by :attr:`rank`, never with ``<``: the values are strings, and "critical" < "high".
    """

    INFO = "info"
    WARNING = "warning"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for info up to 3 for critical."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK: Final[Mapping[Severity, int]] = {
    severity: rank for rank, severity in enumerate(Severity)
}
_SEVERITY_NAMES: Final = frozenset(Severity)


class Rule(StrEnum):
    """The alert rules of the contract (``alerts.rule``); :mod:`devices.rules` implements them."""

    DEVICE_OFFLINE = "device_offline"
    BATTERY_LOW = "battery_low"
    LOCK_JAMMED = "lock_jammed"
    DOOR_LEFT_UNLOCKED = "door_left_unlocked"
    CAMERA_STREAM_LOST = "camera_stream_lost"
    RESIDENT_NOT_SEEN = "resident_not_seen"
    TAMPER = "tamper"
    ALARM_PRESSED = "alarm_pressed"
    ROBOT_INACTIVE = "robot_inactive"
    DOOR_LEFT_OPEN = "door_left_open"
    WATER_LEAK = "water_leak"
    SMOKE_DETECTED = "smoke_detected"


def _positive(value: int, name: str) -> None:
    if value <= 0:
        raise CatalogError(f"{name}: expected a positive integer, got {value}")


@dataclass(frozen=True, slots=True)
class EventRule:
    """A rule that an event opens: lock_jammed, camera_stream_lost, resident_not_seen, tamper,
    alarm_pressed, water_leak, smoke_detected."""

    severity: Severity


@dataclass(frozen=True, slots=True)
class SilenceRule:
    """device_offline: no message for ``after_heartbeats`` heartbeat intervals of the kind."""

    severity: Severity
    after_heartbeats: int

    def __post_init__(self) -> None:
        _positive(self.after_heartbeats, "after_heartbeats")


@dataclass(frozen=True, slots=True)
class DurationRule:
    """A condition that opens once it has lasted ``after_s``: door_left_unlocked (unlocked and
    not locked again), robot_inactive (no interaction)."""

    severity: Severity
    after_s: int

    def __post_init__(self) -> None:
        _positive(self.after_s, "after_s")


@dataclass(frozen=True, slots=True)
class NightDurationRule:
    """door_left_open: a door open for ``after_s`` while it is night at the site.

    Night is from ``night_from_hour`` to ``night_until_hour`` in the site's local time (whole
    hours, 0-23): ``from <= hour < until``, across midnight when ``from > until`` (22 to 7), and
    all day when the two are equal.
    """

    severity: Severity
    after_s: int
    night_from_hour: int
    night_until_hour: int

    def __post_init__(self) -> None:
        _positive(self.after_s, "after_s")
        for name in ("night_from_hour", "night_until_hour"):
            if not 0 <= getattr(self, name) <= 23:
                raise CatalogError(f"{name}: expected an hour 0 to 23, got {getattr(self, name)}")

    def is_night(self, hour: int) -> bool:
        """Whether ``hour`` (0-23, local) is in the night."""
        start, end = self.night_from_hour, self.night_until_hour
        if start == end:
            return True
        if start < end:
            return start <= hour < end
        return hour >= start or hour < end


@dataclass(frozen=True, slots=True)
class BatteryRule:
    """battery_low: warning below ``warning_below`` %, high below ``high_below`` %, cleared at
    ``resolved_at`` % or more. The gap between ``warning_below`` and ``resolved_at`` is the
    hysteresis: a battery hovering around the threshold does not open and clear all day."""

    warning_below: int
    high_below: int
    resolved_at: int

    def __post_init__(self) -> None:
        if not 0 < self.high_below <= self.warning_below <= self.resolved_at <= 100:
            raise CatalogError(
                "expected 0 < high_below <= warning_below <= resolved_at <= 100, got"
                f" {self.high_below}, {self.warning_below}, {self.resolved_at}"
            )


RuleSpec: TypeAlias = EventRule | SilenceRule | DurationRule | NightDurationRule | BatteryRule


@dataclass(frozen=True, slots=True)
class KindRules:
    """The alert rules a kind has, with their defaults; None means the kind lacks the rule.

    The field names are the :class:`Rule` values.
    """

    device_offline: SilenceRule | None = None
    battery_low: BatteryRule | None = None
    lock_jammed: EventRule | None = None
    door_left_unlocked: DurationRule | None = None
    camera_stream_lost: EventRule | None = None
    resident_not_seen: EventRule | None = None
    tamper: EventRule | None = None
    alarm_pressed: EventRule | None = None
    robot_inactive: DurationRule | None = None
    door_left_open: NightDurationRule | None = None
    water_leak: EventRule | None = None
    smoke_detected: EventRule | None = None

    @property
    def enabled(self) -> frozenset[Rule]:
        """The rules this kind has."""
        return frozenset(rule for rule in Rule if getattr(self, rule.value) is not None)


# The parameters of each rule: the class of its KindRules field.
_RULE_SPECS: Final[Mapping[Rule, type[RuleSpec]]] = {
    Rule.DEVICE_OFFLINE: SilenceRule,
    Rule.BATTERY_LOW: BatteryRule,
    Rule.LOCK_JAMMED: EventRule,
    Rule.DOOR_LEFT_UNLOCKED: DurationRule,
    Rule.CAMERA_STREAM_LOST: EventRule,
    Rule.RESIDENT_NOT_SEEN: EventRule,
    Rule.TAMPER: EventRule,
    Rule.ALARM_PRESSED: EventRule,
    Rule.ROBOT_INACTIVE: DurationRule,
    Rule.DOOR_LEFT_OPEN: NightDurationRule,
    Rule.WATER_LEAK: EventRule,
    Rule.SMOKE_DETECTED: EventRule,
}
# The event types a rule reacts to (devices/rules.py): a kind that has the rule must have them,
# or the rule could open and never clear. tamper instead needs some `*.tamper` type.
_RULE_EVENT_TYPES: Final[Mapping[Rule, frozenset[str]]] = {
    Rule.LOCK_JAMMED: frozenset({"lock.jammed", "lock.locked"}),
    Rule.DOOR_LEFT_UNLOCKED: frozenset({"lock.unlocked", "lock.locked"}),
    Rule.CAMERA_STREAM_LOST: frozenset({"camera.stream_lost", "camera.stream_restored"}),
    Rule.RESIDENT_NOT_SEEN: frozenset({"camera.check_ended"}),
    Rule.ALARM_PRESSED: frozenset({"alarm.pressed"}),
    Rule.ROBOT_INACTIVE: frozenset({"robot.interaction"}),
    Rule.DOOR_LEFT_OPEN: frozenset({"door.opened", "door.closed"}),
    Rule.WATER_LEAK: frozenset({"water.leak_detected", "water.leak_cleared"}),
    Rule.SMOKE_DETECTED: frozenset({"smoke.detected", "smoke.cleared"}),
}
TAMPER_SUFFIX: Final = ".tamper"
"""Every event type ending in this opens the tamper rule of a kind that has it."""

DEFAULT_ESCALATION_S: Final = 300
"""CONTRACT.md: an unacknowledged high or critical alert escalates after 5 min by default.
Used for catalogs built in code; a catalog file says it in ``[alerts] escalation_s``."""


@dataclass(frozen=True, slots=True)
class DeviceKind:
    """A kind of device; ``event_types`` includes ``heartbeat``."""

    name: str
    title_sv: str
    title_en: str
    heartbeat_interval_s: int
    # Read-only (a MappingProxyType when built by this module); left out of the hash because
    # mappings are not hashable.
    event_types: Mapping[str, EventType] = field(hash=False)
    rules: KindRules = KindRules()


class Catalog(Mapping[str, DeviceKind]):
    """The kinds by name (a read-only mapping), plus the shared ``heartbeat`` event type."""

    __slots__ = ("escalation_s", "heartbeat", "kinds")

    kinds: Mapping[str, DeviceKind]
    """The same mapping as the catalog itself; its ``get`` is the fast one (C, no ABC layer)."""
    heartbeat: EventType
    escalation_s: int
    """How long a high or critical alert may stay unacknowledged before it escalates, unless the
    site says otherwise."""

    def __init__(
        self,
        kinds: Iterable[DeviceKind],
        heartbeat: EventType,
        *,
        escalation_s: int = DEFAULT_ESCALATION_S,
    ) -> None:
        _positive(escalation_s, "escalation_s")
        by_name: dict[str, DeviceKind] = {}
        for kind in kinds:
            if kind.name in by_name:
                raise CatalogError(f"kinds.{kind.name}: defined twice")
            if kind.event_types.get(HEARTBEAT) != heartbeat:
                raise CatalogError(f"kinds.{kind.name}: must have the shared heartbeat type")
            by_name[kind.name] = kind
        self.kinds = MappingProxyType(by_name)
        self.heartbeat = heartbeat
        self.escalation_s = escalation_s

    def __getitem__(self, name: str) -> DeviceKind:
        return self.kinds[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.kinds)

    def __len__(self) -> int:
        return len(self.kinds)

    def __repr__(self) -> str:
        return f"Catalog({', '.join(self.kinds)})"

    def event_type(self, kind: str, event_type: str) -> EventType | None:
        """The event type ``event_type`` of ``kind``, or None if either is unknown."""
        device_kind = self.kinds.get(kind)
        return None if device_kind is None else device_kind.event_types.get(event_type)


def load_data_file(
    path: str | os.PathLike[str] | None,
    packaged: str,
    build: Callable[[Mapping[str, object]], _T],
    error: type[CatalogError] = CatalogError,
) -> _T:
    """Read a TOML data file and ``build`` it; without ``path``, ``devices/<packaged>``.

    Whatever is wrong with it is an ``error`` whose message starts with the file's name.
    """
    if path is None:
        source = f"devices/{packaged}"
        text = resources.files(__package__).joinpath(packaged).read_text(encoding="utf-8")
    else:
        source = os.fspath(path)
        text = Path(path).read_text(encoding="utf-8")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{source}: {exc}") from exc
    try:
        return build(document)
    except CatalogError as exc:
        raise error(f"{source}: {exc}") from exc


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Read a catalog TOML file; without ``path``, the built-in ``devices/catalog.toml``."""
    return load_data_file(path, "catalog.toml", build_catalog)


def build_catalog(document: Mapping[str, object]) -> Catalog:
    """Build a catalog from its TOML document (as ``tomllib`` returns it); strict."""
    _check_keys(document, "catalog", required={"heartbeat", "kinds"}, optional={"alerts"})
    heartbeat_table = _table(document["heartbeat"], "heartbeat")
    _check_keys(heartbeat_table, "heartbeat", optional={"fields"})
    heartbeat = EventType(HEARTBEAT, _fields(heartbeat_table, "heartbeat"))
    alerts_table = _table(document.get("alerts", {}), "alerts")
    _check_keys(alerts_table, "alerts", optional={"escalation_s"})
    escalation_s = alerts_table.get("escalation_s", DEFAULT_ESCALATION_S)
    if type(escalation_s) is not int or escalation_s <= 0:
        raise CatalogError("alerts.escalation_s: expected a positive integer")
    kinds_table = _table(document["kinds"], "kinds")
    kinds = [_kind(name, value, heartbeat) for name, value in kinds_table.items()]
    return Catalog(kinds, heartbeat, escalation_s=escalation_s)


# --- building blocks of build_catalog ---------------------------------------------------------


def _kind(name: str, value: object, heartbeat: EventType) -> DeviceKind:
    where = f"kinds.{name}"
    if not _KIND_NAME_RE.fullmatch(name):
        raise CatalogError(f"{where}: a kind name is lower-case letters, digits and _")
    table = _table(value, where)
    _check_keys(
        table,
        where,
        required={"title_sv", "title_en", "heartbeat_interval_s"},
        optional={"events", "rules"},
    )
    interval_s = table["heartbeat_interval_s"]
    if type(interval_s) is not int or interval_s <= 0:
        raise CatalogError(f"{where}.heartbeat_interval_s: expected a positive integer")
    event_types: dict[str, EventType] = {HEARTBEAT: heartbeat}
    events = _table(table.get("events", {}), f"{where}.events")
    for type_name, type_value in events.items():
        type_where = f"{where}.events.{type_name}"
        if type_name == HEARTBEAT:
            raise CatalogError(f"{type_where}: heartbeat is shared; define it under [heartbeat]")
        if not _EVENT_TYPE_NAME_RE.fullmatch(type_name):
            raise CatalogError(f"{type_where}: an event type is dotted lower-case words")
        type_table = _table(type_value, type_where)
        _check_keys(type_table, type_where, optional={"fields"})
        event_types[type_name] = EventType(type_name, _fields(type_table, type_where))
    return DeviceKind(
        name=name,
        title_sv=_string(table["title_sv"], f"{where}.title_sv"),
        title_en=_string(table["title_en"], f"{where}.title_en"),
        heartbeat_interval_s=interval_s,
        event_types=MappingProxyType(event_types),
        rules=_rules(table.get("rules", {}), f"{where}.rules", event_types),
    )


def _rules(value: object, where: str, event_types: Mapping[str, EventType]) -> KindRules:
    table = _table(value, where)
    # Any: each value has the class of its KindRules field (by _RULE_SPECS), which mypy cannot
    # follow through **.
    specs: dict[str, Any] = {}
    for name, spec_value in table.items():
        rule_where = f"{where}.{name}"
        if name not in _RULE_SPECS:
            raise CatalogError(f"{rule_where}: not a rule; the rules are {', '.join(Rule)}")
        rule = Rule(name)
        missing = sorted(_RULE_EVENT_TYPES.get(rule, frozenset()) - event_types.keys())
        if missing:
            raise CatalogError(
                f"{rule_where}: the kind lacks the event type(s) {', '.join(missing)}"
            )
        if rule is Rule.TAMPER and not any(t.endswith(TAMPER_SUFFIX) for t in event_types):
            raise CatalogError(f"{rule_where}: the kind has no *{TAMPER_SUFFIX} event type")
        specs[name] = _rule_spec(_RULE_SPECS[rule], spec_value, rule_where)
    return KindRules(**specs)


def _rule_spec(spec_type: type[RuleSpec], value: object, where: str) -> RuleSpec:
    table = _table(value, where)
    names = [spec_field.name for spec_field in dataclasses.fields(spec_type)]
    # Every parameter is required: the file is where a reader sees a kind's rules, all of them.
    _check_keys(table, where, required=set(names))
    kwargs: dict[str, Any] = {}
    for name in names:
        parameter = table[name]
        if name == "severity":
            if type(parameter) is not str or parameter not in _SEVERITY_NAMES:
                raise CatalogError(
                    f"{where}.severity: {parameter!r} is not one of {', '.join(Severity)}"
                )
            kwargs[name] = Severity(parameter)
        elif type(parameter) is int:
            kwargs[name] = parameter
        else:
            raise CatalogError(f"{where}.{name}: expected an integer")
    try:
        return spec_type(**kwargs)
    except CatalogError as exc:
        raise CatalogError(f"{where}: {exc}") from exc


def _fields(table: Mapping[str, object], where: str) -> tuple[FieldSpec, ...]:
    fields_table = _table(table.get("fields", {}), f"{where}.fields")
    return tuple(
        _field(name, value, f"{where}.fields.{name}") for name, value in fields_table.items()
    )


def _field(name: str, value: object, where: str) -> FieldSpec:
    table = _table(value, where)
    _check_keys(
        table, where, required={"type"}, optional={"required", "choices", "minimum", "maximum"}
    )
    type_name = table["type"]
    if type(type_name) is not str or type_name not in _FIELD_TYPE_NAMES:
        raise CatalogError(f"{where}.type: {type_name!r} is not one of {', '.join(FieldType)}")
    required = table.get("required", True)
    if type(required) is not bool:
        raise CatalogError(f"{where}.required: expected true or false")
    choices = table.get("choices")
    if choices is not None:
        if not isinstance(choices, list) or not all(type(c) is str for c in choices):
            raise CatalogError(f"{where}.choices: expected a list of strings")
        choices = frozenset(choices)
    try:
        return FieldSpec(
            name=name,
            type=FieldType(type_name),
            required=required,
            choices=choices,
            minimum=_optional_number(table.get("minimum"), f"{where}.minimum"),
            maximum=_optional_number(table.get("maximum"), f"{where}.maximum"),
        )
    except CatalogError as exc:
        raise CatalogError(f"{where}: {exc}") from exc


def _table(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise CatalogError(f"{where}: expected a table")
    return value


def _string(value: object, where: str) -> str:
    if type(value) is not str or not value:
        raise CatalogError(f"{where}: expected a non-empty string")
    return value


def _optional_number(value: object, where: str) -> float | None:
    if value is None:
        return None
    if type(value) is not int and type(value) is not float:
        raise CatalogError(f"{where}: expected a number")
    return float(value)


def _check_keys(
    table: Mapping[str, object],
    where: str,
    *,
    required: AbstractSet[str] = frozenset(),
    optional: AbstractSet[str] = frozenset(),
) -> None:
    if missing := sorted(key for key in required if key not in table):
        raise CatalogError(f"{where}: missing {', '.join(missing)}")
    if unknown := sorted(key for key in table if key not in required and key not in optional):
        raise CatalogError(f"{where}: unknown key(s) {', '.join(unknown)}")


DEFAULT_CATALOG: Final[Catalog] = load_catalog()
"""The built-in catalog: the four kinds of the contract and the Zigbee sensors of issue 4."""


def default_catalog() -> Catalog:
    """The built-in catalog (:data:`DEFAULT_CATALOG`), for callers that prefer a function."""
    return DEFAULT_CATALOG
