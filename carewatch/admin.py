"""Bootstrap administration from a shell: ``carewatch org|site|device|user add``.

The ``add_*`` functions are for people: they refuse what already exists, with an
:class:`~carewatch.errors.AdminError` that says why. The ``ensure_*`` functions and
:func:`add_devices_bulk` are for seeding (simulator, demo, benchmark, tests): they keep what is
there (``ON CONFLICT DO NOTHING``) and say how much they added. Every function takes a psycopg
connection and runs in ``conn.transaction()``: on an autocommit connection each call is its own
transaction, inside the caller's transaction it is a savepoint.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
import psycopg.errors

from carewatch import onboarding
from carewatch.errors import AdminError, AlreadyExistsError, InvalidValueError, NotFoundError
from carewatch.passwords import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, hash_password
from carewatch.roles import ROLES
from carewatch.settings import Settings
from devices.catalog import DEFAULT_CATALOG
from devices.envelope import DEVICE_ID_RE, TOPIC_PREFIX

log = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]

# The same patterns as the CHECK constraints of migration 0001; checked here first so that a
# mistyped id gets a sentence instead of a constraint name.
ORG_SITE_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{1,63}")
_ORG_SITE_ID_RULE: Final = "2-64 characters a-z 0-9 _ -, starting with a letter or digit"
_DEVICE_ID_RULE: Final = "3-64 characters a-z 0-9 _ -, starting with a letter or digit"
_MAX_TEXT_CHARS: Final = 200
_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]")
# The users table's CHECK constraints (migration 0002).
USERNAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9._@-]{1,63}")
_USERNAME_RULE: Final = "2-64 characters a-z 0-9 . _ @ -, starting with a letter or digit"
LANGUAGES: Final = ("sv", "en")

# The CLI's exit code for a refused request (bad argument, unknown reference, duplicate), as
# argparse uses for usage errors; 1 is left for failures such as an unreachable database.
EXIT_REFUSED: Final = 2
EXIT_FAILED: Final = 1


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    """How a device connects to the broker, without a password.

    :func:`add_device` registers a device with no broker credentials (seeding, tests); people
    onboard through :mod:`carewatch.onboarding` (``carewatch device add``, the API), which
    issues the device's password and shows it once.
    """

    device_id: str
    username: str
    client_id: str
    password: str | None
    events_topic: str
    status_topic: str


def credentials_for(device_id: str) -> DeviceCredentials:
    return DeviceCredentials(
        device_id=device_id,
        username=device_id,
        # One stable client id per device: its persistent session and Last Will follow it.
        client_id=device_id,
        password=None,
        events_topic=f"{TOPIC_PREFIX}{device_id}/events",
        status_topic=f"{TOPIC_PREFIX}{device_id}/status",
    )


# --- validation ------------------------------------------------------------------------------


def check_org_site_id(entity: str, value: str) -> None:
    if not ORG_SITE_ID_RE.fullmatch(value):
        raise InvalidValueError(f"{entity} id", value, _ORG_SITE_ID_RULE)


def check_device_id(value: str) -> None:
    if not DEVICE_ID_RE.fullmatch(value):
        raise InvalidValueError("device id", value, _DEVICE_ID_RULE)


def check_text(what: str, value: str, *, required: bool) -> None:
    if required and not value.strip():
        raise InvalidValueError(what, value, "must not be empty")
    if len(value) > _MAX_TEXT_CHARS:
        raise InvalidValueError(what, value[:20] + "...", f"at most {_MAX_TEXT_CHARS} characters")
    if _CONTROL_CHARS.search(value):
        raise InvalidValueError(what, value, "must not contain control characters")


def check_timezone(value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidValueError(
            "time zone", value, "an IANA time zone such as Europe/Stockholm"
        ) from None


def check_kind(value: str) -> None:
    if value not in DEFAULT_CATALOG:
        raise InvalidValueError("device kind", value, "one of " + ", ".join(DEFAULT_CATALOG))


# --- organisations and sites -----------------------------------------------------------------


def add_org(conn: Connection, org_id: str, name: str) -> None:
    """Add an organisation (a municipality); AlreadyExistsError if the id is taken."""
    check_org_site_id("organisation", org_id)
    check_text("organisation name", name, required=True)
    try:
        with conn.transaction():
            conn.execute("INSERT INTO organisations (id, name) VALUES (%s, %s)", (org_id, name))
    except psycopg.errors.UniqueViolation:
        raise AlreadyExistsError("organisation", org_id) from None
    log.info("added organisation %s", org_id)


def ensure_org(conn: Connection, org_id: str, name: str) -> bool:
    """Add the organisation unless it exists (then leave it as it is); True if added."""
    check_org_site_id("organisation", org_id)
    check_text("organisation name", name, required=True)
    with conn.transaction():
        cursor = conn.execute(
            "INSERT INTO organisations (id, name) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
            (org_id, name),
        )
    return cursor.rowcount == 1


def _check_site(site_id: str, org_id: str, name: str, timezone: str) -> None:
    check_org_site_id("site", site_id)
    check_org_site_id("organisation", org_id)
    check_text("site name", name, required=True)
    check_timezone(timezone)


def add_site(
    conn: Connection, site_id: str, org_id: str, name: str, timezone: str = "Europe/Stockholm"
) -> None:
    """Add a site (a care home, a home-care area) of an existing organisation."""
    _check_site(site_id, org_id, name, timezone)
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO sites (id, org_id, name, timezone) VALUES (%s, %s, %s, %s)",
                (site_id, org_id, name, timezone),
            )
    except psycopg.errors.UniqueViolation:
        raise AlreadyExistsError("site", site_id) from None
    except psycopg.errors.ForeignKeyViolation:
        raise NotFoundError("organisation", org_id) from None
    log.info("added site %s to organisation %s", site_id, org_id)


def ensure_site(
    conn: Connection, site_id: str, org_id: str, name: str, timezone: str = "Europe/Stockholm"
) -> bool:
    """Add the site unless it exists (then leave it as it is); True if added."""
    _check_site(site_id, org_id, name, timezone)
    try:
        with conn.transaction():
            cursor = conn.execute(
                "INSERT INTO sites (id, org_id, name, timezone) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                (site_id, org_id, name, timezone),
            )
    except psycopg.errors.ForeignKeyViolation:
        raise NotFoundError("organisation", org_id) from None
    return cursor.rowcount == 1


# --- devices ---------------------------------------------------------------------------------


def _check_device(device_id: str, kind: str, site_id: str, label: str) -> None:
    check_device_id(device_id)
    check_kind(kind)
    check_org_site_id("site", site_id)
    check_text("label", label, required=False)


def add_device(
    conn: Connection, device_id: str, kind: str, site_id: str, label: str = ""
) -> DeviceCredentials:
    """Register a device at a site; how it connects to the broker."""
    _check_device(device_id, kind, site_id, label)
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO devices (id, kind, site_id, label) VALUES (%s, %s, %s, %s)",
                (device_id, kind, site_id, label),
            )
    except psycopg.errors.UniqueViolation:
        raise AlreadyExistsError("device", device_id) from None
    except psycopg.errors.ForeignKeyViolation:
        raise NotFoundError("site", site_id) from None
    log.info("added %s device %s at site %s", kind, device_id, site_id)
    return credentials_for(device_id)


def add_devices_bulk(conn: Connection, rows: Iterable[tuple[str, str, str, str]]) -> int:
    """Register many devices, rows of (id, kind, site_id, label); the number newly added.

    Devices that exist already are left as they are, whatever the row says. Every row is
    validated before anything is written; one statement inserts them all (arrays unnested
    server-side), so thousands of devices cost one round trip.
    """
    ids: list[str] = []
    kinds: list[str] = []
    site_ids: list[str] = []
    labels: list[str] = []
    for device_id, kind, site_id, label in rows:
        _check_device(device_id, kind, site_id, label)
        ids.append(device_id)
        kinds.append(kind)
        site_ids.append(site_id)
        labels.append(label)
    if not ids:
        return 0
    with conn.transaction():
        wanted_sites = sorted(set(site_ids))
        found = {
            row[0]
            for row in conn.execute("SELECT id FROM sites WHERE id = ANY (%s)", (wanted_sites,))
        }
        missing = [site for site in wanted_sites if site not in found]
        if missing:
            raise NotFoundError("site", missing[0])
        cursor = conn.execute(
            "INSERT INTO devices (id, kind, site_id, label)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])"
            " ON CONFLICT (id) DO NOTHING",
            (ids, kinds, site_ids, labels),
        )
    added = cursor.rowcount
    log.info("registered %s new device(s) of %s", added, len(ids))
    return added


# --- users -----------------------------------------------------------------------------------


def check_user(username: str, role: str, language: str = "sv") -> None:
    if not USERNAME_RE.fullmatch(username):
        raise InvalidValueError("username", username, _USERNAME_RULE)
    if role not in ROLES:
        raise InvalidValueError("role", role, "one of " + ", ".join(ROLES))
    if language not in LANGUAGES:
        raise InvalidValueError("language", language, "one of " + ", ".join(LANGUAGES))


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidValueError("password", "***", f"at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidValueError("password", "***", f"at most {MAX_PASSWORD_CHARS} characters")


def add_user(
    conn: Connection,
    username: str,
    org_id: str,
    role: str,
    password: str,
    site_ids: Iterable[str] = (),
    *,
    display_name: str = "",
    language: str = "sv",
    password_hash: str | None = None,
) -> int:
    """Add a user of an organisation, limited to ``site_ids`` if any are given; the user's id.

    The password is stored as an Argon2id hash. ``password_hash`` skips the hashing (seeding
    many users with one precomputed hash; ``password`` is then not checked).
    """
    check_user(username, role, language)
    check_org_site_id("organisation", org_id)
    check_text("display name", display_name, required=False)
    sites = sorted(set(site_ids))
    for site_id in sites:
        check_org_site_id("site", site_id)
    if password_hash is None:
        check_password(password)
        password_hash = hash_password(password)
    try:
        with conn.transaction():
            if (
                conn.execute("SELECT 1 FROM organisations WHERE id = %s", (org_id,)).fetchone()
                is None
            ):
                raise NotFoundError("organisation", org_id)
            found = {
                row[0]
                for row in conn.execute(
                    "SELECT id FROM sites WHERE org_id = %s AND id = ANY (%s)", (org_id, sites)
                )
            }
            for site_id in sites:
                if site_id not in found:
                    raise InvalidValueError(
                        "site", site_id, f"not a site of organisation {org_id!r}"
                    )
            row = conn.execute(
                "INSERT INTO users (username, org_id, role, password_hash, display_name, language)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (username, org_id, role, password_hash, display_name, language),
            ).fetchone()
            assert row is not None
            user_id: int = row[0]
            for site_id in sites:
                conn.execute(
                    "INSERT INTO user_sites (user_id, site_id) VALUES (%s, %s)", (user_id, site_id)
                )
    except psycopg.errors.UniqueViolation:
        raise AlreadyExistsError("user", username) from None
    log.info("added %s %s to organisation %s", role, username, org_id)
    return user_id


def read_password(stream: TextIO) -> str:
    """The first line of ``stream`` without its line ending (``--password-stdin``)."""
    return stream.readline().rstrip("\r\n")


# --- the CLI ---------------------------------------------------------------------------------


def _print_device(
    settings: Settings, device_id: str, credentials: onboarding.MqttCredentials | None
) -> None:
    if credentials is None:
        print(f"  no credentials of its own: its zigbee2mqtt bridge publishes for {device_id}")
        return
    lines = [
        f"MQTT connection settings of device {device_id} (the password is shown only now):",
        f"  broker:     {credentials.url}",
        f"  client id:  {device_id}",
        f"  username:   {credentials.username}",
        f"  password:   {credentials.password}",
        f"  publishes:  {TOPIC_PREFIX}{device_id}/events  (QoS 1, event envelopes)",
        f"              {TOPIC_PREFIX}{device_id}/status  (QoS 1, retained: online/offline;",
        "              also the Last Will, payload offline)",
    ]
    print("\n".join(lines))


def _shell_actor(org_id: str | None = None) -> onboarding.Actor:
    # The shell acts for every organisation (or the one given); the audit log names the
    # operating-system user.
    return onboarding.Actor(username=f"cli:{getpass.getuser()}", org_id=org_id, client="cli")


def _raise_refusal(spec: onboarding.DeviceSpec, refusal: onboarding.Refusal) -> NoReturn:
    """The shell's sentence for a refused ``device add``."""
    if refusal.reason == "device id taken":
        raise AlreadyExistsError("device", spec.id)
    if refusal.code is onboarding.RefusalCode.NOT_FOUND:
        entity = refusal.reason.split()[0]
        raise NotFoundError(entity, spec.site if entity == "site" else spec.bridge or "")
    raise InvalidValueError("device", spec.id, refusal.reason)


