"""``/api/v1/night-round`` and ``/api/v1/residences/{id}/visits``: the night's planned checks
with their states, and physical visits recorded by staff, scoped to the caller (+#11)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from carewatch.settings import Settings
from devices.supervision import local_instant, night_of
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
    "admin": ("kommun", "admin"),
    "manager": ("kommun", "manager"),
    "caregiver": ("kommun", "caregiver"),
    "technician": ("kommun", "technician"),
    "other-admin": ("annan", "admin"),
}
NEW_YORK = ZoneInfo("America/New_York")  # site a: far from UTC, so local and UTC times differ
# A past night, three nights back: every window is over.
NIGHT = night_of(datetime.now(UTC), NEW_YORK) - timedelta(days=3)


@dataclass(frozen=True)
class World(ApiWorld):
    one: int  # Lgh 1: checks 22:00 and 02:00
    two: int  # Lgh 2: checks 23:00 and 01:00
    alert_id: int  # Lgh 2's physical_visit_needed of 01:00


def at(local: time, night: date = NIGHT) -> datetime:
    return local_instant(night, local, NEW_YORK)


def residence(conn: psycopg.Connection[Any], site: str, label: str, *times: str) -> int:
    row = conn.execute(
        "INSERT INTO residences (site_id, label) VALUES (%s, %s) RETURNING id", (site, label)
    ).fetchone()
    assert row is not None
    conn.execute(
        "INSERT INTO supervision_plans (residence_id, recorded_at, recorded_by, check_times)"
        " VALUES (%s, '2020-01-01T00:00:00Z', 'manager', %s::time[])",
        (row[0], list(times)),
    )
    residence_id: int = row[0]
    return residence_id


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[World]:
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a", "site-b")
            add_org_with_sites(conn, "annan", "site-c")
            conn.execute("UPDATE sites SET timezone = 'America/New_York' WHERE id = 'site-a'")
            for username, (org, role) in USERS.items():
                add_user(conn, username, org, role)
            one = residence(conn, "site-a", "Lgh 1", "22:00", "02:00")
            two = residence(conn, "site-a", "Lgh 2", "23:00", "01:00")
            residence(conn, "site-b", "Lgh 1", "22:00")
            residence(conn, "site-c", "Lgh 9", "22:00")
            add_device(conn, "cam-0002", "site-a", "safety_camera")
            add_device(conn, "lock-0001", "site-a")
            conn.execute("UPDATE devices SET residence_id = %s WHERE id = 'cam-0002'", (two,))
            conn.execute("UPDATE devices SET residence_id = %s WHERE id = 'lock-0001'", (one,))
            # The watchdog judged two checks; an absence covers Lgh 1's 02:00.
            conn.execute(
                "INSERT INTO supervision_checks (residence_id, planned_at, night, state, seen_at,"
                " duration_s) VALUES (%s, %s, %s, 'done', %s, 12.5)",
                (one, at(time(22)), NIGHT, at(time(22)) + timedelta(minutes=3)),
            )
            conn.execute(
                "INSERT INTO supervision_checks (residence_id, planned_at, night, state, not_seen,"
                " visit_needed) VALUES (%s, %s, %s, 'visit_needed', true, true)",
                (two, at(time(1)), NIGHT),
            )
            conn.execute(
                "INSERT INTO absences (residence_id, reason, starts_at, expected_end, created_by)"
                " VALUES (%s, 'hospital', %s, %s, 'caregiver')",
                (one, at(time(1, 30)), at(time(3))),
            )
            alert = conn.execute(
                "INSERT INTO alerts (device_id, rule, severity, state, opened_at, reason,"
                " last_event_at, residence_id, planned_at)"
                " VALUES ('cam-0002', 'physical_visit_needed', 'critical', 'open', %s,"
                " 'check planned 01:00: physical visit needed', %s, %s, %s) RETURNING id",
                (at(time(1, 45)), at(time(1, 45)), two, at(time(1))),
            ).fetchone()
            assert alert is not None
        with running_api(Settings(database_url=database_url)) as base:
            tokens = {name: login(base, name) for name in USERS}
            yield World(base, database_url, tokens, one, two, alert[0])


def site_round(world: World, user: str, query: str) -> dict[str, Any]:
    response = world.call(user, "GET", f"/night-round?{query}")
    assert response.status == 200, response.body
    answer: dict[str, Any] = response.json()
    assert answer["truncated"] is False
    sites: list[dict[str, Any]] = answer["sites"]
    assert len(sites) == 1
    return sites[0]


def test_the_night_round_shows_each_check_in_time_order_with_its_state(world: World) -> None:
    """Judged checks carry the watchdog's verdict, the rest are due or paused, in time order."""
    site = site_round(world, "technician", f"site=site-a&night={NIGHT}")
    assert (site["site_id"], site["timezone"], site["night"]) == (
        "site-a",
        "America/New_York",
        NIGHT.isoformat(),
    )
    summary = [
        (c["residence_label"], c["planned_local"], c["state"], c["judged"]) for c in site["checks"]
    ]
    assert summary == [
        ("Lgh 1", "22:00", "done", True),
        ("Lgh 2", "23:00", "due", False),
        ("Lgh 2", "01:00", "visit_needed", True),
        ("Lgh 1", "02:00", "paused", False),
    ]
    first, _, third, _ = site["checks"]
    assert datetime.fromisoformat(first["planned_at"]) == at(time(22))
    assert datetime.fromisoformat(first["window_start"]) == at(time(21, 45))
    assert datetime.fromisoformat(first["window_end"]) == at(time(22, 15))
    assert datetime.fromisoformat(first["seen_at"]) == at(time(22, 3))
    assert first["duration_s"] == 12.5
    assert (third["not_seen"], third["visit_needed"], third["by_visit"]) == (True, True, False)
    assert third["alert_ids"] == [world.alert_id]
    assert site["residences"] == [
        {"id": world.one, "label": "Lgh 1", "open_alert_ids": []},
        {"id": world.two, "label": "Lgh 2", "open_alert_ids": [world.alert_id]},
    ]


