"""The site's promise in the alert JSON (+#12): the deadlines a response alert is counted down
to (the opening + the site's contact and on-site promise; null where nothing is promised), and
whether each was kept once it happened, read with the alert (list and single alert alike)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from carewatch.settings import Settings
from tests.fixtures.alerts import insert_alert
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

# site-a promises contact within 2 minutes and someone on site within 15; site-b nothing.
CONTACT_S, ON_SITE_S = 120, 900
_devices = itertools.count(1)


class World(ApiWorld):
    def alarm(self, site: str, opened_at: datetime) -> int:
        """An alarm press at ``site`` that opened at ``opened_at``."""
        device_id = f"alarm-promise-{next(_devices)}"
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            add_device(conn, device_id, site, "alarm_button")
        return insert_alert(
            self.database_url, device_id, "alarm_pressed", "critical", opened_at=opened_at
        ).alert_id

    def accept(self, alert_id: int) -> int:
        return self.call("anna", "POST", f"/alerts/{alert_id}/accept").status

    def response(self, alert_id: int) -> dict[str, Any]:
        answer = self.call("anna", "GET", f"/alerts/{alert_id}")
        assert answer.status == 200, answer.body
        response: dict[str, Any] = answer.json()["response"]
        return response


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[World]:
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a", "site-b")
            add_user(conn, "anna", "kommun", "caregiver", ())
            conn.execute(
                "UPDATE sites SET contact_promise_s = %s, on_site_promise_s = %s WHERE id = %s",
                (CONTACT_S, ON_SITE_S, "site-a"),
            )
        with running_api(Settings(database_url=database_url)) as base:
            yield World(base, database_url, {"anna": login(base, "anna")})


def moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def test_a_promised_alarm_carries_its_deadlines_and_nothing_kept_yet(world: World) -> None:
    opened_at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    alert_id = world.alarm("site-a", opened_at)
    response = world.response(alert_id)
    assert moment(response["contact_due_at"]) == opened_at + timedelta(seconds=CONTACT_S)
    assert moment(response["on_site_due_at"]) == opened_at + timedelta(seconds=ON_SITE_S)
    assert (response["contact_met"], response["on_site_met"]) == (None, None)
    # The list says the same as the single alert (one query, no extra round trip per row).
    listed = world.call("anna", "GET", "/alerts").json()
    (same,) = [alert["response"] for alert in listed if alert["id"] == alert_id]
    assert same["contact_due_at"] == response["contact_due_at"]


def test_without_a_promise_the_deadlines_are_null(world: World) -> None:
    alert_id = world.alarm("site-b", datetime.now(UTC))
    assert world.accept(alert_id) == 200
    response = world.response(alert_id)
    assert response["state"] == "accepted"
    assert (response["contact_due_at"], response["on_site_due_at"]) == (None, None)
    assert (response["contact_met"], response["on_site_met"]) == (None, None)


def test_accepted_in_time_is_met_and_on_site_too_late_is_missed(world: World) -> None:
    """Accepted 30 s after the opening (within 2 minutes): contact met; on site 20 minutes
    after (not within 15): missed, and still said once the response is closed."""
    opened_at = datetime.now(UTC) - timedelta(minutes=20)
    alert_id = world.alarm("site-a", opened_at)
    assert world.accept(alert_id) == 200
    world.rows(
        "UPDATE alert_responses SET accepted_at = %s WHERE alert_id = %s RETURNING alert_id",
        opened_at + timedelta(seconds=30),
        alert_id,
    )
    accepted = world.response(alert_id)
    assert (accepted["contact_met"], accepted["on_site_met"]) == (True, None)

    on_site = world.call("anna", "POST", f"/alerts/{alert_id}/on-site", {"contact_made": True})
    assert on_site.status == 200, on_site.body
    arrived = on_site.json()["response"]
    assert (arrived["contact_met"], arrived["on_site_met"]) == (True, False)

    closed = world.call("anna", "POST", f"/alerts/{alert_id}/close", {"action": "help_given"})
    assert closed.status == 200, closed.body
    assert closed.json()["state"] == "resolved"
    response = closed.json()["response"]
    assert (response["contact_met"], response["on_site_met"]) == (True, False)
    assert moment(response["on_site_due_at"]) == opened_at + timedelta(seconds=ON_SITE_S)
