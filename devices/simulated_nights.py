"""Simulated nights of camera supervision: the residences, plans and absences a simulated fleet
gets, how each planned check goes, and the verdicts the gateway would reach on them (pure, seeded).

The simulator's fleet places its devices by apartment label (``Lgh 1001``: device k of every
kind in the same apartment), so a *residence* here is a label with its devices; one with a
camera gets a plan of one to three checks a night (:func:`demo_plans`), and two get an absence
(:func:`demo_absences`). :class:`NightSchedule` says, night by night, how each planned check goes
(:class:`CheckStory`): mostly seen in its window, some late, some not seen and retried 15
minutes later, a few missed, now and then a technical failure; a check that ends in a needed
visit is followed by the night patrol (the residence's lock unlocked and locked again, or a
visit staff record by hand). The backfill (``tools.backfill``) writes the stories' events and
the live simulator (``devices.simulator.Fleet``) publishes them; each story is drawn from its
own random stream, seeded by the fleet seed, the camera and the planned instant, so the
backfill and a later live run tell the same story of a check.

:func:`replay` is what the gateway's supervision pass would have decided about one check of the
past, pass after pass: it calls :func:`devices.supervision.judge` and
:func:`devices.supervision.alert_moves` at every moment the verdict can change, so the past
nights' ``supervision_checks`` and supervision alerts come from the same rules as tonight's.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from typing import Final

import orjson

from devices.reasons import Reason
from devices.simulator import EventData, SimDevice, _lognormal, _pick
from devices.supervision import (
    ALERT_SEVERITY,
    SUPERVISION_MISSED,
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
    local_instant,
    night_of,
    planned_checks,
    visits_from_lock,
)

__all__ = [
    "CAMERA",
    "LOCK",
    "CheckStory",
    "Course",
    "Happening",
    "JudgedCheck",
    "JudgedNight",
    "NightSchedule",
    "PastNights",
    "SimAbsence",
    "SimResidence",
    "StaffVisit",
    "SupervisionAlert",
    "demo_absences",
    "demo_plans",
    "facts_for",
    "judged_until",
    "replay",
    "residences_of",
]

CAMERA: Final = "safety_camera"
LOCK: Final = "door_lock"

# Plans as municipalities write them (issue 11): one to three checks a night, on fixed slots.
_PLANS: Final[tuple[tuple[tuple[time, ...], float], ...]] = (
    ((time(22, 0), time(2, 0), time(5, 0)), 0.30),
    ((time(0, 0), time(2, 0), time(5, 0)), 0.15),
    ((time(23, 0), time(4, 0)), 0.30),
    ((time(1, 0),), 0.15),
    ((time(22, 30),), 0.10),
)
_WEEKNIGHTS: Final = frozenset(range(5))  # Monday to Friday evenings: family visits weekends


class Course(StrEnum):
    """How one planned check goes."""

    IN_WINDOW = "in_window"  # seen within the window
    LATE = "late"  # seen after the window
    RETRY_SEEN = "retry_seen"  # not seen, seen on the retry
    NOT_SEEN_TWICE = "not_seen_twice"  # not seen twice: a visit
    NO_RETRY = "no_retry"  # not seen, no retry in time: a visit
    MISSED = "missed"  # no check at all (now and then a visit later)
    TECHNICAL_FAILURE = "technical_failure"  # the camera could not check: a visit
    ABSENT = "absent"  # the resident is away: nothing happens


# The mix of a night: most checks go as planned; the rest is what the night round is for.
_COURSES: Final[tuple[tuple[str, float], ...]] = (
    (Course.IN_WINDOW, 0.815),
    (Course.LATE, 0.06),
    (Course.RETRY_SEEN, 0.05),
    (Course.NOT_SEEN_TWICE, 0.015),
    (Course.NO_RETRY, 0.01),
    (Course.MISSED, 0.03),
    (Course.TECHNICAL_FAILURE, 0.02),
)
_MISSED_THEN_VISITED: Final = 0.3
# A check takes 20-30 s (issue 11); the patrol is there 8 to 35 minutes after the call.
_CHECK_S: Final = (25.0, 0.4, 8.0, 120.0)
_PATROL_S: Final = (8 * 60.0, 35 * 60.0)
# Staff answer a supervision alert the camera or a visit did not settle: acknowledged within
# minutes, resolved once they have made sure (median, spread, min, max in seconds).
_ACK_S: Final = (4 * 60.0, 0.8, 30.0, 45 * 60.0)
_RESOLVE_S: Final = (20 * 60.0, 0.6, 2 * 60.0, 2 * 3600.0)
# The gateway looks at the nights from night_of(now - 18 h) (gateway.supervision.NIGHTS_BACK):
# a check is not judged again once its night has left that range.
_JUDGED_FOR: Final = timedelta(hours=18)


@dataclass(frozen=True, slots=True)
class SimResidence:
    """An apartment of the simulated fleet: its key (the label, or the database id as text),
    label and devices; at most one camera and one lock are used for supervision."""

    key: str
    label: str
    device_ids: tuple[str, ...]
    camera_id: str | None = None
    lock_id: str | None = None


@dataclass(frozen=True, slots=True)
class SimAbsence:
    """A resident away: [starts_at, expected_end)."""

    key: str
    reason: str
    starts_at: datetime
    expected_end: datetime

    @property
    def interval(self) -> Interval:
        """The span the absence pauses the checks of."""
        return Interval(self.starts_at, self.expected_end)


@dataclass(frozen=True, slots=True)
class Happening:
    """One event a simulated device publishes at ``at``."""

    at: datetime
    device_id: str
    type: str
    data: EventData


@dataclass(frozen=True, slots=True)
class CheckStory:
    """How one planned check goes: the camera's (and the lock's) events, and a visit staff
    record by hand where the residence has no lock to prove it."""

    check: PlannedCheck
    course: Course
    events: tuple[Happening, ...] = ()
    staff_visit_at: datetime | None = None
    staff: str = ""


@dataclass(frozen=True, slots=True)
class SupervisionAlert:
    """A supervision alert of the past, as the gateway opened it and the system or staff
    acknowledged and resolved it (None: not yet). Its reasons are the gateway's
    (devices.reasons); staff resolving it give none, as on the board."""

    rule: str
    severity: str
    reason: Reason
    opened_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    cleared_reason: Reason | None = None

    @property
    def state(self) -> str:
        """The alert's state as the alerts table names it."""
        if self.resolved_at is not None:
            return "resolved"
        return "open" if self.acknowledged_at is None else "acknowledged"


