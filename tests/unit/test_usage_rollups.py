"""The pure parts of the usage rollups, the backfill's history and its arguments."""

from __future__ import annotations

import collections
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg.sql import Composable

from carewatch.db import rollups, timescale
from carewatch.rollup_rebuild import parse_moment
from devices.history import History
from gateway import store
from tools.backfill import _TimeFormatter, copy_text, parse_duration

T = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        pytest.param(T, T + timedelta(hours=2), (T, T + timedelta(hours=2)), id="aligned"),
        pytest.param(
            T + timedelta(minutes=20),
            T + timedelta(hours=1, seconds=1),
            (T, T + timedelta(hours=2)),
            id="rounded-out",
        ),
        pytest.param(
            datetime.fromisoformat("2026-01-10T10:30:00+01:00"),
            datetime.fromisoformat("2026-01-10T11:00:00+01:00"),
            (T, T + timedelta(hours=1)),
            id="offsets-to-utc",
        ),
    ],
)
def test_hour_range(since: datetime, until: datetime, expected: tuple[datetime, datetime]) -> None:
    """A rebuild range is rounded out to whole UTC hours."""
    assert rollups.hour_range(since, until) == expected


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        pytest.param(T, T, "must be after", id="empty"),
        pytest.param(T, T - timedelta(hours=1), "must be after", id="inverted"),
        pytest.param(T.replace(tzinfo=None), T, "time zone", id="naive"),
    ],
)
def test_hour_range_refuses(since: datetime, until: datetime, message: str) -> None:
    """An empty, inverted or naive range is a clear error."""
    with pytest.raises(ValueError, match=message):
        rollups.hour_range(since, until)


def test_chunks_cover_the_range_once() -> None:
    """Chunks are consecutive, cover the range exactly, and the last may be shorter."""
    pieces = rollups.chunks(T, T + timedelta(hours=50), timedelta(days=1))
    assert pieces == [
        (T, T + timedelta(days=1)),
        (T + timedelta(days=1), T + timedelta(days=2)),
        (T + timedelta(days=2), T + timedelta(hours=50)),
    ]
    with pytest.raises(ValueError, match="positive"):
        rollups.chunks(T, T + timedelta(hours=1), timedelta(0))


def test_ingest_statements_take_only_the_rows_parameters() -> None:
    """The rollup part of the gateway's statements has no placeholder of its own (a stray
    % would shift the row-by-row path's parameters), and both statements return the keys."""
    assert store.INSERT_ONE.count("%s") == 6
    assert "%" not in store.MOVE_STAGED
    for statement in (store.INSERT_ONE, store.MOVE_STAGED):
        assert statement.rstrip().endswith("SELECT device_id, event_id, time FROM ins")
        for table in rollups.ROLLUP_TABLES:
            assert f'INSERT INTO "{table}"' in statement


