"""Every PostgreSQL query of the provisioned Grafana dashboards runs on the real schema.

CI has no Grafana: each query is expanded the way Grafana expands it (tests/fixtures/grafana.py:
the dashboard's variables from their own SQL, then the data source's macros) and executed on a
freshly migrated database with a small hand-built history, as the read-only role Grafana logs in
as (``carewatch grafana role``) — so a missing grant fails here too. Every query must return the
columns listed in EXPECTED_COLUMNS (a time column first, in ascending order, for time series);
a few must return known values. A PostgreSQL panel added without an entry here fails
``test_every_postgres_query_is_listed``, so none can skip the test.
"""

from __future__ import annotations

import contextlib
import io
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from app.cli import main
from carewatch.db.grafana_role import ensure_grafana_role
from carewatch.errors import AdminError
from tests.fixtures.grafana import (
    POSTGRES_TYPES,
    Target,
    TimeRange,
    VariableValue,
    expand,
    load_dashboards,
    query_variables,
    targets,
)
from tools.local.postgres import PostgresInstance

DASHBOARDS = load_dashboards()
POSTGRES_TARGETS = [
    target
    for dashboard in DASHBOARDS.values()
    for target in targets(dashboard)
    if target.datasource_type in POSTGRES_TYPES
]

# A week of November 2026 (Europe/Stockholm is UTC+1 then), the panels' minimum interval.
PERIOD = TimeRange(datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 9, tzinfo=UTC))
INTERVAL = timedelta(hours=1)
NORTH, SOUTH = "gf-north", "gf-south"

# What every PostgreSQL query returns, by "dashboard uid/panel title/refId".
EXPECTED_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "carewatch-usage/Devices offline now/A": ("offline",),
    "carewatch-usage/Battery under 20 %/A": ("battery under 20 %",),
    "carewatch-usage/Alerts on the board/A": ("critical", "high", "warning", "info"),
    "carewatch-usage/Dead letters in the period/A": ("dead letters",),
    "carewatch-usage/Events per type per day/A": ("time", "metric", "events"),
    "carewatch-usage/Camera checks per night/A": ("time", "checks", "mean duration"),
    "carewatch-usage/Lock visits per day/A": ("time", "visits", "mean duration"),
    "carewatch-usage/Robot interaction minutes per day/A": ("time", "metric", "minutes"),
    "carewatch-usage/Alarms/A": ("time", "metric", "alarms"),
    "carewatch-usage/Battery replacements per day/A": ("time", "replacements"),
    "carewatch-usage/Sites in the period/A": (
        "site",
        "camera checks",
        "lock visits",
        "robot minutes",
        "alarms",
        "alerts",
        "offline now",
    ),
    "carewatch-usage/Alerts opened by rule/A": ("time", "metric", "alerts"),
    "carewatch-usage/Alerts opened by severity/A": ("time", "metric", "alerts"),
    "carewatch-usage/Time to acknowledge and resolve/A": (
        "severity",
        "alerts",
        "acknowledged",
        "acknowledge p50",
        "acknowledge p90",
        "resolved",
        "resolve p50",
        "resolve p90",
    ),
    "carewatch-usage/Alerts by rule and severity/A": (
        "rule",
        "severity",
        "alerts",
        "acknowledged",
        "still on the board",
    ),
    "carewatch-usage/Slowest acknowledgements/A": (
        "alert",
        "device",
        "label",
        "site",
        "rule",
        "severity",
        "opened",
        "time to acknowledge",
    ),
    "carewatch-usage/Offline devices/A": (
        "device",
        "kind",
        "site",
        "label",
        "last seen",
        "offline since",
    ),
    "carewatch-usage/Devices with battery under 20 %/A": (
        "device",
        "kind",
        "site",
        "label",
        "battery %",
        "last seen",
    ),
    "carewatch-usage/Devices online by kind/A": ("kind", "devices", "online", "share online"),
    "carewatch-usage/Dead letters by reason/A": ("time", "metric", "dead letters"),
    "carewatch-usage/Latest dead letters/A": ("received", "topic", "reason", "detail"),
}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- the hand-built history --------------------------------------------------------------------