@dataclass(frozen=True, slots=True)
class JudgedCheck:
    """A check's verdict as last decided, when, the alerts it had and the lock visits the
    gateway would have recorded while judging it."""

    check: PlannedCheck
    verdict: Verdict
    decided_at: datetime
    alerts: tuple[SupervisionAlert, ...] = ()
    lock_visits: tuple[datetime, ...] = ()


def residences_of(devices: Iterable[SimDevice], *, key_box_every: int = 0) -> list[SimResidence]:
    """The fleet's apartments, in order of first device, keyed by label, each with its devices.

    With ``key_box_every`` n, every n-th apartment with a camera keeps its keys in a key box:
    its lock is left out of the residence, so no lock proves a visit there and the patrol's
    visits are recorded by staff. (A residence with a lock has a home-care visit most
    mornings, and a visit from a check's window on settles the check: without these, the
    figures would show hardly a missed check.)"""
    by_label: dict[str, list[SimDevice]] = defaultdict(list)
    for device in devices:
        by_label[device.label].append(device)
    residences: list[SimResidence] = []
    cameras = 0
    for label, members in by_label.items():
        camera = next((d.id for d in members if d.kind == CAMERA), None)
        lock = next((d.id for d in members if d.kind == LOCK), None)
        if camera is not None:
            cameras += 1
            if key_box_every and cameras % key_box_every == 0:
                members = [d for d in members if d.kind != LOCK]
                lock = None
        residences.append(SimResidence(label, label, tuple(d.id for d in members), camera, lock))
    return residences


