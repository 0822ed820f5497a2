"""Night supervision's pure core: which checks a plan asks for and how each went, as tables."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.reasons import ReasonCode
from devices.supervision import (
    PHYSICAL_VISIT_NEEDED,
    SUPERVISION_MISSED,
    AlertMoves,
    CameraCheck,
    CheckState,
    Facts,
    Interval,
    PlannedCheck,
    PlanVersion,
    Verdict,
    alert_moves,
    alert_reason,
    check_alert_reason,
    check_resolve_reason,
    final,
    judge,
    local_instant,
    night_of,
    planned_checks,
    resolve_reason,
    tally,
    visits_from_lock,
)

STOCKHOLM = ZoneInfo("Europe/Stockholm")
NIGHT = date(2026, 12, 7)  # a Monday evening, winter time (UTC+1)
PLANNED = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)  # 02:00 local
CHECK = PlannedCheck("r1", NIGHT, PLANNED)  # ±15 min, retry after 15 min


def at(minutes: float) -> datetime:
    """``minutes`` after the planned time."""
    return PLANNED + timedelta(minutes=minutes)


def plan(*times: time, recorded_at: datetime | None = None, **kwargs: Any) -> PlanVersion:
    return PlanVersion(
        "r1",
        recorded_at or datetime(2026, 1, 1, tzinfo=UTC),
        tuple(times),
        **kwargs,
    )


def local_times(checks: list[PlannedCheck]) -> list[str]:
    return [c.planned_at.astimezone(STOCKHOLM).strftime("%d %H:%M%z") for c in checks]


# --- which checks -----------------------------------------------------------------------------


def test_a_night_runs_from_the_evening_into_the_morning() -> None:
    checks = planned_checks([plan(time(5), time(22), time(0), time(2))], NIGHT, STOCKHOLM)
    assert local_times(checks) == [
        "07 22:00+0100",
        "08 00:00+0100",
        "08 02:00+0100",
        "08 05:00+0100",
    ]
    assert night_of(checks[-1].planned_at, STOCKHOLM) == NIGHT
    assert night_of(datetime(2026, 12, 8, 11, 59, tzinfo=STOCKHOLM), STOCKHOLM) == NIGHT
    assert night_of(datetime(2026, 12, 8, 12, 0, tzinfo=STOCKHOLM), STOCKHOLM) == date(2026, 12, 8)


@pytest.mark.parametrize(
    ("weekdays", "valid_from", "valid_to", "expected"),
    [
        (frozenset({0}), None, None, 1),  # Monday's night, its morning check on Tuesday
        (frozenset({1}), None, None, 0),
        (frozenset(range(7)), date(2026, 12, 8), None, 0),  # starts the next night
        (frozenset(range(7)), None, date(2026, 12, 7), 1),  # its last night
        (frozenset(range(7)), None, date(2026, 12, 6), 0),
    ],
)
def test_weekdays_and_validity_are_the_evenings(
    weekdays: frozenset[int], valid_from: date | None, valid_to: date | None, expected: int
) -> None:
    version = plan(time(2), weekdays=weekdays, valid_from=valid_from, valid_to=valid_to)
    assert len(planned_checks([version], NIGHT, STOCKHOLM)) == expected


@pytest.mark.parametrize(
    ("night", "expected"),
    [
        # Clocks forward at 02:00 on 29 March 2026: 02:30 does not exist, it is checked at 03:30.
        (date(2026, 3, 28), ["29 01:30+0100", "29 03:30+0200", "29 04:00+0200"]),
        # Clocks back at 03:00 on 25 October 2026: 02:30 happens twice, checked the first time.
        (date(2026, 10, 24), ["25 01:30+0200", "25 02:30+0200", "25 04:00+0100"]),
    ],
)
def test_a_night_across_the_change_of_clocks(night: date, expected: list[str]) -> None:
    checks = planned_checks([plan(time(1, 30), time(2, 30), time(4))], night, STOCKHOLM)
    assert local_times(checks) == expected
    gaps = {b.planned_at - a.planned_at for a, b in itertools.pairwise(checks)}
    assert all(gap > timedelta(0) for gap in gaps)


def test_a_plan_changed_mid_night_moves_only_checks_not_yet_open() -> None:
    """Changed at 01:00: the 00:00 check stays as it was, 02:00 is dropped, 03:00 is new, and
    a 00:30 added after the fact is not invented."""
    first = plan(time(0), time(2), recorded_at=datetime(2026, 1, 1, tzinfo=UTC))
    changed_at = local_instant(NIGHT, time(1), STOCKHOLM)
    second = plan(time(0, 30), time(3), recorded_at=changed_at)
    checks = planned_checks([second, first], NIGHT, STOCKHOLM)
    assert local_times(checks) == ["08 00:00+0100", "08 03:00+0100"]


def test_a_change_inside_a_window_leaves_that_check_to_the_old_version() -> None:
    first = plan(time(2), recorded_at=datetime(2026, 1, 1, tzinfo=UTC))
    second = plan(time(2), recorded_at=at(-5), window_s=600)
    [check] = planned_checks([first, second], NIGHT, STOCKHOLM)
    assert check.window_s == 15 * 60


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_s": 0}, "between"),
        ({"retry_s": 4 * 3600}, "between"),
        ({"weekdays": frozenset({7})}, "weekdays"),
        ({"recorded_at": datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None)}, "aware"),
    ],
)
def test_a_plan_that_cannot_work_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan(time(2), **kwargs)
    with pytest.raises(ValueError, match="repeat"):
        plan(time(2), time(2))


# --- how each went ----------------------------------------------------------------------------


def seen(minutes: float, duration_s: float = 25.0) -> CameraCheck:
    return CameraCheck(at(minutes), "seen", duration_s, "nurse-1")


def not_seen(minutes: float) -> CameraCheck:
    return CameraCheck(at(minutes), "not_seen", 20.0, "nurse-1")


def failed(minutes: float) -> CameraCheck:
    return CameraCheck(at(minutes), "technical_failure", None, "nurse-1")


@pytest.mark.parametrize(
    ("facts", "now", "state", "alert"),
    [
        (Facts(), -20, CheckState.UPCOMING, None),
        (Facts(), -10, CheckState.DUE, None),
        (Facts(), 14, CheckState.DUE, None),
        (Facts(checks=[seen(-14)]), 0, CheckState.DONE, None),
        (Facts(checks=[seen(15)]), 15, CheckState.DONE, None),  # the window's edge is inside
        (Facts(), 15, CheckState.MISSED, SUPERVISION_MISSED),
        (Facts(), 300, CheckState.MISSED, SUPERVISION_MISSED),
        (Facts(checks=[seen(40)]), 41, CheckState.LATE, None),
        (Facts(checks=[seen(-20)]), 15, CheckState.MISSED, SUPERVISION_MISSED),  # before it
        (Facts(checks=[not_seen(0)]), 10, CheckState.RETRY_DUE, None),
        (Facts(checks=[not_seen(0), seen(14)]), 20, CheckState.DONE, None),
        (Facts(checks=[not_seen(10), seen(24)]), 30, CheckState.DONE, None),  # retry after end
        (
            Facts(checks=[not_seen(0), not_seen(14)]),
            14,
            CheckState.VISIT_NEEDED,
            PHYSICAL_VISIT_NEEDED,
        ),
        (Facts(checks=[not_seen(0)]), 15, CheckState.VISIT_NEEDED, PHYSICAL_VISIT_NEEDED),
        (Facts(checks=[not_seen(0), seen(16)]), 20, CheckState.VISIT_NEEDED, PHYSICAL_VISIT_NEEDED),
        (Facts(checks=[failed(-5)]), -5, CheckState.VISIT_NEEDED, PHYSICAL_VISIT_NEEDED),
        (Facts(checks=[seen(-5), failed(0)]), 0, CheckState.DONE, None),
        (Facts(camera_down=[Interval(at(-60))]), -1, CheckState.DUE, None),
        (Facts(camera_down=[Interval(at(-60))]), 0, CheckState.VISIT_NEEDED, PHYSICAL_VISIT_NEEDED),
        (Facts(camera_down=[Interval(at(-60), at(-1))]), 0, CheckState.DUE, None),
        (Facts(camera_down=[Interval(at(5))]), 15, CheckState.VISIT_NEEDED, PHYSICAL_VISIT_NEEDED),
        (Facts(camera_down=[Interval(at(-60))], visits=[at(3)]), 5, CheckState.VISITED, None),
        (Facts(checks=[not_seen(0)], visits=[at(20)]), 30, CheckState.VISITED, None),
        (Facts(visits=[at(-30)]), 15, CheckState.MISSED, SUPERVISION_MISSED),  # before the window
        (Facts(absences=[Interval(at(-600), at(600))]), 60, CheckState.PAUSED, None),
        (Facts(absences=[Interval(at(-600), at(-1))]), 60, CheckState.MISSED, SUPERVISION_MISSED),
    ],
)
def test_verdicts(facts: Facts, now: float, state: CheckState, alert: str | None) -> None:
    verdict = judge(CHECK, facts, at(now))
    assert (verdict.state, verdict.alert) == (state, alert)


def test_what_counts_for_a_check_ends_where_the_next_one_begins() -> None:
    """22:00 and 02:00 (±15 min): nothing at 22:00, the 02:00 check seen at 02:05 and the
    morning's home care through the door at 08:00. The 22:00 check stays missed: neither the
    02:00 check nor a visit hours later settles it. A late check at 23:00 still does, and so
    does the patrol's visit at 00:50."""
    first, second = planned_checks([plan(time(22), time(2))], NIGHT, STOCKHOLM)
    assert first.evidence_until == first.window_end + timedelta(hours=3)  # before 01:45
    three = planned_checks([plan(time(22), time(23), time(2))], NIGHT, STOCKHOLM)
    assert three[0].evidence_until == three[1].window_start
    assert second.evidence_until == second.window_end + timedelta(hours=3)
    morning = local_instant(NIGHT, time(8), STOCKHOLM)
    night = Facts(
        checks=[CameraCheck(second.planned_at + timedelta(minutes=5), "seen", 20.0, "n")],
        visits=[morning],
    )
    assert judge(first, night, morning).state is CheckState.MISSED
    assert judge(second, night, morning).state is CheckState.DONE
    late = Facts(checks=[CameraCheck(first.planned_at + timedelta(hours=1), "seen", 20.0, "n")])
    assert judge(first, late, morning).state is CheckState.LATE
    # The patrol visiting after the 02:00 check's window opened still settles the 22:00 one.
    patrol = Facts(visits=[first.planned_at + timedelta(hours=2, minutes=50)])
    assert judge(first, patrol, morning).state is CheckState.VISITED


