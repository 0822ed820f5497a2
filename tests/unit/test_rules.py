"""The alert rules: every rule of the contract opens, repeats, clears and escalates as it says,
driven by events and by a fake clock (plain datetimes passed in)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.catalog import DEFAULT_CATALOG, BatteryRule, Rule, Severity
from devices.envelope import DeviceRef, Event, StatusReport, parse
from devices.reasons import Reason, ReasonCode
from devices.rules import (
    EPISODE_RULES,
    AlertChange,
    AlertState,
    Clear,
    DeviceState,
    EpisodeRule,
    Escalate,
    EveryStart,
    FirstStart,
    Message,
    Open,
    OpenAlert,
    Repeat,
    SiteRuleSettings,
    TimedStart,
    Upgrade,
    acknowledge,
    apply_changes,
    clear_resolves,
    evaluate_event,
    evaluate_tick,
)

T0 = datetime(2026, 11, 22, 22, 0, tzinfo=UTC)
SITE = SiteRuleSettings()  # no overrides: the catalog's defaults
# Escalation after a day: for scenarios that look at other changes.
LATE_ESCALATION = SiteRuleSettings(escalation_s=86_400)
CAM, LOCK, ROBOT, ALARM = "safety_camera", "door_lock", "companion_robot", "alarm_button"
HIGH, CRITICAL, WARNING, INFO = Severity.HIGH, Severity.CRITICAL, Severity.WARNING, Severity.INFO
X = Reason.of(ReasonCode.LOCKED)  # any reason, where the reason does not matter
Board: TypeAlias = dict[Rule, OpenAlert]


def at(seconds: float = 0, *, minutes: float = 0, hours: float = 0) -> datetime:
    """T0 plus the given time."""
    return T0 + timedelta(seconds=seconds, minutes=minutes, hours=hours)


def event(
    kind: str,
    event_type: str,
    time: datetime,
    received_at: datetime | None = None,
    **data: object,
) -> Event:
    """An event of a device of `kind` that happened at `time` (received then, unless late)."""
    received = time if received_at is None else received_at
    return Event(
        "dev-001", kind, f"{event_type}@{time.isoformat()}", time, received, event_type, data
    )


def heartbeat(kind: str, time: datetime, battery: int | None = None) -> Event:
    """A heartbeat, with a battery level if given."""
    if battery is None:
        return event(kind, "heartbeat", time)
    return event(kind, "heartbeat", time, battery=battery)


def check_ended(time: datetime, outcome: str) -> Event:
    """A camera check that ended with `outcome`."""
    return event(CAM, "camera.check_ended", time, by="staff-1", duration_s=30, outcome=outcome)


def lock_event(name: str, time: datetime, received_at: datetime | None = None) -> Event:
    """lock.unlocked / lock.locked / lock.jammed at `time`."""
    data: dict[str, Any] = {"by": "staff-1", "method": "app"} if name != "jammed" else {}
    return event(LOCK, f"lock.{name}", time, received_at, **data)


def interaction(time: datetime, received_at: datetime | None = None) -> Event:
    """The robot was touched at `time`."""
    return event(ROBOT, "robot.interaction", time, received_at, mode="touch", duration_s=5)


def status(online: bool, received_at: datetime) -> StatusReport:
    """A status message (``offline`` is also the Last Will)."""
    return StatusReport("dev-001", online, received_at)


def fresh(kind: str, **fields: Any) -> DeviceState:
    """A device of `kind` watched since T0 and heard from then."""
    return DeviceState(kind, since=T0, **{"last_message_at": T0, **fields})


def on_board(rule: Rule, severity: Severity, **fields: Any) -> OpenAlert:
    """An alert opened at T0, unacknowledged unless `state` says otherwise."""
    return OpenAlert(rule, severity, fields.pop("state", AlertState.OPEN), T0, **fields)


@dataclass(frozen=True, slots=True)
class Tick:
    """A step of a scenario: the watchdog runs at `now`."""

    now: datetime


Step: TypeAlias = Message | Tick


@dataclass(frozen=True, slots=True)
class Run:
    """What a scenario ended with."""

    state: DeviceState
    board: Board
    changes: list[list[AlertChange]]  # per step

    @property
    def flat(self) -> list[AlertChange]:
        return [change for step in self.changes for change in step]

    def kinds_of_change(self) -> list[str]:
        return [type(change).__name__ for change in self.flat]


def run(
    state: DeviceState,
    steps: Iterable[Step],
    site: SiteRuleSettings = SITE,
    board: Mapping[Rule, OpenAlert] | None = None,
) -> Run:
    """Feed the steps through the rules, applying each step's changes to the board as the
    gateway would; a message is evaluated at its receipt time."""
    current: Board = dict(board or {})
    per_step: list[list[AlertChange]] = []
    for step in steps:
        if isinstance(step, Tick):
            now = step.now
            state, changes = evaluate_tick(state, current, site, now)
        else:
            now = step.received_at
            state, changes = evaluate_event(state, current, step, site, now)
        current = apply_changes(current, changes, now)
        per_step.append(changes)
    return Run(state, current, per_step)


# --- rules opened by an event -----------------------------------------------------------------

OPENING_EVENTS = [
    pytest.param(LOCK, lock_event("jammed", at(1)), Rule.LOCK_JAMMED, HIGH, id="lock_jammed"),
    pytest.param(
        CAM,
        event(CAM, "camera.stream_lost", at(1)),
        Rule.CAMERA_STREAM_LOST,
        HIGH,
        id="camera_stream_lost",
    ),
    pytest.param(
        CAM,
        check_ended(at(1), "not_seen"),
        Rule.RESIDENT_NOT_SEEN,
        HIGH,
        id="resident_not_seen-not_seen",
    ),
    pytest.param(
        CAM,
        check_ended(at(1), "technical_failure"),
        Rule.RESIDENT_NOT_SEEN,
        HIGH,
        id="resident_not_seen-technical_failure",
    ),
    pytest.param(CAM, event(CAM, "camera.tamper", at(1)), Rule.TAMPER, HIGH, id="tamper-camera"),
    pytest.param(LOCK, event(LOCK, "lock.tamper", at(1)), Rule.TAMPER, HIGH, id="tamper-lock"),
    pytest.param(
        ALARM,
        event(ALARM, "alarm.pressed", at(1)),
        Rule.ALARM_PRESSED,
        CRITICAL,
        id="alarm_pressed",
    ),
]


@pytest.mark.parametrize(("kind", "message", "rule", "severity"), OPENING_EVENTS)
def test_event_opens_its_alert(kind: str, message: Event, rule: Rule, severity: Severity) -> None:
    """The event opens its rule's alert with the contract's severity."""
    _, changes = evaluate_event(fresh(kind), {}, message, SITE, message.received_at)
    assert len(changes) == 1
    change = changes[0]
    assert isinstance(change, Open)
    assert (change.rule, change.severity) == (rule, severity)
    assert change.reason.text


@pytest.mark.parametrize(("kind", "message", "rule", "severity"), OPENING_EVENTS)
def test_event_again_repeats_its_open_alert(
    kind: str, message: Event, rule: Rule, severity: Severity
) -> None:
    """The same condition again while its alert is on the board counts up; it opens no second
    alert."""
    board = {rule: on_board(rule, severity)}
    result = run(fresh(kind), [message], board=board)
    assert [type(change) for change in result.flat] == [Repeat]
    assert result.board[rule].count == 2


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        pytest.param(CAM, event(CAM, "camera.check_started", at(1), by="s"), id="check-started"),
        pytest.param(CAM, check_ended(at(1), "seen"), id="check-seen"),
        pytest.param(CAM, event(CAM, "camera.privacy_on", at(1)), id="privacy-on"),
        pytest.param(CAM, event(CAM, "camera.stream_restored", at(1)), id="stream-restored"),
        pytest.param(LOCK, lock_event("unlocked", at(1)), id="unlocked"),
        pytest.param(LOCK, lock_event("locked", at(1)), id="locked"),
        pytest.param(
            LOCK, event(LOCK, "lock.access_denied", at(1), credential="x"), id="access-denied"
        ),
        pytest.param(ROBOT, interaction(at(1)), id="robot-interaction"),
        pytest.param(ROBOT, event(ROBOT, "robot.fault", at(1), code="E42"), id="robot-fault"),
        pytest.param(ALARM, event(ALARM, "alarm.cancelled", at(1)), id="cancel-without-press"),
        pytest.param(ALARM, heartbeat(ALARM, at(1), battery=90), id="heartbeat-full-battery"),
    ],
)
def test_harmless_event_on_an_empty_board_changes_nothing(kind: str, message: Event) -> None:
    """Events that open nothing leave an empty board empty."""
    assert evaluate_event(fresh(kind), {}, message, SITE, message.received_at)[1] == []


def test_kind_without_the_rule_does_not_open_it() -> None:
    """A robot has no tamper rule, and an unknown kind has no rules at all."""
    robot_tamper = event(ROBOT, "robot.tamper", at(1))  # not in the catalog; rules still ignore
    assert evaluate_event(fresh(ROBOT), {}, robot_tamper, SITE, at(1))[1] == []
    state, changes = evaluate_event(fresh("teleporter"), {}, heartbeat(LOCK, at(1), 5), SITE, at(1))
    assert changes == []
    assert state.battery == 5


# --- clearing, and the lifecycle of a cleared alert ---------------------------------------------

CLEARING = [
    pytest.param(
        LOCK, Rule.LOCK_JAMMED, HIGH, lock_event("locked", at(1)), id="lock_jammed-locked"
    ),
    pytest.param(
        LOCK,
        Rule.DOOR_LEFT_UNLOCKED,
        HIGH,
        lock_event("locked", at(1)),
        id="door_left_unlocked-locked",
    ),
    pytest.param(
        CAM,
        Rule.CAMERA_STREAM_LOST,
        HIGH,
        event(CAM, "camera.stream_restored", at(1)),
        id="camera_stream_lost-restored",
    ),
    pytest.param(
        CAM,
        Rule.RESIDENT_NOT_SEEN,
        HIGH,
        check_ended(at(1), "seen"),
        id="resident_not_seen-seen",
    ),
    pytest.param(
        LOCK, Rule.DEVICE_OFFLINE, HIGH, heartbeat(LOCK, at(1)), id="device_offline-heartbeat"
    ),
    pytest.param(
        CAM,
        Rule.DEVICE_OFFLINE,
        CRITICAL,
        event(CAM, "camera.privacy_on", at(1)),
        id="device_offline-any-event",
    ),
    pytest.param(
        ALARM, Rule.DEVICE_OFFLINE, CRITICAL, status(True, at(1)), id="device_offline-status-online"
    ),
    pytest.param(
        ALARM,
        Rule.ALARM_PRESSED,
        CRITICAL,
        event(ALARM, "alarm.cancelled", at(1)),
        id="alarm_pressed-cancelled",
    ),
]


def with_condition(kind: str, rule: Rule) -> DeviceState:
    """A device of `kind` in the state that goes with an open alert of `rule`."""
    if rule is Rule.DEVICE_OFFLINE:
        return fresh(kind, online=False)
    if rule is Rule.ALARM_PRESSED:
        return fresh(kind, alarm_pressed_at=T0)
    if rule is Rule.DOOR_LEFT_UNLOCKED:
        return fresh(kind, unlocked_since=T0, door_alerted=True)
    return fresh(kind)


@pytest.mark.parametrize(("kind", "rule", "severity", "message"), CLEARING)
def test_clearing_an_unacknowledged_alert_keeps_it_marked_cleared(
    kind: str, rule: Rule, severity: Severity, message: Message
) -> None:
    """A high or critical alert nobody acknowledged stays on the board, marked cleared."""
    result = run(with_condition(kind, rule), [message], board={rule: on_board(rule, severity)})
    assert [type(change) for change in result.flat] == [Clear]
    assert result.board[rule].cleared
    assert result.board[rule].state is AlertState.OPEN


@pytest.mark.parametrize(("kind", "rule", "severity", "message"), CLEARING)
def test_acknowledging_a_cleared_alert_resolves_it(
    kind: str, rule: Rule, severity: Severity, message: Message
) -> None:
    """Once cleared, acknowledging the alert resolves it."""
    result = run(with_condition(kind, rule), [message], board={rule: on_board(rule, severity)})
    assert acknowledge(result.board[rule]) is None


@pytest.mark.parametrize(
    ("kind", "rule", "severity", "message"),
    [case for case in CLEARING if case.id != "alarm_pressed-cancelled"],
)
def test_acknowledged_then_cleared_resolves(
    kind: str, rule: Rule, severity: Severity, message: Message
) -> None:
    """An acknowledged alert resolves itself when its condition clears."""
    alert = on_board(rule, severity, state=AlertState.ACKNOWLEDGED)
    result = run(with_condition(kind, rule), [message], board={rule: alert})
    assert [type(change) for change in result.flat] == [Clear]
    assert rule not in result.board


@pytest.mark.parametrize(
    ("kind", "rule", "severity", "message"),
    [
        pytest.param(
            LOCK, Rule.LOCK_JAMMED, HIGH, lock_event("unlocked", at(1)), id="jam-unlocked"
        ),
        pytest.param(LOCK, Rule.TAMPER, HIGH, lock_event("locked", at(1)), id="tamper-locked"),
        pytest.param(CAM, Rule.TAMPER, HIGH, check_ended(at(1), "seen"), id="tamper-check-seen"),
        pytest.param(
            CAM, Rule.CAMERA_STREAM_LOST, HIGH, check_ended(at(1), "seen"), id="stream-check-seen"
        ),
        pytest.param(
            CAM,
            Rule.RESIDENT_NOT_SEEN,
            HIGH,
            event(CAM, "camera.check_started", at(1), by="s"),
            id="not-seen-check-started",
        ),
        pytest.param(
            ALARM, Rule.ALARM_PRESSED, CRITICAL, heartbeat(ALARM, at(1), 90), id="alarm-heartbeat"
        ),
        pytest.param(
            ROBOT,
            Rule.BATTERY_LOW,
            WARNING,
            heartbeat(ROBOT, at(1), 25),
            id="battery-in-hysteresis",
        ),
    ],
)
def test_unrelated_event_does_not_clear(
    kind: str, rule: Rule, severity: Severity, message: Message
) -> None:
    """Only the rule's own resolving event clears it; tamper never clears by itself."""
    result = run(fresh(kind), [message], board={rule: on_board(rule, severity)})
    assert result.flat == []
    assert result.board == {rule: on_board(rule, severity)}