def demo_plans(
    residences: Sequence[SimResidence],
    *,
    recorded_at: datetime,
    changed_at: datetime | None = None,
    seed: int = 1,
) -> dict[str, list[PlanVersion]]:
    """A plan for every residence with a camera, recorded at ``recorded_at``: one to three
    checks a night, one in nine on weeknights only; one in eight changed at ``changed_at`` (a
    new care decision: another set of times)."""
    plans: dict[str, list[PlanVersion]] = {}
    for n, residence in enumerate(r for r in residences if r.camera_id is not None):
        rng = random.Random(f"carewatch-nights:{seed}:plan:{residence.camera_id}")  # noqa: S311 -- simulation
        times = _plan_times(rng)
        weekdays = _WEEKNIGHTS if n % 9 == 4 else frozenset(range(7))
        versions = [PlanVersion(residence.key, recorded_at, times, weekdays)]
        if changed_at is not None and n % 8 == 2:
            changed = times
            while changed == times:
                changed = _plan_times(rng)
            versions.append(PlanVersion(residence.key, changed_at, changed, weekdays))
        plans[residence.key] = versions
    return plans


def _plan_times(rng: random.Random) -> tuple[time, ...]:
    pick = rng.random() * sum(weight for _, weight in _PLANS)
    for times, weight in _PLANS:
        pick -= weight
        if pick < 0:
            return times
    return _PLANS[-1][0]


def demo_absences(
    planned: Sequence[str], *, start: datetime, end: datetime, tz: tzinfo
) -> list[SimAbsence]:
    """Two absences among the ``planned`` residence keys: a hospital stay of four nights in the
    middle of [start, end) when it is a week or longer, and a trip that began the morning
    before ``end`` and lasts three days (its checks paused tonight)."""
    absences: list[SimAbsence] = []
    if len(planned) >= 2 and end - start >= timedelta(days=7):
        middle = (start + (end - start) / 2).astimezone(tz)
        admitted = middle.replace(hour=14, minute=0, second=0, microsecond=0)
        absences.append(
            SimAbsence(planned[1], "hospital", admitted.astimezone(UTC), _days(admitted, 4))
        )
    if planned:
        before = (end - timedelta(days=1)).astimezone(tz)
        left = before.replace(hour=9, minute=30, second=0, microsecond=0)
        if left.astimezone(UTC) >= start:
            absences.append(SimAbsence(planned[0], "travel", left.astimezone(UTC), _days(left, 3)))
    return absences


def _days(local: datetime, n: int) -> datetime:
    """``n`` days after ``local`` by the wall clock (a stay over a clock change keeps its hour)."""
    return (
        (local.replace(tzinfo=None) + timedelta(days=n))
        .replace(tzinfo=local.tzinfo)
        .astimezone(UTC)
    )


