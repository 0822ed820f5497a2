"""Onboarding: devices registered with their broker identity, moved, decommissioned; bridges.

One implementation for the API (``api/routes/onboarding.py``), the page (``dashboards/onboarding``)
and the CLI (``carewatch device add|decommission|credentials|import``). The validation is pure
(:func:`check_spec`, :func:`parse_csv`); the SQL takes a psycopg ``AsyncConnection`` (the CLI runs
it with ``asyncio.run``) and every change commits in one transaction together with its
audit_log rows. Writing these rows is all it takes: the ``carewatch_broker_auth`` triggers make
``carewatch broker run`` render the broker's password and ACL files again, so a decommissioned
device or a rotated password is refused by the broker at once.

A device's broker identity: username = device id, a random password (``new_password``) shown
once, kept only as Mosquitto's ``$7$`` hash in ``devices.mqtt_password_hash``. A zigbee2mqtt
device has none: its bridge (a ``broker_accounts`` row ``zigbee2mqtt.<id>`` of the same
organisation) publishes for it.

Who acts is an :class:`Actor`: a user of one organisation, perhaps limited to some sites, or the
shell (``org_id`` None: every organisation). Anything outside the actor's scope does not exist
for them (NotFoundError), whatever it is; a device id is global, so a taken id is refused as
taken without saying by whom.

Bulk onboarding (:func:`create_devices`) validates row by row and creates the rows that pass
in one statement (``INSERT ... SELECT FROM unnest``); a bad row refuses only itself. Errors
(carewatch.errors): InvalidValueError (bad value), NotFoundError (device, site or bridge not in
scope), AlreadyExistsError (id taken), ConflictError (refused by the current state).
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, Literal

import psycopg
from psycopg.rows import dict_row

from carewatch.broker_passwords import hash_password, new_password
from carewatch.errors import (
    AdminError,
    AlreadyExistsError,
    ConflictError,
    InvalidValueError,
    NotFoundError,
)
from carewatch.settings import MqttEndpoint
from devices.catalog import DEFAULT_CATALOG
from devices.envelope import DEVICE_ID_RE
from devices.zigbee2mqtt import DEFAULT_MAPPING

__all__ = [
    "MAX_IMPORT_BYTES",
    "MAX_IMPORT_ROWS",
    "Actor",
    "Bridge",
    "CreatedDevice",
    "DeviceRecord",
    "DeviceSpec",
    "ImportFileError",
    "ImportReport",
    "MqttCredentials",
    "Refusal",
    "RefusalCode",
    "check_spec",
    "create_bridge",
    "create_devices",
    "credentials_csv",
    "decommission_device",
    "delete_bridge",
    "device_visible",
    "list_bridges",
    "parse_csv",
    "rotate_bridge_credentials",
    "rotate_device_credentials",
    "update_device",
]

Connection = psycopg.AsyncConnection[Any]
Source = Literal["mqtt", "zigbee2mqtt"]
SOURCES: Final = ("mqtt", "zigbee2mqtt")

# An import file: 10,000 rows is ten times the largest delivery we have heard of, and at about
# 60 bytes a row far below 2 MB; together they bound the work one request can cause.
MAX_IMPORT_BYTES: Final = 2 * 1024 * 1024
MAX_IMPORT_ROWS: Final = 10_000
MAX_LABEL_CHARS: Final = 200
BRIDGE_PREFIX: Final = "zigbee2mqtt."
# The CHECK constraints of migration 0004, checked first so that a row gets a sentence.
ZIGBEE_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
BRIDGE_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# A zigbee2mqtt model id as its device definitions spell them ("SNZB-04", "TS0601_thermostat",
# "E1743"): printable ASCII without spaces, short.
ZIGBEE_MODEL_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+/()-]{0,63}")
# The models the gateway can read (devices/zigbee2mqtt.toml), each with the kind it maps to: a
# device of another model would only ever be dead-lettered, so it is refused at onboarding.
ZIGBEE_MODELS: Final[Mapping[str, str]] = MappingProxyType(
    {model: mapping.kind for model, mapping in DEFAULT_MAPPING.models.items()}
)
_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]")
REQUIRED_COLUMNS: Final = ("id", "kind", "site")
COLUMNS: Final = ("id", "kind", "site", "label", "source", "zigbee_name", "zigbee_model", "bridge")
_COLUMN_ALIASES: Final = {"site_id": "site", "device_id": "id"}


# --- values ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: their organisation (None: the shell, every organisation) and sites (None: all)."""

    username: str
    org_id: str | None = None
    site_ids: frozenset[str] | None = None
    user_id: int | None = None
    client: str | None = None

    def scope(self) -> dict[str, Any]:
        """The parameters of :data:`_SCOPE`."""
        return {
            "org_id": self.org_id,
            "site_ids": None if self.site_ids is None else sorted(self.site_ids),
        }


