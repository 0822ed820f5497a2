"""``GET /api/v1/usage`` on a small hand-built history whose answers are worked out by hand.

The history is one week of October 2026 in Europe/Stockholm, Monday 19 to Monday 26, the week
summer time ends (Sunday 25: 02:00-03:00 happens twice, the day has 25 hours). Events go into
``events`` and the rollups are computed by the same code the operators' repair tool and the
backfill use (carewatch.db.rollups.rebuild), so the rollup definitions are tested end to end;
alerts are written with known opened/acknowledged/cleared/resolved times.

kommun: site nord (cam-n1, lock-n1, robot-n1, robot-n2, alarm-n1) and site syd (cam-s1, lock-s1,
robot-s1); annan: site annan-1 (cam-a1), in Europe/London. Every device exists from January 1.
The week is 7 * 24 + 1 = 169 h = 608,400 s long.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
import pytest
from psycopg.types.json import Jsonb

from carewatch.db.rollups import rebuild
from carewatch.settings import Settings
from tests.fixtures.api_client import add_user, call, login, module_database
from tests.fixtures.api_server import running_api
from tools.local.postgres import PostgresInstance

DEVICES: Final = {
    "cam-n1": ("safety_camera", "nord"),
    "lock-n1": ("door_lock", "nord"),
    "robot-n1": ("companion_robot", "nord"),
    "robot-n2": ("companion_robot", "nord"),
    "alarm-n1": ("alarm_button", "nord"),
    "cam-s1": ("safety_camera", "syd"),
    "lock-s1": ("door_lock", "syd"),
    "robot-s1": ("companion_robot", "syd"),
    "cam-a1": ("safety_camera", "annan-1"),
}

# (device, local time with offset, type, data)
EVENTS: Final[list[tuple[str, str, str, dict[str, Any]]]] = [
    # Camera checks. Night = 18:00-06:00 local.
    ("cam-n1", "2026-10-18T23:30+02:00", "camera.check_ended", {"duration_s": 99}),  # before
    ("cam-n1", "2026-10-19T21:59+02:00", "camera.check_started", {}),  # not a check
    ("cam-n1", "2026-10-19T22:00+02:00", "camera.check_ended", {"duration_s": 30}),  # night
    ("cam-n1", "2026-10-20T02:30+02:00", "camera.check_ended", {"duration_s": 50}),  # night
    ("cam-n1", "2026-10-20T12:00+02:00", "camera.check_ended", {"duration_s": 40}),  # day
    ("cam-n1", "2026-10-25T02:30+02:00", "camera.check_ended", {"duration_s": 60}),  # 1st 02:30
    ("cam-n1", "2026-10-25T02:30+01:00", "camera.check_ended", {"duration_s": 20}),  # 2nd 02:30
    ("cam-n1", "2026-10-25T23:00+01:00", "camera.check_ended", {"duration_s": 10}),  # night
    # Local Monday 26 (after the week) although it is still Sunday 25 in UTC.
    ("cam-n1", "2026-10-26T00:30+01:00", "camera.check_ended", {"duration_s": 99}),
    # Local Monday 19 (in the week) although it is still Sunday 18 in UTC.
    ("cam-s1", "2026-10-19T00:15+02:00", "camera.check_ended", {"duration_s": 35}),  # night
    ("cam-s1", "2026-10-21T19:00+02:00", "camera.check_ended", {"duration_s": 45}),  # night
    ("cam-a1", "2026-10-20T22:00+02:00", "camera.check_ended", {"duration_s": 500}),  # annan
    # Lock visits: unlocked -> locked, bucketed by the locked time, at most 12 h.
    ("lock-n1", "2026-10-20T08:00+02:00", "lock.unlocked", {"by": "s1", "method": "app"}),
    ("lock-n1", "2026-10-20T08:20+02:00", "lock.locked", {"by": "s1", "method": "app"}),  # 1200
    ("lock-n1", "2026-10-20T23:50+02:00", "lock.unlocked", {"by": "s1", "method": "app"}),
    ("lock-n1", "2026-10-21T00:10+02:00", "lock.locked", {"by": "s1", "method": "app"}),  # 1200
    ("lock-n1", "2026-10-22T10:00+02:00", "lock.unlocked", {"by": "s1", "method": "app"}),
    ("lock-n1", "2026-10-22T23:30+02:00", "lock.locked", {"by": "s1", "method": "app"}),  # 13.5 h
    # 01:50 summer time to 02:10 winter time: 20 min on the wall clock, 80 min in fact.
    ("lock-n1", "2026-10-25T01:50+02:00", "lock.unlocked", {"by": "s2", "method": "app"}),
    ("lock-n1", "2026-10-25T02:10+01:00", "lock.locked", {"by": "s2", "method": "app"}),  # 4800
    # Unlocked before the week, locked in it: a visit of Monday 19.
    ("lock-s1", "2026-10-18T23:55+02:00", "lock.unlocked", {"by": "s3", "method": "tag"}),
    ("lock-s1", "2026-10-19T00:05+02:00", "lock.locked", {"by": "s3", "method": "tag"}),  # 600
    ("lock-s1", "2026-10-23T09:00+02:00", "lock.unlocked", {"by": "s3", "method": "tag"}),
    ("lock-s1", "2026-10-23T09:30+02:00", "lock.locked", {"by": "s3", "method": "tag"}),  # 1800
    ("lock-s1", "2026-10-23T09:40+02:00", "lock.locked", {"by": "s3", "method": "tag"}),  # no
    # Robot interactions.
    (
        "robot-n1",
        "2026-10-19T10:00+02:00",
        "robot.interaction",
        {"mode": "touch", "duration_s": 300},
    ),
    (
        "robot-n1",
        "2026-10-20T10:00+02:00",
        "robot.interaction",
        {"mode": "voice", "duration_s": 600},
    ),
    (
        "robot-n1",
        "2026-10-25T14:00+01:00",
        "robot.interaction",
        {"mode": "touch", "duration_s": 120},
    ),
    (
        "robot-s1",
        "2026-10-22T15:00+02:00",
        "robot.interaction",
        {"mode": "motion", "duration_s": 900},
    ),
    # Alarms (a cancel is not an alarm).
    ("alarm-n1", "2026-10-21T03:00+02:00", "alarm.pressed", {}),
    ("alarm-n1", "2026-10-21T03:01+02:00", "alarm.cancelled", {}),
    ("alarm-n1", "2026-10-21T15:00+02:00", "alarm.pressed", {}),
    ("alarm-n1", "2026-10-24T12:00+02:00", "alarm.pressed", {}),
    # Batteries: 15 -> 100 is a replacement (Thursday 22); 50 -> 70 is not (< 30 points).
    ("lock-n1", "2026-10-19T06:00+02:00", "heartbeat", {"battery": 15}),
    ("lock-n1", "2026-10-22T07:00+02:00", "heartbeat", {"battery": 100}),
    ("lock-n1", "2026-10-23T07:00+02:00", "heartbeat", {"battery": 99}),
    ("alarm-n1", "2026-10-19T06:00+02:00", "heartbeat", {"battery": 50}),
    ("alarm-n1", "2026-10-20T06:00+02:00", "heartbeat", {"battery": 70}),
]

# (name, device, rule, severity, state, opened, acknowledged, cleared, resolved, resolved_by)
ALERTS: Final = [
    ("A1", "cam-n1", "device_offline", "critical", "resolved", "2026-10-20T10:00+02:00",
     "2026-10-20T10:02+02:00", "2026-10-20T12:00+02:00", "2026-10-20T12:00+02:00", "system"),
    ("A2", "alarm-n1", "alarm_pressed", "critical", "resolved", "2026-10-21T03:00+02:00",
     "2026-10-21T03:10+02:00", "2026-10-21T03:01+02:00", "2026-10-21T03:30+02:00", "anna"),
    ("A3", "alarm-n1", "alarm_pressed", "critical", "resolved", "2026-10-21T15:00+02:00",
     "2026-10-21T15:01+02:00", None, "2026-10-21T15:20+02:00", "anna"),
    ("A4", "alarm-n1", "alarm_pressed", "critical", "open", "2026-10-24T12:00+02:00",
     None, None, None, None),
    ("A5", "lock-n1", "door_left_unlocked", "high", "resolved", "2026-10-22T10:10+02:00",
     "2026-10-22T10:40+02:00", "2026-10-22T23:30+02:00", "2026-10-22T23:30+02:00", "system"),
    # Cleared while nobody had acknowledged it: still open, the device back at 06:00.
    ("A6", "lock-s1", "device_offline", "high", "open", "2026-10-23T00:00+02:00",
     None, "2026-10-23T06:00+02:00", None, None),
    ("A7", "robot-n2", "robot_inactive", "info", "open", "2026-10-19T08:00+02:00",
     None, None, None, None),
    # Still offline: offline until the end of the week.
    ("A8", "cam-s1", "device_offline", "critical", "open", "2026-10-25T20:00+01:00",
     None, None, None, None),
    # Opened before the week (not counted), offline into it until 02:00 Monday.
    ("A9", "robot-s1", "device_offline", "high", "resolved", "2026-10-18T22:00+02:00",
     None, "2026-10-19T02:00+02:00", "2026-10-19T02:00+02:00", "system"),
    # Resolved by staff while still offline: the resolve is the end we know.
    ("A10", "lock-n1", "device_offline", "high", "resolved", "2026-10-24T08:00+02:00",
     "2026-10-24T08:05+02:00", None, "2026-10-24T09:00+02:00", "bertil"),
    ("A11", "cam-a1", "device_offline", "critical", "open", "2026-10-20T10:00+02:00",
     None, None, None, None),
    ("A12", "alarm-n1", "alarm_pressed", "critical", "resolved", "2026-10-26T00:30+01:00",
     "2026-10-26T00:31+01:00", None, "2026-10-26T00:40+01:00", "anna"),
]  # fmt: skip

WEEK: Final = "since=2026-10-19&until=2026-10-26"


@dataclass(frozen=True)
class World:
    base: str
    tokens: dict[str, str]
    alert_ids: dict[str, int]


def _insert_history(conn: psycopg.Connection[Any]) -> dict[str, int]:
    conn.execute(
        "INSERT INTO organisations (id, name) VALUES ('kommun', 'Kommun'), ('annan', 'Annan')"
    )
    conn.execute(
        "INSERT INTO sites (id, org_id, name, timezone) VALUES"
        " ('nord', 'kommun', 'Nord', 'Europe/Stockholm'),"
        " ('syd', 'kommun', 'Syd', 'Europe/Stockholm'),"
        " ('annan-1', 'annan', 'Annan 1', 'Europe/London')"
    )
    for device_id, (kind, site_id) in DEVICES.items():
        conn.execute(
            "INSERT INTO devices (id, kind, site_id, label, created_at)"
            " VALUES (%s, %s, %s, %s, '2026-01-01T00:00+01:00')",
            (device_id, kind, site_id, f"Lgh {device_id}"),
        )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO events (time, received_at, device_id, event_id, type, data)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (datetime.fromisoformat(t), datetime.fromisoformat(t), device, str(i), type_,
                 Jsonb(data))
                for i, (device, t, type_, data) in enumerate(EVENTS)
            ],
        )  # fmt: skip
    ids: dict[str, int] = {}
    for name, device, rule, severity, state, opened, acked, cleared, resolved, by in ALERTS:
        row = conn.execute(
            "INSERT INTO alerts (device_id, rule, severity, state, opened_at, acknowledged_at,"
            " acknowledged_by, cleared_at, resolved_at, resolved_by)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (device, rule, severity, state, opened, acked, "anna" if acked else None, cleared,
             resolved, by),
        ).fetchone()  # fmt: skip
        assert row is not None
        ids[name] = row[0]
    return ids


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[World]:
    """The history, its rollups rebuilt, users of each role, and the API serving them."""
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            ids = _insert_history(conn)
            rebuild(
                conn,
                datetime.fromisoformat("2026-10-01T00:00+00:00"),
                datetime.fromisoformat("2026-11-05T00:00+00:00"),
            )
            add_user(conn, "manager", "kommun", "manager")
            add_user(conn, "manager-syd", "kommun", "manager", ["syd"])
            add_user(conn, "admin-annan", "annan", "admin")
        with running_api(Settings(database_url=database_url)) as base:
            tokens = {name: login(base, name) for name in ("manager", "manager-syd", "admin-annan")}
            yield World(base, tokens, ids)


def usage(world: World, params: str, user: str = "manager") -> dict[str, Any]:
    response = call("GET", f"{world.base}/api/v1/usage?{params}", token=world.tokens[user])
    assert response.status == 200, response.body
    report: dict[str, Any] = response.json()
    return report


def by_bucket(series: list[dict[str, Any]], field: str) -> list[Any]:
    return [item[field] for item in series]


def test_day_buckets_are_local_midnights_across_the_dst_change(world: World) -> None:
    """Seven local days; the period ends at Monday's midnight of winter time (+01:00)."""
    report = usage(world, WEEK)
    assert report["timezone"] == "Europe/Stockholm"
    assert report["timezone_note"] is None
    assert report["since"] == "2026-10-19T00:00:00+02:00"
    assert report["until"] == "2026-10-26T00:00:00+01:00"
    assert report["buckets"] == [f"2026-10-{d}T00:00:00+02:00" for d in range(19, 26)]
    assert report["days"] == 7


