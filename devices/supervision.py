"""Night supervision by camera: which checks a plan asks for, and how each one went.

Pure functions of facts and a clock, no state kept between calls: a gateway that restarts, or
two gateways looking at the same residence, reach the same verdict from the same stored facts,
and the verdict names at most one alert per planned check.

**Plans.** A :class:`PlanVersion` is one version of a residence's supervision plan (care
decisions change; every change is a new version, the old ones kept). Check times are local
wall-clock times in the site's time zone. A *night* is named by the date of its evening: a time
from noon on belongs to that date, a time before noon to the next morning, and the plan's
weekdays and ``valid_from``/``valid_to`` are those of the evening (a check at 02:00 on a
Tuesday morning belongs to Monday's night). :func:`planned_checks` expands a night:

- a version applies to the checks whose window opens while it is in force (from its
  ``recorded_at`` until the next version's): a plan changed at 01:00 drops or moves only checks
  whose window has not opened yet, and never invents a missed check in the past;
- on the night clocks go forward, a time that does not exist (02:30 in Sweden) is checked an
  hour later by the clock (the same instant as 02:30 in winter time); on the night they go
  back, a time that happens twice is checked once, the first time.

**Verdicts.** :func:`judge` says where one planned check stands at ``now``, from the camera's
``camera.check_ended`` events (judged by the device's time), the camera's outages (offline or
stream lost), the residence's absences and the physical visits recorded:

- absent at the planned time → ``paused``: no check falls due, no alert;
- a check ``seen`` within the window → ``done``; after the window → ``late``;
- no check when the window ends → ``missed``, alert ``supervision_missed`` (high); a later
  ``seen`` makes it ``late`` and clears the alert;
- ``not_seen`` → ``retry_due`` until the retry time; ``seen`` by then → ``done`` (after a
  retry); a second ``not_seen``, or nothing by then → ``visit_needed``, alert
  ``physical_visit_needed`` (critical);
- ``technical_failure``, or the camera down at the planned time or when the window ends
  without a check → ``visit_needed`` at once: while a camera is broken, visits replace it;
- a physical visit recorded from the window's start on → ``visited``; it ends the alert.

What counts for a check ends in time. A camera check counts until the residence's next planned
check opens its window (never before this window and its retry are over; at most
:data:`LATE_HORIZON` after this window: :attr:`PlannedCheck.evidence_until`): after that it
belongs to the next check. A physical visit counts until :data:`LATE_HORIZON` after the window
(:attr:`PlannedCheck.visits_until`), however many checks come between: the night patrol may be
busy elsewhere, but the morning's home care is not a visit for last night. A 22:00 check nobody
did stays ``missed`` when the 02:00 check is seen or home care comes in at 08:00.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from typing import Final

from devices.catalog import Severity
from devices.reasons import Reason, ReasonCode

DEFAULT_WINDOW_S: Final = 15 * 60
"""The window around a planned time, either side (±15 min)."""
DEFAULT_RETRY_S: Final = 15 * 60
"""How long after a ``not_seen`` staff look again."""
LATE_HORIZON: Final = timedelta(hours=3)
"""The longest a check may be done late, or settled by a visit, after its window ends (at least
the longest retry a plan may ask for)."""
NIGHT_STARTS: Final = time(12, 0)
"""A check time from this on belongs to the evening's date; before it, to the next morning."""

SUPERVISION_MISSED: Final = "supervision_missed"
PHYSICAL_VISIT_NEEDED: Final = "physical_visit_needed"
ALERT_SEVERITY: Final[Mapping[str, Severity]] = {
    SUPERVISION_MISSED: Severity.HIGH,
    PHYSICAL_VISIT_NEEDED: Severity.CRITICAL,  # someone must go there now
}


class FollowUp(StrEnum):
    """What follows a failed retry, per plan."""

    PHYSICAL_VISIT = "physical_visit"  # the night patrol goes there
    PHONE_THEN_VISIT = "phone_then_visit"  # staff phone first, then go (still a visit alert)


class CheckState(StrEnum):
    """Where a planned check stands (the night round shows these)."""

    UPCOMING = "upcoming"
    DUE = "due"
    DONE = "done"
    LATE = "late"
    MISSED = "missed"
    RETRY_DUE = "retry_due"
    VISIT_NEEDED = "visit_needed"
    VISITED = "visited"
    PAUSED = "paused"


_SETTLED: Final = frozenset({CheckState.DONE, CheckState.LATE, CheckState.VISITED})


