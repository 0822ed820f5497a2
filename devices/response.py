"""The alarm response, pure: take the alarm, arrive, act, close; its escalation and its times.

An alert of a *response* rule (:attr:`ResponsePolicy.rules`: an alarm press, a physical visit
needed, smoke, a water leak, a door open at night) is worked, not acknowledged:

``open`` (nobody has it: red) → ``accepted`` by a named caregiver (yellow: everyone sees who)
→ ``on_site`` (by hand, or the residence's lock unlocked after the acceptance) → ``closed``
with an action from the policy's code list and a note. Before arrival it may be ``forwarded``
to a named colleague (offered, until someone accepts it) or back to the team (``open``).

:func:`apply_move` takes a response and one move and gives the response after it, and whether
anything changed: the same move again changes nothing (a double tap, a retried request), and a
move the state does not allow raises :class:`MoveRefused` with a reason a person can act on
(the API's 409). Nothing leaves ``closed``. A lock unlocked is a fact, not a request: it moves
an accepted response on site and is otherwise ignored, never refused.

The escalation chain (:class:`EscalationStep`, defaults in ``response.toml``, times per site)
is a list of steps, each due once, a time after the alert opened, unless the response has
reached the step's ``stops_at`` by then: :func:`due_steps` says which are due now,
:func:`next_step` which comes next and when (the board shows it). :func:`response_times` gives
what a municipality reports: time to accept (its "contact"), to arrive and to close, measured
from the alert's opening, and :func:`within_promise` compares them with the site's promise.

No I/O here; the gateway and the API keep the state in SQL and apply these functions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Literal, TypeAlias

from devices.catalog import CatalogError, Rule, load_data_file
from devices.supervision import ALERT_SEVERITY

__all__ = [
    "DEFAULT_POLICY",
    "Accept",
    "Arrive",
    "Close",
    "CloseAction",
    "EscalationAction",
    "EscalationStep",
    "Forward",
    "LockOpened",
    "Move",
    "MoveRefused",
    "PolicyError",
    "Promise",
    "Response",
    "ResponsePolicy",
    "ResponseState",
    "ResponseTimes",
    "apply_move",
    "build_policy",
    "due_steps",
    "escalate",
    "is_stale",
    "load_policy",
    "next_step",
    "resolve_chain",
    "response_times",
    "within_promise",
]

ON_SITE_PROMISE: Final = "on_site_promise"
"""A step's ``after_s`` that takes the site's promise of help on site."""


class PolicyError(CatalogError):
    """``response.toml`` (or a policy built in code) is wrong; the message says where."""


class ResponseState(StrEnum):
    """Where a response is. ``forwarded`` is offered to a colleague and not yet taken."""

    OPEN = "open"
    FORWARDED = "forwarded"
    ACCEPTED = "accepted"
    ON_SITE = "on_site"
    CLOSED = "closed"

    @property
    def progress(self) -> int:
        """How far the response has come: nobody has it (0), taken, on site, closed (3)."""
        return _PROGRESS[self]


_PROGRESS: Final = {
    ResponseState.OPEN: 0,
    ResponseState.FORWARDED: 0,
    ResponseState.ACCEPTED: 1,
    ResponseState.ON_SITE: 2,
    ResponseState.CLOSED: 3,
}


class EscalationAction(StrEnum):
    """What a step of the chain does (the services carry it out)."""

    NOTIFY_SECOND_GROUP = "notify_second_group"
    RAISE_SEVERITY = "raise_severity"
    CALL_OUT = "call_out"


@dataclass(frozen=True, slots=True)
class CloseAction:
    """One code of the list a response is closed with; ``arrived``: someone was with the
    person (an action that does not say so, such as a false alarm cleared by phone, may close a
    response that was never on site)."""

    code: str
    title_sv: str
    title_en: str
    arrived: bool


@dataclass(frozen=True, slots=True)
class EscalationStep:
    """A step of the chain: due ``after_s`` after the alert opened (None: the site's promise of
    help on site) unless the response has reached ``stops_at``."""

    name: str
    after_s: int | None
    stops_at: ResponseState
    actions: tuple[EscalationAction, ...]


@dataclass(frozen=True, slots=True)
class ResponsePolicy:
    """Which rules are responses, the close actions by code, and the default chain in order."""

    rules: frozenset[str]
    actions: Mapping[str, CloseAction]
    chain: tuple[EscalationStep, ...]

    def is_response(self, rule: str) -> bool:
        """Whether alerts of ``rule`` are worked as a response."""
        return rule in self.rules


@dataclass(frozen=True, slots=True)
class Promise:
    """A site's promise: accepted ("contact") within ``contact_s``, someone on site within
    ``on_site_s``; None where the site promises nothing (it is still measured)."""

    contact_s: int | None = None
    on_site_s: int | None = None


@dataclass(frozen=True, slots=True)
class Response:
    """A response as it stands. ``accepted_at`` is the first acceptance (forwarding and taking
    it again does not restart the measure); ``on_site_by`` is a username, or the lock's device
    id when ``on_site_source`` is ``lock``. ``escalated``: the chain's steps already taken."""

    opened_at: datetime
    state: ResponseState = ResponseState.OPEN
    holder: str | None = None
    offered_to: str | None = None
    accepted_at: datetime | None = None
    on_site_at: datetime | None = None
    on_site_by: str | None = None
    on_site_source: Literal["staff", "lock"] | None = None
    contact_made: bool | None = None
    closed_at: datetime | None = None
    closed_by: str | None = None
    action: str | None = None
    note: str = ""
    escalated: tuple[str, ...] = field(default=())


