"""Night supervision in the gateway: the watchdog's look at every planned check.

The decisions are pure (:mod:`devices.supervision`: which checks a plan asks for, the verdict
on each, which alerts it opens or resolves); this module loads the facts they are judged from
and writes the outcome. A pass takes the residences with a plan in chunks (a range of their
ids), one transaction each, and for a chunk runs a handful of set-based statements, never one
per check:

- the ids of the plan versions (with the site's time zone), expanded into the checks of the
  nights ``night_of(now - 18 h)`` .. ``night_of(now)`` whose window has opened (expansions are
  kept between passes in a :class:`PlanCache`: versions are never updated);
- the checks' rows in ``supervision_checks`` as last decided: a check the camera or a visit
  settled (done, late, visited) is final and not judged again;
- for the rest, the facts from each residence's earliest open window on: ``camera.check_ended``
  of its cameras and ``lock.*`` of its locks (no other event of the night is read), the cameras'
  outages (their ``device_offline`` and ``camera_stream_lost`` alerts), absences and physical
  visits; visits proved by a lock are written to ``physical_visits`` (source ``lock``);
- the checks' unresolved supervision alerts;

then writes the verdicts that changed, opens and resolves alerts (opened on the residence's
camera; a residence without an active camera gets none, logged once), and records each alert
change through the kernel's alert feed (:func:`carewatch.db.alert_feed.record_changes`, as the
device rules do), so the API's stream sends it.

Several gateways, or one that restarts: the watchdog's advisory lock lets one pass run at a
time, and should two ever overlap, the partial unique index ``alerts_one_per_planned_check``
turns the second open into nothing (``ON CONFLICT DO NOTHING``) and a resolve only touches an
alert not yet resolved. The device rules' escalation (``evaluate_tick``) reads only their own
alerts; supervision alerts escalate in :mod:`gateway.supervision_escalation`.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from typing import Any, Final

import orjson
import psycopg
from psycopg.rows import tuple_row

from carewatch.db.alert_feed import record_changes
from carewatch.site_time import site_tz
from devices.supervision import (
    ALERT_SEVERITY,
    CameraCheck,
    CheckState,
    Facts,
    Interval,
    PlannedCheck,
    PlanVersion,
    Verdict,
    alert_moves,
    check_alert_reason,
    check_resolve_reason,
    final,
    judge,
    night_of,
    planned_checks,
    visits_from_lock,
)

log = logging.getLogger(__name__)

SUPERVISION_CHUNK: Final = 1000
"""Residences per transaction: keeps each one (and the rows it locks) small."""
NIGHTS_BACK: Final = timedelta(hours=18)
"""The nights looked at run from ``night_of(now - 18 h)``: until the next evening a late check
or a visit can still settle last night's checks."""
LOCK_LOOKBACK: Final = timedelta(hours=1)
"""Lock events are read from this long before a residence's earliest open window: a visit is
the lock's ``lock.locked``, and the ``lock.unlocked`` that began it may come before the window."""
CAMERA_KIND: Final = "safety_camera"  # the statements name it, and "door_lock", too

# --- the statements -----------------------------------------------------------------------------

RESIDENCES_WITH_PLANS = """
SELECT DISTINCT residence_id FROM supervision_plans ORDER BY residence_id
"""

# A chunk is a range of residence ids (the residences with a plan, in id order): every
# statement below filters by that range instead of by a list of ids.
PLAN_IDS = """
SELECT p.residence_id, s.timezone, array_agg(p.id ORDER BY p.recorded_at)
FROM supervision_plans AS p
JOIN residences AS r ON r.id = p.residence_id
JOIN sites AS s ON s.id = r.site_id
WHERE p.residence_id BETWEEN %(first)s AND %(last)s AND r.id BETWEEN %(first)s AND %(last)s
GROUP BY p.residence_id, s.timezone
"""

