"""``/api/v1/devices/{id}/maintenance``: a device's maintenance windows ("in repair", +#11),
recorded and ended by technicians and admins, read by every role that sees the device, audited,
and shown in the device JSON as ``maintenance_until``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from carewatch.settings import Settings
from tests.fixtures.api_client import (
    ApiResponse,
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
    "manager": ("kommun", "manager", ()),
    "caregiver": ("kommun", "caregiver", ()),
    "caregiver-b": ("kommun", "caregiver", ("site-b",)),
    "other-admin": ("annan", "admin", ()),
}
_devices = itertools.count(1)


@dataclass(frozen=True)
class World(ApiWorld):
    def new_device(self, site: str = "site-a") -> str:
        """A device no other test uses."""
        device_id = f"lock-maint-{next(_devices)}"
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            add_device(conn, device_id, site)
        return device_id


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[World]:
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a", "site-b")
            add_org_with_sites(conn, "annan", "site-c")
            for username, (org, role, sites) in USERS.items():
                add_user(conn, username, org, role, sites)
        with running_api(Settings(database_url=database_url)) as base:
            yield World(base, database_url, {name: login(base, name) for name in USERS})


def at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def window(world: World, device_id: str, user: str = "technician", **body: object) -> ApiResponse:
    return world.call(user, "POST", f"/devices/{device_id}/maintenance", body)


def test_lifecycle_start_read_list_end(world: World) -> None:
    """Recorded now, shown as current and in the device JSON, ended, then listed as over."""
    device_id = world.new_device()
    ends_at = datetime.now(UTC) + timedelta(hours=3)
    created = window(world, device_id, ends_at=ends_at.isoformat(), note="byter batteri")
    assert created.status == 201, created.body
    body = created.json()
    assert body["device_id"] == device_id
    assert body["state"] == "current"
    assert body["note"] == "byter batteri"
    assert body["created_by"] == "technician"
    assert body["ended_at"] is None
    assert datetime.fromisoformat(body["ends_at"]) == ends_at

    device = world.call("caregiver", "GET", f"/devices/{device_id}").json()
    assert datetime.fromisoformat(device["maintenance_until"]) == ends_at
    listed = world.call("caregiver", "GET", "/devices?site=site-a").json()["items"]
    assert {d["id"]: d["maintenance_until"] for d in listed}[device_id] is not None

    seen = world.call("manager", "GET", f"/devices/{device_id}/maintenance")
    assert seen.status == 200
    assert [w["id"] for w in seen.json()] == [body["id"]]

    ended = world.call("admin", "POST", f"/devices/{device_id}/maintenance/{body['id']}/end")
    assert ended.status == 200, ended.body
    assert ended.json()["state"] == "over"
    assert ended.json()["ended_at"] is not None
    assert (
        world.call("caregiver", "GET", f"/devices/{device_id}").json()["maintenance_until"] is None
    )
    (listed_window,) = world.call("caregiver", "GET", f"/devices/{device_id}/maintenance").json()
    assert listed_window["state"] == "over"

    assert world.rows(
        "SELECT action, username, org_id FROM audit_log WHERE device_id = %s ORDER BY id",
        device_id,
    ) == [
        ("device.maintenance", "technician", "kommun"),
        ("device.maintenance_end", "admin", "kommun"),
    ]


def test_an_upcoming_window_is_listed_and_not_in_the_device_json(world: World) -> None:
    """A window that starts later is upcoming, and the device is not in repair yet."""
    device_id = world.new_device()
    created = window(
        world, device_id, starts_at=at(timedelta(days=1)), ends_at=at(timedelta(days=2))
    )
    assert created.status == 201, created.body
    assert created.json()["state"] == "upcoming"
    assert world.call("admin", "GET", f"/devices/{device_id}").json()["maintenance_until"] is None
    # Ending it cancels it: it covers nothing, so a window in its place no longer overlaps.
    ended = world.call(
        "technician", "POST", f"/devices/{device_id}/maintenance/{created.json()['id']}/end"
    )
    assert ended.status == 200, ended.body
    again = window(world, device_id, starts_at=at(timedelta(days=1)), ends_at=at(timedelta(days=2)))
    assert again.status == 201, again.body


def test_overlapping_windows_are_refused(world: World) -> None:
    """A second window overlapping the first is 409; one right after it is fine."""
    device_id = world.new_device()
    first_end = datetime.now(UTC) + timedelta(hours=4)
    assert window(world, device_id, ends_at=first_end.isoformat()).status == 201
    overlapping = window(
        world, device_id, starts_at=at(timedelta(hours=3)), ends_at=at(timedelta(hours=6))
    )
    assert overlapping.status == 409
    assert "overlaps" in overlapping.json()["detail"]
    after = window(
        world,
        device_id,
        starts_at=first_end.isoformat(),
        ends_at=(first_end + timedelta(hours=1)).isoformat(),
    )
    assert after.status == 201, after.body
    assert len(world.call("admin", "GET", f"/devices/{device_id}/maintenance").json()) == 2


def test_ending_twice_is_refused(world: World) -> None:
    """Ending a window that is already over is 409 and changes nothing; an unknown one is 404."""
    device_id = world.new_device()
    created = window(world, device_id, ends_at=at(timedelta(hours=1))).json()
    path = f"/devices/{device_id}/maintenance/{created['id']}/end"
    first = world.call("technician", "POST", path)
    assert first.status == 200
    second = world.call("technician", "POST", path)
    assert second.status == 409
    assert world.rows("SELECT ended_at FROM device_maintenance WHERE id = %s", created["id"]) == [
        (datetime.fromisoformat(first.json()["ended_at"]),)
    ]
    other = world.new_device()
    assert (
        world.call("technician", "POST", f"/devices/{other}/maintenance/{created['id']}/end").status
        == 404
    )
    assert (
        world.call("technician", "POST", f"/devices/{device_id}/maintenance/999999/end").status
        == 404
    )


def test_a_decommissioned_device_gets_no_window(world: World) -> None:
    """409 for a device out of service."""
    device_id = world.new_device()
    assert world.call("admin", "DELETE", f"/devices/{device_id}").status == 200
    refused = window(world, device_id, ends_at=at(timedelta(hours=1)))
    assert refused.status == 409
    assert world.rows("SELECT 1 FROM device_maintenance WHERE device_id = %s", device_id) == []


@pytest.mark.parametrize("user", ["manager", "caregiver"])
def test_roles_without_fleet_rights_get_403(world: World, user: str) -> None:
    """Managers and caregivers see the device (and its windows) but may not record or end one."""
    device_id = world.new_device()
    created = window(world, device_id, ends_at=at(timedelta(hours=1))).json()
    assert window(world, device_id, user, ends_at=at(timedelta(hours=5))).status == 403
    path = f"/devices/{device_id}/maintenance/{created['id']}/end"
    assert world.call(user, "POST", path).status == 403
    assert world.call(user, "GET", f"/devices/{device_id}/maintenance").status == 200
    assert world.rows(
        "SELECT count(*), count(ended_at) FROM device_maintenance WHERE device_id = %s", device_id
    ) == [(1, 0)]


@pytest.mark.parametrize("user", ["other-admin", "caregiver-b"])
def test_a_device_out_of_scope_is_404(world: World, user: str) -> None:
    """Another organisation's admin, or a caregiver of another site, finds nothing."""
    device_id = world.new_device("site-a")
    created = window(world, device_id, ends_at=at(timedelta(hours=1))).json()
    assert window(world, device_id, user, ends_at=at(timedelta(hours=5))).status == 404
    path = f"/devices/{device_id}/maintenance/{created['id']}/end"
    assert world.call(user, "POST", path).status == 404
    assert world.call(user, "GET", f"/devices/{device_id}/maintenance").status == 404
    assert world.rows(
        "SELECT count(*), count(ended_at) FROM device_maintenance WHERE device_id = %s", device_id
    ) == [(1, 0)]