def test_local_times_follow_the_sites_time_zone(world: World) -> None:
    """22:00 is the site's own: New York's is hours after Stockholm's, both said "22:00"."""
    a = site_round(world, "caregiver", f"site=site-a&night={NIGHT}")
    b = site_round(world, "caregiver", f"site=site-b&night={NIGHT}")
    planned_a = datetime.fromisoformat(a["checks"][0]["planned_at"])
    planned_b = datetime.fromisoformat(b["checks"][0]["planned_at"])
    assert planned_a == at(time(22))
    assert planned_b == local_instant(NIGHT, time(22), ZoneInfo("Europe/Stockholm"))
    assert timedelta(hours=4) <= planned_a - planned_b <= timedelta(hours=7)
    assert a["checks"][0]["planned_local"] == b["checks"][0]["planned_local"] == "22:00"


def test_a_night_ahead_is_upcoming_and_the_default_is_tonight(world: World) -> None:
    """Checks of a future night are upcoming; without ``night`` each site answers its own."""
    ahead = night_of(datetime.now(UTC), NEW_YORK) + timedelta(days=3)
    site = site_round(world, "manager", f"site=site-a&night={ahead}")
    assert {c["state"] for c in site["checks"]} == {"upcoming"}
    assert len(site["checks"]) == 4
    response = world.call("manager", "GET", "/night-round")
    assert response.status == 200
    nights = {s["site_id"]: s["night"] for s in response.json()["sites"]}
    now = datetime.now(UTC)
    assert nights == {
        "site-a": night_of(now, NEW_YORK).isoformat(),
        "site-b": night_of(now, ZoneInfo("Europe/Stockholm")).isoformat(),
    }


def test_another_organisation_sees_nothing_of_it(world: World) -> None:
    """Annan's admin gets its own site only; kommun's site and residences answer 404."""
    response = world.call("other-admin", "GET", f"/night-round?night={NIGHT}")
    assert [s["site_id"] for s in response.json()["sites"]] == ["site-c"]
    assert world.call("other-admin", "GET", "/night-round?site=site-a").status == 404
    assert world.call("other-admin", "GET", f"/residences/{world.one}/visits").status == 404
    refused = world.call("other-admin", "POST", f"/residences/{world.one}/visits", {})
    assert refused.status == 404
    assert b"Lgh" not in refused.body