@pytest.mark.parametrize(
    ("text", "expected"),
    [("365d", timedelta(days=365)), ("30d", timedelta(days=30)), ("12h", timedelta(hours=12))],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    """--backfill takes N days or N hours."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["365", "0d", "1.5d", "5w", "d", "", "12 h"])
def test_parse_duration_refuses(text: str) -> None:
    """Anything else is refused with the expected form in the message."""
    with pytest.raises(ValueError, match="like 365d"):
        parse_duration(text)


def test_parse_moment() -> None:
    """ISO dates and times; without an offset they are UTC; nonsense names the flag."""
    assert parse_moment("2026-01-10", "--since") == datetime(2026, 1, 10, tzinfo=UTC)
    assert parse_moment("2026-01-10T10:00+01:00", "--since") == T
    with pytest.raises(ValueError, match="--until"):
        parse_moment("yesterday", "--until")


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        pytest.param(0, "1970-01-01 00:00:00+00", id="epoch"),
        pytest.param(int(T.timestamp() * 1000) + 61_005, "2026-01-10 09:01:01.005+00", id="millis"),
        pytest.param(
            int(T.timestamp() * 1000) + 86_399_000 - 9 * 3_600_000,
            "2026-01-10 23:59:59+00",
            id="last-second",
        ),
    ],
)
def test_time_formatter(ms: int, text: str) -> None:
    """The table-driven timestamp text is what PostgreSQL reads back as that instant."""
    assert _TimeFormatter().format(ms) == text
    assert datetime.fromisoformat(text.replace("+00", "+00:00")).timestamp() * 1000 == ms


def _history(seed: int = 1, days: int = 2) -> History:
    end = datetime(2026, 3, 30, tzinfo=UTC)
    return History(40, start=end - timedelta(days=days), end=end, seed=seed)


def test_history_is_deterministic() -> None:
    """A seed and a period give the same rows and alerts; another seed others."""
    first = [(d.rows, d.alerts) for d in _history().days()]
    assert first == [(d.rows, d.alerts) for d in _history().days()]
    assert first != [(d.rows, d.alerts) for d in _history(seed=2).days()]


def test_history_shape() -> None:
    """Heartbeats at most one per 15 minutes per device, unique event ids per device, every
    kind's events, visits of the door unlocked 5-40 minutes, and alerts resolved in order."""
    history = _history(days=3)
    days = list(history.days())
    rows = [r for d in days for r in d.rows]
    assert len(days) == 3
    assert {d.id for d in history.devices} == {r[1] for r in rows}
    per_device = collections.Counter(r[1] for r in rows if r[3] == "heartbeat")
    assert max(per_device.values()) <= 3 * 96
    assert len({(r[1], r[2]) for r in rows}) == len(rows)
    types = collections.Counter(r[3] for r in rows)
    for event_type in ("lock.unlocked", "camera.check_ended", "robot.interaction"):
        assert types[event_type] > 0
    locks = sorted((r[1], r[0], r[3]) for r in rows if r[3] in rollups.LOCK_TYPES)
    durations = [
        (b[1] - a[1]) / 60_000
        for a, b in itertools.pairwise(locks)
        if a[0] == b[0] and (a[2], b[2]) == ("lock.unlocked", "lock.locked")
    ]
    assert durations
    assert sum(5 <= m <= 40 for m in durations) / len(durations) > 0.95
    for alert in (a for d in days for a in d.alerts):
        assert alert.opened_ms <= alert.acknowledged_ms <= alert.resolved_ms or (
            alert.resolved_by == "system" and alert.acknowledged_ms <= alert.resolved_ms
        )


def test_history_stays_inside_its_period() -> None:
    """No event at or after the end: the backfill rebuilds the rollups for exactly [start, end),
    so an episode running past the end (a check started at 23:59) would be stored uncounted."""
    # Ending at 08:00 UTC, mid-morning in Stockholm, when visits and robot play are under way.
    end = datetime(2026, 3, 30, 8, tzinfo=UTC)
    history = History(200, start=end - timedelta(days=1), end=end, seed=1)
    rows = [r for d in history.days() for r in d.rows]
    assert rows
    assert all(history.start_ms <= r[0] < history.end_ms for r in rows)


def test_history_copy_text_parses_back() -> None:
    """Each row becomes one COPY line of six tab-separated fields."""
    day = next(_history().days())
    text = copy_text(day.rows[:50], _TimeFormatter()).decode()
    lines = text.splitlines()
    assert len(lines) == 50
    assert all(len(line.split("\t")) == 6 for line in lines)


class _RecordingConnection:
    """Enough of a psycopg connection for apply_storage_policies, answering as TimescaleDB."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def execute(self, query: str | Composable, params: Any = None) -> _RecordingConnection:
        text = query if isinstance(query, str) else query.as_string()
        self.statements.append(" ".join(text.split()))
        self._row: tuple[Any, ...] | None = (
            (True, True, True) if "pg_extension" in text else (False,)
        )
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._row


def test_timescale_makes_the_device_rollup_a_compressed_hypertable() -> None:
    """With TimescaleDB, usage_device_hourly becomes a hypertable by bucket with compression
    (the statements as sent; the extension is not installable here)."""
    conn = _RecordingConnection()
    assert timescale.apply_storage_policies(conn, retention_days=30) == "timescaledb"  # type: ignore[arg-type]
    sql = "\n".join(conn.statements)
    assert "create_hypertable('usage_device_hourly', by_range('bucket', INTERVAL '30 days')" in sql
    assert 'ALTER TABLE "usage_device_hourly" SET (timescaledb.compress' in sql
    assert "add_compression_policy('usage_device_hourly'" in sql
    assert "usage_site" not in sql
