"""The alarm response as a table of moves, its escalation chain and its measures (+#12)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.response import (
    DEFAULT_POLICY,
    Accept,
    Arrive,
    Close,
    EscalationAction,
    Forward,
    LockOpened,
    Move,
    MoveRefused,
    PolicyError,
    Promise,
    Response,
    ResponseState,
    apply_move,
    build_policy,
    due_steps,
    escalate,
    is_stale,
    next_step,
    resolve_chain,
    response_times,
    within_promise,
)

T0 = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
OPEN, FORWARDED, ACCEPTED, ON_SITE, CLOSED = (
    ResponseState.OPEN,
    ResponseState.FORWARDED,
    ResponseState.ACCEPTED,
    ResponseState.ON_SITE,
    ResponseState.CLOSED,
)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def run(*moves: Move) -> Response:
    response = Response(opened_at=T0)
    for move in moves:
        response, _ = apply_move(response, move, DEFAULT_POLICY)
    return response


# --- the lifecycle -----------------------------------------------------------------------------

LIFECYCLE = [
    pytest.param([Accept("anna", at(1))], ACCEPTED, "anna", id="accept"),
    pytest.param(
        [Accept("anna", at(1)), Arrive("anna", at(9), contact_made=True)],
        ON_SITE,
        "anna",
        id="arrive-by-hand",
    ),
    pytest.param(
        [Accept("anna", at(1)), LockOpened("lock-12", at(8))], ON_SITE, "anna", id="lock-arrives"
    ),
    pytest.param(
        [LockOpened("lock-12", at(1)), Accept("anna", at(2))],
        ACCEPTED,
        "anna",
        id="unlock-before-accepting-is-not-arrival",
    ),
    pytest.param(
        [Accept("anna", at(1)), Forward("anna", at(2), "bo")], FORWARDED, None, id="forward"
    ),
    pytest.param(
        [Accept("anna", at(1)), Forward("anna", at(2), "bo"), Accept("bo", at(3))],
        ACCEPTED,
        "bo",
        id="forwarded-then-taken",
    ),
    pytest.param(
        [Accept("anna", at(1)), Forward("anna", at(2), None)], OPEN, None, id="back-to-the-team"
    ),
    pytest.param(
        [Accept("anna", at(1)), Close("anna", at(3), "false_alarm", "ringde, allt väl")],
        CLOSED,
        "anna",
        id="closed-without-arrival",
    ),
    pytest.param(
        [
            Accept("anna", at(1)),
            LockOpened("lock-12", at(8)),
            Close("bo", at(20), "help_given", "hjälp upp"),
        ],
        CLOSED,
        "anna",
        id="closed-by-a-colleague-on-site",
    ),
]


@pytest.mark.parametrize(("moves", "state", "holder"), LIFECYCLE)
def test_lifecycle(moves: list[Move], state: ResponseState, holder: str | None) -> None:
    response = run(*moves)
    assert (response.state, response.holder) == (state, holder)


REFUSED = [
    pytest.param([Accept("anna", at(1))], Accept("bo", at(2)), "taken", id="taken-by-another"),
    pytest.param([], Arrive("anna", at(1)), "not_accepted", id="arrive-before-accept"),
    pytest.param([], Close("anna", at(1), "false_alarm"), "not_accepted", id="close-untaken"),
    pytest.param(
        [Accept("anna", at(1))],
        Close("anna", at(2), "help_given"),
        "not_on_site",
        id="help-given-needs-arrival",
    ),
    pytest.param(
        [Accept("anna", at(1))], Close("anna", at(2), "sang_a_song"), "unknown_action", id="action"
    ),
    pytest.param(
        [Accept("anna", at(1))], Forward("bo", at(2), "cia"), "taken", id="forward-not-yours"
    ),
    pytest.param([], Forward("anna", at(1), "anna"), "to_self", id="forward-to-self"),
    pytest.param(
        [Accept("anna", at(1)), Arrive("anna", at(5))],
        Forward("anna", at(6), "bo"),
        "on_site",
        id="forward-on-site",
    ),
    pytest.param(
        [Accept("anna", at(1)), Close("anna", at(2), "false_alarm")],
        Accept("bo", at(3)),
        "closed",
        id="nothing-after-closed",
    ),
    pytest.param(
        [Accept("anna", at(1)), Close("anna", at(2), "false_alarm")],
        Close("anna", at(3), "no_action_needed"),
        "closed",
        id="no-second-close",
    ),
]


@pytest.mark.parametrize(("before", "move", "code"), REFUSED)
def test_impossible_moves_are_refused_with_a_reason(
    before: list[Move], move: Move, code: str
) -> None:
    response = run(*before)
    with pytest.raises(MoveRefused) as refused:
        apply_move(response, move, DEFAULT_POLICY)
    assert refused.value.code == code
    assert str(refused.value)  # a sentence for the person who tried


REPEATED = [
    pytest.param([Accept("anna", at(1))], Accept("anna", at(2)), id="accept"),
    pytest.param([Forward("anna", at(1), "bo")], Forward("anna", at(2), "bo"), id="forward"),
    pytest.param(
        [Accept("anna", at(1)), Arrive("anna", at(5))], Arrive("anna", at(6)), id="arrive"
    ),
    pytest.param(
        [Accept("anna", at(1)), Close("anna", at(2), "false_alarm", "ok")],
        Close("anna", at(9), "false_alarm", "ok"),
        id="close",
    ),
    pytest.param(
        [Accept("anna", at(1)), LockOpened("lock-12", at(5))],
        LockOpened("lock-12", at(7)),
        id="second-unlock",
    ),
]


@pytest.mark.parametrize(("before", "move"), REPEATED)
def test_the_same_move_again_changes_nothing(before: list[Move], move: Move) -> None:
    response = run(*before)
    after, changed = apply_move(response, move, DEFAULT_POLICY)
    assert (after, changed) == (response, False)


def test_the_lock_records_which_lock_and_forwarding_keeps_the_first_acceptance() -> None:
    response = run(
        Accept("anna", at(1)),
        Forward("anna", at(2), "bo"),
        Accept("bo", at(4)),
        LockOpened("lock-12", at(11)),
    )
    assert (response.on_site_source, response.on_site_by, response.on_site_at) == (
        "lock",
        "lock-12",
        at(11),
    )
    assert response.accepted_at == at(1)


# --- escalation --------------------------------------------------------------------------------

PROMISE = Promise(contact_s=300, on_site_s=30 * 60)
CHAIN = resolve_chain(DEFAULT_POLICY.chain, PROMISE)


def names(steps: Any) -> list[str]:
    return [step.name for step in steps]


def test_the_default_chain_on_a_site_with_a_promise() -> None:
    assert [(step.name, after_s) for step, after_s in CHAIN] == [
        ("not_accepted", 120),
        ("call_out", 300),
        ("not_on_site", 1800),
    ]
    first = CHAIN[0][0]
    assert first.actions == (EscalationAction.NOTIFY_SECOND_GROUP, EscalationAction.RAISE_SEVERITY)


def test_a_site_without_a_promise_has_no_arrival_step_and_overrides_move_times() -> None:
    chain = resolve_chain(DEFAULT_POLICY.chain, Promise(), {"not_accepted": 60})
    assert [(step.name, after_s) for step, after_s in chain] == [
        ("not_accepted", 60),
        ("call_out", 300),
    ]


ESCALATION = [
    pytest.param([], 1.9, [], id="nothing-before-two-minutes"),
    pytest.param([], 2, ["not_accepted"], id="not-accepted-at-two"),
    pytest.param([], 5, ["not_accepted", "call_out"], id="both-at-five"),
    pytest.param([Accept("anna", at(1))], 5, [], id="accept-stops-both"),
    pytest.param([Accept("anna", at(3))], 31, ["not_on_site"], id="no-arrival-in-promise"),
    pytest.param(
        [Accept("anna", at(3)), LockOpened("lock-12", at(20))], 31, [], id="arrived-in-time"
    ),
    pytest.param(
        [Accept("anna", at(1)), Forward("anna", at(1.5), None)],
        2,
        ["not_accepted"],
        id="back-to-the-team-counts-as-untaken",
    ),
]


@pytest.mark.parametrize(("moves", "minutes", "due"), ESCALATION)
def test_escalation(moves: list[Move], minutes: float, due: list[str]) -> None:
    assert names(due_steps(run(*moves), CHAIN, at(minutes))) == due


def test_a_step_taken_is_not_due_again_and_the_board_sees_the_next() -> None:
    response = run()
    assert next_step(response, CHAIN) == (CHAIN[0][0], at(2))
    response = escalate(response, due_steps(response, CHAIN, at(2)))
    assert response.escalated == ("not_accepted",)
    assert due_steps(response, CHAIN, at(2.5)) == []
    assert next_step(response, CHAIN) == (CHAIN[1][0], at(5))
    response, _ = apply_move(response, Accept("anna", at(3)), DEFAULT_POLICY)
    assert next_step(response, CHAIN) == (CHAIN[2][0], at(30))
    response, _ = apply_move(response, Arrive("anna", at(12)), DEFAULT_POLICY)
    assert next_step(response, CHAIN) is None


def test_a_step_due_over_an_hour_ago_is_stale() -> None:
    assert not is_stale(at(0), at(60))
    assert is_stale(at(0), at(60.5))


# --- measures ----------------------------------------------------------------------------------


def test_times_and_the_promise() -> None:
    response = run(
        Accept("anna", at(4)), LockOpened("lock-12", at(34)), Close("anna", at(50), "help_given")
    )
    times = response_times(response)
    assert (times.to_accept_s, times.to_arrive_s, times.to_close_s) == (240.0, 2040.0, 3000.0)
    assert within_promise(times, PROMISE) == (True, False)
    assert within_promise(times, Promise()) == (None, None)
    assert response_times(run()).to_accept_s is None


# --- properties --------------------------------------------------------------------------------

PEOPLE = st.sampled_from(["anna", "bo", "cia"])
ACTIONS = st.sampled_from([*DEFAULT_POLICY.actions, "nonsense"])
MOVES = st.one_of(
    st.builds(Accept, PEOPLE, st.just(T0)),
    st.builds(Forward, PEOPLE, st.just(T0), st.one_of(st.none(), PEOPLE)),
    st.builds(Arrive, PEOPLE, st.just(T0), st.one_of(st.none(), st.booleans())),
    st.builds(LockOpened, st.just("lock-12"), st.just(T0)),
    st.builds(Close, PEOPLE, st.just(T0), ACTIONS, st.sampled_from(["", "ok"])),
)


@given(st.lists(st.tuples(MOVES, st.floats(0, 60)), max_size=30))
def test_no_move_leaves_closed_and_nothing_but_a_refusal_is_raised(
    steps: list[tuple[Move, float]],
) -> None:
    """Property: any sequence of moves (times rising) gives a response or a MoveRefused,
    never another exception; once closed it stays closed, exactly as it was closed."""
    response = Response(opened_at=T0)
    elapsed = 0.0
    closed: Response | None = None
    for move, pause in steps:
        elapsed += pause
        timed = _at(move, at(elapsed))
        with contextlib.suppress(MoveRefused):
            response, _ = apply_move(response, timed, DEFAULT_POLICY)
        if closed is not None:
            assert response == closed
        elif response.state is CLOSED:
            closed = response


@given(
    st.lists(st.tuples(MOVES, st.floats(0, 10)), max_size=15),
    st.lists(st.floats(0, 60), min_size=1, max_size=20),
)
def test_each_step_escalates_at_most_once_and_stops_when_the_response_moves_on(
    steps: list[tuple[Move, float]], looks: list[float]
) -> None:
    """Property: watchdog passes at any times, moves in between: each step is taken at most
    once, and never after the response reached the step's stop."""
    response = Response(opened_at=T0)
    elapsed = 0.0
    for (move, pause), look in zip(steps, sorted(looks), strict=False):
        elapsed = max(elapsed + pause, look)
        with contextlib.suppress(MoveRefused):
            response, _ = apply_move(response, _at(move, at(elapsed)), DEFAULT_POLICY)
        due = due_steps(response, CHAIN, at(elapsed))
        for step in due:
            assert response.state.progress < step.stops_at.progress
        response = escalate(response, due)
        assert len(response.escalated) == len(set(response.escalated))


