"""The authorization matrix: every endpoint x every role x own site / other site / other
organisation, with the status each must answer; nothing of another organisation leaks.

The world is built once for the module: kommun (sites a and b) and annan (site c), a lock, an
open alert and a residence at each site, a user per role in kommun and a caregiver limited to
site a.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg
import pytest

from carewatch.settings import Settings
from tests.fixtures.api_client import (
    ApiResponse,
    add_device,
    add_org_with_sites,
    add_user,
    call,
    insert_alert,
    login,
    module_database,
    open_stream,
)
from tests.fixtures.api_server import running_api
from tests.fixtures.push import VapidKeys
from tools.local.postgres import PostgresInstance

ROLES: Final = ("caregiver", "caregiver_site_a", "technician", "manager", "admin")
TARGETS: Final = ("own_site", "other_site", "other_org")
SITE_OF: Final = {"own_site": "site-a", "other_site": "site-b", "other_org": "site-c"}
MAY_ACT: Final = {"caregiver", "caregiver_site_a", "admin"}
# The matrix's alerts are tamper alerts, which are the technicians' (issue 12,
# devices/audience.toml): technicians and admins acknowledge and resolve them, care staff may
# not (tests/integration/test_alert_audiences.py has the care side).
MAY_ACT_TECHNICAL: Final = {"technician", "admin"}
# Residences (+#11): managers and admins plan; care staff, managers and admins record absences.
MAY_PLAN: Final = {"manager", "admin"}
MAY_RECORD_ABSENCE: Final = {"caregiver", "caregiver_site_a", "manager", "admin"}
# Device maintenance windows (+#11): technicians and admins (MANAGE_FLEET) record and end them.
MAY_MANAGE_FLEET: Final = {"technician", "admin"}


@dataclass(frozen=True)
class World:
    base: str
    database_url: str
    tokens: dict[str, str]
    alerts: dict[str, int]  # target -> alert id
    residences: dict[str, int]  # target -> residence id


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[World]:
    """The module's organisations, sites, devices, alerts and users, and the API serving them."""
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a", "site-b")
            add_org_with_sites(conn, "annan", "site-c")
            for site_id in SITE_OF.values():
                add_device(conn, f"lock-{site_id}", site_id)
            for role in ROLES:
                if role == "caregiver_site_a":
                    add_user(conn, role.replace("_", "-"), "kommun", "caregiver", ["site-a"])
                else:
                    add_user(conn, role, "kommun", role)
            add_user(conn, "admin-annan", "annan", "admin")
            residences = {
                target: add_residence(conn, site_id) for target, site_id in SITE_OF.items()
            }
        alerts = {
            target: insert_alert(database_url, f"lock-{site_id}").alert_id
            for target, site_id in SITE_OF.items()
        }
        vapid = VapidKeys.generate()  # Web Push (+#12) on: its key is served
        settings = Settings(
            database_url=database_url,
            sse_heartbeat_s=0.2,
            vapid_private_key=vapid.private_pem,
            vapid_subject="mailto:drift@kommun.example",
        )
        with running_api(settings) as base:
            tokens = {role: login(base, role.replace("_", "-")) for role in ROLES}
            yield World(base, database_url, tokens, alerts, residences)


def add_residence(conn: psycopg.Connection[Any], site_id: str) -> int:
    row = conn.execute(
        "INSERT INTO residences (site_id, label) VALUES (%s, 'Lgh 1') RETURNING id", (site_id,)
    ).fetchone()
    assert row is not None
    residence_id: int = row[0]
    return residence_id


def visible(role: str, target: str) -> bool:
    """What the role may see: its organisation, and only site a for the limited caregiver."""
    if target == "other_org":
        return False
    return target == "own_site" or role != "caregiver_site_a"


def expected_act(role: str, target: str, may_act: frozenset[str] | set[str] = MAY_ACT) -> int:
    if not visible(role, target):
        return 404
    return 200 if role in may_act else 403


def expected_act_technical(role: str, target: str) -> int:
    return expected_act(role, target, MAY_ACT_TECHNICAL)


@dataclass(frozen=True)
class Row:
    endpoint: str
    role: str
    target: str
    status: int

    def id(self) -> str:
        return f"{self.endpoint} as {self.role} on {self.target} -> {self.status}"


ALERT_ENDPOINTS: Final = {
    "GET /alerts/{id}": lambda role, target: 200 if visible(role, target) else 404,
    "POST /alerts/{id}/ack": expected_act_technical,
    "POST /alerts/{id}/resolve": expected_act_technical,
}