# For statements that join sites as ``s``: the actor's organisation and sites.
_SCOPE: Final = (
    "(%(org_id)s::text IS NULL OR s.org_id = %(org_id)s::text)"
    " AND (%(site_ids)s::text[] IS NULL OR s.id = ANY (%(site_ids)s::text[]))"
)


@dataclass(frozen=True, slots=True)
class MqttCredentials:
    """How one broker identity connects; the password exists only in this value, once."""

    username: str
    password: str
    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def connection_url(self) -> str:
        """Everything a device needs in one string, for an installer's QR code:
        ``mqtt[s]://username:password@host:port`` (both are URL-safe by construction)."""
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.username}:{self.password}@{self.host}:{self.port}"

    @classmethod
    def issued(cls, username: str, password: str, endpoint: MqttEndpoint) -> MqttCredentials:
        return cls(username, password, endpoint.host, endpoint.port, endpoint.tls)


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device to onboard, as the API, a CSV row or the CLI gives it; ``line`` in the file."""

    id: str
    kind: str
    site: str
    label: str = ""
    source: Source = "mqtt"
    zigbee_name: str | None = None
    zigbee_model: str | None = None
    bridge: str | None = None
    line: int = 0


class RefusalCode(StrEnum):
    """Why a row was refused, as a class: the API's status for a single device."""

    INVALID = "invalid"  # 422
    NOT_FOUND = "not_found"  # a site or bridge the actor does not have: 422 (it is the body's)
    TAKEN = "taken"  # 409


