"""A site's alarm response settings over ``PATCH /api/v1/sites/{id}`` (+#12): the promise and
the escalation chain's times, refused values named, and the alert's next step following them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

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


@dataclass(frozen=True)
class World:
    base: str
    database_url: str
    admin: str
    caregiver: str

    def patch(self, site: str, body: dict[str, object], token: str | None = None) -> ApiResponse:
        return call(
            "PATCH", f"{self.base}/api/v1/sites/{site}", token=token or self.admin, json_body=body
        )

    def site(self, site: str) -> dict[str, object]:
        answer = call("GET", f"{self.base}/api/v1/sites/{site}", token=self.caregiver)
        assert answer.status == 200, answer.body
        body: dict[str, object] = answer.json()
        return body


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[World]:
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a", "site-b", "site-c")
            add_user(conn, "admin", "kommun", "admin")
            add_user(conn, "caregiver", "kommun", "caregiver")
            add_device(conn, "button-c-01", "site-c", "alarm_button")
        with running_api(Settings(database_url=database_url)) as base:
            yield World(base, database_url, login(base, "admin"), login(base, "caregiver"))


def _response_part(site: dict[str, object]) -> tuple[object, object, object]:
    return site["contact_promise_s"], site["on_site_promise_s"], site["escalation_steps"]


def test_a_new_site_promises_nothing_and_keeps_the_default_chain(world: World) -> None:
    """Before any change: no promise, no step times of its own."""
    assert _response_part(world.site("site-b")) == (None, None, {})


def test_an_admin_sets_the_promise_and_step_times_and_null_withdraws_a_promise(
    world: World,
) -> None:
    """The promise and times are stored and shown; a field left out stays; a promise given as
    null is withdrawn; ``{}`` returns the chain to its defaults."""
    body = {
        "contact_promise_s": 300,
        "on_site_promise_s": 1800,
        "escalation_steps": {"not_accepted": 60, "call_out": 240},
    }
    changed = world.patch("site-a", body)
    assert changed.status == 200, changed.body
    assert _response_part(changed.json()) == (300, 1800, {"not_accepted": 60, "call_out": 240})
    assert _response_part(world.site("site-a")) == (
        300,
        1800,
        {"not_accepted": 60, "call_out": 240},
    )

    renamed = world.patch("site-a", {"name": "Ekbacken"})
    assert _response_part(renamed.json()) == (300, 1800, {"not_accepted": 60, "call_out": 240})

    withdrawn = world.patch("site-a", {"contact_promise_s": None, "escalation_steps": {}})
    assert _response_part(withdrawn.json()) == (None, 1800, {})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"contact_promise_s": 0}, "contact_promise_s", id="promise-zero"),
        pytest.param({"on_site_promise_s": 86_401}, "on_site_promise_s", id="promise-over-a-day"),
        pytest.param({"escalation_steps": {"nobody_came": 60}}, "escalation_steps", id="unknown"),
        pytest.param({"escalation_steps": {"call_out": 0}}, "escalation_steps", id="step-zero"),
        pytest.param({"escalation_steps": {"call_out": 1.5}}, "escalation_steps", id="fraction"),
        pytest.param({"escalation_steps": []}, "escalation_steps", id="not-an-object"),
    ],
)
def test_refused_values_are_named_and_change_nothing(
    world: World, body: dict[str, object], field: str
) -> None:
    """A value out of bounds or a step the chain does not have: 422 naming the field."""
    before = world.site("site-b")
    refused = world.patch("site-b", body)
    assert refused.status == 422, refused.body
    assert field in refused.body.decode()
    assert world.site("site-b") == before


def test_only_admins_change_the_response_settings(world: World) -> None:
    """A caregiver reads them but may not change them."""
    refused = world.patch("site-b", {"contact_promise_s": 60}, token=world.caregiver)
    assert refused.status == 403
    assert world.site("site-b")["contact_promise_s"] is None


def test_the_alerts_next_step_follows_the_sites_chain(world: World) -> None:
    """The response's next step is the site's first pending step, at opening + its time; the
    on-site promise adds the last step; a resolved alert has none."""
    alert_id = insert_alert(world.database_url, "button-c-01", "alarm_pressed", "critical").alert_id

    def next_step() -> object:
        answer = call("GET", f"{world.base}/api/v1/alerts/{alert_id}", token=world.caregiver)
        assert answer.status == 200, answer.body
        body = answer.json()
        step = body["response"]["next_step"]
        if step is None:
            return None
        opened_at = datetime.fromisoformat(body["opened_at"])
        return step["name"], datetime.fromisoformat(step["at"]) - opened_at

    assert next_step() == ("not_accepted", timedelta(seconds=120))  # the policy's default
    assert world.patch("site-c", {"escalation_steps": {"call_out": 30}}).status == 200
    assert next_step() == ("call_out", timedelta(seconds=30))
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        conn.execute(  # as the watchdog records the steps it took
            "INSERT INTO alert_responses (alert_id, state, escalated)"
            " VALUES (%s, 'open', '{call_out,not_accepted}')",
            (alert_id,),
        )
    assert next_step() is None  # both taken, and no on-site promise
    assert world.patch("site-c", {"on_site_promise_s": 900}).status == 200
    assert next_step() == ("not_on_site", timedelta(seconds=900))
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        conn.execute("UPDATE alerts SET state = 'resolved' WHERE id = %s", (alert_id,))
    assert next_step() is None
