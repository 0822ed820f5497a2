"""The alert rules: pure functions of a device's rule state and a message or a clock tick.

:func:`evaluate_event` takes what the rules remember of one device (:class:`DeviceState`), the
device's alerts that are still on the board (:class:`OpenAlert`, at most one per rule), one
message from the device (an :class:`~devices.envelope.Event` or a
:class:`~devices.envelope.StatusReport`), the site's overrides and the time; it returns the new
state and the alert changes, in order. :func:`evaluate_tick` does the same for the passing of
time alone: ``device_offline`` by silence, ``door_left_unlocked``, ``door_left_open`` (at night
in the site's time zone), ``robot_inactive`` and the escalation of unacknowledged alerts.
Neither does any I/O, and neither keeps anything between calls: the gateway stores the state
and applies the changes in SQL in the same transaction as the batch; :func:`apply_changes` is
the executable definition of what applying means.

The changes (:data:`AlertChange`):

- :class:`Open` — a new alert; only for a rule with no alert on the board.
- :class:`Repeat` — the condition happened again while its alert is on the board: count + 1, and
  an alert that was ``cleared`` is no longer (the condition is back).
- :class:`Upgrade` — more severe now (``battery_low`` warning → high); the escalation clock
  restarts at the upgrade, because a warning never escalates.
- :class:`Clear` — the condition is gone. The alert resolves itself if it was acknowledged or is
  less than high; otherwise it stays on the board marked ``cleared`` until someone acknowledges
  it, which resolves it (:func:`clear_resolves`, :func:`acknowledge`). ``staff_resolve`` marks
  it cleared without ever resolving it (``alarm.cancelled``, below).
- :class:`Escalate` — high or critical, unacknowledged for the site's escalation time.

Each change says why with a :class:`~devices.reasons.Reason` (a code and its arguments, decided
here; its English text is :func:`devices.reasons.english`).

The rules open from *flags* in the state and clear from the *board*: a rule with a lasting
condition (offline, battery, door, robot) opens once per episode, remembered in the state, so
that when staff resolve an alert by hand while the condition lasts, it is not reopened on the
next tick or heartbeat; a clearing condition clears whatever alert of the rule is on the board.

The rules whose condition the device reports with a start and an end event (``lock_jammed``,
``door_left_unlocked``, ``camera_stream_lost``, ``door_left_open``, ``water_leak``,
``smoke_detected``) are one table, :data:`EPISODE_RULES`, run by one function: each
:class:`EpisodeRule` names its events, the state it keeps and what a start event does
(:class:`EveryStart`, :class:`FirstStart` or :class:`TimedStart`).

Late events — a device that buffered while offline sends old events later, and QoS 1 may reorder
— are judged by the device's own time (``Event.time``), per condition:

- Receipt is what counts for ``device_offline``: any message received is proof of life now, so
  even a late one resolves it. A Last Will received before the newest message is stale.
- An event older than the newest one the state has seen for the same condition is outdated and
  changes nothing: a ``lock.locked`` at 10:00 arriving after a ``lock.unlocked`` at 10:05 does
  not clear the door, a ``camera.check_ended`` with ``not_seen`` older than a later ``seen``
  check does not open, an old battery reading is ignored, an old ``stream_lost`` does not open.
  Lock events share one clock (``lock.unlocked``, ``lock.locked``, ``lock.jammed``), as do the
  stream events; equal times count as newer (arrival order breaks the tie).
- Facts that need no order are never lost: every ``*.tamper`` and every ``alarm.pressed`` opens
  or repeats, however late. A late press that the resident already cancelled (a cancel newer
  than the newest press) opens and is at once marked cancelled; staff still see it.
- ``alarm.cancelled`` is a :class:`Clear` with reason "cancelled by the resident" and
  ``staff_resolve``: it marks the alarm cleared but never resolves it, acknowledged or not — the
  contract has staff resolve alarms. An unacknowledged cancelled alarm resolves when someone
  acknowledges it (the lifecycle's rule for cleared alerts); an acknowledged one waits for a
  staff resolve. A cancel older than the newest press cancels nothing.
- Lasting conditions reported as states (``water_leak``, ``smoke_detected``, ``door_left_open``)
  open once per episode and ignore repeats: a sensor behind zigbee2mqtt repeats its whole
  state on every report, so ``water.leak_detected`` or ``door.opened`` may arrive again and
  again while the condition lasts. A repeated ``door.opened`` does not restart the open-timer;
  the matching ``*.cleared`` / ``door.closed`` ends the episode and clears the alert.
- Timed rules compare device time with ``now`` (the gateway's clock): a ``lock.unlocked`` that
  arrives 30 min late with no lock since opens ``door_left_unlocked`` on the next tick; a late
  ``robot.interaction`` clears ``robot_inactive`` only if it is within the inactivity window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime, tzinfo
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, NamedTuple, TypeAlias
from zoneinfo import ZoneInfo

from devices.catalog import (
    DEFAULT_CATALOG,
    TAMPER_SUFFIX,
    BatteryRule,
    Catalog,
    EventRule,
    KindRules,
    NightDurationRule,
    Rule,
    Severity,
)
from devices.envelope import Event, StatusReport
from devices.reasons import Reason, ReasonCode

__all__ = [
    "DEFAULT_SITE_TZ",
    "EPISODE_RULES",
    "MAINTENANCE_SILENCED",
    "SITE_RULE_BOUNDS",
    "AlertChange",
    "AlertState",
    "Clear",
    "DeviceState",
    "EpisodeRule",
    "Escalate",
    "EveryStart",
    "FirstStart",
    "Message",
    "Onset",
    "Open",
    "OpenAlert",
    "Repeat",
    "Rule",
    "SettingBounds",
    "Severity",
    "SiteRuleSettings",
    "TimedStart",
    "Upgrade",
    "acknowledge",
    "apply_changes",
    "clear_resolves",
    "evaluate_event",
    "evaluate_tick",
]

Message: TypeAlias = Event | StatusReport
"""What a device sends that the rules judge: an event, or a status report (online, or offline
as its Last Will)."""

CANCELLED_BY_RESIDENT: Final = Reason.of(ReasonCode.CANCELLED_BY_RESIDENT)
"""The reason of the :class:`Clear` an ``alarm.cancelled`` gives (staff still resolve it)."""

# The outcomes of camera.check_ended that open resident_not_seen, each with its reason.
_NOT_SEEN_OUTCOMES: Final[Mapping[str, Reason]] = MappingProxyType(
    {
        "not_seen": Reason.of(ReasonCode.CHECK_NOT_SEEN),
        "technical_failure": Reason.of(ReasonCode.CHECK_FAILED),
    }
)
DEFAULT_SITE_TZ: Final[tzinfo] = ZoneInfo("Europe/Stockholm")
"""The time zone of a site that says nothing else (``sites.timezone`` defaults to it)."""

MAINTENANCE_SILENCED: Final = frozenset(
    {Rule.DEVICE_OFFLINE, Rule.BATTERY_LOW, Rule.CAMERA_STREAM_LOST, Rule.LOCK_JAMMED, Rule.TAMPER}
)
"""The device-health rules a maintenance window ("in repair") silences: what a technician's work
sets off. Safety and care rules (alarms, smoke, water, doors, the night checks) never pause."""
# Of those, the conditions that last until an event ends them: one that arose during the window
# and still lasts opens when the window is over. A tamper is a moment, expected during repair.
_HELD_AFTER_MAINTENANCE: Final = MAINTENANCE_SILENCED - {Rule.TAMPER}


class AlertState(StrEnum):
    """``alerts.state``: ``open`` → ``acknowledged`` → ``resolved``."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """An alert of the device that is still on the board (open or acknowledged).

    ``cleared``: its condition is gone, but it is high or critical and nobody had acknowledged
    it (or it is an alarm only staff resolve). ``raised_at``: when an :class:`Upgrade` last
    raised its severity; escalation counts from it instead of ``opened_at``.
    """

    rule: Rule
    severity: Severity
    state: AlertState
    opened_at: datetime
    count: int = 1
    cleared: bool = False
    escalated: bool = False
    raised_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.state is AlertState.RESOLVED:
            raise ValueError("a resolved alert is not on the board")
        if self.count < 1:
            raise ValueError(f"count must be at least 1, got {self.count}")

    @property
    def acknowledged(self) -> bool:
        """Someone has acknowledged it."""
        return self.state is AlertState.ACKNOWLEDGED


@dataclass(frozen=True, slots=True)
class Open:
    """Open a new alert (the rule has none on the board), ``opened_at`` = now."""

    rule: Rule
    severity: Severity
    reason: Reason


@dataclass(frozen=True, slots=True)
class Repeat:
    """The condition happened again: count + 1, and no longer ``cleared``."""

    rule: Rule
    reason: Reason


@dataclass(frozen=True, slots=True)
class Upgrade:
    """Raise the alert's severity; ``raised_at`` = now."""

    rule: Rule
    severity: Severity
    reason: Reason


