"""Simulated nights of camera supervision (devices.simulated_nights), and the fleet that plays
them and carries on from stored state (devices.simulator)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from devices.reasons import Reason, ReasonCode
from devices.simulated_nights import (
    CheckStory,
    Course,
    JudgedCheck,
    NightSchedule,
    PastNights,
    SimResidence,
    demo_absences,
    demo_plans,
    facts_for,
    judged_until,
    replay,
    residences_of,
)
from devices.simulator import Fleet, Resume, SimDevice
from devices.supervision import (
    PHYSICAL_VISIT_NEEDED,
    SUPERVISION_MISSED,
    CameraCheck,
    CheckState,
    Interval,
    PlanVersion,
    tally,
)

STOCKHOLM = ZoneInfo("Europe/Stockholm")
# Winter time; the first night is Monday 2026-11-23.
FIRST_NIGHT = date(2026, 11, 23)
RECORDED = datetime(2026, 11, 1, tzinfo=UTC)
NIGHTS = 60


def residence(n: int, *, lock: bool = True) -> SimResidence:
    devices = (f"sim-cam-{n:04d}", *((f"sim-lock-{n:04d}",) if lock else ()))
    return SimResidence(f"r{n}", f"Lgh {n}", devices, devices[0], devices[1] if lock else None)


def schedule(residences: list[SimResidence], seed: int = 1) -> NightSchedule:
    plans = {
        r.key: [PlanVersion(r.key, RECORDED, (time(22, 0), time(2, 0), time(5, 0)))]
        for r in residences
    }
    return NightSchedule(residences, plans, tz=STOCKHOLM, seed=seed)


def stories(nights: NightSchedule, count: int = NIGHTS) -> Iterator[CheckStory]:
    for n in range(count):
        yield from nights.night(FIRST_NIGHT + timedelta(days=n))


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def facts_of(story: CheckStory) -> tuple[list[CameraCheck], list[tuple[datetime, str]]]:
    checks = [
        CameraCheck(e.at, str(e.data["outcome"]), float(e.data["duration_s"]))
        for e in story.events
        if e.type == "camera.check_ended"
    ]
    locks = [(e.at, e.type) for e in story.events if e.type.startswith("lock.")]
    return checks, locks


def judged(
    story: CheckStory, until: datetime | None = None, absences: Sequence[Interval] = ()
) -> JudgedCheck | None:
    checks, locks = facts_of(story)
    visits = [story.staff_visit_at] if story.staff_visit_at is not None else []
    facts = facts_for(checks, lock_events=locks, staff_visits=visits, absences=absences)
    moment = until or judged_until(story.check, STOCKHOLM)
    return replay(story.check, facts, moment, tz=STOCKHOLM)


@pytest.fixture(scope="module")
def many() -> list[CheckStory]:
    return list(stories(schedule([residence(n) for n in range(10)] + [residence(99, lock=False)])))


def test_a_night_has_the_planned_checks_in_time_order() -> None:
    """Three checks a night per residence, at 22:00, 02:00 and 05:00 local time."""
    night = schedule([residence(1), residence(2)]).night(FIRST_NIGHT)
    local = [(s.check.residence_id, s.check.planned_at.astimezone(STOCKHOLM).time()) for s in night]
    assert local == [
        ("r1", time(22, 0)), ("r1", time(2, 0)), ("r1", time(5, 0)),
        ("r2", time(22, 0)), ("r2", time(2, 0)), ("r2", time(5, 0)),
    ]  # fmt: skip


def test_stories_are_deterministic_per_seed_camera_and_time() -> None:
    """The same seed tells the same story of a check, whatever else is scheduled; another seed
    another one."""
    alone = list(stories(schedule([residence(3)]), 5))
    among = [
        s
        for s in stories(schedule([residence(1), residence(3)]), 5)
        if s.check.residence_id == "r3"
    ]
    other = list(stories(schedule([residence(3)], seed=2), 5))
    assert alone == among
    assert alone != other


def test_the_mix_is_mostly_in_window_with_every_kind_of_trouble(many: list[CheckStory]) -> None:
    """Most checks are seen in their window; late, retried, twice not seen, not retried,
    missed and failed checks all happen, each a few per cent at most."""
    courses = Counter(s.course for s in many)
    assert courses[Course.IN_WINDOW] / len(many) > 0.75
    for course in Course:
        if course is not Course.ABSENT and course is not Course.IN_WINDOW:
            assert 0 < courses[course] / len(many) < 0.1, course


@pytest.mark.parametrize(
    ("course", "states"),
    [
        (Course.IN_WINDOW, {CheckState.DONE}),
        (Course.LATE, {CheckState.LATE}),
        (Course.RETRY_SEEN, {CheckState.DONE, CheckState.VISITED}),
        (Course.NOT_SEEN_TWICE, {CheckState.VISITED}),
        (Course.NO_RETRY, {CheckState.VISITED}),
        (Course.TECHNICAL_FAILURE, {CheckState.VISITED}),
        (Course.MISSED, {CheckState.MISSED, CheckState.VISITED}),
    ],
    ids=lambda v: v.value if isinstance(v, Course) else "",
)
def test_each_course_ends_in_the_verdict_it_is_meant_to(
    many: list[CheckStory], course: Course, states: set[CheckState]
) -> None:
    """Judged by the gateway's own rules once the night is over, each course reaches its
    verdict: a needed visit is made (by the lock, or recorded by staff without one)."""
    found = [s for s in many if s.course is course]
    assert found
    for story in found:
        result = judged(story)
        assert result is not None
        assert result.verdict.state in states, (story, result.verdict)
        if course in (Course.NOT_SEEN_TWICE, Course.NO_RETRY, Course.TECHNICAL_FAILURE):
            assert result.verdict.visit_needed
            assert result.verdict.camera_failed is (course is Course.TECHNICAL_FAILURE)
        if course is Course.RETRY_SEEN:
            assert result.verdict.not_seen


def test_visits_go_through_the_lock_or_are_recorded_by_staff(many: list[CheckStory]) -> None:
    """A residence with a lock is visited through it (unlocked, then locked); one without has
    the visit recorded by staff."""
    visited = [s for s in many if s.course is Course.TECHNICAL_FAILURE]
    for story in visited:
        locks = [e.type for e in story.events if e.type.startswith("lock.")]
        if story.check.residence_id == "r99":
            assert locks == []
            assert story.staff_visit_at is not None
        else:
            assert locks == ["lock.unlocked", "lock.locked"]
            assert story.staff_visit_at is None


def test_the_nights_figures_show_every_kind_of_check(many: list[CheckStory]) -> None:
    """Over two months the tally has checks done, late, missed, not seen, visits needed and
    checks replaced by visits."""
    verdicts = [r.verdict for s in many if (r := judged(s)) is not None]
    figures = tally(verdicts)
    assert figures.planned == len(many)
    assert figures.done_in_window > 0.75 * figures.planned
    for name in ("late", "missed", "not_seen", "visits_needed", "replaced_by_visits"):
        assert getattr(figures, name) > 0, name


def test_replay_opens_and_resolves_alerts_as_the_gateway_does(many: list[CheckStory]) -> None:
    """A late check had supervision_missed from its window's end until it was seen; a failed
    retry had physical_visit_needed until the visit; a missed check's alert is answered by
    staff; never two unresolved alerts of one rule per check."""
    late = next(s for s in many if s.course is Course.LATE)
    result = judged(late)
    assert result is not None
    (alert,) = result.alerts
    assert (alert.rule, alert.opened_at) == (SUPERVISION_MISSED, late.check.window_end)
    assert alert.resolved_at == result.verdict.seen_at
    assert (alert.resolved_by, alert.cleared_reason) == (
        "system",
        Reason.of(ReasonCode.CHECK_SEEN_LATE),
    )
    assert alert.reason == Reason.of(
        ReasonCode.CHECK_MISSED, planned=f"{late.check.planned_at.astimezone(STOCKHOLM):%H:%M}"
    )

    twice = next(s for s in many if s.course is Course.NOT_SEEN_TWICE)
    result = judged(twice)
    assert result is not None
    (alert,) = result.alerts
    assert alert.rule == PHYSICAL_VISIT_NEEDED
    assert alert.cleared_reason == Reason.of(ReasonCode.CHECK_VISITED)
    assert alert.resolved_at == result.verdict.since

    missed = next(
        s for s in many if s.course is Course.MISSED and s.staff_visit_at is None
        and not any(e.type.startswith("lock.") for e in s.events)
    )  # fmt: skip
    result = judged(missed)
    assert result is not None
    (alert,) = result.alerts
    assert alert.rule == SUPERVISION_MISSED
    assert alert.acknowledged_at is not None
    assert alert.resolved_by not in (None, "system")
    assert alert.state == "resolved"
    assert alert.cleared_reason is None  # staff resolve it, as on the board: no reason given


def test_an_alert_staff_answer_after_the_end_stays_open() -> None:
    """Judged until just after a missed check's window, its alert is open: the demo's board
    shows last night's trouble."""
    story = next(
        s for s in stories(schedule([residence(n) for n in range(10)]))
        if s.course is Course.MISSED
    )  # fmt: skip
    result = judged(story, story.check.window_end + timedelta(seconds=1))
    assert result is not None
    (alert,) = result.alerts
    assert (alert.state, alert.resolved_at) == ("open", None)
    assert result.verdict.state is CheckState.MISSED


