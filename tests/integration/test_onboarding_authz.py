"""The onboarding endpoints' authorization matrix: every endpoint x role x own site / other site /
other organisation, with the status each must answer; nothing of another organisation changes.

Technicians and admins onboard; other roles get 403 for what they can see and 404 for what they
cannot; a site in the body that the caller does not have is 422 ``site not found``. The world is
built once: kommun (sites a and b) and annan (site c), a user per role in kommun, a technician
limited to site a, an admin and a bridge in annan. Each row acts on a device of its own.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import psycopg
import pytest

from carewatch.broker_passwords import hash_password
from carewatch.settings import Settings
from tests.fixtures.api_client import (
    ApiResponse,
    add_device,
    add_org_with_sites,
    add_session,
    add_user,
    call,
    login,
    module_database,
)
from tests.fixtures.api_server import running_api
from tools.local.postgres import PostgresInstance

ROLES: Final = ("caregiver", "technician", "technician_site_a", "manager", "admin")
TARGETS: Final = ("own_site", "other_site", "other_org")
SITE_OF: Final = {"own_site": "site-a", "other_site": "site-b", "other_org": "site-c"}
ONBOARDERS: Final = {"technician", "technician_site_a", "admin"}
ANNAN_BRIDGE: Final = "annan-hub"
ANNAN_DEVICE: Final = "annan-lock"


@dataclass(frozen=True)
class World:
    base: str
    database_url: str
    tokens: dict[str, str]


def username(role: str) -> str:
    return role.replace("_", "-")


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[World]:
    """The module's organisations, users, annan's device and bridge, and the API serving them."""
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a", "site-b")
            add_org_with_sites(conn, "annan", "site-c")
            for role in ROLES:
                if role == "technician_site_a":
                    add_user(conn, username(role), "kommun", "technician", ["site-a"])
                else:
                    add_user(conn, role, "kommun", role)
            add_user(conn, "admin-annan", "annan", "admin")
            conn.execute(
                "INSERT INTO broker_accounts (username, role, org_id, password_hash)"
                " VALUES (%s, 'zigbee2mqtt_bridge', 'annan', %s)",
                (f"zigbee2mqtt.{ANNAN_BRIDGE}", hash_password("x")),
            )
            conn.execute(
                "INSERT INTO devices (id, kind, site_id, mqtt_password_hash) VALUES"
                " (%s, 'door_lock', 'site-c', %s)",
                (ANNAN_DEVICE, hash_password("y")),
            )
        settings = Settings(database_url=database_url)
        with running_api(settings) as base:
            tokens = {role: login(base, username(role)) for role in (*ROLES, "admin-annan")}
            yield World(base, database_url, tokens)


def visible(role: str, target: str) -> bool:
    """What the role may see: its organisation, and only site a for the limited technician."""
    if target == "other_org":
        return False
    return target == "own_site" or role != "technician_site_a"


@dataclass(frozen=True)
class Row:
    endpoint: str
    role: str
    target: str
    status: int

    def id(self) -> str:
        return f"{self.endpoint} as {self.role} on {self.target} -> {self.status}"


def expected_create(role: str, target: str) -> int:
    if role not in ONBOARDERS:
        return 403
    return 201 if visible(role, target) else 422


def expected_change(role: str, target: str) -> int:
    if not visible(role, target):
        return 404
    return 200 if role in ONBOARDERS else 403


def expected_import(role: str, target: str) -> int:
    return 200 if role in ONBOARDERS else 403


DEVICE_ENDPOINTS: Final = {
    "POST /devices": expected_create,
    "PATCH /devices/{id}": expected_change,
    "DELETE /devices/{id}": expected_change,
    "POST /devices/{id}/credentials": expected_change,
    "POST /devices/import": expected_import,
}
DEVICE_ROWS: Final = [
    Row(endpoint, role, target, expect(role, target))
    for endpoint, expect in DEVICE_ENDPOINTS.items()
    for role, target in itertools.product(ROLES, TARGETS)
]


def fresh_device(world: World, site_id: str) -> str:
    device_id = f"dev-{uuid.uuid4().hex[:12]}"
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        add_device(conn, device_id, site_id)
    return device_id


def send(world: World, row: Row) -> tuple[ApiResponse, str]:
    """The row's request (on a device of its own at the target site); the answer, device id."""
    site = SITE_OF[row.target]
    token = world.tokens[row.role]
    method, path = row.endpoint.split(" ", 1)
    url = f"{world.base}/api/v1{path}"
    if row.endpoint == "POST /devices":
        device_id = f"new-{uuid.uuid4().hex[:12]}"
        body = {"id": device_id, "kind": "door_lock", "site": site}
        return call(method, url, token=token, json_body=body), device_id
    if row.endpoint == "POST /devices/import":
        device_id = f"imp-{uuid.uuid4().hex[:12]}"
        csv = f"id,kind,site,label\n{device_id},door_lock,{site},Lgh 1\n"
        headers = {"Content-Type": "text/csv"}
        return call(method, url, token=token, content=csv.encode(), headers=headers), device_id
    device_id = fresh_device(world, site)
    url = url.replace("{id}", device_id)
    body_patch = {"label": "Ändrad"} if method == "PATCH" else None
    return call(method, url, token=token, json_body=body_patch), device_id


