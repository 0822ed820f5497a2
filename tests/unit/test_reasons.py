"""Reasons as values: a code and its arguments, checked when made, stored and read back as
JSON, and said in English exactly as the alerts always said them."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.reasons import (
    ENGLISH,
    PARAMETERS,
    Reason,
    ReasonCode,
    duration_text,
    english,
)


@pytest.mark.parametrize(
    ("reason", "text"),
    [
        pytest.param(Reason.of(ReasonCode.BATTERY, level=15), "battery 15 %", id="battery"),
        pytest.param(Reason.of(ReasonCode.LOCK_JAMMED), "the lock reported a jam", id="jam"),
        pytest.param(
            Reason.of(ReasonCode.SILENT, silent_s=1900, heartbeat_s=600),
            "no message for 31 min (heartbeat every 10 min)",
            id="silent",
        ),
        pytest.param(
            Reason.of(ReasonCode.UNLOCKED, unlocked_s=600), "unlocked for 10 min", id="unlocked"
        ),
        pytest.param(
            Reason.of(ReasonCode.ROBOT_QUIET, quiet_s=48 * 3600),
            "no interaction for 48 h",
            id="robot",
        ),
        pytest.param(
            Reason.of(ReasonCode.TAMPER, event_type="lock.tamper"),
            "lock.tamper reported",
            id="tamper",
        ),
        pytest.param(
            Reason.of(ReasonCode.CHECK_NOT_SEEN),
            "camera check ended: not_seen",
            id="not-seen",
        ),
        pytest.param(
            Reason.of(ReasonCode.CHECK_MISSED, planned="02:00"),
            "check planned 02:00 missed",
            id="check-missed",
        ),
        pytest.param(
            Reason.of(ReasonCode.VISIT_NOT_SEEN_TWICE, planned="00:05"),
            "check planned 00:05: physical visit needed (not seen twice)",
            id="visit",
        ),
        pytest.param(
            Reason.of(ReasonCode.CHECK_STATE, state="retry_due"),
            "check retry_due",
            id="check-state",
        ),
        pytest.param(
            Reason.of(ReasonCode.STREAM_LOST).held(),
            "the camera lost its stream (during maintenance)",
            id="held",
        ),
        pytest.param(
            Reason.of(ReasonCode.TEXT, text="an old {text}"), "an old {text}", id="old-text"
        ),
    ],
)
def test_english_is_the_text_alerts_always_had(reason: Reason, text: str) -> None:
    """Each reason says in English what the rules said before reasons had codes."""
    assert english(reason) == reason.text == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (119, "119 s"), (120, "2 min"), (7199, "119 min"), (7200, "2 h"), (90000, "25 h")],
)
def test_durations_in_whole_units(seconds: int, text: str) -> None:
    """Seconds below 2 min, minutes below 2 h, hours above, rounded down."""
    assert duration_text(seconds) == text


def test_every_code_has_its_english_and_its_parameters() -> None:
    """The table covers the closed set, and a duration parameter is named in seconds."""
    assert set(ENGLISH) == set(ReasonCode) == set(PARAMETERS)
    assert PARAMETERS[ReasonCode.SILENT] == {"silent_s", "heartbeat_s"}
    assert PARAMETERS[ReasonCode.LOCKED] == frozenset()


@pytest.mark.parametrize(
    ("code", "args", "message"),
    [
        pytest.param(ReasonCode.BATTERY, {}, "expected the arguments level", id="missing"),
        pytest.param(ReasonCode.LOCKED, {"level": 3}, "expected the arguments none", id="extra"),
        pytest.param(ReasonCode.UNLOCKED, {"unlocked_s": -1}, "whole seconds", id="negative"),
        pytest.param(ReasonCode.UNLOCKED, {"unlocked_s": 1.5}, "whole seconds", id="fraction"),
        pytest.param(ReasonCode.UNLOCKED, {"unlocked_s": True}, "whole seconds", id="bool"),
        pytest.param(ReasonCode.BATTERY, {"level": None}, "number or a text", id="none"),
    ],
)
def test_arguments_that_are_not_the_codes_are_refused(
    code: ReasonCode, args: dict[str, object], message: str
) -> None:
    """A reason has exactly its code's parameters, durations as whole seconds."""
    with pytest.raises(ValueError, match=message):
        Reason.of(code, **args)  # type: ignore[arg-type]  # wrong on purpose


def test_unordered_arguments_are_refused() -> None:
    """Arguments in name order only, so that equal reasons are equal values."""
    with pytest.raises(ValueError, match="name order"):
        Reason(ReasonCode.SILENT, (("silent_s", 1), ("heartbeat_s", 2)))


def test_stored_arguments_mark_a_held_reason() -> None:
    """The stored arguments are the parameters, plus during_maintenance when held."""
    battery = Reason.of(ReasonCode.BATTERY, level=8)
    assert battery.stored_args() == {"level": 8}
    assert battery.held().stored_args() == {"level": 8, "during_maintenance": True}
    assert battery.held().alert_fields() == {
        "reason": "battery 8 % (during maintenance)",
        "reason_code": "battery",
        "reason_args": {"level": 8, "during_maintenance": True},
    }


_SECONDS = st.integers(min_value=0, max_value=10**7)
_ARG = st.one_of(st.integers(min_value=0, max_value=10**6), st.text(max_size=12))


def _reasons_of(code: ReasonCode) -> st.SearchStrategy[Reason]:
    args = st.fixed_dictionaries(
        {name: _SECONDS if name.endswith("_s") else _ARG for name in PARAMETERS[code]}
    )
    return st.builds(
        lambda values, held: Reason(code, tuple(sorted(values.items())), held),
        args,
        st.booleans(),
    )


_REASONS = st.sampled_from(list(ReasonCode)).flatmap(_reasons_of)


@given(_REASONS)
def test_a_reason_survives_its_json_record(reason: Reason) -> None:
    """What the rule state stores reads back as the same reason, saying the same."""
    record = json.loads(json.dumps(reason.to_record()))
    assert Reason.from_record(record) == reason
    assert Reason.from_record(record).text == reason.text


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(3, id="number"),
        pytest.param({"code": "nope", "args": {}}, id="unknown-code"),
        pytest.param({"code": "battery"}, id="no-args"),
        pytest.param({"code": "battery", "args": {"level": 1, "x": 2}}, id="extra-arg"),
    ],
)
def test_an_unreadable_record_is_refused(record: object) -> None:
    """Anything but a reason's record (or an old text) raises ValueError."""
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        Reason.from_record(record)


def test_an_old_text_is_kept_as_it_was() -> None:
    """A plain text, stored before reasons had codes, reads as the code ``text``."""
    reason = Reason.from_record("battery 7 %")
    assert (reason.code, reason.text) == (ReasonCode.TEXT, "battery 7 %")
