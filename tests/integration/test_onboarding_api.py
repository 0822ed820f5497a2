"""Onboarding through the API: devices with their broker credentials, decommission, rotation,
bridges and CSV import, checked against the rows they leave in PostgreSQL.

The world is built once for the module: kommun (sites a and b) and annan (site c), a technician
and an admin of kommun; each test onboards devices of its own ids.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import psycopg
import pytest
from psycopg import sql

from carewatch.broker_passwords import verify_password
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
from tools.local.postgres import PostgresInstance

DEVICE_URL: Final = "mqtts://mqtt.kommun.example:8883"
HEADER: Final = "id,kind,site,label\n"


@dataclass(frozen=True)
class World:
    base: str
    database_url: str
    technician: str
    admin: str
    admin_annan: str


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[World]:
    """Two organisations, a technician and admins, and the API serving them."""
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a", "site-b")
            add_org_with_sites(conn, "annan", "site-c")
            add_user(conn, "technician", "kommun", "technician")
            add_user(conn, "admin", "kommun", "admin")
            add_user(conn, "admin-annan", "annan", "admin")
            add_device(conn, "annans-lock", "site-c")
        settings = Settings(
            database_url=database_url, device_mqtt_url=DEVICE_URL, sse_heartbeat_s=0.2
        )
        with running_api(settings) as base:
            yield World(
                base,
                database_url,
                login(base, "technician"),
                login(base, "admin"),
                login(base, "admin-annan"),
            )


def new_id(prefix: str = "dev") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def post_device(world: World, token: str | None = None, **body: Any) -> ApiResponse:
    return call(
        "POST", f"{world.base}/api/v1/devices", token=token or world.technician, json_body=body
    )


def device_row(world: World, device_id: str) -> dict[str, Any] | None:
    with psycopg.connect(world.database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT status, mqtt_password_hash, site_id, label, decommissioned_at,"
            " credentials_issued_at, source, bridge FROM devices WHERE id = %s",
            (device_id,),
        )
        row = cur.fetchone()
        if row is None:
            return None
        assert cur.description is not None
        return dict(zip([c.name for c in cur.description], row, strict=True))


def stored_anywhere(database_url: str, needle: str) -> list[str]:
    """The tables of the database that hold ``needle`` in any column of any row."""
    found: list[str] = []
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT 1 FROM {}.{} t WHERE t::text LIKE %s LIMIT 1").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            if conn.execute(query, (f"%{needle}%",)).fetchone() is not None:
                found.append(f"{schema}.{table}")
    return found


def import_csv(
    world: World, data: bytes, *, token: str | None = None, multipart: bool = False
) -> ApiResponse:
    """POST /devices/import with the CSV as a text/csv body or a multipart file upload."""
    url = f"{world.base}/api/v1/devices/import"
    token = token or world.technician
    if multipart:
        files = {"file": ("enheter.csv", data, "text/csv")}
        return call("POST", url, token=token, files=files, timeout_s=30.0)
    headers = {"Content-Type": "text/csv; charset=utf-8"}
    return call("POST", url, token=token, content=data, headers=headers, timeout_s=30.0)


# --- single devices ----------------------------------------------------------------------------


def test_create_answers_credentials_that_match_the_stored_hash_only(world: World) -> None:
    """201 with username, password and the device broker address; only the hash is stored."""
    device_id = new_id("lock")
    response = post_device(world, id=device_id, kind="door_lock", site="site-a", label="Lgh 12")
    assert response.status == 201, response.body
    body = response.json()
    credentials = body["credentials"]
    assert credentials["username"] == device_id
    assert (credentials["host"], credentials["port"], credentials["tls"]) == (
        "mqtt.kommun.example",
        8883,
        True,
    )
    assert credentials["url"] == DEVICE_URL
    assert body["site_id"] == "site-a"
    assert body["has_credentials"] is True
    row = device_row(world, device_id)
    assert row is not None
    assert row["status"] == "active"
    assert verify_password(credentials["password"], row["mqtt_password_hash"])
    assert not verify_password(credentials["password"] + "x", row["mqtt_password_hash"])
    assert stored_anywhere(world.database_url, credentials["password"]) == []
    with psycopg.connect(world.database_url) as conn:
        audit = conn.execute(
            "SELECT username, org_id, action FROM audit_log WHERE device_id = %s", (device_id,)
        ).fetchall()
    assert audit == [("technician", "kommun", "device.create")]


def test_a_taken_id_is_409_whichever_organisation_holds_it(world: World) -> None:
    """Own duplicate and another organisation's id: 409 'device id taken', nothing revealed."""
    device_id = new_id("lock")
    assert post_device(world, id=device_id, kind="door_lock", site="site-a").status == 201
    again = post_device(world, id=device_id, kind="door_lock", site="site-b")
    assert again.status == 409
    assert again.json()["detail"] == "device id taken"
    other = post_device(world, id="annans-lock", kind="door_lock", site="site-a")
    assert other.status == 409
    assert b"annan" not in other.body.replace(b"annans-lock", b"")


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"kind": "fridge", "site": "site-a"}, "unknown kind"),
        ({"kind": "door_lock", "site": "site-c"}, "site not found"),
        ({"kind": "door_lock", "site": "nowhere"}, "site not found"),
        ({"kind": "door_lock", "site": "site-a", "label": "a\nb"}, "control characters"),
    ],
    ids=["unknown-kind", "other-org-site", "unknown-site", "control-chars"],
)
def test_bad_values_are_422(world: World, body: dict[str, str], detail: str) -> None:
    """Unknown kind, a site the caller does not have, a bad label: 422 and nothing stored."""
    device_id = new_id()
    response = post_device(world, id=device_id, **body)
    assert response.status == 422, response.body
    assert detail in response.json()["detail"]
    assert device_row(world, device_id) is None