@dataclass(frozen=True, slots=True)
class PlanVersion:
    """One version of a residence's plan, in force from ``recorded_at`` (aware) until the
    next version's ``recorded_at``."""

    residence_id: str
    recorded_at: datetime
    check_times: tuple[time, ...]
    weekdays: frozenset[int] = frozenset(range(7))  # of the night's evening, Monday = 0
    valid_from: date | None = None  # first night (evening date), inclusive
    valid_to: date | None = None  # last night, inclusive
    window_s: int = DEFAULT_WINDOW_S
    retry_s: int = DEFAULT_RETRY_S
    follow_up: FollowUp = FollowUp.PHYSICAL_VISIT

    def __post_init__(self) -> None:
        if self.recorded_at.tzinfo is None:
            raise ValueError("recorded_at must be timezone-aware")
        if not 0 < self.window_s <= 3 * 3600 or not 0 < self.retry_s <= 3 * 3600:
            raise ValueError("window_s and retry_s must be between 1 s and 3 h")
        if not self.weekdays <= frozenset(range(7)):
            raise ValueError(f"weekdays are 0 (Monday) to 6, got {sorted(self.weekdays)}")
        if len(set(self.check_times)) != len(self.check_times):
            raise ValueError("check times repeat")

    @classmethod
    def from_row(
        cls,
        residence_id: str,
        recorded_at: datetime,
        check_times: Iterable[time],
        weekdays: Iterable[int],
        valid_from: date | None,
        valid_to: date | None,
        window_s: int,
        retry_s: int,
        follow_up: str,
    ) -> PlanVersion:
        """A version from ``supervision_plans``' columns, in that order (after the residence);
        ValueError if it breaks a rule above (a row written before a rule existed)."""
        return cls(
            residence_id,
            recorded_at,
            tuple(check_times),
            frozenset(weekdays),
            valid_from,
            valid_to,
            window_s,
            retry_s,
            FollowUp(follow_up),
        )

    def covers(self, night: date) -> bool:
        """Whether the plan asks for checks on ``night`` (an evening's date)."""
        return (
            night.weekday() in self.weekdays
            and (self.valid_from is None or night >= self.valid_from)
            and (self.valid_to is None or night <= self.valid_to)
        )


@dataclass(frozen=True, slots=True)
class PlannedCheck:
    """One check a plan asks for: planned at ``planned_at`` (UTC), its window and retry."""

    residence_id: str
    night: date
    planned_at: datetime
    window_s: int = DEFAULT_WINDOW_S
    retry_s: int = DEFAULT_RETRY_S
    follow_up: FollowUp = FollowUp.PHYSICAL_VISIT
    # When the residence's next check of the night opens its window (None: none follows).
    next_window_start: datetime | None = None

    @property
    def evidence_until(self) -> datetime:
        """The last moment a camera check counts for this check (the module's docstring): the
        next check's window, not before this window and its retry are over, and at most
        LATE_HORIZON after this window."""
        latest = self.window_end + LATE_HORIZON
        if self.next_window_start is None:
            return latest
        own = self.window_end + timedelta(seconds=self.retry_s)
        return min(latest, max(own, self.next_window_start))

    @property
    def visits_until(self) -> datetime:
        """The last moment a physical visit counts for this check (the module's docstring)."""
        return self.window_end + LATE_HORIZON

    @property
    def window_start(self) -> datetime:
        """When the check may be done from."""
        return self.planned_at - timedelta(seconds=self.window_s)

    @property
    def window_end(self) -> datetime:
        """When a check not done by then is missed."""
        return self.planned_at + timedelta(seconds=self.window_s)


@dataclass(frozen=True, slots=True)
class CameraCheck:
    """A ``camera.check_ended``: the device's time, its outcome, how long, who."""

    at: datetime
    outcome: str  # seen / not_seen / technical_failure
    duration_s: float | None = None
    by: str | None = None


@dataclass(frozen=True, slots=True)
class Interval:
    """From ``start`` to ``end`` (None: still going)."""

    start: datetime
    end: datetime | None = None

    def contains(self, moment: datetime) -> bool:
        """Whether ``moment`` falls in it (its end excluded)."""
        return self.start <= moment and (self.end is None or moment < self.end)