def device_state(world: World, device_id: str) -> tuple[str, str, bool] | None:
    with psycopg.connect(world.database_url) as conn:
        row = conn.execute(
            "SELECT status, label, mqtt_password_hash IS NOT NULL FROM devices WHERE id = %s",
            (device_id,),
        ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


@pytest.mark.parametrize("row", DEVICE_ROWS, ids=Row.id)
def test_device_endpoints(world: World, row: Row) -> None:
    """Onboarders act where they see; others 403 where they see; 404 (or 422) elsewhere, and
    only a 2xx changes anything."""
    response, device_id = send(world, row)
    assert response.status == row.status, response.body
    assert b"annan" not in response.body
    state = device_state(world, device_id)
    changed = row.status in (200, 201)
    if row.endpoint == "POST /devices/import":
        report = response.json() if row.status == 200 else None
        created = visible(row.role, row.target) and report is not None
        if report is not None:
            assert report["created_count"] == int(created)
            if not created:
                assert report["refused"][0]["reason"] == "site not found"
        assert (state is not None) == created
    elif row.endpoint == "POST /devices":
        assert (state is not None) == changed
    elif row.endpoint == "PATCH /devices/{id}":
        assert state is not None
        assert (state[1] == "Ändrad") == changed
    elif row.endpoint == "DELETE /devices/{id}":
        assert state is not None
        assert (state[0] == "decommissioned") == changed
    else:
        assert state is not None
        assert state[2] == changed


BRIDGE_ROWS: Final = [
    Row(endpoint, role, target, status)
    for role in ROLES
    for endpoint, target, status in (
        ("GET /bridges", "own_org", 200 if role in ONBOARDERS else 403),
        ("POST /bridges", "own_org", 201 if role in ONBOARDERS else 403),
        ("DELETE /bridges/{id}", "own_org", 204 if role in ONBOARDERS else 403),
        ("DELETE /bridges/{id}", "other_org", 404 if role in ONBOARDERS else 403),
        ("POST /bridges/{id}/credentials", "own_org", 200 if role in ONBOARDERS else 403),
        ("POST /bridges/{id}/credentials", "other_org", 404 if role in ONBOARDERS else 403),
        ("PATCH /bridges/{id}", "own_org", 200 if role in ONBOARDERS else 403),
        ("PATCH /bridges/{id}", "other_org", 404 if role in ONBOARDERS else 403),
    )
]


@pytest.mark.parametrize("row", BRIDGE_ROWS, ids=Row.id)
def test_bridge_endpoints(world: World, row: Row) -> None:
    """Bridges are the organisation's: technicians (site-limited too) and admins manage them;
    another organisation's bridge does not exist for them."""
    bridge_id = f"hub-{uuid.uuid4().hex[:10]}"
    if row.target == "other_org":
        bridge_id = ANNAN_BRIDGE
    elif row.endpoint != "POST /bridges":
        created = call(
            "POST",
            f"{world.base}/api/v1/bridges",
            token=world.tokens["admin"],
            json_body={"id": bridge_id},
        )
        assert created.status == 201
    method, path = row.endpoint.split(" ", 1)
    url = f"{world.base}/api/v1{path}".replace("{id}", bridge_id)
    body: dict[str, str] | None = None
    if row.endpoint == "POST /bridges":
        body = {"id": bridge_id, "label": "Hubb"}
    elif row.endpoint == "PATCH /bridges/{id}":
        body = {"base_topic": f"z2m-{uuid.uuid4().hex[:10]}"}
    response = call(method, url, token=world.tokens[row.role], json_body=body)
    assert response.status == row.status, response.body
    if row.endpoint == "GET /bridges" and row.status == 200:
        assert ANNAN_BRIDGE not in {bridge["id"] for bridge in response.json()}


UNAUTHENTICATED: Final = [
    "POST /devices",
    "PATCH /devices/x-lock",
    "DELETE /devices/x-lock",
    "POST /devices/x-lock/credentials",
    "POST /devices/import",
    "GET /bridges",
    "POST /bridges",
    "DELETE /bridges/x",
    "POST /bridges/x/credentials",
    "PATCH /bridges/x",
]


@pytest.mark.parametrize("token", [None, "forged-token"], ids=["no-token", "forged-token"])
@pytest.mark.parametrize("endpoint", UNAUTHENTICATED)
def test_every_endpoint_needs_a_valid_token(world: World, endpoint: str, token: str | None) -> None:
    """Without a valid token every onboarding endpoint answers 401."""
    method, path = endpoint.split(" ", 1)
    assert call(method, f"{world.base}/api/v1{path}", token=token).status == 401


def test_cookie_requests_need_csrf_proof(world: World) -> None:
    """A session cookie alone (a cross-site form) cannot onboard: 403 without the header."""
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        user_id = conn.execute("SELECT id FROM users WHERE username = 'admin'").fetchone()
        assert user_id is not None
        cookie = add_session(conn, user_id[0], "session")
    body = {"id": f"csrf-{uuid.uuid4().hex[:8]}", "kind": "door_lock", "site": "site-a"}
    url = f"{world.base}/api/v1/devices"
    assert call("POST", url, cookie=cookie, json_body=body).status == 403
    allowed = call(
        "POST", url, cookie=cookie, json_body=body, headers={"X-Requested-With": "carewatch"}
    )
    assert allowed.status == 201


def test_nothing_of_the_other_organisation_changed(world: World) -> None:
    """After the matrix: annan's device and bridge are untouched, and kommun's users left no
    audit rows in annan."""
    with psycopg.connect(world.database_url) as conn:
        device = conn.execute(
            "SELECT status, label FROM devices WHERE id = %s", (ANNAN_DEVICE,)
        ).fetchone()
        bridge = conn.execute(
            "SELECT count(*) FROM broker_accounts WHERE username = %s",
            (f"zigbee2mqtt.{ANNAN_BRIDGE}",),
        ).fetchone()
        audited = conn.execute(
            "SELECT count(*) FROM audit_log WHERE org_id = 'annan' AND username <> 'admin-annan'"
        ).fetchone()
        touched = conn.execute(
            "SELECT count(*) FROM devices WHERE site_id = 'site-c' AND id <> %s"
            " AND (status <> 'active' OR label = 'Ändrad' OR mqtt_password_hash IS NOT NULL)",
            (ANNAN_DEVICE,),
        ).fetchone()
    assert device == ("active", "")
    assert bridge == (1,)
    assert audited == (0,)
    assert touched == (0,)