def test_invalid_id_is_422(world: World) -> None:
    """An id outside the contract's pattern is refused."""
    assert post_device(world, id="Bad Id", kind="door_lock", site="site-a").status == 422


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/devices/{id}"),
        ("GET", "/devices/{id}/events"),
        ("PATCH", "/devices/{id}"),
        ("DELETE", "/devices/{id}"),
        ("POST", "/devices/{id}/credentials"),
        ("DELETE", "/bridges/{id}"),
        ("POST", "/bridges/{id}/credentials"),
    ],
    ids=lambda value: str(value).replace("/", "_"),
)
@pytest.mark.parametrize("bad_id", ["Bad-Id", "-lock", "x" * 65], ids=["upper", "dash", "long"])
def test_a_malformed_id_in_the_path_is_422_whatever_the_method(
    world: World, method: str, path: str, bad_id: str
) -> None:
    """Every device and bridge path checks the id's shape (devices.ids), as GET always did."""
    url = f"{world.base}/api/v1{path}".replace("{id}", bad_id)
    body = {"label": "x"} if method == "PATCH" else None
    response = call(method, url, token=world.technician, json_body=body)
    assert response.status == 422, response.body


@pytest.mark.parametrize("reserved", ["summary", "import"])
def test_ids_that_name_api_paths_are_refused(world: World, reserved: str) -> None:
    """GET /api/v1/devices/summary is the fleet summary, so no device may be called that."""
    response = post_device(world, id=reserved, kind="door_lock", site="site-a")
    assert response.status == 422
    assert "reserved" in response.json()["detail"]


def test_patch_changes_label_and_moves_within_the_organisation_only(world: World) -> None:
    """Label and site change (audited); a site of another organisation is 422."""
    device_id = new_id("lock")
    assert post_device(world, id=device_id, kind="door_lock", site="site-a").status == 201
    url = f"{world.base}/api/v1/devices/{device_id}"
    moved = call(
        "PATCH", url, token=world.technician, json_body={"label": "Lgh 7", "site": "site-b"}
    )
    assert moved.status == 200, moved.body
    assert (moved.json()["label"], moved.json()["site_id"]) == ("Lgh 7", "site-b")
    away = call("PATCH", url, token=world.technician, json_body={"site": "site-c"})
    assert away.status == 422
    row = device_row(world, device_id)
    assert row is not None
    assert (row["site_id"], row["label"]) == ("site-b", "Lgh 7")
    with psycopg.connect(world.database_url) as conn:
        notes = conn.execute(
            "SELECT note FROM audit_log WHERE device_id = %s AND action = 'device.update'",
            (device_id,),
        ).fetchall()
    assert notes == [("label '' -> 'Lgh 7'; site site-a -> site-b",)]


