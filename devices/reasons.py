"""Why an alert opened, changed or cleared: a code from a closed set and its few parameters.

The rules (``devices.rules``) and the night checks (``devices.supervision``) decide a
:class:`Reason` where they decide the change; nothing downstream parses text. The gateway stores
its three forms with the alert (``reason`` / ``reason_code`` / ``reason_args``, and the same
for the clear): the English text, rendered by :func:`english` from :data:`ENGLISH` (the API's
``reason`` and ``cleared_reason``, the logs and the webhooks keep it as it always was), and the
code with its arguments, which the pages render in the reader's language from their own
dictionary (``dashboards/static/strings.json``, group ``reason``, the same placeholders).

A template's placeholders are its parameters, so the table is the whole definition of a code:
``{level}`` is a battery percent, ``{planned}`` a local ``HH:MM``, ``{event_type}`` and
``{state}`` are codes of the contract, and every name ending in ``_s`` is a length of time in
whole seconds, written as :func:`duration_text` writes it (the board does the same). A reason
of a condition that arose during a maintenance window ends with :data:`DURING_MAINTENANCE`
(``during_maintenance: true`` among the stored arguments).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final, TypeAlias

__all__ = [
    "DURING_MAINTENANCE",
    "ENGLISH",
    "MAINTENANCE_ARG",
    "PARAMETERS",
    "Reason",
    "ReasonArg",
    "ReasonCode",
    "duration_text",
    "english",
]

ReasonArg: TypeAlias = int | str
"""A parameter's value: a number (percent, seconds) or a short code or time of day."""


class ReasonCode(StrEnum):
    """Every reason the platform gives, by what it says (``alerts.reason_code``)."""

    # The device rules (devices.rules), in the order of their handlers.
    SENDING_AGAIN = "sending_again"
    LAST_WILL = "last_will"
    SILENT = "silent"
    BATTERY = "battery"
    CHECK_NOT_SEEN = "check_not_seen"
    CHECK_FAILED = "check_failed"
    SEEN_LATER = "seen_later"
    ALARM_PRESSED = "alarm_pressed"
    CANCELLED_BY_RESIDENT = "cancelled_by_resident"
    ROBOT_USED = "robot_used"
    ROBOT_QUIET = "robot_quiet"
    LOCK_JAMMED = "lock_jammed"
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    STREAM_LOST = "stream_lost"
    STREAM_RESTORED = "stream_restored"
    OPEN_AT_NIGHT = "open_at_night"
    CLOSED = "closed"
    WATER_LEAK = "water_leak"
    DRY_AGAIN = "dry_again"
    SMOKE = "smoke"
    NO_SMOKE = "no_smoke"
    TAMPER = "tamper"
    NOT_ACKNOWLEDGED = "not_acknowledged"
    # The night checks (devices.supervision): opening ...
    CHECK_MISSED = "check_missed"
    VISIT_NEEDED = "visit_needed"
    VISIT_TECHNICAL_FAILURE = "visit_technical_failure"
    VISIT_NOT_SEEN_TWICE = "visit_not_seen_twice"
    VISIT_NO_RETRY = "visit_no_retry"
    VISIT_CAMERA_DOWN_PLANNED = "visit_camera_down_planned"
    VISIT_CAMERA_DOWN_WINDOW_END = "visit_camera_down_window_end"
    # ... and resolving.
    CHECK_SEEN = "check_seen"
    CHECK_SEEN_LATE = "check_seen_late"
    CHECK_VISITED = "check_visited"
    RESIDENT_ABSENT = "resident_absent"
    VISIT_INSTEAD = "visit_instead"
    CHECK_STATE = "check_state"
    # A text stored before reasons had codes (a maintenance hold kept across the upgrade).
    TEXT = "text"


_VISIT: Final = "check planned {planned}: physical visit needed"

ENGLISH: Final[Mapping[ReasonCode, str]] = MappingProxyType(
    {
        ReasonCode.SENDING_AGAIN: "the device is sending again",
        ReasonCode.LAST_WILL: "the broker reported it gone (Last Will)",
        ReasonCode.SILENT: "no message for {silent_s} (heartbeat every {heartbeat_s})",
        ReasonCode.BATTERY: "battery {level} %",
        ReasonCode.CHECK_NOT_SEEN: "camera check ended: not_seen",
        ReasonCode.CHECK_FAILED: "camera check ended: technical_failure",
        ReasonCode.SEEN_LATER: "a later check saw the resident",
        ReasonCode.ALARM_PRESSED: "alarm button pressed",
        ReasonCode.CANCELLED_BY_RESIDENT: "cancelled by the resident",
        ReasonCode.ROBOT_USED: "the robot was used again",
        ReasonCode.ROBOT_QUIET: "no interaction for {quiet_s}",
        ReasonCode.LOCK_JAMMED: "the lock reported a jam",
        ReasonCode.LOCKED: "locked",
        ReasonCode.UNLOCKED: "unlocked for {unlocked_s}",
        ReasonCode.STREAM_LOST: "the camera lost its stream",
        ReasonCode.STREAM_RESTORED: "stream restored",
        ReasonCode.OPEN_AT_NIGHT: "open at night for {open_s}",
        ReasonCode.CLOSED: "closed",
        ReasonCode.WATER_LEAK: "water leak detected",
        ReasonCode.DRY_AGAIN: "dry again",
        ReasonCode.SMOKE: "smoke detected",
        ReasonCode.NO_SMOKE: "no smoke any more",
        ReasonCode.TAMPER: "{event_type} reported",
        ReasonCode.NOT_ACKNOWLEDGED: "not acknowledged for {waiting_s}",
        ReasonCode.CHECK_MISSED: "check planned {planned} missed",
        ReasonCode.VISIT_NEEDED: _VISIT,
        ReasonCode.VISIT_TECHNICAL_FAILURE: f"{_VISIT} (technical failure)",
        ReasonCode.VISIT_NOT_SEEN_TWICE: f"{_VISIT} (not seen twice)",
        ReasonCode.VISIT_NO_RETRY: f"{_VISIT} (no retry in time)",
        ReasonCode.VISIT_CAMERA_DOWN_PLANNED: f"{_VISIT} (camera down at the planned time)",
        ReasonCode.VISIT_CAMERA_DOWN_WINDOW_END: f"{_VISIT} (camera down when the window ended)",
        ReasonCode.CHECK_SEEN: "seen",
        ReasonCode.CHECK_SEEN_LATE: "seen late",
        ReasonCode.CHECK_VISITED: "physical visit",
        ReasonCode.RESIDENT_ABSENT: "absent",
        ReasonCode.VISIT_INSTEAD: "a physical visit is needed instead",
        ReasonCode.CHECK_STATE: "check {state}",
        ReasonCode.TEXT: "{text}",
    }
)
"""The English text of every code; its placeholders are the code's parameters."""