@pytest.mark.parametrize(
    ("severity", "acknowledged", "staff_resolve", "resolves"),
    [
        pytest.param(INFO, False, False, True, id="info-unacknowledged"),
        pytest.param(WARNING, False, False, True, id="warning-unacknowledged"),
        pytest.param(HIGH, False, False, False, id="high-unacknowledged"),
        pytest.param(CRITICAL, False, False, False, id="critical-unacknowledged"),
        pytest.param(HIGH, True, False, True, id="high-acknowledged"),
        pytest.param(CRITICAL, True, False, True, id="critical-acknowledged"),
        pytest.param(CRITICAL, False, True, False, id="staff-resolve-unacknowledged"),
        pytest.param(CRITICAL, True, True, False, id="staff-resolve-acknowledged"),
    ],
)
def test_clear_resolves(
    severity: Severity, acknowledged: bool, staff_resolve: bool, resolves: bool
) -> None:
    """A clear resolves an acknowledged or less-than-high alert, never a staff-resolve one."""
    state = AlertState.ACKNOWLEDGED if acknowledged else AlertState.OPEN
    alert = on_board(Rule.TAMPER, severity, state=state)
    assert clear_resolves(alert, Clear(Rule.TAMPER, X, staff_resolve)) is resolves


@pytest.mark.parametrize(
    ("alert", "expected"),
    [
        pytest.param(
            on_board(Rule.TAMPER, HIGH),
            on_board(Rule.TAMPER, HIGH, state=AlertState.ACKNOWLEDGED),
            id="open-becomes-acknowledged",
        ),
        pytest.param(on_board(Rule.TAMPER, HIGH, cleared=True), None, id="cleared-resolves"),
        pytest.param(
            on_board(Rule.TAMPER, HIGH, state=AlertState.ACKNOWLEDGED),
            on_board(Rule.TAMPER, HIGH, state=AlertState.ACKNOWLEDGED),
            id="twice-is-once",
        ),
        pytest.param(
            on_board(Rule.ALARM_PRESSED, CRITICAL, state=AlertState.ACKNOWLEDGED, cleared=True),
            on_board(Rule.ALARM_PRESSED, CRITICAL, state=AlertState.ACKNOWLEDGED, cleared=True),
            id="acknowledged-cancelled-alarm-waits-for-staff",
        ),
    ],
)
def test_acknowledge(alert: OpenAlert, expected: OpenAlert | None) -> None:
    """Acknowledging opens → acknowledged, resolves a cleared alert, and is idempotent."""
    assert acknowledge(alert) == expected


