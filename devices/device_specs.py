"""Devices to register, as people give them, and whether each is acceptable: pure checks.

A :class:`DeviceSpec` is one device as the API's body, a row of an import file or the shell's
``carewatch device add`` gives it. :func:`check_spec` says why it cannot be registered (before
the database is asked), :func:`parse_csv` reads an import file into specs and the rows it had
to refuse on the way. The database's half (a site in scope, an id taken, the insert itself) is
the kernel's device write path, ``carewatch.fleet``.

Bad rows are values (:class:`Refusal`); only a file that cannot be read as a whole raises
:class:`ImportFileError`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Literal

from devices.catalog import DEFAULT_CATALOG
from devices.ids import (
    BRIDGE_ID_RE,
    BRIDGE_USERNAME_PREFIX,
    DEVICE_ID_RE,
    DEVICE_ID_RULE,
    ZIGBEE_MODEL_RE,
    zigbee_name_problem,
)
from devices.zigbee2mqtt import DEFAULT_MAPPING

__all__ = [
    "COLUMNS",
    "MAX_IMPORT_BYTES",
    "MAX_IMPORT_ROWS",
    "MAX_LABEL_CHARS",
    "RESERVED_DEVICE_IDS",
    "SOURCES",
    "ZIGBEE_MODELS",
    "DeviceSpec",
    "ImportFileError",
    "Refusal",
    "RefusalCode",
    "Source",
    "bridge_username",
    "check_label",
    "check_spec",
    "has_control_chars",
    "parse_csv",
]

Source = Literal["mqtt", "zigbee2mqtt"]
SOURCES: Final = ("mqtt", "zigbee2mqtt")

# An import file: 10,000 rows is ten times the largest delivery we have heard of, and at about
# 60 bytes a row far below 2 MB; together they bound the work one request can cause.
MAX_IMPORT_BYTES: Final = 2 * 1024 * 1024
MAX_IMPORT_ROWS: Final = 10_000
MAX_LABEL_CHARS: Final = 200
# The models the gateway can read (devices/zigbee2mqtt.toml), each with the kind it maps to: a
# device of another model would only ever be dead-lettered, so it is refused at registration.
ZIGBEE_MODELS: Final[Mapping[str, str]] = MappingProxyType(
    {model: mapping.kind for model, mapping in DEFAULT_MAPPING.models.items()}
)
# Paths under /api/v1/devices/ that a device id would otherwise shadow (GET .../summary).
RESERVED_DEVICE_IDS: Final = frozenset({"summary", "import"})
_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]")
REQUIRED_COLUMNS: Final = ("id", "kind", "site")
COLUMNS: Final = (
    "id", "kind", "site", "label", "source", "zigbee_name", "zigbee_model", "bridge", "residence",
)  # fmt: skip
_COLUMN_ALIASES: Final = {"site_id": "site", "device_id": "id"}


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device to register, as the API, a CSV row or the CLI gives it; ``line`` in the file."""

    id: str
    kind: str
    site: str
    label: str = ""
    source: Source = "mqtt"
    zigbee_name: str | None = None
    zigbee_model: str | None = None
    bridge: str | None = None
    # The residence at the device's site (+#11): by id (the API's body) or by the label staff
    # use (an import file's ``residence`` column, "Lgh 12"); at most one of the two.
    residence_id: int | None = None
    residence: str | None = None
    line: int = 0


class RefusalCode(StrEnum):
    """Why a row was refused, as a class: the API's status for a single device."""

    INVALID = "invalid"  # 422
    NOT_FOUND = "not_found"  # a site or bridge the actor does not have: 422 (it is the body's)
    TAKEN = "taken"  # 409


@dataclass(frozen=True, slots=True)
class Refusal:
    """A row that was not registered: its line in the file, its id and why not."""

    line: int
    id: str
    reason: str
    code: RefusalCode = RefusalCode.INVALID


class ImportFileError(ValueError):
    """The file as a whole cannot be read (size, encoding, header); ``too_large`` for 413."""

    def __init__(self, reason: str, *, too_large: bool = False) -> None:
        self.reason = reason
        self.too_large = too_large
        super().__init__(f"import refused: {reason}")


def has_control_chars(text: str) -> bool:
    """True if ``text`` holds a control character (a name or label must not)."""
    return _CONTROL_CHARS.search(text) is not None


def check_label(label: str) -> str | None:
    """Why the label is not acceptable, or None."""
    if len(label) > MAX_LABEL_CHARS:
        return f"label longer than {MAX_LABEL_CHARS} characters"
    if has_control_chars(label):
        return "label contains control characters"
    return None


def bridge_username(bridge: str) -> str:
    """``zigbee2mqtt.<id>`` for a bridge id; a full username is taken as it is."""
    return bridge if "." in bridge else BRIDGE_USERNAME_PREFIX + bridge


