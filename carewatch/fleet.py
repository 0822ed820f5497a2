"""The fleet's one write path: devices registered with their broker identity, moved,
decommissioned; zigbee2mqtt bridges.

One implementation for the API (``api/routes/onboarding.py``), the onboarding page, the shell
(``carewatch device add|decommission|credentials|import``) and seeding (``carewatch simulate
--register``, the demo, the benchmarks, the tests, through :func:`seed_devices`): every device
row is inserted by the one statement :data:`_INSERT_DEVICES`, after the checks of
:func:`devices.device_specs.check_spec`. The SQL takes a psycopg ``AsyncConnection`` (the CLI
runs it with ``asyncio.run``), except seeding's, which runs in its caller's synchronous
transaction; every change commits in one transaction together with its audit_log entries
(:mod:`carewatch.db.audit`) and, for alerts a decommissioning resolves, their changes
(:mod:`carewatch.db.alert_feed`). Writing these rows is all it takes: the
``carewatch_broker_auth`` triggers make ``carewatch broker run`` render the broker's password
and ACL files again, so a decommissioned device or a rotated password is refused by the broker
at once. This module's statements are the constants below.

A device's broker identity: username = device id, a random password (``new_password``) shown
once, kept only as Mosquitto's ``$7$`` hash in ``devices.mqtt_password_hash``. A zigbee2mqtt
device has none: its bridge (a ``broker_accounts`` row ``zigbee2mqtt.<id>`` of the same
organisation) publishes for it. Seeded devices get none either. The credentials shown come
with what the caller passes as :class:`~carewatch.device_broker.DeviceBroker`: the broker's
address and the fingerprint of the CA certificate to trust for it.

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
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

import psycopg
from psycopg.rows import dict_row

from carewatch.broker_passwords import hash_password, new_password
from carewatch.db.alert_feed import record_changes
from carewatch.db.audit import AuditEntry, Auditor, write_audit
from carewatch.device_broker import DeviceBroker
from carewatch.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidValueError,
    NotFoundError,
)
from devices.catalog import DEFAULT_CATALOG
from devices.device_specs import (
    ZIGBEE_MODELS,
    DeviceSpec,
    Refusal,
    RefusalCode,
    bridge_username,
    check_label,
    check_spec,
)
from devices.ids import BRIDGE_ID_RE, BRIDGE_ID_RULE, BRIDGE_USERNAME_PREFIX
from devices.zigbee2mqtt_bridges import (
    DEFAULT_BASE_TOPIC,
    announcement_topic,
    base_topic_conflict,
    check_base_topic,
)

__all__ = [
    "BASE_TOPIC_LEFT_BY_OTHERS",
    "CREDENTIALS_CSV_COLUMNS",
    "DECOMMISSION_NOTE",
    "Actor",
    "Bridge",
    "CreatedDevice",
    "Decommissioned",
    "DeviceRecord",
    "ImportReport",
    "MqttCredentials",
    "base_topic_left_detail",
    "change_bridge_base_topic",
    "create_bridge",
    "create_devices",
    "credentials_csv",
    "decommission_device",
    "delete_bridge",
    "device_visible",
    "list_bridges",
    "rotate_bridge_credentials",
    "rotate_device_credentials",
    "seed_devices",
    "update_device",
]

Connection = psycopg.AsyncConnection[Any]
Cursor = psycopg.AsyncCursor[dict[str, Any]]

DECOMMISSION_NOTE: Final = "device decommissioned"
# The credentials CSV: v1's columns, then the broker's CA (+#10); readers go by the header.
CREDENTIALS_CSV_COLUMNS: Final = (
    "id", "kind", "site", "label", "username", "password", "url", "ca_sha256", "ca_url",
)  # fmt: skip

# --- the statements ------------------------------------------------------------------------------

# A device as this module returns it (DeviceRecord), from ``devices AS d``.
_DEVICE_COLUMNS: Final = """
    d.id, d.kind, d.site_id, d.label, d.status, d.source, d.zigbee_name, d.zigbee_model,
    d.bridge, d.mqtt_password_hash IS NOT NULL AS has_credentials, d.credentials_issued_at,
    d.created_at, d.decommissioned_at, d.residence_id,
    (SELECT r.label FROM residences r WHERE r.id = d.residence_id) AS residence_label
"""

# For statements that join sites as ``s``: the actor's organisation and sites (Actor.scope).
_SCOPE: Final = (
    "(%(org_id)s::text IS NULL OR s.org_id = %(org_id)s::text)"
    " AND (%(site_ids)s::text[] IS NULL OR s.id = ANY (%(site_ids)s::text[]))"
)

# The one device insert. A device or zigbee_name taken since the caller looked (a concurrent
# request, a seeded device already there) is skipped, not an error: the caller tells by the
# rows returned.
_INSERT_DEVICES: Final = f"""
INSERT INTO devices AS d (id, kind, site_id, label, source, zigbee_name, zigbee_model,
                          bridge, mqtt_password_hash, credentials_issued_at, residence_id)
SELECT i.id, i.kind, i.site_id, i.label, i.source, i.zigbee_name, i.zigbee_model,
       i.bridge, i.hash, CASE WHEN i.hash IS NOT NULL THEN now() END, i.residence_id
  FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
              %s::text[], %s::text[], %s::text[], %s::bigint[])
       AS i (id, kind, site_id, label, source, zigbee_name, zigbee_model, bridge, hash,
             residence_id)