@pytest.mark.parametrize(
    ("board", "change", "message"),
    [
        pytest.param(
            {Rule.TAMPER: on_board(Rule.TAMPER, HIGH)},
            Open(Rule.TAMPER, HIGH, X),
            "already open",
            id="open-twice",
        ),
        pytest.param({}, Repeat(Rule.TAMPER, X), "not open", id="repeat-nothing"),
        pytest.param({}, Clear(Rule.TAMPER, X), "not open", id="clear-nothing"),
        pytest.param({}, Upgrade(Rule.TAMPER, HIGH, X), "not open", id="upgrade-nothing"),
        pytest.param({}, Escalate(Rule.TAMPER, X), "not open", id="escalate-nothing"),
    ],
)
def test_apply_refuses_changes_that_do_not_fit_the_board(
    board: Board, change: AlertChange, message: str
) -> None:
    """apply_changes keeps one alert per rule: a second Open, or changing a missing alert,
    raises."""
    with pytest.raises(ValueError, match=message):
        apply_changes(board, [change], T0)


def test_open_alert_refuses_resolved_state_and_zero_count() -> None:
    """An OpenAlert is on the board: never resolved, count at least 1."""
    with pytest.raises(ValueError, match="resolved"):
        OpenAlert(Rule.TAMPER, HIGH, AlertState.RESOLVED, T0)
    with pytest.raises(ValueError, match="count"):
        OpenAlert(Rule.TAMPER, HIGH, AlertState.OPEN, T0, count=0)


# --- battery_low, with hysteresis ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("levels", "site", "expected_changes", "expected"),
    [
        pytest.param([25], SITE, [], None, id="25-nothing"),
        pytest.param([19], SITE, ["Open"], (WARNING, 1, False), id="19-warning"),
        pytest.param([20], SITE, [], None, id="20-is-not-below-20"),
        pytest.param([9], SITE, ["Open"], (HIGH, 1, False), id="9-high"),
        pytest.param([10], SITE, ["Open"], (WARNING, 1, False), id="10-is-warning"),
        pytest.param([19, 9], SITE, ["Open", "Upgrade"], (HIGH, 1, False), id="warning-to-high"),
        pytest.param(
            [19, 18, 17], SITE, ["Open"], (WARNING, 1, False), id="no-repeat-per-heartbeat"
        ),
        pytest.param([19, 25], SITE, ["Open"], (WARNING, 1, False), id="hysteresis-holds"),
        pytest.param([19, 29, 19], SITE, ["Open"], (WARNING, 1, False), id="hysteresis-no-reopen"),
        pytest.param([19, 30], SITE, ["Open", "Clear"], None, id="warning-resolves-at-30"),
        pytest.param([9, 12], SITE, ["Open"], (HIGH, 1, False), id="high-stays-high-rising"),
        pytest.param([9, 35], SITE, ["Open", "Clear"], (HIGH, 1, True), id="high-cleared-kept"),
        pytest.param(
            [9, 35, 8],
            SITE,
            ["Open", "Clear", "Repeat"],
            (HIGH, 2, False),
            id="high-again-repeats-uncleared",
        ),
        pytest.param(
            [19, 30, 19],
            SITE,
            ["Open", "Clear", "Open"],
            (WARNING, 1, False),
            id="new-episode-new-alert",
        ),
        pytest.param([None, None], SITE, [], None, id="no-battery-reported"),
        pytest.param(
            [24],
            SiteRuleSettings(battery_warning_below=25),
            ["Open"],
            (WARNING, 1, False),
            id="site-warning-below-25",
        ),
        pytest.param(
            [12],
            SiteRuleSettings(battery_high_below=15),
            ["Open"],
            (HIGH, 1, False),
            id="site-high-below-15",
        ),
        pytest.param(
            [19, 40],
            SiteRuleSettings(battery_resolved_at=50),
            ["Open"],
            (WARNING, 1, False),
            id="site-resolved-at-50-holds",
        ),
        pytest.param(
            [19, 50],
            SiteRuleSettings(battery_resolved_at=50),
            ["Open", "Clear"],
            None,
            id="site-resolved-at-50-clears",
        ),
    ],
)
def test_battery_low(
    levels: list[int | None],
    site: SiteRuleSettings,
    expected_changes: list[str],
    expected: tuple[Severity, int, bool] | None,
) -> None:
    """battery_low: warning < 20, high < 10, clears at ≥ 30; the site may move the thresholds."""
    steps = [heartbeat(LOCK, at(minutes=5 * i), level) for i, level in enumerate(levels)]
    result = run(fresh(LOCK), steps, site)
    assert result.kinds_of_change() == expected_changes
    alert = result.board.get(Rule.BATTERY_LOW)
    got = None if alert is None else (alert.severity, alert.count, alert.cleared)
    assert got == expected


def test_battery_reason_names_the_level() -> None:
    """The reason says the battery level."""
    _, changes = evaluate_event(fresh(LOCK), {}, heartbeat(LOCK, at(1), 8), SITE, at(1))
    assert changes == [Open(Rule.BATTERY_LOW, HIGH, Reason.of(ReasonCode.BATTERY, level=8))]
    assert changes[0].reason.text == "battery 8 %"


def test_battery_staff_resolved_is_not_reopened_in_the_same_episode() -> None:
    """If staff resolve a battery alert while the level stays low, heartbeats do not reopen it."""
    first = run(fresh(LOCK), [heartbeat(LOCK, at(1), 15)])
    staff_resolved: Board = {}
    result = run(first.state, [heartbeat(LOCK, at(300), 14)], board=staff_resolved)
    assert result.flat == []
    # ... but dropping below the high threshold is news.
    worse = run(result.state, [heartbeat(LOCK, at(600), 9)])
    assert worse.kinds_of_change() == ["Open"]


# --- device_offline -----------------------------------------------------------------------------

OFFLINE_KINDS = [
    pytest.param(CAM, 60, CRITICAL, id="safety_camera-critical"),
    pytest.param(LOCK, 300, HIGH, id="door_lock-high"),
    pytest.param(ROBOT, 900, HIGH, id="companion_robot-high"),
    pytest.param(ALARM, 3600, CRITICAL, id="alarm_button-critical"),
]


@pytest.mark.parametrize(("kind", "interval_s", "severity"), OFFLINE_KINDS)
def test_offline_after_three_heartbeat_intervals_of_silence(
    kind: str, interval_s: int, severity: Severity
) -> None:
    """Silence for three intervals opens device_offline (kind's severity); not a second
    before."""
    state = fresh(kind)
    _, early = evaluate_tick(state, {}, SITE, at(3 * interval_s - 1))
    assert early == []
    state, changes = evaluate_tick(state, {}, SITE, at(3 * interval_s))
    assert [(type(c), c.rule) for c in changes] == [(Open, Rule.DEVICE_OFFLINE)]
    assert isinstance(changes[0], Open)
    assert changes[0].severity is severity
    assert not state.online


@pytest.mark.parametrize(("kind", "interval_s", "severity"), OFFLINE_KINDS)
def test_offline_ticks_do_not_repeat_and_the_next_message_clears(
    kind: str, interval_s: int, severity: Severity
) -> None:
    """Later ticks while still silent change nothing; the next message clears the alert."""
    silence = [Tick(at(3 * interval_s + i * 60)) for i in range(5)]
    back = at(3 * interval_s + 600)
    result = run(fresh(kind), [*silence, heartbeat(kind, back)])
    assert result.kinds_of_change() == ["Open", "Clear"]
    assert result.state.online
    assert result.state.last_message_at == back
    assert result.board[Rule.DEVICE_OFFLINE].cleared  # high/critical, nobody acknowledged