DURING_MAINTENANCE: Final = "{reason} (during maintenance)"
"""The English of a reason held by a maintenance window, ``{reason}`` the reason itself."""
MAINTENANCE_ARG: Final = "during_maintenance"
"""The stored argument that marks a reason held by a maintenance window."""


def _placeholders(template: str) -> frozenset[str]:
    return frozenset(name for _, name, _, _ in string.Formatter().parse(template) if name)


PARAMETERS: Final[Mapping[ReasonCode, frozenset[str]]] = MappingProxyType(
    {code: _placeholders(ENGLISH[code]) for code in ReasonCode}
)
"""The parameters of each code: exactly the placeholders of its English template."""


def duration_text(seconds: int) -> str:
    """A length of time in a reason: "45 s" below 2 min, "15 min" below 2 h, else "48 h"
    (whole units, rounded down; the board writes them the same way)."""
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason: its code, its arguments (exactly the code's :data:`PARAMETERS`; a name
    ending in ``_s`` is whole seconds, not negative) and whether a maintenance window held it.

    ``args`` is a tuple of (name, value) pairs in name order, so that a reason is hashable and
    equal reasons compare equal; :meth:`of` builds one from keywords."""

    code: ReasonCode
    args: tuple[tuple[str, ReasonArg], ...] = ()
    during_maintenance: bool = False

    def __post_init__(self) -> None:
        names = [name for name, _ in self.args]
        if names != sorted(set(names)):
            raise ValueError(f"{self.code}: arguments must be unique and in name order")
        if set(names) != PARAMETERS[self.code]:
            expected = ", ".join(sorted(PARAMETERS[self.code])) or "none"
            raise ValueError(f"{self.code}: expected the arguments {expected}, got {names}")
        for name, value in self.args:
            if name.endswith("_s"):
                if type(value) is not int or value < 0:
                    raise ValueError(f"{self.code}: {name} must be whole seconds, got {value!r}")
            elif type(value) not in (int, str):
                raise ValueError(f"{self.code}: {name} must be a number or a text")

    @classmethod
    def of(cls, code: ReasonCode, **args: ReasonArg) -> Reason:
        """The reason ``code`` with these arguments (ValueError if they are not its own)."""
        return cls(code, tuple(sorted(args.items())))

    @property
    def arguments(self) -> dict[str, ReasonArg]:
        """The arguments by name."""
        return dict(self.args)

    @property
    def text(self) -> str:
        """The English text (:func:`english`)."""
        return english(self)

    def held(self) -> Reason:
        """This reason as a maintenance window held it: it arose during the window."""
        return Reason(self.code, self.args, during_maintenance=True)

    def stored_args(self) -> dict[str, ReasonArg | bool]:
        """The arguments as stored and published (``reason_args``): the code's parameters, and
        ``during_maintenance: true`` when a maintenance window held it."""
        stored: dict[str, ReasonArg | bool] = dict(self.args)
        if self.during_maintenance:
            stored[MAINTENANCE_ARG] = True
        return stored

    def alert_fields(self) -> dict[str, object]:
        """The reason as an alert row and the API's alert JSON name it: ``reason`` (English),
        ``reason_code`` and ``reason_args`` (the clear's are the same, prefixed ``cleared_``)."""
        return {
            "reason": self.text,
            "reason_code": self.code.value,
            "reason_args": self.stored_args(),
        }

    def to_record(self) -> dict[str, object]:
        """The reason as a JSON object, e.g. in the rule state: ``{code, args}``."""
        return {"code": self.code.value, "args": self.stored_args()}

    @classmethod
    def from_record(cls, record: object) -> Reason:
        """The reason :meth:`to_record` gave; a plain text (stored before reasons had codes)
        becomes :attr:`ReasonCode.TEXT`. ValueError for anything else."""
        if isinstance(record, str):
            return cls.of(ReasonCode.TEXT, text=record)
        if not isinstance(record, Mapping) or not isinstance(record.get("args"), Mapping):
            raise ValueError("a reason: expected {code, args}")
        args = dict(record["args"])
        held = args.pop(MAINTENANCE_ARG, False) is True
        return Reason(ReasonCode(str(record.get("code"))), tuple(sorted(args.items())), held)


def english(reason: Reason) -> str:
    """The reason in English, the one rendering of the codes in Python."""
    values = {
        name: duration_text(value) if name.endswith("_s") and type(value) is int else value
        for name, value in reason.args
    }
    text = ENGLISH[reason.code].format_map(values)
    return DURING_MAINTENANCE.format(reason=text) if reason.during_maintenance else text