def test_camera_checks_per_night_and_duration(world: World) -> None:
    """8 checks in the week (cam-s1's 00:15 Monday is in, though Sunday in UTC; cam-n1's 00:30
    Monday 26 is out, though Sunday in UTC; check_started is no check), 290 s in all: mean
    36.25 s. Night checks: all but Tuesday's 12:00 = 7, over the 7 nights starting 18:00
    Monday..Sunday = 1.0 per night. Both checks at 02:30 on Sunday count (the hour is twice)."""
    camera = usage(world, WEEK)["camera_checks"]
    assert by_bucket(camera["series"], "checks") == [2, 2, 1, 0, 0, 0, 3]
    assert by_bucket(camera["series"], "night_checks") == [2, 1, 1, 0, 0, 0, 3]
    # (30+35)/2, (50+40)/2, 45, -, -, -, (60+20+10)/3
    assert by_bucket(camera["series"], "mean_duration_s") == [
        32.5,
        45.0,
        45.0,
        None,
        None,
        None,
        30.0,
    ]
    assert camera["nights"] == 7
    assert camera["checks_per_night"] == 1.0
    assert camera["mean_duration_s"] == 36.25


def test_lock_visits_by_the_locked_time(world: World) -> None:
    """5 visits: 600 s Monday (unlocked Sunday 23:55), 1200 s Tuesday, 1200 s Wednesday
    (unlocked 23:50 Tuesday), 1800 s Friday (the second lock is no visit), 4800 s Sunday
    (01:50 summer time to 02:10 winter time is 80 minutes). Thursday's 13.5 h is a forgotten
    door, not a visit. 9600 s / 5 = 1920 s; 5 / 7 days = 0.71 a day."""
    locks = usage(world, WEEK)["lock_visits"]
    assert by_bucket(locks["series"], "visits") == [1, 1, 1, 0, 1, 0, 1]
    assert by_bucket(locks["series"], "mean_duration_s") == [
        600.0,
        1200.0,
        1200.0,
        None,
        1800.0,
        None,
        4800.0,
    ]
    assert (locks["visits"], locks["visits_per_day"], locks["mean_duration_s"]) == (5, 0.71, 1920.0)