def test_the_last_check_of_the_night_may_be_late_for_three_hours() -> None:
    """02:00 alone: seen at 04:00 is late; at 06:00 (more than 3 h after the window) it is
    not this check's, which stays missed; a visit then does not settle it either."""
    [check] = planned_checks([plan(time(2))], NIGHT, STOCKHOLM)
    later = check.window_end + timedelta(hours=3, minutes=1)
    assert judge(check, Facts(checks=[seen(120)]), at(121)).state is CheckState.LATE
    assert judge(check, Facts(checks=[seen(240)]), at(241)).state is CheckState.MISSED
    assert judge(check, Facts(visits=[later]), later).state is CheckState.MISSED


def test_windows_that_overlap_share_what_falls_in_both() -> None:
    """Checks 20 min apart with ±15 min windows: the first's evidence runs at least to its own
    window's end and retry, so a seen at 00:10 is done for both."""
    first, second = planned_checks([plan(time(0), time(0, 20))], NIGHT, STOCKHOLM)
    assert first.evidence_until == first.window_end + timedelta(minutes=15)
    both = Facts(checks=[CameraCheck(first.planned_at + timedelta(minutes=10), "seen", 9.0, "n")])
    now = second.window_end
    assert (judge(first, both, now).state, judge(second, both, now).state) == (
        CheckState.DONE,
        CheckState.DONE,
    )