ON CONFLICT DO NOTHING
RETURNING {_DEVICE_COLUMNS}
"""  # noqa: S608 - constant fragments only

_SITES_IN_SCOPE: Final = f"""
SELECT s.id, s.org_id FROM sites s WHERE s.id = ANY (%(wanted)s::text[]) AND {_SCOPE}
"""  # noqa: S608 - constant fragments only
_SITES_FOUND: Final = "SELECT id FROM sites WHERE id = ANY (%s::text[])"
_IDS_TAKEN: Final = "SELECT id FROM devices WHERE id = ANY (%s::text[])"
_ZIGBEE_NAMES_TAKEN: Final = (
    "SELECT zigbee_name FROM devices WHERE zigbee_name = ANY (%s::text[]) AND status = 'active'"
)
# The residences the specs name, by id or by label, each with its site: a spec's residence must
# be at the spec's site (which is already known to be in the actor's scope).
_RESIDENCES_BY_ID: Final = "SELECT id, site_id, label FROM residences WHERE id = ANY (%s::bigint[])"
_RESIDENCES_BY_LABEL: Final = """
SELECT r.id, r.site_id, r.label FROM residences r
  JOIN unnest(%s::text[], %s::text[]) AS w (site_id, label)
    ON r.site_id = w.site_id AND r.label = w.label
"""
_BRIDGE_ORGS: Final = (
    "SELECT username, org_id FROM broker_accounts"
    " WHERE username = ANY (%s::text[]) AND role = 'zigbee2mqtt_bridge'"
)

_LOCK_DEVICE: Final = f"""
SELECT {_DEVICE_COLUMNS}, s.org_id FROM devices d JOIN sites s ON s.id = d.site_id
 WHERE d.id = %(id)s AND {_SCOPE} FOR UPDATE OF d
"""  # noqa: S608 - constant fragments only
_DEVICE_VISIBLE: Final = f"""
SELECT 1 FROM devices d JOIN sites s ON s.id = d.site_id WHERE d.id = %(id)s AND {_SCOPE}
"""  # noqa: S608 - constant fragments only
_SITE_OF_ORG: Final = f"""
SELECT 1 FROM sites s WHERE s.id = %(site)s AND s.org_id = %(device_org)s AND {_SCOPE}
"""  # noqa: S608 - constant fragments only
_UPDATE_DEVICE: Final = f"""
UPDATE devices d SET label = coalesce(%(label)s, d.label), site_id = coalesce(%(site)s, d.site_id),
       -- A residence is in one site: a device moved to another site leaves it, unless the
       -- change names its new residence (checked to be at the new site).
       residence_id = CASE WHEN %(set_residence)s THEN %(residence)s::bigint
                           WHEN coalesce(%(site)s, d.site_id) = d.site_id THEN d.residence_id END
 WHERE d.id = %(device)s RETURNING {_DEVICE_COLUMNS}
"""  # noqa: S608 - constant fragments only
_DECOMMISSION_DEVICE: Final = f"""
UPDATE devices d SET status = 'decommissioned', decommissioned_at = now(), mqtt_password_hash = NULL
 WHERE d.id = %s RETURNING {_DEVICE_COLUMNS}
"""  # noqa: S608 - constant fragments only
_RESOLVE_DEVICE_ALERTS: Final = (
    "UPDATE alerts SET state = 'resolved', resolved_at = now(), resolved_by = %s,"
    " updated_at = now() WHERE device_id = %s AND state <> 'resolved' RETURNING id"
)
_SET_DEVICE_PASSWORD: Final = f"""
UPDATE devices d SET mqtt_password_hash = %s, credentials_issued_at = now()
 WHERE d.id = %s RETURNING {_DEVICE_COLUMNS}
"""  # noqa: S608 - constant fragments only

# The bridges of one organisation (%(org_id)s), as Bridge.
_BRIDGES: Final = """
    SELECT substr(b.username, length('zigbee2mqtt.') + 1) AS id, b.username, b.label,
           b.created_at,
           (SELECT count(*) FROM devices d
             WHERE d.bridge = b.username AND d.status = 'active')::int AS active_devices,
           b.base_topic
      FROM broker_accounts b
     WHERE b.role = 'zigbee2mqtt_bridge' AND b.org_id = %(org_id)s
