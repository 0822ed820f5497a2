"""The alert endpoints against a real PostgreSQL: order, filters, acknowledge, resolve, audit."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from carewatch.settings import Settings
from devices.reasons import Reason, ReasonCode
from tests.fixtures.api_client import (
    InsertedAlert,
    add_device,
    add_org_with_sites,
    add_user,
    call,
    insert_alert,
    login,
)
from tests.fixtures.api_server import running_api

NOW = datetime.now(UTC)


@dataclass(frozen=True)
class World:
    base: str
    database_url: str
    token: str  # caregiver anna, every site of the organisation


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    """Two sites with two devices each and the API running; anna is a caregiver."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        add_org_with_sites(conn, "kommun", "solgarden", "ekbacken")
        for device_id, site_id in (
            ("lock-01", "solgarden"),
            ("cam-02", "solgarden"),
            ("lock-03", "ekbacken"),
            ("btn-04", "ekbacken"),
        ):
            add_device(conn, device_id, site_id)
        add_user(conn, "anna", "kommun", "caregiver")
        add_user(conn, "tove", "kommun", "technician")
    with running_api(settings) as base:
        yield World(base, settings.database_url, login(base, "anna"))


def alert_url(world: World, alert: InsertedAlert, action: str = "") -> str:
    return f"{world.base}/api/v1/alerts/{alert.alert_id}{action}"


def test_list_is_most_severe_then_newest_first(world: World) -> None:
    """Unresolved alerts by severity rank, then opened_at descending; resolved ones left out."""
    old_critical = insert_alert(
        world.database_url, "btn-04", "alarm_pressed", "critical", opened_at=NOW - timedelta(3)
    )
    new_warning = insert_alert(world.database_url, "lock-01", "battery_low", "warning")
    new_high = insert_alert(world.database_url, "cam-02", "camera_stream_lost", "high")
    old_high = insert_alert(
        world.database_url, "lock-03", "lock_jammed", "high", opened_at=NOW - timedelta(1)
    )
    acked_info = insert_alert(
        world.database_url, "lock-01", "robot_inactive", "info", state="acknowledged"
    )
    insert_alert(world.database_url, "lock-03", "tamper", "high", state="resolved")
    response = call("GET", f"{world.base}/api/v1/alerts", token=world.token)
    assert response.status == 200
    assert [alert["id"] for alert in response.json()] == [
        a.alert_id for a in (old_critical, new_high, old_high, new_warning, acked_info)
    ]


def test_alert_public_fields(world: World) -> None:
    """An alert carries its device, site and lifecycle fields with aware ISO 8601 times."""
    inserted = insert_alert(
        world.database_url, "lock-01", "lock_jammed", "high", cleared_reason="condition cleared"
    )
    body = call("GET", alert_url(world, inserted), token=world.token).json()
    assert body["id"] == inserted.alert_id
    assert (body["device_id"], body["device_label"], body["device_kind"]) == (
        "lock-01",
        "Lgh 01",
        "door_lock",
    )
    assert (body["site_id"], body["site_name"]) == ("solgarden", "Site solgarden")
    assert (body["rule"], body["severity"], body["state"], body["count"]) == (
        "lock_jammed",
        "high",
        "open",
        1,
    )
    assert (body["cleared"], body["cleared_reason"], body["escalated"]) == (
        True,
        "condition cleared",
        False,
    )
    opened_at = datetime.fromisoformat(body["opened_at"])
    assert opened_at.tzinfo is not None
    assert body["acknowledged_at"] is None
    assert body["resolved_by"] is None


