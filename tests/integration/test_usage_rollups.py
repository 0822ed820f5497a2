"""The usage rollups kept by the gateway's store path, and the rebuild, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql

from api import usage_queries
from api.usage_report import UsageQuery, plan_period
from carewatch import admin
from carewatch.db import rollups
from carewatch.db.migrate import migrate
from carewatch.settings import Settings
from devices.catalog import DEFAULT_CATALOG
from devices.envelope import Event
from gateway import store
from gateway.device_state import fold_batch
from gateway.rule_states import RuleStates
from tests.fixtures.services import SeededRegistry
from tests.fixtures.usage_recount import device_days, device_days_from_events

# Stockholm is UTC+1 in January: 23:30 local on the 10th is 22:30Z, 00:30 local on the 11th
# is 23:30Z on the 10th.
T0 = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
_ids = itertools.count()

Rows = dict[tuple[Any, ...], tuple[int, float]]


def event(
    device: str, kind: str, at: datetime, type_: str, event_id: str = "", **data: Any
) -> Event:
    """An event as the envelope parser makes it."""
    return Event(
        device_id=device,
        kind=kind,
        event_id=event_id or f"e{next(_ids)}",
        time=at,
        received_at=datetime.now(UTC),
        type=type_,
        data=dict(data),
    )


async def _store_async(database_url: str, batch: Sequence[Event]) -> store.BatchOutcome:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await store.prepare_connection(conn)
        try:
            return await store.write_batch(
                conn,
                batch,
                fold_batch(batch, []),
                [],
                DEFAULT_CATALOG,
                battery_watch_below=30,
                rule_states=RuleStates(),
            )
        except psycopg.errors.DataError:
            # What gateway.ingest does: isolate the refused row.
            topics = {(e.device_id, e.event_id): ("t", b"") for e in batch}
            return await store.write_batch_row_by_row(
                conn,
                batch,
                [],
                topics,
                DEFAULT_CATALOG,
                RuleStates(),
            )


def store_batch(database_url: str, *batch: Event) -> store.BatchOutcome:
    """Store one batch through the gateway's store path."""
    return asyncio.run(_store_async(database_url, batch))


def table(database_url: str, name: str) -> Rows:
    """A rollup table as {(key..., type): (events, duration_s)}, rows that count anything."""
    key = {
        "usage_device_hourly": "device_id, bucket",
        "usage_site_hourly": "site_id, bucket",
        "usage_site_daily": "site_id, day",
        "usage_device_daily": "device_id, day",
    }[name]
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT {}, type, events, duration_s FROM {} WHERE events <> 0 OR duration_s <> 0"
            ).format(sql.SQL(key), sql.Identifier(name))
        ).fetchall()
    return {tuple(r[:3]): (r[3], round(r[4], 6)) for r in rows}


def all_tables(database_url: str) -> dict[str, Rows]:
    return {name: table(database_url, name) for name in rollups.ROLLUP_TABLES}


def rebuild(database_url: str, since: datetime, until: datetime, **kw: Any) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rollups.rebuild(conn, since, until, **kw)


def hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def test_counts_durations_and_a_resend_once(database_url: str, seeded: SeededRegistry) -> None:
    """Events count by type and hour, durations add up, heartbeats are not rolled up, and a
    resent event (same id and time, in a later batch) is counted once."""
    cam = seeded.device("safety_camera")
    check = event(
        cam,
        "safety_camera",
        T0 + timedelta(minutes=5),
        "camera.check_ended",
        by="s1",
        duration_s=40,
        outcome="seen",
    )
    store_batch(
        database_url,
        check,
        event(cam, "safety_camera", T0 + timedelta(minutes=6), "heartbeat", battery=90),
        event(
            cam,
            "safety_camera",
            T0 + timedelta(minutes=30),
            "camera.check_ended",
            by="s1",
            duration_s=20.5,
            outcome="seen",
        ),
        event(cam, "safety_camera", T0 + timedelta(minutes=31), "camera.stream_lost"),
    )
    outcome = store_batch(database_url, check)
    assert outcome.duplicates == 1
    assert table(database_url, "usage_device_hourly") == {
        (cam, T0, "camera.check_ended"): (2, 60.5),
        (cam, T0, "camera.stream_lost"): (1, 0.0),
    }
    assert table(database_url, "usage_site_hourly") == {
        (seeded.site_id, T0, "camera.check_ended"): (2, 60.5),
        (seeded.site_id, T0, "camera.stream_lost"): (1, 0.0),
    }
    assert table(database_url, "usage_site_daily") == {
        (seeded.site_id, T0.date(), "camera.check_ended"): (2, 60.5),
        (seeded.site_id, T0.date(), "camera.stream_lost"): (1, 0.0),
    }