def test_a_check_whose_window_has_not_opened_is_not_judged() -> None:
    """Nothing is decided about a check before its window opens."""
    story = next(stories(schedule([residence(1)]), 1))
    assert judged(story, story.check.window_start - timedelta(seconds=1)) is None


def test_absent_residents_checks_are_paused() -> None:
    """A check while the resident is away has no events and is paused."""
    start = datetime(2026, 11, 23, 12, tzinfo=UTC)
    end = start + timedelta(days=14)
    absences = demo_absences(["r1", "r2"], start=start, end=end, tz=STOCKHOLM)
    assert [a.reason for a in absences] == ["hospital", "travel"]
    assert absences[1].starts_at < end < absences[1].expected_end  # the trip goes on
    both = [residence(1), residence(2)]
    nights = NightSchedule(both, schedule(both).plans, absences, tz=STOCKHOLM)
    away = [s for s in stories(nights, 20) if s.course is Course.ABSENT]
    # Four nights in hospital and the trip's nights (it starts the morning before the end).
    assert {s.check.residence_id for s in away} == {"r1", "r2"}
    assert len(away) == 3 * (4 + 3)
    assert all(s.events == () for s in away)
    result = judged(away[0], absences=[a.interval for a in absences])
    assert result is not None
    assert result.verdict.state is CheckState.PAUSED


