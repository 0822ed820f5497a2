"""``/api/v1/supervision/summary`` (and ``.csv``): the stored verdicts counted per site and
night as :func:`devices.supervision.tally` counts them, the effect estimate with the sites'
assumptions, and the two assumptions set through ``PATCH /api/v1/sites/{id}`` (+#11)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from carewatch.settings import Settings
from devices.supervision import CheckState, NightTally, Verdict, tally
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
FIRST = date(2026, 3, 1)
SECOND = date(2026, 3, 2)

# Every kind of verdict the pass stores, flags as judge() sets them.
FIRST_NIGHT: Sequence[Verdict] = (
    Verdict(CheckState.DONE),
    Verdict(CheckState.DONE, not_seen=True),  # seen on the retry
    Verdict(CheckState.LATE),
    Verdict(CheckState.MISSED),
    Verdict(CheckState.PAUSED),
    Verdict(CheckState.VISIT_NEEDED, not_seen=True, visit_needed=True),
    Verdict(CheckState.VISIT_NEEDED, camera_failed=True, visit_needed=True),
    Verdict(CheckState.VISITED, by_visit=True, camera_failed=True, visit_needed=True),
    Verdict(CheckState.VISITED, by_visit=True, not_seen=True, visit_needed=True),
    Verdict(CheckState.VISITED, by_visit=True),  # a visit settled a missed check
    Verdict(CheckState.RETRY_DUE, not_seen=True),
    Verdict(CheckState.UPCOMING),
)
SECOND_NIGHT: Sequence[Verdict] = (
    Verdict(CheckState.LATE),
    Verdict(CheckState.LATE),
    Verdict(CheckState.DONE),
)
TALLY_FIELDS = (
    "planned",
    "paused",
    "done_in_window",
    "late",
    "missed",
    "not_seen",
    "visits_needed",
    "replaced_by_visits",
)


@dataclass(frozen=True)
class World(ApiWorld):
    def summary(self, user: str, query: str) -> dict[str, Any]:
        response = self.call(user, "GET", f"/supervision/summary?{query}")
        assert response.status == 200, response.body
        answer: dict[str, Any] = response.json()
        return answer


def residence(conn: psycopg.Connection[Any], site: str, label: str) -> int:
    row = conn.execute(
        "INSERT INTO residences (site_id, label) VALUES (%s, %s) RETURNING id", (site, label)
    ).fetchone()
    assert row is not None
    residence_id: int = row[0]
    return residence_id


def store(
    conn: psycopg.Connection[Any], residence_id: int, night: date, verdicts: Sequence[Verdict]
) -> None:
    """The verdicts as the supervision pass stores them, one planned check each."""
    evening = datetime.combine(night, datetime.min.time(), UTC) + timedelta(hours=20)
    for number, verdict in enumerate(verdicts):
        conn.execute(
            "INSERT INTO supervision_checks (residence_id, planned_at, night, state, not_seen,"
            " visit_needed, by_visit, camera_failed) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                residence_id,
                evening + timedelta(minutes=10 * number),
                night,
                verdict.state.value,
                verdict.not_seen,
                verdict.visit_needed,
                verdict.by_visit,
                verdict.camera_failed,
            ),
        )


def lock_visit(conn: psycopg.Connection[Any], residence_id: int, at: datetime) -> None:
    conn.execute(
        "INSERT INTO physical_visits (residence_id, visited_at, source, lock_device_id)"
        " VALUES (%s, %s, 'lock', 'lock-0001')",
        (residence_id, at),
    )


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[World]:
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a", "site-b")
            add_org_with_sites(conn, "annan", "site-c")
            conn.execute("UPDATE sites SET name = '=Formel' WHERE id = 'site-b'")
            for username, (org, role) in USERS.items():
                add_user(conn, username, org, role)
            add_device(conn, "lock-0001", "site-a")
            one = residence(conn, "site-a", "Lgh 1")
            two = residence(conn, "site-a", "Lgh 2")
            store(conn, one, FIRST, FIRST_NIGHT[:6])
            store(conn, two, FIRST, FIRST_NIGHT[6:])
            store(conn, one, SECOND, SECOND_NIGHT)
            store(conn, residence(conn, "site-b", "Lgh 1"), FIRST, [Verdict(CheckState.DONE)])
            store(conn, residence(conn, "site-c", "Lgh 9"), FIRST, [Verdict(CheckState.DONE)])
            # site-a is in Stockholm (UTC+1 in March): 2026-03-02 10:30 UTC is 11:30 local,
            # the morning of the first night; 11:30 UTC is 12:30 local, the second night's.
            lock_visit(conn, one, datetime(2026, 3, 1, 22, tzinfo=UTC))
            lock_visit(conn, one, datetime(2026, 3, 2, 10, 30, tzinfo=UTC))
            lock_visit(conn, two, datetime(2026, 3, 2, 11, 30, tzinfo=UTC))
            lock_visit(conn, two, datetime(2026, 2, 28, 12, tzinfo=UTC))  # before the period
            conn.execute(
                "INSERT INTO physical_visits (residence_id, visited_at, source, recorded_by)"
                " VALUES (%s, '2026-03-01T23:00:00Z', 'staff', 'caregiver')",
                (one,),
            )
        with running_api(Settings(database_url=database_url)) as base:
            tokens = {name: login(base, name) for name in USERS}
            yield World(base, database_url, tokens)


def figures(tallied: NightTally) -> dict[str, int]:
    return {name: getattr(tallied, name) for name in TALLY_FIELDS}


def test_figures_are_the_tally_of_the_same_verdicts(world: World) -> None:
    """Each night's counts equal devices.supervision.tally of the verdicts stored for it."""
    answer = world.summary("manager", "site=site-a&since=2026-03-01&until=2026-03-02")
    assert (answer["since"], answer["until"]) == ("2026-03-01", "2026-03-02")
    [site] = answer["sites"]
    first, second = site["nights"]
    assert first["night"] == "2026-03-01"
    assert {name: first[name] for name in TALLY_FIELDS} == figures(tally(FIRST_NIGHT))
    assert {name: second[name] for name in TALLY_FIELDS} == figures(tally(SECOND_NIGHT))
    assert site["totals"] == figures(tally([*FIRST_NIGHT, *SECOND_NIGHT]))
    assert (first["lock_visits"], second["lock_visits"]) == (2, 1)