@dataclass(frozen=True, slots=True)
class Refusal:
    line: int
    id: str
    reason: str
    code: RefusalCode = RefusalCode.INVALID


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A device's registry row as onboarding shows it (no health: that is the fleet's)."""

    id: str
    kind: str
    site_id: str
    label: str
    status: str
    source: str
    zigbee_name: str | None
    zigbee_model: str | None
    bridge: str | None
    has_credentials: bool
    credentials_issued_at: datetime | None
    created_at: datetime
    decommissioned_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreatedDevice:
    line: int
    device: DeviceRecord
    credentials: MqttCredentials | None


@dataclass(frozen=True, slots=True)
class ImportReport:
    created: list[CreatedDevice] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Bridge:
    id: str
    username: str
    label: str
    created_at: datetime
    active_devices: int


class ImportFileError(AdminError):
    """The file as a whole cannot be read (size, encoding, header); ``too_large`` for 413."""

    def __init__(self, reason: str, *, too_large: bool = False) -> None:
        self.reason = reason
        self.too_large = too_large
        super().__init__(f"import refused: {reason}")


# --- pure validation ---------------------------------------------------------------------------


def check_label(label: str) -> str | None:
    """Why the label is not acceptable, or None."""
    if len(label) > MAX_LABEL_CHARS:
        return f"label longer than {MAX_LABEL_CHARS} characters"
    if _CONTROL_CHARS.search(label):
        return "label contains control characters"
    return None


def bridge_username(bridge: str) -> str:
    """``zigbee2mqtt.<id>`` for a bridge id; a full username is taken as it is."""
    return bridge if "." in bridge else BRIDGE_PREFIX + bridge


# Paths under /api/v1/devices/ that a device id would otherwise shadow (GET .../summary).
RESERVED_DEVICE_IDS: Final = frozenset({"summary", "import"})


def check_spec(
    spec: DeviceSpec,
    kinds: Collection[str] = DEFAULT_CATALOG,
    zigbee_models: Mapping[str, str] | None = None,
) -> str | None:
    """Why the device cannot be onboarded as given (before looking at the database), or None.

    ``zigbee_models``: the zigbee2mqtt models Carewatch can read, each with its kind
    (:data:`ZIGBEE_MODELS` from devices/zigbee2mqtt.toml); None checks the format only.
    """
    if not DEVICE_ID_RE.fullmatch(spec.id):
        return "invalid device id: 3-64 characters a-z 0-9 _ -, starting with a letter or digit"
    if spec.id in RESERVED_DEVICE_IDS:
        return f"device id {spec.id!r} is reserved (it names a path of the API)"
    if spec.kind not in kinds:
        return f"unknown kind {spec.kind!r}: one of " + ", ".join(kinds)
    if not spec.site:
        return "no site"
    if (reason := check_label(spec.label)) is not None:
        return reason
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
    if name == "bridge":
        return "zigbee_name 'bridge' is zigbee2mqtt's own topic (zigbee2mqtt/bridge/...)"
    if not ZIGBEE_NAME_RE.fullmatch(name):
        return "invalid zigbee_name: 1-64 characters A-Z a-z 0-9 _ . : - (a topic level)"
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
    if not BRIDGE_ID_RE.fullmatch(bridge.removeprefix(BRIDGE_PREFIX)):
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


def parse_csv(data: bytes) -> tuple[list[DeviceSpec], list[Refusal]]:
    """The rows of an import file as specs, and the rows refused while reading them.

    Header row required (case-insensitive names from :data:`COLUMNS`; ``id``, ``kind``, ``site``
    needed). Comma or semicolon separated (Swedish Excel writes semicolons), decided by the
    header. UTF-8 with or without BOM. Empty lines are skipped. ``source`` may be left empty:
    zigbee2mqtt if a zigbee field is given, else mqtt. ImportFileError for the whole file.
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
        line = reader.line_num
        if not any(value.strip() for value in values):
            continue
        if header is None:
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
            continue
        rows += 1
        if rows > MAX_IMPORT_ROWS:
            raise ImportFileError(f"more than {MAX_IMPORT_ROWS} rows", too_large=True)
        cells = {name: value.strip() for name, value in zip(header, values, strict=False) if name}
        extra = values[len(header) :]
        device_id = cells.get("id", "")
        if any(value.strip() for value in extra):
            reason = f"{len(values)} fields but the header has {len(header)}"
            refused.append(Refusal(line, device_id, reason))
            continue
        zigbee = {key: cells.get(key) or None for key in ("zigbee_name", "zigbee_model", "bridge")}
        source = cells.get("source", "").lower() or (
            "zigbee2mqtt" if any(zigbee.values()) else "mqtt"
        )
        if source not in SOURCES:
            refused.append(Refusal(line, device_id, f"unknown source {source!r}"))
            continue
        specs.append(
            DeviceSpec(
                id=device_id,
                kind=cells.get("kind", ""),
                site=cells.get("site", ""),
                label=cells.get("label", ""),
                source="zigbee2mqtt" if source == "zigbee2mqtt" else "mqtt",
                line=line,
                **zigbee,
            )
        )
    if header is None:
        raise ImportFileError("the file is empty; it needs a header row and one row per device")
    return specs, refused


def credentials_csv(created: Iterable[CreatedDevice]) -> str:
    """The credentials of newly created devices as CSV for installers (never stored)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["id", "kind", "site", "label", "username", "password", "url"])
    for item in created:
        if item.credentials is None:
            continue
        device, credentials = item.device, item.credentials
        writer.writerow(
            [
                device.id,
                device.kind,
                device.site_id,
                _csv_safe(device.label),
                credentials.username,
                credentials.password,
                credentials.url,
            ]
        )
    return out.getvalue()


def _csv_safe(value: str) -> str:
    # A cell starting with = + - @ is a formula to Excel (CSV injection): quote it as text.
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


def _hash_all(passwords: Sequence[str]) -> list[str]:
    return [hash_password(password) for password in passwords]


# --- devices -----------------------------------------------------------------------------------

_DEVICE_COLUMNS: Final = """
    d.id, d.kind, d.site_id, d.label, d.status, d.source, d.zigbee_name, d.zigbee_model,
    d.bridge, d.mqtt_password_hash IS NOT NULL AS has_credentials, d.credentials_issued_at,
    d.created_at, d.decommissioned_at