@dataclass(frozen=True, slots=True)
class Facts:
    """What is known about one residence around one check (any order; the judge sorts)."""

    checks: Sequence[CameraCheck] = ()
    camera_down: Sequence[Interval] = ()
    absences: Sequence[Interval] = ()
    visits: Sequence[datetime] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    """A check's state at ``now``; the alert it needs (at most one); when to look again."""

    state: CheckState
    alert: str | None = None
    since: datetime | None = None  # when the state (and its alert) began
    seen_at: datetime | None = None
    duration_s: float | None = None
    retry_at: datetime | None = None
    by_visit: bool = False  # settled by a physical visit instead of the camera
    camera_failed: bool = False  # a visit was needed because the camera could not check
    not_seen: bool = False  # a check found the resident not seen (then a retry, or a visit)
    visit_needed: bool = False  # a physical visit was (or is) needed
    next_look: datetime | None = None  # None: settled, nothing will change it
    reasons: tuple[str, ...] = field(default=())


def night_of(moment: datetime, tz: tzinfo) -> date:
    """The night (its evening's date) that ``moment`` falls in."""
    local = moment.astimezone(tz)
    return local.date() if local.time() >= NIGHT_STARTS else local.date() - timedelta(days=1)


def local_instant(night: date, at: time, tz: tzinfo) -> datetime:
    """The UTC instant of the check time ``at`` on ``night`` in ``tz``.

    A wall time that does not exist (clocks forward) maps to the instant it would have had in
    the old offset: one hour later by the new clock. One that happens twice (clocks back) maps
    to its first occurrence."""
    day = night if at >= NIGHT_STARTS else night + timedelta(days=1)
    naive = datetime.combine(day, at)
    first = naive.replace(tzinfo=tz, fold=0)
    return first.astimezone(UTC)


def in_force(versions: Sequence[PlanVersion], moment: datetime) -> PlanVersion | None:
    """The version in force at ``moment``: the latest recorded at or before it."""
    current: PlanVersion | None = None
    for version in versions:
        if version.recorded_at <= moment and (
            current is None or version.recorded_at >= current.recorded_at
        ):
            current = version
    return current


def planned_checks(versions: Sequence[PlanVersion], night: date, tz: tzinfo) -> list[PlannedCheck]:
    """Every check of ``night`` for one residence, in time order: each time of each version
    that is in force when that check's window opens."""
    checks: dict[datetime, PlannedCheck] = {}
    for version in versions:
        if not version.covers(night):
            continue
        for at in version.check_times:
            planned_at = local_instant(night, at, tz)
            opens = planned_at - timedelta(seconds=version.window_s)
            if in_force(versions, opens) is not version or planned_at in checks:
                continue
            checks[planned_at] = PlannedCheck(
                version.residence_id,
                night,
                planned_at,
                version.window_s,
                version.retry_s,
                version.follow_up,
            )
    ordered = [checks[key] for key in sorted(checks)]
    return [
        replace(check, next_window_start=following.window_start)
        for check, following in itertools.pairwise(ordered)
    ] + ordered[-1:]


def judge(check: PlannedCheck, facts: Facts, now: datetime) -> Verdict:
    """Where ``check`` stands at ``now`` (see the module's docstring)."""
    if any(absence.contains(check.planned_at) for absence in facts.absences):
        return Verdict(CheckState.PAUSED, since=check.window_start, reasons=("absent",))
    if now < check.window_start:
        return Verdict(CheckState.UPCOMING, next_look=check.window_start)
    visits_until = min(now, check.visits_until)
    visits = sorted(v for v in facts.visits if check.window_start <= v <= visits_until)
    verdict = _camera_verdict(check, facts, now, min(now, check.evidence_until))
    if verdict.state in (CheckState.DONE, CheckState.LATE) or not visits:
        return verdict
    # A visit settles whatever the camera left open: a retry, a visit needed, a missed check.
    return Verdict(
        CheckState.VISITED,
        since=visits[0],
        by_visit=True,
        camera_failed=verdict.camera_failed,
        not_seen=verdict.not_seen,
        visit_needed=verdict.visit_needed,
        reasons=(*verdict.reasons, "physical visit"),
    )