ALERT_ROWS: Final = [
    Row(endpoint, role, target, expect(role, target))
    for endpoint, expect in ALERT_ENDPOINTS.items()
    for role, target in itertools.product(ROLES, TARGETS)
]


def expected_move(role: str, target: str) -> int:
    """The response moves (+#12) on the matrix's alerts, which are tamper alerts: who may not
    see it gets 404, who may not act 403, and who may act the 409 of a non-response alert."""
    status = expected_act(role, target)
    return 409 if status == 200 else status


MOVE_ROWS: Final = [
    Row(f"POST /alerts/{{id}}/{step}", role, target, expected_move(role, target))
    for step in ("accept", "forward", "on-site", "close")
    for role, target in itertools.product(ROLES, TARGETS)
]
MOVE_BODIES: Final = {"forward": {"to": None}, "close": {"action": "false_alarm"}}


@pytest.mark.parametrize("row", MOVE_ROWS, ids=Row.id)
def test_response_moves(world: World, row: Row) -> None:
    """Visibility first, then the permission, then the response's state."""
    step = row.endpoint.rsplit("/", 1)[1]
    path = f"/api/v1/alerts/{world.alerts[row.target]}/{step}"
    response = call(
        "POST", world.base + path, token=world.tokens[row.role], json_body=MOVE_BODIES.get(step)
    )
    assert response.status == row.status, response.body
    if row.status == 409:
        assert response.json()["code"] == "not_a_response"


def send(
    world: World, endpoint: str, token: str | None, target: str = "own_site", *, new_site: str = ""
) -> ApiResponse:
    method, path = endpoint.split(" ", 1)
    path = path.replace("{id}", str(world.alerts[target]))
    path = path.replace("{residence}", str(world.residences[target]))
    json_body: object = RESIDENCE_BODIES.get(endpoint)
    if endpoint == "POST /sites":
        json_body = {"id": new_site or "new-site", "name": "Ny"}
    return call(method, f"{world.base}/api/v1{path}", token=token, json_body=json_body)


@pytest.mark.parametrize("row", ALERT_ROWS, ids=Row.id)
def test_alert_endpoints(world: World, row: Row) -> None:
    """Visible alerts answer 200 (or 403 for roles that may not act on a technical alert); the
    rest 404."""
    response = send(world, row.endpoint, world.tokens[row.role], row.target)
    assert response.status == row.status, response.body
    if row.status == 200:
        assert response.json()["id"] == world.alerts[row.target]


LIST_ROWS: Final = [
    Row(f"GET /alerts?site={target}", role, target, 200)
    for role, target in itertools.product(ROLES, TARGETS)
]


@pytest.mark.parametrize("row", LIST_ROWS, ids=Row.id)
def test_alert_list_shows_only_visible_alerts(world: World, row: Row) -> None:
    """Listing with or without a site filter includes exactly the alerts the role may see."""
    token = world.tokens[row.role]
    site = SITE_OF[row.target]
    filtered = call("GET", f"{world.base}/api/v1/alerts?state=all&site={site}", token=token)
    unfiltered = call("GET", f"{world.base}/api/v1/alerts?state=all", token=token)
    assert (filtered.status, unfiltered.status) == (200, 200)
    expected = [world.alerts[row.target]] if visible(row.role, row.target) else []
    assert [alert["id"] for alert in filtered.json()] == expected
    listed = {alert["id"] for alert in unfiltered.json()}
    assert (world.alerts[row.target] in listed) == visible(row.role, row.target)


SITE_ROWS: Final = [
    Row("GET /sites", role, target, 200) for role, target in itertools.product(ROLES, TARGETS)
]


@pytest.mark.parametrize("row", SITE_ROWS, ids=Row.id)
def test_site_list_shows_only_visible_sites(world: World, row: Row) -> None:
    """The site list holds a site exactly when the role may see it."""
    response = call("GET", f"{world.base}/api/v1/sites", token=world.tokens[row.role])
    assert response.status == 200
    listed = {site["id"] for site in response.json()}
    assert (SITE_OF[row.target] in listed) == visible(row.role, row.target)


CREATE_SITE_ROWS: Final = [
    Row("POST /sites", role, "own_org", 201 if role == "admin" else 403) for role in ROLES
]