def test_late_event_lands_in_its_own_bucket_and_local_day(
    database_url: str, seeded: SeededRegistry
) -> None:
    """An event hours old lands in the hour of its device time, and the daily row is the
    site's local date (Europe/Stockholm), not the UTC date."""
    alarm = seeded.device("alarm_button")
    late_evening = datetime(2026, 1, 10, 22, 30, tzinfo=UTC)  # 23:30 local, the 10th
    after_midnight = datetime(2026, 1, 10, 23, 30, tzinfo=UTC)  # 00:30 local, the 11th
    store_batch(database_url, event(alarm, "alarm_button", after_midnight, "alarm.pressed"))
    store_batch(database_url, event(alarm, "alarm_button", late_evening, "alarm.pressed"))
    store_batch(
        database_url,
        event(alarm, "alarm_button", after_midnight - timedelta(hours=5), "alarm.pressed"),
    )
    assert table(database_url, "usage_device_hourly") == {
        (alarm, hour(late_evening), "alarm.pressed"): (1, 0.0),
        (alarm, hour(after_midnight), "alarm.pressed"): (1, 0.0),
        (alarm, hour(after_midnight - timedelta(hours=5)), "alarm.pressed"): (1, 0.0),
    }
    site = seeded.site_id
    assert table(database_url, "usage_site_daily") == {
        (site, late_evening.date(), "alarm.pressed"): (2, 0.0),
        (site, (after_midnight + timedelta(days=1)).date(), "alarm.pressed"): (1, 0.0),
    }


def test_lock_visits(database_url: str, seeded: SeededRegistry) -> None:
    """A visit split over two batches counts once with its duration; a repeated lock.locked is
    no second visit; an unlock and lock in one batch is a visit; over 12 h is not one."""
    lock = seeded.device("door_lock")

    def at(minutes: float) -> datetime:
        return T0 + timedelta(minutes=minutes)

    store_batch(
        database_url, event(lock, "door_lock", at(0), "lock.unlocked", by="s", method="app")
    )
    store_batch(database_url, event(lock, "door_lock", at(20), "lock.locked", by="s", method="app"))
    # zigbee2mqtt repeats the locked state
    store_batch(database_url, event(lock, "door_lock", at(50), "lock.locked", by="s", method="app"))
    store_batch(
        database_url,
        event(lock, "door_lock", at(70), "lock.unlocked", by="s", method="app"),
        event(lock, "door_lock", at(75), "lock.locked", by="s", method="app"),
    )
    # a forgotten door: locked 13 h later, not a visit
    store_batch(
        database_url, event(lock, "door_lock", at(90), "lock.unlocked", by="s", method="app")
    )
    store_batch(
        database_url,
        event(lock, "door_lock", at(90 + 13 * 60), "lock.locked", by="s", method="app"),
    )
    rows = table(database_url, "usage_device_hourly")
    assert rows[(lock, T0, rollups.LOCK_VISIT)] == (1, 1200.0)
    assert rows[(lock, T0 + timedelta(hours=1), rollups.LOCK_VISIT)] == (1, 300.0)
    assert sorted(k for k in rows if k[2] == rollups.LOCK_VISIT) == [
        (lock, T0, rollups.LOCK_VISIT),
        (lock, T0 + timedelta(hours=1), rollups.LOCK_VISIT),
    ]
    assert rows[(lock, T0, "lock.locked")] == (2, 0.0)
    assert rows[(lock, T0 + timedelta(hours=1), "lock.unlocked")] == (2, 0.0)


