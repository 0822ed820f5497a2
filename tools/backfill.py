"""``carewatch simulate --backfill 365d``: a fleet's history written straight into the database.

The rows come from :mod:`devices.history` (pure, seeded), one UTC day at a time, and go in by
``COPY ... FROM STDIN`` in COPY's text format built in one piece per day (psycopg's
``write_row`` would spend more time than PostgreSQL does). Days are committed one by one, in
time order, so the BRIN index of ``events.time`` stays useful. Then the alerts of the period
(device_offline for the long outages, alarm_pressed for the presses, all acknowledged and
resolved; every alert, the nights' too, with its reasons as codes as the gateway writes them,
:mod:`devices.reasons`), the devices' last heartbeat and battery, and finally the usage
rollups of the whole period, rebuilt from the events by :func:`carewatch.db.rollups.rebuild`
-- the same definitions the gateway uses live.

The backfill registers its devices as ``--register`` does, dates their ``created_at`` back to
the start of the history, and refuses a period in which these devices already have events
(rerun on a fresh database, or with another ``--id-prefix``).

Night supervision (issue 11): the fleet's apartments become residences of the site (labels
such as ``Lgh 1001``, never a name) with their devices attached; each one with a camera gets a
supervision plan recorded before the history starts (one in eight changed part-way), and two get
an absence (:mod:`devices.simulated_nights`; a rerun keeps what is stored). Each day is written
with its planned checks' events (the camera's checks and retries, the patrol's lock visits), and
each night, once the days after it are written, is judged as the gateway's passes would have
judged it (:func:`devices.simulated_nights.replay`, the gateway's own pure rules): its
``supervision_checks``, its supervision alerts (resolved by a check or a visit, or by staff;
those of the last hours may still be open) and its physical visits, recorded by staff or proved
by a lock. The gateway then carries on from there: a verdict it finds stored it reaches again.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
import psycopg
from psycopg import sql

from carewatch.db import rollups
from carewatch.site_time import site_tz
from devices.history import AlertRecord, Day, History, Row
from devices.reasons import Reason
from devices.simulated_nights import (
    CAMERA,
    LOCK,
    JudgedNight,
    NightSchedule,
    PastNights,
    SimAbsence,
    SimResidence,
    demo_absences,
    demo_plans,
    residences_of,
)
from devices.supervision import Interval, PlanVersion
from gateway.supervision import SAVE_CHECKS, SAVE_LOCK_VISITS, check_record

log = logging.getLogger(__name__)

_DAY_MS: Final = 86_400_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_DURATION_RE: Final = re.compile(r"^(?P<n>[1-9][0-9]*)(?P<unit>[dh])$")
# The rollups of a year are rebuilt a week per transaction: few enough chunks that the reads
# around each chunk's edges (whole local days, a visit's unlock) cost little.
_REBUILD_CHUNK: Final = timedelta(days=7)
_VACUUM_ROLLUPS: Final = sql.SQL("VACUUM (ANALYZE) {}").format(
    sql.SQL(", ").join(map(sql.Identifier, rollups.ROLLUP_TABLES))
)

_COPY_EVENTS: Final = "COPY events (time, received_at, device_id, event_id, type, data) FROM STDIN"
_COPY_ALERTS: Final = (
    "COPY alerts (device_id, rule, severity, state, opened_at, acknowledged_at,"
    " acknowledged_by, resolved_at, resolved_by, cleared_at, last_event_at, count, updated_at,"
    " reason, reason_code, reason_args, cleared_reason, cleared_reason_code,"
    " cleared_reason_args) FROM STDIN"
)
_ANY_EVENTS: Final = (
    "SELECT EXISTS (SELECT 1 FROM events WHERE device_id = ANY(%s) AND time >= %s AND time < %s)"
)
# Each device's newest heartbeat, by one backward probe of the (device_id, time) index.
_LAST_HEARTBEATS: Final = """
UPDATE devices d SET
    created_at = least(d.created_at, %(start)s),
    last_seen = greatest(d.last_seen, h.time),
    battery = coalesce((h.data ->> 'battery')::smallint, d.battery),
    firmware = coalesce(h.data ->> 'fw', d.firmware)