def test_a_check_not_yet_reported_does_not_count_before_it_happened() -> None:
    """Judged at 10 min, a seen at 12 min (device time) is not known yet."""
    assert judge(CHECK, Facts(checks=[seen(12)]), at(10)).state is CheckState.DUE


def test_the_verdict_says_when_to_look_again() -> None:
    assert judge(CHECK, Facts(), at(-20)).next_look == CHECK.window_start
    assert judge(CHECK, Facts(), at(-5)).next_look == PLANNED
    assert judge(CHECK, Facts(), at(5)).next_look == CHECK.window_end
    retry = judge(CHECK, Facts(checks=[not_seen(2)]), at(5))
    assert retry.retry_at == retry.next_look == at(17)
    done = judge(CHECK, Facts(checks=[seen(1, 27.0)]), at(5))
    assert (done.seen_at, done.duration_s, done.next_look) == (at(1), 27.0, None)


def test_a_camera_that_fails_before_its_first_check_sends_a_visit_to_every_check() -> None:
    night = planned_checks([plan(time(0), time(2), time(5))], NIGHT, STOCKHOLM)
    down = Facts(camera_down=[Interval(night[0].planned_at - timedelta(hours=2))])
    verdicts = [judge(c, down, c.planned_at) for c in night]
    assert {v.state for v in verdicts} == {CheckState.VISIT_NEEDED}
    assert all(v.camera_failed for v in verdicts)