def test_offline_measured_from_the_latest_message_not_from_since() -> None:
    """A device heard from recently is not offline, however long ago watching began."""
    state = DeviceState(LOCK, since=at(hours=-10), last_message_at=at(0))
    assert evaluate_tick(state, {}, SITE, at(899))[1] == []
    assert evaluate_tick(state, {}, SITE, at(900))[1] != []


def test_never_heard_device_goes_offline_from_since() -> None:
    """A registered device that never sends anything is offline three intervals after since."""
    state = DeviceState(LOCK, since=T0)
    assert evaluate_tick(state, {}, SITE, at(899))[1] == []
    assert [type(c) for c in evaluate_tick(state, {}, SITE, at(900))[1]] == [Open]


def test_offline_resolved_by_staff_is_not_reopened_while_silent() -> None:
    """Staff resolving device_offline while the device stays silent is final until it returns."""
    gone = run(fresh(LOCK), [Tick(at(900))])
    result = run(gone.state, [Tick(at(2000)), Tick(at(5000))], board={})
    assert result.flat == []
    again = run(result.state, [heartbeat(LOCK, at(5001)), Tick(at(5001 + 900))])
    assert again.kinds_of_change() == ["Open"]


def test_offline_again_while_cleared_alert_is_on_the_board_repeats() -> None:
    """Going silent again while the old cleared alert is still unacknowledged counts up."""
    steps: list[Step] = [Tick(at(900)), heartbeat(LOCK, at(950)), Tick(at(950 + 900))]
    result = run(fresh(LOCK), steps, LATE_ESCALATION)
    assert result.kinds_of_change() == ["Open", "Clear", "Repeat"]
    alert = result.board[Rule.DEVICE_OFFLINE]
    assert (alert.count, alert.cleared) == (2, False)


# --- the status topic (Last Will) ---------------------------------------------------------------

REGISTRY = {"cam-0001": DeviceRef("cam-0001", CAM, active=True)}


@pytest.mark.parametrize(
    ("payload", "online", "expected"),
    [
        pytest.param(b"offline", True, ["Open"], id="last-will-opens"),
        pytest.param(b"offline", False, [], id="already-offline"),
        pytest.param(b"online", True, [], id="online-while-online"),
    ],
)
def test_status_topic_from_the_wire(payload: bytes, online: bool, expected: list[str]) -> None:
    """A Last Will on carewatch/devices/{id}/status, parsed, opens device_offline (critical for a
    camera)."""
    report = parse("carewatch/devices/cam-0001/status", payload, at(30), REGISTRY)
    assert isinstance(report, StatusReport)
    state, changes = evaluate_event(fresh(CAM, online=online), {}, report, SITE, at(30))
    assert [type(c).__name__ for c in changes] == expected
    if expected:
        assert changes[0] == Open(Rule.DEVICE_OFFLINE, CRITICAL, Reason.of(ReasonCode.LAST_WILL))
        assert changes[0].reason.text == "the broker reported it gone (Last Will)"
        assert not state.online


def test_last_will_then_online_status_clears() -> None:
    """status offline opens, a second offline changes nothing, status online clears."""
    steps = [status(False, at(10)), status(False, at(20)), status(True, at(30))]
    result = run(fresh(ALARM), steps)
    assert result.kinds_of_change() == ["Open", "Clear"]
    assert result.state.online


def test_last_will_older_than_the_last_message_is_stale() -> None:
    """A Last Will received before the newest message (the device spoke since) opens nothing."""
    state = fresh(LOCK, last_message_at=at(60))
    new_state, changes = evaluate_event(state, {}, status(False, at(30)), SITE, at(61))
    assert changes == []
    assert new_state.online


def test_last_will_does_not_count_as_hearing_from_the_device() -> None:
    """An offline status does not move last_message_at."""
    state, _ = evaluate_event(fresh(LOCK), {}, status(False, at(30)), SITE, at(30))
    assert state.last_message_at == T0


# --- door_left_unlocked (clock-driven) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "site", "expected"),
    [
        pytest.param(
            [lock_event("unlocked", at(0)), Tick(at(minutes=9, seconds=59))],
            SITE,
            [],
            id="not-before-10-min",
        ),
        pytest.param(
            [lock_event("unlocked", at(0)), Tick(at(minutes=10))],
            SITE,
            ["Open"],
            id="opens-at-10-min",
        ),
        pytest.param(
            [lock_event("unlocked", at(0)), *[Tick(at(minutes=10 + i)) for i in range(5)]],
            SITE,
            ["Open"],
            id="ticks-do-not-repeat",
        ),
        pytest.param(
            [
                lock_event("unlocked", at(0)),
                lock_event("locked", at(minutes=9)),
                Tick(at(minutes=11)),
            ],
            SITE,
            [],
            id="locked-in-time",
        ),
        pytest.param(
            [
                lock_event("unlocked", at(0)),
                Tick(at(minutes=10)),
                lock_event("locked", at(minutes=12)),
            ],
            SITE,
            ["Open", "Clear"],
            id="locked-later-clears",
        ),
        pytest.param(
            [
                lock_event("unlocked", at(0)),
                lock_event("unlocked", at(minutes=8)),
                Tick(at(minutes=10)),
            ],
            SITE,
            ["Open"],
            id="measured-from-the-first-unlock",
        ),
        pytest.param(
            [lock_event("unlocked", at(0)), Tick(at(minutes=2))],
            SiteRuleSettings(door_left_unlocked_min=2),
            ["Open"],
            id="site-2-min-opens",
        ),
        pytest.param(
            [lock_event("unlocked", at(0)), Tick(at(minutes=10))],
            SiteRuleSettings(door_left_unlocked_min=30),
            [],
            id="site-30-min-not-yet",
        ),
        pytest.param(
            [
                lock_event("unlocked", at(0)),
                Tick(at(minutes=10)),
                lock_event("locked", at(minutes=11)),
                lock_event("unlocked", at(minutes=12)),
                Tick(at(minutes=22)),
            ],
            LATE_ESCALATION,
            ["Open", "Clear", "Repeat"],
            id="new-unlock-while-cleared-alert-on-board",
        ),
    ],
)
def test_door_left_unlocked(steps: list[Step], site: SiteRuleSettings, expected: list[str]) -> None:
    """lock.unlocked with no lock.locked within the site's minutes (default 10) opens high;
    lock.locked clears."""
    result = run(fresh(LOCK), steps, site)
    assert result.kinds_of_change() == expected
    if expected[:1] == ["Open"]:
        assert isinstance(result.flat[0], Open)
        assert result.flat[0].severity is HIGH


def test_lock_jammed_resolves_on_locked_and_door_too() -> None:
    """lock.locked clears both lock_jammed and door_left_unlocked."""
    steps: list[Step] = [
        lock_event("unlocked", at(0)),
        lock_event("jammed", at(60)),
        Tick(at(minutes=10)),
        lock_event("locked", at(minutes=15)),
    ]
    result = run(fresh(LOCK), steps, LATE_ESCALATION)
    assert [(type(c).__name__, c.rule) for c in result.flat] == [
        ("Open", Rule.LOCK_JAMMED),
        ("Open", Rule.DOOR_LEFT_UNLOCKED),
        ("Clear", Rule.LOCK_JAMMED),
        ("Clear", Rule.DOOR_LEFT_UNLOCKED),
    ]


# --- the episode table: rules driven by a start and an end event --------------------------------


@dataclass(frozen=True, slots=True)
class EpisodeCase:
    """What one row of the episode table does, spelled out by hand."""

    kind: str
    rule: Rule
    start: str
    end: str
    severity: Severity
    timer: timedelta | None  # a tick this long after the start opens it; None: the start does
    every_start_counts: bool  # each start event opens or repeats (not once per episode)
    opened_reason: str
    cleared_reason: str

    def started(self, time: datetime, received_at: datetime | None = None) -> list[Step]:
        """The start event at `time`, and for a timed rule the tick that is due to open it."""
        steps: list[Step] = [event(self.kind, self.start, time, received_at)]
        if self.timer is not None:
            steps.append(Tick((received_at or time) + self.timer))
        return steps

    def ended(self, time: datetime) -> Event:
        """The end event at `time`."""
        return event(self.kind, self.end, time)

    def watched(self) -> DeviceState:
        """A device of the case's kind that is never silent in these scenarios (no offline)."""
        return fresh(self.kind, last_message_at=at(hours=200))