async def _device_command(settings: Settings, args: argparse.Namespace) -> None:
    """``carewatch device add|decommission|credentials|import`` (carewatch.onboarding)."""
    endpoint = settings.device_mqtt
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        if args.verb == "add":
            spec = onboarding.DeviceSpec(
                id=args.device_id,
                kind=args.kind,
                site=args.site,
                label=args.label,
                source=args.source,
                zigbee_name=args.zigbee_name,
                zigbee_model=args.zigbee_model,
                bridge=args.bridge,
            )
            report = await onboarding.create_devices(conn, _shell_actor(), [spec], endpoint)
            if report.refused:
                _raise_refusal(spec, report.refused[0])
            created = report.created[0]
            print(f"device {args.device_id} ({args.kind}) added at site {args.site}")
            _print_device(settings, args.device_id, created.credentials)
        elif args.verb == "decommission":
            result = await onboarding.decommission_device(conn, _shell_actor(), args.device_id)
            resolved = len(result.resolved_alert_ids)
            print(
                f"device {args.device_id} decommissioned: the broker refuses it from now on;"
                f" {resolved} open alert(s) resolved"
            )
        elif args.verb == "credentials":
            _, credentials = await onboarding.rotate_device_credentials(
                conn, _shell_actor(), args.device_id, endpoint
            )
            print(f"new credentials for device {args.device_id}; the old password no longer works")
            _print_device(settings, args.device_id, credentials)
        else:
            with open(args.file, "rb") as file:  # noqa: ASYNC230 - a CLI, nothing else runs
                specs, refused = onboarding.parse_csv(file.read(onboarding.MAX_IMPORT_BYTES + 1))
            report = await onboarding.create_devices(
                conn, _shell_actor(args.org), specs, endpoint, refused=refused, note="import"
            )
            for refusal in report.refused:
                print(
                    f"line {refusal.line}: {refusal.id or '(no id)'} refused: {refusal.reason}",
                    file=sys.stderr,
                )
            print(
                f"{len(report.created)} device(s) created, {len(report.refused)} refused;"
                " the credentials of the created ones follow as CSV (shown only now)",
                file=sys.stderr,
            )
            sys.stdout.write(onboarding.credentials_csv(report.created))