def _at(move: Move, moment: datetime) -> Move:
    return type(move)(**{**_fields(move), "at": moment})


def _fields(move: Move) -> dict[str, Any]:
    return {name: getattr(move, name) for name in move.__dataclass_fields__}


# --- the policy file ---------------------------------------------------------------------------


def test_the_built_in_policy() -> None:
    assert DEFAULT_POLICY.is_response("alarm_pressed")
    assert DEFAULT_POLICY.is_response("physical_visit_needed")
    assert not DEFAULT_POLICY.is_response("device_offline")
    assert DEFAULT_POLICY.actions["false_alarm"].arrived is False


BAD_POLICIES = [
    pytest.param({"rules": ["alarm_presed"]}, "unknown rule", id="misspelt-rule"),
    pytest.param({"after_s": -1}, "after_s", id="negative-time"),
    pytest.param({"stops_at": "open"}, "stops_at", id="stops-at-open"),
    pytest.param({"step_actions": ["phone_home"]}, "phone_home", id="unknown-step-action"),
    pytest.param({"extra": True}, "unknown key", id="unknown-key"),
]


@pytest.mark.parametrize(("change", "message"), BAD_POLICIES)
def test_a_wrong_policy_is_refused_naming_the_place(change: dict[str, Any], message: str) -> None:
    step: dict[str, Any] = {
        "name": "s",
        "after_s": change.get("after_s", 60),
        "stops_at": change.get("stops_at", "accepted"),
        "actions": change.get("step_actions", ["call_out"]),
    }
    document: dict[str, Any] = {
        "response": {"rules": change.get("rules", ["alarm_pressed"])},
        "actions": {"ok": {"title_sv": "Ok", "title_en": "Ok", "arrived": False}},
        "escalation": [step],
    }
    if change.get("extra"):
        document["actions"]["ok"]["colour"] = "red"
    with pytest.raises(PolicyError, match=message):
        build_policy(document)