def test_an_absence_starting_mid_night_pauses_the_rest() -> None:
    night = planned_checks([plan(time(0), time(2), time(5))], NIGHT, STOCKHOLM)
    away = Facts(absences=[Interval(night[0].planned_at + timedelta(minutes=40))])
    states = [judge(c, away, c.planned_at + timedelta(hours=1)).state for c in night]
    assert states == [CheckState.MISSED, CheckState.PAUSED, CheckState.PAUSED]


def test_visits_proved_by_the_lock() -> None:
    events = [
        (at(3), "lock.locked"),
        (at(0), "lock.unlocked"),
        (at(20), "lock.locked"),  # no unlock before it
        (at(30), "lock.unlocked"),  # not locked again yet
    ]
    assert visits_from_lock(events) == [at(3)]


def test_a_night_tallied_for_managers() -> None:
    """One check of each outcome, judged the next morning."""
    morning = at(8 * 60)
    facts = [
        Facts(checks=[seen(-3)]),  # done in the window
        Facts(checks=[seen(30)]),  # late
        Facts(),  # missed
        Facts(checks=[not_seen(0), seen(10)]),  # not seen, then seen on the retry
        Facts(checks=[not_seen(0), not_seen(15)], visits=[at(40)]),  # not seen twice, visited
        Facts(camera_down=[Interval(at(-90))], visits=[at(20)]),  # camera broken, visited
        Facts(checks=[failed(0)]),  # technical failure, nobody went yet
        Facts(absences=[Interval(at(-600))]),  # away
    ]
    night = tally(judge(CHECK, f, morning) for f in facts)
    assert (night.planned, night.paused) == (8, 1)
    assert (night.done_in_window, night.late, night.missed) == (2, 1, 1)
    assert (night.not_seen, night.visits_needed, night.replaced_by_visits) == (2, 3, 1)
    assert night.by_camera == 3


# --- properties -------------------------------------------------------------------------------

_minutes = st.floats(min_value=-60, max_value=240, allow_nan=False)
_checks = st.lists(
    st.builds(
        lambda m, o: CameraCheck(at(m), o),
        _minutes,
        st.sampled_from(["seen", "not_seen", "technical_failure", "something_else"]),
    ),
    max_size=6,
)
_intervals = st.lists(
    st.builds(
        lambda m, d: Interval(at(m), at(m + d) if d is not None else None),
        _minutes,
        st.none() | st.floats(min_value=0.1, max_value=120),
    ),
    max_size=3,
)


@given(
    checks=_checks,
    down=_intervals,
    away=_intervals,
    visits=st.lists(_minutes.map(at), max_size=3),
    now=_minutes,
)
def test_never_more_than_one_alert_and_never_an_exception(
    checks: list[CameraCheck],
    down: list[Interval],
    away: list[Interval],
    visits: list[datetime],
    now: float,
) -> None:
    facts = Facts(checks=checks, camera_down=down, absences=away, visits=visits)
    verdict = judge(CHECK, facts, at(now))
    assert verdict.alert in (None, SUPERVISION_MISSED, PHYSICAL_VISIT_NEEDED)
    if verdict.alert == SUPERVISION_MISSED:
        assert verdict.state is CheckState.MISSED
    if verdict.alert == PHYSICAL_VISIT_NEEDED:
        assert verdict.state is CheckState.VISIT_NEEDED
    # The order facts arrive in does not matter.
    reordered = Facts(checks[::-1], down[::-1], away[::-1], visits[::-1])
    assert judge(CHECK, reordered, at(now)) == verdict