FROM unnest(%(ids)s::text[]) AS x(id)
CROSS JOIN LATERAL (
    SELECT e.time, e.data FROM events e
    WHERE e.device_id = x.id AND e.type = 'heartbeat' AND e.time < %(end)s
    ORDER BY e.time DESC LIMIT 1
) h
WHERE d.id = x.id
"""


# --- night supervision -----------------------------------------------------------------------

PLANNER: Final = "simulator"  # who recorded the simulated plans and absences
_KEY_BOX_EVERY: Final = 3
_SITE_TIMEZONE: Final = "SELECT timezone FROM sites WHERE id = %s"
_ADD_RESIDENCES: Final = """
INSERT INTO residences (site_id, label, created_at)
SELECT %(site_id)s, label, %(start)s FROM unnest(%(labels)s::text[]) AS x(label)
ORDER BY label
ON CONFLICT (site_id, label) DO NOTHING
"""
_RESIDENCE_IDS: Final = (
    "SELECT label, id FROM residences WHERE site_id = %(site_id)s AND label = ANY(%(labels)s)"
)
# A device another run (or staff) already placed keeps its residence.
_ATTACH: Final = """
UPDATE devices d SET residence_id = x.residence_id
FROM unnest(%(ids)s::text[], %(residences)s::bigint[]) AS x(id, residence_id)
WHERE d.id = x.id AND d.site_id = %(site_id)s AND d.residence_id IS NULL
"""
# The devices' residences, their devices in id order (a residence's first camera is the one
# the gateway opens its alerts on) and their site's time zone.
_PLACED: Final = """
SELECT d.id, d.kind, r.id, r.label, s.timezone
FROM devices AS d
JOIN residences AS r ON r.id = d.residence_id
JOIN sites AS s ON s.id = r.site_id
WHERE d.id = ANY(%s) AND d.status = 'active'
ORDER BY r.id, d.id
"""
_RESIDENCES_WITH_PLANS: Final = (
    "SELECT DISTINCT residence_id FROM supervision_plans WHERE residence_id = ANY(%s)"
)
_ADD_PLAN: Final = """
INSERT INTO supervision_plans (residence_id, recorded_at, recorded_by, check_times, weekdays,
                               note)
VALUES (%s, %s, %s, %s::time[], %s::smallint[], %s)
"""
_PLANS: Final = """
SELECT residence_id, recorded_at, check_times, weekdays, valid_from, valid_to, window_s,
       retry_s, follow_up
FROM supervision_plans WHERE residence_id = ANY(%s) ORDER BY residence_id, recorded_at
"""
_ANY_ABSENCE: Final = "SELECT EXISTS (SELECT 1 FROM absences WHERE residence_id = ANY(%s))"
_ADD_ABSENCE: Final = """
INSERT INTO absences (residence_id, reason, starts_at, expected_end, note, created_by)
VALUES (%s, %s, %s, %s, %s, %s)
"""
_ABSENCES: Final = """
SELECT residence_id, reason, starts_at, least(expected_end, ended_at) FROM absences
WHERE residence_id = ANY(%s) AND starts_at < least(expected_end, ended_at)
"""
_SAVE_STAFF_VISITS: Final = """
INSERT INTO physical_visits (residence_id, visited_at, source, recorded_by, note)
SELECT v.residence_id, v.visited_at, 'staff', v.recorded_by, 'night patrol'
FROM jsonb_to_recordset(%s::jsonb) AS v(residence_id bigint, visited_at timestamptz,
                                         recorded_by text)