"""


def _record(row: Mapping[str, Any]) -> DeviceRecord:
    return DeviceRecord(**{name: row[name] for name in DeviceRecord.__slots__})


async def _audit_devices(
    cur: psycopg.AsyncCursor[Any],
    actor: Actor,
    action: str,
    device_ids: Sequence[str],
    note: str | None = None,
) -> None:
    """One audit_log row per device, under the device's organisation."""
    await cur.execute(
        "INSERT INTO audit_log (user_id, username, org_id, action, device_id, note, client)"
        " SELECT %(user_id)s, %(username)s, s.org_id, %(action)s, d.id, %(note)s, %(client)s"
        "   FROM devices d JOIN sites s ON s.id = d.site_id"
        "  WHERE d.id = ANY (%(ids)s::text[]) ORDER BY d.id",
        {
            "user_id": actor.user_id,
            "username": actor.username,
            "action": action,
            "note": note,
            "client": actor.client,
            "ids": list(device_ids),
        },
    )


async def create_devices(
    conn: Connection,
    actor: Actor,
    specs: Sequence[DeviceSpec],
    endpoint: MqttEndpoint,
    *,
    kinds: Collection[str] = DEFAULT_CATALOG,
    zigbee_models: Mapping[str, str] | None = None,
    refused: Sequence[Refusal] = (),
    note: str | None = None,
) -> ImportReport:
    """Onboard the devices that pass every check, in one transaction; the others are refused.

    Checks, row by row: the values (:func:`check_spec`), an id or zigbee_name twice in
    ``specs``, a site the actor does not have, an id taken (in any organisation), a zigbee_name
    an active device has, a bridge that is not a zigbee2mqtt bridge of the site's organisation.
    ``refused``: rows refused earlier (parse_csv), carried into the report in line order.
    """
    if zigbee_models is None:
        zigbee_models = ZIGBEE_MODELS
    refusals = list(refused)
    candidates: list[DeviceSpec] = []
    first_line: dict[str, int] = {}
    first_zigbee: dict[str, int] = {}
    for spec in specs:
        reason = check_spec(spec, kinds, zigbee_models)
        if reason is None and spec.id in first_line:
            reason = f"duplicate id: already on line {first_line[spec.id]}"
        if reason is None and spec.zigbee_name is not None and spec.zigbee_name in first_zigbee:
            reason = f"duplicate zigbee_name: already on line {first_zigbee[spec.zigbee_name]}"
        if reason is not None:
            refusals.append(Refusal(spec.line, spec.id, reason))
            continue
        first_line[spec.id] = spec.line
        if spec.zigbee_name is not None:
            first_zigbee[spec.zigbee_name] = spec.line
        if spec.bridge is not None:
            spec = replace(spec, bridge=bridge_username(spec.bridge))
        candidates.append(spec)

    created: list[CreatedDevice] = []
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        if candidates:
            candidates = await _refuse_by_database(cur, actor, candidates, refusals)
        if candidates:
            created = await _insert(cur, actor, candidates, endpoint, refusals, note)
    refusals.sort(key=lambda refusal: refusal.line)
    return ImportReport(created, refusals)


