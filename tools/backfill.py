"""``carewatch simulate --backfill 365d``: a fleet's history written straight into the database.

The rows come from :mod:`devices.history` (pure, seeded), one UTC day at a time, and go in by
``COPY ... FROM STDIN`` in COPY's text format built in one piece per day (psycopg's
``write_row`` would spend more time than PostgreSQL does). Days are committed one by one, in
time order, so the BRIN index of ``events.time`` stays useful. Then the alerts of the period
(device_offline for the long outages, alarm_pressed for the presses, all acknowledged and
resolved), the devices' last heartbeat and battery, and finally the usage rollups of the whole
period, rebuilt from the events by :func:`carewatch.db.rollups.rebuild` -- the same
definitions the gateway uses live.

The backfill registers its devices as ``--register`` does, dates their ``created_at`` back to
the start of the history, and refuses a period in which these devices already have events
(rerun on a fresh database, or with another ``--id-prefix``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg

from carewatch.db import rollups
from devices.history import AlertRecord, Day, History, Row

log = logging.getLogger(__name__)

_DAY_MS: Final = 86_400_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_DURATION_RE: Final = re.compile(r"^(?P<n>[1-9][0-9]*)(?P<unit>[dh])$")
# The rollups of a year are rebuilt a week per transaction: few enough chunks that the reads
# around each chunk's edges (whole local days, a visit's unlock) cost little.
_REBUILD_CHUNK: Final = timedelta(days=7)

_COPY_EVENTS: Final = "COPY events (time, received_at, device_id, event_id, type, data) FROM STDIN"
_COPY_ALERTS: Final = (
    "COPY alerts (device_id, rule, severity, state, opened_at, acknowledged_at,"
    " acknowledged_by, resolved_at, resolved_by, cleared_at, cleared_reason, last_event_at,"
    " reason, count, updated_at) FROM STDIN"
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
) -> BackfillResult:
    """Write ``history`` into the database; see the module docstring."""
    started = time.perf_counter()
    start = _EPOCH + timedelta(milliseconds=history.start_ms)
    end = _EPOCH + timedelta(milliseconds=history.end_ms)
    ids = [d.id for d in history.devices]
    added = register(database_url, site_id, history.devices)
    progress(f"backfill: registered {added} new device(s) in site {site_id}")
    events = alerts = 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(_ANY_EVENTS, (ids, start, end)).fetchone()
        if row is not None and row[0]:
            raise BackfillRefusedError(start, end)
        formatter = _TimeFormatter()
        last_report = time.perf_counter()
        for day in history.days():
            events += _write_day(conn, day, formatter)
            alerts += len(day.alerts)
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
    return BackfillResult(
        start, end, events, alerts, result.delta_rows, time.perf_counter() - started
    )


def _write_day(conn: psycopg.Connection[Any], day: Day, formatter: _TimeFormatter) -> int:
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(_COPY_EVENTS) as copy:
            copy.write(copy_text(day.rows, formatter))
        if day.alerts:
            with cur.copy(_COPY_ALERTS) as copy:
                for a in day.alerts:
                    copy.write_row(_alert_row(a))
    return len(day.rows)


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

    cleared = at(a.cleared_ms)
    return (
        a.device_id, a.rule, a.severity, "resolved", at(a.opened_ms), at(a.acknowledged_ms),
        a.acknowledged_by, at(a.resolved_ms), a.resolved_by, cleared,
        None if cleared is None else "condition ended", at(a.opened_ms), a.reason, 1,
        at(a.resolved_ms),
    )  # fmt: skip


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