@given(
    checks=_checks,
    down=_intervals,
    away=_intervals,
    visits=st.lists(_minutes.map(at), max_size=3),
    now=_minutes,
    later=st.floats(min_value=0, max_value=600, allow_nan=False),
)
def test_a_verdict_holds_until_its_next_look_while_the_facts_stay(
    checks: list[CameraCheck],
    down: list[Interval],
    away: list[Interval],
    visits: list[datetime],
    now: float,
    later: float,
) -> None:
    """What the watchdog relies on to leave a check alone (gateway.supervision): with the same
    facts (those known at ``now``: the watchdog reads nothing that happened after its clock),
    only the clock reaching ``next_look`` can change a verdict. A final one is written once and
    never judged again (a visit's verdict may still gain a reason as the window ends)."""
    known = Facts(
        [c for c in checks if c.at <= at(now)],
        [i for i in down if i.start <= at(now)],
        away,
        [v for v in visits if v <= at(now)],
    )
    verdict = judge(CHECK, known, at(now))
    if final(verdict.state):
        return
    moment = at(now + later)
    if verdict.next_look is not None and moment >= verdict.next_look:
        moment = verdict.next_look - timedelta(microseconds=1)
    if moment >= at(now):
        assert judge(CHECK, known, moment) == verdict


@given(night=st.dates(min_value=date(2020, 1, 1), max_value=date(2040, 12, 31)))
def test_every_night_has_each_check_once_in_order(night: date) -> None:
    version = plan(
        time(22),
        time(0),
        time(2),
        time(2, 30),
        time(5),
        recorded_at=datetime(2019, 1, 1, tzinfo=UTC),
    )
    checks = planned_checks([version], night, STOCKHOLM)
    assert len(checks) == 5
    assert [c.planned_at for c in checks] == sorted({c.planned_at for c in checks})
    assert all(night_of(c.planned_at, STOCKHOLM) == night for c in checks)


# --- the alerts a verdict moves ---------------------------------------------------------------

_MISSED = Verdict(CheckState.MISSED, SUPERVISION_MISSED)
_VISIT = Verdict(CheckState.VISIT_NEEDED, PHYSICAL_VISIT_NEEDED, reasons=("not seen twice",))
_MISS, _NEED = SUPERVISION_MISSED, PHYSICAL_VISIT_NEEDED


@pytest.mark.parametrize(
    ("previous", "verdict", "unresolved", "expected"),
    [
        (None, _MISSED, set(), AlertMoves(_MISS)),
        (CheckState.DUE, _MISSED, set(), AlertMoves(_MISS)),
        (CheckState.MISSED, _MISSED, {_MISS}, AlertMoves()),
        # Resolved by staff while still missed: not opened again.
        (CheckState.MISSED, _MISSED, set(), AlertMoves()),
        (
            CheckState.MISSED,
            Verdict(CheckState.LATE),
            {_MISS},
            AlertMoves(None, frozenset({_MISS})),
        ),
        (CheckState.MISSED, _VISIT, {_MISS}, AlertMoves(_NEED, frozenset({_MISS}))),
        (CheckState.RETRY_DUE, _VISIT, set(), AlertMoves(_NEED)),
        (
            CheckState.VISIT_NEEDED,
            Verdict(CheckState.VISITED),
            {_NEED},
            AlertMoves(None, frozenset({_NEED})),
        ),
        (
            CheckState.MISSED,
            Verdict(CheckState.PAUSED),
            {_MISS},
            AlertMoves(None, frozenset({_MISS})),
        ),
        # Paused, then the absence was cancelled: missed again, alerted again.
        (CheckState.PAUSED, _MISSED, set(), AlertMoves(_MISS)),
        (None, Verdict(CheckState.DONE), set(), AlertMoves()),
    ],
    ids=[
        "missed-first-look",
        "due-then-missed",
        "still-missed",
        "resolved-by-hand-stays-resolved",
        "seen-late",
        "missed-then-visit-needed",
        "retry-not-done",
        "visited",
        "absence-recorded-after",
        "absence-cancelled",
        "done",
    ],
)
def test_alert_moves(
    previous: CheckState | None, verdict: Verdict, unresolved: set[str], expected: AlertMoves
) -> None:
    """An alert opens when its check enters the state that asks for it; the rest resolve."""
    assert alert_moves(previous, verdict, unresolved) == expected


def test_alert_and_resolve_reasons_in_plain_words() -> None:
    """Reasons name the planned local time, and why a visit is needed or an alert ended."""
    assert alert_reason(_MISS, _MISSED, time(2)) == "check planned 02:00 missed"
    assert alert_reason(_NEED, _VISIT, time(0, 5)) == (
        "check planned 00:05: physical visit needed (not seen twice)"
    )
    assert resolve_reason(Verdict(CheckState.LATE)) == "seen late"
    assert resolve_reason(Verdict(CheckState.PAUSED)) == "absent"