@pytest.mark.parametrize("row", CREATE_SITE_ROWS, ids=Row.id)
def test_create_site_is_for_admins(world: World, row: Row) -> None:
    """Only an admin creates sites, and always in their own organisation."""
    new_site = f"new-{row.role.replace('_', '-')}"
    response = send(world, row.endpoint, world.tokens[row.role], new_site=new_site)
    assert response.status == row.status, response.body
    if row.status == 201:
        with psycopg.connect(world.database_url) as conn:
            org = conn.execute(
                "SELECT org_id FROM sites WHERE id = %s", (response.json()["id"],)
            ).fetchone()
        assert org == ("kommun",)


def test_create_site_with_another_organisations_id_is_refused(world: World) -> None:
    """Taking an id that another organisation uses is 409 and does not move or reveal it."""
    response = call(
        "POST",
        f"{world.base}/api/v1/sites",
        token=world.tokens["admin"],
        json_body={"id": "site-c", "name": "Kapad"},
    )
    assert response.status == 409
    assert b"annan" not in response.body
    with psycopg.connect(world.database_url) as conn:
        assert conn.execute("SELECT org_id, name FROM sites WHERE id = 'site-c'").fetchone() == (
            "annan",
            "Site site-c",
        )


def visible_then(allowed: set[str], status: int) -> Callable[[str, str], int]:
    """404 for what the role cannot see; ``status`` if it is allowed, 403 otherwise."""

    def expect(role: str, target: str) -> int:
        if not visible(role, target):
            return 404
        return status if role in allowed else 403

    return expect


RESIDENCE_BODIES: Final[dict[str, object]] = {
    "POST /residences": {"site": "site-a", "label": "Lgh matrix"},
    "PATCH /residences/{residence}": {"external_ref": "2024-1"},
    "PUT /residences/{residence}/plan": {"check_times": ["22:00", "02:00"]},
    "POST /residences/{residence}/absences": {"reason": "hospital"},
    "POST /residences/{residence}/visits": {"note": "matrix"},
}
RESIDENCE_ENDPOINTS: Final[dict[str, Callable[[str, str], int]]] = {
    "GET /residences/{residence}": lambda role, target: 200 if visible(role, target) else 404,
    "GET /residences/{residence}/plan": lambda role, target: 200 if visible(role, target) else 404,
    "GET /residences/{residence}/absences": lambda role, target: (
        200 if visible(role, target) else 404
    ),
    "PATCH /residences/{residence}": visible_then(MAY_PLAN, 200),
    "PUT /residences/{residence}/plan": visible_then(MAY_PLAN, 200),
    "POST /residences/{residence}/absences": visible_then(MAY_RECORD_ABSENCE, 201),
    "GET /residences/{residence}/visits": lambda role, target: (
        200 if visible(role, target) else 404
    ),
    "POST /residences/{residence}/visits": visible_then(MAY_ACT, 201),
}
RESIDENCE_ROWS: Final = [
    Row(endpoint, role, target, expect(role, target))
    for endpoint, expect in RESIDENCE_ENDPOINTS.items()
    for role, target in itertools.product(ROLES, TARGETS)
]


@pytest.mark.parametrize("row", RESIDENCE_ROWS, ids=Row.id)
def test_residence_endpoints(world: World, row: Row) -> None:
    """Visible residences answer (403 where the role may not change them); the rest 404."""
    response = send(world, row.endpoint, world.tokens[row.role], row.target)
    assert response.status == row.status, response.body
    if row.status == 200 and row.endpoint.endswith("{residence}"):
        assert response.json()["id"] == world.residences[row.target]
    if row.endpoint == "POST /residences/{residence}/visits" and row.status == 201:
        assert response.json()["residence_id"] == world.residences[row.target]


END_ABSENCE_ROWS: Final = [
    Row(
        "POST /residences/{residence}/absences/{absence}/end",
        role,
        target,
        visible_then(MAY_RECORD_ABSENCE, 200)(role, target),
    )
    for role, target in itertools.product(ROLES, TARGETS)
]


@pytest.mark.parametrize("row", END_ABSENCE_ROWS, ids=Row.id)
def test_ending_an_absence(world: World, row: Row) -> None:
    """Ending an absence: as recording one, and nothing is ended where the answer is not 200."""
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        created = conn.execute(
            "INSERT INTO absences (residence_id, reason, starts_at, created_by)"
            " VALUES (%s, 'travel', now(), 'matrix') RETURNING id",
            (world.residences[row.target],),
        ).fetchone()
    assert created is not None
    path = f"/residences/{world.residences[row.target]}/absences/{created[0]}/end"
    response = call("POST", f"{world.base}/api/v1{path}", token=world.tokens[row.role])
    assert response.status == row.status, response.body
    with psycopg.connect(world.database_url) as conn:
        ended = conn.execute("SELECT ended_at FROM absences WHERE id = %s", created).fetchone()
    assert ended is not None
    assert (ended[0] is not None) == (row.status == 200)


