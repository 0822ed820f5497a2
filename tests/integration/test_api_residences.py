"""``/api/v1/residences``: residences, their supervision plans (every version kept) and absences,
by role, scoped to the caller's organisation and sites, every change audited (+#11)."""

from __future__ import annotations

import itertools
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
    "manager": ("kommun", "manager", ()),
    "caregiver": ("kommun", "caregiver", ()),
    "technician": ("kommun", "technician", ()),
    "caregiver-b": ("kommun", "caregiver", ("site-b",)),
    "other-admin": ("annan", "admin", ()),
}
_labels = itertools.count(1)


World = ApiWorld


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


def new_residence(world: World, site: str = "site-a", user: str = "manager") -> dict[str, Any]:
    """A residence with a label no other test uses."""
    created = world.call(
        user, "POST", "/residences", {"site": site, "label": f"Test {next(_labels)}"}
    )
    assert created.status == 201, created.body
    residence: dict[str, Any] = created.json()
    return residence


def audited(world: World, residence_id: int) -> list[tuple[Any, ...]]:
    return world.rows(
        "SELECT action, username, org_id FROM audit_log WHERE residence_id = %s ORDER BY id",
        residence_id,
    )


# --- residences --------------------------------------------------------------------------------


def test_a_manager_creates_reads_lists_and_changes_a_residence(world: World) -> None:
    """Created with a label and case number, read and listed by its site, then relabelled."""
    created = world.call(
        "manager",
        "POST",
        "/residences",
        {"site": "site-a", "label": "  Lgh 1201 ", "external_ref": "2024-0815"},
    )
    assert created.status == 201, created.body
    residence = created.json()
    assert residence["label"] == "Lgh 1201"  # spaces either side are not part of a label
    assert residence["external_ref"] == "2024-0815"
    assert (residence["site_id"], residence["site_name"]) == ("site-a", "Site site-a")
    assert residence["device_ids"] == []
    path = f"/residences/{residence['id']}"
    assert world.call("caregiver", "GET", path).json() == residence
    listed = world.call("technician", "GET", "/residences?site=site-a")
    assert residence in listed.json()
    assert residence["id"] not in {
        r["id"] for r in world.call("admin", "GET", "/residences?site=site-b").json()
    }

    relabelled = world.call("manager", "PATCH", path, {"label": "Lgh 1201 A"})
    assert relabelled.status == 200, relabelled.body
    assert relabelled.json()["label"] == "Lgh 1201 A"
    assert relabelled.json()["external_ref"] == "2024-0815"  # left out: kept
    cleared = world.call("admin", "PATCH", path, {"external_ref": None})
    assert cleared.json()["external_ref"] is None
    assert cleared.json()["label"] == "Lgh 1201 A"
    assert audited(world, residence["id"]) == [
        ("residence.create", "manager", "kommun"),
        ("residence.update", "manager", "kommun"),
        ("residence.update", "admin", "kommun"),
    ]


def test_a_label_is_unique_within_its_site(world: World) -> None:
    """The same label twice at one site is 409 (at another site it is fine), also by PATCH."""
    first = world.call("manager", "POST", "/residences", {"site": "site-a", "label": "Lgh 7"})
    assert first.status == 201
    again = world.call("manager", "POST", "/residences", {"site": "site-a", "label": "Lgh 7"})
    assert again.status == 409
    assert "Lgh 7" in again.json()["detail"]
    elsewhere = world.call("manager", "POST", "/residences", {"site": "site-b", "label": "Lgh 7"})
    assert elsewhere.status == 201
    other = new_residence(world)
    taken = world.call("manager", "PATCH", f"/residences/{other['id']}", {"label": "Lgh 7"})
    assert taken.status == 409
    assert world.rows("SELECT count(*) FROM residences WHERE label = 'Lgh 7'") == [(2,)]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"site": "site-c", "label": "Lgh 1"}, 422),  # another organisation's site
        ({"site": "no-such-site", "label": "Lgh 1"}, 422),
        ({"site": "site-a", "label": "   "}, 422),
        ({"site": "site-a", "label": "x" * 65}, 422),
        ({"site": "site-a", "label": "Lgh\n1"}, 422),
        ({"site": "site-a", "label": "Lgh 1", "external_ref": "x" * 65}, 422),
        ({"site": "site-a", "label": "Lgh 1", "resident": "Anna Andersson"}, 422),
    ],
    ids=["other-org-site", "unknown-site", "blank", "long", "control", "long-ref", "a-name"],
)
def test_refused_residences_store_nothing(
    world: World, body: dict[str, object], status: int
) -> None:
    """A site not the caller's, a blank or long label, or any field for personal data: 422."""
    before = world.rows("SELECT count(*) FROM residences")
    assert world.call("admin", "POST", "/residences", body).status == status
    assert world.rows("SELECT count(*) FROM residences") == before


