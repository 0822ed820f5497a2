"""``carewatch simulate --backfill``: history straight into PostgreSQL, with its rollups and its
nights of camera supervision."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql

from app import cli
from carewatch.db import rollups
from dashboards.kit import strings
from devices.reasons import Reason, ReasonCode
from gateway.supervision import supervision_pass
from tests.fixtures.usage_recount import device_days, device_days_from_events

UNTIL = "2026-03-30T00:00:00+00:00"  # two days over the change to summer time


def run(database_url: str, *args: str) -> int:
    return cli.main(["simulate", "--database-url", database_url, *args])


def snapshot(database_url: str) -> dict[str, set[tuple[object, ...]]]:
    keys = {
        "usage_device_hourly": "device_id, bucket",
        "usage_site_hourly": "site_id, bucket",
        "usage_site_daily": "site_id, day",
        "usage_device_daily": "device_id, day",
    }
    with psycopg.connect(database_url) as conn:
        return {
            # rounded: float sums depend on the order they were added in
            name: set(
                conn.execute(
                    sql.SQL(
                        "SELECT {}, type, events, round(duration_s::numeric, 6) FROM {}"
                        " WHERE events <> 0"
                    ).format(sql.SQL(key), sql.Identifier(name))
                )
            )
            for name, key in keys.items()
        }


def test_backfill_writes_history_and_rollups(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two days of 20 devices: events of every kind, rhythm and battery in the database,
    alerts resolved, devices dated back, and rollups equal to a fresh rebuild (the device days
    also to the events recounted)."""
    code = run(database_url, "--backfill", "2d", "--devices", "20", "--until", UNTIL,
               "--site", "bf-site", "--id-prefix", "bf")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "backfilled" in capsys.readouterr().out
    start = datetime(2026, 3, 28, tzinfo=UTC)
    with psycopg.connect(database_url) as conn:
        counts: dict[str, int] = {
            r[0]: r[1] for r in conn.execute("SELECT type, count(*) FROM events GROUP BY type")
        }
        span = conn.execute("SELECT min(time), max(time) FROM events").fetchone()
        devices = conn.execute(
            "SELECT count(*), max(created_at) FROM devices WHERE site_id = 'bf-site'"
        ).fetchone()
        # The device rules' alerts of the past; a supervision alert of the last hours may be open.
        open_alerts = conn.execute(
            "SELECT count(*) FROM alerts WHERE state <> 'resolved' AND planned_at IS NULL"
        ).fetchone()
        batteries = conn.execute(
            "SELECT count(*) FROM devices WHERE site_id = 'bf-site' AND battery IS NOT NULL"
        ).fetchone()
        visits = conn.execute(
            "SELECT sum(events), sum(duration_s) / sum(events) FROM usage_device_hourly"
            " WHERE type = 'lock.visit'"
        ).fetchone()
    assert span is not None
    assert devices is not None
    assert open_alerts is not None
    assert start <= span[0]
    assert span[1] < datetime.fromisoformat(UNTIL)
    assert devices == (20, start)
    assert open_alerts == (0,)
    assert batteries is not None
    assert batteries[0] > 0
    # Heartbeats every 15 min (alarm buttons hourly): 20 devices x 2 days.
    assert 2500 < counts["heartbeat"] < 20 * 2 * 96
    for event_type in ("lock.unlocked", "lock.locked", "camera.check_ended", "robot.interaction"):
        assert counts.get(event_type, 0) > 0, event_type
    # Home-care visits: door unlocked while the staff are in, 5 to 40 minutes (now and then a
    # forgotten door locked from the app later).
    assert visits is not None
    assert visits[0] > 0
    assert 5 * 60 <= visits[1] <= 40 * 60
    backfilled = snapshot(database_url)
    assert backfilled["usage_site_daily"]
    assert device_days(database_url) == device_days_from_events(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name in rollups.ROLLUP_TABLES:
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(name)))
        rollups.rebuild(conn, start, datetime.fromisoformat(UNTIL))
    assert snapshot(database_url) == backfilled