@dataclass(frozen=True, slots=True)
class Clear:
    """The condition is gone: resolve the alert if :func:`clear_resolves`, else mark it
    ``cleared``."""

    rule: Rule
    reason: Reason
    staff_resolve: bool = False  # only staff may resolve it: mark it cleared, never resolve


@dataclass(frozen=True, slots=True)
class Escalate:
    """Mark the alert escalated (``escalated_at`` = now) and announce it again."""

    rule: Rule
    reason: Reason


AlertChange: TypeAlias = Open | Repeat | Upgrade | Clear | Escalate
"""One change to the board, as :func:`evaluate_event` and :func:`evaluate_tick` return them."""


@dataclass(frozen=True, slots=True)
class SettingBounds:
    """The smallest and the largest value a site override may take (both allowed)."""

    minimum: int
    maximum: int

    def __contains__(self, value: object) -> bool:
        return type(value) is int and self.minimum <= value <= self.maximum


SITE_RULE_BOUNDS: Final[Mapping[str, SettingBounds]] = MappingProxyType(
    {
        # Timers up to a week: longer would be no alert at all, and every sum of a time and a
        # timer stays far from Python's and PostgreSQL's limits (a value the gateway cannot
        # read would void all of its site's overrides).
        "escalation_s": SettingBounds(1, 7 * 86_400),
        "door_left_unlocked_min": SettingBounds(1, 7 * 1_440),
        "door_left_open_min": SettingBounds(1, 7 * 1_440),
        # Local hours of the site (door_left_open's night).
        "night_from_hour": SettingBounds(0, 23),
        "night_until_hour": SettingBounds(0, 23),
        # Percent; a threshold below 1 would never open an alert.
        "battery_warning_below": SettingBounds(1, 100),
        "battery_high_below": SettingBounds(1, 100),
        "battery_resolved_at": SettingBounds(1, 100),
    }
)
"""The one range of every override of :class:`SiteRuleSettings`: it refuses anything outside,
so the API (which publishes these bounds in its schema) and the gateway agree on what is valid."""