# Versions are never updated (migration 0007): one read per version and process.
LOAD_PLANS = """
SELECT id, residence_id, recorded_at, check_times, weekdays, valid_from, valid_to, window_s,
       retry_s, follow_up
FROM supervision_plans WHERE id = ANY(%s::bigint[])
"""

LOAD_DEVICES = """
SELECT id, kind, residence_id FROM devices
WHERE residence_id BETWEEN %(first)s AND %(last)s AND status = 'active'
  AND kind IN ('safety_camera', 'door_lock')
ORDER BY id
"""

# Only what the verdicts read: the cameras' check_ended and the locks' lock events, by device
# time, each residence's from the earliest window it still has open. LATERAL ... OFFSET 0 keeps
# each device's look a scan of an index from that residence's own bound to now (flattened, the
# planner bounded it by now alone and walked every earlier heartbeat).
LOAD_EVENTS = """
SELECT d.id, d.residence_id, e.time, e.type, e.outcome, e.duration_s, e.by
FROM jsonb_to_recordset(%(windows)s::jsonb)
     AS w(residence_id bigint, since timestamptz, locks_since timestamptz)
JOIN devices AS d ON d.residence_id = w.residence_id AND d.status = 'active'
                 AND d.kind IN ('safety_camera', 'door_lock')
CROSS JOIN LATERAL (
    SELECT time, type, data->>'outcome' AS outcome,
           CASE WHEN jsonb_typeof(data->'duration_s') = 'number'
                THEN (data->>'duration_s')::float8 END AS duration_s,
           data->>'by' AS by
    FROM events
    WHERE d.kind = 'safety_camera' AND device_id = d.id AND type = 'camera.check_ended'
      AND time >= w.since AND time <= %(now)s
    UNION ALL
    SELECT time, type, NULL, NULL, NULL
    FROM events
    WHERE d.kind = 'door_lock' AND device_id = d.id AND type IN ('lock.unlocked', 'lock.locked')
      AND time >= w.locks_since AND time <= %(now)s
    OFFSET 0
) AS e
"""

# The cameras' outages (their alerts, and their maintenance windows, which silence those alerts:
# a camera in repair checks nobody), the residences' absences and their physical visits
# overlapping the span, one row shape: (what, residence, start, end).
LOAD_INTERVALS = """
SELECT 'down', d.residence_id, a.opened_at, least(a.cleared_at, a.resolved_at)
FROM devices AS d
JOIN alerts AS a ON a.device_id = d.id
WHERE d.residence_id BETWEEN %(first)s AND %(last)s AND d.status = 'active'
  AND d.kind = 'safety_camera'
  AND a.rule IN ('device_offline', 'camera_stream_lost') AND a.planned_at IS NULL
  AND a.opened_at <= %(now)s
  AND (least(a.cleared_at, a.resolved_at) IS NULL OR least(a.cleared_at, a.resolved_at) > %(since)s)
UNION ALL
SELECT 'down', d.residence_id, m.starts_at, least(m.ends_at, m.ended_at)
FROM devices AS d
JOIN device_maintenance AS m ON m.device_id = d.id
WHERE d.residence_id BETWEEN %(first)s AND %(last)s AND d.status = 'active'
  AND d.kind = 'safety_camera'
  AND m.starts_at <= %(now)s AND least(m.ends_at, m.ended_at) > %(since)s
UNION ALL
SELECT 'away', residence_id, starts_at, least(expected_end, ended_at)
FROM absences
WHERE residence_id BETWEEN %(first)s AND %(last)s
  AND (least(expected_end, ended_at) IS NULL OR least(expected_end, ended_at) > %(since)s)
UNION ALL
SELECT 'visit', residence_id, visited_at, NULL
FROM physical_visits
WHERE residence_id BETWEEN %(first)s AND %(last)s
  AND visited_at >= %(since)s AND visited_at <= %(now)s
"""

