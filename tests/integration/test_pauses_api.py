"""``/api/v1/pauses``: the absences and maintenance windows in force now at the caller's sites,
by site and label; expired, ended and upcoming ones never, another organisation's never (+#11).

The world: kommun (sites a and b, b in Helsinki time) and annan (site c), each with residences
and devices whose absences and windows are current, over or still to come, written as the API
writes them but with times the API would refuse (the past), relative to the database's clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from carewatch.settings import Settings
from tests.fixtures.api_client import (
    ApiWorld,
    add_device,
    add_org_with_sites,
    add_user,
    login,
    module_database,
)
from tests.fixtures.api_server import running_api
from tools.local.postgres import PostgresInstance

USERS = {
    "admin": ("kommun", "admin", ()),
    "technician": ("kommun", "technician", ()),
    "caregiver": ("kommun", "caregiver", ()),
    "caregiver-b": ("kommun", "caregiver", ("site-b",)),
    "other-admin": ("annan", "admin", ()),
}

# (site, residence label, reason, starts_at, expected_end, ended_at): intervals from now() in
# SQL, so that the world is built at the time the module runs.
ABSENCES: tuple[tuple[str, str, str, str, str | None, str | None], ...] = (
    ("site-a", "Lgh 2", "hospital", "-1 hour", "1 day", None),  # current, with an end
    ("site-a", "Lgh 1", "travel", "-2 days", None, None),  # current, until ended
    ("site-a", "Lgh 3", "respite", "-3 days", "-1 hour", None),  # expired
    ("site-a", "Lgh 4", "hospital", "-1 hour", "1 day", "-10 minutes"),  # ended early
    ("site-a", "Lgh 5", "travel", "1 hour", "2 days", None),  # upcoming
    ("site-a", "Lgh 6", "other", "1 hour", None, "-1 minute"),  # upcoming, cancelled
    ("site-b", "Lgh 7", "other", "-5 minutes", "3 hours", None),  # current
    ("site-c", "Lgh 1", "hospital", "-1 hour", "1 day", None),  # current, annan's
)
# (device, kind, site, residence label or None, starts_at, ends_at, ended_at, decommissioned)
# with the same intervals.
WINDOWS: tuple[tuple[str, str, str, str | None, str, str, str | None, bool], ...] = (
    ("cam-a1", "safety_camera", "site-a", "Lgh 2", "-1 hour", "2 hours", None, False),  # current
    ("lock-a2", "door_lock", "site-a", None, "-5 minutes", "30 minutes", None, False),  # current
    ("lock-a3", "door_lock", "site-a", None, "-3 hours", "-1 hour", None, False),  # expired
    ("lock-a4", "door_lock", "site-a", None, "-1 hour", "2 hours", "-5 minutes", False),  # ended
    ("lock-a5", "door_lock", "site-a", None, "1 hour", "2 hours", None, False),  # upcoming
    ("lock-a6", "door_lock", "site-a", None, "-1 hour", "2 hours", None, True),  # decommissioned
    ("lock-b1", "door_lock", "site-b", "Lgh 7", "-1 hour", "1 hour", None, False),  # current
    ("lock-c1", "door_lock", "site-c", None, "-1 hour", "1 hour", None, False),  # annan's
)


def seed(conn: psycopg.Connection[Any]) -> None:
    """The residences, devices, absences and windows of the module's world."""
    residence: dict[tuple[str, str], int] = {}
    labels = {(site, label) for site, label, *_ in ABSENCES} | {
        (site, home) for _, _, site, home, *_ in WINDOWS if home is not None
    }
    for site, label in sorted(labels):
        row = conn.execute(
            "INSERT INTO residences (site_id, label) VALUES (%s, %s) RETURNING id", (site, label)
        ).fetchone()
        assert row is not None
        residence[site, label] = row[0]
    for site, label, reason, starts, expected_end, ended in ABSENCES:
        conn.execute(
            "INSERT INTO absences (residence_id, reason, starts_at, expected_end, ended_at, note,"
            " created_by) VALUES (%s, %s, now() + %s::interval, now() + %s::interval,"
            " now() + %s::interval, %s, 'seed')",
            (residence[site, label], reason, starts, expected_end, ended, f"note {label}"),
        )
    for device, kind, site, home, starts, ends, ended, retired in WINDOWS:
        add_device(conn, device, site, kind)
        conn.execute(
            "UPDATE devices SET residence_id = %s,"
            " status = CASE WHEN %s THEN 'decommissioned' ELSE status END WHERE id = %s",
            (residence.get((site, home or "")), retired, device),
        )
        conn.execute(
            "INSERT INTO device_maintenance (device_id, starts_at, ends_at, ended_at, note,"
            " created_by) VALUES (%s, now() + %s::interval, now() + %s::interval,"
            " now() + %s::interval, %s, 'seed')",
            (device, starts, ends, ended, f"repair {device}"),
        )


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[ApiWorld]:
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a", "site-b")
            add_org_with_sites(conn, "annan", "site-c")
            conn.execute("UPDATE sites SET timezone = 'Europe/Helsinki' WHERE id = 'site-b'")
            for username, (org, role, sites) in USERS.items():
                add_user(conn, username, org, role, sites)
            seed(conn)
        with running_api(Settings(database_url=database_url)) as base:
            yield ApiWorld(base, database_url, {name: login(base, name) for name in USERS})