@dataclass(slots=True)
class NightSchedule:
    """The planned checks of ``residences`` under ``plans`` (by residence key) and how each
    goes, night by night, in the time zone ``tz``."""

    residences: Sequence[SimResidence]
    plans: Mapping[str, Sequence[PlanVersion]]
    absences: Sequence[SimAbsence] = ()
    tz: tzinfo = UTC
    seed: int = 1
    staff: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.staff:
            rng = random.Random(f"carewatch-nights:{self.seed}:staff")  # noqa: S311 -- simulation
            self.staff = tuple(f"staff-{n}" for n in rng.sample(range(1000, 10_000), 6))

    @property
    def cameras(self) -> frozenset[str]:
        """The cameras whose checks the plans drive."""
        return frozenset(
            r.camera_id for r in self.residences if r.camera_id is not None and r.key in self.plans
        )

    def night(self, night: date) -> list[CheckStory]:
        """Every planned check of ``night`` with its story, by residence then time."""
        stories: list[CheckStory] = []
        for residence in self.residences:
            versions = self.plans.get(residence.key)
            if residence.camera_id is None or not versions:
                continue
            away = [a.interval for a in self.absences if a.key == residence.key]
            for check in planned_checks(versions, night, self.tz):
                absent = any(interval.contains(check.planned_at) for interval in away)
                stories.append(self.story(residence, check, absent=absent))
        return stories

    def events(self, night: date) -> list[tuple[datetime, str, str, EventData]]:
        """The events of ``night``'s stories: (when, device id, type, data), for the live
        fleet (:class:`devices.simulator.NightEvents`)."""
        return [
            (event.at, event.device_id, event.type, event.data)
            for story in self.night(night)
            for event in story.events
        ]

    def story(self, residence: SimResidence, check: PlannedCheck, *, absent: bool) -> CheckStory:
        """How ``check`` goes; the same for the same seed, camera and planned instant."""
        camera = residence.camera_id
        if camera is None:
            raise ValueError(f"residence {residence.label} has no camera")
        if absent:
            return CheckStory(check, Course.ABSENT)
        planned_ms = int(check.planned_at.timestamp() * 1000)
        rng = random.Random(f"carewatch-nights:{self.seed}:{camera}:{planned_ms}")  # noqa: S311 -- simulation
        course = Course(_pick(rng, _COURSES))
        by = rng.choice(self.staff)
        window = timedelta(seconds=check.window_s)
        events: list[Happening] = []

        def look(ended: datetime, outcome: str) -> datetime:
            duration_s = round(_lognormal(rng, *_CHECK_S), 1)
            if outcome == "technical_failure":
                duration_s = round(rng.uniform(2, 10), 1)
            started = ended - timedelta(seconds=duration_s)
            events.append(Happening(started, camera, "camera.check_started", {"by": by}))
            data: EventData = {"by": by, "duration_s": duration_s, "outcome": outcome}
            events.append(Happening(ended, camera, "camera.check_ended", data))
            return ended

        # The first look: around the planned time, inside the window (30 s clear of its ends).
        spread = window.total_seconds() - 30
        first = check.planned_at + timedelta(
            seconds=max(-spread, min(spread, rng.gauss(60, window.total_seconds() / 3)))
        )
        retry = timedelta(seconds=check.retry_s)
        visit_at: datetime | None = None
        if course is Course.IN_WINDOW:
            look(first, "seen")
        elif course is Course.LATE:
            look(check.window_end + timedelta(seconds=rng.uniform(90, 45 * 60)), "seen")
        elif course in (Course.RETRY_SEEN, Course.NOT_SEEN_TWICE):
            look(first, "not_seen")
            # Staff look again a little before the retry is due.
            again = first + retry * rng.uniform(0.6, 0.95)
            ended = look(again, "seen" if course is Course.RETRY_SEEN else "not_seen")
            if course is Course.NOT_SEEN_TWICE:
                visit_at = ended + timedelta(seconds=rng.uniform(*_PATROL_S))
        elif course is Course.NO_RETRY:
            look(first, "not_seen")
            visit_at = first + retry + timedelta(seconds=rng.uniform(*_PATROL_S))
        elif course is Course.TECHNICAL_FAILURE:
            ended = look(first, "technical_failure")
            visit_at = ended + timedelta(seconds=rng.uniform(*_PATROL_S))
        elif rng.random() < _MISSED_THEN_VISITED:  # missed: the patrol goes now and then
            visit_at = check.window_end + timedelta(seconds=rng.uniform(10 * 60, 40 * 60))
        if visit_at is None:
            return CheckStory(check, course, tuple(events), staff=by)
        if residence.lock_id is None:
            return CheckStory(check, course, tuple(events), staff_visit_at=visit_at, staff=by)
        # The patrol lets itself in and locks behind it on leaving: the visit is the lock.
        who: EventData = {"by": by, "method": _pick(rng, (("tag", 0.7), ("app", 0.3)))}
        inside = timedelta(seconds=rng.uniform(3 * 60, 10 * 60))
        lock = residence.lock_id
        events.append(Happening(visit_at - inside, lock, "lock.unlocked", who))
        events.append(Happening(visit_at, lock, "lock.locked", who))
        return CheckStory(check, course, tuple(events), staff=by)


def judged_until(check: PlannedCheck, tz: tzinfo) -> datetime:
    """Until when the gateway judges ``check``: its night leaves the pass's range once
    ``night_of(now - 18 h)`` is the next night."""
    return local_instant(check.night + timedelta(days=1), time(12, 0), tz) + _JUDGED_FOR


