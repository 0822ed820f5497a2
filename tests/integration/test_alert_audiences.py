"""Who an alert is for (issue 12) through the API: ``audiences``, ``audience=``, acting on it,
the stream, and a site's routing, against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg.types.json import Jsonb

from carewatch.settings import Settings
from devices.audience import audiences
from devices.catalog import DEFAULT_CATALOG
from devices.supervision import ALERT_SEVERITY
from tests.fixtures.api_client import (
    ApiWorld,
    Connection,
    add_device,
    add_org_with_sites,
    add_user,
    insert_alert,
    login,
    open_stream,
)
from tests.fixtures.api_server import running_api

USERS = {"anna": "caregiver", "tove": "technician", "maja": "manager", "ola": "admin"}
# ekbacken routes some rules otherwise: technical ones to care staff too, or to them alone.
EKBACKEN_ROUTING = {"battery_low": "both", "tamper": "care", "door_left_unlocked": "both"}


@dataclass(frozen=True)
class World(ApiWorld):
    """Every kind at both sites; at solgarden a camera whose residence has a plan (cam-plan)
    and one whose residence has none (cam-none)."""


def _residence(conn: Connection, site_id: str, label: str, *, plan: bool) -> int:
    row = conn.execute(
        "INSERT INTO residences (site_id, label) VALUES (%s, %s) RETURNING id", (site_id, label)
    ).fetchone()
    assert row is not None
    if plan:
        conn.execute(
            "INSERT INTO supervision_plans (residence_id, recorded_by, check_times)"
            " VALUES (%s, 'planner', '{22:00,02:00}'::time[])",
            (row[0],),
        )
    return int(row[0])


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    """Two sites, one device of each kind at each, two cameras with residences, four users."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        add_org_with_sites(conn, "kommun", "solgarden", "ekbacken")
        for site_id in ("solgarden", "ekbacken"):
            for kind in DEFAULT_CATALOG:
                add_device(conn, f"{site_id}-{kind}", site_id, kind)
        for device_id, plan in (("cam-plan", True), ("cam-none", False)):
            add_device(conn, device_id, "solgarden", "safety_camera")
            residence_id = _residence(conn, "solgarden", f"Lgh {device_id}", plan=plan)
            conn.execute(
                "UPDATE devices SET residence_id = %s WHERE id = %s", (residence_id, device_id)
            )
        # A plan whose latest version stopped the checks (no check times) is no plan.
        add_device(conn, "cam-stopped", "solgarden", "safety_camera")
        stopped = _residence(conn, "solgarden", "Lgh stopped", plan=False)
        for times, ago in (("{22:00}", "2 hours"), ("{}", "1 hour")):
            conn.execute(
                "INSERT INTO supervision_plans (residence_id, recorded_by, check_times,"
                " recorded_at) VALUES (%s, 'planner', %s::time[], now() - %s::interval)",
                (stopped, times, ago),
            )
        conn.execute("UPDATE devices SET residence_id = %s WHERE id = 'cam-stopped'", (stopped,))
        conn.execute(
            "UPDATE sites SET alert_audiences = %s WHERE id = 'ekbacken'",
            (Jsonb(EKBACKEN_ROUTING),),
        )
        for username, role in USERS.items():
            add_user(conn, username, "kommun", role)
    with running_api(settings) as base:
        tokens = {username: login(base, username) for username in USERS}
        yield World(base, settings.database_url, tokens)


def _every_combination(world: World) -> dict[int, tuple[str, str, str, str]]:
    """One resolved alert per (device, rule the kind has, severity); id -> the facts."""
    facts: dict[int, tuple[str, str, str, str]] = {}
    devices = world.rows("SELECT id, kind FROM devices ORDER BY id")
    for device_id, kind in devices:
        rules: list[str] = sorted(rule.value for rule in DEFAULT_CATALOG[kind].rules.enabled)
        if kind == "safety_camera":
            rules += sorted(ALERT_SEVERITY)
        for rule in rules:
            for severity in ("warning", "high", "critical"):
                inserted = insert_alert(
                    world.database_url, device_id, rule, severity, state="resolved"
                )
                facts[inserted.alert_id] = (device_id, kind, rule, severity)
    return facts


