"""What migration 0007 (+#11) enforces by itself, whoever writes: a device's residence is in the
device's site, one unresolved alert per planned check and rule, plans within the core's limits,
absence and maintenance periods forwards, visits that say where they come from."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.errors
import pytest

Connection = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture
def conn(database_url: str) -> Iterator[Connection]:
    """An autocommit connection to a migrated database with two sites and a camera at site a."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("INSERT INTO organisations (id, name) VALUES ('kommun', 'Kommun')")
        connection.execute(
            "INSERT INTO sites (id, org_id, name) VALUES"
            " ('site-a', 'kommun', 'A'), ('site-b', 'kommun', 'B')"
        )
        connection.execute(
            "INSERT INTO devices (id, kind, site_id) VALUES ('cam-1', 'camera', 'site-a')"
        )
        yield connection


def residence(conn: Connection, site_id: str = "site-a", label: str = "Lgh 1") -> int:
    row = conn.execute(
        "INSERT INTO residences (site_id, label) VALUES (%s, %s) RETURNING id", (site_id, label)
    ).fetchone()
    assert row is not None
    residence_id: int = row[0]
    return residence_id


def test_a_device_belongs_to_a_residence_of_its_own_site(conn: Connection) -> None:
    """A residence at site a takes site a's camera; not one at site b, and the camera cannot
    move to site b while it stays in the residence."""
    at_a, at_b = residence(conn, "site-a"), residence(conn, "site-b")
    conn.execute("UPDATE devices SET residence_id = %s WHERE id = 'cam-1'", (at_a,))
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("UPDATE devices SET residence_id = %s WHERE id = 'cam-1'", (at_b,))
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("UPDATE devices SET site_id = 'site-b' WHERE id = 'cam-1'")
    conn.execute(
        "UPDATE devices SET site_id = 'site-b', residence_id = %s WHERE id = 'cam-1'", (at_b,)
    )
    conn.execute("UPDATE devices SET residence_id = NULL WHERE id = 'cam-1'")


@pytest.mark.parametrize("label", ["", "   ", "x" * 65], ids=["empty", "blank", "long"])
def test_a_residence_has_a_label_staff_can_use(conn: Connection, label: str) -> None:
    """Labels are not blank and at most 64 characters, unique within a site."""
    with pytest.raises(psycopg.errors.CheckViolation):
        residence(conn, label=label)


def test_a_label_is_unique_within_a_site(conn: Connection) -> None:
    """The same label at another site is another residence; at the same site it is refused."""
    residence(conn, "site-a", "Lgh 2")
    residence(conn, "site-b", "Lgh 2")
    with pytest.raises(psycopg.errors.UniqueViolation):
        residence(conn, "site-a", "Lgh 2")


_ALERT = """
INSERT INTO alerts (device_id, rule, severity, state, opened_at, residence_id, planned_at)
VALUES ('cam-1', 'supervision_missed', 'high', 'open', now(), %s, '2030-01-01 01:00+00')
RETURNING id
"""


def test_one_unresolved_alert_per_planned_check_and_rule(conn: Connection) -> None:
    """A second unresolved supervision_missed for the same check is refused; once the first is
    resolved, the check may alert again."""
    home = residence(conn)
    first = conn.execute(_ALERT, (home,)).fetchone()
    assert first is not None
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(_ALERT, (home,))
    conn.execute("UPDATE alerts SET state = 'resolved', resolved_at = now() WHERE id = %s", first)
    conn.execute(_ALERT, (home,))


@pytest.mark.parametrize(
    ("columns", "values"),
    [
        ("check_times, window_s", "'{22:00}', 59"),
        ("check_times, retry_s", "'{22:00}', 10801"),
        ("check_times, weekdays", "'{22:00}', '{7}'"),
        ("check_times, weekdays", "'{22:00}', '{1,NULL}'"),
        ("check_times", "'{22:00,NULL}'"),
        ("check_times, follow_up", "'{22:00}', 'call'"),
        ("check_times, valid_from, valid_to", "'{22:00}', '2030-02-01', '2030-01-31'"),
    ],
    ids=["window", "retry", "weekday", "null-weekday", "null-time", "follow-up", "backwards"],
)
def test_a_plan_outside_the_cores_limits_is_refused(
    conn: Connection, columns: str, values: str
) -> None:
    """The database refuses plan versions the core (devices.supervision) would refuse."""
    home = residence(conn)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            f"INSERT INTO supervision_plans (residence_id, recorded_by, {columns})"  # noqa: S608 - test constants
            f" VALUES (%s, 'manager', {values})",
            (home,),
        )


def test_a_plan_version_has_its_defaults(conn: Connection) -> None:
    """Every day of the week, ±15 min, a retry after 15 min, then a physical visit."""
    home = residence(conn)
    row = conn.execute(
        "INSERT INTO supervision_plans (residence_id, recorded_by, check_times)"
        " VALUES (%s, 'manager', '{22:00,02:00}')"
        " RETURNING weekdays, window_s, retry_s, follow_up, note",
        (home,),
    ).fetchone()
    assert row == ([0, 1, 2, 3, 4, 5, 6], 900, 900, "physical_visit", "")


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO absences (residence_id, reason, starts_at, expected_end, created_by)"
        " VALUES (%s, 'hospital', now(), now() - interval '1 hour', 'nattpersonal')",
        "INSERT INTO absences (residence_id, reason, starts_at, created_by)"
        " VALUES (%s, 'vacation', now(), 'nattpersonal')",
        "INSERT INTO physical_visits (residence_id, visited_at, source)"
        " VALUES (%s, now(), 'staff')",
        "INSERT INTO physical_visits (residence_id, visited_at, source, recorded_by)"
        " VALUES (%s, now(), 'lock', 'nattpatrull')",
    ],
    ids=[
        "absence-backwards",
        "absence-reason",
        "staff-visit-without-who",
        "lock-visit-without-lock",
    ],
)
def test_absences_and_visits_say_what_they_are(conn: Connection, statement: str) -> None:
    """Absences run forwards for a known reason; a visit names who recorded it or its lock."""
    home = residence(conn)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(statement, (home,))


def test_maintenance_ends_after_it_starts(conn: Connection) -> None:
    """A device's maintenance window always ends, after it starts."""
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO device_maintenance (device_id, starts_at, ends_at, created_by)"
            " VALUES ('cam-1', now(), now(), 'tekniker')"
        )
    with pytest.raises(psycopg.errors.NotNullViolation):
        conn.execute(
            "INSERT INTO device_maintenance (device_id, starts_at, created_by)"
            " VALUES ('cam-1', now(), 'tekniker')"
        )


def test_a_lock_visit_is_stored_once(conn: Connection) -> None:
    """The same lock visit seen twice (two gateways, a restart) is one row."""
    home = residence(conn)
    conn.execute("INSERT INTO devices (id, kind, site_id) VALUES ('lock-1', 'door_lock', 'site-a')")
    insert = (
        "INSERT INTO physical_visits (residence_id, visited_at, source, lock_device_id)"
        " VALUES (%s, '2030-01-01 01:20+00', 'lock', 'lock-1') ON CONFLICT DO NOTHING"
    )
    conn.execute(insert, (home,))
    conn.execute(insert, (home,))
    assert conn.execute("SELECT count(*) FROM physical_visits").fetchone() == (1,)