def test_the_fleet_apartments_become_residences_with_plans() -> None:
    """Device k of every kind shares an apartment: a residence per label, with its camera and
    lock; every residence with a camera gets one to three checks a night, a few a changed plan
    or weeknights only."""
    fleet = Fleet(200, start=datetime(2026, 11, 1, tzinfo=UTC))
    residences = residences_of(fleet.devices)
    assert len(residences) == len({d.label for d in fleet.devices})
    with_camera = [r for r in residences if r.camera_id is not None]
    plans = demo_plans(residences, recorded_at=RECORDED, changed_at=RECORDED + timedelta(days=10))
    assert set(plans) == {r.key for r in with_camera}
    assert all(1 <= len(v.check_times) <= 3 for versions in plans.values() for v in versions)
    assert any(len(versions) == 2 for versions in plans.values())
    assert any(versions[0].weekdays != frozenset(range(7)) for versions in plans.values())
    assert all(r.lock_id is not None for r in with_camera)  # more locks than cameras


def test_past_nights_write_only_the_history_and_judge_every_night() -> None:
    """Rows of the planned checks fall in [start, end); each night comes out judged once, and a
    check whose window opened before the history is not judged (it has no events)."""
    start = datetime(
        2026, 11, 23, 21, 50, tzinfo=UTC
    )  # 22:50 local: the 22:00 check's window is gone
    end = start + timedelta(days=3)
    nights = PastNights(schedule([residence(1), residence(2, lock=False)]), start, end)
    day_ms = 86_400_000
    lo = int(start.timestamp() * 1000) // day_ms * day_ms
    written = []
    judged_nights = []
    while lo < end.timestamp() * 1000:
        rows = nights.rows(lo, lo + day_ms)
        assert all(start.timestamp() * 1000 <= r[0] < end.timestamp() * 1000 for r in rows)
        nights.observe(rows)
        written += rows
        judged_nights += nights.judged(min(lo + day_ms, int(end.timestamp() * 1000)))
        lo += day_ms
    assert [n.night for n in judged_nights] == [
        FIRST_NIGHT + timedelta(days=n) for n in range(-1, 4)
    ]
    first = judged_nights[1]
    planned = {c.check.planned_at.astimezone(STOCKHOLM).time() for _, c in first.checks}
    assert planned == {time(2, 0), time(5, 0)}
    ended = [r for r in written if r[3] == "camera.check_ended"]
    assert ended
    assert all(orjson.loads(r[4])["outcome"] for r in ended)
    assert len({(r[1], r[2]) for r in written}) == len(written)  # event ids unique per device