def check_spec(
    spec: DeviceSpec,
    kinds: Collection[str] = DEFAULT_CATALOG,
    zigbee_models: Mapping[str, str] | None = None,
) -> str | None:
    """Why the device cannot be registered as given (before looking at the database), or None.

    ``zigbee_models``: the zigbee2mqtt models Carewatch can read, each with its kind
    (:data:`ZIGBEE_MODELS` from devices/zigbee2mqtt.toml); None checks the format only.
    """
    if not DEVICE_ID_RE.fullmatch(spec.id):
        return f"invalid device id: {DEVICE_ID_RULE}"
    if spec.id in RESERVED_DEVICE_IDS:
        return f"device id {spec.id!r} is reserved (it names a path of the API)"
    if spec.kind not in kinds:
        return f"unknown kind {spec.kind!r}: one of " + ", ".join(kinds)
    if not spec.site:
        return "no site"
    if (reason := check_label(spec.label)) is not None:
        return reason
    if spec.residence_id is not None and spec.residence is not None:
        return "give residence_id or residence (its label), not both"
    if spec.residence is not None and has_control_chars(spec.residence):
        return "residence contains control characters"
    if spec.source not in SOURCES:
        return f"unknown source {spec.source!r}: mqtt or zigbee2mqtt"
    zigbee_fields = (spec.zigbee_name, spec.zigbee_model, spec.bridge)
    if spec.source == "mqtt":
        if any(zigbee_fields):
            return "zigbee_name, zigbee_model and bridge are for source zigbee2mqtt only"
        return None
    name, model, bridge = zigbee_fields
    if not name or not model or not bridge:
        return "a zigbee2mqtt device needs zigbee_name, zigbee_model and bridge"
    if (problem := zigbee_name_problem(name)) is not None:
        return f"invalid zigbee_name: {problem}"
    if not ZIGBEE_MODEL_RE.fullmatch(model):
        return "invalid zigbee_model"
    if zigbee_models is not None:
        model_kind = zigbee_models.get(model)
        if model_kind is None:
            return f"zigbee_model {model!r} is not a model Carewatch can read: one of " + ", ".join(
                sorted(zigbee_models)
            )
        if model_kind != spec.kind:
            return f"zigbee_model {model!r} is a {model_kind}, not a {spec.kind}"
    if not BRIDGE_ID_RE.fullmatch(bridge.removeprefix(BRIDGE_USERNAME_PREFIX)):
        return "invalid bridge"
    return None


def _decode(data: bytes) -> str:
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte order mark.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ImportFileError(
            f"not UTF-8 text (byte {error.start}); save the file as CSV UTF-8"
        ) from None


def _header(values: list[str]) -> list[str]:
    """The column names of the header row; ImportFileError for unknown or missing ones."""
    header = [_COLUMN_ALIASES.get(n, n) for n in (v.strip().lower() for v in values)]
    unknown = [name for name in header if name and name not in COLUMNS]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if unknown:
        raise ImportFileError(
            f"unknown column(s) {', '.join(unknown)} in the header; the columns are "
            + ", ".join(COLUMNS)
        )
    if missing:
        raise ImportFileError(
            f"the header row lacks {', '.join(missing)}; the first row must name the "
            "columns: " + ", ".join(COLUMNS)
        )
    return header


def _row(header: list[str], values: list[str], line: int) -> DeviceSpec | Refusal:
    """One data row as a spec, or why it was refused while reading it."""
    cells = {name: value.strip() for name, value in zip(header, values, strict=False) if name}
    extra = values[len(header) :]
    device_id = cells.get("id", "")
    if any(value.strip() for value in extra):
        return Refusal(line, device_id, f"{len(values)} fields but the header has {len(header)}")
    zigbee = {key: cells.get(key) or None for key in ("zigbee_name", "zigbee_model", "bridge")}
    source = cells.get("source", "").lower() or ("zigbee2mqtt" if any(zigbee.values()) else "mqtt")
    if source not in SOURCES:
        return Refusal(line, device_id, f"unknown source {source!r}")
    return DeviceSpec(
        id=device_id,
        kind=cells.get("kind", ""),
        site=cells.get("site", ""),
        label=cells.get("label", ""),
        source="zigbee2mqtt" if source == "zigbee2mqtt" else "mqtt",
        residence=cells.get("residence") or None,
        line=line,
        zigbee_name=zigbee["zigbee_name"],
        zigbee_model=zigbee["zigbee_model"],
        bridge=zigbee["bridge"],
    )


def parse_csv(data: bytes) -> tuple[list[DeviceSpec], list[Refusal]]:
    """The rows of an import file as specs, and the rows refused while reading them.

    Header row required (case-insensitive names from :data:`COLUMNS`; ``id``, ``kind``, ``site``
    needed; ``residence``, the label of a residence at the row's site, is optional). Comma or
    semicolon separated (Swedish Excel writes semicolons), decided by the header. UTF-8 with or
    without BOM. Empty lines are skipped. ``source`` may be left empty: zigbee2mqtt if a zigbee
    field is given, else mqtt. ImportFileError for the whole file.
    """
    if len(data) > MAX_IMPORT_BYTES:
        raise ImportFileError(
            f"file larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MB", too_large=True
        )
    text = _decode(data)
    header_line = text.lstrip("\r\n").split("\n", 1)[0]
    delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    header: list[str] | None = None
    specs: list[DeviceSpec] = []
    refused: list[Refusal] = []
    rows = 0
    for values in reader:
        if not any(value.strip() for value in values):
            continue
        if header is None:
            header = _header(values)
            continue
        rows += 1
        if rows > MAX_IMPORT_ROWS:
            raise ImportFileError(f"more than {MAX_IMPORT_ROWS} rows", too_large=True)
        row = _row(header, values, reader.line_num)
        if isinstance(row, Refusal):
            refused.append(row)
        else:
            specs.append(row)
    if header is None:
        raise ImportFileError("the file is empty; it needs a header row and one row per device")
    return specs, refused
