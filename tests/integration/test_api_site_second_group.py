"""A site's second group over ``PATCH /api/v1/sites/{id}`` (issue 12, migration 0016): admins
name the staff the escalation's notify_second_group step alerts; only users of the site's
organisation who take alarms at the site are admitted (422 naming the others, another
organisation's user refused as one who does not exist); the alert's next step says whether the
site has a second group; a member sees and takes the alarm."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from carewatch.settings import Settings
from tests.fixtures.alerts import insert_alert
from tests.fixtures.api_client import (
    ApiResponse,
    add_device,
    add_org_with_sites,
    add_user,
    call,
    login,
    module_database,
)
from tests.fixtures.api_server import running_api
from tools.local.postgres import PostgresInstance

# kommun's users: (username, role, sites it is limited to).
USERS = (
    ("admin", "admin", ()),
    ("anna", "caregiver", ()),
    ("bea", "caregiver", ("site-a",)),
    ("cecilia", "caregiver", ("site-b",)),
    ("tor", "technician", ()),
    ("maja", "manager", ()),
    ("dan", "caregiver", ()),
)
_buttons = itertools.count(1)


@dataclass(frozen=True)
class World:
    base: str
    database_url: str
    tokens: dict[str, str]

    def patch(self, site: str, body: dict[str, object], user: str = "admin") -> ApiResponse:
        url = f"{self.base}/api/v1/sites/{site}"
        return call("PATCH", url, token=self.tokens[user], json_body=body)

    def get(self, path: str, user: str = "anna") -> Any:
        answer = call("GET", f"{self.base}/api/v1{path}", token=self.tokens[user])
        assert answer.status == 200, answer.body
        return answer.json()

    def group(self, site: str) -> list[str]:
        members: list[str] = self.get(f"/sites/{site}")["second_group"]
        return members

    def alarm(self, site: str) -> int:
        device_id = f"button-{site}-{next(_buttons):02d}"
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            add_device(conn, device_id, site, "alarm_button")
        return insert_alert(self.database_url, device_id, "alarm_pressed", "critical").alert_id


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[World]:
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a", "site-b", "site-c")
            add_org_with_sites(conn, "annan", "site-x")
            for username, role, sites in USERS:
                add_user(conn, username, "kommun", role, sites)
            conn.execute("UPDATE users SET disabled = true WHERE username = 'dan'")
            add_user(conn, "olle", "annan", "caregiver")
            add_user(conn, "annan-admin", "annan", "admin")
        with running_api(Settings(database_url=database_url)) as base:
            callers = ("admin", "anna", "cecilia", "annan-admin")
            yield World(base, database_url, {name: login(base, name) for name in callers})


def test_an_admin_names_the_second_group_and_an_empty_list_removes_it(world: World) -> None:
    """The group is stored (each name once, in order) and shown to anyone who sees the site; a
    change without ``second_group`` keeps it; ``[]`` leaves the site without one."""
    assert world.group("site-c") == []
    changed = world.patch("site-c", {"second_group": ["anna", "admin", "anna"]})
    assert changed.status == 200, changed.body
    assert changed.json()["second_group"] == ["admin", "anna"]
    assert world.group("site-c") == ["admin", "anna"]
    renamed = world.patch("site-c", {"name": "Ekbacken"})
    assert renamed.json()["second_group"] == ["admin", "anna"]
    cleared = world.patch("site-c", {"second_group": []})
    assert cleared.json()["second_group"] == []
    with psycopg.connect(world.database_url) as conn:
        rows = conn.execute("SELECT count(*) FROM site_second_group").fetchone()
    assert rows == (0,)


@pytest.mark.parametrize(
    "refused",
    [
        pytest.param("cecilia", id="limited-to-another-site"),
        pytest.param("tor", id="technician"),
        pytest.param("maja", id="manager"),
        pytest.param("dan", id="disabled"),
        pytest.param("olle", id="another-organisation"),
        pytest.param("nobody", id="unknown"),
    ],
)
def test_who_may_not_take_the_sites_alarms_is_refused_by_name(world: World, refused: str) -> None:
    """422 naming the user, and nothing changes: not even the admissible names beside them."""
    assert world.patch("site-a", {"second_group": ["anna"]}).status == 200
    answer = world.patch("site-a", {"second_group": ["bea", refused]})
    assert answer.status == 422, answer.body
    detail = answer.json()["detail"]
    assert detail.startswith(f"cannot be in the second group of site 'site-a': {refused} (")
    assert "bea" not in detail
    assert world.group("site-a") == ["anna"]


def test_another_organisations_user_is_refused_as_one_who_does_not_exist(world: World) -> None:
    """The answer for another organisation's user is the unknown user's, word for word."""
    other = world.patch("site-a", {"second_group": ["olle"]}).json()["detail"]
    unknown = world.patch("site-a", {"second_group": ["nobody"]}).json()["detail"]
    assert other.replace("olle", "nobody") == unknown


def test_a_username_that_cannot_be_one_is_refused_before_the_database(world: World) -> None:
    answer = world.patch("site-a", {"second_group": ["Anna Andersson"]})
    assert answer.status == 422
    assert "second_group" in answer.body.decode()


def test_only_the_sites_admins_change_the_second_group(world: World) -> None:
    """A caregiver may read it, not change it; another organisation's admin does not see the
    site (404) and cannot put their own staff in it."""
    assert world.patch("site-b", {"second_group": ["anna"]}, user="anna").status == 403
    assert world.patch("site-b", {"second_group": ["olle"]}, user="annan-admin").status == 404
    assert world.group("site-b") == []
    # Nor can kommun's admin reach annan's site.
    assert world.patch("site-x", {"second_group": ["anna"]}).status == 404


def test_the_next_step_says_whether_the_site_has_a_second_group(world: World) -> None:
    """The first step alerts the second group: false before the site has one, true after; a
    member of the group limited to the site sees the alarm and takes it."""
    assert world.patch("site-b", {"second_group": []}).status == 200
    alert_id = world.alarm("site-b")

    def next_step() -> dict[str, Any]:
        step: dict[str, Any] = world.get(f"/alerts/{alert_id}")["response"]["next_step"]
        return step

    assert (next_step()["name"], next_step()["second_group"]) == ("not_accepted", False)
    assert world.patch("site-b", {"second_group": ["cecilia"]}).status == 200
    assert (next_step()["name"], next_step()["second_group"]) == ("not_accepted", True)

    assert world.get(f"/alerts/{alert_id}", user="cecilia")["id"] == alert_id
    accepted = call(
        "POST", f"{world.base}/api/v1/alerts/{alert_id}/accept", token=world.tokens["cecilia"]
    )
    assert accepted.status == 200, accepted.body
    assert accepted.json()["response"]["holder"] == "cecilia"