BAD_BODIES: dict[str, dict[str, object]] = {
    "no ends_at": {},
    "ends before it starts": {"starts_at": "+1h", "ends_at": "+30m"},
    "ends when it starts": {"starts_at": "+1h", "ends_at": "+1h"},
    "longer than 30 days": {"starts_at": "+1h", "ends_at": "+745h"},
    "starts over 24 h back": {"starts_at": "-25h", "ends_at": "+1h"},
    "already over": {"starts_at": "-5h", "ends_at": "-1h"},
    "no offset": {"ends_at": "2030-01-01T00:00:00"},
    "a number": {"ends_at": 1_900_000_000},
    "note too long": {"ends_at": "+1h", "note": "x" * 501},
    "unknown field": {"ends_at": "+1h", "reason": "repair"},
    "NUL in note": {"ends_at": "+1h", "note": "a\x00b"},
}


def _resolve(value: object, now: datetime) -> object:
    # "+1h" / "-25h" / "+30m": that long from one ``now``, so the table stays readable.
    if isinstance(value, str) and value[:1] in "+-" and value[-1:] in "hm":
        amount = int(value[1:-1]) * (1 if value[0] == "+" else -1)
        unit = "hours" if value[-1] == "h" else "minutes"
        return (now + timedelta(**{unit: amount})).isoformat()
    return value


@pytest.mark.parametrize("name", BAD_BODIES)
def test_bad_bodies_are_422(world: World, name: str) -> None:
    """A body outside the rules is 422 and records nothing."""
    device_id = world.new_device()
    now = datetime.now(UTC)
    body = {key: _resolve(value, now) for key, value in BAD_BODIES[name].items()}
    response = world.call("technician", "POST", f"/devices/{device_id}/maintenance", body)
    assert response.status == 422, response.body
    assert world.rows("SELECT 1 FROM device_maintenance WHERE device_id = %s", device_id) == []


def test_a_window_up_to_the_limits_is_accepted(world: World) -> None:
    """Backdated 23 h and lasting almost 30 days is within the rules."""
    device_id = world.new_device()
    starts = datetime.now(UTC) - timedelta(hours=23)
    created = window(
        world,
        device_id,
        starts_at=starts.isoformat(),
        ends_at=(starts + timedelta(days=30) - timedelta(minutes=1)).isoformat(),
    )
    assert created.status == 201, created.body
    assert created.json()["state"] == "current"


def test_windows_over_for_30_days_are_not_listed(world: World) -> None:
    """An old window drops out of the list; the device JSON carries the field, null."""
    device_id = world.new_device()
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO device_maintenance (device_id, starts_at, ends_at, created_by)"
            " VALUES (%s, now() - interval '40 days', now() - interval '31 days', 'x'),"
            "        (%s, now() - interval '20 days', now() - interval '19 days', 'x')",
            (device_id, device_id),
        )
    listed = world.call("caregiver", "GET", f"/devices/{device_id}/maintenance").json()
    assert [w["state"] for w in listed] == ["over"]
    device = world.call("caregiver", "GET", f"/devices/{device_id}").json()
    assert device["maintenance_until"] is None