SITES = (  # id, org, name
    ("gf-n1", NORTH, "Ekbacken"),
    ("gf-n2", NORTH, "Solgården"),
    ("gf-s1", SOUTH, "Havsutsikten"),
)
DEVICES = (  # id, kind, site, status, online, battery, last_seen
    ("gf-n1-cam", "safety_camera", "gf-n1", "active", True, 15, utc("2026-11-08T23:59:00")),
    ("gf-n1-lock", "door_lock", "gf-n1", "active", False, 80, utc("2026-11-08T10:00:00")),
    ("gf-n1-robot", "companion_robot", "gf-n1", "active", True, 50, utc("2026-11-08T23:00:00")),
    ("gf-n1-alarm", "alarm_button", "gf-n1", "active", True, 5, utc("2026-11-08T23:30:00")),
    ("gf-n1-old", "alarm_button", "gf-n1", "decommissioned", False, 1, None),
    ("gf-n2-lock", "door_lock", "gf-n2", "active", False, None, None),
    ("gf-s1-alarm", "alarm_button", "gf-s1", "active", False, 10, utc("2026-11-07T08:00:00")),
)
ALERTS = (  # device, rule, severity, state, opened_at, seconds to ack, seconds to resolve
    ("gf-n1-alarm", "alarm_pressed", "critical", "resolved", utc("2026-11-03T20:00:00"), 60, 120),
    ("gf-n1-alarm", "alarm_pressed", "critical", "resolved", utc("2026-11-04T21:00:00"), 180, 200),
    ("gf-n1-lock", "device_offline", "high", "open", utc("2026-11-08T10:15:00"), None, None),
    ("gf-n1-cam", "battery_low", "warning", "open", utc("2026-11-05T08:00:00"), None, None),
    (
        "gf-s1-alarm",
        "alarm_pressed",
        "critical",
        "acknowledged",
        utc("2026-11-06T12:00:00"),
        1000,
        None,
    ),
    # Before the period: in no panel of it.
    (
        "gf-n1-alarm",
        "alarm_pressed",
        "critical",
        "resolved",
        utc("2026-10-20T12:00:00"),
        5000,
        5000,
    ),
)
SITE_DAILY = (  # site, local day, type, events, duration_s
    ("gf-n1", date(2026, 11, 3), "camera.check_ended", 3, 120.0),
    ("gf-n1", date(2026, 11, 3), "lock.unlocked", 5, 0.0),
    ("gf-n1", date(2026, 11, 3), "lock.locked", 5, 0.0),
    ("gf-n1", date(2026, 11, 3), "lock.visit", 4, 3600.0),
    ("gf-n1", date(2026, 11, 3), "robot.interaction", 2, 600.0),
    ("gf-n1", date(2026, 11, 3), "alarm.pressed", 1, 0.0),
    ("gf-n1", date(2026, 11, 4), "camera.check_ended", 2, 100.0),
    ("gf-n1", date(2026, 11, 4), "lock.visit", 2, 1200.0),
    ("gf-n1", date(2026, 11, 4), "alarm.pressed", 1, 0.0),
    ("gf-n1", date(2026, 11, 4), "battery.replaced", 1, 0.0),
    ("gf-n2", date(2026, 11, 4), "lock.visit", 1, 900.0),
    ("gf-n2", date(2026, 11, 4), "robot.interaction", 1, 300.0),
    ("gf-s1", date(2026, 11, 6), "alarm.pressed", 1, 0.0),
    ("gf-s1", date(2026, 11, 6), "camera.check_ended", 7, 70.0),
    ("gf-n1", date(2026, 10, 25), "camera.check_ended", 9, 90.0),  # before the period
)
SITE_HOURLY = (  # site, UTC hour, type, events, duration_s
    ("gf-n1", utc("2026-11-03T21:00:00"), "camera.check_ended", 2, 80.0),  # 22:00, night of 3rd
    ("gf-n1", utc("2026-11-04T01:00:00"), "camera.check_ended", 1, 40.0),  # 02:00, night of 3rd
    ("gf-n1", utc("2026-11-04T11:00:00"), "camera.check_ended", 5, 500.0),  # noon: no night
    ("gf-n1", utc("2026-11-04T17:00:00"), "camera.check_ended", 2, 100.0),  # 18:00, night of 4th
    ("gf-n1", utc("2026-11-05T05:00:00"), "camera.check_ended", 4, 400.0),  # 06:00: night over
    ("gf-s1", utc("2026-11-06T22:00:00"), "camera.check_ended", 7, 70.0),  # 23:00, night of 6th
    ("gf-n1", utc("2026-11-03T20:00:00"), "alarm.pressed", 1, 0.0),
    ("gf-n1", utc("2026-11-04T21:00:00"), "alarm.pressed", 1, 0.0),
    ("gf-s1", utc("2026-11-06T12:00:00"), "alarm.pressed", 1, 0.0),
)
DEAD_LETTERS = (  # received_at, reason
    (utc("2026-11-03T10:05:00"), "invalid_json"),
    (utc("2026-11-03T10:06:00"), "invalid_json"),
    (utc("2026-11-03T10:40:00"), "unknown_device"),
    (utc("2026-11-05T00:00:00"), "invalid_json"),
    (utc("2026-10-01T00:00:00"), "invalid_json"),  # before the period
)