"""
_LIST_BRIDGES: Final = f"{_BRIDGES} ORDER BY b.username"
_LOCK_BRIDGE: Final = f"{_BRIDGES} AND b.username = %(username)s FOR UPDATE OF b"
_INSERT_BRIDGE: Final = (
    "INSERT INTO broker_accounts (username, role, org_id, label, password_hash, base_topic)"
    " VALUES (%s, 'zigbee2mqtt_bridge', %s, %s, %s, %s) ON CONFLICT DO NOTHING"
    " RETURNING created_at"
)
# Base topics are checked against every other bridge's (devices.zigbee2mqtt_bridges): one
# bridge creation or base topic change at a time, so two cannot take overlapping ones together.
_LOCK_BASE_TOPICS: Final = "SELECT pg_advisory_xact_lock(hashtext('carewatch.bridge_base_topics'))"
_OTHER_BASE_TOPICS: Final = (
    "SELECT DISTINCT base_topic FROM broker_accounts"
    " WHERE role = 'zigbee2mqtt_bridge' AND username <> %s"
)
# A base topic a bridge of another organisation left (migration 0017 records it on the move or
# deletion): its retained device list may still be in the broker, and the gateway would store
# it as the new bridge's announcement. Shared with broker.accounts (the shell's account set).
BASE_TOPIC_LEFT_BY_OTHERS: Final = (
    "SELECT 1 FROM bridge_left_base_topics WHERE base_topic = %s AND org_id IS DISTINCT FROM %s"
)
_BASE_TOPIC_TAKEN: Final = (
    "SELECT 1 FROM broker_accounts"
    " WHERE role = 'zigbee2mqtt_bridge' AND base_topic = %s AND username <> %s"
)
# The broker_accounts trigger (0004) has the broker's files re-rendered, as for a creation.
_SET_BRIDGE_BASE_TOPIC: Final = "UPDATE broker_accounts SET base_topic = %s WHERE username = %s"
# What the bridge announced came from its old base topic: the list shown is the new one's.
_FORGET_ANNOUNCED: Final = "DELETE FROM bridge_announcements WHERE bridge = %s"
_BRIDGE_NAMED: Final = "SELECT 1 FROM devices WHERE bridge = %s LIMIT 1"
_DELETE_BRIDGE: Final = "DELETE FROM broker_accounts WHERE username = %s"
# "PASSWORD" here names a column, not a secret.
_SET_BRIDGE_PASSWORD: Final = "UPDATE broker_accounts SET password_hash = %s WHERE username = %s"  # noqa: S105


# Maintenance windows (+#11), their columns shared with api.device_queries. A window covers
# [starts_at, ended_at or ends_at); one ended before it began covers nothing (greatest() makes
# its range empty, and an empty range overlaps none).
MAINTENANCE_COLUMNS: Final = """
    m.id, m.device_id, m.starts_at, m.ends_at, m.ended_at, m.note, m.created_by, m.created_at,
    CASE WHEN coalesce(m.ended_at, m.ends_at) <= now() THEN 'over'
         WHEN m.starts_at > now() THEN 'upcoming' ELSE 'current' END AS state
"""
_MAINTENANCE_OVERLAPPING: Final = """
SELECT m.id FROM device_maintenance m
 WHERE m.device_id = %(device)s
   AND tstzrange(m.starts_at, greatest(m.starts_at, coalesce(m.ended_at, m.ends_at)))
       && tstzrange(%(starts_at)s::timestamptz, %(ends_at)s::timestamptz)
 ORDER BY m.starts_at LIMIT 1
"""
_INSERT_MAINTENANCE: Final = f"""
INSERT INTO device_maintenance AS m (device_id, starts_at, ends_at, note, created_by)
VALUES (%(device)s, %(starts_at)s, %(ends_at)s, %(note)s, %(created_by)s)
RETURNING {MAINTENANCE_COLUMNS}
"""  # noqa: S608 - constant fragments only
_LOCK_MAINTENANCE: Final = (
    "SELECT coalesce(ended_at, ends_at) <= now() AS over FROM device_maintenance"
    " WHERE id = %s AND device_id = %s FOR UPDATE"
)
_END_MAINTENANCE: Final = f"""
UPDATE device_maintenance m SET ended_at = now() WHERE m.id = %s RETURNING {MAINTENANCE_COLUMNS}
"""  # noqa: S608 - constant fragments only

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

    @property
    def auditor(self) -> Auditor:
        """The actor as the audit log names them."""
        return Auditor(self.username, self.user_id, self.client)


@dataclass(frozen=True, slots=True)
class MqttCredentials:
    """How one broker identity connects; the password exists only in this value, once.

    ``ca_sha256``: the fingerprint of the CA certificate to trust for the broker (None: none
    of Carewatch's own); ``ca_url``: where the API serves it (None when not known here).
    """

    username: str
    password: str
    host: str
    port: int
    tls: bool
    ca_sha256: str | None = None
    ca_url: str | None = None

    @property
    def url(self) -> str:
        """The broker's address: ``mqtt[s]://host:port``."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def connection_url(self) -> str:
        """Everything a device needs in one string, for an installer's QR code.

        ``mqtt[s]://username:password@host:port`` (both are URL-safe by construction), and
        with a CA of Carewatch's own ``?ca_sha256=AB:CD:...&ca_url=https://.../ca.pem``.
        """
        scheme = "mqtts" if self.tls else "mqtt"
        address = f"{scheme}://{self.username}:{self.password}@{self.host}:{self.port}"
        # ':' and '/' are allowed in a query (RFC 3986) and stay as they are: every escape
        # makes the QR code denser.
        fields = [("ca_sha256", self.ca_sha256), ("ca_url", self.ca_url)]
        query = "&".join(f"{name}={quote(value, safe=':/')}" for name, value in fields if value)
        return f"{address}?{query}" if query else address

    @classmethod
    def issued(cls, username: str, password: str, broker: DeviceBroker) -> MqttCredentials:
        """The credentials just issued to ``username``, for the broker devices connect to."""
        ca_url = broker.ca_url if broker.ca is not None else None
        return cls(
            username, password, broker.host, broker.port, broker.tls, broker.ca_sha256, ca_url
        )


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A device's registry row as onboarding shows it (no health: that is the fleet view's)."""

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
    # The residence the device belongs to (+#11), None when none.
    residence_id: int | None = None
    residence_label: str | None = None


@dataclass(frozen=True, slots=True)
class CreatedDevice:
    """A device just created, from ``line`` of the request, with its credentials (shown once)."""

    line: int
    device: DeviceRecord
    credentials: MqttCredentials | None


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What a request to create devices did: the rows created and the rows refused."""

    created: list[CreatedDevice] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Bridge:
    """A zigbee2mqtt bridge account and how many active devices it publishes for."""

    id: str
    username: str
    label: str
    created_at: datetime
    active_devices: int
    # zigbee2mqtt's mqtt.base_topic for this bridge (+#13).
    base_topic: str = DEFAULT_BASE_TOPIC


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """A device's maintenance window ("in repair", +#11); ``state`` is upcoming, current or over
    (expired, or ended early)."""

    id: int
    device_id: str
    starts_at: datetime
    ends_at: datetime
    ended_at: datetime | None
    note: str
    created_by: str
    created_at: datetime
    state: str