def replay(
    check: PlannedCheck,
    facts: Facts,
    until: datetime,
    *,
    tz: tzinfo,
    staff: Sequence[str] = ("staff-night",),
    seed: int = 1,
    lock_visits: Iterable[datetime] = (),
) -> JudgedCheck | None:
    """What the gateway's passes would have decided about ``check`` up to ``until`` (None: its
    window had not opened). Judged at every moment its verdict can change, with the alerts
    :func:`alert_moves` opens and resolves at each. Night staff answer each alert (times drawn
    from the check's own stream, kept only up to ``until``): they acknowledge it within minutes
    and resolve a missed check's by hand once they have made sure; a visit-needed alert the
    visit resolves, or staff when the gateway has stopped judging the check. ``lock_visits``:
    those of ``facts.visits`` the residence's lock proved; the ones the gateway would have
    recorded while it judged the check come back in :attr:`JudgedCheck.lock_visits`."""
    if until < check.window_start:
        return None
    horizon = min(until, judged_until(check, tz))
    moments = {check.window_start, check.planned_at, check.window_end, horizon}
    retry = timedelta(seconds=check.retry_s)
    for camera_check in facts.checks:
        moments.update((camera_check.at, camera_check.at + retry))
    moments.update(facts.visits)
    for outage in facts.camera_down:
        moments.add(outage.start)
        if outage.end is not None:
            moments.add(outage.end)
    planned_ms = int(check.planned_at.timestamp() * 1000)
    rng = random.Random(f"carewatch-nights:{seed}:staff:{check.residence_id}:{planned_ms}")  # noqa: S311 -- simulation
    previous: CheckState | None = None
    verdict: Verdict | None = None
    decided_at = check.window_start
    opened: dict[str, _Answer] = {}  # unresolved, by rule
    alerts: list[SupervisionAlert] = []
    planned_local = check.planned_at.astimezone(tz).time()
    opens = check.window_start
    for moment in sorted(m for m in moments if opens <= m <= horizon):
        for rule in sorted(opened):
            answer = opened[rule]
            if rule == SUPERVISION_MISSED and answer.resolve_at <= min(moment, until):
                alerts.append(answer.by_staff(until))
                del opened[rule]
        verdict = judge(check, facts, moment)
        if verdict.state is not previous:
            decided_at = moment
        moves = alert_moves(previous, verdict, opened)
        for rule in sorted(moves.resolve):
            alerts.append(opened.pop(rule).by_system(moment, check_resolve_reason(verdict)))
        if moves.open is not None:
            alert = SupervisionAlert(
                moves.open,
                ALERT_SEVERITY[moves.open].value,
                check_alert_reason(moves.open, verdict, planned_local),
                moment,
            )
            acknowledged = moment + timedelta(seconds=_lognormal(rng, *_ACK_S))
            resolved = acknowledged + timedelta(seconds=_lognormal(rng, *_RESOLVE_S))
            opened[moves.open] = _Answer(alert, rng.choice(staff), acknowledged, resolved)
        previous = verdict.state
        if final(verdict.state):
            break
    assert verdict is not None  # window_start is always a moment
    alerts += (opened[rule].by_staff(until) for rule in sorted(opened))
    # The gateway reads lock events from an hour before the window (LOCK_LOOKBACK) while the
    # check is open, and records the visits they prove.
    looked = (
        check.window_start - timedelta(hours=1),
        decided_at if final(verdict.state) else horizon,
    )
    recorded = tuple(v for v in lock_visits if looked[0] <= v <= looked[1])
    return JudgedCheck(check, verdict, decided_at, tuple(alerts), recorded)


@dataclass(frozen=True, slots=True)
class _Answer:
    """An open alert and how night staff will answer it: who, when acknowledged, when resolved
    by hand (unless a check or a visit resolves it first)."""

    alert: SupervisionAlert
    by: str
    acknowledge_at: datetime
    resolve_at: datetime

    def by_system(self, moment: datetime, reason: Reason) -> SupervisionAlert:
        """Resolved at ``moment`` by the gateway (acknowledged first, if staff were quicker)."""
        acked = self.acknowledge_at <= moment
        return replace(
            self.alert,
            acknowledged_at=self.acknowledge_at if acked else None,
            acknowledged_by=self.by if acked else None,
            resolved_at=moment,
            resolved_by="system",
            cleared_reason=reason,
        )

    def by_staff(self, until: datetime) -> SupervisionAlert:
        """Acknowledged and resolved by staff, as far as ``until`` reaches."""
        if self.acknowledge_at > until:
            return self.alert
        acknowledged = replace(
            self.alert, acknowledged_at=self.acknowledge_at, acknowledged_by=self.by
        )
        if self.resolve_at > until:
            return acknowledged
        return replace(acknowledged, resolved_at=self.resolve_at, resolved_by=self.by)