DOOR_CONTACT, WATER, SMOKE = "door_contact", "water_sensor", "smoke_detector"
EPISODE_CASES: list[EpisodeCase] = [
    EpisodeCase(
        LOCK,
        Rule.LOCK_JAMMED,
        "lock.jammed",
        "lock.locked",
        HIGH,
        timer=None,
        every_start_counts=True,
        opened_reason="the lock reported a jam",
        cleared_reason="locked",
    ),
    EpisodeCase(
        LOCK,
        Rule.DOOR_LEFT_UNLOCKED,
        "lock.unlocked",
        "lock.locked",
        HIGH,
        timer=timedelta(minutes=10),
        every_start_counts=False,
        opened_reason="unlocked for 10 min",
        cleared_reason="locked",
    ),
    EpisodeCase(
        CAM,
        Rule.CAMERA_STREAM_LOST,
        "camera.stream_lost",
        "camera.stream_restored",
        HIGH,
        timer=None,
        every_start_counts=True,
        opened_reason="the camera lost its stream",
        cleared_reason="stream restored",
    ),
    EpisodeCase(
        DOOR_CONTACT,
        Rule.DOOR_LEFT_OPEN,
        "door.opened",
        "door.closed",
        HIGH,
        timer=timedelta(minutes=15),  # T0 is 23:00 in Stockholm: night for hours to come
        every_start_counts=False,
        opened_reason="open at night for 15 min",
        cleared_reason="closed",
    ),
    EpisodeCase(
        WATER,
        Rule.WATER_LEAK,
        "water.leak_detected",
        "water.leak_cleared",
        CRITICAL,
        timer=None,
        every_start_counts=False,
        opened_reason="water leak detected",
        cleared_reason="dry again",
    ),
    EpisodeCase(
        SMOKE,
        Rule.SMOKE_DETECTED,
        "smoke.detected",
        "smoke.cleared",
        CRITICAL,
        timer=None,
        every_start_counts=False,
        opened_reason="smoke detected",
        cleared_reason="no smoke any more",
    ),
]
# Each test below runs once per row of the episode table, with the rule as its id.
by_episode_rule = pytest.mark.parametrize("case", EPISODE_CASES, ids=lambda case: case.rule.value)


def test_the_episode_table_is_the_one_these_cases_spell_out() -> None:
    """Every row of EPISODE_RULES has a case here, in the table's order (lock.locked clears
    lock_jammed before door_left_unlocked)."""
    assert [(row.rule, row.start, row.end) for row in EPISODE_RULES] == [
        (case.rule, case.start, case.end) for case in EPISODE_CASES
    ]


@by_episode_rule
def test_every_kind_with_an_episode_rule_has_its_events(case: EpisodeCase) -> None:
    """A kind that has the rule knows its start and end events (else it could never clear)."""
    kinds = [kind for kind in DEFAULT_CATALOG.values() if case.rule in kind.rules.enabled]
    assert case.kind in {kind.name for kind in kinds}
    for kind in kinds:
        assert {case.start, case.end} <= kind.event_types.keys(), kind.name


@by_episode_rule
def test_episode_start_opens_with_the_kinds_severity_and_repeats_as_the_rule_says(
    case: EpisodeCase,
) -> None:
    """The start opens the alert (a timed rule on the tick); more starts in the same episode,
    with ticks after them, count up only where every start is an occurrence."""
    steps = [*case.started(at(0)), *case.started(at(hours=1)), *case.started(at(hours=2))]
    result = run(case.watched(), steps, LATE_ESCALATION)
    expected = ["Open", "Repeat", "Repeat"] if case.every_start_counts else ["Open"]
    assert result.kinds_of_change() == expected
    opened = result.flat[0]
    assert isinstance(opened, Open)
    assert (opened.rule, opened.severity, opened.reason.text) == (
        case.rule,
        case.severity,
        case.opened_reason,
    )
    assert result.board[case.rule].count == len(expected)


@by_episode_rule
def test_episode_end_clears_once(case: EpisodeCase) -> None:
    """The end event clears the alert (kept on the board, marked cleared, as it is high or
    critical and unacknowledged); a repeated end changes nothing."""
    steps = [*case.started(at(0)), case.ended(at(hours=1)), case.ended(at(hours=2))]
    result = run(case.watched(), steps, LATE_ESCALATION)
    assert result.kinds_of_change() == ["Open", "Clear"]
    cleared = result.flat[1]
    assert isinstance(cleared, Clear)
    assert (cleared.rule, cleared.reason.text, cleared.staff_resolve) == (
        case.rule,
        case.cleared_reason,
        False,
    )
    assert result.board[case.rule].cleared


@by_episode_rule
def test_episode_end_alone_changes_nothing(case: EpisodeCase) -> None:
    """An end event with nothing started and nothing on the board opens and clears nothing."""
    assert run(case.watched(), [case.ended(at(0)), case.ended(at(hours=1))]).flat == []


@by_episode_rule
def test_a_new_episode_repeats_the_cleared_alert_still_on_the_board(case: EpisodeCase) -> None:
    """Start, end, start again while the cleared alert waits for acknowledgement: it counts up
    and is no longer cleared."""
    steps = [*case.started(at(0)), case.ended(at(hours=1)), *case.started(at(hours=2))]
    result = run(case.watched(), steps, LATE_ESCALATION)
    assert result.kinds_of_change() == ["Open", "Clear", "Repeat"]
    assert (result.board[case.rule].count, result.board[case.rule].cleared) == (2, False)


@by_episode_rule
def test_episode_resolved_by_staff(case: EpisodeCase) -> None:
    """Staff resolve the alert while the condition lasts: a repeated start reopens it only where
    every start is an occurrence; after the end, the next start opens anew for every rule."""
    opened = run(case.watched(), case.started(at(0)), LATE_ESCALATION)
    # Staff resolve: the board is empty, the state remembers the episode.
    repeated = run(opened.state, case.started(at(hours=1)), LATE_ESCALATION)
    assert repeated.kinds_of_change() == (["Open"] if case.every_start_counts else [])
    again = run(
        opened.state, [case.ended(at(hours=2)), *case.started(at(hours=3))], LATE_ESCALATION
    )
    assert again.kinds_of_change() == ["Open"]


@by_episode_rule
def test_episode_end_puts_the_state_back_at_rest(case: EpisodeCase) -> None:
    """After the end, the state is as before the start but for the rule's clock."""
    (row,) = [row for row in EPISODE_RULES if row.rule is case.rule]
    result = run(case.watched(), [*case.started(at(0)), case.ended(at(hours=1))])
    assert getattr(result.state, row.clock) == at(hours=1)
    clock_unset: dict[str, Any] = {row.clock: None}
    assert result.state._replace(**clock_unset) == case.watched()


@by_episode_rule
def test_an_outdated_episode_start_changes_nothing(case: EpisodeCase) -> None:
    """A start older than the newest end of the rule, received later, opens nothing and leaves
    the state as it was."""
    ended = run(case.watched(), [case.ended(at(300))])
    late = run(ended.state, case.started(at(0), received_at=at(301)))
    assert late.flat == []
    assert late.state == ended.state


@by_episode_rule
def test_a_kind_without_the_episode_rule_opens_nothing(case: EpisodeCase) -> None:
    """The same events from a kind the catalog does not have open nothing."""
    state = fresh("teleporter", last_message_at=at(hours=200))
    assert run(state, [*case.started(at(0)), case.ended(at(hours=1))]).flat == []


