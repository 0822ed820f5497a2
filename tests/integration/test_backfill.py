"""``carewatch simulate --backfill``: history straight into PostgreSQL, with its rollups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from app import cli
from carewatch.db import rollups

UNTIL = "2026-03-30T00:00:00+00:00"  # two days over the change to summer time


def run(database_url: str, *args: str) -> int:
    return cli.main(["simulate", "--database-url", database_url, *args])


def snapshot(database_url: str) -> dict[str, set[tuple[object, ...]]]:
    keys = {
        "usage_device_hourly": "device_id, bucket",
        "usage_site_hourly": "site_id, bucket",
        "usage_site_daily": "site_id, day",
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
    alerts resolved, devices dated back, and rollups equal to a fresh rebuild."""
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
        open_alerts = conn.execute(
            "SELECT count(*) FROM alerts WHERE state <> 'resolved'"
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
