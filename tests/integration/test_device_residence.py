"""A device's residence (+#11): set at onboarding (by id in JSON, by label in an import file),
changed and removed by PATCH, audited, refused for any residence not of the device's site, and
shown in the device and alert JSON."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from carewatch.settings import Settings
from tests.fixtures.alerts import insert_alert
from tests.fixtures.api_client import (
    ApiResponse,
    add_org_with_sites,
    add_user,
    call,
    login,
    module_database,
)
from tests.fixtures.api_server import running_api
from tools.local.postgres import PostgresInstance


@dataclass(frozen=True)
class World:
    base: str
    database_url: str
    technician: str
    # Residences by name: "a1", "a2" at site-a, "b1" at site-b (kommun), "c1" at site-c (annan).
    residences: dict[str, int]

    def call(self, method: str, path: str, body: object = None) -> ApiResponse:
        return call(method, f"{self.base}/api/v1{path}", token=self.technician, json_body=body)

    def rows(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(query, params).fetchall()


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[World]:
    """Two organisations with residences, a technician of kommun and the API serving them."""
    with module_database(pg, template_database) as database_url:
        residences: dict[str, int] = {}
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a", "site-b")
            add_org_with_sites(conn, "annan", "site-c")
            add_user(conn, "technician", "kommun", "technician")
            for name, site, label in [
                ("a1", "site-a", "Lgh 12"),
                ("a2", "site-a", "Lgh 14"),
                ("b1", "site-b", "Lgh 12"),
                ("c1", "site-c", "Lgh 1"),
            ]:
                row = conn.execute(
                    "INSERT INTO residences (site_id, label) VALUES (%s, %s) RETURNING id",
                    (site, label),
                ).fetchone()
                assert row is not None
                residences[name] = row[0]
        with running_api(Settings(database_url=database_url)) as base:
            yield World(base, database_url, login(base, "technician"), residences)


def new_id(prefix: str = "lock") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def onboard(world: World, site: str = "site-a", **extra: Any) -> ApiResponse:
    body = {"id": new_id(), "kind": "door_lock", "site": site, "label": "Dörr", **extra}
    return world.call("POST", "/devices", body)


def stored_residence(world: World, device_id: str) -> int | None:
    [(residence_id,)] = world.rows("SELECT residence_id FROM devices WHERE id = %s", device_id)
    return residence_id  # type: ignore[no-any-return]


def test_onboarded_with_a_residence_the_device_json_shows_it(world: World) -> None:
    """POST with residence_id stores it; the answer, GET and the list carry its id and label."""
    a1 = world.residences["a1"]
    created = onboard(world, residence_id=a1)
    assert created.status == 201, created.body
    device = created.json()
    assert (device["residence_id"], device["residence_label"]) == (a1, "Lgh 12")
    one = world.call("GET", f"/devices/{device['id']}").json()
    assert (one["residence_id"], one["residence_label"]) == (a1, "Lgh 12")
    listed = world.call("GET", "/devices?site=site-a&limit=500").json()["items"]
    assert {(d["id"], d["residence_label"]) for d in listed} >= {(device["id"], "Lgh 12")}

    plain = onboard(world)
    assert plain.status == 201, plain.body
    assert (plain.json()["residence_id"], plain.json()["residence_label"]) == (None, None)


@pytest.mark.parametrize(
    "residence",
    [
        pytest.param("b1", id="another-site"),
        pytest.param("c1", id="another-organisation"),
        pytest.param(None, id="unknown"),
    ],
)
def test_a_residence_not_of_the_devices_site_is_refused_at_onboarding(
    world: World, residence: str | None
) -> None:
    """422 naming residence_id, and no device stored."""
    residence_id = world.residences[residence] if residence else 2**62
    device_id = new_id()
    response = world.call(
        "POST",
        "/devices",
        {"id": device_id, "kind": "door_lock", "site": "site-a", "residence_id": residence_id},
    )
    assert response.status == 422, response.body
    assert "residence_id" in response.json()["detail"]
    assert world.rows("SELECT 1 FROM devices WHERE id = %s", device_id) == []


@pytest.mark.parametrize("value", [0, -1, 2**63, "12", 1.5])
def test_a_residence_id_that_is_no_id_is_refused(world: World, value: object) -> None:
    """A residence_id out of bigint range or not a JSON integer is 422, never a 500."""
    assert onboard(world, residence_id=value).status == 422
    created = onboard(world)
    assert (
        world.call("PATCH", f"/devices/{created.json()['id']}", {"residence_id": value}).status
        == 422
    )


def test_an_import_file_names_residences_by_label(world: World) -> None:
    """The residence column holds the label at the row's site; an unknown one refuses its row."""
    ids = [new_id() for _ in range(4)]
    text = (
        "id;kind;site;label;residence\n"
        f"{ids[0]};door_lock;site-a;Dörr;Lgh 12\n"
        f"{ids[1]};door_lock;site-b;Dörr;Lgh 12\n"
        f"{ids[2]};door_lock;site-a;Dörr;Lgh 99\n"
        f"{ids[3]};door_lock;site-a;Dörr;\n"
    )
    response = call(
        "POST",
        f"{world.base}/api/v1/devices/import",
        token=world.technician,
        content=text.encode(),
        headers={"Content-Type": "text/csv; charset=utf-8"},
    )
    assert response.status == 200, response.body
    report = response.json()
    created = {item["device"]["id"]: item["device"] for item in report["created"]}
    assert created[ids[0]]["residence_id"] == world.residences["a1"]
    assert created[ids[1]]["residence_id"] == world.residences["b1"]  # same label, its own site
    assert created[ids[3]]["residence_id"] is None
    assert [(r["line"], r["id"]) for r in report["refused"]] == [(4, ids[2])]
    assert "residence" in report["refused"][0]["reason"]
    assert "Lgh 99" in report["refused"][0]["reason"]
    assert world.rows("SELECT 1 FROM devices WHERE id = %s", ids[2]) == []
    assert stored_residence(world, ids[0]) == world.residences["a1"]


