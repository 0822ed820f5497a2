"""What a gateway holds of the rule states (gateway.rule_states): pure bookkeeping."""

from __future__ import annotations

from datetime import UTC, datetime

from devices.rules import DeviceState
from gateway.rule_states import UNKNOWN, RuleStates, Versioned

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
A = DeviceState("door_lock", since=T0)
B = A._replace(battery=50)


def test_a_state_is_given_only_at_the_version_held() -> None:
    states = RuleStates()
    states.remember({"d1": Versioned(7, A)})
    assert states.versions(["d1", "d2"]) == [7, UNKNOWN]
    assert states.get("d1", 7) is A
    assert states.get("d1", 8) is None
    assert states.get("d2", 7) is None


def test_a_later_version_is_kept_whatever_order_commits_are_remembered_in() -> None:
    states = RuleStates()
    states.remember({"d1": Versioned(9, B)})
    states.remember({"d1": Versioned(7, A)})
    assert states.versions(["d1"]) == [9]
    assert states.get("d1", 9) is B
    states.remember({"d1": Versioned(11, A)})
    assert states.get("d1", 11) is A


def test_forgotten_states_are_read_again() -> None:
    states = RuleStates()
    states.remember({"d1": Versioned(1, A), "d2": Versioned(2, B)})
    states.forget(["d1", "d3"])
    assert states.versions(["d1", "d2"]) == [UNKNOWN, 2]


def test_past_capacity_the_least_recently_remembered_go_first() -> None:
    states = RuleStates(capacity=3)
    states.remember({"d1": Versioned(1, A), "d2": Versioned(2, A), "d3": Versioned(3, A)})
    states.remember({"d1": Versioned(4, B)})  # d1 written again: now the newest
    states.remember({"d4": Versioned(5, A)})
    assert len(states) == 3
    assert states.versions(["d1", "d2", "d3", "d4"]) == [4, UNKNOWN, 3, 5]