async def _refuse_by_database(
    cur: psycopg.AsyncCursor[dict[str, Any]],
    actor: Actor,
    candidates: list[DeviceSpec],
    refusals: list[Refusal],
) -> list[DeviceSpec]:
    """The candidates the database does not refuse; the refusals appended to ``refusals``."""
    await cur.execute(
        f"SELECT s.id, s.org_id FROM sites s WHERE s.id = ANY (%(wanted)s::text[]) AND {_SCOPE}",
        {**actor.scope(), "wanted": sorted({spec.site for spec in candidates})},
    )
    site_org = {row["id"]: row["org_id"] for row in await cur.fetchall()}
    await cur.execute(
        "SELECT id FROM devices WHERE id = ANY (%s::text[])", ([spec.id for spec in candidates],)
    )
    taken = {row["id"] for row in await cur.fetchall()}
    zigbee_names = [spec.zigbee_name for spec in candidates if spec.zigbee_name is not None]
    bridges = sorted({spec.bridge for spec in candidates if spec.bridge is not None})
    names_taken: set[str] = set()
    bridge_org: dict[str, str] = {}
    if zigbee_names:
        await cur.execute(
            "SELECT zigbee_name FROM devices"
            " WHERE zigbee_name = ANY (%s::text[]) AND status = 'active'",
            (zigbee_names,),
        )
        names_taken = {row["zigbee_name"] for row in await cur.fetchall()}
        await cur.execute(
            "SELECT username, org_id FROM broker_accounts"
            " WHERE username = ANY (%s::text[]) AND role = 'zigbee2mqtt_bridge'",
            (bridges,),
        )
        bridge_org = {row["username"]: row["org_id"] for row in await cur.fetchall()}
    passed: list[DeviceSpec] = []
    for spec in candidates:
        org = site_org.get(spec.site)
        if org is None:
            refusals.append(Refusal(spec.line, spec.id, "site not found", RefusalCode.NOT_FOUND))
        elif spec.id in taken:
            refusals.append(Refusal(spec.line, spec.id, "device id taken", RefusalCode.TAKEN))
        elif spec.zigbee_name is not None and spec.zigbee_name in names_taken:
            refusals.append(Refusal(spec.line, spec.id, "zigbee_name taken", RefusalCode.TAKEN))
        elif spec.bridge is not None and bridge_org.get(spec.bridge) != org:
            # Another organisation's bridge is not found either: nothing of it is visible.
            refusals.append(Refusal(spec.line, spec.id, "bridge not found", RefusalCode.NOT_FOUND))
        else:
            passed.append(spec)
    return passed


async def _insert(
    cur: psycopg.AsyncCursor[dict[str, Any]],
    actor: Actor,
    specs: list[DeviceSpec],
    endpoint: MqttEndpoint,
    refusals: list[Refusal],
    note: str | None,
) -> list[CreatedDevice]:
    passwords = {spec.id: new_password() for spec in specs if spec.source == "mqtt"}
    # ~0.1 ms each; off the event loop all the same (10,000 rows would take a second).
    hashes = dict(
        zip(passwords, await asyncio.to_thread(_hash_all, list(passwords.values())), strict=True)
    )
    await cur.execute(
        f"""
        INSERT INTO devices AS d (id, kind, site_id, label, source, zigbee_name, zigbee_model,
                                  bridge, mqtt_password_hash, credentials_issued_at)
        SELECT i.id, i.kind, i.site_id, i.label, i.source, i.zigbee_name, i.zigbee_model,
               i.bridge, i.hash, CASE WHEN i.hash IS NOT NULL THEN now() END
          FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                      %s::text[], %s::text[], %s::text[])
               AS i (id, kind, site_id, label, source, zigbee_name, zigbee_model, bridge, hash)
        -- A device or zigbee_name taken since we looked (a concurrent request) is skipped and
        -- reported as taken below, instead of failing the whole file.
        ON CONFLICT DO NOTHING
        RETURNING {_DEVICE_COLUMNS}
        """,
        (
            [spec.id for spec in specs],
            [spec.kind for spec in specs],
            [spec.site for spec in specs],
            [spec.label for spec in specs],
            [spec.source for spec in specs],
            [spec.zigbee_name for spec in specs],
            [spec.zigbee_model for spec in specs],
            [spec.bridge for spec in specs],
            [hashes.get(spec.id) for spec in specs],
        ),
    )
    records = {row["id"]: _record(row) for row in await cur.fetchall()}
    created: list[CreatedDevice] = []
    for spec in specs:
        record = records.get(spec.id)
        if record is None:
            refusals.append(Refusal(spec.line, spec.id, "device id taken", RefusalCode.TAKEN))
            continue
        password = passwords.get(spec.id)
        credentials = (
            None if password is None else MqttCredentials.issued(spec.id, password, endpoint)
        )
        created.append(CreatedDevice(spec.line, record, credentials))
    if records:
        await _audit_devices(cur, actor, "device.create", list(records), note)
    return created


