"""A site's escalation chain as stored, made usable (+#12): devices/site_response.py."""

from __future__ import annotations

import pytest

from devices.response import DEFAULT_POLICY
from devices.site_response import check_steps, site_chain, step_names, usable_steps


def test_step_names_are_the_default_chain_in_order() -> None:
    """The names a site may time are the policy's steps, in the chain's order."""
    assert step_names() == tuple(step.name for step in DEFAULT_POLICY.chain)


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        pytest.param({"nobody_came": 60}, "unknown escalation step", id="unknown-name"),
        pytest.param({"not_accepted": 0}, "1 to 86400", id="zero"),
        pytest.param({"call_out": 86_401}, "1 to 86400", id="over-a-day"),
        pytest.param({"call_out": True}, "1 to 86400", id="a-boolean"),
    ],
)
def test_check_steps_refuses(steps: dict[str, int], problem: str) -> None:
    """What the API refuses with a 422 naming the problem."""
    with pytest.raises(ValueError, match=problem):
        check_steps(steps)


def test_check_steps_passes_known_names_within_bounds() -> None:
    """Known names with whole seconds within a day pass as given."""
    assert check_steps({"not_accepted": 1, "not_on_site": 86_400}) == {
        "not_accepted": 1,
        "not_on_site": 86_400,
    }


@pytest.mark.parametrize(
    ("record", "usable"),
    [
        pytest.param(None, {}, id="none"),
        pytest.param({"not_accepted": 60}, {"not_accepted": 60}, id="good"),
        pytest.param({"not_accepted": "60", "call_out": 90}, {"call_out": 90}, id="text-dropped"),
        pytest.param({"gone": 60, "call_out": 0}, {}, id="unknown-and-out-of-bounds-dropped"),
    ],
)
def test_usable_steps_keeps_what_the_chain_can_use(
    record: dict[str, object] | None, usable: dict[str, int]
) -> None:
    """A stored record is read leniently: a bad entry falls back to its default."""
    assert usable_steps(record) == usable


def test_site_chain_takes_overrides_and_the_promise_in_time_order() -> None:
    """Overrides replace the defaults; the on-site step takes the promise, and the chain is
    sorted by time."""
    chain = site_chain(60, 900, {"not_accepted": 600, "call_out": 30})
    assert [(step.name, after_s) for step, after_s in chain] == [
        ("call_out", 30),
        ("not_accepted", 600),
        ("not_on_site", 900),
    ]


def test_site_chain_without_an_on_site_promise_leaves_that_step_out() -> None:
    """A site that promises no arrival time has no step on it (unless it times the step)."""
    assert [step.name for step, _ in site_chain(None, None, {})] == ["not_accepted", "call_out"]
    assert [s.name for s, _ in site_chain(None, None, {"not_on_site": 1200})] == [
        "not_accepted",
        "call_out",
        "not_on_site",
    ]
