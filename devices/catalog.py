"""The device catalog: the kinds of device, their heartbeat intervals, event types and fields.

The catalog is data: ``catalog.toml`` next to this module holds the built-in kinds of the
contract, and :func:`load_catalog` reads it (or another file with more kinds) into frozen values.
The loader is strict — an unknown key, a misspelt type or a bad range raises
:class:`CatalogError` naming the entry — because a catalog mistake found at start-up costs a
restart, while one found in production dead-letters every message of a kind.

Every kind has the event type ``heartbeat``, defined once in the ``[heartbeat]`` table and
shared by all kinds. A later issue adds the default alert rules of each kind; they will sit in
``[kinds.<kind>.rules]`` and in a new :class:`DeviceKind` field.
"""

from __future__ import annotations

import builtins
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Final

__all__ = [
    "DEFAULT_CATALOG",
    "HEARTBEAT",
    "Catalog",
    "CatalogError",
    "DeviceKind",
    "EventType",
    "FieldSpec",
    "FieldType",
    "build_catalog",
    "default_catalog",
    "load_catalog",
]

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


class Catalog(Mapping[str, DeviceKind]):
    """The kinds by name (a read-only mapping), plus the shared ``heartbeat`` event type."""

    __slots__ = ("heartbeat", "kinds")

    kinds: Mapping[str, DeviceKind]
    """The same mapping as the catalog itself; its ``get`` is the fast one (C, no ABC layer)."""
    heartbeat: EventType

    def __init__(self, kinds: Iterable[DeviceKind], heartbeat: EventType) -> None:
        by_name: dict[str, DeviceKind] = {}
        for kind in kinds:
            if kind.name in by_name:
                raise CatalogError(f"kinds.{kind.name}: defined twice")
            if kind.event_types.get(HEARTBEAT) != heartbeat:
                raise CatalogError(f"kinds.{kind.name}: must have the shared heartbeat type")
            by_name[kind.name] = kind
        self.kinds = MappingProxyType(by_name)
        self.heartbeat = heartbeat

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


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Read a catalog TOML file; without ``path``, the built-in ``devices/catalog.toml``."""
    if path is None:
        source = "devices/catalog.toml"
        text = resources.files(__package__).joinpath("catalog.toml").read_text(encoding="utf-8")
    else:
        source = os.fspath(path)
        text = Path(path).read_text(encoding="utf-8")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{source}: {exc}") from exc
    try:
        return build_catalog(document)
    except CatalogError as exc:
        raise CatalogError(f"{source}: {exc}") from exc


def build_catalog(document: Mapping[str, object]) -> Catalog:
    """Build a catalog from its TOML document (as ``tomllib`` returns it); strict."""
    _check_keys(document, "catalog", required={"heartbeat", "kinds"})
    heartbeat_table = _table(document["heartbeat"], "heartbeat")
    _check_keys(heartbeat_table, "heartbeat", optional={"fields"})
    heartbeat = EventType(HEARTBEAT, _fields(heartbeat_table, "heartbeat"))
    kinds_table = _table(document["kinds"], "kinds")
    kinds = [_kind(name, value, heartbeat) for name, value in kinds_table.items()]
    return Catalog(kinds, heartbeat)


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
        optional={"events"},
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
    )


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
"""The built-in catalog: the four kinds of the contract."""


def default_catalog() -> Catalog:
    """The built-in catalog (:data:`DEFAULT_CATALOG`), for callers that prefer a function."""
    return DEFAULT_CATALOG