async def _locked_device(
    cur: psycopg.AsyncCursor[dict[str, Any]], actor: Actor, device_id: str
) -> dict[str, Any]:
    """The device row, locked, if the actor has it; NotFoundError otherwise."""
    await cur.execute(
        f"SELECT {_DEVICE_COLUMNS}, s.org_id FROM devices d JOIN sites s ON s.id = d.site_id"
        f" WHERE d.id = %(id)s AND {_SCOPE} FOR UPDATE OF d",
        {**actor.scope(), "id": device_id},
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("device", device_id)
    return row


async def device_visible(conn: Connection, actor: Actor, device_id: str) -> bool:
    """True if the device is in the actor's scope (decides 403 against 404)."""
    cursor = await conn.execute(
        "SELECT 1 FROM devices d JOIN sites s ON s.id = d.site_id"
        f" WHERE d.id = %(id)s AND {_SCOPE}",
        {**actor.scope(), "id": device_id},
    )
    return await cursor.fetchone() is not None


async def update_device(
    conn: Connection,
    actor: Actor,
    device_id: str,
    *,
    label: str | None = None,
    site: str | None = None,
) -> DeviceRecord:
    """Change the label and/or move the device to another site of its organisation.

    NotFoundError("device") if the actor does not have it, NotFoundError("site") if the new
    site is not one of theirs in the device's organisation, ConflictError if decommissioned.
    """
    if label is not None and (reason := check_label(label)) is not None:
        raise InvalidValueError("label", label[:20], reason)
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = await _locked_device(cur, actor, device_id)
        if row["status"] != "active":
            raise ConflictError("device", device_id, "decommissioned devices cannot be changed")
        if site is not None and site != row["site_id"]:
            await cur.execute(
                f"SELECT 1 FROM sites s WHERE s.id = %(site)s AND s.org_id = %(device_org)s"
                f" AND {_SCOPE}",
                {**actor.scope(), "site": site, "device_org": row["org_id"]},
            )
            if await cur.fetchone() is None:
                raise NotFoundError("site", site)
        await cur.execute(
            f"UPDATE devices d SET label = coalesce(%s, d.label), site_id = coalesce(%s, d.site_id)"
            f" WHERE d.id = %s RETURNING {_DEVICE_COLUMNS}",
            (label, site, device_id),
        )
        updated = await cur.fetchone()
        assert updated is not None
        changes = []
        if label is not None and label != row["label"]:
            changes.append(f"label {row['label']!r} -> {label!r}")
        if site is not None and site != row["site_id"]:
            changes.append(f"site {row['site_id']} -> {site}")
        if changes:
            await _audit_devices(cur, actor, "device.update", [device_id], "; ".join(changes))
        return _record(updated)


@dataclass(frozen=True, slots=True)
class Decommissioned:
    device: DeviceRecord
    resolved_alert_ids: list[int]


DECOMMISSION_NOTE: Final = "device decommissioned"


async def decommission_device(
    conn: Connection, actor: Actor, device_id: str, note: str | None = None
) -> Decommissioned:
    """Take the device out of service: its broker identity is revoked at once (hash NULL, status
    decommissioned; the broker drops it from its files), its events and alerts stay, its
    unresolved alerts are resolved through the board's path (alert_changes + NOTIFY).

    NotFoundError if the actor does not have it; ConflictError if already decommissioned.
    """
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = await _locked_device(cur, actor, device_id)
        if row["status"] != "active":
            raise ConflictError("device", device_id, "already decommissioned")
        await cur.execute(
            "UPDATE devices d SET status = 'decommissioned', decommissioned_at = now(),"
            f" mqtt_password_hash = NULL WHERE d.id = %s RETURNING {_DEVICE_COLUMNS}",
            (device_id,),
        )
        updated = await cur.fetchone()
        assert updated is not None
        await _audit_devices(cur, actor, "device.decommission", [device_id], note)
        await cur.execute(
            "UPDATE alerts SET state = 'resolved', resolved_at = now(), resolved_by = %s,"
            " updated_at = now() WHERE device_id = %s AND state <> 'resolved' RETURNING id",
            (actor.username, device_id),
        )
        alert_ids = sorted(row["id"] for row in await cur.fetchall())
        if alert_ids:
            await cur.execute(
                "INSERT INTO alert_changes (alert_id, change)"
                " SELECT a, 'alert.resolved' FROM unnest(%s::bigint[]) a ORDER BY a RETURNING id",
                (alert_ids,),
            )
            change_ids = [str(row["id"]) for row in await cur.fetchall()]
            # Delivered when (and only if) this transaction commits: the board drops them.
            await cur.execute(
                "SELECT pg_notify('carewatch_alerts', c) FROM unnest(%s::text[]) c", (change_ids,)
            )
            await cur.execute(
                "INSERT INTO audit_log (user_id, username, org_id, action, alert_id, device_id,"
                " note, client)"
                " SELECT %(user_id)s, %(username)s, %(org_id)s, 'alert.resolve', a, %(device)s,"
                " %(note)s, %(client)s FROM unnest(%(ids)s::bigint[]) a",
                {
                    "user_id": actor.user_id,
                    "username": actor.username,
                    "org_id": row["org_id"],
                    "device": device_id,
                    "note": DECOMMISSION_NOTE,
                    "client": actor.client,
                    "ids": alert_ids,
                },
            )
        return Decommissioned(_record(updated), alert_ids)


async def rotate_device_credentials(
    conn: Connection, actor: Actor, device_id: str, endpoint: MqttEndpoint
) -> tuple[DeviceRecord, MqttCredentials]:
    """A new password for the device (the old one stops working at once); shown once.

    Also issues the first password of a device onboarded before broker credentials existed.
    ConflictError for a decommissioned device or one behind a zigbee2mqtt bridge.
    """
    password = new_password()
    password_hash = await asyncio.to_thread(hash_password, password)
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = await _locked_device(cur, actor, device_id)
        if row["status"] != "active":
            raise ConflictError("device", device_id, "decommissioned devices have no credentials")
        if row["source"] != "mqtt":
            raise ConflictError(
                "device", device_id, "a zigbee2mqtt device connects through its bridge"
            )
        await cur.execute(
            "UPDATE devices d SET mqtt_password_hash = %s, credentials_issued_at = now()"
            f" WHERE d.id = %s RETURNING {_DEVICE_COLUMNS}",
            (password_hash, device_id),
        )
        updated = await cur.fetchone()
        assert updated is not None
        await _audit_devices(cur, actor, "device.credentials", [device_id])
    return _record(updated), MqttCredentials.issued(device_id, password, endpoint)


# --- zigbee2mqtt bridges -------------------------------------------------------------------------


def _check_bridge_id(bridge_id: str) -> None:
    if not BRIDGE_ID_RE.fullmatch(bridge_id):
        raise InvalidValueError(
            "bridge id", bridge_id, "1-63 characters a-z 0-9 _ -, starting with a letter or digit"
        )


def _require_org(actor: Actor) -> str:
    if actor.org_id is None:
        raise InvalidValueError("organisation", "", "a bridge belongs to one organisation")
    return actor.org_id


async def _audit_org(
    cur: psycopg.AsyncCursor[Any], actor: Actor, action: str, note: str | None
) -> None:
    await cur.execute(
        "INSERT INTO audit_log (user_id, username, org_id, action, note, client)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (actor.user_id, actor.username, actor.org_id, action, note, actor.client),
    )


_BRIDGE_SELECT: Final = """
    SELECT substr(b.username, length('zigbee2mqtt.') + 1) AS id, b.username, b.label,
           b.created_at,
           (SELECT count(*) FROM devices d
             WHERE d.bridge = b.username AND d.status = 'active')::int AS active_devices
      FROM broker_accounts b
     WHERE b.role = 'zigbee2mqtt_bridge' AND b.org_id = %(org_id)s
"""


async def list_bridges(conn: Connection, actor: Actor) -> list[Bridge]:
    """The zigbee2mqtt bridges of the actor's organisation."""
    org_id = _require_org(actor)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"{_BRIDGE_SELECT} ORDER BY b.username", {"org_id": org_id})
        return [Bridge(**row) for row in await cur.fetchall()]