def pauses(world: ApiWorld, user: str, query: str = "") -> dict[str, Any]:
    response = world.call(user, "GET", f"/pauses{query}")
    assert response.status == 200, response.body
    body: dict[str, Any] = response.json()
    return body


def absent(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["site_id"], a["residence_label"]) for a in body["absences"]]


def in_repair(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["site_id"], m["device_id"]) for m in body["maintenance"]]


def test_only_current_pauses_are_listed_by_site_and_label(world: ApiWorld) -> None:
    """Current absences and windows, by site then label; expired, ended early, upcoming (also
    cancelled) ones and a decommissioned device's window are not listed."""
    body = pauses(world, "caregiver")
    assert absent(body) == [("site-a", "Lgh 1"), ("site-a", "Lgh 2"), ("site-b", "Lgh 7")]
    assert in_repair(body) == [("site-a", "cam-a1"), ("site-a", "lock-a2"), ("site-b", "lock-b1")]
    assert body["truncated"] is False


def test_an_absence_says_where_why_and_until_when(world: ApiWorld) -> None:
    """Each absence carries its residence, site, site time zone, reason, start, end and note."""
    by_label = {a["residence_label"]: a for a in pauses(world, "admin")["absences"]}
    hospital, travel, other = by_label["Lgh 2"], by_label["Lgh 1"], by_label["Lgh 7"]
    ((residence_id, starts_at, expected_end),) = world.rows(
        "SELECT r.id, a.starts_at, a.expected_end FROM absences a"
        " JOIN residences r ON r.id = a.residence_id"
        " WHERE r.site_id = 'site-a' AND r.label = 'Lgh 2'"
    )
    assert hospital["residence_id"] == residence_id
    assert (hospital["site_id"], hospital["site_name"]) == ("site-a", "Site site-a")
    assert (hospital["reason"], hospital["note"]) == ("hospital", "note Lgh 2")
    assert datetime.fromisoformat(hospital["starts_at"]) == starts_at
    assert datetime.fromisoformat(hospital["expected_end"]) == expected_end
    assert hospital["timezone"] == "Europe/Stockholm"  # the sites' default
    assert travel["expected_end"] is None  # until someone ends it
    assert other["timezone"] == "Europe/Helsinki"