def test_robot_minutes_per_day_and_per_robot(world: World) -> None:
    """robot-n1 300 + 600 + 120 s = 17 min (2.43 a day), robot-s1 900 s = 15 min (2.14), and
    robot-n2, which nobody touched, 0 - listed, because that is what a manager looks for."""
    robots = usage(world, WEEK)["robot_minutes"]
    assert by_bucket(robots["series"], "minutes") == [5.0, 10.0, 0.0, 15.0, 0.0, 0.0, 2.0]
    assert robots["minutes"] == 32.0
    assert [(r["device_id"], r["site_id"], r["minutes"], r["minutes_per_day"])
            for r in robots["per_robot"]] == [
        ("robot-n1", "nord", 17.0, 2.43),
        ("robot-s1", "syd", 15.0, 2.14),
        ("robot-n2", "nord", 0.0, 0.0),
    ]  # fmt: skip


def test_alarms_and_battery_replacements(world: World) -> None:
    """3 presses (Wednesday twice, Saturday; the cancel is none): 0.43 a day. One battery
    replacement, Thursday's 15 -> 100 (50 -> 70 is less than 30 points)."""
    report = usage(world, WEEK)
    alarms, battery = report["alarms"], report["battery_replacements"]
    assert by_bucket(alarms["series"], "alarms") == [0, 0, 2, 0, 0, 1, 0]
    assert (alarms["total"], alarms["per_day"]) == (3, 0.43)
    assert by_bucket(battery["series"], "replacements") == [0, 0, 0, 1, 0, 0, 0]
    assert battery["total"] == 1