# Each residence's rows from its earliest check not known to be settled (PlanCache.settled):
# late in the night most rows are settled, and reading them again on every pass cost more than
# judging the rest.
LOAD_CHECKS = """
SELECT c.residence_id, c.planned_at, c.state, c.seen_at, c.duration_s::float8, c.not_seen,
       c.visit_needed, c.by_visit, c.camera_failed, c.retry_at, c.visited_at
FROM jsonb_to_recordset(%(firsts)s::jsonb) AS w(residence_id bigint, first_planned timestamptz)
JOIN supervision_checks AS c ON c.residence_id = w.residence_id
                            AND c.planned_at >= w.first_planned
"""

# The predicate of alerts_one_per_planned_check: its index answers.
LOAD_ALERTS = """
SELECT id, residence_id, planned_at, rule FROM alerts
WHERE residence_id BETWEEN %(first)s AND %(last)s AND planned_at >= %(first_planned)s
  AND planned_at IS NOT NULL AND state <> 'resolved'
"""

# Rows travel as one JSON array (psycopg's quoting of large arrays costs more than the work;
# see alerting.SAVE_STATES) and go in key order, so two writers lock them in the same order.
# NOT EXISTS first: a visit already recorded does not use up a value of the identity.
SAVE_LOCK_VISITS = """
INSERT INTO physical_visits (residence_id, visited_at, source, lock_device_id)
SELECT v.residence_id, v.visited_at, 'lock', v.lock_device_id
FROM jsonb_to_recordset(%s::jsonb) AS v(residence_id bigint, visited_at timestamptz,
                                         lock_device_id text)
WHERE NOT EXISTS (SELECT 1 FROM physical_visits AS p
                  WHERE p.residence_id = v.residence_id AND p.visited_at = v.visited_at
                    AND p.source = 'lock')
ORDER BY v.residence_id, v.visited_at
ON CONFLICT (residence_id, visited_at, source) DO NOTHING
"""

# Each row carries the moment its verdict was reached: the watchdog's clock, or the backfill's
# simulated one (tools/backfill.py writes its nights with this statement too).
SAVE_CHECKS = """
INSERT INTO supervision_checks AS c (residence_id, planned_at, night, state, seen_at, duration_s,
                                     not_seen, visit_needed, by_visit, camera_failed, retry_at,
                                     visited_at, decided_at)
SELECT v.residence_id, v.planned_at, v.night, v.state, v.seen_at, v.duration_s, v.not_seen,
       v.visit_needed, v.by_visit, v.camera_failed, v.retry_at, v.visited_at, v.decided_at
FROM jsonb_to_recordset(%s::jsonb) AS v(
    residence_id bigint, planned_at timestamptz, night date, state text, seen_at timestamptz,
    duration_s real, not_seen boolean, visit_needed boolean, by_visit boolean,
    camera_failed boolean, retry_at timestamptz, visited_at timestamptz, decided_at timestamptz)
ORDER BY v.residence_id, v.planned_at
ON CONFLICT (residence_id, planned_at) DO UPDATE SET
    night = EXCLUDED.night, state = EXCLUDED.state, seen_at = EXCLUDED.seen_at,
    duration_s = EXCLUDED.duration_s, not_seen = EXCLUDED.not_seen,
    visit_needed = EXCLUDED.visit_needed, by_visit = EXCLUDED.by_visit,
    camera_failed = EXCLUDED.camera_failed, retry_at = EXCLUDED.retry_at,
    visited_at = EXCLUDED.visited_at, decided_at = EXCLUDED.decided_at
"""