def seed(conn: psycopg.Connection[Any]) -> None:
    """The history above, as the gateway and the API would have left it."""
    with conn.transaction():
        for org, name in ((NORTH, "Norrkommun"), (SOUTH, "Söderkommun")):
            conn.execute("INSERT INTO organisations (id, name) VALUES (%s, %s)", (org, name))
        for site, org, name in SITES:
            conn.execute(
                "INSERT INTO sites (id, org_id, name) VALUES (%s, %s, %s)", (site, org, name)
            )
        for device, kind, site, status, online, battery, last_seen in DEVICES:
            conn.execute(
                "INSERT INTO devices (id, kind, site_id, label, status, online, battery, last_seen)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (device, kind, site, f"Lgh {device[-3:]}", status, online, battery, last_seen),
            )
        for device, rule, severity, state, opened, ack_s, resolve_s in ALERTS:
            conn.execute(
                "INSERT INTO alerts (device_id, rule, severity, state, opened_at,"
                " acknowledged_at, acknowledged_by, resolved_at, resolved_by)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    device,
                    rule,
                    severity,
                    state,
                    opened,
                    None if ack_s is None else opened + timedelta(seconds=ack_s),
                    None if ack_s is None else "vardare",
                    None if resolve_s is None else opened + timedelta(seconds=resolve_s),
                    None if resolve_s is None else "vardare",
                ),
            )
        for site, day, kind, events, duration_s in SITE_DAILY:
            conn.execute(
                "INSERT INTO usage_site_daily (site_id, day, type, events, duration_s)"
                " VALUES (%s, %s, %s, %s, %s)",
                (site, day, kind, events, duration_s),
            )
        for site, bucket, kind, events, duration_s in SITE_HOURLY:
            conn.execute(
                "INSERT INTO usage_site_hourly (site_id, bucket, type, events, duration_s)"
                " VALUES (%s, %s, %s, %s, %s)",
                (site, bucket, kind, events, duration_s),
            )
        for received_at, reason in DEAD_LETTERS:
            conn.execute(
                "INSERT INTO dead_letters (received_at, topic, payload, reason)"
                " VALUES (%s, 'carewatch/devices/x/events', '\\x7b'::bytea, %s)",
                (received_at, reason),
            )


@dataclass(frozen=True, slots=True)
class GrafanaDatabase:
    url: str
    role: str


@pytest.fixture(scope="module")
def grafana_database(pg: PostgresInstance, template_database: str) -> Iterator[GrafanaDatabase]:
    """A migrated database with the history above and a read-only role, shared by the module.

    Shared because nothing here writes: Grafana's role could not (read-only and SELECT-only).
    """
    name = f"grafana_{secrets.token_hex(4)}"
    role = f"grafana_ro_{secrets.token_hex(4)}"  # roles are cluster-wide: never collide
    url = pg.create_database(name, template=template_database)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            seed(conn)
            ensure_grafana_role(conn, secrets.token_urlsafe(18), role=role)
        yield GrafanaDatabase(url, role)
    finally:
        pg.drop_database(name)
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@contextlib.contextmanager
def as_grafana(db: GrafanaDatabase) -> Iterator[psycopg.Connection[Any]]:
    """A connection as Grafana's role (the test server trusts loopback, so no password)."""
    with psycopg.connect(db.url, user=db.role, autocommit=True) as conn:
        yield conn


# --- Grafana's side: variables, then the query ---------------------------------------------------


