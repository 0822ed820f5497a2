"""Bootstrap administration from a shell: ``carewatch org|site|device|user add``.

The ``add_*`` functions are for people: they refuse what already exists, with an
:class:`~carewatch.errors.AdminError` that says why. The ``ensure_*`` functions and
:func:`add_devices_bulk` are for seeding (simulator, demo, benchmark, tests): they keep what is
there (``ON CONFLICT DO NOTHING``) and say how much they added. Every function takes a psycopg
connection and runs in ``conn.transaction()``: on an autocommit connection each call is its own
transaction, inside the caller's transaction it is a savepoint. Devices, for people and for
seeding alike, are written by the fleet's one write path (:mod:`carewatch.fleet`); this
module's own statements are the constants below.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from collections.abc import Iterable
from typing import Any, Final, NoReturn, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
import psycopg.errors

from carewatch import fleet
from carewatch.device_broker import device_broker
from carewatch.errors import AdminError, AlreadyExistsError, InvalidValueError, NotFoundError
from carewatch.passwords import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, hash_password
from carewatch.roles import ROLES
from carewatch.settings import Settings
from devices.catalog import DEFAULT_CATALOG
from devices.device_specs import (
    MAX_IMPORT_BYTES,
    DeviceSpec,
    ImportFileError,
    Refusal,
    RefusalCode,
    has_control_chars,
    parse_csv,
)
from devices.envelope import TOPIC_PREFIX
from devices.ids import (
    DEVICE_ID_RE,
    DEVICE_ID_RULE,
    ORG_SITE_ID_RE,
    ORG_SITE_ID_RULE,
    USERNAME_RE,
    USERNAME_RULE,
)

log = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]

_MAX_TEXT_CHARS: Final = 200
LANGUAGES: Final = ("sv", "en")

# The CLI's exit code for a refused request (bad argument, unknown reference, duplicate), as
# argparse uses for usage errors; 1 is left for failures such as an unreachable database.
EXIT_REFUSED: Final = 2
EXIT_FAILED: Final = 1

# --- the statements ----------------------------------------------------------------------------

_INSERT_ORG: Final = "INSERT INTO organisations (id, name) VALUES (%s, %s)"
_ENSURE_ORG: Final = f"{_INSERT_ORG} ON CONFLICT (id) DO NOTHING"
_INSERT_SITE: Final = "INSERT INTO sites (id, org_id, name, timezone) VALUES (%s, %s, %s, %s)"
_ENSURE_SITE: Final = f"{_INSERT_SITE} ON CONFLICT (id) DO NOTHING"
_ORG_EXISTS: Final = "SELECT 1 FROM organisations WHERE id = %s"
_SITES_OF_ORG: Final = "SELECT id FROM sites WHERE org_id = %s AND id = ANY (%s)"
_INSERT_USER: Final = (
    "INSERT INTO users (username, org_id, role, password_hash, display_name, language)"
    " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id"
)
_INSERT_USER_SITE: Final = "INSERT INTO user_sites (user_id, site_id) VALUES (%s, %s)"


# --- validation ------------------------------------------------------------------------------


def check_org_site_id(entity: str, value: str) -> None:
    """InvalidValueError unless ``value`` is an organisation or site id (``entity`` says which)."""
    if not ORG_SITE_ID_RE.fullmatch(value):
        raise InvalidValueError(f"{entity} id", value, ORG_SITE_ID_RULE)


def check_device_id(value: str) -> None:
    """InvalidValueError unless ``value`` is a device id."""
    if not DEVICE_ID_RE.fullmatch(value):
        raise InvalidValueError("device id", value, DEVICE_ID_RULE)


def check_text(what: str, value: str, *, required: bool) -> None:
    """InvalidValueError for a name or label: empty (if ``required``), long or unprintable."""
    if required and not value.strip():
        raise InvalidValueError(what, value, "must not be empty")
    if len(value) > _MAX_TEXT_CHARS:
        raise InvalidValueError(what, value[:20] + "...", f"at most {_MAX_TEXT_CHARS} characters")
    if has_control_chars(value):
        raise InvalidValueError(what, value, "must not contain control characters")


def check_timezone(value: str) -> None:
    """InvalidValueError unless ``value`` is an IANA time zone."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidValueError(
            "time zone", value, "an IANA time zone such as Europe/Stockholm"
        ) from None


def check_kind(value: str) -> None:
    """InvalidValueError unless ``value`` is a device kind of the catalog."""
    if value not in DEFAULT_CATALOG:
        raise InvalidValueError("device kind", value, "one of " + ", ".join(DEFAULT_CATALOG))


# --- organisations and sites -----------------------------------------------------------------


def add_org(conn: Connection, org_id: str, name: str) -> None:
    """Add an organisation (a municipality); AlreadyExistsError if the id is taken."""
    check_org_site_id("organisation", org_id)
    check_text("organisation name", name, required=True)
    try:
        with conn.transaction():
            conn.execute(_INSERT_ORG, (org_id, name))
    except psycopg.errors.UniqueViolation:
        raise AlreadyExistsError("organisation", org_id) from None
    log.info("added organisation %s", org_id)


def ensure_org(conn: Connection, org_id: str, name: str) -> bool:
    """Add the organisation unless it exists (then leave it as it is); True if added."""
    check_org_site_id("organisation", org_id)
    check_text("organisation name", name, required=True)
    with conn.transaction():
        cursor = conn.execute(_ENSURE_ORG, (org_id, name))
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
            conn.execute(_INSERT_SITE, (site_id, org_id, name, timezone))
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
            cursor = conn.execute(_ENSURE_SITE, (site_id, org_id, name, timezone))
    except psycopg.errors.ForeignKeyViolation:
        raise NotFoundError("organisation", org_id) from None
    return cursor.rowcount == 1