@pytest.mark.parametrize(
    ("query", "expected_rules"),
    [
        ("state=open", {"battery_low", "lock_jammed"}),
        ("state=acknowledged", {"tamper"}),
        ("state=resolved", {"alarm_pressed"}),
        ("state=all", {"battery_low", "lock_jammed", "tamper", "alarm_pressed"}),
        ("site=ekbacken", {"lock_jammed"}),
        ("severity=warning", {"battery_low"}),
        ("site=ekbacken&state=all", {"lock_jammed", "alarm_pressed"}),
        ("site=no-such-site", set()),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_list_filters(world: World, query: str, expected_rules: set[str]) -> None:
    """state, site and severity narrow the list; an unknown site gives an empty list."""
    insert_alert(world.database_url, "lock-01", "battery_low", "warning")
    insert_alert(world.database_url, "lock-03", "lock_jammed", "high")
    insert_alert(world.database_url, "cam-02", "tamper", "high", state="acknowledged")
    insert_alert(world.database_url, "btn-04", "alarm_pressed", "critical", state="resolved")
    response = call("GET", f"{world.base}/api/v1/alerts?{query}", token=world.token)
    assert response.status == 200
    assert {alert["rule"] for alert in response.json()} == expected_rules


def test_list_rejects_unknown_filter_values(world: World) -> None:
    """A state or severity outside the closed sets is 422."""
    for query in ("state=closed", "severity=urgent"):
        assert call("GET", f"{world.base}/api/v1/alerts?{query}", token=world.token).status == 422


def test_acknowledge_records_who_when_and_is_idempotent(world: World) -> None:
    """ack sets acknowledged_at/by once; a second ack answers 200 with the alert unchanged."""
    inserted = insert_alert(world.database_url, "lock-01", "lock_jammed", "high")
    first = call(
        "POST", alert_url(world, inserted, "/ack"), token=world.token, json_body={"note": "på väg"}
    )
    assert first.status == 200
    acked = first.json()
    assert (acked["state"], acked["acknowledged_by"]) == ("acknowledged", "anna")
    assert abs(datetime.fromisoformat(acked["acknowledged_at"]) - datetime.now(UTC)) < timedelta(
        seconds=30
    )
    again = call("POST", alert_url(world, inserted, "/ack"), token=world.token)
    assert (again.status, again.json()) == (200, acked)
    with psycopg.connect(world.database_url) as conn:
        changes = conn.execute(
            "SELECT change FROM alert_changes WHERE alert_id = %s ORDER BY id",
            (inserted.alert_id,),
        ).fetchall()
        audit = conn.execute(
            "SELECT username, org_id, action, alert_id, device_id, note FROM audit_log"
            " WHERE action LIKE 'alert.%%' ORDER BY id"
        ).fetchall()
    assert changes == [("alert.opened",), ("alert.updated",)]
    assert audit == [
        ("anna", "kommun", "alert.acknowledge", inserted.alert_id, "lock-01", "på väg")
    ]


def test_resolve_records_who_when_and_is_idempotent(world: World) -> None:
    """resolve sets resolved_at/by once, from open or acknowledged; again is a no-op 200."""
    inserted = insert_alert(world.database_url, "btn-04", "alarm_pressed", "critical")
    assert call("POST", alert_url(world, inserted, "/ack"), token=world.token).status == 200
    first = call(
        "POST",
        alert_url(world, inserted, "/resolve"),
        token=world.token,
        json_body={"note": "falsklarm"},
    )
    resolved = first.json()
    assert (first.status, resolved["state"], resolved["resolved_by"]) == (200, "resolved", "anna")
    assert resolved["resolved_at"] is not None
    assert resolved["acknowledged_by"] == "anna"
    again = call("POST", alert_url(world, inserted, "/resolve"), token=world.token)
    assert (again.status, again.json()) == (200, resolved)
    # Acknowledging a resolved alert changes nothing either.
    late_ack = call("POST", alert_url(world, inserted, "/ack"), token=world.token)
    assert (late_ack.status, late_ack.json()) == (200, resolved)
    with psycopg.connect(world.database_url) as conn:
        changes = conn.execute(
            "SELECT change FROM alert_changes WHERE alert_id = %s ORDER BY id",
            (inserted.alert_id,),
        ).fetchall()
        audit = conn.execute(
            "SELECT action, note FROM audit_log WHERE action LIKE 'alert.%%' ORDER BY id"
        ).fetchall()
    assert changes == [("alert.opened",), ("alert.updated",), ("alert.resolved",)]
    assert audit == [("alert.acknowledge", None), ("alert.resolve", "falsklarm")]


def test_resolving_an_open_alert_directly(world: World) -> None:
    """An open alert may be resolved without acknowledging it first."""
    # A care alert: the caregiver's to resolve (tamper is the technicians', issue 12).
    inserted = insert_alert(world.database_url, "lock-03", "door_left_unlocked", "high")
    body = call("POST", alert_url(world, inserted, "/resolve"), token=world.token).json()
    assert (body["state"], body["resolved_by"], body["acknowledged_by"]) == (
        "resolved",
        "anna",
        None,
    )


def test_acknowledging_a_cleared_alert_resolves_it(world: World) -> None:
    """A cleared alert only waited to be seen: acknowledging it resolves it."""
    inserted = insert_alert(
        world.database_url,
        "btn-04",
        "alarm_pressed",
        "critical",
        cleared_reason="condition cleared",
    )
    body = call("POST", alert_url(world, inserted, "/ack"), token=world.token).json()
    assert (body["state"], body["cleared"]) == ("resolved", True)
    assert body["acknowledged_by"] == body["resolved_by"] == "anna"
    with psycopg.connect(world.database_url) as conn:
        last_change = conn.execute(
            "SELECT change FROM alert_changes ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert last_change == ("alert.resolved",)


def test_viewing_an_alert_is_audited(world: World) -> None:
    """GET of one alert writes an alert.view row with who, the alert, the device and the client."""
    inserted = insert_alert(world.database_url, "cam-02", "camera_stream_lost", "high")
    assert call("GET", alert_url(world, inserted), token=world.token).status == 200
    with psycopg.connect(world.database_url) as conn:
        audit = conn.execute(
            "SELECT username, org_id, action, alert_id, device_id, client FROM audit_log"
            " WHERE action = 'alert.view'"
        ).fetchall()
    assert audit == [("anna", "kommun", "alert.view", inserted.alert_id, "cam-02", "127.0.0.1")]


def test_note_is_limited_and_body_validated(world: World) -> None:
    """A note over 2000 characters, or an unknown field, is 422 and changes nothing."""
    inserted = insert_alert(world.database_url, "lock-01", "lock_jammed", "high")
    for body in ({"note": "x" * 2001}, {"comment": "hi"}):
        response = call(
            "POST", alert_url(world, inserted, "/ack"), token=world.token, json_body=body
        )
        assert response.status == 422
    body = call("GET", alert_url(world, inserted), token=world.token).json()
    assert body["state"] == "open"


def test_unknown_alert_is_404(world: World) -> None:
    """An id that does not exist answers 404 for read, ack and resolve."""
    for method, suffix in (("GET", ""), ("POST", "/ack"), ("POST", "/resolve")):
        url = f"{world.base}/api/v1/alerts/999999{suffix}"
        assert call(method, url, token=world.token).status == 404


def test_technician_may_read_but_not_act_on_a_care_alert(world: World) -> None:
    """A technician sees a care alert; ack and resolve are 403 and leave no trace (issue 12:
    technicians act on technical alerts, tests/integration/test_alert_audiences.py)."""
    inserted = insert_alert(world.database_url, "lock-01", "door_left_unlocked", "high")
    token = login(world.base, "tove")
    assert call("GET", alert_url(world, inserted), token=token).status == 200
    assert call("POST", alert_url(world, inserted, "/ack"), token=token).status == 403
    assert call("POST", alert_url(world, inserted, "/resolve"), token=token).status == 403
    with psycopg.connect(world.database_url) as conn:
        state = conn.execute(
            "SELECT state FROM alerts WHERE id = %s", (inserted.alert_id,)
        ).fetchone()
    assert state == ("open",)


def test_change_is_notified_with_its_change_id(world: World) -> None:
    """ack commits an alert_changes row and NOTIFY carewatch_alerts with that row's id."""
    inserted = insert_alert(world.database_url, "lock-03", "lock_jammed", "high")
    with psycopg.connect(world.database_url, autocommit=True) as listener:
        listener.execute("LISTEN carewatch_alerts")
        assert call("POST", alert_url(world, inserted, "/ack"), token=world.token).status == 200
        notifications = list(listener.notifies(timeout=5, stop_after=1))
        row = listener.execute(
            "SELECT id, alert_id, change FROM alert_changes ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert row is not None
    assert [(n.channel, n.payload) for n in notifications] == [("carewatch_alerts", str(row[0]))]
    assert row[1:] == (inserted.alert_id, "alert.updated")


def test_alert_reasons_come_as_data_too(world: World) -> None:
    """Beside the English, each reason's code and arguments (issue 12); an alert stored
    before reasons had codes has nulls there."""
    held = Reason.of(ReasonCode.BATTERY, level=15).held()
    coded = insert_alert(
        world.database_url, "lock-01", "battery_low", "high",
        why=held, cleared_why=Reason.of(ReasonCode.BATTERY, level=35),
    )  # fmt: skip
    body = call("GET", alert_url(world, coded), token=world.token).json()
    fields = ("reason", "reason_code", "reason_args")
    assert {name: body[name] for name in fields} == {
        "reason": "battery 15 % (during maintenance)",
        "reason_code": "battery",
        "reason_args": {"level": 15, "during_maintenance": True},
    }
    assert {name: body[f"cleared_{name}"] for name in fields} == {
        "reason": "battery 35 %",
        "reason_code": "battery",
        "reason_args": {"level": 35},
    }
    old = insert_alert(world.database_url, "lock-03", "lock_jammed", "high", reason="jammed")
    body = call("GET", alert_url(world, old), token=world.token).json()
    assert (body["reason"], body["reason_code"], body["reason_args"]) == ("jammed", None, None)
    assert (body["cleared_reason_code"], body["cleared_reason_args"]) == (None, None)