@dataclass(frozen=True, slots=True)
class Decommissioned:
    """A decommissioned device and the alerts its decommissioning resolved."""

    device: DeviceRecord
    resolved_alert_ids: list[int]


def credentials_csv(created: Iterable[CreatedDevice]) -> str:
    """The credentials of newly created devices as CSV for installers (never stored); the CA
    columns are empty when the broker needs no CA of Carewatch's own."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CREDENTIALS_CSV_COLUMNS)
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
                credentials.ca_sha256 or "",
                credentials.ca_url or "",
            ]
        )
    return out.getvalue()


def _csv_safe(value: str) -> str:
    # A cell starting with = + - @ is a formula to Excel (CSV injection): quote it as text.
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


def _hash_all(passwords: Sequence[str]) -> list[str]:
    return [hash_password(password) for password in passwords]


def _record(row: Mapping[str, Any]) -> DeviceRecord:
    return DeviceRecord(**{name: row[name] for name in DeviceRecord.__slots__})


def _insert_params(
    specs: Sequence[DeviceSpec], hashes: Mapping[str, str]
) -> tuple[Sequence[str | int | None], ...]:
    """The arrays of :data:`_INSERT_DEVICES`: one element per spec; ``hashes`` by device id."""
    return (
        [spec.id for spec in specs],
        [spec.kind for spec in specs],
        [spec.site for spec in specs],
        [spec.label for spec in specs],
        [spec.source for spec in specs],
        [spec.zigbee_name for spec in specs],
        [spec.zigbee_model for spec in specs],
        [spec.bridge for spec in specs],
        [hashes.get(spec.id) for spec in specs],
        [spec.residence_id for spec in specs],
    )


async def _audit_devices(
    conn: Connection,
    actor: Actor,
    action: str,
    device_ids: Iterable[str],
    note: str | None = None,
) -> None:
    """One audit_log entry per device (in id order), under the device's organisation."""
    entries = [AuditEntry(action, device_id=device_id, note=note) for device_id in device_ids]
    await write_audit(conn, actor.auditor, sorted(entries, key=lambda e: e.device_id or ""))


# --- creating devices ----------------------------------------------------------------------------


def seed_devices(conn: psycopg.Connection[Any], specs: Sequence[DeviceSpec]) -> int:
    """Register devices for seeding, without broker credentials; how many were new.

    For the simulator, the demo, the benchmarks and the tests: devices that exist already are
    left as they are, whatever the spec says; no audit entries. Every spec is checked
    (:func:`check_spec`, the format of zigbee fields only) and every site looked up before
    anything is written: InvalidValueError or NotFoundError("site") refuse the whole batch.
    Runs in ``conn.transaction()`` (a savepoint inside the caller's transaction); one
    statement inserts them all, so thousands of devices cost one round trip.
    """
    for spec in specs:
        if (reason := check_spec(spec)) is not None:
            raise InvalidValueError("device", spec.id, reason)
    if not specs:
        return 0
    with conn.transaction():
        wanted_sites = sorted({spec.site for spec in specs})
        found = {row[0] for row in conn.execute(_SITES_FOUND, (wanted_sites,))}
        missing = [site for site in wanted_sites if site not in found]
        if missing:
            raise NotFoundError("site", missing[0])
        cursor = conn.execute(_INSERT_DEVICES, _insert_params(specs, {}))
    return cursor.rowcount