def test_alerts_by_rule_and_severity(world: World) -> None:
    """The 9 alerts of kommun opened in the week: not A9 (opened before), A12 (after), A11
    (annan's)."""
    alerts = usage(world, WEEK)["alerts"]
    assert alerts["total"] == 9
    assert [(a["rule"], a["severity"], a["count"]) for a in alerts["by_rule_severity"]] == [
        ("alarm_pressed", "critical", 3),  # A2 A3 A4
        ("device_offline", "critical", 2),  # A1 A8
        ("device_offline", "high", 2),  # A6 A10
        ("door_left_unlocked", "high", 1),  # A5
        ("robot_inactive", "info", 1),  # A7
    ]


def test_response_times_median_and_p90(world: World) -> None:
    """Continuous percentiles (interpolated between the sorted values v at rank p*(n-1)):

    critical (A1 A2 A3 A4 A8): acknowledged A1 120, A2 600, A3 60 s -> sorted 60 120 600:
    median 120, p90 at rank 1.8 = 120 + 0.8 * 480 = 504. Resolved A1 7200, A2 1800, A3 1200 ->
    median 1800, p90 = 1800 + 0.8 * 5400 = 6120.
    high (A5 A6 A10): acknowledged A5 1800, A10 300 -> median 1050, p90 at rank 0.9 = 300 +
    0.9 * 1500 = 1650. Resolved A5 48000 (10:10 -> 23:30), A10 3600 -> median 25800, p90 3600 +
    0.9 * 44400 = 43560. warning: none. info (A7): not acknowledged, not resolved.
    """
    times = usage(world, WEEK)["response_times"]
    assert times["by_severity"] == [
        {"severity": "critical", "alerts": 5, "acknowledged": 3, "ack_median_s": 120.0,
         "ack_p90_s": 504.0, "resolved": 3, "resolve_median_s": 1800.0, "resolve_p90_s": 6120.0},
        {"severity": "high", "alerts": 3, "acknowledged": 2, "ack_median_s": 1050.0,
         "ack_p90_s": 1650.0, "resolved": 2, "resolve_median_s": 25800.0,
         "resolve_p90_s": 43560.0},
        {"severity": "warning", "alerts": 0, "acknowledged": 0, "ack_median_s": None,
         "ack_p90_s": None, "resolved": 0, "resolve_median_s": None, "resolve_p90_s": None},
        {"severity": "info", "alerts": 1, "acknowledged": 0, "ack_median_s": None,
         "ack_p90_s": None, "resolved": 0, "resolve_median_s": None, "resolve_p90_s": None},
    ]  # fmt: skip
    slowest = [(s["alert_id"], s["ack_s"], s["label"]) for s in times["slowest"]]
    ids = world.alert_ids
    assert slowest == [
        (ids["A5"], 1800.0, "Lgh lock-n1"),
        (ids["A2"], 600.0, "Lgh alarm-n1"),
        (ids["A10"], 300.0, "Lgh lock-n1"),
        (ids["A1"], 120.0, "Lgh cam-n1"),
        (ids["A3"], 60.0, "Lgh alarm-n1"),
    ]