OPEN_ALERTS = """
INSERT INTO alerts (device_id, rule, severity, state, opened_at, reason, reason_code, reason_args,
                    last_event_at, residence_id, planned_at)
SELECT v.device_id, v.rule, v.severity, 'open', %(now)s, v.reason, v.reason_code, v.reason_args,
       %(now)s, v.residence_id, v.planned_at
FROM jsonb_to_recordset(%(rows)s::jsonb) AS v(
    device_id text, rule text, severity text, reason text, reason_code text, reason_args jsonb,
    residence_id bigint, planned_at timestamptz)
ORDER BY v.residence_id, v.planned_at, v.rule
ON CONFLICT (residence_id, planned_at, rule) WHERE planned_at IS NOT NULL AND state <> 'resolved'
DO NOTHING
RETURNING id
"""

# As alerting.RESOLVE_ALERT, for many at once; one resolved meanwhile (by staff, by another
# pass) is left alone and records no change.
RESOLVE_ALERTS = """
UPDATE alerts AS a
SET state = 'resolved', resolved_at = %(now)s, resolved_by = 'system',
    cleared_at = coalesce(a.cleared_at, %(now)s), cleared_reason = v.reason,
    cleared_reason_code = v.reason_code, cleared_reason_args = v.reason_args, updated_at = now()
FROM (SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb)
        AS r(id bigint, reason text, reason_code text, reason_args jsonb)
      ORDER BY id) AS v
WHERE a.id = v.id AND a.state <> 'resolved'
RETURNING a.id
"""


# --- the pass -----------------------------------------------------------------------------------


@dataclass(slots=True)
class SupervisionOutcome:
    """What a supervision pass did: checks judged (and left alone), alerts opened and resolved,
    and the alert change ids it recorded, in order."""

    judged: int = 0
    unchanged: int = 0  # left alone: the same facts as last pass, and no next look reached
    opened: int = 0
    resolved: int = 0
    change_ids: list[int] = field(default_factory=list)


class PlanCache:
    """Plan versions by id, each residence's nights expanded, and the checks known to be
    settled, kept between passes.

    A version row is never updated (migration 0007), so its id names its content for good, and
    a residence's list of version ids names its whole plan history: a new version is a new
    list, a new key. Expanding every residence's nights on every pass would cost more than
    judging them; held by the gateway for its lifetime, a pass then reads only the version ids.

    A check stored in a final state (``devices.supervision.final``) is never judged or written
    again, by this gateway or another: once seen committed as final it is left out of every
    later pass (``settled``: residence id -> planned times), so that a pass late in the night
    reads and judges only what can still change, not every check since the evening.

    What each residence's open checks were last judged from and came to (``judged``): a verdict
    is a function of the check, the facts and the clock, and with the same facts only the clock
    reaching its ``next_look`` can change it (a property test in tests/unit/test_supervision.py).
    A check whose residence shows the same facts, whose stored row is the verdict remembered
    (another gateway may have written since) and whose next look has not come is left alone:
    most passes of a night change nothing, and judging every open check took most of a pass.
    """

    def __init__(self) -> None:
        self.versions: dict[int, PlanVersion | None] = {}
        # Each check with its window's start, which every pass compares with its clock.
        self.nights: dict[
            tuple[tuple[int, ...], date, tzinfo], list[tuple[datetime, PlannedCheck]]
        ] = {}
        self.settled: dict[int, set[datetime]] = defaultdict(set)
        self.judged: dict[int, _Judged] = {}
        self._kept_from: date | None = None

    def keep_from(self, night: date) -> None:
        """Forget the nights before ``night`` (once a day: a pass looks at two or three)."""
        if self._kept_from != night:
            self.nights = {key: checks for key, checks in self.nights.items() if key[1] >= night}
            # A check of that night is planned at its noon or later, local: a day before, UTC.
            cutoff = datetime.combine(night - timedelta(days=1), time(), UTC)
            kept = ((r, {at for at in times if at >= cutoff}) for r, times in self.settled.items())
            self.settled = defaultdict(set, ((r, times) for r, times in kept if times))
            self.judged = {}
            self._kept_from = night

    def opened(
        self, plan_ids: tuple[int, ...], nights: tuple[date, ...], tz: tzinfo, now: datetime
    ) -> list[PlannedCheck]:
        """The checks of ``nights`` whose windows have opened by ``now``, of a plan history
        whose versions are all loaded (each night expanded once, then remembered)."""
        checks: list[PlannedCheck] = []
        for night in nights:
            expanded = self.nights.get((plan_ids, night, tz))
            if expanded is None:
                versions = [v for v in (self.versions[i] for i in plan_ids) if v is not None]
                expanded = [(c.window_start, c) for c in planned_checks(versions, night, tz)]
                self.nights[plan_ids, night, tz] = expanded
            checks += (check for opens, check in expanded if opens <= now)
        return checks