@pytest.mark.parametrize(
    ("build", "message"),
    [
        pytest.param(
            lambda: EpisodeRule(Rule.WATER_LEAK, "a", "b", EveryStart(X), "water_leaking", X),
            "no time field 'water_leaking'",
            id="clock-not-a-time",
        ),
        pytest.param(
            lambda: EpisodeRule(Rule.WATER_LEAK, "a", "a", EveryStart(X), "water_event_at", X),
            "the same event type starts and ends it",
            id="start-is-end",
        ),
        pytest.param(
            lambda: FirstStart(flag="online", reason=X),
            "no flag .* field 'online'",
            id="flag-on-by-default",
        ),
        pytest.param(
            lambda: FirstStart(flag="water_leakage", reason=X),
            "no flag .* field 'water_leakage'",
            id="flag-misspelt",
        ),
        pytest.param(
            lambda: TimedStart(since="door_open_alerted", alerted="door_open_alerted"),
            "no time field 'door_open_alerted'",
            id="since-not-a-time",
        ),
        pytest.param(
            lambda: TimedStart(since="door_open_since", alerted="door_open_since"),
            "no flag .* field 'door_open_since'",
            id="alerted-not-a-flag",
        ),
    ],
)
def test_an_episode_rule_names_real_state_fields(build: Any, message: str) -> None:
    """A row that names a state field the rules do not have, or of the wrong sort, is refused
    when the table is built, not at the first event."""
    with pytest.raises(ValueError, match=message):
        build()


# --- robot_inactive (clock-driven) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param([interaction(at(0)), Tick(at(hours=47, minutes=59))], [], id="not-before-48h"),
        pytest.param([interaction(at(0)), Tick(at(hours=48))], ["Open"], id="opens-at-48h"),
        pytest.param(
            [interaction(at(0)), Tick(at(hours=48)), Tick(at(hours=60))],
            ["Open"],
            id="ticks-do-not-repeat",
        ),
        pytest.param(
            [interaction(at(0)), Tick(at(hours=48)), interaction(at(hours=49))],
            ["Open", "Clear"],
            id="next-interaction-resolves",
        ),
        pytest.param([Tick(at(hours=48))], ["Open"], id="never-used-since-registration"),
        pytest.param(
            [
                interaction(at(0)),
                Tick(at(hours=48)),
                interaction(at(hours=1), received_at=at(hours=50)),
            ],
            ["Open"],
            id="buffered-old-interaction-does-not-clear",
        ),
        pytest.param(
            [interaction(at(0)), Tick(at(hours=48)), interaction(at(hours=49)), Tick(at(hours=96))],
            ["Open", "Clear"],
            id="clock-restarts-at-interaction",
        ),
        pytest.param(
            [interaction(at(0)), Tick(at(hours=48)), interaction(at(hours=49)), Tick(at(hours=97))],
            ["Open", "Clear", "Open"],
            id="inactive-again",
        ),
    ],
)
def test_robot_inactive(steps: list[Step], expected: list[str]) -> None:
    """No robot.interaction for 48 h opens an info alert; the next interaction resolves it."""
    result = run(fresh(ROBOT, last_message_at=at(hours=200)), steps)  # never silent here
    assert result.kinds_of_change() == expected
    if "Open" in expected:
        assert isinstance(result.flat[0], Open)
        assert result.flat[0].severity is INFO
    if expected[-1:] == ["Clear"]:
        assert Rule.ROBOT_INACTIVE not in result.board  # info resolves itself


# --- escalation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alert", "now", "site", "escalates"),
    [
        pytest.param(
            on_board(Rule.ALARM_PRESSED, CRITICAL), at(299), SITE, False, id="critical-4m59"
        ),
        pytest.param(on_board(Rule.ALARM_PRESSED, CRITICAL), at(300), SITE, True, id="critical-5m"),
        pytest.param(on_board(Rule.TAMPER, HIGH), at(300), SITE, True, id="high-5m"),
        pytest.param(
            on_board(Rule.BATTERY_LOW, WARNING), at(hours=9), SITE, False, id="warning-never"
        ),
        pytest.param(
            on_board(Rule.ROBOT_INACTIVE, INFO), at(hours=9), SITE, False, id="info-never"
        ),
        pytest.param(
            on_board(Rule.TAMPER, HIGH, state=AlertState.ACKNOWLEDGED),
            at(hours=1),
            SITE,
            False,
            id="acknowledged-never",
        ),
        pytest.param(
            on_board(Rule.TAMPER, HIGH, escalated=True), at(hours=1), SITE, False, id="only-once"
        ),
        pytest.param(
            on_board(Rule.ALARM_PRESSED, CRITICAL, cleared=True),
            at(300),
            SITE,
            True,
            id="cleared-unacknowledged-escalates",
        ),
        pytest.param(
            on_board(Rule.TAMPER, HIGH),
            at(60),
            SiteRuleSettings(escalation_s=60),
            True,
            id="site-1-min",
        ),
        pytest.param(
            on_board(Rule.TAMPER, HIGH),
            at(300),
            SiteRuleSettings(escalation_s=600),
            False,
            id="site-10-min-not-yet",
        ),
        pytest.param(
            on_board(Rule.BATTERY_LOW, HIGH, raised_at=at(hours=2)),
            at(hours=2, seconds=299),
            SITE,
            False,
            id="upgraded-counts-from-raise",
        ),
        pytest.param(
            on_board(Rule.BATTERY_LOW, HIGH, raised_at=at(hours=2)),
            at(hours=2, seconds=300),
            SITE,
            True,
            id="upgraded-escalates-after-raise",
        ),
    ],
)
def test_escalation(
    alert: OpenAlert, now: datetime, site: SiteRuleSettings, escalates: bool
) -> None:
    """An unacknowledged high or critical alert escalates once, after the site's escalation time
    (default 5 min)."""
    state = fresh(ALARM, last_message_at=now)  # heard just now: no offline alert in the way
    result = run(state, [Tick(now)], site, board={alert.rule: alert})
    assert [type(c) for c in result.flat] == ([Escalate] if escalates else [])
    assert result.board[alert.rule].escalated is (escalates or alert.escalated)


def test_escalation_of_a_battery_upgrade_waits_for_the_site_time() -> None:
    """A warning that became high after hours gets the full escalation time from the upgrade."""
    steps: list[Step] = [
        heartbeat(LOCK, at(0), 15),
        heartbeat(LOCK, at(hours=3), 9),
        Tick(at(hours=3, seconds=299)),
        Tick(at(hours=3, seconds=300)),
    ]
    result = run(fresh(LOCK, last_message_at=at(hours=4)), steps)
    assert result.kinds_of_change() == ["Open", "Upgrade", "Escalate"]
    waited = Reason.of(ReasonCode.NOT_ACKNOWLEDGED, waiting_s=300)
    assert result.changes[3] == [Escalate(Rule.BATTERY_LOW, waited)]
    assert waited.text == "not acknowledged for 5 min"


# --- alarm_pressed and alarm.cancelled ----------------------------------------------------------


def pressed(time: datetime, received_at: datetime | None = None) -> Event:
    """alarm.pressed at `time`."""
    return event(ALARM, "alarm.pressed", time, received_at)


def cancelled(time: datetime, received_at: datetime | None = None) -> Event:
    """alarm.cancelled at `time`."""
    return event(ALARM, "alarm.cancelled", time, received_at)


def test_cancelled_alarm_stays_on_the_board_until_acknowledged() -> None:
    """The resident cancelling marks the critical alarm cleared, reason given; acknowledging
    resolves it."""
    result = run(fresh(ALARM), [pressed(at(0)), cancelled(at(20))])
    assert result.changes[1] == [
        Clear(Rule.ALARM_PRESSED, Reason.of(ReasonCode.CANCELLED_BY_RESIDENT), staff_resolve=True)
    ]
    alert = result.board[Rule.ALARM_PRESSED]
    assert (alert.severity, alert.state, alert.cleared) == (CRITICAL, AlertState.OPEN, True)
    assert acknowledge(alert) is None


def test_acknowledged_alarm_cancelled_waits_for_a_staff_resolve() -> None:
    """An acknowledged alarm that the resident cancels stays, marked cleared: staff resolve it."""
    board = {
        Rule.ALARM_PRESSED: on_board(Rule.ALARM_PRESSED, CRITICAL, state=AlertState.ACKNOWLEDGED)
    }
    result = run(fresh(ALARM, alarm_pressed_at=at(0)), [cancelled(at(20))], board=board)
    alert = result.board[Rule.ALARM_PRESSED]
    assert (alert.state, alert.cleared) == (AlertState.ACKNOWLEDGED, True)


