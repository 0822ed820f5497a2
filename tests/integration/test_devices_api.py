"""The device read API against a real PostgreSQL: filters, sorting, pages, health fields,
battery trends from heartbeats, the fleet summary and a device's events."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

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

NOW = datetime.now(UTC)


@dataclass(frozen=True)
class World:
    base: str
    database_url: str
    token: str  # admin of kommun

    def get(self, path: str, token: str | None = None) -> Any:
        response = call("GET", f"{self.base}/api/v1{path}", token=token or self.token)
        assert response.status == 200, response.body
        return response.json()


def add_heartbeat(
    conn: psycopg.Connection[Any], device_id: str, at: datetime, data: dict[str, Any]
) -> None:
    conn.execute(
        "INSERT INTO events (time, received_at, device_id, event_id, type, data)"
        " VALUES (%s, %s, %s, %s, 'heartbeat', %s)",
        (at, at, device_id, f"hb-{at.timestamp():.0f}", Jsonb(data)),
    )


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[World]:
    """kommun (sites a, b) with five devices in every state of health; annan (site c) with one."""
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a", "site-b")
            add_org_with_sites(conn, "annan", "site-c")
            for device_id, site_id, kind in (
                ("lock-a1", "site-a", "door_lock"),
                ("cam-a2", "site-a", "safety_camera"),
                ("btn-b1", "site-b", "alarm_button"),
                ("robot-b2", "site-b", "companion_robot"),
                ("lock-b3", "site-b", "door_lock"),
                ("lock-c1", "site-c", "door_lock"),
            ):
                add_device(conn, device_id, site_id, kind)
            health = (
                ("lock-a1", True, NOW - timedelta(minutes=1), 15, "1.2.3"),
                ("cam-a2", False, NOW - timedelta(hours=2), None, "cam-7"),
                ("robot-b2", True, NOW - timedelta(minutes=5), 80, "r-1"),
                ("lock-c1", True, NOW, 5, "9"),
            )
            for device_id, online, last_seen, battery, firmware in health:
                conn.execute(
                    "UPDATE devices SET online = %s, last_seen = %s, battery = %s, firmware = %s"
                    " WHERE id = %s",
                    (online, last_seen, battery, firmware, device_id),
                )
            conn.execute(
                "UPDATE devices SET status = 'decommissioned', decommissioned_at = now()"
                " WHERE id = 'lock-b3'"
            )
            # lock-a1 loses 2 % a day: 29 % a week ago, 15 % now; one reading a day.
            for days_ago in range(10):
                at = NOW - timedelta(days=days_ago, hours=1)
                add_heartbeat(conn, "lock-a1", at, {"battery": 15 + 2 * days_ago, "fw": "1.2.3"})
            # Not battery readings: a heartbeat without one, and another event type.
            add_heartbeat(conn, "lock-a1", NOW - timedelta(minutes=30), {"rssi": -60})
            conn.execute(
                "INSERT INTO events (time, received_at, device_id, event_id, type, data)"
                " VALUES (%s, %s, 'lock-a1', 'u1', 'lock.unlocked', %s)",
                (NOW - timedelta(minutes=20), NOW, Jsonb({"battery": 99})),
            )
            add_user(conn, "admin", "kommun", "admin")
        insert_alert(database_url, "lock-a1", "battery_low", "warning")
        insert_alert(database_url, "lock-a1", "tamper", "high")
        insert_alert(database_url, "lock-a1", "lock_jammed", "high", state="resolved")
        with running_api(Settings(database_url=database_url)) as base:
            yield World(base, database_url, login(base, "admin"))


def ids(page: dict[str, Any]) -> list[str]:
    return [device["id"] for device in page["items"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["btn-b1", "cam-a2", "lock-a1", "robot-b2"]),
        ("?site=site-a", ["cam-a2", "lock-a1"]),
        ("?kind=door_lock", ["lock-a1"]),
        ("?kind=door_lock&status=all", ["lock-a1", "lock-b3"]),
        ("?status=online", ["lock-a1", "robot-b2"]),
        ("?status=offline", ["cam-a2"]),
        ("?status=never_seen", ["btn-b1"]),
        ("?status=decommissioned", ["lock-b3"]),
        ("?battery_below=20", ["lock-a1"]),
        ("?site=site-c", []),
        ("?site=site-b&status=online", ["robot-b2"]),
    ],
    ids=lambda value: value or "none",
)
def test_filters(world: World, query: str, expected: list[str]) -> None:
    """Each filter narrows the organisation's devices; by default the active ones, by id."""
    page = world.get(f"/devices{query}")
    assert ids(page) == expected
    assert page["total"] == len(expected)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?sort=battery&order=desc", ["robot-b2", "lock-a1", "cam-a2", "btn-b1"]),
        ("?sort=battery", ["lock-a1", "robot-b2", "btn-b1", "cam-a2"]),
        ("?sort=status", ["cam-a2", "btn-b1", "lock-a1", "robot-b2"]),
        ("?sort=last_seen&order=desc", ["lock-a1", "robot-b2", "cam-a2", "btn-b1"]),
        ("?sort=open_alerts&order=desc", ["lock-a1", "robot-b2", "cam-a2", "btn-b1"]),
        ("?sort=id&order=desc", ["robot-b2", "lock-a1", "cam-a2", "btn-b1"]),
    ],
)
def test_sorting(world: World, query: str, expected: list[str]) -> None:
    """Sorting by a column, either way (ties by id, the same way); no value comes last."""
    assert ids(world.get(f"/devices{query}")) == expected


