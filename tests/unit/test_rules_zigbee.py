"""The rules of the Zigbee sensors (issue 4): water_leak, smoke_detected, door_left_open at
night, and their behaviour under the repeated state reports zigbee2mqtt sends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from devices.catalog import CatalogError, NightDurationRule, Rule, Severity
from devices.envelope import Event
from devices.rules import (
    DeviceState,
    Open,
    SiteRuleSettings,
    acknowledge,
    apply_changes,
    evaluate_event,
    evaluate_tick,
)
from tests.unit.test_rules import SITE, Board, Step, Tick, fresh, heartbeat, on_board, run

DOOR, MOTION, WATER, SMOKE = "door_contact", "motion_sensor", "water_sensor", "smoke_detector"
HIGH, CRITICAL = Severity.HIGH, Severity.CRITICAL
STOCKHOLM = ZoneInfo("Europe/Stockholm")
# 23:00 in Stockholm (UTC+1 in November): night.
NIGHT = datetime(2026, 11, 22, 22, 0, tzinfo=UTC)
# 10:00 in Stockholm: day.
DAY = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def ev(kind: str, event_type: str, time: datetime) -> Event:
    """A field-less event of a Zigbee sensor, received when it happened (zigbee2mqtt's way)."""
    return Event("dev-001", kind, f"{event_type}@{time.isoformat()}", time, time, event_type, {})


def after(start: datetime, *, minutes: float = 0, hours: float = 0) -> datetime:
    return start + timedelta(minutes=minutes, hours=hours)


def state_at(kind: str, start: datetime) -> DeviceState:
    """A device of `kind` watched and heard from since `start`."""
    return DeviceState(kind, since=start, last_message_at=start)


# --- water_leak and smoke_detected: critical, once per episode ----------------------------------

EPISODES = [
    pytest.param(
        WATER, "water.leak_detected", "water.leak_cleared", Rule.WATER_LEAK, id="water_leak"
    ),
    pytest.param(SMOKE, "smoke.detected", "smoke.cleared", Rule.SMOKE_DETECTED, id="smoke"),
]


@pytest.mark.parametrize(("kind", "on", "off", "rule"), EPISODES)
def test_condition_opens_critical(kind: str, on: str, off: str, rule: Rule) -> None:
    """A leak / smoke opens its rule's alert, critical."""
    _, changes = evaluate_event(fresh(kind), {}, ev(kind, on, NIGHT), SITE, NIGHT)
    assert len(changes) == 1
    assert isinstance(changes[0], Open)
    assert (changes[0].rule, changes[0].severity) == (rule, CRITICAL)


@pytest.mark.parametrize(("kind", "on", "off", "rule"), EPISODES)
def test_repeated_reports_of_the_condition_change_nothing(
    kind: str, on: str, off: str, rule: Rule
) -> None:
    """zigbee2mqtt repeats the state on every report: one episode is one alert, count 1."""
    steps: list[Step] = [ev(kind, on, after(NIGHT, minutes=i)) for i in range(5)]
    result = run(fresh(kind), steps)
    assert result.kinds_of_change() == ["Open"]
    assert result.board[rule].count == 1


@pytest.mark.parametrize(("kind", "on", "off", "rule"), EPISODES)
def test_clearing_marks_it_cleared_until_acknowledged(
    kind: str, on: str, off: str, rule: Rule
) -> None:
    """The dry / clear report clears the alert; critical and unacknowledged, it stays on the
    board marked cleared, and acknowledging resolves it."""
    result = run(fresh(kind), [ev(kind, on, NIGHT), ev(kind, off, after(NIGHT, minutes=5))])
    assert result.kinds_of_change() == ["Open", "Clear"]
    assert result.board[rule].cleared
    assert acknowledge(result.board[rule]) is None


@pytest.mark.parametrize(("kind", "on", "off", "rule"), EPISODES)
def test_repeated_clear_reports_change_nothing(kind: str, on: str, off: str, rule: Rule) -> None:
    """A dry sensor reporting dry every hour opens and clears nothing."""
    steps: list[Step] = [ev(kind, off, after(NIGHT, hours=i)) for i in range(3)]
    assert run(fresh(kind), steps).kinds_of_change() == []


@pytest.mark.parametrize(("kind", "on", "off", "rule"), EPISODES)
def test_a_new_episode_after_clearing_repeats_the_alert_on_the_board(
    kind: str, on: str, off: str, rule: Rule
) -> None:
    """Leak, dry, leak again while the cleared alert waits for acknowledgement: it counts up
    and is no longer cleared."""
    steps: list[Step] = [
        ev(kind, on, NIGHT),
        ev(kind, off, after(NIGHT, minutes=5)),
        ev(kind, on, after(NIGHT, minutes=10)),
    ]
    result = run(fresh(kind), steps)
    assert result.kinds_of_change() == ["Open", "Clear", "Repeat"]
    assert result.board[rule].count == 2
    assert not result.board[rule].cleared


@pytest.mark.parametrize(("kind", "on", "off", "rule"), EPISODES)
def test_staff_resolved_is_not_reopened_by_repeats_of_the_same_episode(
    kind: str, on: str, off: str, rule: Rule
) -> None:
    """Staff resolve the alert while the leak lasts: repeated reports do not reopen it; the
    next episode (after a clear) does."""
    first = run(fresh(kind), [ev(kind, on, NIGHT)])
    # Staff resolve: the board is empty, the state remembers the episode.
    repeats = run(first.state, [ev(kind, on, after(NIGHT, minutes=i + 1)) for i in range(3)])
    assert repeats.kinds_of_change() == []
    again = run(
        repeats.state,
        [ev(kind, off, after(NIGHT, minutes=10)), ev(kind, on, after(NIGHT, hours=1))],
    )
    assert again.kinds_of_change() == ["Open"]


@pytest.mark.parametrize(("kind", "on", "off", "rule"), EPISODES)
def test_an_outdated_report_changes_nothing(kind: str, on: str, off: str, rule: Rule) -> None:
    """A leak report older than the newest dry report does not open."""
    state = fresh(kind)
    state, _ = evaluate_event(state, {}, ev(kind, off, after(NIGHT, minutes=5)), SITE, NIGHT)
    late = Event("dev-001", kind, "late", NIGHT, after(NIGHT, minutes=6), on, {})
    assert evaluate_event(state, {}, late, SITE, after(NIGHT, minutes=6))[1] == []


# --- door_left_open: open for 15 min at night in the site's time zone ---------------------------


def door_run(
    start: datetime,
    steps: list[Step],
    site: SiteRuleSettings = SITE,
    site_tz: ZoneInfo = STOCKHOLM,
) -> list[str]:
    """The kinds of change a door contact's steps produce, ticks in the site's time zone."""
    state = state_at(DOOR, start)
    board: Board = {}
    kinds: list[str] = []
    for step in steps:
        if isinstance(step, Tick):
            now = step.now
            state, changes = evaluate_tick(state, board, site, now, site_tz=site_tz)
        else:
            now = step.received_at
            state, changes = evaluate_event(state, board, step, site, now, site_tz=site_tz)
        board = apply_changes(board, changes, now)
        kinds += [type(change).__name__ for change in changes]
        for change in changes:
            if isinstance(change, Open):
                assert (change.rule, change.severity) == (Rule.DOOR_LEFT_OPEN, HIGH)
    return kinds


@pytest.mark.parametrize(
    ("start", "steps", "site", "expected"),
    [
        pytest.param(
            NIGHT,
            [ev(DOOR, "door.opened", NIGHT), Tick(after(NIGHT, minutes=14.9))],
            SITE,
            [],
            id="not-before-15-min",
        ),
        pytest.param(
            NIGHT,
            [ev(DOOR, "door.opened", NIGHT), Tick(after(NIGHT, minutes=15))],
            SITE,
            ["Open"],
            id="opens-at-15-min-at-night",
        ),
        pytest.param(
            NIGHT,
            [
                ev(DOOR, "door.opened", NIGHT),
                *[Tick(after(NIGHT, minutes=15 + i)) for i in range(5)],
            ],
            SITE,
            ["Open"],
            id="ticks-do-not-repeat",
        ),
        pytest.param(
            NIGHT,
            [
                ev(DOOR, "door.opened", NIGHT),
                ev(DOOR, "door.opened", after(NIGHT, minutes=10)),  # a repeated report
                Tick(after(NIGHT, minutes=15)),
            ],
            SITE,
            ["Open"],
            id="a-repeated-opened-does-not-restart-the-timer",
        ),
        pytest.param(
            NIGHT,
            [
                ev(DOOR, "door.opened", NIGHT),
                ev(DOOR, "door.closed", after(NIGHT, minutes=10)),
                Tick(after(NIGHT, minutes=20)),
            ],
            SITE,
            [],
            id="closed-in-time",
        ),
        pytest.param(
            NIGHT,
            [
                ev(DOOR, "door.opened", NIGHT),
                Tick(after(NIGHT, minutes=15)),
                ev(DOOR, "door.closed", after(NIGHT, minutes=20)),
                ev(DOOR, "door.closed", after(NIGHT, minutes=80)),  # repeated: nothing more
            ],
            SITE,
            ["Open", "Clear"],
            id="closed-later-clears-once",
        ),
        pytest.param(
            DAY,
            [ev(DOOR, "door.opened", DAY), Tick(after(DAY, hours=2))],
            SITE,
            [],
            id="by-day-nothing",
        ),
        pytest.param(
            DAY,
            [
                ev(DOOR, "door.opened", DAY),
                Tick(after(DAY, hours=11, minutes=59)),  # 21:59 Stockholm
                Tick(after(DAY, hours=12)),  # 22:00 Stockholm
            ],
            SITE,
            ["Open"],
            id="open-since-day-opens-when-night-falls",
        ),
        pytest.param(
            NIGHT,
            [ev(DOOR, "door.opened", NIGHT), Tick(after(NIGHT, minutes=5))],
            SiteRuleSettings(door_left_open_min=5),
            ["Open"],
            id="site-5-min",
        ),
        pytest.param(
            DAY,
            [ev(DOOR, "door.opened", DAY), Tick(after(DAY, minutes=15))],
            SiteRuleSettings(night_from_hour=0, night_until_hour=0),
            ["Open"],
            id="site-all-day",
        ),
        pytest.param(
            NIGHT,
            [ev(DOOR, "door.opened", NIGHT), Tick(after(NIGHT, minutes=15))],
            SiteRuleSettings(night_from_hour=0, night_until_hour=6),
            [],
            id="site-night-from-midnight",
        ),
    ],
)
def test_door_left_open(
    start: datetime, steps: list[Step], site: SiteRuleSettings, expected: list[str]
) -> None:
    """door.opened with no door.closed for the site's minutes (default 15) while it is night at
    the site (default 22-07) opens high; door.closed clears."""
    assert door_run(start, steps, site) == expected


def test_night_is_judged_in_the_sites_time_zone() -> None:
    """21:30 UTC is 22:30 in Stockholm (night) but 21:30 in London (not yet)."""
    opened = datetime(2026, 11, 22, 21, 15, tzinfo=UTC)
    steps: list[Step] = [ev(DOOR, "door.opened", opened), Tick(after(opened, minutes=15))]
    assert door_run(opened, steps, site_tz=STOCKHOLM) == ["Open"]
    assert door_run(opened, steps, site_tz=ZoneInfo("Europe/London")) == []


@pytest.mark.parametrize(
    ("start", "until", "hour", "night"),
    [
        (22, 7, 22, True),
        (22, 7, 23, True),
        (22, 7, 0, True),
        (22, 7, 6, True),
        (22, 7, 7, False),
        (22, 7, 12, False),
        (22, 7, 21, False),
        (1, 5, 0, False),
        (1, 5, 1, True),
        (1, 5, 5, False),
        (3, 3, 15, True),
    ],
)
def test_is_night(start: int, until: int, hour: int, night: bool) -> None:
    """Night runs from `from` (inclusive) to `until` (exclusive), across midnight if need be."""
    assert NightDurationRule(HIGH, 60, start, until).is_night(hour) is night


@pytest.mark.parametrize(
    "record",
    [
        {"night_from_hour": 24},
        {"night_until_hour": -1},
        {"night_from_hour": "22"},
        {"door_left_open_min": 0},
    ],
)
def test_site_settings_refuse_bad_night_and_door_values(record: dict[str, object]) -> None:
    """Night hours are 0-23 and door_left_open_min is positive."""
    with pytest.raises(ValueError, match=next(iter(record))):
        SiteRuleSettings.from_record(record)


def test_catalog_refuses_a_night_hour_out_of_range() -> None:
    """The catalog's door_left_open needs hours 0-23."""
    with pytest.raises(CatalogError, match="night_until_hour"):
        NightDurationRule(HIGH, 60, 22, 24)


def test_door_state_survives_its_record() -> None:
    """The new state fields (times and flags) round-trip through the stored JSON record."""
    state = state_at(DOOR, NIGHT)
    state, _ = evaluate_event(state, {}, ev(DOOR, "door.opened", NIGHT), SITE, NIGHT)
    state, _ = evaluate_tick(state, {}, SITE, after(NIGHT, minutes=15))
    assert state.door_open_alerted
    assert DeviceState.from_record(state.to_record()) == state


# --- the rest of the Zigbee kinds' rules -------------------------------------------------------


@pytest.mark.parametrize("kind", [DOOR, MOTION, WATER, SMOKE])
def test_tamper_opens_high(kind: str) -> None:
    """Each Zigbee kind's *.tamper opens tamper, high."""
    prefix = {DOOR: "door", MOTION: "motion", WATER: "water", SMOKE: "smoke"}[kind]
    _, changes = evaluate_event(fresh(kind), {}, ev(kind, f"{prefix}.tamper", NIGHT), SITE, NIGHT)
    assert [(type(c), c.rule) for c in changes] == [(Open, Rule.TAMPER)]


@pytest.mark.parametrize(
    ("kind", "severity"), [(DOOR, HIGH), (MOTION, HIGH), (WATER, HIGH), (SMOKE, CRITICAL)]
)
def test_offline_after_twenty_hours_of_silence(kind: str, severity: Severity) -> None:
    """Sleepy Zigbee sensors go offline after 20 silent hours (20 intervals of 1 h), not 3."""
    state = state_at(kind, NIGHT)
    assert evaluate_tick(state, {}, SITE, after(NIGHT, hours=19, minutes=59))[1] == []
    _, changes = evaluate_tick(state, {}, SITE, after(NIGHT, hours=20))
    assert len(changes) == 1
    assert isinstance(changes[0], Open)
    assert (changes[0].rule, changes[0].severity) == (Rule.DEVICE_OFFLINE, severity)


def test_motion_reports_open_nothing() -> None:
    """Motion detected and cleared, repeated, open nothing (a motion sensor has no motion
    rule; its events are for usage)."""
    steps: list[Step] = [
        ev(MOTION, "motion.detected", NIGHT),
        ev(MOTION, "motion.cleared", after(NIGHT, minutes=2)),
        ev(MOTION, "motion.cleared", after(NIGHT, hours=1)),
        heartbeat(MOTION, after(NIGHT, hours=1), battery=90),
    ]
    assert run(fresh(MOTION), steps).kinds_of_change() == []


def test_water_alert_already_on_the_board_repeats_on_a_new_episode() -> None:
    """A state lost (no episode remembered) with the alert on the board: the leak counts up."""
    board = {Rule.WATER_LEAK: on_board(Rule.WATER_LEAK, CRITICAL)}
    result = run(fresh(WATER), [ev(WATER, "water.leak_detected", NIGHT)], board=board)
    assert result.kinds_of_change() == ["Repeat"]