async def create_devices(
    conn: Connection,
    actor: Actor,
    specs: Sequence[DeviceSpec],
    broker: DeviceBroker,
    *,
    kinds: Collection[str] = DEFAULT_CATALOG,
    zigbee_models: Mapping[str, str] | None = None,
    refused: Sequence[Refusal] = (),
    note: str | None = None,
) -> ImportReport:
    """Onboard the devices that pass every check, in one transaction; the others are refused.

    Checks, row by row: the values (:func:`check_spec`), an id or zigbee_name twice in
    ``specs``, a site the actor does not have, an id taken (in any organisation), a zigbee_name
    an active device has, a bridge that is not a zigbee2mqtt bridge of the site's organisation,
    a residence (by id, or by label in an import file) that is not one of the device's site.
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
            created = await _insert(cur, actor, candidates, broker, refusals, note)
    refusals.sort(key=lambda refusal: refusal.line)
    return ImportReport(created, refusals)


async def _refuse_by_database(
    cur: Cursor, actor: Actor, candidates: list[DeviceSpec], refusals: list[Refusal]
) -> list[DeviceSpec]:
    """The candidates the database does not refuse; the refusals appended to ``refusals``."""
    await cur.execute(
        _SITES_IN_SCOPE, {**actor.scope(), "wanted": sorted({spec.site for spec in candidates})}
    )
    site_org = {row["id"]: row["org_id"] for row in await cur.fetchall()}
    await cur.execute(_IDS_TAKEN, ([spec.id for spec in candidates],))
    taken = {row["id"] for row in await cur.fetchall()}
    zigbee_names = [spec.zigbee_name for spec in candidates if spec.zigbee_name is not None]
    bridges = sorted({spec.bridge for spec in candidates if spec.bridge is not None})
    names_taken: set[str] = set()
    bridge_org: dict[str, str] = {}
    if zigbee_names:
        await cur.execute(_ZIGBEE_NAMES_TAKEN, (zigbee_names,))
        names_taken = {row["zigbee_name"] for row in await cur.fetchall()}
        await cur.execute(_BRIDGE_ORGS, (bridges,))
        bridge_org = {row["username"]: row["org_id"] for row in await cur.fetchall()}
    residences = await _residences_named(cur, candidates)
    passed: list[DeviceSpec] = []
    for spec in candidates:
        org = site_org.get(spec.site)
        residence_id = _residence_of(spec, residences)
        if org is None:
            refusals.append(Refusal(spec.line, spec.id, "site not found", RefusalCode.NOT_FOUND))
        elif spec.id in taken:
            refusals.append(Refusal(spec.line, spec.id, "device id taken", RefusalCode.TAKEN))
        elif spec.zigbee_name is not None and spec.zigbee_name in names_taken:
            refusals.append(Refusal(spec.line, spec.id, "zigbee_name taken", RefusalCode.TAKEN))
        elif spec.bridge is not None and bridge_org.get(spec.bridge) != org:
            # Another organisation's bridge is not found either: nothing of it is visible.
            refusals.append(Refusal(spec.line, spec.id, "bridge not found", RefusalCode.NOT_FOUND))
        elif isinstance(residence_id, str):
            refusals.append(Refusal(spec.line, spec.id, residence_id, RefusalCode.NOT_FOUND))
        else:
            passed.append(replace(spec, residence_id=residence_id, residence=None))
    return passed


# The residences the specs name: their ids by (site_id, label), and their sites by id.
_Residences = tuple[dict[tuple[str, str], int], dict[int, str]]


async def _residences_named(cur: Cursor, specs: Sequence[DeviceSpec]) -> _Residences:
    """The residences the specs name by label (at their sites) and by id (with their sites)."""
    by_label: dict[tuple[str, str], int] = {}
    site_of: dict[int, str] = {}
    wanted = sorted({(spec.site, spec.residence) for spec in specs if spec.residence is not None})
    if wanted:
        await cur.execute(
            _RESIDENCES_BY_LABEL, ([site for site, _ in wanted], [label for _, label in wanted])
        )
        by_label = {(row["site_id"], row["label"]): row["id"] for row in await cur.fetchall()}
    ids = sorted({spec.residence_id for spec in specs if spec.residence_id is not None})
    if ids:
        await cur.execute(_RESIDENCES_BY_ID, (ids,))
        site_of = {row["id"]: row["site_id"] for row in await cur.fetchall()}
    return by_label, site_of


def _residence_of(spec: DeviceSpec, residences: _Residences) -> int | str | None:
    """The id of the spec's residence (None: none), or why it is refused (a str).

    A residence of another site, or of another organisation, is not found either: only a
    residence of the device's own site exists for it.
    """
    by_label, site_of = residences
    if spec.residence is not None:
        found = by_label.get((spec.site, spec.residence))
        if found is None:
            return f"residence {spec.residence!r} not found at site {spec.site}"
        return found
    if spec.residence_id is not None and site_of.get(spec.residence_id) != spec.site:
        return "residence_id not found at the device's site"
    return spec.residence_id


async def _insert(
    cur: Cursor,
    actor: Actor,
    specs: list[DeviceSpec],
    broker: DeviceBroker,
    refusals: list[Refusal],
    note: str | None,
) -> list[CreatedDevice]:
    """Insert the checked specs with new passwords; a row taken meanwhile becomes a refusal."""
    passwords = {spec.id: new_password() for spec in specs if spec.source == "mqtt"}
    # ~0.1 ms each; off the event loop all the same (10,000 rows would take a second).
    hashes = dict(
        zip(passwords, await asyncio.to_thread(_hash_all, list(passwords.values())), strict=True)
    )
    await cur.execute(_INSERT_DEVICES, _insert_params(specs, hashes))
    records = {row["id"]: _record(row) for row in await cur.fetchall()}
    created: list[CreatedDevice] = []
    for spec in specs:
        record = records.get(spec.id)
        if record is None:
            refusals.append(Refusal(spec.line, spec.id, "device id taken", RefusalCode.TAKEN))
            continue
        password = passwords.get(spec.id)
        credentials = (
            None if password is None else MqttCredentials.issued(spec.id, password, broker)
        )
        created.append(CreatedDevice(spec.line, record, credentials))
    if records:
        await _audit_devices(cur.connection, actor, "device.create", records, note)
    return created


# --- changing devices ----------------------------------------------------------------------------


async def _locked_device(cur: Cursor, actor: Actor, device_id: str) -> dict[str, Any]:
    """The device row, locked, if the actor has it; NotFoundError otherwise."""
    await cur.execute(_LOCK_DEVICE, {**actor.scope(), "id": device_id})
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("device", device_id)
    return row


async def device_visible(conn: Connection, actor: Actor, device_id: str) -> bool:
    """True if the device is in the actor's scope (decides 403 against 404)."""
    cursor = await conn.execute(_DEVICE_VISIBLE, {**actor.scope(), "id": device_id})
    return await cursor.fetchone() is not None