def test_decommission_revokes_keeps_history_and_resolves_open_alerts(world: World) -> None:
    """DELETE: status decommissioned, hash gone, events kept, open alerts resolved on the board."""
    device_id = new_id("lock")
    assert post_device(world, id=device_id, kind="door_lock", site="site-a").status == 201
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO events (time, received_at, device_id, event_id, type, data)"
            " VALUES (now(), now(), %s, '1', 'lock.jammed', '{}')",
            (device_id,),
        )
    open_alert = insert_alert(world.database_url, device_id, "lock_jammed")
    done_alert = insert_alert(world.database_url, device_id, "tamper", state="resolved")
    with open_stream(world.base, token=world.admin, last_event_id=done_alert.change_id) as stream:
        response = call("DELETE", f"{world.base}/api/v1/devices/{device_id}", token=world.admin)
        assert response.status == 200, response.body
        # The hub may still be delivering the inserts' own alert.opened changes: skip them.
        event = stream.next(timeout_s=5)
        while event is not None and event.event == "alert.opened":
            event = stream.next(timeout_s=5)
        assert event is not None
        assert (event.event, event.json()["id"]) == ("alert.resolved", open_alert.alert_id)
    body = response.json()
    assert body["status"] == "decommissioned"
    assert body["resolved_alert_ids"] == [open_alert.alert_id]
    assert body["has_credentials"] is False
    row = device_row(world, device_id)
    assert row is not None
    assert row["status"] == "decommissioned"
    assert row["mqtt_password_hash"] is None
    assert row["decommissioned_at"] is not None
    with psycopg.connect(world.database_url) as conn:
        events = conn.execute("SELECT count(*) FROM events WHERE device_id = %s", (device_id,))
        assert events.fetchone() == (1,)
        alerts = conn.execute(
            "SELECT id, state, resolved_by FROM alerts WHERE device_id = %s ORDER BY id",
            (device_id,),
        ).fetchall()
        notes = conn.execute(
            "SELECT note FROM audit_log WHERE alert_id = %s AND action = 'alert.resolve'",
            (open_alert.alert_id,),
        ).fetchall()
    assert alerts == [
        (open_alert.alert_id, "resolved", "admin"),
        (done_alert.alert_id, "resolved", "someone"),
    ]
    assert notes == [("device decommissioned",)]
    again = call("DELETE", f"{world.base}/api/v1/devices/{device_id}", token=world.admin)
    assert again.status == 409
    assert again.json()["detail"] == "already decommissioned"
    rotate = call("POST", f"{world.base}/api/v1/devices/{device_id}/credentials", token=world.admin)
    assert rotate.status == 409


def test_rotation_issues_a_new_password_and_voids_the_old(world: World) -> None:
    """POST .../credentials: the new password verifies, the old one no longer does."""
    device_id = new_id("cam")
    first = post_device(world, id=device_id, kind="safety_camera", site="site-b").json()
    old_password = first["credentials"]["password"]
    response = call(
        "POST", f"{world.base}/api/v1/devices/{device_id}/credentials", token=world.technician
    )
    assert response.status == 200, response.body
    new_password = response.json()["credentials"]["password"]
    row = device_row(world, device_id)
    assert row is not None
    assert verify_password(new_password, row["mqtt_password_hash"])
    assert not verify_password(old_password, row["mqtt_password_hash"])
    assert stored_anywhere(world.database_url, new_password) == []


def test_rotation_gives_a_device_from_before_credentials_its_first_password(world: World) -> None:
    """A device registered without a hash (before migration 0004) gets one."""
    device_id = new_id("old")
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        add_device(conn, device_id, "site-a")
    response = call(
        "POST", f"{world.base}/api/v1/devices/{device_id}/credentials", token=world.admin
    )
    assert response.status == 200, response.body
    row = device_row(world, device_id)
    assert row is not None
    assert verify_password(response.json()["credentials"]["password"], row["mqtt_password_hash"])


# --- bridges and zigbee2mqtt devices -----------------------------------------------------------