@dataclass(frozen=True, slots=True)
class SiteRuleSettings:
    """A site's overrides of the catalog's rule defaults, for every device of the site; None
    keeps the catalog's value. Each lies in its :data:`SITE_RULE_BOUNDS`.

    A site that moves one battery threshold past another default drags that one along (a
    ``battery_warning_below`` of 40 lifts ``resolved_at`` to 40 as well), so that any valid
    override gives valid thresholds.
    """

    escalation_s: int | None = None
    door_left_unlocked_min: int | None = None
    battery_warning_below: int | None = None
    battery_high_below: int | None = None
    battery_resolved_at: int | None = None
    door_left_open_min: int | None = None
    night_from_hour: int | None = None  # local hours of the site, 0-23 (door_left_open)
    night_until_hour: int | None = None

    def __post_init__(self) -> None:
        for name, bounds in SITE_RULE_BOUNDS.items():
            value = getattr(self, name)
            if value is not None and value not in bounds:
                raise ValueError(
                    f"{name}: expected an integer {bounds.minimum} to {bounds.maximum}, "
                    f"got {_shown(value)}"
                )
        given = [
            value
            for name in ("battery_high_below", "battery_warning_below", "battery_resolved_at")
            if (value := getattr(self, name)) is not None
        ]
        if given != sorted(given):
            raise ValueError(
                "expected battery_high_below <= battery_warning_below <= battery_resolved_at"
            )

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> SiteRuleSettings:
        """The settings from a JSON object with these field names (``sites.rule_settings``);
        absent keys keep the defaults. An unknown key or a bad value raises ValueError naming
        it, so that an API can refuse it and a gateway can log it and use the defaults."""
        if unknown := sorted(record.keys() - _SITE_FIELD_NAMES):
            raise ValueError(f"unknown rule setting(s): {', '.join(unknown)}")
        return cls(**record)  # type: ignore[arg-type]  # checked in __post_init__

    @classmethod
    def usable_part(cls, record: Mapping[str, object]) -> tuple[SiteRuleSettings, list[str]]:
        """What a gateway can apply of a stored record, and why it leaves the rest.

        Each override is taken on its own, in name order: an unknown key, a value out of its
        bounds (stored before the bounds existed) or one that breaks the battery order is left
        out with its reason, and the site keeps every other override instead of losing all.
        """
        kept: dict[str, object] = {}
        problems: list[str] = []
        for name in sorted(record):
            if name not in _SITE_FIELD_NAMES:
                problems.append(f"unknown rule setting {name}")
                continue
            try:
                cls(**{**kept, name: record[name]})  # type: ignore[arg-type]
            except (ValueError, TypeError) as error:
                problems.append(str(error))
                continue
            kept[name] = record[name]
        return cls(**kept), problems  # type: ignore[arg-type]

    def to_record(self) -> dict[str, int]:
        """The overrides as a JSON object, without the ones left at their default."""
        return {
            spec.name: value
            for spec in fields(self)
            if (value := getattr(self, spec.name)) is not None
        }

    @property
    def door_left_unlocked_s(self) -> int | None:
        """The door override in seconds, as the catalog's ``after_s``."""
        minutes = self.door_left_unlocked_min
        return None if minutes is None else minutes * 60

    def door_open_rule(self, default: NightDurationRule) -> NightDurationRule:
        """The catalog's door_left_open with this site's overrides."""
        return NightDurationRule(
            severity=default.severity,
            after_s=default.after_s
            if self.door_left_open_min is None
            else self.door_left_open_min * 60,
            night_from_hour=default.night_from_hour
            if self.night_from_hour is None
            else self.night_from_hour,
            night_until_hour=default.night_until_hour
            if self.night_until_hour is None
            else self.night_until_hour,
        )

    def battery_rule(self, default: BatteryRule) -> BatteryRule:
        """The catalog's battery thresholds with this site's overrides: the overrides as given,
        the defaults moved as little as keeps them in order around them."""
        high, warning, resolved = (
            self.battery_high_below,
            self.battery_warning_below,
            self.battery_resolved_at,
        )
        if high is None:
            high = min([default.high_below, *(v for v in (warning, resolved) if v is not None)])
        if resolved is None:
            resolved = max([default.resolved_at, *(v for v in (warning, high) if v is not None)])
        if warning is None:
            warning = min(max(default.warning_below, high), resolved)
        return BatteryRule(warning_below=warning, high_below=high, resolved_at=resolved)


_SITE_FIELD_NAMES: Final = frozenset(spec.name for spec in fields(SiteRuleSettings))


def _shown(value: object) -> str:
    """A refused value as an error message quotes it: a huge number is not worth repeating
    (nor can Python print one of more than 4300 digits)."""
    if type(value) is int and value.bit_length() > 64:
        return "a number out of range"
    return repr(value)[:100]