def test_patch_sets_changes_and_removes_the_residence_audited(world: World) -> None:
    """residence_id set, changed, left alone when left out, removed with null; each audited."""
    device_id = onboard(world).json()["id"]
    path = f"/devices/{device_id}"
    a1, a2 = world.residences["a1"], world.residences["a2"]

    set_ = world.call("PATCH", path, {"residence_id": a1})
    assert set_.status == 200, set_.body
    assert (set_.json()["residence_id"], set_.json()["residence_label"]) == (a1, "Lgh 12")
    assert world.call("PATCH", path, {"residence_id": a2}).json()["residence_label"] == "Lgh 14"
    relabelled = world.call("PATCH", path, {"label": "Ytterdörr"})
    assert relabelled.json()["residence_id"] == a2  # left out: kept
    cleared = world.call("PATCH", path, {"residence_id": None})
    assert (cleared.json()["residence_id"], cleared.json()["residence_label"]) == (None, None)
    assert stored_residence(world, device_id) is None

    notes = world.rows(
        "SELECT note FROM audit_log WHERE device_id = %s AND action = 'device.update' ORDER BY id",
        device_id,
    )
    assert [note for (note,) in notes] == [
        "residence None -> 'Lgh 12'",
        "residence 'Lgh 12' -> 'Lgh 14'",
        "label 'Dörr' -> 'Ytterdörr'",
        "residence 'Lgh 14' -> None",
    ]


@pytest.mark.parametrize("residence", ["b1", "c1", None])
def test_patch_refuses_a_residence_not_of_the_devices_site(
    world: World, residence: str | None
) -> None:
    """Another site's, another organisation's or an unknown residence: 422, nothing changed."""
    a1 = world.residences["a1"]
    device_id = onboard(world, residence_id=a1).json()["id"]
    residence_id = world.residences[residence] if residence else 2**62
    response = world.call("PATCH", f"/devices/{device_id}", {"residence_id": residence_id})
    assert response.status == 422, response.body
    assert "residence_id" in response.json()["detail"]
    assert stored_residence(world, device_id) == a1


def test_a_move_leaves_the_residence_unless_it_names_one_of_the_new_site(world: World) -> None:
    """Moved alone, the old site's residence goes; moved with a residence of the new site, it is
    set; with one of the old site, the move is refused."""
    a1, b1 = world.residences["a1"], world.residences["b1"]
    device_id = onboard(world, residence_id=a1).json()["id"]
    path = f"/devices/{device_id}"
    refused = world.call("PATCH", path, {"site": "site-b", "residence_id": a1})
    assert refused.status == 422, refused.body
    assert world.rows("SELECT site_id FROM devices WHERE id = %s", device_id) == [("site-a",)]
    moved = world.call("PATCH", path, {"site": "site-b", "residence_id": b1})
    assert moved.status == 200, moved.body
    assert (moved.json()["site_id"], moved.json()["residence_id"]) == ("site-b", b1)
    back = world.call("PATCH", path, {"site": "site-a"})
    assert (back.json()["site_id"], back.json()["residence_id"]) == ("site-a", None)


def test_alert_json_shows_the_devices_or_the_supervision_alerts_residence(world: World) -> None:
    """A device rule's alert takes its device's residence; a supervision alert its own."""
    a1, a2 = world.residences["a1"], world.residences["a2"]
    in_a1 = onboard(world, residence_id=a1).json()["id"]
    nowhere = onboard(world).json()["id"]
    device_alert = insert_alert(world.database_url, in_a1).alert_id
    bare_alert = insert_alert(world.database_url, nowhere).alert_id
    # A supervision alert about a2's planned check, raised on a camera of no residence.
    camera = onboard(world).json()["id"]
    supervision_alert = insert_alert(world.database_url, camera, "supervision_missed").alert_id
    with psycopg.connect(world.database_url) as conn:
        conn.execute(
            "UPDATE alerts SET residence_id = %s, planned_at = now() WHERE id = %s",
            (a2, supervision_alert),
        )

    def residence(alert_id: int) -> tuple[object, object]:
        alert = world.call("GET", f"/alerts/{alert_id}").json()
        return alert["residence_id"], alert["residence_label"]

    assert residence(device_alert) == (a1, "Lgh 12")
    assert residence(bare_alert) == (None, None)
    assert residence(supervision_alert) == (a2, "Lgh 14")
    listed = {a["id"]: a["residence_label"] for a in world.call("GET", "/alerts").json()}
    assert listed[device_alert] == "Lgh 12"
    assert listed[supervision_alert] == "Lgh 14"
