"""The authorization matrix of ``GET /api/v1/usage``: every role x own site / other site /
other organisation, with the status each must answer; nothing of another organisation leaks.

The world is built once for the module, like test_authorization_matrix.py's: kommun (sites a
and b) and annan (site c), a lock with one alert at each site, a user per role in kommun, a
manager limited to site a and an admin of annan.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import psycopg
import pytest

from carewatch.settings import Settings
from tests.fixtures.api_client import (
    add_device,
    add_org_with_sites,
    add_user,
    call,
    insert_alert,
    login,
    module_database,
)
from tests.fixtures.api_server import running_api
from tools.local.postgres import PostgresInstance

ROLES: Final = ("caregiver", "technician", "manager", "manager_site_a", "admin")
TARGETS: Final = ("own_site", "other_site", "other_org")
SITE_OF: Final = {"own_site": "site-a", "other_site": "site-b", "other_org": "site-c"}
MAY_READ: Final = {"manager", "manager_site_a", "admin"}


@dataclass(frozen=True)
class World:
    base: str
    tokens: dict[str, str]


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
                if role == "manager_site_a":
                    add_user(conn, "manager-site-a", "kommun", "manager", ["site-a"])
                else:
                    add_user(conn, role, "kommun", role)
            add_user(conn, "admin-annan", "annan", "admin")
        yesterday = datetime.now(UTC) - timedelta(days=1)
        for site_id in SITE_OF.values():
            insert_alert(database_url, f"lock-{site_id}", opened_at=yesterday)
        with running_api(Settings(database_url=database_url)) as base:
            tokens = {role: login(base, role.replace("_", "-")) for role in ROLES}
            tokens["admin_annan"] = login(base, "admin-annan")
            yield World(base, tokens)


def visible(role: str, target: str) -> bool:
    """What the role's scope holds: its organisation, and only site a for the limited manager."""
    if target == "other_org":
        return False
    return target == "own_site" or role != "manager_site_a"


def expected(role: str, target: str) -> int:
    """The role decides first (403 whatever the site), then the site's visibility (404)."""
    if role not in MAY_READ:
        return 403
    return 200 if visible(role, target) else 404


@dataclass(frozen=True)
class Row:
    role: str
    target: str
    status: int

    def id(self) -> str:
        return f"GET /usage?site= as {self.role} on {self.target} -> {self.status}"


SITE_ROWS: Final = [
    Row(role, target, expected(role, target)) for role, target in itertools.product(ROLES, TARGETS)
]


@pytest.mark.parametrize("row", SITE_ROWS, ids=Row.id)
def test_usage_of_a_site(world: World, row: Row) -> None:
    """A site's usage: 200 for managers and admins who see the site, 404 for a site they do not
    see (as if it did not exist), 403 for caregivers and technicians."""
    site = SITE_OF[row.target]
    response = call("GET", f"{world.base}/api/v1/usage?site={site}", token=world.tokens[row.role])
    assert response.status == row.status, response.body
    if row.status == 200:
        report = response.json()
        assert report["site"] == site
        assert [s["site_id"] for s in report["sites"]] == [site]
        assert report["alerts"]["total"] == 1
    elif row.status == 404:
        assert b"kommun" not in response.body
        assert b"annan" not in response.body


@pytest.mark.parametrize("role", ROLES)
def test_usage_of_every_site_holds_only_the_callers_sites(world: World, role: str) -> None:
    """Without a site: the sites the caller may see, and the alerts of exactly those."""
    response = call("GET", f"{world.base}/api/v1/usage", token=world.tokens[role])
    if role not in MAY_READ:
        assert response.status == 403
        return
    assert response.status == 200, response.body
    report = response.json()
    sites = [target for target in TARGETS if visible(role, target)]
    assert [s["site_id"] for s in report["sites"]] == [SITE_OF[t] for t in sites]
    assert report["alerts"]["total"] == len(sites)
    assert {d["kind"] for d in report["availability"]["by_kind"]} == {"door_lock"}
    assert report["availability"]["by_kind"][0]["devices"] == len(sites)


def test_the_other_organisations_admin_sees_only_theirs(world: World) -> None:
    """An admin of annan sees site c and its one alert, and kommun's sites answer 404."""
    token = world.tokens["admin_annan"]
    report = call("GET", f"{world.base}/api/v1/usage", token=token).json()
    assert [s["site_id"] for s in report["sites"]] == ["site-c"]
    assert report["alerts"]["total"] == 1
    assert call("GET", f"{world.base}/api/v1/usage?site=site-a", token=token).status == 404


@pytest.mark.parametrize("token", [None, "forged-token"], ids=["no-token", "forged-token"])
def test_usage_needs_a_valid_token(world: World, token: str | None) -> None:
    """Without a valid token the usage answers 401."""
    assert call("GET", f"{world.base}/api/v1/usage", token=token).status == 401


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            "since=2026-03-02&until=2026-03-01",
            "since must be before until (since 2026-03-02T00:00:00+01:00",
        ),
        ("since=2026-03-01&until=2026-03-01", "must be before until"),
        ("since=2023-01-01&until=2026-01-01", "at most 731 days"),
        ("since=2026-01-01&until=2026-03-01&bucket=hour", "hour buckets cover at most 31 days"),
        ("bucket=month", "bucket"),
        ("since=yesterday", "since"),
    ],
    ids=["reversed", "empty", "three-years", "hours-of-two-months", "month", "not-a-time"],
)
def test_bad_periods_are_422_with_a_clear_message(world: World, params: str, message: str) -> None:
    """A period that cannot be answered is 422 and says why."""
    response = call("GET", f"{world.base}/api/v1/usage?{params}", token=world.tokens["manager"])
    assert response.status == 422, response.body
    assert message in response.body.decode()


def test_the_default_is_the_last_thirty_days_by_day(world: World) -> None:
    """No parameters: 30 day buckets, local midnights, ending with today."""
    report = call("GET", f"{world.base}/api/v1/usage", token=world.tokens["manager"]).json()
    assert report["bucket"] == "day"
    assert report["timezone"] == "Europe/Stockholm"
    assert len(report["buckets"]) == 30
    assert all(b[11:19] == "00:00:00" for b in report["buckets"])
    today = datetime.now(UTC).astimezone().date()
    last = datetime.fromisoformat(report["buckets"][-1]).date()
    assert abs((last - today).days) <= 1  # the Stockholm date may differ from ours near midnight
    assert report["days"] == 30