async def update_device(
    conn: Connection,
    actor: Actor,
    device_id: str,
    *,
    label: str | None = None,
    site: str | None = None,
    set_residence: bool = False,
    residence_id: int | None = None,
) -> DeviceRecord:
    """Change the label, move the device to another site of its organisation, and/or (with
    ``set_residence``) put it in residence ``residence_id`` of its (new) site or, with None, in
    none. A move that names no residence leaves the old one (it is of the old site).

    NotFoundError("device") if the actor does not have it, NotFoundError("site") if the new
    site is not one of theirs in the device's organisation, NotFoundError("residence_id") if the
    residence is not one of the device's (new) site, ConflictError if decommissioned.
    """
    if label is not None and (reason := check_label(label)) is not None:
        raise InvalidValueError("label", label[:20], reason)
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = await _locked_device(cur, actor, device_id)
        if row["status"] != "active":
            raise ConflictError("device", device_id, "decommissioned devices cannot be changed")
        if site is not None and site != row["site_id"]:
            await cur.execute(
                _SITE_OF_ORG, {**actor.scope(), "site": site, "device_org": row["org_id"]}
            )
            if await cur.fetchone() is None:
                raise NotFoundError("site", site)
        if set_residence and residence_id is not None:
            await cur.execute(_RESIDENCES_BY_ID, ([residence_id],))
            residence = await cur.fetchone()
            if residence is None or residence["site_id"] != (site or row["site_id"]):
                raise NotFoundError("residence_id", str(residence_id))
        await cur.execute(
            _UPDATE_DEVICE,
            {
                "label": label,
                "site": site,
                "set_residence": set_residence,
                "residence": residence_id,
                "device": device_id,
            },
        )
        updated = await cur.fetchone()
        assert updated is not None
        changes = []
        if label is not None and label != row["label"]:
            changes.append(f"label {row['label']!r} -> {label!r}")
        if site is not None and site != row["site_id"]:
            changes.append(f"site {row['site_id']} -> {site}")
        if updated["residence_id"] != row["residence_id"]:
            before, after = row["residence_label"], updated["residence_label"]
            changes.append(f"residence {before!r} -> {after!r}")
        if changes:
            await _audit_devices(conn, actor, "device.update", [device_id], "; ".join(changes))
        return _record(updated)


async def decommission_device(
    conn: Connection, actor: Actor, device_id: str, note: str | None = None
) -> Decommissioned:
    """Take the device out of service.

    Its broker identity is revoked at once (hash NULL, status decommissioned; the broker drops
    it from its files), its events and alerts stay, its unresolved alerts are resolved through
    the board's path (:func:`carewatch.db.alert_feed.record_changes`, audited).
    NotFoundError if the actor does not have it; ConflictError if already decommissioned.
    """
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = await _locked_device(cur, actor, device_id)
        if row["status"] != "active":
            raise ConflictError("device", device_id, "already decommissioned")
        await cur.execute(_DECOMMISSION_DEVICE, (device_id,))
        updated = await cur.fetchone()
        assert updated is not None
        await _audit_devices(conn, actor, "device.decommission", [device_id], note)
        await cur.execute(_RESOLVE_DEVICE_ALERTS, (actor.username, device_id))
        alert_ids = sorted(row["id"] for row in await cur.fetchall())
        # Delivered when (and only if) this transaction commits: the board drops them.
        await record_changes(conn, [(alert_id, "alert.resolved") for alert_id in alert_ids])
        await write_audit(
            conn,
            actor.auditor,
            [
                AuditEntry(
                    "alert.resolve",
                    org_id=row["org_id"],
                    alert_id=alert_id,
                    device_id=device_id,
                    note=DECOMMISSION_NOTE,
                )
                for alert_id in alert_ids
            ],
        )
        return Decommissioned(_record(updated), alert_ids)


