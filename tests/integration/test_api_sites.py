"""``/api/v1/sites/{id}``: a site's rule settings, read by everyone who sees the site and
changed by admins only; refused values are named; another organisation's site is 404."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from carewatch.settings import Settings
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
    admin: str
    caregiver: str
    other_admin: str


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[World]:
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a", "site-b")
            add_org_with_sites(conn, "annan", "site-c")
            add_user(conn, "admin", "kommun", "admin")
            add_user(conn, "caregiver", "kommun", "caregiver")
            add_user(conn, "other-admin", "annan", "admin")
        with running_api(Settings(database_url=database_url)) as base:
            yield World(
                base,
                database_url,
                login(base, "admin"),
                login(base, "caregiver"),
                login(base, "other-admin"),
            )


def patch(world: World, token: str, site: str, body: dict[str, object]) -> ApiResponse:
    return call("PATCH", f"{world.base}/api/v1/sites/{site}", token=token, json_body=body)


def stored_settings(world: World, site: str) -> object:
    with psycopg.connect(world.database_url) as conn:
        row = conn.execute("SELECT rule_settings FROM sites WHERE id = %s", (site,)).fetchone()
    assert row is not None
    return row[0]


def test_an_admin_sets_rule_settings_and_everyone_who_sees_the_site_reads_them(
    world: World,
) -> None:
    settings = {"escalation_s": 120, "door_left_open_min": 20, "night_from_hour": 21}
    changed = patch(world, world.admin, "site-a", {"rule_settings": settings})
    assert changed.status == 200, changed.body
    assert changed.json()["rule_settings"] == settings
    assert stored_settings(world, "site-a") == settings
    seen = call("GET", f"{world.base}/api/v1/sites/site-a", token=world.caregiver)
    assert seen.status == 200
    assert seen.json()["rule_settings"] == settings
    # {} returns every rule to the catalog's defaults; the name alone leaves them alone.
    assert (
        patch(world, world.admin, "site-b", {"rule_settings": {"escalation_s": 60}}).status == 200
    )
    assert patch(world, world.admin, "site-b", {"name": "Ekbacken"}).json()["rule_settings"] == {
        "escalation_s": 60
    }
    assert patch(world, world.admin, "site-b", {"rule_settings": {}}).json()["rule_settings"] == {}
    with psycopg.connect(world.database_url) as conn:
        audited = conn.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'site.update' AND username = 'admin'"
        ).fetchone()
    assert audited is not None
    assert audited[0] >= 4


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"escalation_minutes": 5}, "escalation_minutes"),
        ({"escalation_s": 0}, "escalation_s"),
        ({"night_from_hour": 24}, "night_from_hour"),
        ({"battery_high_below": 50, "battery_warning_below": 20}, "battery_high_below"),
    ],
)
def test_refused_rule_settings_are_named_and_change_nothing(
    world: World, settings: dict[str, int], named: str
) -> None:
    before = stored_settings(world, "site-a")
    refused = patch(world, world.admin, "site-a", {"rule_settings": settings})
    assert refused.status == 422
    assert named in refused.body.decode()
    assert stored_settings(world, "site-a") == before


def test_only_admins_change_sites_and_nobody_sees_another_organisations(world: World) -> None:
    assert patch(world, world.caregiver, "site-a", {"name": "x"}).status == 403
    assert patch(world, world.other_admin, "site-a", {"name": "x"}).status == 404
    assert call("GET", f"{world.base}/api/v1/sites/site-a", token=world.other_admin).status == 404
    assert patch(world, world.admin, "site-c", {"name": "x"}).status == 404
    assert patch(world, world.admin, "site-a", {"timezone": "Mars/Olympus"}).status == 422
    with psycopg.connect(world.database_url) as conn:
        names = conn.execute("SELECT name FROM sites WHERE id IN ('site-a', 'site-c')").fetchall()
    assert ("x",) not in names