def test_audiences_and_the_filter_agree_with_the_table(world: World) -> None:
    """For every rule, kind, severity, plan and site routing: the JSON's ``audiences`` are the
    pure core's, and ``audience=`` lists exactly the alerts whose ``audiences`` name it."""
    facts = _every_combination(world)
    assert len(facts) < 1000  # one page
    listed = world.call("ola", "GET", "/alerts?state=all&limit=1000").json()
    assert {alert["id"] for alert in listed} == set(facts)
    plans = {"cam-plan": True}
    for alert in listed:
        device_id, kind, rule, severity = facts[alert["id"]]
        routing = EKBACKEN_ROUTING if alert["site_id"] == "ekbacken" else {}
        expected = audiences(
            rule,
            kind,
            severity,
            residence_has_plan=plans.get(device_id, False),
            site_routing=routing,
        )
        assert alert["audiences"] == sorted(expected), (device_id, rule, severity)
    for audience in ("care", "technical"):
        filtered = world.call("ola", "GET", f"/alerts?state=all&limit=1000&audience={audience}")
        assert filtered.status == 200
        assert {a["id"] for a in filtered.json()} == {
            a["id"] for a in listed if audience in a["audiences"]
        }, audience
    # The spread is real: each audience alone and both occur, and the plan decides a camera.
    seen = {tuple(a["audiences"]) for a in listed}
    assert seen == {("care",), ("technical",), ("care", "technical")}
    by_device = {
        (facts[a["id"]][0], facts[a["id"]][2]): a["audiences"]
        for a in listed
        if facts[a["id"]][2] == "device_offline"
    }
    assert by_device[("cam-plan", "device_offline")] == ["care", "technical"]
    assert by_device[("cam-none", "device_offline")] == ["technical"]
    assert by_device[("cam-stopped", "device_offline")] == ["technical"]


def test_a_bad_audience_is_refused(world: World) -> None:
    """``audience`` is care or technical; anything else is a 422 naming the parameter."""
    response = world.call("anna", "GET", "/alerts?audience=everyone")
    assert response.status == 422
    assert "audience" in response.body.decode()


@pytest.mark.parametrize(
    ("user", "device", "rule", "severity", "status"),
    [
        # A robot offline is the technicians' work: not the caregiver's, not the manager's.
        ("anna", "solgarden-companion_robot", "device_offline", "high", 403),
        ("tove", "solgarden-companion_robot", "device_offline", "high", 200),
        ("ola", "solgarden-companion_robot", "device_offline", "high", 200),
        ("maja", "solgarden-companion_robot", "device_offline", "high", 403),
        # An alarm press is the caregivers'.
        ("anna", "solgarden-alarm_button", "alarm_pressed", "critical", 200),
        ("tove", "solgarden-alarm_button", "alarm_pressed", "critical", 403),
        # A jammed lock is both: a safety exception.
        ("anna", "solgarden-door_lock", "lock_jammed", "high", 200),
        ("tove", "solgarden-door_lock", "lock_jammed", "high", 200),
        # ekbacken gives tamper to care staff alone.
        ("anna", "ekbacken-door_lock", "tamper", "high", 200),
        ("tove", "ekbacken-door_lock", "tamper", "high", 403),
    ],
    ids=lambda value: str(value),
)
def test_who_may_acknowledge(
    world: World, user: str, device: str, rule: str, severity: str, status: int
) -> None:
    """Caregivers act on care alerts, technicians on technical ones, admins on all, managers on
    none; a refusal says whose the alert is and changes nothing."""
    inserted = insert_alert(world.database_url, device, rule, severity)
    response = world.call(user, "POST", f"/alerts/{inserted.alert_id}/ack", {})
    assert response.status == status, response.body
    state = world.rows("SELECT state FROM alerts WHERE id = %s", inserted.alert_id)[0][0]
    assert state == ("acknowledged" if status == 200 else "open")
    if status == 403 and user != "maja":
        assert "alert:" in response.json()["detail"]
        assert "act on it" in response.json()["detail"]