def facts_for(
    story_checks: Iterable[CameraCheck],
    *,
    lock_events: Iterable[tuple[datetime, str]] = (),
    staff_visits: Iterable[datetime] = (),
    camera_down: Iterable[Interval] = (),
    absences: Iterable[Interval] = (),
) -> Facts:
    """The facts of one residence as the gateway loads them: its camera's checks, the visits
    its lock proves and staff recorded, its camera's outages and its absences."""
    visits = sorted({*visits_from_lock(lock_events), *staff_visits})
    return Facts(tuple(story_checks), tuple(camera_down), tuple(absences), tuple(visits))


@dataclass(frozen=True, slots=True)
class StaffVisit:
    """A physical visit staff recorded by hand (the residence has no lock to prove it)."""

    key: str
    at: datetime
    by: str


@dataclass(frozen=True, slots=True)
class JudgedNight:
    """A night of the past as the gateway would have left it: each check whose window opened in
    the history, judged (with the residence's key), and the visits staff recorded."""

    night: date
    checks: tuple[tuple[str, JudgedCheck], ...]
    staff_visits: tuple[StaffVisit, ...]


@dataclass(slots=True)
class _Observed:
    """What the history shows of one residence: its camera's checks, its lock's events and its
    camera's outages, in time order."""

    checks: list[CameraCheck] = field(default_factory=list)
    lock_events: list[tuple[datetime, str]] = field(default_factory=list)
    camera_down: list[Interval] = field(default_factory=list)