@pytest.mark.parametrize("night", ["2026-13-01", "1999-12-31", "20261201", "1", "2026-02-30"])
def test_a_bad_night_is_refused(world: World, night: str) -> None:
    """A night that is no date between 2000 and 2099 is a 422."""
    assert world.call("admin", "GET", f"/night-round?night={night}").status == 422


def test_care_staff_record_visits_and_every_role_lists_them(world: World) -> None:
    """A caregiver's visit is 201, staff-sourced and audited; listed newest first with lock
    visits; managers and technicians may not record one."""
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO physical_visits (residence_id, visited_at, source, lock_device_id)"
            " VALUES (%s, now() - interval '2 hours', 'lock', 'lock-0001')",
            (world.one,),
        )
    path = f"/residences/{world.one}/visits"
    earlier = (datetime.now(UTC) - timedelta(hours=1)).astimezone(NEW_YORK)
    recorded = world.call("caregiver", "POST", path, {"visited_at": earlier.isoformat()})
    assert recorded.status == 201, recorded.body
    visit = recorded.json()
    assert (visit["source"], visit["recorded_by"], visit["note"]) == ("staff", "caregiver", "")
    assert datetime.fromisoformat(visit["visited_at"]) == earlier
    now = world.call("admin", "POST", path, {"note": "all well"})
    assert now.status == 201, now.body
    again = world.call("caregiver", "POST", path, {"visited_at": earlier.isoformat()})
    assert again.status == 409
    for role in ("manager", "technician"):
        assert world.call(role, "POST", path, {}).status == 403
    listed = world.call("technician", "GET", path)
    assert listed.status == 200
    assert [(v["source"], v["recorded_by"]) for v in listed.json()] == [
        ("staff", "admin"),
        ("staff", "caregiver"),
        ("lock", None),
    ]
    since = (datetime.now(UTC) - timedelta(minutes=90)).isoformat()
    recent = world.call("manager", "GET", f"{path}?since={since.replace('+', '%2B')}")
    assert [v["recorded_by"] for v in recent.json()] == ["admin", "caregiver"]
    assert world.rows(
        "SELECT action, username, org_id FROM audit_log WHERE residence_id = %s ORDER BY id",
        world.one,
    ) == [("visit.record", "caregiver", "kommun"), ("visit.record", "admin", "kommun")]


def _visited(offset: timedelta) -> Callable[[], dict[str, Any]]:
    """A body visited ``offset`` from the moment the test runs (not when it was collected: a
    suite takes minutes)."""
    return lambda: {"visited_at": (datetime.now(UTC) + offset).isoformat()}


@pytest.mark.parametrize(
    "make_body",
    [
        lambda: {"visited_at": "in a minute"},
        lambda: {"visited_at": 1764000000},
        lambda: {"visited_at": "2026-12-01T10:00:00"},  # no offset
        _visited(timedelta(minutes=10)),
        _visited(-timedelta(hours=25)),
        lambda: {"note": "x" * 501},
        lambda: {"note": "a\x00b"},
        lambda: {"note": "line\nbreak"},
        lambda: {"by": "someone"},
    ],
    ids=[
        "words",
        "number",
        "no-offset",
        "future",
        "too-old",
        "long-note",
        "nul",
        "control",
        "unknown-field",
    ],
)
def test_a_bad_visit_is_refused_and_stores_nothing(
    world: World, make_body: Callable[[], dict[str, Any]]
) -> None:
    """A visit in the future, over a day old, without an offset or with a bad note is a 422."""
    response = world.call("caregiver", "POST", f"/residences/{world.two}/visits", make_body())
    assert response.status == 422, response.body
    assert world.rows(
        "SELECT count(*) FROM physical_visits WHERE residence_id = %s", world.two
    ) == [(0,)]