RESIDENCE_LIST_ROWS: Final = [
    Row("GET /residences", role, target, 200) for role, target in itertools.product(ROLES, TARGETS)
]


@pytest.mark.parametrize("row", RESIDENCE_LIST_ROWS, ids=Row.id)
def test_residence_list_shows_only_visible_residences(world: World, row: Row) -> None:
    """Listing, with or without the site filter, holds a residence exactly when it is visible."""
    token = world.tokens[row.role]
    site = SITE_OF[row.target]
    filtered = call("GET", f"{world.base}/api/v1/residences?site={site}", token=token)
    unfiltered = call("GET", f"{world.base}/api/v1/residences", token=token)
    assert (filtered.status, unfiltered.status) == (200, 200)
    expected = [world.residences[row.target]] if visible(row.role, row.target) else []
    assert [residence["id"] for residence in filtered.json()] == expected
    listed = {residence["id"] for residence in unfiltered.json()}
    assert (world.residences[row.target] in listed) == visible(row.role, row.target)


MAINTENANCE_ROWS: Final = [
    Row(endpoint, role, target, expect(role, target))
    for endpoint, expect in {
        "GET /devices/{device}/maintenance": lambda role, target: (
            200 if visible(role, target) else 404
        ),
        "POST /devices/{device}/maintenance": visible_then(MAY_MANAGE_FLEET, 201),
    }.items()
    for role, target in itertools.product(ROLES, TARGETS)
]


@pytest.mark.parametrize("row", MAINTENANCE_ROWS, ids=Row.id)
def test_device_maintenance_endpoints(world: World, row: Row) -> None:
    """Visible devices' windows are read by every role and recorded by the fleet's roles (403
    for the others); the rest 404, and nothing is recorded where the answer is not 201."""
    device_id = f"lock-{SITE_OF[row.target]}"
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        # One window per row: an earlier row's window would overlap (409).
        conn.execute("DELETE FROM device_maintenance WHERE device_id = %s", (device_id,))
    method, path = row.endpoint.split(" ", 1)
    ends_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    response = call(
        method,
        f"{world.base}/api/v1{path.replace('{device}', device_id)}",
        token=world.tokens[row.role],
        json_body={"ends_at": ends_at} if method == "POST" else None,
    )
    assert response.status == row.status, response.body
    with psycopg.connect(world.database_url) as conn:
        windows = conn.execute(
            "SELECT count(*) FROM device_maintenance WHERE device_id = %s", (device_id,)
        ).fetchone()
    assert windows == ((1,) if row.status == 201 else (0,))


END_MAINTENANCE_ROWS: Final = [
    Row(
        "POST /devices/{device}/maintenance/{maintenance}/end",
        role,
        target,
        visible_then(MAY_MANAGE_FLEET, 200)(role, target),
    )
    for role, target in itertools.product(ROLES, TARGETS)
]


@pytest.mark.parametrize("row", END_MAINTENANCE_ROWS, ids=Row.id)
def test_ending_device_maintenance(world: World, row: Row) -> None:
    """Ending a window: as recording one, and nothing is ended where the answer is not 200."""
    device_id = f"lock-{SITE_OF[row.target]}"
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM device_maintenance WHERE device_id = %s", (device_id,))
        created = conn.execute(
            "INSERT INTO device_maintenance (device_id, starts_at, ends_at, created_by)"
            " VALUES (%s, now(), now() + interval '1 hour', 'matrix') RETURNING id",
            (device_id,),
        ).fetchone()
    assert created is not None
    path = f"/devices/{device_id}/maintenance/{created[0]}/end"
    response = call("POST", f"{world.base}/api/v1{path}", token=world.tokens[row.role])
    assert response.status == row.status, response.body
    with psycopg.connect(world.database_url) as conn:
        ended = conn.execute(
            "SELECT ended_at FROM device_maintenance WHERE id = %s", created
        ).fetchone()
    assert ended is not None
    assert (ended[0] is not None) == (row.status == 200)