async def create_bridge(
    conn: Connection, actor: Actor, bridge_id: str, label: str, endpoint: MqttEndpoint
) -> tuple[Bridge, MqttCredentials]:
    """A zigbee2mqtt bridge account ``zigbee2mqtt.<bridge_id>`` of the actor's organisation."""
    org_id = _require_org(actor)
    _check_bridge_id(bridge_id)
    if (reason := check_label(label)) is not None:
        raise InvalidValueError("label", label[:20], reason)
    username = BRIDGE_PREFIX + bridge_id
    password = new_password()
    password_hash = await asyncio.to_thread(hash_password, password)
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "INSERT INTO broker_accounts (username, role, org_id, label, password_hash)"
            " VALUES (%s, 'zigbee2mqtt_bridge', %s, %s, %s) ON CONFLICT DO NOTHING"
            " RETURNING created_at",
            (username, org_id, label, password_hash),
        )
        row = await cur.fetchone()
        if row is None:
            raise AlreadyExistsError("bridge", bridge_id)
        await _audit_org(cur, actor, "bridge.create", username)
    bridge = Bridge(bridge_id, username, label, row["created_at"], 0)
    return bridge, MqttCredentials.issued(username, password, endpoint)


async def delete_bridge(conn: Connection, actor: Actor, bridge_id: str) -> None:
    """Delete the bridge account (the broker refuses it at once).

    ConflictError while any device names it: active ones would go silent, and decommissioned
    ones keep it in their history (rotate its credentials to lock it out instead).
    """
    org_id = _require_org(actor)
    username = BRIDGE_PREFIX + bridge_id
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"{_BRIDGE_SELECT} AND b.username = %(username)s FOR UPDATE OF b",
            {"org_id": org_id, "username": username},
        )
        row = await cur.fetchone()
        if row is None:
            raise NotFoundError("bridge", bridge_id)
        if row["active_devices"]:
            raise ConflictError(
                "bridge", bridge_id, f"{row['active_devices']} active device(s) use it"
            )
        await cur.execute("SELECT 1 FROM devices WHERE bridge = %s LIMIT 1", (username,))
        if await cur.fetchone() is not None:
            raise ConflictError(
                "bridge",
                bridge_id,
                "decommissioned devices keep it in their history; rotate its credentials instead",
            )
        await cur.execute("DELETE FROM broker_accounts WHERE username = %s", (username,))
        await _audit_org(cur, actor, "bridge.delete", username)


async def rotate_bridge_credentials(
    conn: Connection, actor: Actor, bridge_id: str, endpoint: MqttEndpoint
) -> tuple[Bridge, MqttCredentials]:
    """A new password for the bridge; the old one stops working at once."""
    org_id = _require_org(actor)
    username = BRIDGE_PREFIX + bridge_id
    password = new_password()
    password_hash = await asyncio.to_thread(hash_password, password)
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"{_BRIDGE_SELECT} AND b.username = %(username)s FOR UPDATE OF b",
            {"org_id": org_id, "username": username},
        )
        row = await cur.fetchone()
        if row is None:
            raise NotFoundError("bridge", bridge_id)
        await cur.execute(
            "UPDATE broker_accounts SET password_hash = %s WHERE username = %s",
            (password_hash, username),
        )
        await _audit_org(cur, actor, "bridge.credentials", username)
    return Bridge(**row), MqttCredentials.issued(username, password, endpoint)