def test_a_resumed_fleet_reports_the_stored_battery_and_firmware() -> None:
    """A fleet that carries on from stored reports starts each battery where it was (within a
    point) and keeps the firmware."""
    start = datetime(2026, 11, 23, 12, tzinfo=UTC)
    resume = {d.id: Resume(battery=37, fw="9.9.9") for d in Fleet(40, start=start).devices}
    fleet = Fleet(40, start=start, resume=resume)
    first: dict[str, dict[str, Any]] = {}
    for message in fleet.advance(start + timedelta(hours=1)):
        envelope = orjson.loads(message.payload) if message.topic.endswith("/events") else None
        if envelope and envelope["type"] == "heartbeat":
            first.setdefault(message.topic.split("/")[2], envelope["data"])
    cells = [d.id for d in fleet.devices if d.kind in ("door_lock", "alarm_button")]
    assert cells
    assert all(abs(int(first[d]["battery"]) - 37) <= 1 for d in cells)
    assert all(data["fw"] == "9.9.9" for data in first.values())
    assert all("battery" not in first[d.id] for d in fleet.devices if d.kind == "safety_camera")


def test_a_fleet_with_nights_checks_at_the_planned_times_only() -> None:
    """Planned cameras end their checks near the plan's times (late ones within the hour after),
    never at random; the story's lock visits come from the residence's lock."""
    start = datetime(2026, 11, 23, 12, tzinfo=UTC)
    devices = Fleet(40, start=start).devices
    residences = residences_of(devices)
    plans = {
        r.key: [PlanVersion(r.key, RECORDED, (time(22, 0), time(2, 0), time(5, 0)))]
        for r in residences if r.camera_id is not None
    }  # fmt: skip
    nights = NightSchedule(residences, plans, tz=STOCKHOLM)
    fleet = Fleet(40, start=start, nights=nights)
    ends = [
        datetime.fromisoformat(envelope["ts"]).astimezone(STOCKHOLM)
        for message in fleet.advance(start + timedelta(days=2))
        if message.topic.endswith("/events")
        and (envelope := orjson.loads(message.payload))["type"] == "camera.check_ended"
    ]
    assert len(ends) >= 2 * 3 * len(plans)  # retries come on top
    for at in ends:
        offsets = [
            (at - at.replace(hour=h, minute=0, second=0, microsecond=0)).total_seconds()
            for h in (22, 2, 5)
        ]
        assert any(-15 * 60 <= o <= 60 * 60 for o in offsets), at


def test_sim_device_is_placed_by_label_only() -> None:
    """A residence is named by the apartment's label, never by a person."""
    (only,) = residences_of([SimDevice("sim-cam-0001", "safety_camera", "Lgh 1001")])
    assert (only.key, only.label, only.camera_id, only.lock_id) == (
        "Lgh 1001", "Lgh 1001", "sim-cam-0001", None,
    )  # fmt: skip


def test_a_fleet_plays_only_the_planned_events_not_stored_yet() -> None:
    """Started at 23:00 after a history that ends at 22:05, the fleet plays the 22:00 checks'
    events after 22:05 (late, but not missed) and none from before: the history has those."""
    start = datetime(2026, 11, 23, 23, tzinfo=STOCKHOLM)
    stored_until = datetime(2026, 11, 23, 22, 5, tzinfo=STOCKHOLM)
    devices = Fleet(40, start=start).devices
    residences = residences_of(devices)
    plans = {
        r.key: [PlanVersion(r.key, RECORDED, (time(22, 0),))]
        for r in residences if r.camera_id is not None
    }  # fmt: skip
    nights = NightSchedule(residences, plans, tz=STOCKHOLM)
    expected = [
        e for e in nights.events(FIRST_NIGHT) if e[1] in {d.id for d in devices}
        and stored_until < e[0]
    ]  # fmt: skip
    assert expected
    fleet = Fleet(40, start=start, nights=nights, nights_after=stored_until)
    played = [
        (ms(datetime.fromisoformat(envelope["ts"])), message.topic.split("/")[2], envelope["type"])
        for message in fleet.advance(start)
        if message.topic.endswith("/events")
        and (envelope := orjson.loads(message.payload))["type"].startswith(("camera.", "lock."))
    ]
    assert sorted(played) == sorted((ms(at), device, kind) for at, device, kind, _ in expected)