class DeviceState(NamedTuple):
    """What the rules remember of one device between messages; the gateway stores it.

    Times named ``*_at`` of device events are device time (``Event.time``); ``last_message_at``
    is receipt time (the gateway's clock), because silence is judged by the gateway's clock.
    ``since`` is when watching the device began (its registration): silence and inactivity are
    measured from it until the device has sent something. The rules check that it is aware.

    A NamedTuple rather than a frozen dataclass, for speed: the rules derive a new state several
    times per event, and ``_replace`` of these 30 fields costs an eighth of
    ``dataclasses.replace`` (2 against 15 microseconds, measured), which was a tenth of the
    gateway's time when half of the events were state changes (issue 14).
    """

    kind: str
    since: datetime
    last_message_at: datetime | None = None
    online: bool = True  # presumed until silence or a Last Will says otherwise
    battery: int | None = None
    battery_at: datetime | None = None
    battery_alerted: Severity | None = None  # the battery_low level alerted in this low episode
    lock_event_at: datetime | None = None  # newest lock.unlocked / lock.locked / lock.jammed
    unlocked_since: datetime | None = None  # the unlock with no lock.locked after it
    door_alerted: bool = False  # door_left_unlocked opened for this unlock
    stream_event_at: datetime | None = None  # newest camera.stream_lost / stream_restored
    check_at: datetime | None = None  # newest camera.check_ended
    check_outcome: str | None = None
    alarm_pressed_at: datetime | None = None  # newest alarm.pressed
    alarm_cancelled_at: datetime | None = None  # newest alarm.cancelled
    last_interaction_at: datetime | None = None  # newest robot.interaction
    robot_alerted: bool = False  # robot_inactive opened for this quiet spell
    door_event_at: datetime | None = None  # newest door.opened / door.closed
    door_open_since: datetime | None = None  # the door.opened with no door.closed after it
    door_open_alerted: bool = False  # door_left_open opened for this opening
    water_event_at: datetime | None = None  # newest water.leak_detected / leak_cleared
    water_leaking: bool = False  # in a leak episode (water_leak opened for it)
    smoke_event_at: datetime | None = None  # newest smoke.detected / smoke.cleared
    smoke_present: bool = False  # in a smoke episode (smoke_detected opened for it)
    # Alerts a maintenance window kept from opening, whose condition still lasts: (rule,
    # severity, reason) each; they open when the window is over (see MAINTENANCE_SILENCED).
    held: tuple[tuple[str, str, Reason], ...] = ()

    def to_record(self) -> dict[str, Any]:
        """The state as a JSON object (times in ISO 8601), e.g. for a jsonb column."""
        return {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in self.record_fields().items()
        }

    def record_fields(self) -> dict[str, Any]:
        """:meth:`to_record` with its times left as datetimes, for a JSON encoder that writes
        them as ISO 8601 itself (orjson does). Fields at their defaults are left out:
        :meth:`from_record` gives them back, and the gateway writes these for every batch."""
        record: dict[str, Any] = {
            name: value
            for name, value, default in zip(self._fields, self, _FIELD_DEFAULTS, strict=True)
            if value is not default and value != default
        }
        if self.held:
            record["held"] = [
                [rule, severity, reason.to_record()] for rule, severity, reason in self.held
            ]
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> DeviceState:
        """The state :meth:`to_record` gave; keys it does not know are ignored, missing ones
        take their defaults (so a state stored by an older version still loads)."""
        values: dict[str, object] = {}
        for name in _FIELD_NAMES & record.keys():
            value = record[name]
            if name in _TIME_FIELDS and value is not None:
                if not isinstance(value, str):
                    raise ValueError(f"{name}: expected an ISO 8601 string")
                value = datetime.fromisoformat(value)
                _require_aware(value, name)
            elif name == "battery_alerted" and value is not None:
                value = Severity(str(value))
            elif name == "held":
                value = _held_from_record(value)
            values[name] = value
        return cls(**values)  # type: ignore[arg-type]


def _held_from_record(value: object) -> tuple[tuple[str, str, Reason], ...]:
    if not isinstance(value, list):
        raise ValueError("held: expected a list")
    held: list[tuple[str, str, Reason]] = []
    for entry in value:
        if not (isinstance(entry, list) and len(entry) == 3):
            raise ValueError("held: expected [rule, severity, reason] entries")
        rule, severity, reason = entry
        # A reason stored as text, before reasons had codes, is kept as that text.
        held.append((Rule(rule).value, Severity(severity).value, Reason.from_record(reason)))
    return tuple(held)


_FIELD_NAMES: Final = frozenset(DeviceState._fields)
_REQUIRED: Final = object()  # the default of a field that has none: never equal to a value
_FIELD_DEFAULTS: Final = tuple(
    DeviceState._field_defaults.get(name, _REQUIRED) for name in DeviceState._fields
)
_TIME_FIELDS: Final = frozenset(
    {"since", "last_message_at", "battery_at", "lock_event_at", "unlocked_since"}
    | {"stream_event_at", "check_at", "alarm_pressed_at", "alarm_cancelled_at"}
    | {"last_interaction_at", "door_event_at", "door_open_since", "water_event_at"}
    | {"smoke_event_at"}
)
# The flags an episode rule may set: off until an episode turns them on.
_FLAG_FIELDS: Final = frozenset(
    name for name, default in DeviceState._field_defaults.items() if default is False
)


# --- the lifecycle: what applying a change means ----------------------------------------------


def clear_resolves(alert: OpenAlert, change: Clear) -> bool:
    """Whether ``change`` resolves ``alert`` (else it marks it ``cleared``): it does when
    someone acknowledged the alert or it is less than high, unless only staff may resolve it."""
    if change.staff_resolve:
        return False
    return alert.acknowledged or alert.severity.rank < Severity.HIGH.rank


def acknowledge(alert: OpenAlert) -> OpenAlert | None:
    """Someone acknowledges ``alert``: the acknowledged alert, or None when that resolves it
    (its condition had already cleared). Acknowledging twice changes nothing."""
    if alert.acknowledged:
        return alert
    if alert.cleared:
        return None
    return replace(alert, state=AlertState.ACKNOWLEDGED)


def apply_changes(
    open_alerts: Mapping[Rule, OpenAlert], changes: Iterable[AlertChange], now: datetime
) -> dict[Rule, OpenAlert]:
    """The board after ``changes``: resolved alerts are gone. This is what the gateway does in
    SQL; a change that does not fit the board (opening a rule that is open, or changing one that
    is not) is a bug in the caller and raises ValueError."""
    alerts = dict(open_alerts)
    for change in changes:
        _apply(alerts, change, now)
    return alerts