def test_a_device_in_repair_says_what_where_and_until_when(world: ApiWorld) -> None:
    """Each window carries its device (kind, label), its residence if any, site and end."""
    by_device = {m["device_id"]: m for m in pauses(world, "admin")["maintenance"]}
    camera, lock = by_device["cam-a1"], by_device["lock-a2"]
    ((ends_at,),) = world.rows("SELECT ends_at FROM device_maintenance WHERE device_id = 'cam-a1'")
    assert (camera["device_kind"], camera["device_label"]) == ("safety_camera", "Lgh a1")
    assert camera["residence_label"] == "Lgh 2"
    assert camera["residence_id"] is not None
    assert datetime.fromisoformat(camera["ends_at"]) == ends_at
    assert camera["note"] == "repair cam-a1"
    assert (lock["residence_id"], lock["residence_label"]) == (None, None)
    assert by_device["lock-b1"]["timezone"] == "Europe/Helsinki"


def test_ending_a_pause_through_the_api_takes_it_off_the_list(world: ApiWorld) -> None:
    """An absence and a window recorded through the API are listed at once, and no longer once
    they are ended."""
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        add_device(conn, "lock-a9", "site-a")
        row = conn.execute(
            "INSERT INTO residences (site_id, label) VALUES ('site-a', 'Lgh 9') RETURNING id"
        ).fetchone()
    assert row is not None
    residence_id = row[0]
    ends_at = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    absence = world.call(
        "caregiver", "POST", f"/residences/{residence_id}/absences", {"reason": "hospital"}
    )
    window = world.call("technician", "POST", "/devices/lock-a9/maintenance", {"ends_at": ends_at})
    assert (absence.status, window.status) == (201, 201), (absence.body, window.body)
    body = pauses(world, "caregiver", "?site=site-a")
    assert ("site-a", "Lgh 9") in absent(body)
    assert ("site-a", "lock-a9") in in_repair(body)

    ended_absence = world.call(
        "caregiver", "POST", f"/residences/{residence_id}/absences/{absence.json()['id']}/end"
    )
    ended_window = world.call(
        "technician", "POST", f"/devices/lock-a9/maintenance/{window.json()['id']}/end"
    )
    assert (ended_absence.status, ended_window.status) == (200, 200)
    body = pauses(world, "caregiver", "?site=site-a")
    assert ("site-a", "Lgh 9") not in absent(body)
    assert ("site-a", "lock-a9") not in in_repair(body)


def test_another_organisations_pauses_are_never_listed(world: ApiWorld) -> None:
    """Each organisation sees its own pauses only; asking for the other's site is 404."""
    assert absent(pauses(world, "other-admin")) == [("site-c", "Lgh 1")]
    assert in_repair(pauses(world, "other-admin")) == [("site-c", "lock-c1")]
    for user in ("admin", "technician", "caregiver", "caregiver-b"):
        body = pauses(world, user)
        assert "site-c" not in {site for site, _ in absent(body) + in_repair(body)}
        refused = world.call(user, "GET", "/pauses?site=site-c")
        assert refused.status == 404
        assert b"annan" not in refused.body
    site_a = world.call("other-admin", "GET", "/pauses?site=site-a")
    assert site_a.status == 404


def test_a_caregiver_limited_to_a_site_sees_only_its_pauses(world: ApiWorld) -> None:
    """A caregiver of site b sees site b's pauses; site a, of the same organisation, is 404."""
    body = pauses(world, "caregiver-b")
    assert absent(body) == [("site-b", "Lgh 7")]
    assert in_repair(body) == [("site-b", "lock-b1")]
    assert world.call("caregiver-b", "GET", "/pauses?site=site-a").status == 404


def test_the_site_filter_narrows_to_one_site(world: ApiWorld) -> None:
    """``site`` answers that site's pauses only."""
    body = pauses(world, "admin", "?site=site-b")
    assert absent(body) == [("site-b", "Lgh 7")]
    assert in_repair(body) == [("site-b", "lock-b1")]