def test_another_organisation_neither_sees_nor_changes_residences(world: World) -> None:
    """Every residence route answers another organisation's caller 404, and lists hide them."""
    residence = new_residence(world)
    absence = world.call(
        "caregiver", "POST", f"/residences/{residence['id']}/absences", {"reason": "travel"}
    ).json()
    path = f"/residences/{residence['id']}"
    plan = {"check_times": ["23:00"]}
    for method, route, body in [
        ("GET", path, None),
        ("PATCH", path, {"label": "Kapad"}),
        ("GET", f"{path}/plan", None),
        ("PUT", f"{path}/plan", plan),
        ("GET", f"{path}/absences", None),
        ("POST", f"{path}/absences", {"reason": "other"}),
        ("POST", f"{path}/absences/{absence['id']}/end", None),
    ]:
        answer = world.call("other-admin", method, route, body)
        assert answer.status == 404, (method, route, answer.body)
        assert b"site-a" not in answer.body
    assert world.call("other-admin", "GET", "/residences").json() == []
    assert world.call("other-admin", "GET", "/residences?site=site-a").json() == []
    assert world.rows(
        "SELECT count(*) FROM audit_log WHERE org_id = 'annan' AND action <> 'login'"
    ) == [(0,)]
    assert world.rows("SELECT ended_at FROM absences WHERE id = %s", absence["id"]) == [(None,)]


def test_a_caller_limited_to_a_site_sees_only_its_residences(world: World) -> None:
    """A caregiver limited to site b: site a's residences are 404 and not listed."""
    on_a, on_b = new_residence(world, "site-a"), new_residence(world, "site-b")
    listed = {r["id"] for r in world.call("caregiver-b", "GET", "/residences").json()}
    assert on_b["id"] in listed
    assert on_a["id"] not in listed
    assert world.call("caregiver-b", "GET", f"/residences/{on_a['id']}").status == 404
    away = {"reason": "hospital"}
    assert (
        world.call("caregiver-b", "POST", f"/residences/{on_a['id']}/absences", away).status == 404
    )
    assert (
        world.call("caregiver-b", "POST", f"/residences/{on_b['id']}/absences", away).status == 201
    )


@pytest.mark.parametrize(
    ("user", "create", "plan", "absence"),
    [
        ("admin", 201, 200, 201),
        ("manager", 201, 200, 201),
        ("caregiver", 403, 403, 201),
        ("technician", 403, 403, 403),
    ],
)
def test_who_may_plan_and_who_may_record_an_absence(
    world: World, user: str, create: int, plan: int, absence: int
) -> None:
    """Managers and admins plan; care staff may not plan but record absences; technicians
    do neither (403 for what they see)."""
    residence = new_residence(world)
    path = f"/residences/{residence['id']}"
    body = {"site": "site-a", "label": f"Test {next(_labels)}"}
    assert world.call(user, "POST", "/residences", body).status == create
    assert world.call(user, "PATCH", path, {"label": f"Test {next(_labels)}"}).status == plan
    assert world.call(user, "PUT", f"{path}/plan", {"check_times": ["22:00"]}).status == plan
    recorded = world.call(user, "POST", f"{path}/absences", {"reason": "hospital"})
    assert recorded.status == absence
    assert world.call(user, "GET", f"{path}/plan").status == 200
    assert world.call(user, "GET", f"{path}/absences").status == 200
    ended_by_manager = world.call(
        "manager", "POST", f"{path}/absences", {"reason": "other"}
    ).json()["id"]
    end = world.call(user, "POST", f"{path}/absences/{ended_by_manager}/end")
    assert end.status == (200 if absence == 201 else 403)


# --- plans -------------------------------------------------------------------------------------