def resolve_variables(
    conn: psycopg.Connection[Any],
    dashboard: Mapping[str, Any],
    selected: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, VariableValue]:
    """Run the dashboard's variable queries in order, as Grafana does on load.

    A variable not in ``selected`` is "All": every ``__value`` its query returned.
    """
    values: dict[str, VariableValue] = {}
    for variable in query_variables(dashboard):
        sql = expand(variable.sql, variables=values, time_range=PERIOD, interval=INTERVAL)
        cursor = conn.execute(sql)
        columns = [column.name for column in cursor.description or ()]
        assert columns == ["__value", "__text"], f"variable {variable.name}: {columns}"
        options = [str(row[0]) for row in cursor.fetchall()]
        chosen = list(selected.get(variable.name, options) if selected else options)
        assert set(chosen) <= set(options), f"{variable.name}: {chosen} not among {options}"
        values[variable.name] = VariableValue(tuple(chosen), variable.multi, variable.include_all)
    return values


@dataclass(frozen=True, slots=True)
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def run_target(
    db: GrafanaDatabase, target: Target, selected: Mapping[str, Sequence[str]] | None = None
) -> Result:
    """The target's SQL as Grafana would send it, executed as Grafana's role."""
    with as_grafana(db) as conn:
        variables = resolve_variables(conn, DASHBOARDS[target.dashboard], selected)
        sql = expand(
            target.body["rawSql"], variables=variables, time_range=PERIOD, interval=INTERVAL
        )
        cursor = conn.execute(sql)
        return Result([c.name for c in cursor.description or ()], list(cursor.fetchall()))


def target_by_key(key: str) -> Target:
    (target,) = [t for t in POSTGRES_TARGETS if t.key == key]
    return target


def epoch_s(moment: datetime) -> Decimal:
    """A $__timeGroupAlias time: epoch seconds (numeric) of the bucket's start."""
    return Decimal(int(moment.timestamp()))


def num(value: Any) -> float | None:
    return None if value is None else float(value)


# --- every query runs ----------------------------------------------------------------------------


def test_every_postgres_query_is_listed() -> None:
    """The dashboards' PostgreSQL queries are exactly those this module knows the columns of."""
    found = {target.key for target in POSTGRES_TARGETS}
    assert found, "no PostgreSQL queries found in deploy/grafana/dashboards"
    assert sorted(found - set(EXPECTED_COLUMNS)) == [], "add the new panels to EXPECTED_COLUMNS"
    assert sorted(set(EXPECTED_COLUMNS) - found) == [], "panels gone: remove them here"


@pytest.mark.parametrize("target", POSTGRES_TARGETS, ids=lambda target: target.key)
def test_query_runs_and_returns_its_columns(
    grafana_database: GrafanaDatabase, target: Target
) -> None:
    """Each PostgreSQL query runs as Grafana's role and returns the columns its panel reads."""
    result = run_target(grafana_database, target)
    assert tuple(result.columns) == EXPECTED_COLUMNS.get(target.key), target.key
    fmt = target.body.get("format")
    assert fmt in ("time_series", "table"), f"{target.key}: format {fmt!r}"
    if fmt == "time_series":
        # Grafana needs a "time" column, ascending, and numbers for the values.
        assert result.columns[0] == "time"
        assert result.rows, f"{target.key}: the seeded history should show in this panel"
        times = [row[0] for row in result.rows]
        assert all(isinstance(t, datetime | Decimal | int | float) for t in times)
        assert times == sorted(times), f"{target.key}: rows not in time order"
        for row in result.rows:
            for name, value in zip(result.columns[1:], row[1:], strict=True):
                if name != "metric":
                    assert value is None or isinstance(value, int | float | Decimal), name


def test_no_panel_reads_raw_events() -> None:
    """Usage panels read the rollups: a year of raw events is tens of millions of rows."""
    for target in POSTGRES_TARGETS:
        assert not re.search(r"\b(?:FROM|JOIN)\s+events\b", target.body["rawSql"], re.I), target.key


def test_variables_list_organisations_and_their_sites(grafana_database: GrafanaDatabase) -> None:
    """The organisation variable lists every organisation; the site variable only theirs."""
    (dashboard,) = [d for d in DASHBOARDS.values() if query_variables(d)]
    with as_grafana(grafana_database) as conn:
        every = resolve_variables(conn, dashboard)
        north = resolve_variables(conn, dashboard, {"org": [NORTH]})
    assert every["org"].values == (NORTH, SOUTH)  # ordered by name: Norrkommun, Söderkommun
    assert set(every["site"].values) == {"gf-n1", "gf-n2", "gf-s1"}
    assert set(north["site"].values) == {"gf-n1", "gf-n2"}


# --- and some answer what they should ------------------------------------------------------------