def test_availability_from_device_offline_alerts(world: World) -> None:
    """Offline in the week (608,400 s each): cam-n1 7200 (A1, until cleared), lock-s1 21600 (A6,
    cleared at 06:00 though still unacknowledged), cam-s1 14400 (A8, open: until the week's
    end), robot-s1 7200 (A9, clipped to Monday 00:00-02:00), lock-n1 3600 (A10, resolved by
    staff with no clearing: until the resolve). Shares are weighted by time:
    cameras 1 - 21600/1216800 = 0.9822, locks 1 - 25200/1216800 = 0.9793,
    robots 1 - 7200/1825200 = 0.9961, the alarm button 1.0."""
    availability = usage(world, WEEK)["availability"]
    assert availability["by_kind"] == [
        {"kind": "alarm_button", "devices": 1, "share_online": 1.0},
        {"kind": "companion_robot", "devices": 3, "share_online": 0.9961},
        {"kind": "door_lock", "devices": 2, "share_online": 0.9793},
        {"kind": "safety_camera", "devices": 2, "share_online": 0.9822},
    ]
    # 1 - 21600/608400, 1 - 14400/608400, 1 - 7200/608400 (twice: by id), 1 - 3600/608400
    assert [(d["device_id"], d["share_online"]) for d in availability["least_available"]] == [
        ("lock-s1", 0.9645),
        ("cam-s1", 0.9763),
        ("cam-n1", 0.9882),
        ("robot-s1", 0.9882),
        ("lock-n1", 0.9941),
    ]