def _apply(alerts: dict[Rule, OpenAlert], change: AlertChange, now: datetime) -> None:
    alert = alerts.get(change.rule)
    if isinstance(change, Open):
        if alert is not None:
            raise ValueError(f"{change.rule} is already open")
        alerts[change.rule] = OpenAlert(change.rule, change.severity, AlertState.OPEN, now)
        return
    if alert is None:
        raise ValueError(f"{type(change).__name__}: {change.rule} is not open")
    if isinstance(change, Repeat):
        alerts[change.rule] = replace(alert, count=alert.count + 1, cleared=False)
    elif isinstance(change, Upgrade):
        alerts[change.rule] = replace(alert, severity=change.severity, raised_at=now)
    elif isinstance(change, Clear):
        if clear_resolves(alert, change):
            del alerts[change.rule]
        else:
            alerts[change.rule] = replace(alert, cleared=True)
    else:
        alerts[change.rule] = replace(alert, escalated=True)


class _Outcome:
    """The changes of one evaluation, and the board as they leave it (so that each decision
    sees the changes before it). During maintenance, the silenced rules change nothing on the
    board; a lasting condition among them is *held* instead, to open when the window is over."""

    __slots__ = ("alerts", "changes", "held", "now", "silenced")

    def __init__(
        self,
        open_alerts: Mapping[Rule, OpenAlert],
        now: datetime,
        state: DeviceState,
        in_maintenance: bool,
    ) -> None:
        self.alerts = dict(open_alerts)
        self.changes: list[AlertChange] = []
        self.now = now
        self.silenced = MAINTENANCE_SILENCED if in_maintenance else frozenset()
        self.held: dict[Rule, tuple[Severity, Reason]] = {
            Rule(rule): (Severity(severity), reason) for rule, severity, reason in state.held
        }
        if not in_maintenance:
            self._release_held()

    def _release_held(self) -> None:
        """The window is over: what it held, still lasting, opens (or repeats) now."""
        held, self.held = self.held, {}
        for rule in sorted(held):  # a fixed order: equal inputs give equal changes
            severity, reason = held[rule]
            self.occur(rule, severity, reason.held())

    def with_held(self, state: DeviceState) -> DeviceState:
        """``state`` remembering what is held now."""
        held = tuple(
            (rule.value, severity.value, reason)
            for rule, (severity, reason) in sorted(self.held.items())
        )
        return state if held == state.held else state._replace(held=held)

    def emit(self, change: AlertChange) -> None:
        _apply(self.alerts, change, self.now)
        self.changes.append(change)

    def occur(self, rule: Rule, severity: Severity, reason: Reason) -> None:
        """The rule's condition happened: open, or raise and/or repeat the alert on the board."""
        alert = self.alerts.get(rule)
        if rule in self.silenced:
            if alert is None and rule in _HELD_AFTER_MAINTENANCE:
                before = self.held.get(rule)
                if before is None or severity.rank >= before[0].rank:
                    self.held[rule] = (severity, reason)
            return
        if alert is None:
            self.emit(Open(rule, severity, reason))
            return
        raised = severity.rank > alert.severity.rank
        if raised:
            self.emit(Upgrade(rule, severity, reason))
        if alert.cleared or not raised:
            self.emit(Repeat(rule, reason))

    def clear(self, rule: Rule, reason: Reason, *, staff_resolve: bool = False) -> None:
        """The rule's condition is gone: clear its alert, if one is on the board and not yet
        cleared, and forget it if it was held."""
        self.held.pop(rule, None)
        alert = self.alerts.get(rule)
        if alert is not None and not alert.cleared:
            self.emit(Clear(rule, reason, staff_resolve))


# --- evaluation -------------------------------------------------------------------------------


def evaluate_event(
    state: DeviceState,
    open_alerts: Mapping[Rule, OpenAlert],
    message: Message,
    settings: SiteRuleSettings,
    now: datetime,
    *,
    catalog: Catalog = DEFAULT_CATALOG,
    site_tz: tzinfo = DEFAULT_SITE_TZ,
    in_maintenance: bool = False,
) -> tuple[DeviceState, list[AlertChange]]:
    """One message from the device: the new state and the alert changes, in order.

    ``open_alerts`` are the device's alerts on the board, by rule; ``now`` (aware) is the
    gateway's clock, the ``opened_at`` of anything opened. ``in_maintenance``: the device is in
    a maintenance window now (:data:`MAINTENANCE_SILENCED`). Never raises on anything a device
    can send; a naive ``now`` is the caller's bug and raises ValueError.
    """
    _require_aware(now, "now")
    _require_aware(state.since, "since")
    device_kind = catalog.kinds.get(state.kind)
    rules = KindRules() if device_kind is None else device_kind.rules
    out = _Outcome(open_alerts, now, state, in_maintenance)
    if isinstance(message, StatusReport):
        state = _status(state, message, rules, out)
    else:
        state = _heard(state, message.received_at, out)
        handler = _HANDLERS.get(message.type)
        if handler is not None:
            state = handler(state, message, rules, settings, out)
        if message.type.endswith(TAMPER_SUFFIX) and (rule := rules.tamper) is not None:
            out.occur(
                Rule.TAMPER, rule.severity, Reason.of(ReasonCode.TAMPER, event_type=message.type)
            )
    return out.with_held(state), out.changes