def test_an_invisible_alert_is_still_not_found(world: World) -> None:
    """The audience check comes after the scope: another site's alert is 404, not 403."""
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        add_user(conn, "sara", "kommun", "caregiver", sites=["ekbacken"])
    inserted = insert_alert(world.database_url, "solgarden-companion_robot", "device_offline")
    token = login(world.base, "sara")
    response = ApiWorld(world.base, world.database_url, {"sara": token}).call(
        "sara", "POST", f"/alerts/{inserted.alert_id}/resolve", {}
    )
    assert response.status == 404


def test_the_stream_carries_audiences(world: World) -> None:
    """An SSE alert payload names its audiences, as the list does."""
    with open_stream(world.base, token=world.tokens["tove"]) as stream:
        inserted = insert_alert(world.database_url, "cam-plan", "camera_stream_lost", "high")
        event = stream.next()
    assert event is not None
    alert = event.json()
    assert alert["id"] == inserted.alert_id
    assert alert["audiences"] == ["care", "technical"]


def test_an_admin_routes_a_site(world: World) -> None:
    """PATCH alert_audiences replaces the site's routing; the open alerts follow at once."""
    battery = insert_alert(world.database_url, "solgarden-door_lock", "battery_low", "warning")
    assert world.call("ola", "GET", f"/alerts/{battery.alert_id}").json()["audiences"] == [
        "technical"
    ]
    care_ids = {a["id"] for a in world.call("anna", "GET", "/alerts?audience=care").json()}
    assert battery.alert_id not in care_ids

    changed = world.call(
        "ola", "PATCH", "/sites/solgarden", {"alert_audiences": {"battery_low": "both"}}
    )
    assert changed.status == 200, changed.body
    assert changed.json()["alert_audiences"] == {"battery_low": "both"}
    assert world.call("anna", "GET", "/sites/solgarden").json()["alert_audiences"] == {
        "battery_low": "both"
    }
    assert world.call("ola", "GET", f"/alerts/{battery.alert_id}").json()["audiences"] == [
        "care",
        "technical",
    ]
    care_ids = {a["id"] for a in world.call("anna", "GET", "/alerts?audience=care").json()}
    assert battery.alert_id in care_ids
    # Other changes of the site leave the routing alone; {} returns to the table.
    assert world.call("ola", "PATCH", "/sites/solgarden", {"name": "Solgården"}).json()[
        "alert_audiences"
    ] == {"battery_low": "both"}
    assert (
        world.call("ola", "PATCH", "/sites/solgarden", {"alert_audiences": {}}).json()[
            "alert_audiences"
        ]
        == {}
    )
    audit = world.rows(
        "SELECT note FROM audit_log WHERE action = 'site.update' ORDER BY id LIMIT 1"
    )
    assert "battery_low" in audit[0][0]


@pytest.mark.parametrize(
    ("routing", "message"),
    [
        ({"alarm_pressed": "technical"}, "alarm_pressed is a care alert"),
        ({"coffee_low": "care"}, "coffee_low: not a rule"),
        ({"battery_low": "nobody"}, "battery_low"),
        ([], "dict"),
    ],
    ids=["care-to-technical", "unknown-rule", "bad-value", "not-an-object"],
)
def test_a_bad_routing_is_a_clear_422(world: World, routing: object, message: str) -> None:
    """What an admin may not set is refused, naming the rule and why; nothing changes."""
    response = world.call("ola", "PATCH", "/sites/solgarden", {"alert_audiences": routing})
    assert response.status == 422, response.body
    assert message in response.body.decode()
    stored = world.rows("SELECT alert_audiences FROM sites WHERE id = 'solgarden'")[0][0]
    assert stored == {}


def test_only_admins_route_a_site(world: World) -> None:
    """A caregiver, a technician or a manager may not change a site's routing."""
    for user in ("anna", "tove", "maja"):
        response = world.call(
            user, "PATCH", "/sites/solgarden", {"alert_audiences": {"battery_low": "care"}}
        )
        assert response.status == 403, user
    assert world.rows("SELECT alert_audiences FROM sites WHERE id = 'solgarden'")[0][0] == {}