def test_the_effect_estimate_carries_its_assumptions(world: World) -> None:
    """Visits avoided are done + late; minutes follow the site's (default) assumptions."""
    answer = world.summary("admin", "since=2026-03-01&until=2026-03-02")
    sites = {site["site_id"]: site for site in answer["sites"]}
    assert set(sites) == {"site-a", "site-b"}
    by_camera = tally([*FIRST_NIGHT, *SECOND_NIGHT]).by_camera
    assert sites["site-a"]["assumptions"] == {"visit_minutes": 20, "key_handling_minutes": 3}
    assert sites["site-a"]["effect"] == {
        "visits_avoided": by_camera,
        "staff_minutes_saved": by_camera * 20,
        "lock_visits": 3,
        "key_minutes_saved": 9,
    }
    assert set(answer["assumptions_explained"]) == {"visit_minutes", "key_handling_minutes"}


def test_site_patch_sets_the_assumptions_and_the_summary_follows(world: World) -> None:
    """An admin sets both minutes (audited); site detail shows them; the estimate uses them."""
    body = {"visit_minutes": 35, "key_handling_minutes": 0}
    response = world.call("admin", "PATCH", "/sites/site-b", body)
    assert response.status == 200, response.body
    assert {k: response.json()[k] for k in body} == body
    detail = world.call("manager", "GET", "/sites/site-b").json()
    assert {k: detail[k] for k in body} == body
    [site] = world.summary("manager", "site=site-b&since=2026-03-01&until=2026-03-01")["sites"]
    assert site["effect"]["staff_minutes_saved"] == 35
    with psycopg.connect(world.database_url) as conn:
        notes = conn.execute(
            "SELECT note FROM audit_log WHERE action = 'site.update' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert notes is not None
    assert "visit_minutes" in notes[0]


@pytest.mark.parametrize(
    "body",
    [
        {"visit_minutes": 0},
        {"visit_minutes": 241},
        {"key_handling_minutes": -1},
        {"key_handling_minutes": 121},
        {"visit_minutes": "many"},
    ],
    ids=str,
)
def test_out_of_bounds_minutes_are_refused(world: World, body: dict[str, Any]) -> None:
    """Minutes outside 1-240 (visit) and 0-120 (key handling) are 422."""
    assert world.call("admin", "PATCH", "/sites/site-a", body).status == 422


@pytest.mark.parametrize("user", ["manager", "technician", "caregiver"])
def test_only_admins_set_the_assumptions(world: World, user: str) -> None:
    """Other roles may not change a site's minutes (403)."""
    response = world.call(user, "PATCH", "/sites/site-a", {"visit_minutes": 5})
    assert response.status == 403


@pytest.mark.parametrize("user", ["caregiver", "technician"])
@pytest.mark.parametrize("path", ["/supervision/summary", "/supervision/summary.csv"])
def test_care_staff_and_technicians_may_not_read_it(world: World, user: str, path: str) -> None:
    """The summary is for managers and admins (403)."""
    assert world.call(user, "GET", path).status == 403


def test_another_organisation_sees_nothing_of_it(world: World) -> None:
    """Another organisation's site is 404; its own summary holds only its own site."""
    assert world.call("other-admin", "GET", "/supervision/summary?site=site-a").status == 404
    answer = world.summary("other-admin", "since=2026-03-01&until=2026-03-02")
    assert [site["site_id"] for site in answer["sites"]] == ["site-c"]
    assert answer["sites"][0]["totals"]["planned"] == 1


@pytest.mark.parametrize(
    "query",
    [
        "since=2026-03-02&until=2026-03-01",
        "since=2025-01-01&until=2026-01-02",
        "since=2026-02-30",
        "until=1999-12-31",
        "since=yesterday",
    ],
)
def test_a_bad_period_is_refused(world: World, query: str) -> None:
    """since after until, more than 366 nights, or no date is 422."""
    assert world.call("manager", "GET", f"/supervision/summary?{query}").status == 422


def test_the_default_is_the_last_30_nights(world: World) -> None:
    """Without since and until: 30 nights up to the current one."""
    answer = world.summary("manager", "")
    since, until = date.fromisoformat(answer["since"]), date.fromisoformat(answer["until"])
    assert (until - since).days == 29
    assert abs((datetime.now(UTC).date() - until).days) <= 1


def test_the_csv_has_a_row_per_site_and_night_with_the_assumptions(world: World) -> None:
    """One row per site and night, assumptions as columns, formula-like names neutralised."""
    response = world.call(
        "manager", "GET", "/supervision/summary.csv?since=2026-03-01&until=2026-03-02"
    )
    assert response.status == 200, response.body
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.body.decode())))
    by_key = {(row["site_id"], row["night"]): row for row in rows}
    assert len(by_key) == len(rows)
    assert set(by_key) == {
        ("site-a", "2026-03-01"),
        ("site-a", "2026-03-02"),
        ("site-b", "2026-03-01"),
    }
    first = by_key["site-a", "2026-03-01"]
    expected = figures(tally(FIRST_NIGHT))
    assert {name: int(first[name]) for name in TALLY_FIELDS} == expected
    avoided = expected["done_in_window"] + expected["late"]
    assert int(first["visits_avoided"]) == avoided
    assert int(first["staff_minutes_saved"]) == avoided * int(first["visit_minutes"])
    assert int(first["key_minutes_saved"]) == 2 * int(first["key_handling_minutes"])
    assert by_key["site-b", "2026-03-01"]["site_name"] == "'=Formel"