@pytest.mark.parametrize(
    ("steps", "expected", "final"),
    [
        pytest.param(
            [pressed(at(0)), pressed(at(30))], ["Open", "Repeat"], (2, False), id="pressed-twice"
        ),
        pytest.param(
            [pressed(at(0)), cancelled(at(20)), pressed(at(40))],
            ["Open", "Clear", "Repeat"],
            (2, False),
            id="pressed-again-after-cancel-is-live",
        ),
        pytest.param(
            [pressed(at(0)), cancelled(at(20)), cancelled(at(30))],
            ["Open", "Clear"],
            (1, True),
            id="cancelled-twice",
        ),
        pytest.param(
            [cancelled(at(20)), pressed(at(0), received_at=at(25))],
            ["Open", "Clear"],
            (1, True),
            id="late-press-already-cancelled-still-shown",
        ),
        pytest.param(
            [pressed(at(40)), cancelled(at(20), received_at=at(45))],
            ["Open"],
            (1, False),
            id="late-cancel-of-an-older-press-cancels-nothing",
        ),
        pytest.param(
            [pressed(at(0)), pressed(at(40)), cancelled(at(20), received_at=at(45))],
            ["Open", "Repeat"],
            (2, False),
            id="cancel-between-presses-cancels-nothing",
        ),
        pytest.param(
            [pressed(at(40)), pressed(at(10), received_at=at(50))],
            ["Open", "Repeat"],
            (2, False),
            id="late-press-still-counts",
        ),
    ],
)
def test_alarm_sequences(steps: list[Step], expected: list[str], final: tuple[int, bool]) -> None:
    """Presses always count, however late; a cancel clears only the newest press."""
    result = run(fresh(ALARM), steps)
    assert result.kinds_of_change() == expected
    alert = result.board[Rule.ALARM_PRESSED]
    assert (alert.count, alert.cleared) == final


# --- late events ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "steps", "expected", "board_rules"),
    [
        pytest.param(
            LOCK,
            [
                lock_event("unlocked", at(300)),
                lock_event("locked", at(0), received_at=at(301)),
                Tick(at(minutes=15)),
            ],
            ["Open"],
            {Rule.DOOR_LEFT_UNLOCKED},
            id="late-lock-older-than-unlock-ignored",
        ),
        pytest.param(
            LOCK,
            [
                lock_event("locked", at(300)),
                lock_event("unlocked", at(0), received_at=at(301)),
                Tick(at(minutes=15)),
            ],
            [],
            set(),
            id="late-unlock-older-than-lock-ignored",
        ),
        pytest.param(
            LOCK,
            [lock_event("unlocked", at(0), received_at=at(minutes=30)), Tick(at(minutes=30))],
            ["Open"],
            {Rule.DOOR_LEFT_UNLOCKED},
            id="buffered-unlock-opens-on-next-tick",
        ),
        pytest.param(
            LOCK,
            [lock_event("locked", at(300)), lock_event("jammed", at(0), received_at=at(301))],
            [],
            set(),
            id="late-jam-before-a-lock-ignored",
        ),
        pytest.param(
            CAM,
            [
                check_ended(at(300), "seen"),
                replace(check_ended(at(0), "not_seen"), received_at=at(301)),
            ],
            [],
            set(),
            id="late-not-seen-before-a-seen-check-ignored",
        ),
        pytest.param(
            CAM,
            [
                check_ended(at(0), "not_seen"),
                replace(check_ended(at(-60), "seen"), received_at=at(1)),
            ],
            ["Open"],
            {Rule.RESIDENT_NOT_SEEN},
            id="late-seen-before-a-not-seen-check-ignored",
        ),
        pytest.param(
            CAM,
            [
                event(CAM, "camera.stream_restored", at(300)),
                event(CAM, "camera.stream_lost", at(0), received_at=at(301)),
            ],
            [],
            set(),
            id="late-stream-lost-ignored",
        ),
        pytest.param(
            CAM,
            [event(CAM, "camera.tamper", at(0), received_at=at(hours=5))],
            ["Open"],
            {Rule.TAMPER},
            id="late-tamper-still-opens",
        ),
        pytest.param(
            LOCK,
            [heartbeat(LOCK, at(300), 50), replace(heartbeat(LOCK, at(0), 5), received_at=at(301))],
            [],
            set(),
            id="late-low-battery-reading-ignored",
        ),
    ],
)
def test_late_events(
    kind: str, steps: list[Step], expected: list[str], board_rules: set[Rule]
) -> None:
    """An event older than the newest of its condition changes nothing; tamper and presses are
    facts and always count."""
    result = run(fresh(kind, last_message_at=at(hours=1)), steps)
    assert result.kinds_of_change() == expected
    assert set(result.board) == board_rules


def test_late_event_still_proves_the_device_is_online() -> None:
    """A buffered event with an old timestamp, received now, clears device_offline."""
    gone = run(fresh(LOCK), [Tick(at(900))])
    late = heartbeat(LOCK, at(-3600))
    result = run(gone.state, [replace(late, received_at=at(1000))], board=gone.board)
    assert result.kinds_of_change() == ["Clear"]
    assert result.state.online
    assert result.state.last_message_at == at(1000)


# --- site settings and state ----------------------------------------------------------------------

DEFAULT_BATTERY = BatteryRule(warning_below=20, high_below=10, resolved_at=30)


@pytest.mark.parametrize(
    ("site", "expected"),
    [
        pytest.param(SITE, DEFAULT_BATTERY, id="no-overrides"),
        pytest.param(
            SiteRuleSettings(battery_warning_below=25), BatteryRule(25, 10, 30), id="warning-25"
        ),
        pytest.param(
            SiteRuleSettings(battery_warning_below=40),
            BatteryRule(40, 10, 40),
            id="warning-40-drags-resolved-up",
        ),
        pytest.param(
            SiteRuleSettings(battery_warning_below=5),
            BatteryRule(5, 5, 30),
            id="warning-5-drags-high-down",
        ),
        pytest.param(
            SiteRuleSettings(battery_high_below=25),
            BatteryRule(25, 25, 30),
            id="high-25-drags-warning-up",
        ),
        pytest.param(
            SiteRuleSettings(battery_resolved_at=15),
            BatteryRule(15, 10, 15),
            id="resolved-15-drags-warning-down",
        ),
        pytest.param(
            SiteRuleSettings(
                battery_high_below=5, battery_warning_below=15, battery_resolved_at=50
            ),
            BatteryRule(15, 5, 50),
            id="all-three",
        ),
    ],
)
def test_site_battery_thresholds_merge_into_valid_ones(
    site: SiteRuleSettings, expected: BatteryRule
) -> None:
    """A site's battery thresholds override the catalog's and always give a valid rule."""
    assert site.battery_rule(DEFAULT_BATTERY) == expected


@st.composite
def battery_overrides(draw: st.DrawFn) -> SiteRuleSettings:
    """Any valid battery overrides: some of the three thresholds, in order."""
    present = draw(st.lists(st.booleans(), min_size=3, max_size=3))
    levels = iter(sorted(draw(st.lists(st.integers(1, 100), min_size=3, max_size=3))))
    high, warning, resolved = (next(levels) if p else None for p in present)
    return SiteRuleSettings(
        battery_high_below=high, battery_warning_below=warning, battery_resolved_at=resolved
    )