def _camera_verdict(check: PlannedCheck, facts: Facts, now: datetime, until: datetime) -> Verdict:
    end = check.window_end
    checks = sorted(
        (c for c in facts.checks if check.window_start <= c.at <= until),
        key=lambda c: (c.at, c.outcome),  # equal times: one order, whatever arrived first
    )

    def down_at(moment: datetime) -> bool:
        return any(outage.contains(moment) for outage in facts.camera_down)

    def visit_needed(since: datetime, reason: str, *, camera_failed: bool) -> Verdict:
        return Verdict(
            CheckState.VISIT_NEEDED,
            PHYSICAL_VISIT_NEEDED,
            since=since,
            camera_failed=camera_failed,
            not_seen=not camera_failed,
            visit_needed=True,
            reasons=(reason,),
        )

    retry_at: datetime | None = None
    for camera_check in checks:
        if retry_at is not None and camera_check.at > retry_at:
            break  # the retry was not done in time: decided below
        if camera_check.outcome == "seen":
            state = CheckState.DONE if camera_check.at <= end or retry_at else CheckState.LATE
            return Verdict(
                state,
                since=camera_check.at,
                seen_at=camera_check.at,
                duration_s=camera_check.duration_s,
                not_seen=retry_at is not None,
                reasons=("seen after a retry",) if retry_at else ("seen",),
            )
        if camera_check.outcome == "technical_failure":
            return replace(
                visit_needed(camera_check.at, "technical failure", camera_failed=True),
                not_seen=retry_at is not None,
            )
        if camera_check.outcome != "not_seen":
            continue  # not an outcome of the contract: it says nothing
        if retry_at is not None:  # a second not_seen
            return visit_needed(camera_check.at, "not seen twice", camera_failed=False)
        retry_at = camera_check.at + timedelta(seconds=check.retry_s)
    if retry_at is not None:
        if now < retry_at:
            return Verdict(
                CheckState.RETRY_DUE,
                since=retry_at - timedelta(seconds=check.retry_s),
                retry_at=retry_at,
                next_look=retry_at,
                not_seen=True,
                reasons=("not seen",),
            )
        return visit_needed(retry_at, "no retry in time", camera_failed=False)
    if now >= check.planned_at and down_at(check.planned_at):
        return visit_needed(check.planned_at, "camera down at the planned time", camera_failed=True)
    if now < end:
        next_look = check.planned_at if now < check.planned_at else end
        return Verdict(CheckState.DUE, since=check.window_start, next_look=next_look)
    if down_at(end):
        return visit_needed(end, "camera down when the window ended", camera_failed=True)
    # Missed; a late check may still come (and a visit), so keep looking until the night ends.
    return Verdict(
        CheckState.MISSED, SUPERVISION_MISSED, since=end, next_look=None, reasons=("no check",)
    )


def final(state: CheckState) -> bool:
    """Whether a check once recorded in ``state`` is not judged again: the camera or a visit
    settled it, and what arrives later (an absence recorded afterwards, a check reported out
    of order) does not undo that. A paused check is not final: its absence may be cancelled."""
    return state in _SETTLED


def settled(verdict: Verdict) -> bool:
    """Nothing more is expected of the check (the night round moves it to the done list)."""
    return verdict.state in _SETTLED or verdict.state is CheckState.PAUSED


def visits_from_lock(events: Iterable[tuple[datetime, str]]) -> list[datetime]:
    """Physical visits proved by the residence's lock: an unlock followed by a lock, the visit
    at the lock. ``events``: (device time, ``lock.unlocked`` / ``lock.locked``), any order."""
    visits: list[datetime] = []
    unlocked_at: datetime | None = None
    for at, kind in sorted(events):
        if kind == "lock.unlocked":
            unlocked_at = at
        elif kind == "lock.locked" and unlocked_at is not None:
            visits.append(at)
            unlocked_at = None
    return visits


@dataclass(frozen=True, slots=True)
class NightTally:
    """A night's checks counted for managers (one site, or one residence, or all)."""

    planned: int = 0  # every check the plans asked for, paused ones included
    paused: int = 0  # the resident was away
    done_in_window: int = 0
    late: int = 0
    missed: int = 0  # no check and no visit: the alert supervision_missed
    not_seen: int = 0  # found not seen at least once (then seen on a retry, or visited)
    visits_needed: int = 0  # physical_visit_needed, for any reason
    replaced_by_visits: int = 0  # the camera could not check, a visit was made instead

    @property
    def by_camera(self) -> int:
        """Checks the camera did: each one a physical night visit avoided."""
        return self.done_in_window + self.late

    def add(self, verdict: Verdict) -> NightTally:
        """This tally with one more check."""
        state = verdict.state
        return NightTally(
            self.planned + 1,
            self.paused + (state is CheckState.PAUSED),
            self.done_in_window + (state is CheckState.DONE),
            self.late + (state is CheckState.LATE),
            self.missed + (state is CheckState.MISSED),
            self.not_seen + verdict.not_seen,
            self.visits_needed + verdict.visit_needed,
            self.replaced_by_visits + (state is CheckState.VISITED and verdict.camera_failed),
        )


