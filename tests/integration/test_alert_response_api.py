"""The alarm response over HTTP (+#12): accept, forward, on site, close; each step an
alert_changes row, live on the stream, audited, idempotent, and a clear 409 for what the
response's state does not allow."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from carewatch.settings import Settings
from tests.fixtures.alerts import insert_alert
from tests.fixtures.api_client import (
    ApiResponse,
    ApiWorld,
    add_device,
    add_org_with_sites,
    add_user,
    login,
    module_database,
    open_stream,
)
from tests.fixtures.api_server import running_api
from tools.local.postgres import PostgresInstance

USERS = {
    "anna": ("kommun", "caregiver", ()),
    "bo": ("kommun", "caregiver", ()),
    "cia-b": ("kommun", "caregiver", ("site-b",)),
    "tekniker": ("kommun", "technician", ()),
    "chef": ("kommun", "manager", ()),
    "annan": ("annan", "caregiver", ()),
}
_devices = itertools.count(1)


@dataclass(frozen=True)
class World(ApiWorld):
    def alarm(self, rule: str = "alarm_pressed", severity: str = "critical") -> int:
        """A new alert of ``rule`` on a new device at site-a."""
        device_id = f"alarm-resp-{next(_devices)}"
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            add_device(conn, device_id, "site-a", "alarm_button")
        return insert_alert(self.database_url, device_id, rule, severity).alert_id

    def move(self, user: str, alert_id: int, step: str, body: object = None) -> ApiResponse:
        return self.call(user, "POST", f"/alerts/{alert_id}/{step}", body)

    def changes(self, alert_id: int) -> list[str]:
        return [
            r[0]
            for r in self.rows(
                "SELECT change FROM alert_changes WHERE alert_id = %s ORDER BY id", alert_id
            )
        ]

    def audit(self, alert_id: int) -> list[tuple[str, str, str | None]]:
        return [
            (r[0], r[1], r[2])
            for r in self.rows(
                "SELECT action, username, note FROM audit_log WHERE alert_id = %s"
                " AND action <> 'alert.view' ORDER BY id",
                alert_id,
            )
        ]


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


def response_of(answer: ApiResponse) -> dict[str, Any]:
    assert answer.status == 200, answer.body
    response: dict[str, Any] = answer.json()["response"]
    return response


def test_accept_arrive_close_records_every_step(world: World) -> None:
    """The whole response: each step changes the alert, is in the feed and the audit log; the
    close resolves the alert."""
    alert_id = world.alarm()
    listed = world.call("anna", "GET", f"/alerts/{alert_id}").json()
    assert listed["response"]["state"] == "open"

    accepted = world.move("anna", alert_id, "accept")
    assert response_of(accepted)["holder"] == "anna"
    assert accepted.json()["state"] == "acknowledged"
    on_site = response_of(world.move("anna", alert_id, "on-site", {"contact_made": True}))
    assert (on_site["state"], on_site["on_site_source"], on_site["contact_made"]) == (
        "on_site",
        "staff",
        True,
    )
    closed = world.move("anna", alert_id, "close", {"action": "help_given", "note": "hjälp upp"})
    body = closed.json()
    assert (body["state"], body["resolved_by"]) == ("resolved", "anna")
    assert (body["response"]["state"], body["response"]["action"]) == ("closed", "help_given")
    assert world.changes(alert_id) == [
        "alert.opened",
        "alert.updated",
        "alert.updated",
        "alert.resolved",
    ]
    assert world.audit(alert_id) == [
        ("alert.accept", "anna", None),
        ("alert.on_site", "anna", None),
        ("alert.close", "anna", "help_given: hjälp upp"),
    ]


def test_the_same_step_again_changes_and_records_nothing(world: World) -> None:
    alert_id = world.alarm()
    first = response_of(world.move("anna", alert_id, "accept"))
    again = response_of(world.move("anna", alert_id, "accept"))
    assert again == first
    assert world.changes(alert_id) == ["alert.opened", "alert.updated"]


@pytest.mark.parametrize(
    ("before", "step", "body", "code"),
    [
        pytest.param([("anna", "accept", None)], "accept", None, "taken", id="taken"),
        pytest.param([], "on-site", None, "not_accepted", id="on-site-untaken"),
        pytest.param(
            [("anna", "accept", None)],
            "close",
            {"action": "help_given"},
            "not_on_site",
            id="help-given-before-arrival",
        ),
        pytest.param(
            [("anna", "accept", None), ("anna", "close", {"action": "false_alarm"})],
            "accept",
            None,
            "closed",
            id="after-closed",
        ),
    ],
)
def test_what_the_state_does_not_allow_is_a_409_saying_why(
    world: World,
    before: list[tuple[str, str, object]],
    step: str,
    body: object,
    code: str,
) -> None:
    alert_id = world.alarm()
    for user, earlier, earlier_body in before:
        assert world.move(user, alert_id, earlier, earlier_body).status == 200
    refused = world.move("bo", alert_id, step, body)
    assert refused.status == 409, refused.body
    assert refused.json()["code"] == code
    assert refused.json()["detail"]


def test_a_response_whose_alert_resolved_by_itself_can_still_be_closed(world: World) -> None:
    """Smoke gone, the alert resolved by the system: no more accepting, but the one who has
    it closes the response with what was done; the alert stays as the system resolved it."""
    alert_id = world.alarm("smoke_detected")
    world.move("anna", alert_id, "accept")
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE alerts SET state = 'resolved', resolved_by = 'system', resolved_at = now()"
            " WHERE id = %s",
            (alert_id,),
        )
    assert world.move("bo", alert_id, "accept").json()["code"] == "resolved"
    closed = world.move("anna", alert_id, "close", {"action": "false_alarm", "note": "matos"})
    assert closed.status == 200, closed.body
    body = closed.json()
    assert (body["resolved_by"], body["response"]["state"]) == ("system", "closed")


def test_a_device_fault_is_not_a_response(world: World) -> None:
    alert_id = world.alarm("device_offline", "high")
    assert world.call("anna", "GET", f"/alerts/{alert_id}").json()["response"] is None
    refused = world.move("anna", alert_id, "accept")
    assert refused.status == 409
    assert refused.json()["code"] == "not_a_response"


def test_forward_to_a_colleague_who_takes_it_or_back_to_the_team(world: World) -> None:
    alert_id = world.alarm()
    world.move("anna", alert_id, "accept")
    forwarded = world.move("anna", alert_id, "forward", {"to": "bo"})
    assert forwarded.json()["state"] == "open"  # nobody has it until bo takes it
    assert (response_of(forwarded)["state"], response_of(forwarded)["offered_to"]) == (
        "forwarded",
        "bo",
    )
    taken = response_of(world.move("bo", alert_id, "accept"))
    assert (taken["holder"], taken["offered_to"]) == ("bo", None)
    back = response_of(world.move("bo", alert_id, "forward", {"to": None}))
    assert (back["state"], back["holder"]) == ("open", None)
    assert [a for a, _, _ in world.audit(alert_id)] == [
        "alert.accept",
        "alert.forward",
        "alert.accept",
        "alert.forward",
    ]


@pytest.mark.parametrize(
    "colleague",
    [
        pytest.param("cia-b", id="not-given-the-site"),
        pytest.param("tekniker", id="may-not-act-on-alerts"),
        pytest.param("annan", id="another-organisation"),
        pytest.param("nobody", id="no-such-user"),
    ],
)
def test_forward_only_to_someone_who_can_take_it(world: World, colleague: str) -> None:
    alert_id = world.alarm()
    refused = world.move("anna", alert_id, "forward", {"to": colleague})
    assert refused.status == 422, refused.body
    assert world.changes(alert_id) == ["alert.opened"]


def test_who_may_move_and_see_responses(world: World) -> None:
    """Technicians and managers see the response but may not move it (403); another
    organisation's alert does not exist (404); an unknown action is a 409 listing the codes."""
    alert_id = world.alarm()
    assert world.move("tekniker", alert_id, "accept").status == 403
    assert world.move("chef", alert_id, "accept").status == 403
    assert world.move("annan", alert_id, "accept").status == 404
    world.move("anna", alert_id, "accept")
    unknown = world.move("anna", alert_id, "close", {"action": "sang"})
    assert unknown.status == 409
    assert "false_alarm" in unknown.json()["detail"]
    actions = world.call("anna", "GET", "/response-actions").json()
    assert [a["code"] for a in actions][:2] == ["help_given", "false_alarm"]