ORDER BY v.residence_id, v.visited_at
ON CONFLICT (residence_id, visited_at, source) DO NOTHING
"""
# As the gateway opens them (alerts_one_per_planned_check: one unresolved per check and rule);
# cleared when the gateway resolved them, not when staff did (as on the board).
_SAVE_ALERTS: Final = """
INSERT INTO alerts (device_id, rule, severity, state, opened_at, acknowledged_at,
                    acknowledged_by, resolved_at, resolved_by, cleared_at, cleared_reason,
                    cleared_reason_code, cleared_reason_args, last_event_at, reason,
                    reason_code, reason_args, count, updated_at, residence_id, planned_at)
SELECT v.device_id, v.rule, v.severity, v.state, v.opened_at, v.acknowledged_at,
       v.acknowledged_by, v.resolved_at, v.resolved_by,
       CASE WHEN v.cleared_reason IS NOT NULL THEN v.resolved_at END, v.cleared_reason,
       v.cleared_reason_code, v.cleared_reason_args, v.opened_at, v.reason, v.reason_code,
       v.reason_args, 1, coalesce(v.resolved_at, v.acknowledged_at, v.opened_at),
       v.residence_id, v.planned_at
FROM jsonb_to_recordset(%s::jsonb) AS v(
    device_id text, rule text, severity text, state text, opened_at timestamptz,
    acknowledged_at timestamptz, acknowledged_by text, resolved_at timestamptz,
    resolved_by text, cleared_reason text, cleared_reason_code text, cleared_reason_args jsonb,
    reason text, reason_code text, reason_args jsonb, residence_id bigint,
    planned_at timestamptz)
ORDER BY v.residence_id, v.planned_at, v.rule
ON CONFLICT (residence_id, planned_at, rule) WHERE planned_at IS NOT NULL AND state <> 'resolved'
DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class _Placed:
    """The site's residences as stored: each one's schedule key is its id."""

    schedule: NightSchedule
    cameras: dict[str, str]  # residence key -> its camera
    locks: dict[str, str]  # residence key -> its lock


def parse_duration(text: str) -> timedelta:
    """``365d``, ``30d``, ``12h``: the length of the history. ValueError otherwise."""
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"--backfill: expected a duration like 365d or 12h, got {text!r}")
    n = int(match["n"])
    return timedelta(days=n) if match["unit"] == "d" else timedelta(hours=n)


@dataclass(frozen=True, slots=True)
class BackfillResult:
    """What a backfill wrote, and how long it took."""

    start: datetime
    end: datetime
    events: int
    alerts: int
    rollup_rows: int  # events, visits and replacements counted by the rebuild
    seconds: float
    residences: int = 0  # with a supervision plan
    checks: int = 0  # planned checks judged