def test_pages(world: World) -> None:
    """limit and offset walk the list; next_offset says where the next page starts."""
    first = world.get("/devices?limit=3")
    assert (ids(first), first["total"], first["next_offset"]) == (
        ["btn-b1", "cam-a2", "lock-a1"], 4, 3,
    )  # fmt: skip
    second = world.get("/devices?limit=3&offset=3")
    assert (ids(second), second["next_offset"]) == (["robot-b2"], None)
    assert call("GET", f"{world.base}/api/v1/devices?limit=501", token=world.token).status == 422


def test_health_fields(world: World) -> None:
    """Online, offline with since/for, never seen, open alerts, registry fields."""
    by_id = {device["id"]: device for device in world.get("/devices?status=all")["items"]}
    lock = by_id["lock-a1"]
    assert (lock["online"], lock["never_seen"], lock["offline_since"]) == (True, False, None)
    assert (lock["battery"], lock["firmware"], lock["open_alerts"]) == (15, "1.2.3", 2)
    assert (lock["site_name"], lock["label"], lock["source"]) == ("Site site-a", "Lgh a1", "mqtt")
    camera = by_id["cam-a2"]
    assert datetime.fromisoformat(camera["offline_since"]) == NOW - timedelta(hours=2)
    # NOW is fixed when the module loads; the module may run minutes later in a full suite.
    silent_s = (datetime.now(UTC) - (NOW - timedelta(hours=2))).total_seconds()
    assert silent_s - 60 < camera["offline_for_s"] <= silent_s
    assert (camera["battery"], camera["battery_trend"]) == (None, None)
    button = by_id["btn-b1"]
    assert (button["never_seen"], button["last_seen"], button["offline_since"]) == (
        True, None, None,
    )  # fmt: skip
    retired = by_id["lock-b3"]
    assert retired["status"] == "decommissioned"
    assert retired["decommissioned_at"] is not None


def test_battery_trend_from_heartbeats(world: World) -> None:
    """The week's trend: one reading per day from heartbeats only, oldest first, and the change."""
    trend = world.get("/devices/lock-a1")["battery_trend"]
    assert [point["battery"] for point in trend["points"]] == [29, 27, 25, 23, 21, 19, 17, 15]
    assert (trend["days"], trend["change"]) == (7, -14)
    robot = world.get("/devices/robot-b2")["battery_trend"]
    assert robot == {"days": 7, "change": None, "points": []}


def test_summary(world: World) -> None:
    """The summary counts the active devices: online, offline, never seen, battery low, by kind."""
    summary = world.get("/devices/summary")
    assert {k: summary[k] for k in ("total", "online", "offline", "never_seen", "battery_low")} == {
        "total": 4, "online": 2, "offline": 1, "never_seen": 1, "battery_low": 1,
    }  # fmt: skip
    assert (summary["decommissioned"], summary["battery_low_below"]) == (1, 20)
    assert summary["by_kind"]["door_lock"] == {
        "total": 1, "online": 1, "offline": 0, "never_seen": 0, "battery_low": 1,
    }  # fmt: skip
    assert set(summary["by_kind"]) == {"door_lock", "safety_camera", "alarm_button",
                                       "companion_robot"}  # fmt: skip
    assert world.get("/devices/summary?site=site-b")["total"] == 2


def test_events_newest_first_with_limit(world: World) -> None:
    """A device's events come newest first, limited; the limit is capped at 1000."""
    events = world.get("/devices/lock-a1/events?limit=3")
    assert [event["type"] for event in events] == ["lock.unlocked", "heartbeat", "heartbeat"]
    assert events[1]["data"] == {"rssi": -60}
    assert len(world.get("/devices/lock-a1/events")) == 12
    too_many = call(
        "GET", f"{world.base}/api/v1/devices/lock-a1/events?limit=1001", token=world.token
    )
    assert too_many.status == 422


def test_events_in_a_time_range(world: World) -> None:
    """since is inclusive, until exclusive; both need an offset."""
    query = urllib.parse.urlencode(
        {
            "since": (NOW - timedelta(days=3, hours=1)).isoformat(),
            "until": (NOW - timedelta(days=1, hours=1)).isoformat(),
        }
    )
    events = world.get(f"/devices/lock-a1/events?{query}")
    assert [event["data"]["battery"] for event in events] == [19, 21]
    naive = call(
        "GET", f"{world.base}/api/v1/devices/lock-a1/events?since=2026-01-01T00:00:00",
        token=world.token,
    )  # fmt: skip
    assert naive.status == 422


@pytest.mark.parametrize("path", ["/devices/lock-c1", "/devices/lock-c1/events", "/devices/nope-1"])
def test_other_organisation_and_unknown_are_404(world: World, path: str) -> None:
    """Another organisation's device answers exactly like one that does not exist."""
    response = call("GET", f"{world.base}/api/v1{path}", token=world.token)
    assert response.status == 404
    assert response.json() == {"detail": "device not found"}
