"""A hand-built night, end to end: camera and lock events over MQTT into a real gateway, its
watchdog judging the planned checks, and what the API then tells the night staff and the
managers (+#11).

The night is the last hour and a bit: two checks per residence, 70 and 40 minutes ago, with
windows and retries of 5 minutes so that every window is over when the test looks. The plan
was recorded six hours ago, so no earlier check of the same times counts. Events carry their
device times. One gateway ingests with its watchdog asleep; a second, with a fast watchdog,
judges the whole night at once, as a gateway that restarts after an outage would.

- Lgh 1: seen in the window (done); seen in the window (done).
- Lgh 2: seen after the window (late); nothing (missed → ``supervision_missed``).
- Lgh 3: not seen, seen on the retry (done); not seen, no retry, then the lock unlocked and
  locked (visited).
- Lgh 4: technical failure (→ ``physical_visit_needed``, which a visit recorded by staff
  resolves); seen (done).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from carewatch import admin
from devices.supervision import night_of
from tests.fixtures.api_client import add_user, call, login
from tests.fixtures.api_server import running_api
from tests.fixtures.gateway_process import GatewayProcess, wait_until
from tests.fixtures.mqtt import envelope, events_topic, publish_all
from tests.fixtures.services import MakeSettings, SeededRegistry

STOCKHOLM = ZoneInfo("Europe/Stockholm")
STEP = timedelta(minutes=5)  # window either side, and the retry


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


@pytest.fixture
def night(database_url: str, seeded: SeededRegistry) -> dict[str, Any]:
    """Four residences with a camera each (and a lock at Lgh 3), their plans, the two planned
    times and the devices; yields them."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    first, second = now - minutes(70), now - minutes(40)
    cameras = [*seeded.devices_by_kind["safety_camera"], f"{seeded.site_id}-cam-4"]
    lock = seeded.device("door_lock")
    residences: list[int] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        admin.add_devices_bulk(conn, [(cameras[3], "safety_camera", seeded.site_id, "Lgh 4")])
        conn.execute(
            "UPDATE sites SET timezone = 'Europe/Stockholm' WHERE id = %s", (seeded.site_id,)
        )
        for n, camera in enumerate(cameras, start=1):
            row = conn.execute(
                "INSERT INTO residences (site_id, label) VALUES (%s, %s) RETURNING id",
                (seeded.site_id, f"Lgh {n}"),
            ).fetchone()
            assert row is not None
            residences.append(row[0])
            conn.execute("UPDATE devices SET residence_id = %s WHERE id = %s", (row[0], camera))
            conn.execute(
                "INSERT INTO supervision_plans (residence_id, recorded_at, recorded_by,"
                " check_times, window_s, retry_s) VALUES (%s, %s, 'planner', %s::time[], %s, %s)",
                (
                    row[0],
                    now - timedelta(hours=6),
                    [t.astimezone(STOCKHOLM).time().isoformat() for t in (first, second)],
                    int(STEP.total_seconds()),
                    int(STEP.total_seconds()),
                ),
            )
        conn.execute("UPDATE devices SET residence_id = %s WHERE id = %s", (residences[2], lock))
        add_user(conn, "natt", seeded.org_id, "caregiver")
        add_user(conn, "chef", seeded.org_id, "manager")
    return {
        "now": now,
        "first": first,
        "second": second,
        "cameras": cameras,
        "lock": lock,
        "residences": residences,
    }


def lock_event(lock: str, kind: str, at: datetime) -> tuple[str, bytes]:
    data: dict[str, object] = {"by": "nattpatrull", "method": "app"}
    return events_topic(lock), envelope(kind, kind, data, ts=at)


def check_ended(camera: str, at: datetime, outcome: str, n: int) -> tuple[str, bytes]:
    data: dict[str, object] = {"outcome": outcome, "duration_s": 25, "by": "nattpatrull"}
    return events_topic(camera), envelope(f"check-{n}", "camera.check_ended", data, ts=at)