def evaluate_tick(
    state: DeviceState,
    open_alerts: Mapping[Rule, OpenAlert],
    settings: SiteRuleSettings,
    now: datetime,
    *,
    catalog: Catalog = DEFAULT_CATALOG,
    site_tz: tzinfo = DEFAULT_SITE_TZ,
    in_maintenance: bool = False,
) -> tuple[DeviceState, list[AlertChange]]:
    """The clock alone: ``device_offline`` by silence, ``door_left_unlocked``,
    ``door_left_open`` (night hours in ``site_tz``), ``robot_inactive``, and escalation; and,
    once a maintenance window is over, what it held. Ticking more often changes nothing but
    the timing."""
    _require_aware(now, "now")
    _require_aware(state.since, "since")
    device_kind = catalog.kinds.get(state.kind)
    rules = KindRules() if device_kind is None else device_kind.rules
    out = _Outcome(open_alerts, now, state, in_maintenance)

    offline = rules.device_offline
    if offline is not None and device_kind is not None and state.online:
        heard_at = state.since if state.last_message_at is None else state.last_message_at
        silent_s = (now - heard_at).total_seconds()
        if silent_s >= offline.after_heartbeats * device_kind.heartbeat_interval_s:
            state = state._replace(online=False)
            out.occur(
                Rule.DEVICE_OFFLINE,
                offline.severity,
                Reason.of(
                    ReasonCode.SILENT,
                    silent_s=int(silent_s),
                    heartbeat_s=device_kind.heartbeat_interval_s,
                ),
            )

    door = rules.door_left_unlocked
    if door is not None and state.unlocked_since is not None and not state.door_alerted:
        after_s = (
            door.after_s if settings.door_left_unlocked_s is None else settings.door_left_unlocked_s
        )
        unlocked_s = (now - state.unlocked_since).total_seconds()
        if unlocked_s >= after_s:
            state = state._replace(door_alerted=True)
            out.occur(
                Rule.DOOR_LEFT_UNLOCKED,
                door.severity,
                Reason.of(ReasonCode.UNLOCKED, unlocked_s=int(unlocked_s)),
            )

    door_open = rules.door_left_open
    if door_open is not None and state.door_open_since is not None and not state.door_open_alerted:
        door_open = settings.door_open_rule(door_open)
        open_s = (now - state.door_open_since).total_seconds()
        if open_s >= door_open.after_s and door_open.is_night(now.astimezone(site_tz).hour):
            state = state._replace(door_open_alerted=True)
            out.occur(
                Rule.DOOR_LEFT_OPEN,
                door_open.severity,
                Reason.of(ReasonCode.OPEN_AT_NIGHT, open_s=int(open_s)),
            )

    robot = rules.robot_inactive
    if robot is not None and not state.robot_alerted:
        used_at = state.since if state.last_interaction_at is None else state.last_interaction_at
        quiet_s = (now - used_at).total_seconds()
        if quiet_s >= robot.after_s:
            state = state._replace(robot_alerted=True)
            out.occur(
                Rule.ROBOT_INACTIVE,
                robot.severity,
                Reason.of(ReasonCode.ROBOT_QUIET, quiet_s=int(quiet_s)),
            )

    escalation_s = catalog.escalation_s if settings.escalation_s is None else settings.escalation_s
    for rule in Rule:  # in a fixed order, so that equal inputs give equal changes
        alert = out.alerts.get(rule)
        if (
            alert is not None
            and alert.severity.rank >= Severity.HIGH.rank
            and not alert.acknowledged
            and not alert.escalated
            and rule not in out.silenced  # in repair: the technician is on it
        ):
            waiting_s = (now - (alert.raised_at or alert.opened_at)).total_seconds()
            if waiting_s >= escalation_s:
                waited = Reason.of(ReasonCode.NOT_ACKNOWLEDGED, waiting_s=int(waiting_s))
                out.emit(Escalate(rule, waited))
    return out.with_held(state), out.changes


# --- the rules, by message --------------------------------------------------------------------


def _heard(state: DeviceState, received_at: datetime, out: _Outcome) -> DeviceState:
    """Any message from the device: it is online, and device_offline clears."""
    last = state.last_message_at
    if last is None or received_at > last:
        state = state._replace(last_message_at=received_at)
    if not state.online:
        state = state._replace(online=True)
    out.clear(Rule.DEVICE_OFFLINE, _SENDING_AGAIN)
    return state


_SENDING_AGAIN: Final = Reason.of(ReasonCode.SENDING_AGAIN)  # built once: _heard runs per message


def _status(
    state: DeviceState, report: StatusReport, rules: KindRules, out: _Outcome
) -> DeviceState:
    if report.online:
        return _heard(state, report.received_at, out)
    last = state.last_message_at
    if not state.online or (last is not None and report.received_at < last):
        # Already offline, or the device spoke after the broker declared it gone.
        return state
    state = state._replace(online=False)
    if (rule := rules.device_offline) is not None:
        out.occur(Rule.DEVICE_OFFLINE, rule.severity, Reason.of(ReasonCode.LAST_WILL))
    return state


def _is_outdated(time: datetime, newest: datetime | None) -> bool:
    return newest is not None and time < newest


def _heartbeat(
    state: DeviceState,
    event: Event,
    rules: KindRules,
    settings: SiteRuleSettings,
    out: _Outcome,
) -> DeviceState:
    level = event.battery
    if level is None or _is_outdated(event.time, state.battery_at):
        return state
    state = state._replace(battery=level, battery_at=event.time)
    if rules.battery_low is None:
        return state
    thresholds = settings.battery_rule(rules.battery_low)
    reason = Reason.of(ReasonCode.BATTERY, level=level)
    if level >= thresholds.resolved_at:
        state = state._replace(battery_alerted=None)
        out.clear(Rule.BATTERY_LOW, reason)
    elif level < thresholds.high_below:
        if state.battery_alerted is not Severity.HIGH:
            state = state._replace(battery_alerted=Severity.HIGH)
            out.occur(Rule.BATTERY_LOW, Severity.HIGH, reason)
    elif level < thresholds.warning_below and state.battery_alerted is None:
        state = state._replace(battery_alerted=Severity.WARNING)
        out.occur(Rule.BATTERY_LOW, Severity.WARNING, reason)
    # Between warning_below and resolved_at (the hysteresis), or rising from below high_below:
    # nothing changes until the battery reaches resolved_at.
    return state