def test_devices_offline_and_low_battery_count_active_devices_of_the_chosen_sites(
    grafana_database: GrafanaDatabase,
) -> None:
    """Offline and battery counts skip decommissioned devices and follow the site filter."""
    offline = target_by_key("carewatch-usage/Devices offline now/A")
    battery = target_by_key("carewatch-usage/Battery under 20 %/A")
    assert run_target(grafana_database, offline).rows == [(3,)]
    assert run_target(grafana_database, offline, {"org": [NORTH]}).rows == [(2,)]
    assert run_target(grafana_database, offline, {"site": ["gf-n1"]}).rows == [(1,)]
    assert run_target(grafana_database, battery).rows == [(3,)]
    table = run_target(grafana_database, target_by_key("carewatch-usage/Offline devices/A"))
    rows = table.as_dicts()
    assert [r["device"] for r in rows] == ["gf-n2-lock", "gf-s1-alarm", "gf-n1-lock"]
    assert rows[2]["offline since"] == utc("2026-11-08T10:15:00")


def test_time_to_acknowledge_percentiles_by_severity(grafana_database: GrafanaDatabase) -> None:
    """Median and p90 of acknowledge/resolve times of alerts opened in the period."""
    target = target_by_key("carewatch-usage/Time to acknowledge and resolve/A")
    rows = {r["severity"]: r for r in run_target(grafana_database, target).as_dicts()}
    assert list(rows) == ["critical", "high", "warning"]
    critical = rows["critical"]
    # Acknowledged after 60, 180 and 1000 s; resolved after 120 and 200 s.
    assert (critical["alerts"], critical["acknowledged"], critical["resolved"]) == (3, 3, 2)
    assert num(critical["acknowledge p50"]) == 180
    assert num(critical["acknowledge p90"]) == pytest.approx(180 + 0.8 * 820)
    assert num(critical["resolve p50"]) == 160
    assert num(critical["resolve p90"]) == pytest.approx(192)
    assert rows["high"]["acknowledge p50"] is None
    north = run_target(grafana_database, target, {"org": [NORTH]}).as_dicts()
    assert (north[0]["severity"], num(north[0]["acknowledge p50"])) == ("critical", 120)


def test_slowest_acknowledgements_come_first(grafana_database: GrafanaDatabase) -> None:
    """The slowest acknowledgements table is ordered by time to acknowledge, slowest first."""
    target = target_by_key("carewatch-usage/Slowest acknowledgements/A")
    rows = run_target(grafana_database, target).as_dicts()
    assert [(r["device"], num(r["time to acknowledge"])) for r in rows] == [
        ("gf-s1-alarm", 1000),
        ("gf-n1-alarm", 180),
        ("gf-n1-alarm", 60),
    ]


def test_camera_checks_count_only_night_hours_by_local_night(
    grafana_database: GrafanaDatabase,
) -> None:
    """18:00-06:00 local time is one night, labelled by its evening; day hours do not count."""
    target = target_by_key("carewatch-usage/Camera checks per night/A")
    rows = [
        (time, checks, num(mean))
        for time, checks, mean in run_target(grafana_database, target).rows
    ]
    assert rows == [
        (utc("2026-11-03T17:00:00"), 3, 40.0),  # 18:00 Stockholm time on the 3rd
        (utc("2026-11-04T17:00:00"), 2, 50.0),
        (utc("2026-11-06T17:00:00"), 7, 10.0),
    ]


def test_sites_side_by_side(grafana_database: GrafanaDatabase) -> None:
    """The site comparison sums the daily rollups of the period and counts alerts per site."""
    target = target_by_key("carewatch-usage/Sites in the period/A")
    rows = {r.pop("site"): r for r in run_target(grafana_database, target).as_dicts()}
    assert {site: {k: num(v) for k, v in row.items()} for site, row in rows.items()} == {
        "Ekbacken": {
            "camera checks": 5,
            "lock visits": 6,
            "robot minutes": 10,
            "alarms": 2,
            "alerts": 4,
            "offline now": 1,
        },
        "Havsutsikten": {
            "camera checks": 7,
            "lock visits": 0,
            "robot minutes": 0,
            "alarms": 1,
            "alerts": 1,
            "offline now": 1,
        },
        "Solgården": {
            "camera checks": 0,
            "lock visits": 1,
            "robot minutes": 5,
            "alarms": 0,
            "alerts": 0,
            "offline now": 1,
        },
    }