def test_bridges_and_zigbee_devices(world: World) -> None:
    """A bridge is created with credentials; its devices get none; in use it cannot go."""
    bridge_id = new_id("hub")
    created = call(
        "POST",
        f"{world.base}/api/v1/bridges",
        token=world.technician,
        json_body={"id": bridge_id, "label": "Källaren"},
    )
    assert created.status == 201, created.body
    bridge = created.json()
    assert bridge["username"] == f"zigbee2mqtt.{bridge_id}"
    with psycopg.connect(world.database_url) as conn:
        stored = conn.execute(
            "SELECT org_id, role, password_hash FROM broker_accounts WHERE username = %s",
            (bridge["username"],),
        ).fetchone()
    assert stored is not None
    assert stored[:2] == ("kommun", "zigbee2mqtt_bridge")
    assert verify_password(bridge["credentials"]["password"], stored[2])
    assert (
        call(
            "POST", f"{world.base}/api/v1/bridges", token=world.admin, json_body={"id": bridge_id}
        ).status
        == 409
    )

    device_id = new_id("contact")
    zigbee = {"source": "zigbee2mqtt", "zigbee_name": device_id, "zigbee_model": "SNZB-04"}
    response = post_device(
        world, id=device_id, kind="door_contact", site="site-a", bridge=bridge_id, **zigbee
    )
    assert response.status == 201, response.body
    assert response.json()["credentials"] is None
    row = device_row(world, device_id)
    assert row is not None
    assert (row["source"], row["bridge"], row["mqtt_password_hash"]) == (
        "zigbee2mqtt",
        f"zigbee2mqtt.{bridge_id}",
        None,
    )
    taken_name = post_device(
        world, id=new_id(), kind="door_contact", site="site-a", bridge=bridge_id, **zigbee
    )
    assert taken_name.status == 409
    # zigbee2mqtt/bridge/... is zigbee2mqtt's own namespace, never a device.
    named_bridge = post_device(
        world, id=new_id(), kind="door_contact", site="site-a", bridge=bridge_id,
        **{**zigbee, "zigbee_name": "bridge"},
    )  # fmt: skip
    assert named_bridge.status == 422, named_bridge.body
    others = post_device(
        world,
        token=world.admin_annan,
        id=new_id(),
        kind="door_contact",
        site="site-c",
        bridge=bridge_id,
        **{**zigbee, "zigbee_name": new_id()},
    )
    assert others.status == 422
    assert others.json()["detail"] == "bridge not found"
    rotate = call(
        "POST", f"{world.base}/api/v1/devices/{device_id}/credentials", token=world.technician
    )
    assert rotate.status == 409

    listed = call("GET", f"{world.base}/api/v1/bridges", token=world.technician).json()
    assert {"id": bridge_id, "active_devices": 1}.items() <= next(
        b for b in listed if b["id"] == bridge_id
    ).items()
    annan_list = call("GET", f"{world.base}/api/v1/bridges", token=world.admin_annan).json()
    assert bridge_id not in {b["id"] for b in annan_list}
    bridge_url = f"{world.base}/api/v1/bridges/{bridge_id}"
    assert call("DELETE", bridge_url, token=world.admin_annan).status == 404
    assert call("DELETE", bridge_url, token=world.technician).status == 409

    spare = new_id("hub")
    call("POST", f"{world.base}/api/v1/bridges", token=world.admin, json_body={"id": spare})
    assert call("DELETE", f"{world.base}/api/v1/bridges/{spare}", token=world.admin).status == 204
    with psycopg.connect(world.database_url) as conn:
        gone = conn.execute(
            "SELECT count(*) FROM broker_accounts WHERE username = %s", (f"zigbee2mqtt.{spare}",)
        ).fetchone()
    assert gone == (0,)


# --- import ------------------------------------------------------------------------------------


def test_import_creates_good_rows_and_reports_bad_ones(world: World) -> None:
    """Good rows created with credentials; each bad row refused with its line and reason."""
    good_1, good_2, dup = new_id("imp"), new_id("imp"), new_id("imp")
    rows = [
        f"{good_1},door_lock,site-a,Lgh 1",
        f"{dup},alarm_button,site-b,Lgh 2",
        f"{dup},alarm_button,site-b,Lgh 3",
        "annans-lock,door_lock,site-a,Lgh 4",
        f"{new_id()},fridge,site-a,Lgh 5",
        f"{new_id()},door_lock,site-c,Lgh 6",
        "NOT VALID,door_lock,site-a,Lgh 7",
        f"{new_id()},door_lock,site-a," + "x" * 201,
        f"{good_2},safety_camera,site-b,",
    ]
    response = import_csv(world, (HEADER + "\n".join(rows) + "\n").encode())
    assert response.status == 200, response.body
    report = response.json()
    assert [(c["line"], c["device"]["id"]) for c in report["created"]] == [
        (2, good_1),
        (3, dup),
        (10, good_2),
    ]
    assert [(r["line"], r["reason"].split(":")[0]) for r in report["refused"]] == [
        (4, "duplicate id"),
        (5, "device id taken"),
        (6, "unknown kind 'fridge'"),
        (7, "site not found"),
        (8, "invalid device id"),
        (9, "label longer than 200 characters"),
    ]
    assert (report["created_count"], report["refused_count"]) == (3, 6)
    lines = report["credentials_csv"].strip().splitlines()
    assert lines[0] == "id,kind,site,label,username,password,url,ca_sha256,ca_url"
    assert len(lines) == 4
    with psycopg.connect(world.database_url) as conn:
        for created in report["created"]:
            stored = conn.execute(
                "SELECT mqtt_password_hash FROM devices WHERE id = %s", (created["device"]["id"],)
            ).fetchone()
            assert stored is not None
            assert verify_password(created["credentials"]["password"], stored[0])
            assert f"{created['device']['id']}," in report["credentials_csv"]
    for created in report["created"]:
        assert stored_anywhere(world.database_url, created["credentials"]["password"]) == []