@given(site=battery_overrides())
def test_any_valid_battery_override_gives_a_valid_rule_keeping_what_was_given(
    site: SiteRuleSettings,
) -> None:
    """Whatever valid thresholds a site sets, the merged rule is valid and keeps them."""
    merged = site.battery_rule(DEFAULT_BATTERY)  # BatteryRule checks its own order
    for override, got in [
        (site.battery_high_below, merged.high_below),
        (site.battery_warning_below, merged.warning_below),
        (site.battery_resolved_at, merged.resolved_at),
    ]:
        assert override is None or override == got


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"escalation_s": 0}, "escalation_s", id="escalation-zero"),
        pytest.param({"door_left_unlocked_min": -1}, "door_left_unlocked_min", id="door-negative"),
        pytest.param({"escalation_s": "300"}, "escalation_s", id="escalation-string"),
        pytest.param({"battery_high_below": 5.5}, "1 to 100", id="battery-float"),
        pytest.param({"battery_warning_below": 0}, "1 to 100", id="battery-zero"),
        pytest.param({"battery_resolved_at": 101}, "1 to 100", id="battery-above-100"),
        pytest.param(
            {"battery_high_below": 30, "battery_warning_below": 20}, "<=", id="high-above-warning"
        ),
    ],
)
def test_site_settings_check_themselves(kwargs: dict[str, Any], message: str) -> None:
    """Nonsense overrides are refused when the settings are built, not at evaluation."""
    with pytest.raises(ValueError, match=message):
        SiteRuleSettings(**kwargs)


def test_site_settings_record_round_trips_and_refuses_unknown_keys() -> None:
    """sites.rule_settings: the overrides as JSON, back again; an unknown key is refused."""
    site = SiteRuleSettings(escalation_s=120, door_left_unlocked_min=15, battery_warning_below=25)
    record = site.to_record()
    assert record == {
        "escalation_s": 120,
        "door_left_unlocked_min": 15,
        "battery_warning_below": 25,
    }
    assert SiteRuleSettings.from_record(json.loads(json.dumps(record))) == site
    assert SiteRuleSettings.from_record({}) == SITE
    assert site.door_left_unlocked_s == 900
    with pytest.raises(ValueError, match="door_left_unlocked_s"):
        SiteRuleSettings.from_record({"door_left_unlocked_s": 600})


def test_a_gateway_keeps_every_valid_override_of_a_stored_record() -> None:
    """A record stored before a bound existed (or written by hand) loses only its bad keys:
    each is named, the valid overrides still apply, and the battery order is kept."""
    settings, problems = SiteRuleSettings.usable_part(
        {
            "escalation_s": 99_999_999_999_999_999_999,
            "door_left_unlocked_min": 15,
            "battery_high_below": 50,
            "battery_warning_below": 20,
            "colour": "red",
        }
    )
    assert settings == SiteRuleSettings(door_left_unlocked_min=15, battery_high_below=50)
    assert len(problems) == 3
    assert any("escalation_s" in problem for problem in problems)
    assert any("battery_high_below <= battery_warning_below" in p for p in problems)
    assert any("colour" in problem for problem in problems)
    assert SiteRuleSettings.usable_part({"escalation_s": 120}) == (
        SiteRuleSettings(escalation_s=120),
        [],
    )


def test_naive_times_are_refused() -> None:
    """A naive `now` or `since` is the caller's bug: ValueError."""
    naive = datetime(2026, 11, 22, 22, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate_tick(fresh(LOCK), {}, SITE, naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate_tick(DeviceState(LOCK, since=naive), {}, SITE, T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate_event(DeviceState(LOCK, since=naive), {}, status(True, T0), SITE, T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        DeviceState.from_record({"kind": LOCK, "since": naive.isoformat()})


def test_state_record_round_trips_through_json() -> None:
    """to_record is JSON-ready and from_record gives the same state back; unknown keys are
    ignored, missing ones default."""
    state = fresh(
        LOCK,
        battery=8,
        battery_at=at(5),
        battery_alerted=HIGH,
        unlocked_since=at(7),
        door_alerted=True,
        online=False,
    )
    record = json.loads(json.dumps(state.to_record()))
    assert DeviceState.from_record(record) == state
    assert DeviceState.from_record({**record, "from_the_future": 1}) == state
    assert DeviceState.from_record({"kind": LOCK, "since": T0.isoformat()}) == DeviceState(LOCK, T0)
    # Fields at their defaults are left out of the record (the gateway writes it per batch).
    assert DeviceState(LOCK, T0).to_record() == {"kind": LOCK, "since": T0.isoformat()}
    assert orjson.loads(orjson.dumps(state.record_fields())) == record


# --- properties -----------------------------------------------------------------------------------

# Valid data for the event types that carry some, as the envelope parser would let through.
DATA: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "camera.check_started": st.fixed_dictionaries({"by": st.just("staff-1")}),
    "camera.check_ended": st.fixed_dictionaries(
        {
            "by": st.just("staff-1"),
            "duration_s": st.integers(0, 600),
            "outcome": st.sampled_from(["seen", "not_seen", "technical_failure"]),
        }
    ),
    "lock.unlocked": st.fixed_dictionaries({"by": st.just("s"), "method": st.just("app")}),
    "lock.locked": st.fixed_dictionaries({"by": st.just("s"), "method": st.just("app")}),
    "lock.access_denied": st.fixed_dictionaries({"credential": st.just("c")}),
    "robot.interaction": st.fixed_dictionaries(
        {"mode": st.sampled_from(["touch", "voice", "motion"]), "duration_s": st.integers(0, 60)}
    ),
    "robot.fault": st.fixed_dictionaries({"code": st.just("E42")}),
    "heartbeat": st.fixed_dictionaries({}, optional={"battery": st.integers(0, 100)}),
}


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, SiteRuleSettings, list[tuple[str, Any]]]:
    """A kind, site settings, and a sequence of events (some late), status reports, watchdog
    ticks and staff actions, with the clock moving forward by up to two days a step."""
    kind = draw(st.sampled_from(sorted(DEFAULT_CATALOG)))
    site = draw(
        st.builds(
            SiteRuleSettings,
            escalation_s=st.none() | st.integers(1, 3600),
            door_left_unlocked_min=st.none() | st.integers(1, 60),
        )
    )
    types = sorted(DEFAULT_CATALOG[kind].event_types)
    steps: list[tuple[str, Any]] = []
    now = T0
    for _ in range(draw(st.integers(1, 40))):
        now += timedelta(seconds=draw(st.sampled_from([0, 1, 30, 300, 700, 3600, 50_000, 180_000])))
        action = draw(
            st.sampled_from(["event", "event", "event", "tick", "tick", "status", "staff"])
        )
        if action == "event":
            event_type = draw(st.sampled_from(types))
            data: dict[str, Any] = draw(DATA.get(event_type, st.just({})))
            late_s = draw(st.sampled_from([0, 0, 0, 5, 600, 86_400]))
            time = now - timedelta(seconds=late_s)
            steps.append(("event", Event("d", kind, "e", time, now, event_type, data)))
        elif action == "tick":
            steps.append(("tick", now))
        elif action == "status":
            steps.append(("status", StatusReport("d", draw(st.booleans()), now)))
        else:
            rule = draw(st.sampled_from(list(Rule)))
            steps.append((draw(st.sampled_from(["acknowledge", "resolve"])), (rule, now)))
    return kind, site, steps


@settings(max_examples=300, deadline=None)
@given(scenario=scenarios())
def test_any_sequence_keeps_one_alert_per_rule_and_never_raises(
    scenario: tuple[str, SiteRuleSettings, list[tuple[str, Any]]],
) -> None:
    """For any events, ticks, Last Wills and staff actions, every change fits the board (never a
    second alert of a rule), only the kind's rules open, and the state survives its record."""
    kind, site, steps = scenario
    enabled = DEFAULT_CATALOG[kind].rules.enabled
    state = DeviceState(kind, since=T0)
    board: Board = {}
    for action, value in steps:
        changes: Sequence[AlertChange] = []
        if action == "event" or action == "status":
            now = value.received_at
            state, changes = evaluate_event(state, board, value, site, now)
        elif action == "tick":
            now = value
            state, changes = evaluate_tick(state, board, site, now)
        else:
            rule, now = value
            if rule in board:
                if action == "resolve" or (acknowledged := acknowledge(board[rule])) is None:
                    del board[rule]
                else:
                    board[rule] = acknowledged
        board = apply_changes(board, changes, now)  # raises on a second Open of a rule
        assert all(alert.rule == rule for rule, alert in board.items())
        assert {change.rule for change in changes if isinstance(change, Open)} <= enabled
        assert sum(isinstance(change, Open) for change in changes) == len(
            {change.rule for change in changes if isinstance(change, Open)}
        )
        assert DeviceState.from_record(json.loads(json.dumps(state.to_record()))) == state
