"""Authorization of the device read API: every endpoint x every role x own site / other site /
other organisation; what a role cannot see answers 404 and never appears in lists or counts.

The world is built once for the module, as in test_authorization_matrix.py: kommun (sites a
and b) and annan (site c), a lock with a heartbeat at each site, a user per role in kommun and
a caregiver limited to site a. Every role reads devices (api/routes/devices.py says why).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import psycopg
import pytest

from carewatch.settings import Settings
from tests.fixtures.api_client import (
    add_device,
    add_org_with_sites,
    add_user,
    call,
    login,
    module_database,
)
from tests.fixtures.api_server import running_api
from tools.local.postgres import PostgresInstance

ROLES: Final = ("caregiver", "caregiver_site_a", "technician", "manager", "admin")
TARGETS: Final = ("own_site", "other_site", "other_org")
SITE_OF: Final = {"own_site": "site-a", "other_site": "site-b", "other_org": "site-c"}


@dataclass(frozen=True)
class World:
    base: str
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[World]:
    """The module's organisations, sites, devices with an event each, users, and the API."""
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a", "site-b")
            add_org_with_sites(conn, "annan", "site-c")
            now = datetime.now(UTC)
            for site_id in SITE_OF.values():
                device_id = f"lock-{site_id}"
                add_device(conn, device_id, site_id)
                conn.execute(
                    "INSERT INTO events (time, received_at, device_id, event_id, type, data)"
                    " VALUES (%s, %s, %s, 'e1', 'heartbeat', '{\"battery\": 50}')",
                    (now, now, device_id),
                )
            for role in ROLES:
                if role == "caregiver_site_a":
                    add_user(conn, role.replace("_", "-"), "kommun", "caregiver", ["site-a"])
                else:
                    add_user(conn, role, "kommun", role)
        with running_api(Settings(database_url=database_url)) as base:
            tokens = {role: login(base, role.replace("_", "-")) for role in ROLES}
            yield World(base, tokens)


def visible(role: str, target: str) -> bool:
    """What the role may see: its organisation, and only site a for the limited caregiver."""
    if target == "other_org":
        return False
    return target == "own_site" or role != "caregiver_site_a"


@dataclass(frozen=True)
class Row:
    endpoint: str
    role: str
    target: str
    status: int

    def id(self) -> str:
        return f"{self.endpoint} as {self.role} on {self.target} -> {self.status}"


DEVICE_ENDPOINTS: Final = ("GET /devices/{id}", "GET /devices/{id}/events")
DEVICE_ROWS: Final = [
    Row(endpoint, role, target, 200 if visible(role, target) else 404)
    for endpoint in DEVICE_ENDPOINTS
    for role, target in itertools.product(ROLES, TARGETS)
]


def url(world: World, endpoint: str, target: str = "own_site") -> str:
    path = endpoint.split(" ", 1)[1].replace("{id}", f"lock-{SITE_OF[target]}")
    return f"{world.base}/api/v1{path}"


@pytest.mark.parametrize("row", DEVICE_ROWS, ids=Row.id)
def test_device_endpoints(world: World, row: Row) -> None:
    """A visible device and its events answer 200; any other 404, as if it did not exist."""
    response = call("GET", url(world, row.endpoint, row.target), token=world.tokens[row.role])
    assert response.status == row.status, response.body
    if row.status == 200 and row.endpoint.endswith("/events"):
        assert [event["event_id"] for event in response.json()] == ["e1"]
    elif row.status == 200:
        assert response.json()["id"] == f"lock-{SITE_OF[row.target]}"
    else:
        assert response.json() == {"detail": "device not found"}


LIST_ROWS: Final = [
    Row("GET /devices?site=", role, target, 200)
    for role, target in itertools.product(ROLES, TARGETS)
]


@pytest.mark.parametrize("row", LIST_ROWS, ids=Row.id)
def test_list_and_summary_hold_only_visible_devices(world: World, row: Row) -> None:
    """The list, filtered by site or not, and the summary's counts include a device exactly
    when the role may see it."""
    token = world.tokens[row.role]
    site = SITE_OF[row.target]
    device_id = f"lock-{site}"
    filtered = call("GET", f"{world.base}/api/v1/devices?site={site}&status=all", token=token)
    unfiltered = call("GET", f"{world.base}/api/v1/devices?status=all", token=token)
    summary = call("GET", f"{world.base}/api/v1/devices/summary?site={site}", token=token)
    assert (filtered.status, unfiltered.status, summary.status) == (200, 200, 200)
    seen = visible(row.role, row.target)
    assert [d["id"] for d in filtered.json()["items"]] == ([device_id] if seen else [])
    assert (device_id in {d["id"] for d in unfiltered.json()["items"]}) == seen
    assert summary.json()["total"] == (1 if seen else 0)


@pytest.mark.parametrize("role", ROLES)
def test_whole_summary_counts_only_the_roles_devices(world: World, role: str) -> None:
    """Without a site filter the summary counts the devices of the role's sites only."""
    response = call("GET", f"{world.base}/api/v1/devices/summary", token=world.tokens[role])
    assert response.status == 200
    assert response.json()["total"] == (1 if role == "caregiver_site_a" else 2)


UNAUTHENTICATED: Final = [
    "GET /devices",
    "GET /devices/summary",
    "GET /devices/{id}",
    "GET /devices/{id}/events",
]


@pytest.mark.parametrize("token", [None, "forged-token"], ids=["no-token", "forged-token"])
@pytest.mark.parametrize("endpoint", UNAUTHENTICATED)
def test_every_device_endpoint_needs_a_valid_token(
    world: World, endpoint: str, token: str | None
) -> None:
    """Without a valid token every device endpoint answers 401 and reveals nothing."""
    response = call("GET", url(world, endpoint), token=token)
    assert response.status == 401
    assert b"lock-" not in response.body