def _validate_args(args: argparse.Namespace) -> None:
    """Refuse bad arguments before connecting: a typo is reported even if the database is down."""
    if args.command == "org":
        check_org_site_id("organisation", args.org_id)
        check_text("organisation name", args.name, required=True)
    elif args.command == "site":
        _check_site(args.site_id, args.org, args.name, args.timezone)
    elif args.command == "device" and args.verb == "add":
        check_device_id(args.device_id)
        check_kind(args.kind)
        check_org_site_id("site", args.site)
        check_text("label", args.label, required=False)
    elif args.command == "device" and args.verb in ("decommission", "credentials"):
        check_device_id(args.device_id)
    elif args.command == "device":
        check_org_site_id("organisation", args.org)
    else:
        check_user(args.username, args.role, args.language)
        check_org_site_id("organisation", args.org)
        for site_id in args.sites:
            check_org_site_id("site", site_id)
        if not args.password_stdin:
            raise InvalidValueError(
                "password", "", "give it on standard input with --password-stdin"
            )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """``carewatch org|site|device|user add`` and ``carewatch device decommission|credentials|
    import``; 0 on success, 2 if refused, 1 if the database failed."""
    command = f"carewatch {args.command} {args.verb}"
    try:
        _validate_args(args)
        password = ""
        if args.command == "device":
            asyncio.run(_device_command(settings, args))
            return 0
        if args.command == "user":
            # Read and checked before connecting: a bad password is refused even offline.
            password = read_password(sys.stdin)
            check_password(password)
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            if args.command == "org":
                add_org(conn, args.org_id, args.name)
                print(f"organisation {args.org_id} added")
            elif args.command == "site":
                add_site(conn, args.site_id, args.org, args.name, args.timezone)
                print(f"site {args.site_id} added to organisation {args.org}")
            else:
                add_user(
                    conn,
                    args.username,
                    args.org,
                    args.role,
                    password,
                    args.sites,
                    display_name=args.display_name,
                    language=args.language,
                )
                where = ", sites " + ", ".join(args.sites) if args.sites else ", every site"
                print(f"user {args.username} ({args.role}) added to organisation {args.org}{where}")
    except AdminError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as error:  # the import file
        print(f"{command}: {error}", file=sys.stderr)
        return EXIT_REFUSED
    except psycopg.errors.UndefinedTable:
        print(
            f"{command}: the database has no Carewatch schema; run carewatch migrate first",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except psycopg.Error as error:
        # libpq messages span lines ("connection refused\n\tIs the server running ..."),
        # and a shell user wants one.
        print(f"{command}: database error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_FAILED
    return 0