def test_backfill_is_deterministic_and_refuses_a_second_run(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The same seed and period give the same events; a second run into the same period is
    refused with a clear message instead of failing on duplicates."""
    args = ("--backfill", "12h", "--devices", "8", "--until", UNTIL, "--seed", "7")
    assert run(database_url, *args) == 0
    with psycopg.connect(database_url) as conn:
        first = conn.execute(
            "SELECT device_id, event_id, time, type, data::text FROM events ORDER BY 1, 2"
        ).fetchall()
        conn.execute("DELETE FROM events")
        conn.execute("DELETE FROM alerts")
        conn.commit()
    assert run(database_url, *args) == 0
    with psycopg.connect(database_url) as conn:
        second = conn.execute(
            "SELECT device_id, event_id, time, type, data::text FROM events ORDER BY 1, 2"
        ).fetchall()
    assert first == second
    assert len(first) > 300
    assert run(database_url, *args) == 2
    assert "already have events" in caplog.text


@pytest.mark.parametrize("duration", ["365", "0d", "5w", "1.5d", "d"])
def test_backfill_refuses_a_bad_duration(
    database_url: str, duration: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A duration that is not N days or N hours is refused before anything is written."""
    assert run(database_url, "--backfill", duration, "--devices", "4") == 2
    assert "expected a duration" in caplog.text
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM devices").fetchone() == (0,)


def test_usage_rebuild_command(
    database_url: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """`carewatch usage rebuild` rebuilds a period, and refuses an inverted one and one past
    the events' retention (whose rollups could not be recomputed)."""
    # Recent, so that the period stays inside the retention whenever the test runs.
    until = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    since = until - timedelta(hours=6)
    assert (
        run(database_url, "--backfill", "6h", "--devices", "8", "--until", until.isoformat()) == 0
    )
    before = snapshot(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE usage_site_hourly SET events = events + 5")
    code = cli.main(["usage", "rebuild", "--database-url", database_url,
                     "--since", since.isoformat(), "--until", until.isoformat()])  # fmt: skip
    assert code == 0
    assert "usage rebuild: done" in capsys.readouterr().out
    assert snapshot(database_url) == before
    code = cli.main(["usage", "rebuild", "--database-url", database_url,
                     "--since", until.isoformat(), "--until", since.isoformat()])  # fmt: skip
    assert code == 2
    assert "must be after" in caplog.text
    code = cli.main(["usage", "rebuild", "--database-url", database_url,
                     "--since", "2001-01-01", "--until", until.isoformat()])  # fmt: skip
    assert code == 2
    assert "retention horizon" in caplog.text


def supervision_rows(database_url: str) -> set[tuple[object, ...]]:
    with psycopg.connect(database_url) as conn:
        return set(
            conn.execute(
                "SELECT residence_id, planned_at, night, state, seen_at, round(duration_s),"
                " not_seen, visit_needed, by_visit, camera_failed FROM supervision_checks"
            )
        )


def test_backfill_creates_residences_plans_and_nights(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two weeks of 60 devices: the apartments become residences with their devices, every one
    with a camera a plan (a few changed), two absences; the nights' figures have checks done,
    late, missed, not seen and retried, visits needed, checks replaced by visits and paused
    ones; visits recorded by staff and proved by locks; supervision alerts resolved as the
    gateway would. The gateway's own pass, run at the history's end, agrees with every stored
    verdict and opens or resolves nothing."""
    until = datetime.fromisoformat(UNTIL)
    code = run(database_url, "--backfill", "14d", "--devices", "60", "--until", UNTIL,
               "--site", "night-site")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "planned checks of 15 residence(s) judged" in capsys.readouterr().out
    with psycopg.connect(database_url) as conn:
        residences = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE label ~ '^Lgh [0-9]+$') FROM residences"
            " WHERE site_id = 'night-site'"
        ).fetchone()
        unplaced = conn.execute(
            "SELECT kind, count(*) FROM devices WHERE residence_id IS NULL GROUP BY kind"
        ).fetchall()
        plans = conn.execute(
            "SELECT count(DISTINCT residence_id), count(*),"
            " min(cardinality(check_times)), max(cardinality(check_times))"
            " FROM supervision_plans"
        ).fetchone()
        cameras_unplanned = conn.execute(
            "SELECT count(*) FROM devices d WHERE d.kind = 'safety_camera' AND NOT EXISTS"
            " (SELECT 1 FROM supervision_plans p WHERE p.residence_id = d.residence_id)"
        ).fetchone()
        absences = conn.execute("SELECT reason FROM absences ORDER BY starts_at").fetchall()
        figures = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE state = 'done'),"
            " count(*) FILTER (WHERE state = 'late'), count(*) FILTER (WHERE state = 'missed'),"
            " count(*) FILTER (WHERE not_seen),"
            " count(*) FILTER (WHERE not_seen AND state = 'done'),"
            " count(*) FILTER (WHERE visit_needed),"
            " count(*) FILTER (WHERE state = 'visited' AND camera_failed),"
            " count(*) FILTER (WHERE state = 'paused') FROM supervision_checks"
        ).fetchone()
        visits: dict[str, int] = dict(
            conn.execute("SELECT source, count(*) FROM physical_visits GROUP BY source").fetchall()
        )
        alerts = conn.execute(
            "SELECT rule, state, resolved_by = 'system', opened_at FROM alerts"
            " WHERE planned_at IS NOT NULL"
        ).fetchall()
        check_hours = {
            hour
            for (hour,) in conn.execute(
                "SELECT DISTINCT extract(hour FROM time AT TIME ZONE 'Europe/Stockholm')::int"
                " FROM events WHERE type = 'camera.check_ended'"
            )
        }
    assert residences == (27, 27)  # 60 devices: 27 locks, 15 cameras, ... in 27 apartments
    assert unplaced == [("door_lock", 5)]  # one camera apartment in three has a key box
    assert plans is not None
    assert plans[0] == 15
    assert plans[1] > plans[0]  # a plan changed part-way
    assert (plans[2], plans[3]) == (1, 3)
    assert cameras_unplanned == (0,)
    assert absences == [("hospital",), ("travel",)]
    assert figures is not None
    planned, done, late, missed, not_seen, retried, visits_needed, replaced, paused = figures
    assert done > 0.7 * planned
    for figure in (late, not_seen, retried, visits_needed, replaced, paused):
        assert figure > 0, figures
    # Missed checks were alerted; by the rules (devices.supervision.judge) a later seen -- the
    # next planned check's -- or any visit from the window on settles them as late or visited
    # before their night is over, so few stay missed.
    missed_alerts = [a for a in alerts if a[0] == "supervision_missed"]
    assert len(missed_alerts) > late >= missed
    assert visits.get("staff", 0) + visits.get("lock", 0) > 0
    assert visits.get("lock", 0) > 0
    rules = {(rule, state) for rule, state, _, _ in alerts}
    assert {("supervision_missed", "resolved"), ("physical_visit_needed", "resolved")} <= rules
    assert any(by_system for _, _, by_system, _ in alerts)  # seen late, or visited
    assert all(opened < until for *_, opened in alerts)
    # Checks only at the planned times (22:00 to 05:00, late ones up to an hour after).
    assert check_hours <= {21, 22, 23, 0, 1, 2, 3, 4, 5, 6}

    before = supervision_rows(database_url)

    async def gateway_pass() -> tuple[int, int, int]:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            outcome = await supervision_pass(conn, until)
        return outcome.judged, outcome.opened, outcome.resolved

    judged, opened, resolved = asyncio.run(gateway_pass())
    assert judged > 0  # the last night's checks not yet settled
    assert (opened, resolved) == (0, 0)
    assert supervision_rows(database_url) == before


def test_backfill_ending_in_a_check_window_leaves_it_open(database_url: str) -> None:
    """A history that ends at 02:05 local time: the 02:00 checks are judged as the gateway
    would then (some done, some still due), no later check is judged yet, and the gateway
    carries on from there."""
    until = datetime(2026, 11, 24, 2, 5, tzinfo=ZoneInfo("Europe/Stockholm"))
    code = run(database_url, "--backfill", "3d", "--devices", "80", "--until", until.isoformat(),
               "--site", "late-site", "--seed", "3")  # fmt: skip
    assert code == 0
    with psycopg.connect(database_url) as conn:
        latest = conn.execute("SELECT max(planned_at) FROM supervision_checks").fetchone()
        states = {
            state
            for (state,) in conn.execute(
                "SELECT state FROM supervision_checks WHERE planned_at = %s",
                (until.replace(minute=0),),
            )
        }
    assert latest == (until.replace(minute=0),)
    assert {"due", "done"} <= states <= {"due", "done", "retry_due", "visit_needed", "paused"}


def test_backfilled_alerts_give_their_reasons_as_codes_the_swedish_page_says(
    database_url: str,
) -> None:
    """Every alert the backfill writes -- device_offline, alarm_pressed, the nights' -- has its
    reason, and each clear its reason, as a code with its arguments (as the gateway writes
    them), never only English: the Swedish board has words for each, and the English column is
    the code's own rendering."""
    exit_code = run(database_url, "--backfill", "7d", "--devices", "200", "--until", UNTIL,
                    "--site", "sv-site")  # fmt: skip
    assert exit_code == 0
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT rule, reason, reason_code, reason_args, cleared_at IS NOT NULL,"
            " cleared_reason, cleared_reason_code, cleared_reason_args FROM alerts"
        ).fetchall()
    swedish = strings()["sv"]["reason"]
    spoken: set[tuple[str, str]] = set()
    for rule, text, code, args, cleared, cleared_text, cleared_code, cleared_args in rows:
        for said, stored_code, stored_args in (
            (text, code, args),
            (cleared_text, cleared_code, cleared_args),
        ):
            if said is None and stored_code is None:
                continue
            assert stored_code is not None, (rule, said)
            reason = Reason.from_record({"code": stored_code, "args": stored_args})
            assert reason.code is not ReasonCode.TEXT, (rule, said)  # the page's words, not ours
            assert stored_code in swedish, stored_code
            assert reason.text == said
            spoken.add((rule, stored_code))
        assert code is not None, rule
        assert cleared == (cleared_code is not None), (rule, cleared_text)
    assert {
        ("device_offline", "silent"),
        ("device_offline", "sending_again"),
        ("alarm_pressed", "alarm_pressed"),
        ("alarm_pressed", "cancelled_by_resident"),
        ("supervision_missed", "check_missed"),
        ("supervision_missed", "check_seen_late"),
    } <= spoken, spoken
    assert any(rule == "physical_visit_needed" for rule, _ in spoken), spoken