def test_plan_versions_keep_their_history_and_the_newest_is_in_force(world: World) -> None:
    """No plan: nothing in force. Each PUT is a new version, newest first, and in force."""
    residence = new_residence(world)
    path = f"/residences/{residence['id']}/plan"
    empty = world.call("caregiver", "GET", path)
    assert empty.json() == {"residence_id": residence["id"], "in_force": None, "history": []}

    first = world.call(
        "manager", "PUT", path, {"check_times": ["05:00", "22:00", "00:30"], "note": "beslut 1"}
    )
    assert first.status == 200, first.body
    version_1 = first.json()["in_force"]
    assert version_1["check_times"] == ["22:00", "00:30", "05:00"]  # the order of the night
    assert version_1["weekdays"] == [0, 1, 2, 3, 4, 5, 6]
    assert (version_1["window_s"], version_1["retry_s"]) == (900, 900)
    assert version_1["follow_up"] == "physical_visit"
    assert (version_1["recorded_by"], version_1["note"]) == ("manager", "beslut 1")

    second = world.call(
        "admin",
        "PUT",
        path,
        {
            "check_times": ["02:00"],
            "weekdays": [4, 5],
            "valid_from": "2030-01-04",
            "valid_to": "2030-06-29",
            "window_s": 600,
            "retry_s": 1200,
            "follow_up": "phone_then_visit",
        },
    )
    assert second.status == 200, second.body
    plan = world.call("technician", "GET", path).json()
    assert plan == second.json()
    assert [version["id"] for version in plan["history"]] == [
        plan["in_force"]["id"],
        version_1["id"],
    ]
    assert plan["history"][1] == version_1
    assert plan["in_force"]["check_times"] == ["02:00"]
    assert plan["in_force"]["valid_to"] == "2030-06-29"
    assert plan["in_force"]["follow_up"] == "phone_then_visit"
    assert plan["in_force"]["recorded_at"] > version_1["recorded_at"]

    stopped = world.call("manager", "PUT", path, {"check_times": []})
    assert stopped.json()["in_force"]["check_times"] == []
    assert len(stopped.json()["history"]) == 3
    assert [row[0] for row in audited(world, residence["id"])] == [
        "residence.create",
        "plan.change",
        "plan.change",
        "plan.change",
    ]


TOO_MANY = [f"{hour:02d}:00" for hour in range(13)]


@pytest.mark.parametrize(
    ("plan", "named"),
    [
        ({"check_times": ["25:00"]}, "check_times"),
        ({"check_times": ["2:00"]}, "check_times"),
        ({"check_times": ["02:00", "02:00"]}, "check_times"),
        ({"check_times": TOO_MANY}, "check_times"),
        ({"weekdays": [0]}, "check_times"),  # required
        ({"check_times": ["22:00"], "weekdays": [7]}, "weekdays"),
        ({"check_times": ["22:00"], "weekdays": [1, 1]}, "weekdays"),
        ({"check_times": ["22:00"], "weekdays": []}, "weekdays"),
        (
            {"check_times": ["22:00"], "valid_from": "2030-02-01", "valid_to": "2030-01-31"},
            "valid_to",
        ),
        ({"check_times": ["22:00"], "valid_from": "2030-02-30"}, "valid_from"),
        ({"check_times": ["22:00"], "window_s": 59}, "window_s"),
        ({"check_times": ["22:00"], "retry_s": 10801}, "retry_s"),
        ({"check_times": ["22:00"], "follow_up": "phone"}, "follow_up"),
        ({"check_times": ["22:00"], "note": "x" * 501}, "note"),
        ({"check_times": ["22:00"], "recorded_at": "2020-01-01T00:00:00Z"}, "recorded_at"),
    ],
    ids=[
        "hour-25",
        "one-digit",
        "repeat",
        "thirteen",
        "no-times",
        "weekday-7",
        "weekday-repeat",
        "no-weekdays",
        "to-before-from",
        "no-such-date",
        "short-window",
        "long-retry",
        "follow-up",
        "long-note",
        "backdated",
    ],
)
def test_a_bad_plan_is_422_naming_the_field_and_records_nothing(
    world: World, plan: dict[str, object], named: str
) -> None:
    """Each refusal names the field it is about; no version is recorded."""
    residence = new_residence(world)
    refused = world.call("manager", "PUT", f"/residences/{residence['id']}/plan", plan)
    assert refused.status == 422, refused.body
    assert any(named in refusal["loc"] for refusal in refused.json()["detail"]), refused.body
    assert world.rows(
        "SELECT count(*) FROM supervision_plans WHERE residence_id = %s", residence["id"]
    ) == [(0,)]


# --- absences ----------------------------------------------------------------------------------