def _check_ended(
    state: DeviceState,
    event: Event,
    rules: KindRules,
    settings: SiteRuleSettings,
    out: _Outcome,
) -> DeviceState:
    outcome = event.data.get("outcome")
    if not isinstance(outcome, str) or _is_outdated(event.time, state.check_at):
        return state
    state = state._replace(check_at=event.time, check_outcome=outcome)
    if (not_seen := _NOT_SEEN_OUTCOMES.get(outcome)) is not None:
        if (rule := rules.resident_not_seen) is not None:
            out.occur(Rule.RESIDENT_NOT_SEEN, rule.severity, not_seen)
    elif outcome == "seen":
        out.clear(Rule.RESIDENT_NOT_SEEN, Reason.of(ReasonCode.SEEN_LATER))
    return state


def _alarm_pressed(
    state: DeviceState,
    event: Event,
    rules: KindRules,
    settings: SiteRuleSettings,
    out: _Outcome,
) -> DeviceState:
    # Never outdated: a press is a fact staff must see, however late it arrives.
    newest = state.alarm_pressed_at
    if newest is None or event.time >= newest:
        newest = event.time
        state = state._replace(alarm_pressed_at=newest)
    if (rule := rules.alarm_pressed) is None:
        return state
    out.occur(Rule.ALARM_PRESSED, rule.severity, Reason.of(ReasonCode.ALARM_PRESSED))
    cancelled_at = state.alarm_cancelled_at
    if cancelled_at is not None and cancelled_at >= newest:  # a late press, already cancelled
        out.clear(Rule.ALARM_PRESSED, CANCELLED_BY_RESIDENT, staff_resolve=True)
    return state


def _alarm_cancelled(
    state: DeviceState,
    event: Event,
    rules: KindRules,
    settings: SiteRuleSettings,
    out: _Outcome,
) -> DeviceState:
    if not _is_outdated(event.time, state.alarm_cancelled_at):
        state = state._replace(alarm_cancelled_at=event.time)
    pressed_at = state.alarm_pressed_at
    if pressed_at is not None and event.time >= pressed_at:  # else it cancels an older press
        out.clear(Rule.ALARM_PRESSED, CANCELLED_BY_RESIDENT, staff_resolve=True)
    return state


def _interaction(
    state: DeviceState,
    event: Event,
    rules: KindRules,
    settings: SiteRuleSettings,
    out: _Outcome,
) -> DeviceState:
    if _is_outdated(event.time, state.last_interaction_at):
        return state
    state = state._replace(last_interaction_at=event.time)
    rule = rules.robot_inactive
    if rule is None or (out.now - event.time).total_seconds() >= rule.after_s:
        return state  # a buffered interaction from long ago: still inactive since
    state = state._replace(robot_alerted=False)
    out.clear(Rule.ROBOT_INACTIVE, Reason.of(ReasonCode.ROBOT_USED))
    return state


# --- episode rules: conditions the device reports with a start and an end event ----------------


def _require_state_field(name: str, *, time: bool) -> None:
    """Refuse a name that is not a :class:`DeviceState` time (``time``) or a flag that is off
    by default: a slip in the episode table fails at import, not at the first event."""
    if name not in (_TIME_FIELDS if time else _FLAG_FIELDS):
        kind = "time" if time else "flag (False by default)"
        raise ValueError(f"DeviceState has no {kind} field {name!r}")


@dataclass(frozen=True, slots=True)
class EveryStart:
    """Each start event opens the alert, or repeats it (count + 1) while it is on the board:
    every jam, every lost stream is one more occurrence."""

    reason: Reason  # of the Open or the Repeat


@dataclass(frozen=True, slots=True)
class FirstStart:
    """The first start event of an episode opens the alert (or repeats one still on the board);
    a repeat within the episode changes nothing, so a sensor that reports its state over and
    over opens one alert, and one that staff resolved is not reopened while the condition
    lasts. ``flag`` names the :class:`DeviceState` flag that is set during an episode."""

    flag: str
    reason: Reason  # of the Open or the Repeat

    def __post_init__(self) -> None:
        _require_state_field(self.flag, time=False)


@dataclass(frozen=True, slots=True)
class TimedStart:
    """The first start event of an episode starts its timer, and a repeat does not restart it;
    :func:`evaluate_tick` opens the alert once the episode has lasted long enough, and sets the
    ``alerted`` flag so that it opens once per episode. ``since`` and ``alerted`` name the
    :class:`DeviceState` time and flag."""

    since: str
    alerted: str

    def __post_init__(self) -> None:
        _require_state_field(self.since, time=True)
        _require_state_field(self.alerted, time=False)


Onset: TypeAlias = EveryStart | FirstStart | TimedStart
"""What the start event of an :class:`EpisodeRule` does."""


@dataclass(frozen=True, slots=True)
class EpisodeRule:
    """A rule whose condition the device reports as an event that starts it and one that ends it.

    ``clock`` names the :class:`DeviceState` time of the newest event of the rule: an older
    event is outdated and changes nothing. Rules that share an event type share its clock (the
    lock's three events are one clock for lock_jammed and door_left_unlocked). The end event
    ends the episode (the onset's fields back to their defaults) and clears the alert, however
    it was opened. The severity is the kind's: its catalog rule of the same name, an
    :class:`~devices.catalog.EventRule` (the tick's for a :class:`TimedStart`); a kind without
    the rule keeps the state but opens nothing.
    """

    rule: Rule
    start: str  # the event type that starts the condition or reports it again
    end: str  # the event type that ends it
    onset: Onset
    clock: str
    cleared_reason: Reason  # of the Clear

    def __post_init__(self) -> None:
        _require_state_field(self.clock, time=True)
        if self.start == self.end:
            raise ValueError(f"{self.rule}: the same event type starts and ends it")