# --- devices ---------------------------------------------------------------------------------


def add_devices_bulk(conn: Connection, rows: Iterable[tuple[str, str, str, str]]) -> int:
    """Register many devices for seeding, rows of (id, kind, site_id, label); the number new.

    Devices that exist already are left as they are, whatever the row says; every row is
    checked and every site looked up before anything is written (:func:`fleet.seed_devices`).
    """
    specs = [
        DeviceSpec(device_id, kind, site_id, label) for device_id, kind, site_id, label in rows
    ]
    added = fleet.seed_devices(conn, specs)
    log.info("registered %s new device(s) of %s", added, len(specs))
    return added


# --- users -----------------------------------------------------------------------------------


def check_user(username: str, role: str, language: str = "sv") -> None:
    """InvalidValueError for a username, role or language that is not acceptable."""
    if not USERNAME_RE.fullmatch(username):
        raise InvalidValueError("username", username, USERNAME_RULE)
    if role not in ROLES:
        raise InvalidValueError("role", role, "one of " + ", ".join(ROLES))
    if language not in LANGUAGES:
        raise InvalidValueError("language", language, "one of " + ", ".join(LANGUAGES))


def check_password(password: str) -> None:
    """InvalidValueError for a password too short or too long."""
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
            if conn.execute(_ORG_EXISTS, (org_id,)).fetchone() is None:
                raise NotFoundError("organisation", org_id)
            found = {row[0] for row in conn.execute(_SITES_OF_ORG, (org_id, sites))}
            for site_id in sites:
                if site_id not in found:
                    raise InvalidValueError(
                        "site", site_id, f"not a site of organisation {org_id!r}"
                    )
            row = conn.execute(
                _INSERT_USER, (username, org_id, role, password_hash, display_name, language)
            ).fetchone()
            assert row is not None
            user_id: int = row[0]
            for site_id in sites:
                conn.execute(_INSERT_USER_SITE, (user_id, site_id))
    except psycopg.errors.UniqueViolation:
        raise AlreadyExistsError("user", username) from None
    log.info("added %s %s to organisation %s", role, username, org_id)
    return user_id


def read_password(stream: TextIO) -> str:
    """The first line of ``stream`` without its line ending (``--password-stdin``)."""
    return stream.readline().rstrip("\r\n")


# --- the CLI ---------------------------------------------------------------------------------


def _print_device(
    settings: Settings, device_id: str, credentials: fleet.MqttCredentials | None
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
    if credentials.ca_sha256 is not None:
        lines += [
            "  trusts:     only the CA certificate with the SHA-256 fingerprint",
            f"              {credentials.ca_sha256}",
            "              (served by the API at /api/v1/broker/ca.pem)",
        ]
    elif not credentials.tls:
        lines.append(
            "  warning:    plain MQTT without TLS: the password travels in clear"
            " (acceptable only on this machine)"
        )
    print("\n".join(lines))


def _shell_actor(org_id: str | None = None) -> fleet.Actor:
    # The shell acts for every organisation (or the one given); the audit log names the
    # operating-system user.
    return fleet.Actor(username=f"cli:{getpass.getuser()}", org_id=org_id, client="cli")


def _raise_refusal(spec: DeviceSpec, refusal: Refusal) -> NoReturn:
    """The shell's sentence for a refused ``device add``."""
    if refusal.reason == "device id taken":
        raise AlreadyExistsError("device", spec.id)
    if refusal.code is RefusalCode.NOT_FOUND:
        entity = refusal.reason.split()[0]
        raise NotFoundError(entity, spec.site if entity == "site" else spec.bridge or "")
    raise InvalidValueError("device", spec.id, refusal.reason)


async def _device_command(settings: Settings, args: argparse.Namespace) -> None:
    """``carewatch device add|decommission|credentials|import`` (carewatch.fleet)."""
    endpoint = device_broker(settings)  # the CA file is checked before anything is written
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        if args.verb == "add":
            spec = DeviceSpec(
                id=args.device_id,
                kind=args.kind,
                site=args.site,
                label=args.label,
                source=args.source,
                zigbee_name=args.zigbee_name,
                zigbee_model=args.zigbee_model,
                bridge=args.bridge,
            )
            report = await fleet.create_devices(conn, _shell_actor(), [spec], endpoint)
            if report.refused:
                _raise_refusal(spec, report.refused[0])
            created = report.created[0]
            print(f"device {args.device_id} ({args.kind}) added at site {args.site}")
            _print_device(settings, args.device_id, created.credentials)
        elif args.verb == "decommission":
            result = await fleet.decommission_device(conn, _shell_actor(), args.device_id)
            resolved = len(result.resolved_alert_ids)
            print(
                f"device {args.device_id} decommissioned: the broker refuses it from now on;"
                f" {resolved} open alert(s) resolved"
            )
        elif args.verb == "credentials":
            _, credentials = await fleet.rotate_device_credentials(
                conn, _shell_actor(), args.device_id, endpoint
            )
            print(f"new credentials for device {args.device_id}; the old password no longer works")
            _print_device(settings, args.device_id, credentials)
        else:
            with open(args.file, "rb") as file:  # noqa: ASYNC230 - a CLI, nothing else runs
                specs, refused = parse_csv(file.read(MAX_IMPORT_BYTES + 1))
            report = await fleet.create_devices(
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
            sys.stdout.write(fleet.credentials_csv(report.created))


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
    except (AdminError, ImportFileError) as error:
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