NIGHT_ROUND_ROWS: Final = [
    Row("GET /night-round", role, target, 200 if visible(role, target) else 404)
    for role, target in itertools.product(ROLES, TARGETS)
]


@pytest.mark.parametrize("row", NIGHT_ROUND_ROWS, ids=Row.id)
def test_night_round_shows_only_visible_sites(world: World, row: Row) -> None:
    """The night round of a site answers exactly when it is visible (404 otherwise), and the
    round of every site holds it exactly then."""
    token = world.tokens[row.role]
    site = SITE_OF[row.target]
    one = call("GET", f"{world.base}/api/v1/night-round?site={site}", token=token)
    every = call("GET", f"{world.base}/api/v1/night-round", token=token)
    assert (one.status, every.status) == (row.status, 200)
    if row.status == 200:
        assert [s["site_id"] for s in one.json()["sites"]] == [site]
    listed = {s["site_id"] for s in every.json()["sites"]}
    assert (site in listed) == visible(row.role, row.target)


PAUSES_ROWS: Final = [
    Row("GET /pauses", role, target, 200 if visible(role, target) else 404)
    for role, target in itertools.product(ROLES, TARGETS)
]


@pytest.mark.parametrize("row", PAUSES_ROWS, ids=Row.id)
def test_pauses_show_only_visible_sites(world: World, row: Row) -> None:
    """What is paused at a site (+#11) answers exactly when it is visible (404 otherwise), and
    the pauses of every site hold its current absence and maintenance window exactly then."""
    token = world.tokens[row.role]
    site = SITE_OF[row.target]
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        absence = conn.execute(
            "INSERT INTO absences (residence_id, reason, starts_at, created_by)"
            " VALUES (%s, 'hospital', now() - interval '1 minute', 'matrix') RETURNING id",
            (world.residences[row.target],),
        ).fetchone()
        window = conn.execute(
            "INSERT INTO device_maintenance (device_id, starts_at, ends_at, created_by)"
            " VALUES (%s, now() - interval '1 minute', now() + interval '1 hour', 'matrix')"
            " RETURNING id",
            (f"lock-{site}",),
        ).fetchone()
    assert absence is not None
    assert window is not None
    try:
        one = call("GET", f"{world.base}/api/v1/pauses?site={site}", token=token)
        every = call("GET", f"{world.base}/api/v1/pauses", token=token)
        assert (one.status, every.status) == (row.status, 200), one.body
        if row.status == 200:
            listed = one.json()["absences"] + one.json()["maintenance"]
            assert {pause["site_id"] for pause in listed} == {site}
        shown = visible(row.role, row.target)
        assert (absence[0] in {a["absence_id"] for a in every.json()["absences"]}) == shown
        assert (window[0] in {m["maintenance_id"] for m in every.json()["maintenance"]}) == shown
    finally:
        with psycopg.connect(world.database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM absences WHERE id = %s", absence)
            conn.execute("DELETE FROM device_maintenance WHERE id = %s", window)


# The supervision summary (+#11) is read with READ_USAGE: the role is checked before the site.
MAY_READ_USAGE: Final = {"manager", "admin"}
SUPERVISION_SUMMARY_ROWS: Final = [
    Row(
        endpoint,
        role,
        target,
        (200 if visible(role, target) else 404) if role in MAY_READ_USAGE else 403,
    )
    for endpoint in ("GET /supervision/summary", "GET /supervision/summary.csv")
    for role, target in itertools.product(ROLES, TARGETS)
]


@pytest.mark.parametrize("row", SUPERVISION_SUMMARY_ROWS, ids=Row.id)
def test_supervision_summary_shows_only_visible_sites(world: World, row: Row) -> None:
    """The summary of a site answers exactly when the role reads usage and the site is visible,
    and the summary of every site holds it exactly then."""
    token = world.tokens[row.role]
    site = SITE_OF[row.target]
    path = row.endpoint.split(" ", 1)[1]
    one = call("GET", f"{world.base}/api/v1{path}?site={site}", token=token)
    every = call("GET", f"{world.base}/api/v1/supervision/summary", token=token)
    assert one.status == row.status, one.body
    if row.role not in MAY_READ_USAGE:
        assert every.status == 403
        return
    if row.status == 200 and path.endswith(".csv"):
        assert one.body.decode().splitlines()[0].startswith("site_id,")
    elif row.status == 200:
        assert [s["site_id"] for s in one.json()["sites"]] == [site]
    listed = {s["site_id"] for s in every.json()["sites"]}
    assert (site in listed) == visible(row.role, row.target)


# The alarm response summary (#12) is read with READ_USAGE too, the role before the site.
RESPONSE_SUMMARY_ROWS: Final = [
    Row(
        "GET /responses/summary",
        role,
        target,
        (200 if visible(role, target) else 404) if role in MAY_READ_USAGE else 403,
    )
    for role, target in itertools.product(ROLES, TARGETS)
]


@pytest.mark.parametrize("row", RESPONSE_SUMMARY_ROWS, ids=Row.id)
def test_response_summary_shows_only_visible_sites(world: World, row: Row) -> None:
    """The response summary of a site answers exactly when the role reads usage and the site
    is visible, and the summary of every site holds it exactly then."""
    token = world.tokens[row.role]
    site = SITE_OF[row.target]
    one = call("GET", f"{world.base}/api/v1/responses/summary?site={site}", token=token)
    every = call("GET", f"{world.base}/api/v1/responses/summary", token=token)
    assert one.status == row.status, one.body
    if row.role not in MAY_READ_USAGE:
        assert every.status == 403
        return
    if row.status == 200:
        assert [s["site_id"] for s in one.json()["sites"]] == [site]
    listed = {s["site_id"] for s in every.json()["sites"]}
    assert (site in listed) == visible(row.role, row.target)


CREATE_RESIDENCE_ROWS: Final = [
    Row("POST /residences", role, "own_org", 201 if role in MAY_PLAN else 403) for role in ROLES
]


@pytest.mark.parametrize("row", CREATE_RESIDENCE_ROWS, ids=Row.id)
def test_create_residence_is_for_planners(world: World, row: Row) -> None:
    """Managers and admins add residences at their sites; other roles get 403."""
    body = {"site": "site-a", "label": f"Lgh {row.role}"}
    response = call(
        "POST", f"{world.base}/api/v1/residences", token=world.tokens[row.role], json_body=body
    )
    assert response.status == row.status, response.body


def test_a_residence_at_another_organisations_site_is_refused(world: World) -> None:
    """A residence at site c (annan's) is 422 for kommun's admin, as a site that does not exist."""
    response = call(
        "POST",
        f"{world.base}/api/v1/residences",
        token=world.tokens["admin"],
        json_body={"site": "site-c", "label": "Kapad"},
    )
    assert response.status == 422
    assert b"annan" not in response.body
    with psycopg.connect(world.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM residences WHERE label = 'Kapad'").fetchone() == (
            0,
        )


# Webhooks (+#12) are the organisation's: admins only (the role decides first), and another
# organisation's webhook is 404 as if it did not exist.
ORG_TARGETS: Final = ("own_org", "other_org")
WEBHOOK_ORG_OF: Final = {"own_org": "kommun", "other_org": "annan"}
WEBHOOK_ROWS: Final = [
    Row(
        endpoint,
        role,
        "own_org",
        (201 if endpoint.startswith("POST") else 200) if role == "admin" else 403,
    )
    for endpoint in ("POST /webhooks", "GET /webhooks")
    for role in ROLES
]
WEBHOOK_ONE_ROWS: Final = [
    Row(
        endpoint,
        role,
        target,
        403 if role != "admin" else (404 if target == "other_org" else expect),
    )
    for endpoint, expect in (
        ("GET /webhooks/{webhook}/deliveries", 200),
        ("DELETE /webhooks/{webhook}", 204),
    )
    for role, target in itertools.product(ROLES, ORG_TARGETS)
]


def add_webhook(database_url: str, org_id: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO webhooks (org_id, url, secret, events, created_by)"
            " VALUES (%s, 'https://receiver.example/hook', repeat('s', 40), '{alert.opened}',"
            " 'matrix') RETURNING id",
            (org_id,),
        ).fetchone()
    assert row is not None
    webhook_id: int = row[0]
    return webhook_id


@pytest.mark.parametrize("row", WEBHOOK_ROWS, ids=Row.id)
def test_webhooks_are_for_admins(world: World, row: Row) -> None:
    """Only admins add and list webhooks, always their own organisation's; the secret is in the
    creation's answer only."""
    token = world.tokens[row.role]
    others = add_webhook(world.database_url, "annan")
    body = {"url": "https://receiver.example/matrix", "events": ["alert.opened"]}
    method, path = row.endpoint.split(" ", 1)
    response = call(
        method,
        f"{world.base}/api/v1{path}",
        token=token,
        json_body=body if method == "POST" else None,
    )
    assert response.status == row.status, response.body
    if row.status == 201:
        assert response.json()["secret"].startswith("whsec_")
        with psycopg.connect(world.database_url) as conn:
            org = conn.execute(
                "SELECT org_id FROM webhooks WHERE id = %s", (response.json()["id"],)
            ).fetchone()
        assert org == ("kommun",)
    if row.status == 200:
        listed = response.json()
        assert others not in {webhook["id"] for webhook in listed}
        assert all("secret" not in webhook for webhook in listed)


@pytest.mark.parametrize("row", WEBHOOK_ONE_ROWS, ids=Row.id)
def test_one_webhook_is_for_its_organisations_admins(world: World, row: Row) -> None:
    """A webhook's delivery log and its deletion: the admin of its organisation only."""
    webhook_id = add_webhook(world.database_url, WEBHOOK_ORG_OF[row.target])
    method, path = row.endpoint.split(" ", 1)
    path = path.replace("{webhook}", str(webhook_id))
    response = call(method, f"{world.base}/api/v1{path}", token=world.tokens[row.role])
    assert response.status == row.status, response.body
    with psycopg.connect(world.database_url) as conn:
        deleted = conn.execute(
            "SELECT deleted_at IS NOT NULL FROM webhooks WHERE id = %s", (webhook_id,)
        ).fetchone()
    assert deleted == (row.status == 204,)


# Web Push (+#12): every role reads the key; who acts on some alerts (technicians too: device
# faults, issue 12) subscribes, their own only; anyone deletes their own (sign-out does).
MAY_PUSH: Final = MAY_ACT | MAY_ACT_TECHNICAL
PUSH_ROWS: Final = [
    Row(endpoint, role, target, status)
    for role in ROLES
    for endpoint, target, status in (
        ("GET /push/vapid-public-key", "own_org", 200),
        ("POST /push/subscriptions", "own_user", 201 if role in MAY_PUSH else 403),
        ("DELETE /push/subscriptions", "own_user", 204),
        ("POST /push/subscriptions", "other_org", 409 if role in MAY_PUSH else 403),
        ("DELETE /push/subscriptions", "other_org", 404),
    )
]
_PUSH_KEYS: Final = {"p256dh": "B" + "A" * 86, "auth": "A" * 22}


@pytest.mark.parametrize("row", PUSH_ROWS, ids=Row.id)
def test_push_subscriptions_are_the_callers_own(world: World, row: Row) -> None:
    """Caregivers, technicians and admins subscribe their own browsers, anyone deletes their
    own; another organisation's subscription is neither taken over (409) nor deleted (404)."""
    token = world.tokens[row.role]
    method, path = row.endpoint.split(" ", 1)
    endpoint = f"https://push.example/matrix-{row.role}-{row.target}"
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        owner = "admin-annan" if row.target == "other_org" else row.role.replace("_", "-")
        conn.execute(
            "INSERT INTO push_subscriptions (user_id, endpoint, p256dh, auth)"
            " SELECT id, %s, %s, %s FROM users WHERE username = %s"
            " ON CONFLICT (endpoint) DO NOTHING",
            (endpoint, _PUSH_KEYS["p256dh"], _PUSH_KEYS["auth"], owner),
        )
    body: object = None
    if path == "/push/subscriptions":
        body = (
            {"endpoint": endpoint, "keys": _PUSH_KEYS}
            if method == "POST"
            else {"endpoint": endpoint}
        )
    response = call(method, f"{world.base}/api/v1{path}", token=token, json_body=body)
    assert response.status == row.status, response.body
    with psycopg.connect(world.database_url) as conn:
        stored = conn.execute(
            "SELECT u.username FROM push_subscriptions p JOIN users u ON u.id = p.user_id"
            " WHERE p.endpoint = %s",
            (endpoint,),
        ).fetchall()
    if row.status == 204:
        assert stored == []
    elif path == "/push/subscriptions":
        assert stored == [(owner,)]


STREAM_ROWS: Final = [
    Row("GET /alerts/stream (resume)", role, target, 200)
    for role, target in itertools.product(ROLES, TARGETS)
]


@pytest.mark.parametrize("row", STREAM_ROWS, ids=Row.id)
def test_stream_resume_shows_only_visible_changes(world: World, row: Row) -> None:
    """A stream resumed from the beginning replays exactly the changes of visible alerts."""
    with open_stream(world.base, token=world.tokens[row.role], last_event_id=0) as stream:
        assert stream.status == 200
        replayed = {event.json()["id"] for event in stream.events_until_keepalive()}
    assert (world.alerts[row.target] in replayed) == visible(row.role, row.target)


UNAUTHENTICATED: Final = [
    "GET /alerts",
    "GET /alerts/{id}",
    "POST /alerts/{id}/ack",
    "POST /alerts/{id}/resolve",
    "POST /alerts/{id}/accept",
    "POST /alerts/{id}/forward",
    "POST /alerts/{id}/on-site",
    "POST /alerts/{id}/close",
    "GET /response-actions",
    "GET /alerts/stream",
    "GET /sites",
    "POST /sites",
    "POST /auth/logout",
    "GET /residences",
    "POST /residences",
    "GET /residences/{residence}",
    "PATCH /residences/{residence}",
    "GET /residences/{residence}/plan",
    "PUT /residences/{residence}/plan",
    "GET /residences/{residence}/absences",
    "POST /residences/{residence}/absences",
    "GET /residences/{residence}/visits",
    "POST /residences/{residence}/visits",
    "GET /night-round",
    "GET /supervision/summary",
    "GET /supervision/summary.csv",
    "GET /responses/summary",
    "GET /webhooks",
    "POST /webhooks",
    "DELETE /webhooks/1",
    "GET /webhooks/1/deliveries",
    "GET /push/vapid-public-key",
    "POST /push/subscriptions",
    "DELETE /push/subscriptions",
]


@pytest.mark.parametrize("token", [None, "forged-token"], ids=["no-token", "forged-token"])
@pytest.mark.parametrize("endpoint", UNAUTHENTICATED)
def test_every_endpoint_needs_a_valid_token(world: World, endpoint: str, token: str | None) -> None:
    """Without a valid token every /api/v1 endpoint but the login answers 401."""
    if endpoint == "GET /alerts/stream":
        with open_stream(world.base, token=token) as stream:
            assert stream.status == 401
        return
    assert send(world, endpoint, token).status == 401


@pytest.mark.parametrize("role", ROLES)
def test_logout_is_for_every_role(world: World, role: str) -> None:
    """Any role may log out its own token (a fresh one, the matrix's stay valid)."""
    token = login(world.base, role.replace("_", "-"))
    assert call("POST", f"{world.base}/api/v1/auth/logout", token=token).status == 204


def test_nothing_of_the_other_organisation_changed(world: World) -> None:
    """After the whole matrix: the other organisation's alert is untouched and unaudited, and the
    site-limited caregiver left no trace on site b."""
    other_org_alert = world.alerts["other_org"]
    with psycopg.connect(world.database_url) as conn:
        alert = conn.execute(
            "SELECT state, acknowledged_by, resolved_by FROM alerts WHERE id = %s",
            (other_org_alert,),
        ).fetchone()
        changes = conn.execute(
            "SELECT change FROM alert_changes WHERE alert_id = %s", (other_org_alert,)
        ).fetchall()
        audited = conn.execute(
            "SELECT count(*) FROM audit_log WHERE alert_id = %s OR org_id = 'annan'",
            (other_org_alert,),
        ).fetchone()
        limited_on_b = conn.execute(
            "SELECT count(*) FROM audit_log WHERE username = 'caregiver-site-a' AND alert_id = %s",
            (world.alerts["other_site"],),
        ).fetchone()
        other_org_residence = world.residences["other_org"]
        plans = conn.execute(
            "SELECT count(*) FROM supervision_plans WHERE residence_id = %s",
            (other_org_residence,),
        ).fetchone()
        absences = conn.execute(
            "SELECT count(*) FROM absences WHERE residence_id = %s"
            " AND (ended_at IS NOT NULL OR created_by <> 'matrix')",
            (other_org_residence,),
        ).fetchone()
        residence = conn.execute(
            "SELECT label, external_ref FROM residences WHERE id = %s", (other_org_residence,)
        ).fetchone()
        visits = conn.execute(
            "SELECT count(*) FROM physical_visits WHERE residence_id = %s", (other_org_residence,)
        ).fetchone()
    assert alert == ("open", None, None)
    assert changes == [("alert.opened",)]
    assert (plans, absences, residence, visits) == ((0,), (0,), ("Lgh 1", None), (0,))
    assert audited == (0,)
    assert limited_on_b == (0,)