async def rotate_device_credentials(
    conn: Connection, actor: Actor, device_id: str, broker: DeviceBroker
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
        await cur.execute(_SET_DEVICE_PASSWORD, (password_hash, device_id))
        updated = await cur.fetchone()
        assert updated is not None
        await _audit_devices(conn, actor, "device.credentials", [device_id])
    return _record(updated), MqttCredentials.issued(device_id, password, broker)


# --- maintenance windows (+#11) ------------------------------------------------------------------


async def start_maintenance(
    conn: Connection,
    actor: Actor,
    device_id: str,
    *,
    starts_at: datetime,
    ends_at: datetime,
    note: str = "",
) -> MaintenanceWindow:
    """Put the device "in repair" from ``starts_at`` until ``ends_at`` (the caller checks the
    bounds; the table checks ends_at > starts_at), audited ``device.maintenance``.

    NotFoundError("device") if the actor does not have it; ConflictError if it is
    decommissioned or already has a window overlapping this one. The device's row lock
    serialises two requests for the same device, so two overlapping windows cannot both pass.
    """
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = await _locked_device(cur, actor, device_id)
        if row["status"] != "active":
            raise ConflictError("device", device_id, "decommissioned devices have no maintenance")
        window = {"device": device_id, "starts_at": starts_at, "ends_at": ends_at}
        await cur.execute(_MAINTENANCE_OVERLAPPING, window)
        if (overlapping := await cur.fetchone()) is not None:
            raise ConflictError(
                "device", device_id, f"overlaps maintenance window {overlapping['id']}"
            )
        await cur.execute(
            _INSERT_MAINTENANCE, {**window, "note": note, "created_by": actor.username}
        )
        inserted = await cur.fetchone()
        assert inserted is not None
        audit_note = f"window {inserted['id']}: {starts_at.isoformat()} - {ends_at.isoformat()}"
        await _audit_devices(
            conn,
            actor,
            "device.maintenance",
            [device_id],
            f"{audit_note}; {note}" if note else audit_note,
        )
        return MaintenanceWindow(**inserted)


async def end_maintenance(
    conn: Connection, actor: Actor, device_id: str, maintenance_id: int
) -> MaintenanceWindow:
    """End the device's window ``maintenance_id`` now (an upcoming one is thereby cancelled),
    audited ``device.maintenance_end``.

    NotFoundError("device") if the actor does not have the device, NotFoundError("maintenance")
    if the window is not one of the device's; ConflictError if it is already over.
    """
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await _locked_device(cur, actor, device_id)
        await cur.execute(_LOCK_MAINTENANCE, (maintenance_id, device_id))
        window = await cur.fetchone()
        if window is None:
            raise NotFoundError("maintenance", str(maintenance_id))
        if window["over"]:
            raise ConflictError("maintenance", str(maintenance_id), "maintenance window is over")
        await cur.execute(_END_MAINTENANCE, (maintenance_id,))
        ended = await cur.fetchone()
        assert ended is not None
        await _audit_devices(
            conn, actor, "device.maintenance_end", [device_id], f"window {maintenance_id}"
        )
        return MaintenanceWindow(**ended)


# --- zigbee2mqtt bridges -------------------------------------------------------------------------


def _check_bridge_id(bridge_id: str) -> None:
    if not BRIDGE_ID_RE.fullmatch(bridge_id):
        raise InvalidValueError("bridge id", bridge_id, BRIDGE_ID_RULE)


def _require_org(actor: Actor) -> str:
    if actor.org_id is None:
        raise InvalidValueError("organisation", "", "a bridge belongs to one organisation")
    return actor.org_id


async def _audit_org(conn: Connection, actor: Actor, action: str, note: str | None) -> None:
    """One audit_log entry under the actor's organisation."""
    await write_audit(conn, actor.auditor, [AuditEntry(action, org_id=actor.org_id, note=note)])


async def _locked_bridge(cur: Cursor, org_id: str, bridge_id: str) -> dict[str, Any]:
    """The bridge row of the organisation, locked; NotFoundError if it has no such bridge."""
    username = BRIDGE_USERNAME_PREFIX + bridge_id
    await cur.execute(_LOCK_BRIDGE, {"org_id": org_id, "username": username})
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError("bridge", bridge_id)
    return row


async def list_bridges(conn: Connection, actor: Actor) -> list[Bridge]:
    """The zigbee2mqtt bridges of the actor's organisation."""
    org_id = _require_org(actor)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LIST_BRIDGES, {"org_id": org_id})
        return [Bridge(**row) for row in await cur.fetchall()]


async def create_bridge(
    conn: Connection,
    actor: Actor,
    bridge_id: str,
    label: str,
    broker: DeviceBroker,
    *,
    base_topic: str = DEFAULT_BASE_TOPIC,
) -> tuple[Bridge, MqttCredentials]:
    """A zigbee2mqtt bridge account ``zigbee2mqtt.<bridge_id>`` of the actor's organisation,
    publishing under ``base_topic`` (+#13).

    A base topic other than the default is one bridge's own (ConflictError when another bridge,
    of any organisation, has it, without saying whose) and may not overlap another's
    (:func:`devices.zigbee2mqtt_bridges.base_topic_conflict`); ConflictError too for a base
    topic a bridge of another organisation left, until an operator clears its retained list
    (``carewatch broker clear-announcement``, migration 0017).
    """
    org_id = _require_org(actor)
    _check_bridge_id(bridge_id)
    if (reason := check_label(label)) is not None:
        raise InvalidValueError("label", label[:20], reason)
    if (reason := check_base_topic(base_topic)) is not None:
        raise InvalidValueError("base topic", base_topic[:40], reason)
    username = BRIDGE_USERNAME_PREFIX + bridge_id
    password = new_password()
    password_hash = await asyncio.to_thread(hash_password, password)
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LOCK_BASE_TOPICS)
        await _check_base_topic_free(cur, base_topic, username, org_id)
        await cur.execute(_INSERT_BRIDGE, (username, org_id, label, password_hash, base_topic))
        row = await cur.fetchone()
        if row is None:
            raise AlreadyExistsError("bridge", bridge_id)
        await _audit_org(conn, actor, "bridge.create", f"{username} on {base_topic}/")
    bridge = Bridge(bridge_id, username, label, row["created_at"], 0, base_topic)
    return bridge, MqttCredentials.issued(username, password, broker)