EPISODE_RULES: Final[tuple[EpisodeRule, ...]] = (
    # lock_jammed before door_left_unlocked: lock.locked clears the two in this order.
    EpisodeRule(
        Rule.LOCK_JAMMED,
        start="lock.jammed",
        end="lock.locked",
        onset=EveryStart(reason=Reason.of(ReasonCode.LOCK_JAMMED)),
        clock="lock_event_at",
        cleared_reason=Reason.of(ReasonCode.LOCKED),
    ),
    EpisodeRule(
        Rule.DOOR_LEFT_UNLOCKED,
        start="lock.unlocked",  # unlocked again: it has been unlocked since the first
        end="lock.locked",
        onset=TimedStart(since="unlocked_since", alerted="door_alerted"),
        clock="lock_event_at",
        cleared_reason=Reason.of(ReasonCode.LOCKED),
    ),
    EpisodeRule(
        Rule.CAMERA_STREAM_LOST,
        start="camera.stream_lost",
        end="camera.stream_restored",
        onset=EveryStart(reason=Reason.of(ReasonCode.STREAM_LOST)),
        clock="stream_event_at",
        cleared_reason=Reason.of(ReasonCode.STREAM_RESTORED),
    ),
    EpisodeRule(
        Rule.DOOR_LEFT_OPEN,
        start="door.opened",  # zigbee2mqtt repeats it: open since the first
        end="door.closed",
        onset=TimedStart(since="door_open_since", alerted="door_open_alerted"),
        clock="door_event_at",
        cleared_reason=Reason.of(ReasonCode.CLOSED),
    ),
    EpisodeRule(
        Rule.WATER_LEAK,
        start="water.leak_detected",
        end="water.leak_cleared",
        onset=FirstStart(flag="water_leaking", reason=Reason.of(ReasonCode.WATER_LEAK)),
        clock="water_event_at",
        cleared_reason=Reason.of(ReasonCode.DRY_AGAIN),
    ),
    EpisodeRule(
        Rule.SMOKE_DETECTED,
        start="smoke.detected",
        end="smoke.cleared",
        onset=FirstStart(flag="smoke_present", reason=Reason.of(ReasonCode.SMOKE)),
        clock="smoke_event_at",
        # Critical and normally unacknowledged when it clears: it stays on the board, marked
        # cleared, until someone acknowledges it (the lifecycle's rule).
        cleared_reason=Reason.of(ReasonCode.NO_SMOKE),
    ),
)
"""The rules whose condition starts and ends with events, in the order an event that several
share (``lock.locked``) applies them."""


def _episodes_by_event_type(
    episodes: Iterable[EpisodeRule],
) -> dict[str, tuple[EpisodeRule, ...]]:
    """The episode rules of each event type, in table order; those of one type share a clock."""
    by_type: dict[str, tuple[EpisodeRule, ...]] = {}
    for episode in episodes:
        for event_type in (episode.start, episode.end):
            same_type = by_type.get(event_type, ())
            if same_type and same_type[0].clock != episode.clock:
                raise ValueError(f"{event_type}: its rules keep different clocks")
            by_type[event_type] = (*same_type, episode)
    return by_type


_EPISODES_BY_EVENT_TYPE: Final = _episodes_by_event_type(EPISODE_RULES)


def _episode_event(
    state: DeviceState,
    event: Event,
    rules: KindRules,
    settings: SiteRuleSettings,
    out: _Outcome,
) -> DeviceState:
    """An event of episode rules: dated against their clock, then started or ended in each."""
    episodes = _EPISODES_BY_EVENT_TYPE[event.type]
    clock = episodes[0].clock  # the same for all of them
    if _is_outdated(event.time, getattr(state, clock)):
        return state  # a newer event of the condition says how it is now
    state = _with(state, {clock: event.time})
    for episode in episodes:
        if event.type == episode.end:
            state = _end_episode(episode, state, out)
        else:
            state = _start_episode(episode, state, event, rules, out)
    return state


def _start_episode(
    episode: EpisodeRule, state: DeviceState, event: Event, rules: KindRules, out: _Outcome
) -> DeviceState:
    """The start event: open or repeat the alert, or start the timer, as the onset says."""
    onset = episode.onset
    if isinstance(onset, TimedStart):
        if getattr(state, onset.since) is None:  # else a repeat: the timer runs from the first
            state = _with(state, {onset.since: event.time})
        return state  # evaluate_tick opens the alert when the time is up
    if isinstance(onset, FirstStart):
        if getattr(state, onset.flag):
            return state  # a repeat within the episode changes nothing
        state = _with(state, {onset.flag: True})
    spec: EventRule | None = getattr(rules, episode.rule.value)  # KindRules: named by rule
    if spec is not None:
        out.occur(episode.rule, spec.severity, onset.reason)
    return state


def _end_episode(episode: EpisodeRule, state: DeviceState, out: _Outcome) -> DeviceState:
    """The end event: the episode is over and the alert on the board, if any, clears."""
    onset = episode.onset
    if isinstance(onset, FirstStart):
        state = _with(state, {onset.flag: False})
    elif isinstance(onset, TimedStart):
        state = _with(state, {onset.since: None, onset.alerted: False})
    out.clear(episode.rule, episode.cleared_reason)
    return state


def _with(state: DeviceState, changes: dict[str, Any]) -> DeviceState:
    """``state`` with the fields an episode rule names (checked by _require_state_field)."""
    return state._replace(**changes)


# The event types with a rule (besides *.tamper, which any kind may have).
_HANDLERS: Final = {
    "heartbeat": _heartbeat,
    "camera.check_ended": _check_ended,
    "alarm.pressed": _alarm_pressed,
    "alarm.cancelled": _alarm_cancelled,
    "robot.interaction": _interaction,
    **dict.fromkeys(_EPISODES_BY_EVENT_TYPE, _episode_event),
}


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