def test_only_checks_settled_by_camera_or_visit_are_final() -> None:
    """done, late and visited are not judged again; a paused check is (its absence may end)."""
    assert {state for state in CheckState if final(state)} == {
        CheckState.DONE,
        CheckState.LATE,
        CheckState.VISITED,
    }


@given(
    previous=st.none() | st.sampled_from(CheckState),
    checks=_checks,
    down=_intervals,
    visits=st.lists(_minutes.map(at), max_size=2),
    now=_minutes,
    unresolved=st.sets(st.sampled_from([SUPERVISION_MISSED, PHYSICAL_VISIT_NEEDED]), max_size=1),
)
def test_alert_moves_leave_at_most_the_alert_the_verdict_asks_for(
    previous: CheckState | None,
    checks: list[CameraCheck],
    down: list[Interval],
    visits: list[datetime],
    now: float,
    unresolved: set[str],
) -> None:
    """After the moves, a check has at most one unresolved alert, and only the one its
    verdict asks for; nothing opens twice."""
    verdict = judge(CHECK, Facts(checks=checks, camera_down=down, visits=visits), at(now))
    moves = alert_moves(previous, verdict, unresolved)
    assert moves.resolve <= unresolved
    assert moves.open is None or moves.open not in unresolved
    after = (unresolved - moves.resolve) | ({moves.open} if moves.open else set())
    assert after <= {verdict.alert}


@pytest.mark.parametrize(
    ("facts", "now", "code"),
    [
        (Facts(checks=[not_seen(0), not_seen(14)]), 14, ReasonCode.VISIT_NOT_SEEN_TWICE),
        (Facts(checks=[not_seen(0)]), 15, ReasonCode.VISIT_NO_RETRY),
        (Facts(checks=[failed(-5)]), -5, ReasonCode.VISIT_TECHNICAL_FAILURE),
        (Facts(camera_down=[Interval(at(-60))]), 0, ReasonCode.VISIT_CAMERA_DOWN_PLANNED),
        (Facts(camera_down=[Interval(at(5))]), 15, ReasonCode.VISIT_CAMERA_DOWN_WINDOW_END),
        (Facts(), 15, ReasonCode.CHECK_MISSED),
    ],
    ids=["not-seen-twice", "no-retry", "technical-failure", "down-planned", "down-end", "missed"],
)
def test_an_alerts_reason_is_a_code_naming_why(facts: Facts, now: float, code: ReasonCode) -> None:
    """Each way a check needs a visit (or was missed) has its own code, the planned local time
    its argument; the English is the alert_reason it always was."""
    verdict = judge(CHECK, facts, at(now))
    assert verdict.alert is not None
    reason = check_alert_reason(verdict.alert, verdict, time(2))
    assert (reason.code, reason.arguments) == (code, {"planned": "02:00"})
    assert reason.text == alert_reason(verdict.alert, verdict, time(2))


@pytest.mark.parametrize(
    ("state", "code", "args"),
    [
        (CheckState.DONE, ReasonCode.CHECK_SEEN, {}),
        (CheckState.LATE, ReasonCode.CHECK_SEEN_LATE, {}),
        (CheckState.VISITED, ReasonCode.CHECK_VISITED, {}),
        (CheckState.PAUSED, ReasonCode.RESIDENT_ABSENT, {}),
        (CheckState.VISIT_NEEDED, ReasonCode.VISIT_INSTEAD, {}),
        (CheckState.RETRY_DUE, ReasonCode.CHECK_STATE, {"state": "retry_due"}),
    ],
    ids=str,
)
def test_a_resolve_reason_is_a_code(
    state: CheckState, code: ReasonCode, args: dict[str, str]
) -> None:
    """Why a supervision alert resolves, as a code (the state itself where none says more)."""
    reason = check_resolve_reason(Verdict(state))
    assert (reason.code, reason.arguments) == (code, args)
    assert reason.text == resolve_reason(Verdict(state))


@given(checks=_checks, down=_intervals, visits=st.lists(_minutes.map(at), max_size=3), now=_minutes)
def test_every_visit_needed_names_its_cause(
    checks: list[CameraCheck], down: list[Interval], visits: list[datetime], now: float
) -> None:
    """Whatever the facts, a visit-needed alert's reason says why (never the bare code)."""
    verdict = judge(CHECK, Facts(checks=checks, camera_down=down, visits=visits), at(now))
    if verdict.alert == PHYSICAL_VISIT_NEEDED:
        reason = check_alert_reason(verdict.alert, verdict, time(2))
        assert reason.code is not ReasonCode.VISIT_NEEDED