def tally(verdicts: Iterable[Verdict]) -> NightTally:
    """Count ``verdicts`` (see :class:`NightTally`)."""
    total = NightTally()
    for verdict in verdicts:
        total = total.add(verdict)
    return total


# The alert each state asks for (the same as its Verdict.alert): what a stored state implies
# was opened when the check entered it.
_ALERT_OF_STATE: Final[Mapping[CheckState, str]] = {
    CheckState.MISSED: SUPERVISION_MISSED,
    CheckState.VISIT_NEEDED: PHYSICAL_VISIT_NEEDED,
}

_RESOLVED_BECAUSE: Final[Mapping[CheckState, ReasonCode]] = {
    CheckState.DONE: ReasonCode.CHECK_SEEN,
    CheckState.LATE: ReasonCode.CHECK_SEEN_LATE,
    CheckState.VISITED: ReasonCode.CHECK_VISITED,
    CheckState.PAUSED: ReasonCode.RESIDENT_ABSENT,
    CheckState.VISIT_NEEDED: ReasonCode.VISIT_INSTEAD,
}

# Why a visit is needed: the first of a visit_needed verdict's reasons (judge's own words, a
# closed set) as the code of the alert's reason.
_VISIT_BECAUSE: Final[Mapping[str, ReasonCode]] = {
    "technical failure": ReasonCode.VISIT_TECHNICAL_FAILURE,
    "not seen twice": ReasonCode.VISIT_NOT_SEEN_TWICE,
    "no retry in time": ReasonCode.VISIT_NO_RETRY,
    "camera down at the planned time": ReasonCode.VISIT_CAMERA_DOWN_PLANNED,
    "camera down when the window ended": ReasonCode.VISIT_CAMERA_DOWN_WINDOW_END,
}


@dataclass(frozen=True, slots=True)
class AlertMoves:
    """What one check's supervision alerts need: the rule to open (None: none), the
    unresolved ones to resolve."""

    open: str | None = None
    resolve: frozenset[str] = frozenset()


def alert_moves(
    previous: CheckState | None, verdict: Verdict, unresolved: Collection[str]
) -> AlertMoves:
    """How a check's alerts follow its verdict, given its state as last recorded
    (``previous``; None: never judged) and the rules of its alerts not yet resolved.

    An alert opens when the check *enters* the state that asks for it, not on every look
    while it stays there: staff who resolve it by hand are not handed it again a few seconds
    later. Every unresolved one the verdict no longer asks for resolves (the check was seen
    late, visited, paused by an absence, or now needs a visit instead)."""
    wanted = verdict.alert
    opens = (
        wanted
        if wanted is not None
        and wanted not in unresolved
        and (previous is None or _ALERT_OF_STATE.get(previous) != wanted)
        else None
    )
    return AlertMoves(opens, frozenset(rule for rule in unresolved if rule != wanted))


def check_alert_reason(rule: str, verdict: Verdict, planned_local: time) -> Reason:
    """Why the check's alert ``rule`` opens, naming the planned local time (``HH:MM``)."""
    planned = f"{planned_local:%H:%M}"
    if rule == SUPERVISION_MISSED:
        return Reason.of(ReasonCode.CHECK_MISSED, planned=planned)
    why = verdict.reasons[0] if verdict.reasons else ""
    return Reason.of(_VISIT_BECAUSE.get(why, ReasonCode.VISIT_NEEDED), planned=planned)


def check_resolve_reason(verdict: Verdict) -> Reason:
    """Why a supervision alert the verdict no longer asks for resolves."""
    code = _RESOLVED_BECAUSE.get(verdict.state)
    if code is None:
        return Reason.of(ReasonCode.CHECK_STATE, state=verdict.state.value)
    return Reason.of(code)


def alert_reason(rule: str, verdict: Verdict, planned_local: time) -> str:
    """The alert's reason in plain words (:func:`check_alert_reason` in English)."""
    return check_alert_reason(rule, verdict, planned_local).text


def resolve_reason(verdict: Verdict) -> str:
    """Why a supervision alert resolves, in plain words (:func:`check_resolve_reason`)."""
    return check_resolve_reason(verdict).text