def test_lock_events_out_of_order(database_url: str, seeded: SeededRegistry) -> None:
    """A lock before its unlock, and a late lock inside a stored visit, end as the rebuild
    counts them: the visit follows device time, not arrival."""
    lock = seeded.device("door_lock")

    def at(minutes: float) -> datetime:
        return T0 + timedelta(minutes=minutes)

    # the lock arrives first, its unlock later
    store_batch(database_url, event(lock, "door_lock", at(30), "lock.locked", by="s", method="app"))
    store_batch(
        database_url, event(lock, "door_lock", at(5), "lock.unlocked", by="s", method="app")
    )
    # a stored visit 120 -> 160, then a late lock at 130 that ends it earlier
    store_batch(
        database_url, event(lock, "door_lock", at(120), "lock.unlocked", by="s", method="app")
    )
    store_batch(
        database_url, event(lock, "door_lock", at(160), "lock.locked", by="s", method="app")
    )
    store_batch(
        database_url, event(lock, "door_lock", at(130), "lock.locked", by="s", method="app")
    )
    rows = table(database_url, "usage_device_hourly")
    assert rows[(lock, T0, rollups.LOCK_VISIT)] == (1, 25 * 60.0)
    assert rows[(lock, T0 + timedelta(hours=2), rollups.LOCK_VISIT)] == (1, 10 * 60.0)
    incremental = all_tables(database_url)
    rebuild(database_url, T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert all_tables(database_url) == incremental


def test_battery_replacements(database_url: str, seeded: SeededRegistry) -> None:
    """A heartbeat 30+ points above the previous level is a replacement, whether the previous
    one is in an earlier batch (devices.battery) or the same batch; drift is not."""
    robot = seeded.device("companion_robot")

    def hb(minutes: float, level: int) -> Event:
        return event(
            robot, "companion_robot", T0 + timedelta(minutes=minutes), "heartbeat", battery=level
        )

    store_batch(database_url, hb(0, 35))
    store_batch(database_url, hb(15, 33))
    store_batch(database_url, hb(30, 97))  # replaced: 33 -> 97
    store_batch(database_url, hb(45, 96), hb(60, 12), hb(75, 95), hb(90, 94))  # 12 -> 95
    store_batch(database_url, hb(105, 100))  # 94 -> 100: drift
    rows = table(database_url, "usage_device_hourly")
    assert {k: v for k, v in rows.items() if k[2] == rollups.BATTERY_REPLACED} == {
        (robot, T0, rollups.BATTERY_REPLACED): (1, 0.0),
        (robot, T0 + timedelta(hours=1), rollups.BATTERY_REPLACED): (1, 0.0),
    }
    assert (seeded.site_id, T0.date(), rollups.BATTERY_REPLACED) in table(
        database_url, "usage_site_daily"
    )


def test_row_by_row_path_rolls_up_too(database_url: str, seeded: SeededRegistry) -> None:
    """A batch with a row PostgreSQL refuses is stored row by row, and the others are rolled
    up exactly as the batch path would."""
    robot = seeded.device("companion_robot")
    lock = seeded.device("door_lock")
    refused = event(robot, "companion_robot", T0, "robot.fault", code="a\u0000b")
    outcome = store_batch(
        database_url,
        event(robot, "companion_robot", T0, "heartbeat", battery=20),
        event(robot, "companion_robot", T0 + timedelta(minutes=1), "heartbeat", battery=99),
        event(robot, "companion_robot", T0 + timedelta(minutes=2), "heartbeat", battery=98),
        refused,
        event(
            robot,
            "companion_robot",
            T0 + timedelta(minutes=3),
            "robot.interaction",
            mode="touch",
            duration_s=120,
        ),
        event(lock, "door_lock", T0 + timedelta(minutes=4), "lock.unlocked", by="s", method="app"),
        event(lock, "door_lock", T0 + timedelta(minutes=9), "lock.locked", by="s", method="app"),
    )
    assert len(outcome.dead_letters) == 1
    assert table(database_url, "usage_device_hourly") == {
        (robot, T0, "robot.interaction"): (1, 120.0),
        (robot, T0, rollups.BATTERY_REPLACED): (1, 0.0),
        (lock, T0, "lock.unlocked"): (1, 0.0),
        (lock, T0, "lock.locked"): (1, 0.0),
        (lock, T0, rollups.LOCK_VISIT): (1, 300.0),
    }


# Two days over the change to summer time, every 15 minutes (local midnights inside).
TWO_DAYS_FROM = datetime(2026, 3, 28, 20, 0, tzinfo=UTC)


def store_two_days(database_url: str, seeded: SeededRegistry) -> None:
    """Heartbeats with two battery replacements, camera checks, lock visits (split over
    batches anywhere), robot interactions and alarms, stored by the gateway's path."""
    cam, lock, robot, alarm = (
        seeded.device(k) for k in ("safety_camera", "door_lock", "companion_robot", "alarm_button")
    )
    start = TWO_DAYS_FROM
    batch: list[Event] = []
    level = 60
    for i in range(48 * 4):  # two days, every 15 minutes
        at = start + timedelta(minutes=15 * i)
        level = 100 if i % 70 == 69 else max(level - 1, 0)
        batch.append(event(robot, "companion_robot", at, "heartbeat", battery=level))
        if i % 3 == 0:
            batch.append(
                event(
                    cam,
                    "safety_camera",
                    at,
                    "camera.check_ended",
                    by="s",
                    duration_s=30 + i % 7,
                    outcome="seen",
                )
            )
        if i % 5 == 0:
            batch.append(event(lock, "door_lock", at, "lock.unlocked", by="s", method="app"))
            batch.append(
                event(
                    lock,
                    "door_lock",
                    at + timedelta(minutes=7 + i % 4),
                    "lock.locked",
                    by="s",
                    method="app",
                )
            )
        if i % 11 == 0:
            batch.append(
                event(
                    robot,
                    "companion_robot",
                    at,
                    "robot.interaction",
                    mode="voice",
                    duration_s=60 + i,
                )
            )
            batch.append(event(alarm, "alarm_button", at, "alarm.pressed"))
    for n in range(0, len(batch), 37):  # batches that split visits anywhere
        store_batch(database_url, *batch[n : n + 37])


def test_rebuild_equals_incremental(database_url: str, seeded: SeededRegistry) -> None:
    """Rebuilding a range from events gives exactly what the gateway kept incrementally, in
    any chunk size, and rows the gateway never wrote (a wiped table) come back. The gateway's
    device days are the events recounted from scratch."""
    lock, start = seeded.device("door_lock"), TWO_DAYS_FROM
    store_two_days(database_url, seeded)
    incremental = all_tables(database_url)
    recount = device_days_from_events(database_url)
    assert {k[2] for k in recount} >= {rollups.LOCK_VISIT, rollups.BATTERY_REPLACED}
    assert len({k[1] for k in recount}) == 3  # three local days of Stockholm
    assert device_days(database_url) == recount
    assert incremental["usage_device_hourly"][(lock, start, rollups.LOCK_VISIT)][0] == 1
    assert (
        sum(
            v[0]
            for k, v in incremental["usage_device_hourly"].items()
            if k[2] == rollups.BATTERY_REPLACED
        )
        == 2
    )
    for chunk in (timedelta(hours=5), timedelta(days=1)):
        with psycopg.connect(database_url, autocommit=True) as conn:
            for name in rollups.ROLLUP_TABLES:
                conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(name)))
        rebuild(database_url, start - timedelta(hours=3), start + timedelta(days=3), chunk=chunk)
        assert all_tables(database_url) == incremental