async def change_bridge_base_topic(
    conn: Connection, actor: Actor, bridge_id: str, base_topic: str
) -> Bridge:
    """Move the bridge to ``base_topic`` (zigbee2mqtt's ``mqtt.base_topic`` changed, +#13), with
    the checks of :func:`create_bridge`; the broker's grants and the gateways follow.

    Its devices keep their names; what it announced under the old base is forgotten until it
    announces under the new one. The same base topic again changes nothing.
    """
    org_id = _require_org(actor)
    if (reason := check_base_topic(base_topic)) is not None:
        raise InvalidValueError("base topic", base_topic[:40], reason)
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        # The base-topic lock before the row's: create_bridge holds it while it inserts.
        await cur.execute(_LOCK_BASE_TOPICS)
        row = await _locked_bridge(cur, org_id, bridge_id)
        if row["base_topic"] == base_topic:
            return Bridge(**row)
        await _check_base_topic_free(cur, base_topic, row["username"], org_id)
        await cur.execute(_SET_BRIDGE_BASE_TOPIC, (base_topic, row["username"]))
        await cur.execute(_FORGET_ANNOUNCED, (row["username"],))
        note = f"{row['username']} from {row['base_topic']}/ to {base_topic}/"
        await _audit_org(conn, actor, "bridge.base_topic", note)
    return Bridge(**{**row, "base_topic": base_topic})


def base_topic_left_detail(base_topic: str) -> str:
    """Why a base topic another organisation's bridge left is refused, and what clears it."""
    return (
        "a bridge of another organisation published there before, and its retained device list"
        f" may still be in the broker on {announcement_topic(base_topic)}; an operator clears it"
        f" with `carewatch broker clear-announcement {base_topic}` (or choose another base topic)"
    )


async def _check_base_topic_free(cur: Cursor, base_topic: str, username: str, org_id: str) -> None:
    """Under the base-topic lock: ConflictError when a bridge other than ``username`` has
    ``base_topic`` (the default aside), without saying whose, or one it overlaps, or when a
    bridge of an organisation other than ``org_id`` left it (:data:`BASE_TOPIC_LEFT_BY_OTHERS`)."""
    await cur.execute(BASE_TOPIC_LEFT_BY_OTHERS, (base_topic, org_id))
    if await cur.fetchone() is not None:
        raise ConflictError("base topic", base_topic, base_topic_left_detail(base_topic))
    if base_topic != DEFAULT_BASE_TOPIC:
        await cur.execute(_BASE_TOPIC_TAKEN, (base_topic, username))
        if await cur.fetchone() is not None:
            raise ConflictError("base topic", base_topic, "another bridge publishes there")
    await cur.execute(_OTHER_BASE_TOPICS, (username,))
    others = [row["base_topic"] for row in await cur.fetchall()]
    if (other := base_topic_conflict(base_topic, others)) is not None:
        raise ConflictError("base topic", base_topic, f"it overlaps {other!r}")


async def delete_bridge(conn: Connection, actor: Actor, bridge_id: str) -> None:
    """Delete the bridge account (the broker refuses it at once).

    ConflictError while any device names it: active ones would go silent, and decommissioned
    ones keep it in their history (rotate its credentials to lock it out instead).
    """
    org_id = _require_org(actor)
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = await _locked_bridge(cur, org_id, bridge_id)
        if row["active_devices"]:
            raise ConflictError(
                "bridge", bridge_id, f"{row['active_devices']} active device(s) use it"
            )
        await cur.execute(_BRIDGE_NAMED, (row["username"],))
        if await cur.fetchone() is not None:
            raise ConflictError(
                "bridge",
                bridge_id,
                "decommissioned devices keep it in their history; rotate its credentials instead",
            )
        await cur.execute(_DELETE_BRIDGE, (row["username"],))
        await _audit_org(conn, actor, "bridge.delete", row["username"])


async def rotate_bridge_credentials(
    conn: Connection, actor: Actor, bridge_id: str, broker: DeviceBroker
) -> tuple[Bridge, MqttCredentials]:
    """A new password for the bridge; the old one stops working at once."""
    org_id = _require_org(actor)
    password = new_password()
    password_hash = await asyncio.to_thread(hash_password, password)
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = await _locked_bridge(cur, org_id, bridge_id)
        await cur.execute(_SET_BRIDGE_PASSWORD, (password_hash, row["username"]))
        await _audit_org(conn, actor, "bridge.credentials", row["username"])
    return Bridge(**row), MqttCredentials.issued(row["username"], password, broker)
