"""A site's escalation chain as stored, made usable: the gateway and the API read it alike.

A site keeps its promise (``contact_promise_s``, ``on_site_promise_s``) and its times by step
name (``escalation_steps``, a JSON object) in the sites table (migration 0008). The API checks
what it stores (:func:`check_steps`); a record from before a bound, or written by hand, is read
through :func:`usable_steps`, which keeps only what the chain can use, so that the watchdog
and the board's "next step" never disagree about a site and one bad value never stops either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from devices.response import (
    DEFAULT_POLICY,
    EscalationStep,
    Promise,
    ResponsePolicy,
    resolve_chain,
)

STEP_MIN_S: Final = 1
STEP_MAX_S: Final = 86_400
"""A step's time and a promise: at least a second, at most a day (the sites table's CHECKs)."""


def step_names(policy: ResponsePolicy = DEFAULT_POLICY) -> tuple[str, ...]:
    """The names a site may give a time, in the chain's order."""
    return tuple(step.name for step in policy.chain)


def check_steps(
    steps: Mapping[str, int], policy: ResponsePolicy = DEFAULT_POLICY
) -> dict[str, int]:
    """``steps`` if every name is a step of the chain and every time within bounds; else
    ValueError naming the first problem (the API's 422)."""
    known = step_names(policy)
    for name, after_s in steps.items():
        if name not in known:
            raise ValueError(f"unknown escalation step {name!r}; one of {', '.join(known)}")
        if type(after_s) is not int or not STEP_MIN_S <= after_s <= STEP_MAX_S:
            raise ValueError(f"{name}: expected whole seconds, {STEP_MIN_S} to {STEP_MAX_S}")
    return dict(steps)


def usable_steps(
    record: Mapping[str, object] | None, policy: ResponsePolicy = DEFAULT_POLICY
) -> dict[str, int]:
    """The overrides of ``record`` the chain can use; anything else falls back to the default."""
    known = step_names(policy)
    return {
        name: value
        for name, value in (record or {}).items()
        if name in known and type(value) is int and STEP_MIN_S <= value <= STEP_MAX_S
    }


def site_chain(
    contact_promise_s: int | None,
    on_site_promise_s: int | None,
    escalation_steps: Mapping[str, object] | None,
    policy: ResponsePolicy = DEFAULT_POLICY,
) -> tuple[tuple[EscalationStep, int], ...]:
    """The site's chain, each step with its seconds after the opening, in time order."""
    promise = Promise(contact_promise_s, on_site_promise_s)
    return resolve_chain(policy.chain, promise, usable_steps(escalation_steps, policy))