class BackfillRefusedError(Exception):
    """The period already holds events of these devices."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start, self.end = start, end
        super().__init__(
            f"these devices already have events between {start.isoformat()} and "
            f"{end.isoformat()}: backfill a fresh database, or use another --id-prefix"
        )


def backfill(
    database_url: str,
    history: History,
    site_id: str,
    *,
    register: Callable[[str, str, Sequence[Any]], int],
    progress: Callable[[str], None] = print,
    seed: int = 1,
) -> BackfillResult:
    """Write ``history`` into the database; see the module docstring."""
    started = time.perf_counter()
    start = _EPOCH + timedelta(milliseconds=history.start_ms)
    end = _EPOCH + timedelta(milliseconds=history.end_ms)
    ids = [d.id for d in history.devices]
    added = register(database_url, site_id, history.devices)
    progress(f"backfill: registered {added} new device(s) in site {site_id}")
    events = alerts = checks = 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(_ANY_EVENTS, (ids, start, end)).fetchone()
        if row is not None and row[0]:
            raise BackfillRefusedError(start, end)
        with conn.transaction():
            placed = _place(conn, site_id, history.devices, start, end, seed)
        progress(f"backfill: {len(placed.schedule.plans)} residence(s) with a supervision plan")
        nights = PastNights(placed.schedule, start, end)
        formatter = _TimeFormatter()
        last_report = time.perf_counter()
        for day in history.days():
            planned = nights.rows(day.start_ms, day.start_ms + _DAY_MS)
            events += _write_day(conn, day, formatter, planned)
            alerts += len(day.alerts)
            nights.observe(day.rows, _outages(day.alerts))
            nights.observe(planned)
            for judged in nights.judged(min(day.start_ms + _DAY_MS, history.end_ms)):
                checks += len(judged.checks)
                alerts += _write_night(conn, judged, placed)
            if time.perf_counter() - last_report >= 10:
                last_report = time.perf_counter()
                progress(
                    f"backfill: {formatter.date(day.start_ms)} written, {events} events, "
                    f"{time.perf_counter() - started:.0f} s"
                )
        with conn.transaction():
            conn.execute(_LAST_HEARTBEATS, {"ids": ids, "start": start, "end": end})
        # Before the rebuild reads them by time: the BRIN index knows nothing of the block
        # ranges written since the last vacuum (every range would match), and the planner
        # would take a year of new rows for an empty table.
        conn.execute("SELECT brin_summarize_new_values('events_time_brin')")
        conn.execute("ANALYZE events, alerts, devices")
        progress(f"backfill: {events} events and {alerts} alerts written; rebuilding the rollups")
        result = rollups.rebuild(conn, start, end, chunk=_REBUILD_CHUNK)
        # As autovacuum leaves them a minute or so later: the usage report's sums per robot are
        # index-only scans, which read the heap too until the visibility map is set.
        conn.execute(_VACUUM_ROLLUPS)
    return BackfillResult(
        start,
        end,
        events,
        alerts,
        result.delta_rows,
        time.perf_counter() - started,
        len(placed.schedule.plans),
        checks,
    )


def _write_day(
    conn: psycopg.Connection[Any], day: Day, formatter: _TimeFormatter, planned: Sequence[Row]
) -> int:
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(_COPY_EVENTS) as copy:
            copy.write(copy_text(day.rows, formatter))
            if planned:
                copy.write(copy_text(planned, formatter))
        if day.alerts:
            with cur.copy(_COPY_ALERTS) as copy:
                for a in day.alerts:
                    copy.write_row(_alert_row(a))
    return len(day.rows) + len(planned)


def _outages(alerts: Sequence[AlertRecord]) -> list[tuple[str, Interval]]:
    """The devices' outages as the gateway's supervision pass reads them: each device_offline
    alert from its opening until it cleared or was resolved."""
    return [
        (
            a.device_id,
            Interval(_at(a.opened_ms), _at(min(a.resolved_ms, a.cleared_ms or a.resolved_ms))),
        )
        for a in alerts
        if a.rule == "device_offline"
    ]


def _at(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _place(
    conn: psycopg.Connection[Any],
    site_id: str,
    devices: Sequence[Any],
    start: datetime,
    end: datetime,
    seed: int,
) -> _Placed:
    """The fleet's apartments as residences of the site with their devices, plans and absences
    (written where missing), and the night schedule of what is stored."""
    row = conn.execute(_SITE_TIMEZONE, (site_id,)).fetchone()
    tz = site_tz(row[0] if row is not None else None)
    # One apartment with a camera in three has no keyless lock in its residence (a key box).
    apartments = residences_of(devices, key_box_every=_KEY_BOX_EVERY)
    labels = [a.label for a in apartments]
    params = {"site_id": site_id, "labels": labels, "start": start}
    conn.execute(_ADD_RESIDENCES, params)
    ids: dict[str, int] = dict(conn.execute(_RESIDENCE_IDS, params).fetchall())
    attach = [(device_id, ids[a.label]) for a in apartments for device_id in a.device_ids]
    conn.execute(
        _ATTACH,
        {"ids": [d for d, _ in attach], "residences": [r for _, r in attach], "site_id": site_id},
    )
    residence_ids = sorted(ids.values())
    planned = {r for (r,) in conn.execute(_RESIDENCES_WITH_PLANS, (residence_ids,)).fetchall()}
    # Recorded before the history starts, so its first night is planned; one in eight changed
    # two thirds of the way through (a new care decision).
    plans = demo_plans(
        apartments,
        recorded_at=start - timedelta(days=1),
        changed_at=start + (end - start) * 2 / 3,
        seed=seed,
    )
    for label, versions in plans.items():
        if ids[label] in planned:
            continue
        for version in versions:
            conn.execute(
                _ADD_PLAN,
                (ids[label], version.recorded_at, PLANNER, list(version.check_times),
                 sorted(version.weekdays), "simulated care decision"),
            )  # fmt: skip
    absent = conn.execute(_ANY_ABSENCE, (residence_ids,)).fetchone()
    if absent is not None and not absent[0]:
        # The first two apartments with a camera (demo_plans gave each of them a plan).
        with_plans = [str(ids[a.label]) for a in apartments if a.label in plans]
        for absence in demo_absences(with_plans, start=start, end=end, tz=tz):
            conn.execute(
                _ADD_ABSENCE,
                (int(absence.key), absence.reason, absence.starts_at, absence.expected_end,
                 "simulated", PLANNER),
            )  # fmt: skip
    schedule = stored_nights(conn, [d.id for d in devices], seed=seed)
    assert schedule is not None  # the devices were just placed
    return _Placed(
        schedule,
        {r.key: r.camera_id for r in schedule.residences if r.camera_id is not None},
        {r.key: r.lock_id for r in schedule.residences if r.lock_id is not None},
    )


def stored_nights(
    conn: psycopg.Connection[Any], device_ids: Sequence[str], *, seed: int
) -> NightSchedule | None:
    """The night schedule of the residences these devices are placed in, with their plans and
    absences as stored (None: none is placed). The live simulator reads it at start, so the
    cameras check when their plans say; keys are the residences' ids, as the gateway's."""
    rows = conn.execute(_PLACED, (list(device_ids),)).fetchall()
    if not rows:
        return None
    members: dict[int, list[tuple[str, str]]] = {}
    labels: dict[int, str] = {}
    for device_id, kind, residence_id, label, _ in rows:
        members.setdefault(residence_id, []).append((device_id, kind))
        labels[residence_id] = label
    residences = [
        SimResidence(
            str(residence_id),
            labels[residence_id],
            tuple(d for d, _ in placed),
            next((d for d, kind in placed if kind == CAMERA), None),
            next((d for d, kind in placed if kind == LOCK), None),
        )
        for residence_id, placed in members.items()
    ]
    ids = sorted(members)
    plans: dict[str, list[PlanVersion]] = {}
    for residence_id, *fields in conn.execute(_PLANS, (ids,)).fetchall():
        plans.setdefault(str(residence_id), []).append(
            PlanVersion.from_row(str(residence_id), *fields)
        )
    absences = [
        SimAbsence(str(residence_id), reason, starts_at, until)
        for residence_id, reason, starts_at, until in conn.execute(_ABSENCES, (ids,)).fetchall()
        if until is not None
    ]
    return NightSchedule(residences, plans, absences, tz=site_tz(rows[0][4]), seed=seed)


def _write_night(conn: psycopg.Connection[Any], night: JudgedNight, placed: _Placed) -> int:
    """A judged night's checks, alerts and visits, in one transaction; the alerts written."""
    checks: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    lock_visits: set[tuple[int, datetime, str]] = set()
    for key, judged in night.checks:
        check, verdict = judged.check, judged.verdict
        residence_id = int(key)
        checks.append(check_record(residence_id, check, verdict, judged.decided_at))
        camera = placed.cameras[key]
        alerts += (
            {
                "device_id": camera,
                "rule": a.rule,
                "severity": a.severity,
                "state": a.state,
                "opened_at": a.opened_at,
                "acknowledged_at": a.acknowledged_at,
                "acknowledged_by": a.acknowledged_by,
                "resolved_at": a.resolved_at,
                "resolved_by": a.resolved_by,
                **a.reason.alert_fields(),
                **_cleared_fields(a.cleared_reason),
                "residence_id": residence_id,
                "planned_at": check.planned_at,
            }
            for a in judged.alerts
        )
        lock = placed.locks.get(key)
        if lock is not None:
            lock_visits.update((residence_id, at, lock) for at in judged.lock_visits)
    staff = [
        {"residence_id": int(v.key), "visited_at": v.at, "recorded_by": v.by}
        for v in night.staff_visits
    ]
    locks = [
        {"residence_id": r, "visited_at": at, "lock_device_id": lock}
        for r, at, lock in sorted(lock_visits)
    ]
    with conn.transaction():
        for statement, rows in (
            (SAVE_CHECKS, checks),
            (_SAVE_ALERTS, alerts),
            (_SAVE_STAFF_VISITS, staff),
            (SAVE_LOCK_VISITS, locks),
        ):
            if rows:
                conn.execute(statement, (orjson.dumps(rows).decode(),))
    return len(alerts)