def test_an_absence_is_recorded_ended_early_and_not_ended_twice(world: World) -> None:
    """Night staff record a hospital stay, end it when the resident is back; a second end is
    409. An upcoming one is cancelled by ending it; an expired one cannot be ended."""
    residence = new_residence(world)
    path = f"/residences/{residence['id']}/absences"
    now = datetime.now(UTC)
    hospital = world.call(
        "caregiver",
        "POST",
        path,
        {
            "reason": "hospital",
            "starts_at": (now - timedelta(minutes=20)).isoformat(),
            "expected_end": (now + timedelta(days=3)).isoformat(),
            "note": "ambulans 00:40",
        },
    )
    assert hospital.status == 201, hospital.body
    current = hospital.json()
    assert (current["state"], current["reason"], current["ended_at"]) == (
        "current",
        "hospital",
        None,
    )
    assert current["created_by"] == "caregiver"
    travel = world.call(
        "manager",
        "POST",
        path,
        {"reason": "travel", "starts_at": (now + timedelta(days=10)).isoformat()},
    ).json()
    assert (travel["state"], travel["expected_end"]) == ("upcoming", None)
    expired = world.call(
        "manager",
        "POST",
        path,
        {
            "reason": "respite",
            "starts_at": (now - timedelta(days=12)).isoformat(),
            "expected_end": (now - timedelta(days=5)).isoformat(),
        },
    ).json()
    assert expired["state"] == "over"
    long_ago = world.call(
        "manager",
        "POST",
        path,
        {
            "reason": "other",
            "starts_at": (now - timedelta(days=30, hours=20)).isoformat(),
            "expected_end": (now - timedelta(days=30, hours=10)).isoformat(),
        },
    )
    assert long_ago.status == 201, long_ago.body
    listed = world.call("technician", "GET", path).json()
    # The last start first; over more than 30 days ago: no longer listed.
    assert [absence["id"] for absence in listed] == [travel["id"], current["id"], expired["id"]]

    ended = world.call("caregiver", "POST", f"{path}/{current['id']}/end")
    assert ended.status == 200, ended.body
    assert ended.json()["state"] == "over"
    assert ended.json()["ended_at"] is not None
    again = world.call("caregiver", "POST", f"{path}/{current['id']}/end")
    assert again.status == 409
    assert "ended already" in again.json()["detail"]
    cancelled = world.call("manager", "POST", f"{path}/{travel['id']}/end")
    assert cancelled.json()["state"] == "over"
    assert world.call("manager", "POST", f"{path}/{expired['id']}/end").status == 409
    assert [row[0] for row in audited(world, residence["id"])] == [
        "residence.create",
        *["absence.create"] * 4,
        "absence.end",
        "absence.end",
    ]


def test_an_absence_is_ended_only_through_its_own_residence(world: World) -> None:
    """An absence id under another residence's path is 404, and stays as it was."""
    first, second = new_residence(world), new_residence(world)
    absence = world.call(
        "caregiver", "POST", f"/residences/{first['id']}/absences", {"reason": "travel"}
    ).json()
    wrong = world.call(
        "caregiver", "POST", f"/residences/{second['id']}/absences/{absence['id']}/end"
    )
    assert wrong.status == 404
    assert world.rows("SELECT ended_at FROM absences WHERE id = %s", absence["id"]) == [(None,)]


def _ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


YESTERDAY = _ago(1)


@pytest.mark.parametrize(
    "absence",
    [
        {"reason": "vacation"},
        {"reason": "travel", "starts_at": _ago(40)},
        {"reason": "travel", "starts_at": _ago(-400)},
        {"reason": "travel", "starts_at": YESTERDAY, "expected_end": _ago(2)},
        {"reason": "travel", "starts_at": YESTERDAY, "expected_end": YESTERDAY},
        {"reason": "travel", "starts_at": "2030-01-01T00:00:00"},
        {"reason": "travel", "starts_at": 1_900_000_000},
        {"reason": "travel", "expected_end": "0001-01-01T00:00:00+14:00"},
        {"reason": "travel", "note": "x" * 501},
    ],
    ids=[
        "reason",
        "long-ago",
        "far-ahead",
        "end-before-start",
        "end-at-start",
        "no-offset",
        "a-number",
        "year-1",
        "long-note",
    ],
)
def test_a_bad_absence_is_422_and_records_nothing(world: World, absence: dict[str, object]) -> None:
    """Unknown reasons, periods out of bounds or backwards, times without an offset: 422."""
    residence = new_residence(world)
    refused = world.call("caregiver", "POST", f"/residences/{residence['id']}/absences", absence)
    assert refused.status == 422, refused.body
    assert world.rows("SELECT count(*) FROM absences WHERE residence_id = %s", residence["id"]) == [
        (0,)
    ]


def test_a_device_moved_to_another_site_leaves_its_residence(world: World) -> None:
    """A residence is in one site (the foreign key says so): moving its camera elsewhere is
    allowed and clears the device's residence; a change of label keeps it."""
    residence = new_residence(world)
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        add_device(conn, "cam-moving-1", "site-a", "safety_camera")
        conn.execute(
            "UPDATE devices SET residence_id = %s WHERE id = 'cam-moving-1'", (residence["id"],)
        )
    relabelled = world.call("admin", "PATCH", "/devices/cam-moving-1", {"label": "Hall"})
    assert relabelled.status == 200, relabelled.body
    assert world.rows("SELECT residence_id FROM devices WHERE id = 'cam-moving-1'") == [
        (residence["id"],)
    ]
    moved = world.call("admin", "PATCH", "/devices/cam-moving-1", {"site": "site-b"})
    assert moved.status == 200, moved.body
    assert world.rows("SELECT site_id, residence_id FROM devices WHERE id = 'cam-moving-1'") == [
        ("site-b", None)
    ]