def test_every_board_sees_it_taken_on_the_stream(world: World) -> None:
    """A colleague's stream carries the acceptance: the alert with who has it."""
    alert_id = world.alarm()
    with open_stream(world.base, token=world.tokens["bo"]) as stream:
        assert stream.status == 200
        world.move("anna", alert_id, "accept")
        event = stream.next(timeout_s=5.0)
    assert event is not None
    assert event.event == "alert.updated"
    alert = event.json()
    assert (alert["id"], alert["state"], alert["response"]["holder"]) == (
        alert_id,
        "acknowledged",
        "anna",
    )


PAIR = ("anna", "bo")


def test_two_caregivers_accepting_at_once_one_has_it(world: World) -> None:
    """Both tap Accept at the same moment, on several alarms: each alarm is taken by exactly
    one of them, the other told who has it (the alert row is locked before the response is
    read)."""
    alerts = [world.alarm() for _ in range(6)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = {
            alert_id: list(
                pool.map(lambda u, a=alert_id: world.move(u, a, "accept"), ["anna", "bo"])
            )
            for alert_id in alerts
        }
    for alert_id, (anna, bo) in answers.items():
        assert sorted([anna.status, bo.status]) == [200, 409], (anna.body, bo.body)
        winner = "anna" if anna.status == 200 else "bo"
        [(holder,)] = world.rows("SELECT holder FROM alert_responses WHERE alert_id = %s", alert_id)
        assert holder == winner
        assert world.changes(alert_id) == ["alert.opened", "alert.updated"]
