"""The live stream's ``audience=`` (issue 12): a board that asks for care alerts is not sent the
technicians' ones at all, and the stream keeps the same alerts as the list's ``audience=``;
over real HTTP against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.fixtures.api_client import (
    ApiWorld,
    SseClient,
    SseEvent,
    add_device,
    add_org_with_sites,
    add_user,
    insert_alert,
    login,
)
from tests.fixtures.api_server import running_api
from tests.fixtures.services import MakeSettings

HEARTBEAT_S = 0.3
USERS = {"anna": "caregiver", "tove": "technician", "ola": "admin"}


@pytest.fixture
def world(make_settings: MakeSettings, database_url: str) -> Iterator[ApiWorld]:
    """One site with a companion robot, an alarm button and a lock; a caregiver, a technician
    and an admin; the API with a short heartbeat (a quiet stream says so soon)."""
    settings = make_settings(database_url, sse_heartbeat_s=HEARTBEAT_S)
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_org_with_sites(conn, "kommun", "solgarden")
        for device_id, kind in (
            ("robot", "companion_robot"),
            ("button", "alarm_button"),
            ("lock", "door_lock"),
        ):
            add_device(conn, device_id, "solgarden", kind)
        for username, role in USERS.items():
            add_user(conn, username, "kommun", role)
    with running_api(settings) as base:
        yield ApiWorld(base, database_url, {u: login(base, u) for u in USERS})


def stream(
    world: ApiWorld, user: str, query: str = "", last_event_id: int | None = None
) -> SseClient:
    headers = {"Authorization": f"Bearer {world.tokens[user]}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return SseClient(world.base, f"/api/v1/alerts/stream{query}", headers)


def events_until(client: SseClient, change_id: int) -> list[SseEvent]:
    """The events up to and including change ``change_id``."""
    events: list[SseEvent] = []
    while True:
        event = client.next()
        assert event is not None, "the stream ended"
        events.append(event)
        if event.id == str(change_id):
            return events


def test_a_technical_alert_reaches_the_technical_stream_and_not_the_care_one(
    world: ApiWorld,
) -> None:
    """A robot offline (technical) goes to the technician's stream only, an alarm press (care)
    to the caregiver's only, a jammed lock (both) to each; an unfiltered stream gets all three.
    Updates are kept the same way: the technician's acknowledgement of the robot is not sent to
    the care stream. Each stream holds exactly what the list's ``audience=`` lists."""
    with (
        stream(world, "anna", "?audience=care") as care,
        stream(world, "tove", "?audience=technical") as technical,
        stream(world, "ola") as everyone,
    ):
        assert (care.status, technical.status, everyone.status) == (200, 200, 200)
        robot = insert_alert(world.database_url, "robot", "device_offline", "high")
        alarm = insert_alert(world.database_url, "button", "alarm_pressed", "critical")
        jammed = insert_alert(world.database_url, "lock", "lock_jammed", "high")
        opened = {
            name: events_until(client, jammed.change_id)
            for name, client in (("care", care), ("technical", technical), ("all", everyone))
        }
        assert world.call("tove", "POST", f"/alerts/{robot.alert_id}/ack", {}).status == 200
        assert world.call("anna", "POST", f"/alerts/{jammed.alert_id}/ack", {}).status == 200
        (acked_jammed,) = world.rows(
            "SELECT max(id) FROM alert_changes WHERE alert_id = %s", jammed.alert_id
        )[0]
        updated = {
            name: events_until(client, acked_jammed)
            for name, client in (("care", care), ("technical", technical))
        }

    def ids(events: list[SseEvent]) -> list[int]:
        return [event.json()["id"] for event in events]

    assert ids(opened["care"]) == [alarm.alert_id, jammed.alert_id]
    assert ids(opened["technical"]) == [robot.alert_id, jammed.alert_id]
    assert ids(opened["all"]) == [robot.alert_id, alarm.alert_id, jammed.alert_id]
    assert ids(updated["care"]) == [jammed.alert_id]
    assert ids(updated["technical"]) == [robot.alert_id, jammed.alert_id]
    for audience in ("care", "technical"):
        for event in opened[audience] + updated[audience]:
            assert audience in event.json()["audiences"], event.data
        listed = world.call("ola", "GET", f"/alerts?state=all&audience={audience}")
        assert listed.status == 200
        assert {a["id"] for a in listed.json()} == set(ids(opened[audience])), audience


def test_a_resumed_stream_keeps_to_its_audience(world: ApiWorld) -> None:
    """The changes missed before a reconnect (Last-Event-ID) are kept by audience too."""
    before = insert_alert(world.database_url, "lock", "tamper", "high")
    robot = insert_alert(world.database_url, "robot", "device_offline", "high")
    alarm = insert_alert(world.database_url, "button", "alarm_pressed", "critical")
    with stream(world, "anna", "?audience=care", last_event_id=before.change_id) as care:
        care_backlog = care.events_until_keepalive()
    with stream(world, "tove", "?audience=technical", last_event_id=before.change_id) as tech:
        technical_backlog = tech.events_until_keepalive()
    assert [e.id for e in care_backlog] == [str(alarm.change_id)]
    assert [e.id for e in technical_backlog] == [str(robot.change_id)]


@pytest.mark.parametrize("path", ["/alerts", "/alerts/stream"])
def test_a_bad_audience_is_refused_by_list_and_stream_alike(world: ApiWorld, path: str) -> None:
    """``audience`` is care or technical on the stream as on the list: a 422 naming it."""
    response = world.call("anna", "GET", f"{path}?audience=everyone")
    assert response.status == 422
    assert "audience" in response.body.decode()
