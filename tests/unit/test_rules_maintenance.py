"""A device in maintenance ("in repair"): its device-health rules are silent while the window
lasts, safety and care rules are not, and a condition that still lasts at the end opens then."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.catalog import Rule, Severity
from devices.reasons import Reason, ReasonCode
from devices.rules import (
    MAINTENANCE_SILENCED,
    AlertChange,
    Clear,
    DeviceState,
    Escalate,
    Open,
    OpenAlert,
    apply_changes,
    evaluate_event,
    evaluate_tick,
)
from tests.unit.test_rules import (
    ALARM,
    CAM,
    LOCK,
    SITE,
    Step,
    Tick,
    at,
    event,
    fresh,
    heartbeat,
    lock_event,
    on_board,
)


@dataclass(frozen=True, slots=True)
class During:
    """A step taken while the device is in maintenance."""

    step: Step


def run(
    state: DeviceState,
    steps: Iterable[Step | During],
    board: Mapping[Rule, OpenAlert] | None = None,
) -> tuple[DeviceState, dict[Rule, OpenAlert], list[AlertChange]]:
    """Feed the steps through the rules as the gateway would, in maintenance where marked."""
    current = dict(board or {})
    every: list[AlertChange] = []
    for item in steps:
        in_maintenance = isinstance(item, During)
        step = item.step if isinstance(item, During) else item
        if isinstance(step, Tick):
            now = step.now
            state, changes = evaluate_tick(state, current, SITE, now, in_maintenance=in_maintenance)
        else:
            now = step.received_at
            state, changes = evaluate_event(
                state, current, step, SITE, now, in_maintenance=in_maintenance
            )
        current = apply_changes(current, changes, now)
        every += changes
    return state, current, every


def opened(changes: Iterable[AlertChange]) -> list[tuple[Rule, Severity, str]]:
    return [(c.rule, c.severity, c.reason.text) for c in changes if isinstance(c, Open)]


def test_offline_during_maintenance_opens_when_the_window_ends_if_still_silent() -> None:
    """Silence in repair opens nothing; the first tick after the window opens device_offline,
    its reason saying it arose during maintenance."""
    state, board, changes = run(
        fresh(CAM), [During(Tick(at(minutes=5))), During(Tick(at(hours=1)))]
    )
    assert changes == []
    assert not state.online
    assert [rule for rule, _, _ in ((Rule(r), s, m) for r, s, m in state.held)] == [
        Rule.DEVICE_OFFLINE
    ]
    state, board, changes = run(state, [Tick(at(hours=2))], board)
    [(rule, severity, reason)] = opened(changes)
    assert (rule, severity) == (Rule.DEVICE_OFFLINE, Severity.CRITICAL)
    assert reason.endswith("(during maintenance)")
    assert state.held == ()


def test_a_condition_that_ended_during_maintenance_opens_nothing_afterwards() -> None:
    """Offline, then back within the window: nothing to open when it ends."""
    steps: list[Step | During] = [
        During(Tick(at(minutes=5))),
        During(heartbeat(CAM, at(minutes=30))),
        Tick(at(minutes=31)),
    ]
    state, board, changes = run(fresh(CAM), steps)
    assert changes == []
    assert state.held == ()
    assert board == {}


def test_battery_low_held_at_its_highest_level_and_released_once() -> None:
    """A battery that sinks from warning to high in repair opens once, high, afterwards."""
    steps: list[Step | During] = [
        During(heartbeat(LOCK, at(60), battery=18)),
        During(heartbeat(LOCK, at(120), battery=8)),
        heartbeat(LOCK, at(180), battery=8),
        Tick(at(240)),
    ]
    state, board, changes = run(fresh(LOCK), steps)
    assert [(rule, severity) for rule, severity, _ in opened(changes)] == [
        (Rule.BATTERY_LOW, Severity.HIGH)
    ]
    assert board[Rule.BATTERY_LOW].count == 1
    assert state.held == ()


def test_tamper_during_maintenance_is_the_technicians_work() -> None:
    """A tamper in repair opens nothing, then or later."""
    steps: list[Step | During] = [During(event(ALARM, "alarm.tamper", at(60))), Tick(at(hours=1))]
    _, board, changes = run(fresh(ALARM), steps)
    assert changes == []
    assert board == {}


def test_safety_and_care_rules_never_pause() -> None:
    """An alarm press and a door left unlocked open during maintenance as always."""
    _, _, pressed = run(fresh(ALARM), [During(event(ALARM, "alarm.pressed", at(60)))])
    assert [rule for rule, _, _ in opened(pressed)] == [Rule.ALARM_PRESSED]
    steps: list[Step | During] = [
        During(lock_event("unlocked", at(60))),
        During(Tick(at(hours=1))),
    ]
    _, _, door = run(fresh(LOCK), steps)
    assert Rule.DOOR_LEFT_UNLOCKED in [rule for rule, _, _ in opened(door)]


def test_an_alert_on_the_board_before_the_window_clears_but_does_not_escalate() -> None:
    """Already on the board: the window neither repeats nor escalates it, and its end clears
    it as usual."""
    board = {Rule.DEVICE_OFFLINE: on_board(Rule.DEVICE_OFFLINE, Severity.CRITICAL)}
    state = fresh(CAM, online=False)
    _, board_after, changes = run(state, [During(Tick(at(hours=3)))], board)
    assert changes == []
    _, _, after = run(state, [Tick(at(hours=3))], board)
    assert [type(c) for c in after] == [Escalate]
    state, board_after, changes = run(state, [During(heartbeat(CAM, at(hours=4)))], board)
    assert board_after[Rule.DEVICE_OFFLINE].cleared
    assert state.held == ()


def test_held_survives_the_state_record() -> None:
    """What is held is stored with the state and read back unchanged (gateway restarts)."""
    state, _, _ = run(fresh(LOCK), [During(lock_event("jammed", at(60)))])
    assert state.held == (("lock_jammed", "high", Reason.of(ReasonCode.LOCK_JAMMED)),)
    record = state.to_record()
    assert record["held"] == [["lock_jammed", "high", {"code": "lock_jammed", "args": {}}]]
    assert DeviceState.from_record(json.loads(json.dumps(record))) == state


def test_held_text_of_an_older_version_opens_with_that_text() -> None:
    """A reason held as text by the version before reasons had codes opens with the same text
    when the window ends (its code: ``text``)."""
    record = fresh(LOCK).to_record()
    record["held"] = [["lock_jammed", "high", "the lock reported a jam"]]
    state, _, changes = run(DeviceState.from_record(record), [Tick(at(hours=1))])
    [change] = [c for c in changes if isinstance(c, Open) and c.rule is Rule.LOCK_JAMMED]
    assert change.reason.code is ReasonCode.TEXT
    assert change.reason.text == "the lock reported a jam (during maintenance)"
    assert state.held == ()


@pytest.mark.parametrize("bad", [{"held": "x"}, {"held": [["nope", "high", ""]]}, {"held": [[1]]}])
def test_unreadable_held_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"held|Rule"):
        DeviceState.from_record({**fresh(LOCK).to_record(), **bad})


# What a device in repair may send or live through, in any order.
STEP = st.sampled_from(
    [
        lambda t: heartbeat(LOCK, at(t), battery=5),
        lambda t: heartbeat(LOCK, at(t), battery=90),
        lambda t: lock_event("jammed", at(t)),
        lambda t: lock_event("locked", at(t)),
        lambda t: event(LOCK, "lock.tamper", at(t)),
        lambda t: Tick(at(t)),
    ]
)


@given(st.lists(st.tuples(STEP, st.booleans()), max_size=25))
def test_silenced_in_maintenance_and_released_after(steps: list[tuple[object, bool]]) -> None:
    """Property: whatever happens, no silenced rule opens, repeats, upgrades or escalates while
    in maintenance; the first tick after the window leaves nothing held, and whatever was held
    is then on the board."""
    state = fresh(LOCK)
    board: dict[Rule, OpenAlert] = {}
    for i, (make, during) in enumerate(steps):
        step = make(600 * (i + 1))  # type: ignore[operator]
        state, board, changes = run(state, [During(step) if during else step], board)
        if during:
            assert [
                c for c in changes if c.rule in MAINTENANCE_SILENCED and not isinstance(c, Clear)
            ] == []
    held = {Rule(rule) for rule, _, _ in state.held}
    state, board, _ = run(state, [Tick(at(600 * (len(steps) + 1)))], board)
    assert state.held == ()
    assert held <= board.keys()