def test_a_hand_built_night_gives_exactly_the_expected_checks_alerts_and_figures(
    publisher_url: str,
    make_settings: MakeSettings,
    database_url: str,
    night: dict[str, Any],
    tmp_path: Path,
) -> None:
    first, second = night["first"], night["second"]
    cam1, cam2, cam3, cam4 = night["cameras"]
    lock = night["lock"]
    messages = [
        check_ended(cam1, first + minutes(1), "seen", 1),
        check_ended(cam1, second + minutes(1), "seen", 2),
        check_ended(cam2, first + minutes(10), "seen", 3),
        check_ended(cam3, first + minutes(1), "not_seen", 4),
        check_ended(cam3, first + minutes(4), "seen", 5),
        check_ended(cam3, second + minutes(1), "not_seen", 6),
        lock_event(lock, "lock.unlocked", second + minutes(10)),
        lock_event(lock, "lock.locked", second + minutes(12)),
        check_ended(cam4, first + minutes(1), "technical_failure", 7),
        check_ended(cam4, second + minutes(1), "seen", 8),
    ]
    ingesting = make_settings(database_url, watchdog_interval_s=3600.0)
    with GatewayProcess(ingesting, tmp_path / "ingest.log"):
        publish_all(publisher_url, messages)
        wait_until(lambda: _count(database_url, "SELECT count(*) FROM events") >= len(messages))
    assert _count(database_url, "SELECT count(*) FROM supervision_checks") == 0

    judging = make_settings(database_url, watchdog_interval_s=0.3)
    with GatewayProcess(judging, tmp_path / "judge.log"), running_api(judging) as base:
        wait_until(lambda: _count(database_url, "SELECT count(*) FROM supervision_checks") == 8)
        assert _states(database_url) == {
            ("Lgh 1", first): "done",
            ("Lgh 1", second): "done",
            ("Lgh 2", first): "late",
            ("Lgh 2", second): "missed",
            ("Lgh 3", first): "done",
            ("Lgh 3", second): "visited",
            ("Lgh 4", first): "visit_needed",
            ("Lgh 4", second): "done",
        }
        assert _alerts(database_url) == [
            ("Lgh 2", second, "supervision_missed", "high", "open"),
            ("Lgh 4", first, "physical_visit_needed", "critical", "open"),
        ]

        # The night staff see the same in the night round, and record the visit to Lgh 4.
        token = login(base, "natt")
        shown = _night_round(base, token, first) | _night_round(base, token, second)
        assert {key: check["state"] for key, check in shown.items()} == _states(database_url)
        lgh4 = night["residences"][3]
        answer = call(
            "POST",
            f"{base}/api/v1/residences/{lgh4}/visits",
            json_body={"visited_at": (first + minutes(20)).isoformat(), "note": "allt väl"},
            token=token,
        )
        assert answer.status == 201, answer.body
        wait_until(lambda: _states(database_url)[("Lgh 4", first)] == "visited")
        assert [alert[2:] for alert in _alerts(database_url)] == [
            ("supervision_missed", "high", "open"),
            ("physical_visit_needed", "critical", "resolved"),
        ]

        # The managers' figures for the night(s).
        manager = login(base, "chef")
        nights = sorted({night_of(t, STOCKHOLM) for t in (first, second)})
        summary = call(
            "GET",
            f"{base}/api/v1/supervision/summary?since={nights[0]}&until={nights[-1]}",
            token=manager,
        ).json()
        [site] = summary["sites"]
        totals = site["totals"]
        assert {key: totals[key] for key in ("planned", "done_in_window", "late", "missed")} == {
            "planned": 8,
            "done_in_window": 4,
            "late": 1,
            "missed": 1,
        }
        assert (totals["not_seen"], totals["visits_needed"], totals["replaced_by_visits"]) == (
            2,
            2,
            1,
        )


def _count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def _states(url: str) -> dict[tuple[str, datetime], str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT r.label, c.planned_at, c.state FROM supervision_checks AS c"
            " JOIN residences AS r ON r.id = c.residence_id"
        ).fetchall()
    return {(label, planned): state for label, planned, state in rows}


def _alerts(url: str) -> list[tuple[str, datetime, str, str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT r.label, a.planned_at, a.rule, a.severity, a.state FROM alerts AS a"
            " JOIN residences AS r ON r.id = a.residence_id"
            " WHERE a.planned_at IS NOT NULL ORDER BY r.label, a.planned_at"
        ).fetchall()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def _night_round(base: str, token: str, planned: datetime) -> dict[tuple[str, datetime], Any]:
    answer = call(
        "GET", f"{base}/api/v1/night-round?night={night_of(planned, STOCKHOLM)}", token=token
    ).json()
    return {
        (check["residence_label"], datetime.fromisoformat(check["planned_at"])): check
        for site in answer["sites"]
        for check in site["checks"]
    }