def test_import_reads_excel_semicolons_with_bom_as_multipart(world: World) -> None:
    """Swedish Excel's CSV: BOM, semicolons, CRLF, capitalised header, uploaded as a file."""
    first, second = new_id("sv"), new_id("sv")
    text = f"Id;Kind;Site;Label\r\n{first};door_lock;site-a;Lgh 12, vån 2\r\n\r\n"
    text += f"{second};companion_robot;site-b;Rum Åsa\r\n"
    response = import_csv(world, "\ufeff".encode() + text.encode(), multipart=True)
    assert response.status == 200, response.body
    report = response.json()
    assert report["refused"] == []
    assert [(c["device"]["id"], c["device"]["label"]) for c in report["created"]] == [
        (first, "Lgh 12, vån 2"),
        (second, "Rum Åsa"),
    ]


@pytest.mark.parametrize(
    ("data", "status", "detail"),
    [
        (b"", 422, "empty"),
        (b"id,kind\nx,door_lock\n", 422, "lacks site"),
        (b"id,kind,site,lable\n", 422, "unknown column"),
        (b"id,kind,site\n\xff\xfe\n", 422, "not UTF-8"),
        (HEADER.encode() + b"a" * (2 * 1024 * 1024), 413, "2 MB"),
        ((HEADER + "x,door_lock,site-a,\n" * 10_001).encode(), 413, "10000 rows"),
    ],
    ids=["empty", "missing-column", "unknown-column", "not-utf8", "too-large", "too-many-rows"],
)
def test_import_refuses_unreadable_files_whole(
    world: World, data: bytes, status: int, detail: str
) -> None:
    """Files that cannot be read as a device list are refused as a whole with a reason."""
    response = import_csv(world, data)
    assert response.status == status, response.body
    assert detail in response.json()["detail"]


def test_import_of_1000_devices_is_one_quick_request(world: World) -> None:
    """1,000 rows are created (with hashes) in one request, well within seconds."""
    prefix = new_id("bulk")
    text = HEADER + "".join(f"{prefix}-{i:04d},door_lock,site-a,Lgh {i}\n" for i in range(1000))
    started = time.monotonic()
    response = import_csv(world, text.encode())
    elapsed_s = time.monotonic() - started
    assert response.status == 200, response.body
    assert response.json()["created_count"] == 1000
    assert elapsed_s < 10, elapsed_s
    assert json.loads(response.body)["refused"] == []


@pytest.mark.parametrize(
    ("kind", "model", "detail"),
    [
        ("door_contact", "NO-SUCH-MODEL", "is not a model Carewatch can read"),
        ("alarm_button", "SNZB-04", "is a door_contact, not a alarm_button"),
        ("door_contact", "SNZB 04", "invalid zigbee_model"),
    ],
    ids=["unknown-model", "model-of-another-kind", "bad-format"],
)
def test_zigbee_models_come_from_the_mapping(
    world: World, kind: str, model: str, detail: str
) -> None:
    """A zigbee2mqtt device's model must be one devices/zigbee2mqtt.toml maps, to its kind."""
    bridge_id = new_id("hub")
    created = call(
        "POST", f"{world.base}/api/v1/bridges", token=world.admin, json_body={"id": bridge_id}
    )
    assert created.status == 201
    device_id = new_id("zb")
    response = post_device(
        world,
        id=device_id,
        kind=kind,
        site="site-a",
        source="zigbee2mqtt",
        zigbee_name=device_id,
        zigbee_model=model,
        bridge=bridge_id,
    )
    assert response.status == 422, response.body
    assert detail in response.json()["detail"]