Row = tuple[int, str, str, str, str]
"""As devices.history.Row: (time in epoch ms, device id, event id, type, data as JSON text)."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_FACTS_BEFORE: Final = timedelta(hours=6)  # a window (up to 3 h) and the lock look-back (1 h)
_OBSERVED: Final = frozenset({"camera.check_ended", "lock.unlocked", "lock.locked"})


class PastNights:
    """The backfill's night supervision over [start, end), a UTC day at a time, in order:
    :meth:`rows` are the day's events of the planned checks, :meth:`observe` takes every row
    and outage the day wrote (the random visits of a lock prove visits too), and :meth:`judged`
    hands back each night once nothing written later can change its verdicts. Only checks
    whose window opened in the history are judged: an earlier one has no events to go on."""

    def __init__(self, schedule: NightSchedule, start: datetime, end: datetime) -> None:
        self.schedule = schedule
        self.start, self.end = start, end
        self._stories: dict[date, list[CheckStory]] = {}
        self._next = night_of(start, schedule.tz) - timedelta(days=1)  # the first not judged
        self._last = night_of(end, schedule.tz)
        self._by_device: dict[str, tuple[str, str]] = {}  # device id -> (residence key, kind)
        for residence in schedule.residences:
            if residence.key not in schedule.plans:
                continue
            if residence.camera_id is not None:
                self._by_device[residence.camera_id] = (residence.key, CAMERA)
            if residence.lock_id is not None:
                self._by_device[residence.lock_id] = (residence.key, LOCK)
        self._observed: dict[str, _Observed] = defaultdict(_Observed)

    def stories(self, night: date) -> list[CheckStory]:
        """The night's stories (kept until the night is judged)."""
        if night < self._next:
            return self.schedule.night(night)  # judged already: not kept again
        stories = self._stories.get(night)
        if stories is None:
            stories = self._stories[night] = self.schedule.night(night)
        return stories

    def rows(self, lo_ms: int, hi_ms: int) -> list[Row]:
        """The planned checks' events in [lo_ms, hi_ms) and in the history, as rows; each
        event's id is its check's planned instant and its place in the story."""
        lo = max(_EPOCH + timedelta(milliseconds=lo_ms), self.start)
        hi = min(_EPOCH + timedelta(milliseconds=hi_ms), self.end)
        rows: list[Row] = []
        if lo >= hi:
            return rows
        first = night_of(lo, self.schedule.tz) - timedelta(days=1)
        for n in range((night_of(hi, self.schedule.tz) - first).days + 1):
            for story in self.stories(first + timedelta(days=n)):
                planned_s = int(story.check.planned_at.timestamp())
                for k, event in enumerate(story.events):
                    if lo <= event.at < hi:
                        ms = (event.at - _EPOCH) // timedelta(milliseconds=1)
                        data = orjson.dumps(event.data).decode()
                        rows.append((ms, event.device_id, f"n{planned_s:x}-{k}", event.type, data))
        return rows

    def observe(self, rows: Iterable[Row], outages: Iterable[tuple[str, Interval]] = ()) -> None:
        """The written rows (check_ended and lock events of the residences' devices are kept)
        and the devices' outages (device id, interval: those of cameras are kept)."""
        for ms, device_id, _, kind, data in rows:
            if kind not in _OBSERVED:  # most rows are heartbeats
                continue
            owner = self._by_device.get(device_id)
            if owner is None:
                continue
            at = _EPOCH + timedelta(milliseconds=ms)
            observed = self._observed[owner[0]]
            if kind == "camera.check_ended" and owner[1] == CAMERA:
                fields = orjson.loads(data)
                duration = fields.get("duration_s")
                by = fields.get("by")
                observed.checks.append(
                    CameraCheck(
                        at,
                        str(fields.get("outcome", "")),
                        float(duration) if isinstance(duration, int | float) else None,
                        by if isinstance(by, str) else None,
                    )
                )
            elif kind in ("lock.unlocked", "lock.locked") and owner[1] == LOCK:
                observed.lock_events.append((at, kind))
        for device_id, interval in outages:
            owner = self._by_device.get(device_id)
            if owner is not None and owner[1] == CAMERA:
                self._observed[owner[0]].camera_down.append(interval)

    def judged(self, upto_ms: int) -> list[JudgedNight]:
        """The nights that the history up to ``upto_ms`` settles for good (all that are left
        once it reaches the end), in order; their facts are then forgotten."""
        upto = _EPOCH + timedelta(milliseconds=upto_ms)
        tz = self.schedule.tz
        ready: list[JudgedNight] = []
        while self._next <= self._last:
            night = self._next
            horizon = local_instant(night + timedelta(days=1), time(12, 0), tz) + _JUDGED_FOR
            if upto < min(horizon, self.end):
                break
            ready.append(self._judge(night))
            self._stories.pop(night, None)
            self._next = night + timedelta(days=1)
            self._forget(local_instant(self._next, time(12, 0), tz) - _FACTS_BEFORE)
        return ready

    def _judge(self, night: date) -> JudgedNight:
        judged: list[tuple[str, JudgedCheck]] = []
        visits: list[StaffVisit] = []
        absences: dict[str, list[Interval]] = defaultdict(list)
        for absence in self.schedule.absences:
            absences[absence.key].append(absence.interval)
        for story in self.stories(night):
            key = story.check.residence_id
            if story.check.window_start < self.start:
                continue
            if story.staff_visit_at is not None and story.staff_visit_at < self.end:
                visits.append(StaffVisit(key, story.staff_visit_at, story.staff))
        staff_visits: dict[str, list[datetime]] = defaultdict(list)
        for visit in visits:
            staff_visits[visit.key].append(visit.at)
        tz = self.schedule.tz
        # What the night's checks can be judged from: from its noon (less a window and the
        # lock look-back) until the gateway stops looking at it.
        since = local_instant(night, time(12, 0), tz) - _FACTS_BEFORE
        until = local_instant(night + timedelta(days=1), time(12, 0), tz) + _JUDGED_FOR
        facts_of: dict[str, tuple[Facts, list[datetime]]] = {}
        for story in self.stories(night):
            key = story.check.residence_id
            if story.check.window_start < self.start:
                continue
            if key not in facts_of:
                observed = self._observed[key]
                events = [e for e in observed.lock_events if since <= e[0] <= until]
                lock_visits = visits_from_lock(events)
                facts_of[key] = (
                    Facts(
                        [c for c in observed.checks if since <= c.at <= until],
                        observed.camera_down,
                        absences[key],
                        sorted({*lock_visits, *staff_visits[key]}),
                    ),
                    lock_visits,
                )
            facts, lock_visits = facts_of[key]
            result = replay(
                story.check,
                facts,
                self.end,
                tz=self.schedule.tz,
                staff=self.schedule.staff,
                seed=self.schedule.seed,
                lock_visits=lock_visits,
            )
            if result is not None:
                judged.append((key, result))
        return JudgedNight(night, tuple(judged), tuple(visits))

    def _forget(self, before: datetime) -> None:
        for observed in self._observed.values():
            observed.checks = [c for c in observed.checks if c.at >= before]
            observed.lock_events = [e for e in observed.lock_events if e[0] >= before]
            observed.camera_down = [
                i for i in observed.camera_down if i.end is None or i.end >= before
            ]