@dataclass(slots=True)
class _Residence:
    """One residence of a chunk, as loaded."""

    tz: tzinfo
    plan_ids: tuple[int, ...]
    checks: list[PlannedCheck] = field(default_factory=list)
    cameras: list[str] = field(default_factory=list)
    camera_checks: list[CameraCheck] = field(default_factory=list)
    lock_events: dict[str, list[tuple[datetime, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    camera_down: list[Interval] = field(default_factory=list)
    absences: list[Interval] = field(default_factory=list)
    visits: set[datetime] = field(default_factory=set)


# state, seen_at, duration_s, not_seen, visit_needed, by_visit, camera_failed, retry_at,
# visited_at: a row of supervision_checks as LOAD_CHECKS reads it, after its key.
_Stored = tuple[
    str, datetime | None, float | None, bool, bool, bool, bool, datetime | None, datetime | None
]


# A residence's facts in one order (the judge does not care about their order, but duplicates
# count: two "not seen" at one time are a second not seen).
_FactsKey = tuple[
    tuple[CameraCheck, ...], tuple[Interval, ...], tuple[Interval, ...], tuple[datetime, ...]
]


@dataclass(frozen=True, slots=True)
class _Judged:
    """A residence's facts as last judged, and each open check's row then and its next look."""

    facts: _FactsKey
    checks: dict[datetime, tuple[_Stored, datetime | None]]


def _facts_key(facts: Facts) -> _FactsKey:
    return (
        tuple(sorted(facts.checks, key=_camera_check_order)),
        tuple(sorted(facts.camera_down, key=_interval_order)),
        tuple(sorted(facts.absences, key=_interval_order)),
        tuple(sorted(facts.visits)),
    )


def _camera_check_order(c: CameraCheck) -> tuple[datetime, str, float, str]:
    return (c.at, c.outcome, -1.0 if c.duration_s is None else c.duration_s, c.by or "")


def _interval_order(i: Interval) -> tuple[datetime, datetime]:
    return (i.start, datetime.max.replace(tzinfo=UTC) if i.end is None else i.end)


async def supervision_pass(
    conn: psycopg.AsyncConnection[Any],
    now: datetime,
    *,
    plans: PlanCache | None = None,
    chunk: int = SUPERVISION_CHUNK,
) -> SupervisionOutcome:
    """Judge every planned check whose window has opened (see the module's docstring), in
    chunks of ``chunk`` residences, each in a transaction of its own. ``plans``: the
    caller's cache of expanded plans (None: a new one, for this pass only)."""
    plans = plans if plans is not None else PlanCache()
    # No time zone is more than a day from UTC: older nights are out of every residence's range.
    plans.keep_from((now - NIGHTS_BACK).date() - timedelta(days=2))
    outcome = SupervisionOutcome()
    async with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(RESIDENCES_WITH_PLANS)
        residence_ids: list[int] = [row[0] for row in await cur.fetchall()]
    for start in range(0, len(residence_ids), chunk):
        ids = residence_ids[start : start + chunk]
        settled: list[tuple[int, datetime]] = []
        async with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
            span = {"first": ids[0], "last": ids[-1]}
            await _judge_chunk(cur, span, now, plans, outcome, settled)
        # Committed: the verdicts written final are settled for good.
        for residence_id, planned_at in settled:
            plans.settled[residence_id].add(planned_at)
    return outcome


async def _judge_chunk(
    cur: psycopg.AsyncCursor[tuple[Any, ...]],
    span: dict[str, Any],
    now: datetime,
    plans: PlanCache,
    outcome: SupervisionOutcome,
    settled: list[tuple[int, datetime]],
) -> None:
    """Judge one chunk's open checks; ``settled`` gets the checks written in a final state."""
    residences = await _load_checks(cur, span, now, plans)
    if not residences:
        return
    firsts = [
        {"residence_id": residence_id, "first_planned": residence.checks[0].planned_at}
        for residence_id, residence in residences.items()
    ]
    await cur.execute(LOAD_CHECKS, {"firsts": orjson.dumps(firsts).decode()})
    stored: dict[tuple[int, datetime], _Stored] = {}
    for row in await cur.fetchall():
        if final(CheckState(row[2])):
            # Committed by an earlier pass (ours or another gateway's): settled for good.
            plans.settled[row[0]].add(row[1])
        else:
            stored[row[0], row[1]] = tuple(row[2:])
    # A check the camera or a visit settled is not judged again (devices.supervision.final):
    # late in the night most are, and the facts are then read from the earliest open window
    # of each residence, not from the night's first.
    for residence_id, residence in list(residences.items()):
        done = plans.settled.get(residence_id)
        if done:
            residence.checks = [c for c in residence.checks if c.planned_at not in done]
        if not residence.checks:
            del residences[residence_id]
    if not residences:
        return
    span["first_planned"] = min(r.checks[0].planned_at for r in residences.values())
    since = min(c.window_start for r in residences.values() for c in r.checks)
    span.update(since=since, now=now)
    await _load_facts(cur, residences, span)
    lock_visits = _lock_visits(residences)
    if lock_visits:
        await cur.execute(SAVE_LOCK_VISITS, (orjson.dumps(lock_visits).decode(),))
    await cur.execute(LOAD_ALERTS, span)
    unresolved: dict[tuple[int, datetime], dict[str, int]] = defaultdict(dict)
    for alert_id, residence_id, planned_at, rule in await cur.fetchall():
        unresolved[residence_id, planned_at][rule] = alert_id

    changed: list[dict[str, Any]] = []
    to_open: list[dict[str, Any]] = []
    to_resolve: list[dict[str, Any]] = []
    for residence_id in sorted(residences):
        residence = residences[residence_id]
        facts = Facts(
            residence.camera_checks,
            residence.camera_down,
            residence.absences,
            sorted(residence.visits),
        )
        facts_key = _facts_key(facts)
        last = plans.judged.get(residence_id)
        remembered = last.checks if last is not None and last.facts == facts_key else {}
        judged: dict[datetime, tuple[_Stored, datetime | None]] = {}
        plans.judged[residence_id] = _Judged(facts_key, judged)
        for check in residence.checks:
            key = (residence_id, check.planned_at)
            previous = stored.get(key)
            kept = remembered.get(check.planned_at)
            if (
                kept is not None
                and previous is not None
                and (kept[1] is None or now < kept[1])
                and _same(previous, kept[0])
            ):
                judged[check.planned_at] = kept
                outcome.unchanged += 1
                continue
            verdict = judge(check, facts, now)
            outcome.judged += 1
            row = _row(verdict)
            judged[check.planned_at] = (row, verdict.next_look)
            if previous is None or not _same(previous, row):
                changed.append(check_record(residence_id, check, verdict, now))
                if final(verdict.state):
                    settled.append(key)
            alerts = unresolved.get(key, {})
            moves = alert_moves(
                CheckState(previous[0]) if previous is not None else None, verdict, alerts
            )
            to_resolve += (
                {"id": alerts[rule], **check_resolve_reason(verdict).alert_fields()}
                for rule in sorted(moves.resolve)
            )
            if moves.open is None:
                continue
            if not residence.cameras:
                _no_camera(residence_id)
                continue
            planned_local = check.planned_at.astimezone(residence.tz).time()
            to_open.append(
                {
                    "device_id": residence.cameras[0],
                    "rule": moves.open,
                    "severity": ALERT_SEVERITY[moves.open].value,
                    **check_alert_reason(moves.open, verdict, planned_local).alert_fields(),
                    "residence_id": residence_id,
                    "planned_at": check.planned_at,
                }
            )

    if changed:
        await cur.execute(SAVE_CHECKS, (orjson.dumps(changed).decode(),))
    changes: list[tuple[int, str]] = []
    if to_resolve:
        await cur.execute(RESOLVE_ALERTS, {"rows": orjson.dumps(to_resolve).decode(), "now": now})
        resolved = sorted(row[0] for row in await cur.fetchall())
        outcome.resolved += len(resolved)
        changes += ((alert_id, "alert.resolved") for alert_id in resolved)
    if to_open:
        await cur.execute(OPEN_ALERTS, {"rows": orjson.dumps(to_open).decode(), "now": now})
        opened = sorted(row[0] for row in await cur.fetchall())
        outcome.opened += len(opened)
        changes += ((alert_id, "alert.opened") for alert_id in opened)
    outcome.change_ids += await record_changes(cur.connection, changes, at=now)


async def _load_checks(
    cur: psycopg.AsyncCursor[tuple[Any, ...]],
    span: dict[str, Any],
    now: datetime,
    plans: PlanCache,
) -> dict[int, _Residence]:
    """The residences of the chunk that have a check whose window has opened, with those
    checks."""
    await cur.execute(PLAN_IDS, span)
    rows: list[tuple[int, str, list[int]]] = await cur.fetchall()
    missing = {i for _, _, plan_ids in rows for i in plan_ids if i not in plans.versions}
    if missing:
        await cur.execute(LOAD_PLANS, (sorted(missing),))
        for plan_id, residence_id, *row in await cur.fetchall():
            plans.versions[plan_id] = _version(plan_id, str(residence_id), row)
    # Most residences have nothing open most of the night: nothing is built for them.
    residences: dict[int, _Residence] = {}
    nights: dict[str, tuple[tzinfo, tuple[date, ...]]] = {}
    for residence_id, timezone, ids in rows:
        if timezone not in nights:
            tz = site_tz(timezone)
            nights[timezone] = (tz, _nights(now, tz))
        tz, its_nights = nights[timezone]
        plan_ids = tuple(ids)
        checks = plans.opened(plan_ids, its_nights, tz, now)
        done = plans.settled.get(residence_id)
        if done:
            checks = [c for c in checks if c.planned_at not in done]
        if checks:
            residences[residence_id] = _Residence(tz, plan_ids, checks)
    return residences


def _nights(now: datetime, tz: tzinfo) -> tuple[date, ...]:
    first, last = night_of(now - NIGHTS_BACK, tz), night_of(now, tz)
    return tuple(first + timedelta(days=n) for n in range((last - first).days + 1))


def _version(plan_id: int, residence_id: str, row: Sequence[Any]) -> PlanVersion | None:
    try:
        return PlanVersion.from_row(residence_id, *row)
    except ValueError as error:
        _unusable_plan(plan_id, str(error))
        return None


async def _load_facts(
    cur: psycopg.AsyncCursor[tuple[Any, ...]],
    residences: dict[int, _Residence],
    span: dict[str, Any],
) -> None:
    """Fill in each residence's cameras, camera checks, lock events, outages, absences and
    visits (three statements for the whole chunk; rows of residences without a check open
    yet are passed over)."""
    await cur.execute(LOAD_DEVICES, span)
    for device_id, kind, residence_id in await cur.fetchall():
        residence = residences.get(residence_id)
        if residence is not None and kind == CAMERA_KIND:
            residence.cameras.append(device_id)
    windows = [
        {"residence_id": residence_id, "since": since, "locks_since": since - LOCK_LOOKBACK}
        for residence_id, residence in sorted(residences.items())
        for since in [min(c.window_start for c in residence.checks)]
    ]
    await cur.execute(LOAD_EVENTS, {"windows": orjson.dumps(windows).decode(), **span})
    for device_id, residence_id, at, kind, outcome, duration_s, by in await cur.fetchall():
        residence = residences.get(residence_id)
        if residence is None:
            continue
        if kind == "camera.check_ended":
            residence.camera_checks.append(CameraCheck(at, outcome, duration_s, by))
        else:
            residence.lock_events[device_id].append((at, kind))
    await cur.execute(LOAD_INTERVALS, span)
    for what, residence_id, start, end in await cur.fetchall():
        residence = residences.get(residence_id)
        if residence is None:
            continue
        if what == "down":
            residence.camera_down.append(Interval(start, end))
        elif what == "away":
            residence.absences.append(Interval(start, end))
        else:
            residence.visits.add(start)


def _lock_visits(residences: dict[int, _Residence]) -> list[dict[str, Any]]:
    """The visits the residences' locks prove, added to their facts; the rows to record."""
    rows: list[dict[str, Any]] = []
    for residence_id, residence in residences.items():
        for lock_id in sorted(residence.lock_events):
            for visited_at in visits_from_lock(residence.lock_events[lock_id]):
                residence.visits.add(visited_at)
                rows.append(
                    {
                        "residence_id": residence_id,
                        "visited_at": visited_at,
                        "lock_device_id": lock_id,
                    }
                )
    return rows


def _row(verdict: Verdict) -> _Stored:
    return (
        verdict.state.value,
        verdict.seen_at,
        verdict.duration_s,
        verdict.not_seen,
        verdict.visit_needed,
        verdict.by_visit,
        verdict.camera_failed,
        verdict.retry_at,
        _visited_at(verdict),
    )


def _visited_at(verdict: Verdict) -> datetime | None:
    """When the visit that settled the check was made (a visited verdict's ``since``)."""
    return verdict.since if verdict.state is CheckState.VISITED else None


def _same(stored: _Stored, row: _Stored) -> bool:
    """Whether the row as stored says what ``row`` says (duration_s is stored as a real)."""
    if stored[2] is None or row[2] is None:
        return stored == row
    return (
        stored[:2] == row[:2]
        and stored[3:] == row[3:]
        and math.isclose(stored[2], row[2], rel_tol=1e-6)
    )


def check_record(
    residence_id: int, check: PlannedCheck, verdict: Verdict, decided_at: datetime
) -> dict[str, Any]:
    """A row of :data:`SAVE_CHECKS`: the check's verdict, reached at ``decided_at``."""
    return {
        "residence_id": residence_id,
        "planned_at": check.planned_at,
        "night": check.night,
        "state": verdict.state.value,
        "seen_at": verdict.seen_at,
        "duration_s": verdict.duration_s,
        "not_seen": verdict.not_seen,
        "visit_needed": verdict.visit_needed,
        "by_visit": verdict.by_visit,
        "camera_failed": verdict.camera_failed,
        "retry_at": verdict.retry_at,
        "visited_at": _visited_at(verdict),
        "decided_at": decided_at,
    }


@lru_cache(maxsize=4096)
def _no_camera(residence_id: int) -> None:
    """Logged once per residence (cached): its supervision alerts have no camera to go on."""
    log.warning(
        "residence %s has no active camera: its supervision alerts are not opened", residence_id
    )


@lru_cache(maxsize=1024)
def _unusable_plan(plan_id: int, problem: str) -> None:
    """Logged once per plan version (cached): a version the core refuses is left out."""
    log.warning("supervision plan %s left out: %s", plan_id, problem)
