"""Night supervision in the gateway: a hand-built night, the watchdog's pass, what it writes.

One residence at a Stockholm site (winter time, UTC+1) with a camera, a lock and a plan of
checks at 00:00 and 02:00 (±15 min, a retry 15 min after "not seen"). The midnight check is
seen in every test, so each one is about the 02:00 check. The pass is called directly with
the ``now`` each step needs; no MQTT (events are rows, as the ingest stores them).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import psycopg
import pytest

from carewatch.settings import Settings
from gateway.service import Gateway
from gateway.supervision import PlanCache, SupervisionOutcome, supervision_pass
from gateway.supervision_escalation import escalate_supervision
from tests.fixtures.alerts import insert_alert

STOCKHOLM = ZoneInfo("Europe/Stockholm")
NIGHT_MORNING = date(2026, 12, 8)  # Monday's night, the morning after
PLANNED = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)  # 02:00 local
CAMERA, LOCK = "cam-sup-1", "lock-sup-1"


def local(hour: int, minute: int = 0, second: int = 0) -> datetime:
    """``hh:mm:ss`` local time in the night of the tests (after midnight: the morning)."""
    day = NIGHT_MORNING if hour < 12 else NIGHT_MORNING - timedelta(days=1)
    return datetime.combine(day, time(hour, minute, second), tzinfo=STOCKHOLM).astimezone(UTC)


@dataclass(frozen=True)
class Night:
    """The test's database and its residence."""

    url: str
    residence_id: int

    def run(self, now: datetime, plans: PlanCache | None = None) -> SupervisionOutcome:
        return asyncio.run(_pass(self.url, now, plans))

    def event(self, device: str, at: datetime, kind: str, **data: Any) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO events (time, received_at, device_id, event_id, type, data)"
                " VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
                (at, at, device, f"{kind}-{at.isoformat()}", kind, orjson.dumps(data).decode()),
            )

    def check_ended(self, at: datetime, outcome: str) -> None:
        self.event(
            CAMERA, at, "camera.check_ended", outcome=outcome, duration_s=24.5, by="nattpatrull"
        )

    def state(self, planned_at: datetime = PLANNED) -> dict[str, Any]:
        return self.one(
            "SELECT state, seen_at, duration_s, not_seen, visit_needed, by_visit, camera_failed,"
            " retry_at, visited_at"
            " FROM supervision_checks WHERE residence_id = %s AND planned_at = %s",
            (self.residence_id, planned_at),
        )

    def alerts(self) -> list[dict[str, Any]]:
        return self.all(
            "SELECT id, device_id, rule, severity, state, reason, resolved_by, residence_id,"
            " planned_at FROM alerts WHERE planned_at IS NOT NULL ORDER BY id"
        )

    def changes(self) -> list[tuple[int, str]]:
        rows = self.all(
            "SELECT c.alert_id, c.change FROM alert_changes AS c JOIN alerts AS a"
            " ON a.id = c.alert_id WHERE a.planned_at IS NOT NULL ORDER BY c.id"
        )
        return [(r["alert_id"], r["change"]) for r in rows]

    def one(self, query: str, params: tuple[Any, ...] = ()) -> dict[str, Any]:
        [row] = self.all(query, params)
        return row

    def all(self, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with psycopg.connect(self.url) as conn:
            cur = conn.execute(query, params)
            names = [c.name for c in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def execute(self, query: str, params: tuple[Any, ...] = ()) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(query, params)


async def _pass(url: str, now: datetime, plans: PlanCache | None = None) -> SupervisionOutcome:
    # Not autocommit, like the gateway's pool: the pass makes its own transactions.
    async with await psycopg.AsyncConnection.connect(url) as conn:
        return await supervision_pass(conn, now, plans=plans)


def seed_night(url: str, check_times: tuple[time, ...] = (time(0), time(2))) -> int:
    """Organisation, site, a residence with a camera and a lock, its plan; the residence id."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO organisations (id, name) VALUES ('kommun', 'Kommun')")
        conn.execute(
            "INSERT INTO sites (id, org_id, name, timezone)"
            " VALUES ('solgarden', 'kommun', 'Solgården', 'Europe/Stockholm')"
        )
        row = conn.execute(
            "INSERT INTO residences (site_id, label) VALUES ('solgarden', 'Lgh 12') RETURNING id"
        ).fetchone()
        assert row is not None
        residence_id: int = row[0]
        conn.execute(
            "INSERT INTO devices (id, kind, site_id, residence_id) VALUES"
            " (%s, 'safety_camera', 'solgarden', %s), (%s, 'door_lock', 'solgarden', %s)",
            (CAMERA, residence_id, LOCK, residence_id),
        )
        conn.execute(
            "INSERT INTO supervision_plans (residence_id, recorded_at, recorded_by, check_times)"
            " VALUES (%s, %s, 'planner', %s)",
            (residence_id, local(18), list(check_times)),
        )
    return residence_id


@pytest.fixture
def night(database_url: str) -> Night:
    """The residence, its midnight check seen at 00:02."""
    result = Night(database_url, seed_night(database_url))
    result.check_ended(local(0, 2), "seen")
    return result


def test_a_check_seen_in_its_window_is_done_without_an_alert(night: Night) -> None:
    """seen at 02:03 → done, with when, how long; nothing alerts after the window."""
    night.check_ended(local(2, 3), "seen")
    outcome = night.run(local(2, 30))
    assert (outcome.judged, outcome.opened, outcome.resolved) == (2, 0, 0)
    state = night.state()
    assert (state["state"], state["seen_at"], state["duration_s"]) == ("done", local(2, 3), 24.5)
    assert night.state(local(0))["state"] == "done"
    assert night.alerts() == []
    # Both settled by the camera: final, not judged again, their rows left as they are.
    decided = night.all("SELECT decided_at FROM supervision_checks ORDER BY planned_at")
    assert night.run(local(3)).judged == 0
    assert night.all("SELECT decided_at FROM supervision_checks ORDER BY planned_at") == decided


def test_a_gateway_leaves_a_check_alone_until_a_fact_or_the_clock_can_change_it(
    night: Night,
) -> None:
    """With the gateway's cache, a check is judged again only when its residence has a new fact,
    its next look has come, or its stored row is not the verdict remembered (another gateway
    wrote it); otherwise left alone, and what each pass writes is what a fresh judge writes."""
    plans = PlanCache()
    assert night.run(local(0, 30), plans).judged == 1  # 00:00 done: settled
    assert night.run(local(1, 50), plans).judged == 1  # 02:00's window opened: due until 02:00
    alone = night.run(local(1, 55), plans)
    assert (alone.judged, alone.unchanged) == (0, 1)
    night.check_ended(local(1, 56), "not_seen")  # a new fact
    assert night.run(local(1, 57), plans).judged == 1
    assert night.state()["state"] == "retry_due"
    assert night.run(local(2, 10, 59), plans).judged == 0  # the retry is due at 02:11
    at_retry = night.run(local(2, 11), plans)
    assert (at_retry.judged, at_retry.opened) == (1, 1)
    assert night.state()["state"] == "visit_needed"
    # Another writer's row: judged again, and put right without a second alert.
    night.execute("UPDATE supervision_checks SET state = 'due' WHERE planned_at = %s", (PLANNED,))
    rewritten = night.run(local(2, 12), plans)
    assert (rewritten.judged, rewritten.opened) == (1, 0)
    assert night.state()["state"] == "visit_needed"
    assert night.run(local(2, 13), plans).judged == 0


def test_a_missed_check_alerts_at_the_window_end_and_a_late_seen_resolves_it(night: Night) -> None:
    """No check: due until 02:15, then supervision_missed (high) on the camera; seen at 02:30
    makes it late and resolves the alert; both changes are in alert_changes."""
    assert night.run(local(2, 14, 59)).opened == 0
    assert night.state()["state"] == "due"
    assert night.run(local(2, 15)).opened == 1
    assert night.state()["state"] == "missed"
    [alert] = night.alerts()
    assert {k: alert[k] for k in ("device_id", "rule", "severity", "state", "reason")} == {
        "device_id": CAMERA,
        "rule": "supervision_missed",
        "severity": "high",
        "state": "open",
        "reason": "check planned 02:00 missed",
    }
    assert (alert["residence_id"], alert["planned_at"]) == (night.residence_id, PLANNED)

    night.check_ended(local(2, 30), "seen")
    outcome = night.run(local(2, 31))
    assert (outcome.opened, outcome.resolved) == (0, 1)
    assert night.state()["state"] == "late"
    [alert] = night.alerts()
    assert (alert["state"], alert["resolved_by"]) == ("resolved", "system")
    assert night.changes() == [(alert["id"], "alert.opened"), (alert["id"], "alert.resolved")]
    # The reasons as data too (issue 12), which the board says in the reader's language.
    reasons = night.one(
        "SELECT reason_code, reason_args, cleared_reason, cleared_reason_code,"
        " cleared_reason_args FROM alerts WHERE id = %s",
        (alert["id"],),
    )
    assert reasons == {
        "reason_code": "check_missed",
        "reason_args": {"planned": "02:00"},
        "cleared_reason": "seen late",
        "cleared_reason_code": "check_seen_late",
        "cleared_reason_args": {},
    }


def test_not_seen_then_no_retry_needs_a_visit_and_the_lock_proves_it(night: Night) -> None:
    """not_seen at 02:02 → retry due until 02:17, then physical_visit_needed (critical); the
    lock unlocked at 02:25 and locked at 02:27 is a visit: recorded, and the alert resolves."""
    night.check_ended(local(2, 2), "not_seen")
    assert night.run(local(2, 16)).opened == 0
    assert (night.state()["state"], night.state()["retry_at"]) == ("retry_due", local(2, 17))
    assert night.run(local(2, 17)).opened == 1
    [alert] = night.alerts()
    assert (alert["rule"], alert["severity"], alert["reason"]) == (
        "physical_visit_needed",
        "critical",
        "check planned 02:00: physical visit needed (no retry in time)",
    )
    night.event(LOCK, local(2, 25), "lock.unlocked", by="nattpatrull", method="app")
    night.event(LOCK, local(2, 27), "lock.locked", by="nattpatrull", method="app")
    outcome = night.run(local(2, 28))
    assert outcome.resolved == 1
    state = night.state()
    assert (state["state"], state["by_visit"], state["not_seen"]) == ("visited", True, True)
    assert (state["visited_at"], state["retry_at"]) == (local(2, 27), None)
    assert night.alerts()[0]["state"] == "resolved"
    assert night.all("SELECT visited_at, source, lock_device_id FROM physical_visits") == [
        {"visited_at": local(2, 27), "source": "lock", "lock_device_id": LOCK}
    ]
    assert [change for _, change in night.changes()] == ["alert.opened", "alert.resolved"]
    night.run(local(2, 29))  # the same lock events again: the same one visit
    assert len(night.all("SELECT id FROM physical_visits")) == 1


def test_a_camera_offline_at_the_planned_time_needs_a_visit_at_once(night: Night) -> None:
    """An open device_offline alert on the camera since 01:30: at 02:00 a visit is needed."""
    insert_alert(night.url, CAMERA, "device_offline", "critical", opened_at=local(1, 30))
    assert night.run(local(1, 59)).opened == 0
    assert night.run(local(2)).opened == 1
    state = night.state()
    assert (state["state"], state["camera_failed"]) == ("visit_needed", True)
    [alert] = night.alerts()
    assert alert["rule"] == "physical_visit_needed"
    assert alert["reason"] == (
        "check planned 02:00: physical visit needed (camera down at the planned time)"
    )


def test_a_camera_in_repair_at_the_planned_time_needs_a_visit_at_once(night: Night) -> None:
    """A maintenance window over the planned time silences the camera's own alerts, so the
    window itself says the camera checks nobody: a visit is needed at 02:00."""
    night.execute(
        "INSERT INTO device_maintenance (device_id, starts_at, ends_at, created_by)"
        " VALUES (%s, %s, %s, 'tekniker')",
        (CAMERA, local(1, 0), local(6, 0)),
    )
    assert night.run(local(2)).opened == 1
    state = night.state()
    assert (state["state"], state["camera_failed"]) == ("visit_needed", True)
    [alert] = night.alerts()
    assert alert["rule"] == "physical_visit_needed"


def test_an_unacknowledged_supervision_alert_escalates_once(night: Night) -> None:
    """supervision_missed (high) opened at 02:15 and left unacknowledged escalates after the
    site's escalation time (60 s here), once, with an alert.updated in the feed."""
    night.execute("UPDATE sites SET rule_settings = '{\"escalation_s\": 60}'")
    night.run(local(2, 15))
    [alert] = night.alerts()
    assert asyncio.run(_escalate(night.url, local(2, 15, 59))) == 0
    assert asyncio.run(_escalate(night.url, local(2, 16))) == 1
    assert asyncio.run(_escalate(night.url, local(2, 20))) == 0
    escalated = night.one("SELECT escalated_at FROM alerts WHERE id = %s", (alert["id"],))
    assert escalated["escalated_at"] == local(2, 16)
    assert night.changes() == [(alert["id"], "alert.opened"), (alert["id"], "alert.updated")]


async def _escalate(url: str, now: datetime) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        return await escalate_supervision(conn, now, default_s=300)


def test_an_absence_pauses_the_check_and_resolves_an_alert_opened_before_it(
    night: Night,
) -> None:
    """Missed at 02:15; an absence from 01:50 recorded at 02:20 → paused and the alert resolved;
    later passes open nothing."""
    assert night.run(local(2, 16)).opened == 1
    night.execute(
        "INSERT INTO absences (residence_id, reason, starts_at, created_by)"
        " VALUES (%s, 'hospital', %s, 'staff')",
        (night.residence_id, local(1, 50)),
    )
    outcome = night.run(local(2, 20))
    assert (outcome.opened, outcome.resolved) == (0, 1)
    assert night.state()["state"] == "paused"
    [alert] = night.alerts()
    assert (alert["state"], alert["resolved_by"]) == ("resolved", "system")
    assert night.run(local(3)).opened == 0
    assert [change for _, change in night.changes()] == ["alert.opened", "alert.resolved"]


def test_an_absence_recorded_before_means_no_alert_at_all(night: Night) -> None:
    """Away from 23:00 until 06:00: the 02:00 check is paused and never alerts."""
    night.execute(
        "INSERT INTO absences (residence_id, reason, starts_at, expected_end, created_by)"
        " VALUES (%s, 'travel', %s, %s, 'staff')",
        (night.residence_id, local(23), local(6)),
    )
    assert night.run(local(2, 30)).opened == 0
    assert night.state()["state"] == "paused"
    assert night.alerts() == []


def test_passes_run_again_or_at_once_open_nothing_twice(night: Night) -> None:
    """The same pass twice in a row, then two at once on two connections: one alert, one
    alert.opened, no error."""
    assert night.run(local(2, 16)).opened == 1
    assert night.run(local(2, 16)).opened == 0

    async def both() -> list[SupervisionOutcome]:
        return list(
            await asyncio.gather(_pass(night.url, local(2, 17)), _pass(night.url, local(2, 17)))
        )

    night.execute("UPDATE alerts SET state = 'resolved' WHERE planned_at IS NOT NULL")
    night.execute("DELETE FROM supervision_checks")  # as if never judged: both want to open
    outcomes = asyncio.run(both())
    assert sum(o.opened for o in outcomes) == 1
    assert [a["state"] for a in night.alerts()] == ["resolved", "open"]
    assert [change for _, change in night.changes()] == ["alert.opened", "alert.opened"]


def test_an_alert_resolved_by_staff_is_not_opened_again(night: Night) -> None:
    """Staff resolve the missed check's alert: the next passes leave it resolved."""
    assert night.run(local(2, 16)).opened == 1
    night.execute("UPDATE alerts SET state = 'resolved', resolved_by = 'anna'")
    assert night.run(local(2, 17)).opened == 0
    assert [a["resolved_by"] for a in night.alerts()] == ["anna"]


def test_a_residence_without_a_camera_is_judged_but_not_alerted(night: Night) -> None:
    """With its camera decommissioned the check is still missed, but no alert can name it."""
    night.execute("UPDATE devices SET status = 'decommissioned' WHERE id = %s", (CAMERA,))
    assert night.run(local(2, 16)).opened == 0
    assert night.state()["state"] == "missed"
    assert night.alerts() == []


def test_the_care_pass_runs_supervision(database_url: str) -> None:
    """The gateway's care pass (its clock, its lock) opens a check missed 20 minutes ago."""
    now = datetime.now(UTC)
    planned_local = (now - timedelta(minutes=20)).astimezone(STOCKHOLM).time()
    residence_id = seed_night(database_url, (planned_local.replace(second=0, microsecond=0),))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE supervision_plans SET recorded_at = %s", (now - timedelta(hours=2),))

    gateway = Gateway(Settings(database_url=database_url))

    async def watchdog() -> int:
        await gateway.pool.open()
        try:
            return await gateway._care_pass()
        finally:
            await gateway.pool.close()

    assert asyncio.run(watchdog()) >= 1
    # Its metrics say so: one pass timed, one supervision alert opened.
    sample = gateway.metrics.registry.get_sample_value
    assert sample("carewatch_supervision_pass_seconds_count") == 1
    assert sample("carewatch_supervision_alerts_total", {"change": "opened"}) == 1
    assert sample("carewatch_supervision_alerts_total", {"change": "resolved"}) == 0
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT rule FROM alerts WHERE residence_id = %s AND planned_at IS NOT NULL",
            (residence_id,),
        ).fetchall()
    assert rows == [("supervision_missed",)]