def copy_text(rows: Sequence[Row], formatter: _TimeFormatter) -> bytes:
    """The rows in COPY's text format. Nothing needs escaping: the ids are ours ([a-z0-9-]),
    the types the catalog's, the JSON orjson's or built from numbers and firmware versions,
    and none holds a backslash, tab or newline. received_at is the device time (the history
    has no transport delay)."""
    fmt = formatter.format
    return "".join(
        [
            f"{(ts := fmt(t))}\t{ts}\t{device}\t{eid}\t{kind}\t{data}\n"
            for t, device, eid, kind, data in rows
        ]
    ).encode()


def _alert_row(a: AlertRecord) -> tuple[object, ...]:
    def at(ms: int | None) -> datetime | None:
        return None if ms is None else _EPOCH + timedelta(milliseconds=ms)

    def json(value: object) -> str | None:  # a jsonb column in COPY's text format
        return None if value is None else orjson.dumps(value).decode()

    opened = a.reason.alert_fields()
    cleared = _cleared_fields(a.cleared_reason)
    return (
        a.device_id, a.rule, a.severity, "resolved", at(a.opened_ms), at(a.acknowledged_ms),
        a.acknowledged_by, at(a.resolved_ms), a.resolved_by, at(a.cleared_ms), at(a.opened_ms),
        1, at(a.resolved_ms), opened["reason"], opened["reason_code"],
        json(opened["reason_args"]), cleared["cleared_reason"], cleared["cleared_reason_code"],
        json(cleared["cleared_reason_args"]),
    )  # fmt: skip