def test_events_per_type_leave_out_derived_types(grafana_database: GrafanaDatabase) -> None:
    """Events per type per day shows device event types, not lock.visit or battery.replaced."""
    target = target_by_key("carewatch-usage/Events per type per day/A")
    rows = run_target(grafana_database, target, {"org": [NORTH]}).rows
    assert {metric for _, metric, _ in rows} == {
        "alarm.pressed",
        "camera.check_ended",
        "lock.locked",
        "lock.unlocked",
        "robot.interaction",
    }
    # Local midnight of the 3rd in Stockholm is 23:00 UTC on the 2nd.
    assert (utc("2026-11-02T23:00:00"), "camera.check_ended", 3) in rows


def test_dead_letters_by_reason_per_hour(grafana_database: GrafanaDatabase) -> None:
    """Dead letters are grouped by $__timeGroupAlias hour buckets and reason, in the period."""
    target = target_by_key("carewatch-usage/Dead letters by reason/A")
    assert run_target(grafana_database, target).rows == [
        (epoch_s(utc("2026-11-03T10:00:00")), "invalid_json", 2),
        (epoch_s(utc("2026-11-03T10:00:00")), "unknown_device", 1),
        (epoch_s(utc("2026-11-05T00:00:00")), "invalid_json", 1),
    ]
    total = target_by_key("carewatch-usage/Dead letters in the period/A")
    assert run_target(grafana_database, total).rows == [(4,)]


# --- the role Grafana logs in as -----------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT password_hash FROM users",
        "SELECT token_hash FROM auth_tokens",
        "SELECT password_hash FROM broker_accounts",
        "SELECT mqtt_password_hash FROM devices",
        "SELECT * FROM devices",
        "SELECT payload FROM dead_letters",
        "SELECT * FROM audit_log",
    ],
)
def test_grafana_role_cannot_read_secrets(
    grafana_database: GrafanaDatabase, statement: str
) -> None:
    """Users, tokens, broker accounts, MQTT password hashes and raw payloads stay hidden."""
    with as_grafana(grafana_database) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE alerts SET state = 'resolved'",
        "DELETE FROM usage_site_daily",
        "CREATE TABLE grafana_was_here (x int)",
    ],
)
def test_grafana_role_cannot_write(grafana_database: GrafanaDatabase, statement: str) -> None:
    """Sessions of the role are read-only: a dashboard editor's SQL cannot change anything."""
    with as_grafana(grafana_database) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute(statement)


def test_grafana_role_is_not_privileged_and_updates_in_place(
    grafana_database: GrafanaDatabase,
) -> None:
    """Running the command again keeps one role, unprivileged, with the new password."""
    with psycopg.connect(grafana_database.url, autocommit=True) as conn:
        before = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (grafana_database.role,)
        ).fetchone()
        created = ensure_grafana_role(conn, "another-password-1234", role=grafana_database.role)
        row = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolpassword"
            " FROM pg_authid WHERE rolname = %s",
            (grafana_database.role,),
        ).fetchone()
    assert created is False
    assert row is not None
    assert before is not None
    assert row[:4] == (False, False, False, False)
    assert row[4].startswith("SCRAM-SHA-256$")
    assert row[4] != before[0]


def test_cli_sets_up_the_role_and_refuses_bad_input(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`carewatch grafana role` creates, then updates; refuses an empty password, a bad name."""
    role = f"grafana_cli_{secrets.token_hex(4)}"
    argv = ["grafana", "role", "--database-url", database_url, "--name", role, "--password-stdin"]
    try:
        for expected in ("created", "updated"):
            monkeypatch.setattr("sys.stdin", io.StringIO("a-long-enough-secret\n"))
            assert main(argv) == 0
            assert f"grafana role {role} {expected}" in capsys.readouterr().out
        monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
        assert main(argv) == 2
        assert "password is empty" in capsys.readouterr().err
        monkeypatch.setattr("sys.stdin", io.StringIO("a-long-enough-secret\n"))
        assert main([*argv[:4], "--name", "Grafana; DROP", "--password-stdin"]) == 2
        assert "invalid role name" in capsys.readouterr().err
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def test_role_needs_the_migrated_schema(pg: PostgresInstance) -> None:
    """On a database without the schema the role is refused with what to do."""
    name = f"empty_{secrets.token_hex(4)}"
    url = pg.create_database(name)
    try:
        with (
            psycopg.connect(url, autocommit=True) as conn,
            pytest.raises(AdminError, match="run carewatch migrate first"),
        ):
            ensure_grafana_role(conn, "a-long-enough-secret", role=f"grafana_{name}")
    finally:
        pg.drop_database(name)