def test_site_comparison(world: World) -> None:
    """nord: 6 checks, 3 visits, 17 robot minutes, 3 alarms, 7 alerts (A1-A5 A7 A10), offline
    10800 of 5 * 608400 s; syd: 2 checks, 2 visits, 15 minutes, no alarm, 2 alerts (A6 A8),
    offline 43200 of 3 * 608400 s."""
    sites = usage(world, WEEK)["sites"]
    assert sites == [
        {"site_id": "nord", "name": "Nord", "camera_checks": 6, "lock_visits": 3,
         "robot_minutes": 17.0, "alarms": 3, "alerts": 7, "share_online": 0.9964},
        {"site_id": "syd", "name": "Syd", "camera_checks": 2, "lock_visits": 2,
         "robot_minutes": 15.0, "alarms": 0, "alerts": 2, "share_online": 0.9763},
    ]  # fmt: skip


def test_hour_buckets_of_the_25_hour_day(world: World) -> None:
    """Sunday 25 by hour: 25 buckets, 02:00 twice (+02:00, then +01:00), each with its own
    02:30 check; the 80-minute visit ends in the second 02:00. One night starts in the day
    (18:00) and 3 checks are in night hours: 3.0 per night. cam-s1 is offline 20:00-24:00 of
    the 25 hours: 1 - 4/25 = 0.84."""
    report = usage(world, "since=2026-10-25&until=2026-10-26&bucket=hour")
    buckets = report["buckets"]
    assert len(buckets) == 25
    assert buckets[:5] == [
        "2026-10-25T00:00:00+02:00",
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]
    assert buckets[-1] == "2026-10-25T23:00:00+01:00"
    checks = dict(zip(buckets, by_bucket(report["camera_checks"]["series"], "checks"), strict=True))
    assert {b: n for b, n in checks.items() if n} == {
        "2026-10-25T02:00:00+02:00": 1,
        "2026-10-25T02:00:00+01:00": 1,
        "2026-10-25T23:00:00+01:00": 1,
    }
    visits = report["lock_visits"]["series"]
    assert [(v["bucket"], v["mean_duration_s"]) for v in visits if v["visits"]] == [
        ("2026-10-25T02:00:00+01:00", 4800.0)
    ]
    assert report["days"] == pytest.approx(25 / 24)
    assert (report["camera_checks"]["nights"], report["camera_checks"]["checks_per_night"]) == (
        1,
        3.0,
    )
    least = {d["device_id"]: d["share_online"] for d in report["availability"]["least_available"]}
    assert least == {"cam-s1": 0.84}