def _cleared_fields(reason: Reason | None) -> dict[str, object]:
    """A clear's reason as the alert row names it (``cleared_reason``, ``cleared_reason_code``,
    ``cleared_reason_args``; all None without one), as the gateway writes it."""
    fields: dict[str, object] = {"reason": None, "reason_code": None, "reason_args": None}
    if reason is not None:
        fields = reason.alert_fields()
    return {f"cleared_{name}": value for name, value in fields.items()}


class _TimeFormatter:
    """Epoch milliseconds to ``YYYY-MM-DD HH:MM:SS[.mmm]+00``, from tables: datetime's own
    formatting would be a third of the backfill's time."""

    def __init__(self) -> None:
        self._clock = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86_400)]
        self._dates: dict[int, str] = {}

    def date(self, ms: int) -> str:
        day = ms // _DAY_MS
        text = self._dates.get(day)
        if text is None:
            text = self._dates[day] = (_EPOCH + timedelta(days=day)).date().isoformat()
        return text

    def format(self, ms: int) -> str:
        day, in_day = divmod(ms, _DAY_MS)
        date = self._dates.get(day) or self.date(ms)
        second, milli = divmod(in_day, 1000)
        if milli:
            return f"{date} {self._clock[second]}.{milli:03d}+00"
        return f"{date} {self._clock[second]}+00"