# --- moves -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accept:
    """``by`` takes the response."""

    by: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Forward:
    """``by`` offers the response to colleague ``to``, or back to the team (None)."""

    by: str
    at: datetime
    to: str | None


@dataclass(frozen=True, slots=True)
class Arrive:
    """``by`` is with the person; ``contact_made``: whether they could talk (None: not said)."""

    by: str
    at: datetime
    contact_made: bool | None = None


@dataclass(frozen=True, slots=True)
class LockOpened:
    """The residence's digital lock ``device_id`` was unlocked at ``at`` (device time)."""

    device_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Close:
    """``by`` closes the response with ``action`` (a code of the policy) and a note."""

    by: str
    at: datetime
    action: str
    note: str = ""


Move: TypeAlias = Accept | Forward | Arrive | LockOpened | Close


class MoveRefused(Exception):  # noqa: N818 - a refusal, not an error of the program
    """The move does not fit the response's state: ``code`` for programs, the message for
    people (the API answers 409 with both)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def apply_move(response: Response, move: Move, policy: ResponsePolicy) -> tuple[Response, bool]:
    """The response after ``move``, and whether it changed; :class:`MoveRefused` if the state
    does not allow it. Repeating a move that took effect changes nothing and is not refused."""
    if isinstance(move, LockOpened):
        return _lock_opened(response, move)
    if response.state is ResponseState.CLOSED:
        if isinstance(move, Close) and (move.by, move.action, move.note) == (
            response.closed_by,
            response.action,
            response.note,
        ):
            return response, False
        raise MoveRefused("closed", f"closed by {response.closed_by}: nothing can change it now")
    if isinstance(move, Accept):
        return _accept(response, move)
    if isinstance(move, Forward):
        return _forward(response, move)
    if isinstance(move, Arrive):
        return _arrive(response, move)
    return _close(response, move, policy)


def _accept(response: Response, move: Accept) -> tuple[Response, bool]:
    if response.holder is not None:  # accepted or on site
        if response.holder == move.by:
            return response, False
        raise MoveRefused("taken", f"{response.holder} has already taken it")
    return (
        replace(
            response,
            state=ResponseState.ACCEPTED,
            holder=move.by,
            offered_to=None,
            accepted_at=response.accepted_at or move.at,
        ),
        True,
    )


def _forward(response: Response, move: Forward) -> tuple[Response, bool]:
    if response.state is ResponseState.ON_SITE:
        raise MoveRefused("on_site", "someone is with the person: close it instead")
    if response.holder is not None and response.holder != move.by:
        raise MoveRefused("taken", f"only {response.holder}, who has it, can forward it")
    if move.to is not None and move.to == move.by:
        raise MoveRefused("to_self", "forward it to a colleague, or accept it yourself")
    if move.to is None:
        after = replace(response, state=ResponseState.OPEN, holder=None, offered_to=None)
    else:
        after = replace(response, state=ResponseState.FORWARDED, holder=None, offered_to=move.to)
    return after, after != response


def _arrive(response: Response, move: Arrive) -> tuple[Response, bool]:
    if response.state is ResponseState.ON_SITE:
        if move.contact_made is None or move.contact_made == response.contact_made:
            return response, False
        return replace(response, contact_made=move.contact_made), True
    if response.state is not ResponseState.ACCEPTED:
        raise MoveRefused("not_accepted", "accept it first, so that the others know")
    return (
        replace(
            response,
            state=ResponseState.ON_SITE,
            on_site_at=move.at,
            on_site_by=move.by,
            on_site_source="staff",
            contact_made=move.contact_made,
        ),
        True,
    )


def _lock_opened(response: Response, move: LockOpened) -> tuple[Response, bool]:
    """Only an unlock after the acceptance is an arrival: one before it is someone else (the
    previous visit, the resident) and changes nothing."""
    if (
        response.state is not ResponseState.ACCEPTED
        or response.accepted_at is None
        or move.at < response.accepted_at
    ):
        return response, False
    return (
        replace(
            response,
            state=ResponseState.ON_SITE,
            on_site_at=move.at,
            on_site_by=move.device_id,
            on_site_source="lock",
        ),
        True,
    )


def _close(response: Response, move: Close, policy: ResponsePolicy) -> tuple[Response, bool]:
    action = policy.actions.get(move.action)
    if action is None:
        known = ", ".join(sorted(policy.actions))
        raise MoveRefused("unknown_action", f"unknown action {move.action!r}; one of {known}")
    if response.state in (ResponseState.OPEN, ResponseState.FORWARDED):
        raise MoveRefused("not_accepted", "accept it first, so that the others know")
    if action.arrived and response.state is not ResponseState.ON_SITE:
        raise MoveRefused(
            "not_on_site", f"{action.title_en!r} needs someone on site: record the arrival first"
        )
    return (
        replace(
            response,
            state=ResponseState.CLOSED,
            closed_at=move.at,
            closed_by=move.by,
            action=move.action,
            note=move.note,
        ),
        True,
    )


# --- escalation --------------------------------------------------------------------------------


def resolve_chain(
    chain: Iterable[EscalationStep], promise: Promise, overrides: Mapping[str, int] | None = None
) -> tuple[tuple[EscalationStep, int], ...]:
    """The site's chain: each step with its time after the opening (a site's override by step
    name, else the default, else the promise for an on-site step), in time order; a step on
    the promise is left out where the site promises nothing."""
    resolved: list[tuple[EscalationStep, int]] = []
    for step in chain:
        after_s = (overrides or {}).get(step.name, step.after_s)
        if after_s is None:
            after_s = promise.on_site_s
        if after_s is not None:
            resolved.append((step, after_s))
    return tuple(sorted(resolved, key=lambda pair: pair[1]))


def due_steps(
    response: Response, chain: Iterable[tuple[EscalationStep, int]], now: datetime
) -> list[EscalationStep]:
    """The steps to take now: due by ``now``, not taken yet, and not stopped by where the
    response has come. Each step is due once (see :func:`escalate`)."""
    return [
        step
        for step, after_s in chain
        if _pending(response, step) and now >= response.opened_at + timedelta(seconds=after_s)
    ]


def next_step(
    response: Response, chain: Iterable[tuple[EscalationStep, int]]
) -> tuple[EscalationStep, datetime] | None:
    """The next step that can still come, and when: what the board shows."""
    pending = [
        (response.opened_at + timedelta(seconds=after_s), step)
        for step, after_s in chain
        if _pending(response, step)
    ]
    if not pending:
        return None
    at, step = min(pending, key=lambda pair: pair[0])
    return step, at


STALE_STEP_AFTER: Final = timedelta(hours=1)
"""A step that fell due longer ago than this is recorded as taken without being carried out:
only alerts older than the escalation itself have such steps (the first run of a new release
over last month's unresolved alarms), and calling the alarm centre about them helps nobody."""


def is_stale(due_at: datetime, now: datetime) -> bool:
    """Whether a step due at ``due_at`` is too old to carry out at ``now``."""
    return now - due_at > STALE_STEP_AFTER


def escalate(response: Response, steps: Iterable[EscalationStep]) -> Response:
    """The response with ``steps`` recorded as taken (already taken ones once)."""
    names = tuple(s.name for s in steps if s.name not in response.escalated)
    return replace(response, escalated=response.escalated + names) if names else response


def _pending(response: Response, step: EscalationStep) -> bool:
    return step.name not in response.escalated and response.state.progress < step.stops_at.progress


# --- measures ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseTimes:
    """Seconds from the alert's opening to the first acceptance, the arrival and the close;
    None for what has not happened."""

    to_accept_s: float | None
    to_arrive_s: float | None
    to_close_s: float | None


def response_times(response: Response) -> ResponseTimes:
    """What the response took, measured from the alert's opening."""

    def since_opened(moment: datetime | None) -> float | None:
        return None if moment is None else (moment - response.opened_at).total_seconds()

    return ResponseTimes(
        since_opened(response.accepted_at),
        since_opened(response.on_site_at),
        since_opened(response.closed_at),
    )


def within_promise(times: ResponseTimes, promise: Promise) -> tuple[bool | None, bool | None]:
    """(accepted within the contact promise, on site within the on-site promise): None where
    the site promises nothing or it has not happened."""

    def kept(took_s: float | None, promised_s: int | None) -> bool | None:
        return None if took_s is None or promised_s is None else took_s <= promised_s

    return kept(times.to_accept_s, promise.contact_s), kept(times.to_arrive_s, promise.on_site_s)


# --- the policy file ---------------------------------------------------------------------------

_KNOWN_RULES: Final = frozenset({rule.value for rule in Rule} | set(ALERT_SEVERITY))


def load_policy(path: str | os.PathLike[str] | None = None) -> ResponsePolicy:
    """Read a policy TOML file; without ``path``, the built-in ``devices/response.toml``."""
    return load_data_file(path, "response.toml", build_policy, PolicyError)


def build_policy(document: Mapping[str, object]) -> ResponsePolicy:
    """Build a policy from its TOML document; strict, like the catalog."""
    _keys(document, "policy", {"response", "actions", "escalation"})
    response = _table(document["response"], "response")
    _keys(response, "response", {"rules"})
    rules = _strings(response["rules"], "response.rules")
    if unknown := sorted(set(rules) - _KNOWN_RULES):
        raise PolicyError(f"response.rules: unknown rule(s) {', '.join(unknown)}")

    actions: dict[str, CloseAction] = {}
    for code, value in _table(document["actions"], "actions").items():
        where = f"actions.{code}"
        table = _table(value, where)
        _keys(table, where, {"title_sv", "title_en", "arrived"})
        titles = [table["title_sv"], table["title_en"]]
        if not all(isinstance(t, str) and t for t in titles) or type(table["arrived"]) is not bool:
            raise PolicyError(f"{where}: expected two titles and arrived = true or false")
        actions[code] = CloseAction(code, str(titles[0]), str(titles[1]), table["arrived"])
    if not actions:
        raise PolicyError("actions: at least one action to close a response with")

    steps = document["escalation"]
    if not isinstance(steps, list):
        raise PolicyError("escalation: expected an array of tables ([[escalation]])")
    chain = tuple(_step(value, f"escalation[{n}]") for n, value in enumerate(steps))
    if len({step.name for step in chain}) != len(chain):
        raise PolicyError("escalation: step names repeat")
    return ResponsePolicy(frozenset(rules), MappingProxyType(actions), chain)


def _step(value: object, where: str) -> EscalationStep:
    table = _table(value, where)
    _keys(table, where, {"name", "after_s", "stops_at", "actions"})
    name, after_s, stops_at = table["name"], table["after_s"], table["stops_at"]
    if not isinstance(name, str) or not name:
        raise PolicyError(f"{where}.name: expected a name")
    if after_s != ON_SITE_PROMISE and not (type(after_s) is int and after_s > 0):
        raise PolicyError(f"{where}.after_s: expected seconds or {ON_SITE_PROMISE!r}")
    try:
        stop = ResponseState(str(stops_at))
        actions = tuple(EscalationAction(a) for a in _strings(table["actions"], where))
    except ValueError as error:
        raise PolicyError(f"{where}: {error}") from error
    if stop.progress == 0:
        raise PolicyError(f"{where}.stops_at: a step stops at accepted, on_site or closed")
    return EscalationStep(name, None if after_s == ON_SITE_PROMISE else int(after_s), stop, actions)


def _table(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise PolicyError(f"{where}: expected a table")
    return value


def _keys(table: Mapping[str, object], where: str, expected: set[str]) -> None:
    if missing := sorted(expected - table.keys()):
        raise PolicyError(f"{where}: missing {', '.join(missing)}")
    if unknown := sorted(table.keys() - expected):
        raise PolicyError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where}: expected a list of strings")
    return list(value)


DEFAULT_POLICY: Final = load_policy()
"""The built-in policy (``devices/response.toml``)."""