def test_week_buckets_start_on_monday(world: World) -> None:
    """A period inside one week widens to Monday..Monday; three weeks are three buckets, the
    third starting on a winter-time Monday, holding cam-n1's 00:30 check; the first holds
    Sunday 18's 23:30 check."""
    one = usage(world, "since=2026-10-21&until=2026-10-23&bucket=week")
    assert (one["since"], one["until"]) == (
        "2026-10-19T00:00:00+02:00",
        "2026-10-26T00:00:00+01:00",
    )
    assert one["buckets"] == ["2026-10-19T00:00:00+02:00"]
    assert by_bucket(one["camera_checks"]["series"], "checks") == [8]
    assert one["lock_visits"]["visits"] == 5
    three = usage(world, "since=2026-10-12&until=2026-11-02&bucket=week")
    assert three["buckets"] == [
        "2026-10-12T00:00:00+02:00",
        "2026-10-19T00:00:00+02:00",
        "2026-10-26T00:00:00+01:00",
    ]
    assert by_bucket(three["camera_checks"]["series"], "checks") == [1, 8, 1]


def test_a_site_limited_manager_sees_only_their_site(world: World) -> None:
    """manager-syd: only syd's checks, visits, minutes, alerts and devices."""
    report = usage(world, WEEK, user="manager-syd")
    assert [s["site_id"] for s in report["sites"]] == ["syd"]
    assert sum(by_bucket(report["camera_checks"]["series"], "checks")) == 2
    assert report["lock_visits"]["visits"] == 2
    assert [r["device_id"] for r in report["robot_minutes"]["per_robot"]] == ["robot-s1"]
    assert report["alerts"]["total"] == 2
    assert report["alarms"]["total"] == 0
    response = call(
        "GET", f"{world.base}/api/v1/usage?site=nord&{WEEK}", token=world.tokens["manager-syd"]
    )
    assert response.status == 404


def test_one_site_and_another_time_zone(world: World) -> None:
    """site=syd holds syd alone; annan's admin gets annan-1 in Europe/London (22:00 in
    Stockholm is 21:00 there: a night check) and nothing of kommun."""
    syd = usage(world, f"site=syd&{WEEK}")
    assert (syd["site"], syd["camera_checks"]["mean_duration_s"]) == ("syd", 40.0)
    annan = usage(world, WEEK, user="admin-annan")
    assert annan["timezone"] == "Europe/London"
    assert annan["buckets"][0] == "2026-10-19T00:00:00+01:00"
    assert by_bucket(annan["camera_checks"]["series"], "night_checks")[1] == 1
    assert sum(by_bucket(annan["camera_checks"]["series"], "checks")) == 1
    assert annan["alerts"]["total"] == 1
    assert (
        call(
            "GET", f"{world.base}/api/v1/usage?site=nord", token=world.tokens["admin-annan"]
        ).status
        == 404
    )