def test_rebuild_of_part_of_a_range_leaves_the_rest(
    database_url: str, seeded: SeededRegistry
) -> None:
    """Rebuilding one hour recomputes that hour and its local day only."""
    alarm = seeded.device("alarm_button")
    store_batch(
        database_url,
        event(alarm, "alarm_button", T0, "alarm.pressed"),
        event(alarm, "alarm_button", T0 + timedelta(days=2), "alarm.pressed"),
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        # A drifted table: wrong counts everywhere.
        conn.execute("UPDATE usage_device_hourly SET events = 7")
        conn.execute("UPDATE usage_site_daily SET events = 7")
    rebuild(database_url, T0, T0 + timedelta(minutes=1))
    device = table(database_url, "usage_device_hourly")
    assert device[(alarm, T0, "alarm.pressed")] == (1, 0.0)
    assert device[(alarm, T0 + timedelta(days=2), "alarm.pressed")] == (7, 0.0)
    daily = table(database_url, "usage_site_daily")
    assert daily[(seeded.site_id, T0.date(), "alarm.pressed")] == (1, 0.0)
    assert daily[(seeded.site_id, (T0 + timedelta(days=2)).date(), "alarm.pressed")] == (7, 0.0)


def test_rebuild_refuses_a_bad_range(database_url: str) -> None:
    """An empty or naive range is a clear error, not a silent no-op."""
    with pytest.raises(ValueError, match="must be after"):
        rebuild(database_url, T0, T0)
    with pytest.raises(ValueError, match="time zone"):
        rebuild(database_url, T0.replace(tzinfo=None), T0 + timedelta(hours=1))


def test_site_in_another_time_zone(database_url: str, seeded: SeededRegistry) -> None:
    """The daily row is the date in the device's own site's time zone, in the gateway's
    rollup and in the rebuild's."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        admin.ensure_site(conn, "site-nyc", seeded.org_id, "New York", "America/New_York")
        admin.add_devices_bulk(conn, [("nyc-alarm-1", "alarm_button", "site-nyc", "Apt 1")])
    at = datetime(2026, 1, 11, 3, 0, tzinfo=UTC)  # 22:00 on the 10th in New York
    store_batch(database_url, event("nyc-alarm-1", "alarm_button", at, "alarm.pressed"))
    assert table(database_url, "usage_site_daily") == {
        ("site-nyc", (at - timedelta(days=1)).date(), "alarm.pressed"): (1, 0.0)
    }
    assert table(database_url, "usage_device_daily") == {
        ("nyc-alarm-1", (at - timedelta(days=1)).date(), "alarm.pressed"): (1, 0.0)
    }
    # The rebuild of an hour around it recomputes New York's whole local day.
    incremental = all_tables(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE usage_site_daily SET events = 9")
        conn.execute("UPDATE usage_device_daily SET events = 9")
    rebuild(database_url, at, at + timedelta(hours=1))
    assert all_tables(database_url) == incremental


def test_migration_fills_device_days_from_the_hourly_rollup(
    database_url: str, seeded: SeededRegistry
) -> None:
    """Migration 0018 on an installation of the release before: usage_device_daily is filled
    from usage_device_hourly, in each device's site's time zone, and equals the events
    recounted - also where the events are gone already (the rollups outlive them)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        admin.ensure_site(conn, "site-nyc", seeded.org_id, "New York", "America/New_York")
        admin.add_devices_bulk(conn, [("nyc-alarm-1", "alarm_button", "site-nyc", "Apt 1")])
    store_two_days(database_url, seeded)
    late_evening = datetime(2026, 3, 29, 3, 30, tzinfo=UTC)  # 23:30 on the 28th in New York
    store_batch(database_url, event("nyc-alarm-1", "alarm_button", late_evening, "alarm.pressed"))
    recount = device_days_from_events(database_url)
    assert ("nyc-alarm-1", late_evening.date() - timedelta(days=1), "alarm.pressed") in recount
    with psycopg.connect(database_url, autocommit=True) as conn:
        # The release before: no table, no record of 0018; and the events past retention.
        conn.execute("DROP TABLE usage_device_daily")
        conn.execute("DELETE FROM schema_migrations WHERE version = '0018'")
        conn.execute("DELETE FROM events")
    assert migrate(database_url, retention_days=Settings().retention_days) == ["0018"]
    assert device_days(database_url) == recount


STOCKHOLM = ZoneInfo("Europe/Stockholm")


def robot_seconds(database_url: str, site_ids: list[str], query: UsageQuery) -> dict[str, float]:
    """The usage report's interaction seconds per robot, for ``query`` in Stockholm time."""
    period = plan_period(query, "Europe/Stockholm", T0)

    async def read() -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            return await usage_queries.robot_minutes(conn, site_ids, period)

    return {r["device_id"]: r["duration_s"] for r in asyncio.run(read())}


def test_robot_minutes_read_device_days_only_in_the_reports_time_zone(
    database_url: str, seeded: SeededRegistry
) -> None:
    """The usage report's minutes per robot by day and week (from the daily rollup) are what
    the hourly one gives for the same period: for a robot of the report's time zone, whose
    local days are the report's, and for one in New York, whose are not (its hours are read)."""
    robot = seeded.device("companion_robot")
    with psycopg.connect(database_url, autocommit=True) as conn:
        admin.ensure_site(conn, "site-nyc", seeded.org_id, "New York", "America/New_York")
        admin.add_devices_bulk(conn, [("nyc-robot-1", "companion_robot", "site-nyc", "Apt 1")])
        conn.execute("UPDATE devices SET created_at = '2025-12-01T00:00Z'")
    for device, at, seconds in (
        # 04:30 on the 11th in Stockholm, 22:30 on the 10th in New York
        ("nyc-robot-1", datetime(2026, 1, 11, 3, 30, tzinfo=UTC), 300),
        ("nyc-robot-1", datetime(2026, 1, 10, 12, 0, tzinfo=UTC), 7),
        (robot, datetime(2026, 1, 11, 3, 30, tzinfo=UTC), 120),
        (robot, datetime(2026, 1, 10, 22, 59, tzinfo=UTC), 11),  # 23:59 on the 10th
    ):
        store_batch(
            database_url,
            event(device, "companion_robot", at, "robot.interaction", mode="voice",
                  duration_s=seconds),
        )  # fmt: skip
    sites = [seeded.site_id, "site-nyc"]
    since, until = datetime(2026, 1, 11, tzinfo=STOCKHOLM), datetime(2026, 1, 12, tzinfo=STOCKHOLM)
    by_day = robot_seconds(database_url, sites, UsageQuery(since=since, until=until, bucket="day"))
    by_hour = robot_seconds(
        database_url, sites, UsageQuery(since=since, until=until, bucket="hour")
    )
    assert by_day[robot] == 120.0
    assert by_day["nyc-robot-1"] == 300.0
    assert by_day == by_hour
    week = robot_seconds(
        database_url, sites, UsageQuery(since=since, until=until + timedelta(days=1), bucket="week")
    )
    assert (week[robot], week["nyc-robot-1"]) == (131.0, 307.0)
