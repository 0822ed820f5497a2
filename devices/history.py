"""A fleet's past, generated fast: the backfill's pure core (``carewatch simulate --backfill``).

The live simulator (:mod:`devices.simulator`) plays the fleet in time order through one event
heap, a heartbeat at a time: right for traffic, far too slow for a year of a thousand devices
(a camera alone beats 525,600 times a year). This module generates the same fleet -- the same
device ids, kinds, activities and local-time rhythms (:data:`devices.simulator.PROFILES`) --
one UTC day at a time, as rows ready for the database:

- heartbeats thinned to one per ``heartbeat_every_s`` (15 min by default; a kind that beats
  less often keeps its own interval), with the battery of the simulator's model: cells drain,
  staff replace a low one within days and it jumps back to 100; a robot charges in its dock at
  night;
- the activities' episodes, except that a home-care visit leaves the door unlocked while the
  staff are inside (unlocked ... locked 5 to 40 minutes later), so that the unlock-to-lock
  visits of the usage dashboards have their realistic length;
- outages: the profiles' short ones and, rarely, a device off the network for hours; heartbeats
  are skipped meanwhile (events are held and keep their time, as in the simulator), and each
  outage longer than the kind's device_offline silence comes with its alert;
- alarm presses come with their alarm_pressed alert, acknowledged and resolved by staff;
- every alert with the reasons the rules give (:mod:`devices.reasons`), so that the pages say
  them in the reader's language.

Determinism: each device draws from its own random stream per day, seeded from the seed, the
device id and the day, with state (battery, a visit running past midnight) carried from day to
day in order; so a seed and a period give the same rows.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final

import orjson

from devices.catalog import DEFAULT_CATALOG, Catalog
from devices.ids import DEVICE_ID_RE
from devices.reasons import Reason, ReasonCode
from devices.rules import CANCELLED_BY_RESIDENT
from devices.simulator import (
    _ANY_TIME,
    _METHODS,
    LOCAL_TZ,
    PROFILES,
    Activity,
    EventData,
    KindProfile,
    SimDevice,
    Step,
    _apartment,
    _kind_counts,
    _lognormal,
    _pick,
)

__all__ = ["BACKFILL_PROFILES", "AlertRecord", "Day", "History", "Row"]

_DAY_MS: Final = 86_400_000

Row = tuple[int, str, str, str, str]
"""(time in epoch ms, device id, event id, type, data as JSON text)."""


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert of the past, already acknowledged and resolved (times in epoch ms)."""

    device_id: str
    rule: str
    severity: str
    opened_ms: int
    acknowledged_ms: int
    acknowledged_by: str
    resolved_ms: int
    resolved_by: str  # a staff id, or "system" when the condition cleared after acknowledgement
    cleared_ms: int | None  # when the condition ended, if it did
    # Why it opened and why it cleared, as the rules give them (devices.reasons): the pages
    # say them in the reader's language, as they do the gateway's.
    reason: Reason
    cleared_reason: Reason | None = None


@dataclass(frozen=True, slots=True)
class Day:
    """One UTC day of history: its rows (not sorted) and the alerts opened in it."""

    start_ms: int
    rows: list[Row]
    alerts: list[AlertRecord]


def _visit_with_door_unlocked(rng: random.Random, staff: Sequence[str]) -> list[Step]:
    """A home-care visit as the usage dashboards see it: unlocked on arrival, locked on
    leaving 5 to 40 minutes later; now and then forgotten and locked from the app, or jammed."""
    who: EventData = {"by": rng.choice(staff), "method": _pick(rng, _METHODS)}
    leave = _lognormal(rng, 15 * 60, 0.45, 5 * 60, 40 * 60)
    roll = rng.random()
    if roll < 0.003:
        fixer: EventData = {"by": rng.choice(staff), "method": "keypad"}
        return [
            Step(0, "lock.unlocked", who),
            Step(leave, "lock.jammed"),
            Step(leave + rng.uniform(20 * 60, 90 * 60), "lock.locked", fixer),
        ]
    if roll < 0.02:
        late = leave + rng.uniform(11 * 60, 60 * 60)
        return [Step(0, "lock.unlocked", who), Step(late, "lock.locked", {**who, "method": "app"})]
    return [Step(0, "lock.unlocked", who), Step(leave, "lock.locked", who)]


def _long_outage(rng: random.Random, staff: Sequence[str]) -> list[Step]:
    """A device off the network for hours: a dead router over a weekend, a pulled plug."""
    return [Step(0, "~offline"), Step(rng.uniform(2 * 3600, 10 * 3600), "~online")]


def _backfill_profile(profile: KindProfile) -> KindProfile:
    activities = tuple(
        replace(a, episode=_visit_with_door_unlocked)
        if (profile.kind, a.name) == ("door_lock", "visit")
        else a
        for a in profile.activities
    )
    rare = Activity("long_outage", 0.002, _ANY_TIME, _long_outage, lane="link")
    return replace(profile, activities=(*activities, rare))


BACKFILL_PROFILES: Final = tuple(_backfill_profile(p) for p in PROFILES)
"""The live profiles, with visits that leave the door unlocked and rare long outages."""

# Cells as in the simulator (devices.simulator): a few are weak (from the start, or a weak
# replacement); a cell under 20 % is replaced within 12 h to 3 days.
_WEAK_AT_START: Final = 0.03
_WEAK_DRAIN_PER_DAY: Final = (3.0, 8.0)
_REPLACE_BELOW: Final = 20.0
_REPLACE_AFTER_MS: Final = (12 * 3_600_000, 3 * _DAY_MS)
_ROBOT_DOCKED_HOURS: Final = frozenset((22, 23, 0, 1, 2, 3, 4, 5, 6))
_ROBOT_CHARGE_PER_H: Final = 25.0
_ROBOT_DRAIN_PER_H: Final = 4.0
_ROBOT_FLOOR: Final = 35.0
# How long staff take to acknowledge (median, spread, min, max in seconds): an alarm is
# answered within a couple of minutes, an offline device when someone looks at the board.
_ACK_ALARM_S: Final = (90.0, 0.8, 10.0, 20 * 60.0)
_ACK_OFFLINE_S: Final = (10 * 60.0, 1.0, 60.0, 3 * 3600.0)
_ALARM_VISIT_S: Final = (2 * 60.0, 15 * 60.0)
# The reasons the rules give (devices.rules): a device heard again, an alarm pressed.
_SENDING_AGAIN: Final = Reason.of(ReasonCode.SENDING_AGAIN)
_ALARM_PRESSED: Final = Reason.of(ReasonCode.ALARM_PRESSED)


@dataclass(slots=True)
class _State:
    device: SimDevice
    profile: KindProfile
    seed: str
    heartbeat_ms: int
    silence_ms: int  # device_offline opens after this much silence
    offline_severity: str
    offline_reason: Reason | None  # device_offline's, as the rules' watchdog gives it
    phase_ms: int
    fw: str
    rssi_base: int
    battery: float | None
    drain_per_day: float
    replace_at_ms: int | None = None
    counter_day: int = -1
    counter: int = 0
    busy_until_ms: dict[str, int] = field(default_factory=dict)


class History:
    """``n_devices`` devices (ids as :class:`devices.simulator.Fleet` names them) over
    [start, end), one UTC day at a time."""

    def __init__(
        self,
        n_devices: int,
        *,
        start: datetime,
        end: datetime,
        seed: int = 1,
        id_prefix: str = "sim",
        heartbeat_every_s: int = 900,
        catalog: Catalog = DEFAULT_CATALOG,
        profiles: Sequence[KindProfile] = BACKFILL_PROFILES,
    ) -> None:
        if n_devices < 1:
            raise ValueError(f"a fleet needs at least one device, got {n_devices}")
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end need a time zone")
        if end <= start:
            raise ValueError("the history must end after it starts")
        if heartbeat_every_s < 1:
            raise ValueError(f"heartbeat_every_s must be positive, got {heartbeat_every_s}")
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        self.start_ms = (start - epoch) // timedelta(milliseconds=1)
        self.end_ms = (end - epoch) // timedelta(milliseconds=1)
        staff_rng = random.Random(f"carewatch-history:{seed}:staff")  # noqa: S311 -- simulation
        self._staff = tuple(
            f"staff-{n}" for n in staff_rng.sample(range(1000, 10_000), max(8, n_devices // 10))
        )
        counts = _kind_counts(n_devices, profiles)
        width = max(4, len(str(max(counts.values()))))
        self.devices: list[SimDevice] = []
        self._states: list[_State] = []
        for profile in profiles:
            kind = catalog[profile.kind]
            silence = kind.rules.device_offline
            for k in range(counts[profile.kind]):
                device_id = f"{id_prefix}-{profile.short}-{k + 1:0{width}d}"
                if not DEVICE_ID_RE.fullmatch(device_id):
                    raise ValueError(
                        f"id_prefix {id_prefix!r} makes an invalid device id {device_id!r}"
                    )
                device = SimDevice(device_id, profile.kind, _apartment(k))
                key = f"carewatch-history:{seed}:{device_id}"
                rng = random.Random(key)  # noqa: S311 -- simulation, not security
                heartbeat_ms = max(kind.heartbeat_interval_s, heartbeat_every_s) * 1000
                battery, drain = _initial_battery(profile, rng)
                self.devices.append(device)
                self._states.append(
                    _State(
                        device=device,
                        profile=profile,
                        seed=key,
                        heartbeat_ms=heartbeat_ms,
                        silence_ms=(
                            kind.heartbeat_interval_s * 1000 * silence.after_heartbeats
                            if silence is not None
                            else 0
                        ),
                        offline_severity=silence.severity.value if silence is not None else "",
                        offline_reason=(
                            Reason.of(
                                ReasonCode.SILENT,
                                silent_s=kind.heartbeat_interval_s * silence.after_heartbeats,
                                heartbeat_s=kind.heartbeat_interval_s,
                            )
                            if silence is not None
                            else None
                        ),
                        # whole seconds: heartbeat times then format from a table
                        phase_ms=rng.randrange(heartbeat_ms // 1000) * 1000,
                        fw=profile.fw[0] if rng.random() < 0.85 else profile.fw[1],
                        rssi_base=rng.randint(-88, -45),
                        battery=battery,
                        drain_per_day=drain,
                    )
                )

    def days(self) -> Iterator[Day]:
        """The days of [start, end) in order (the first and last may be partial)."""
        day_ms = self.start_ms - self.start_ms % _DAY_MS
        while day_ms < self.end_ms:
            yield self.day(day_ms)
            day_ms += _DAY_MS

    def day(self, day_ms: int) -> Day:
        """One day; call in order (battery and visits carry over midnight)."""
        lo, hi = max(day_ms, self.start_ms), min(day_ms + _DAY_MS, self.end_ms)
        offset_h = _utc_offset_h(day_ms + _DAY_MS // 2)
        rows: list[Row] = []
        alerts: list[AlertRecord] = []
        for state in self._states:
            rng = random.Random(f"{state.seed}:{day_ms}")  # noqa: S311 -- simulation
            outages = self._activities(state, rng, lo, hi, offset_h, rows, alerts)
            self._heartbeats(state, rng, lo, hi, offset_h, outages, rows)
        return Day(day_ms, rows, alerts)

    # --- what a device does in a day ------------------------------------------------------

    def _activities(
        self,
        state: _State,
        rng: random.Random,
        lo: int,
        hi: int,
        offset_h: int,
        rows: list[Row],
        alerts: list[AlertRecord],
    ) -> list[tuple[int, int]]:
        """The day's episodes into ``rows``; returns the outages (start, end) in ms."""
        starts: list[tuple[int, int]] = []  # (ms, activity index)
        span = hi - lo
        for a, activity in enumerate(state.profile.activities):
            # Thinning, as the live simulator: candidates at the peak rate, each kept with
            # probability weight(local hour) / peak weight.
            peak = max(activity.hourly)
            mean = sum(activity.hourly) / 24
            expected = activity.per_day * peak / mean * span / _DAY_MS
            for _ in range(_poisson(rng, expected)):
                at = lo + rng.randrange(span)
                hour = (at // 3_600_000 + offset_h) % 24
                if rng.random() * peak < activity.hourly[hour]:
                    starts.append((at, a))
        starts.sort()
        outages: list[tuple[int, int]] = []
        for at, a in starts:
            activity = state.profile.activities[a]
            steps = activity.episode(rng, self._staff)
            busy = state.busy_until_ms.get(activity.lane, 0)
            start = at if busy < at else busy + rng.randrange(30_000, 300_000)
            state.busy_until_ms[activity.lane] = start + round(max(s.after_s for s in steps) * 1000)
            if activity.lane == "link":
                end = start + round(steps[-1].after_s * 1000)
                outages.append((start, end))
                self._offline_alert(state, rng, start, end, alerts)
                continue
            for step in steps:
                t = start + round(step.after_s * 1000)
                if t >= self.end_ms:
                    # An episode that would run past the end is cut there: the history is
                    # [start, end), and the rollups are rebuilt for exactly that range.
                    continue
                rows.append(self._row(state, t, step.type, orjson.dumps(step.data).decode()))
                if step.type == "alarm.pressed":
                    cancelled = next((s for s in steps if s.type == "alarm.cancelled"), None)
                    self._alarm_alert(state, rng, t, cancelled, start, alerts)
        return outages

    def _heartbeats(
        self,
        state: _State,
        rng: random.Random,
        lo: int,
        hi: int,
        offset_h: int,
        outages: list[tuple[int, int]],
        rows: list[Row],
    ) -> None:
        # The hot loop of the backfill (98 % of its rows): no method calls but the rare ones.
        step = state.heartbeat_ms
        first = lo - (lo - state.phase_ms) % step
        if first < lo:
            first += step
        day = lo // _DAY_MS
        if state.counter_day != day:
            state.counter_day, state.counter = day, 0
        n = state.counter
        prefix = f"h{day:x}-"
        device_id = state.device.id
        # rssi wobbles by a few dBm around the device's own level; fw is the device's.
        tails = [
            f',"rssi":{state.rssi_base + rng.randint(-3, 3)},"fw":"{state.fw}"}}' for _ in range(7)
        ]
        append = rows.append
        cell = state.profile.battery == "cell"
        robot = state.profile.battery == "rechargeable"
        level = state.battery
        for t in range(first, hi, step):
            if outages and any(s <= t < e for s, e in outages):
                continue
            n += 1
            tail = tails[n % 7]
            if level is None:
                append((t, device_id, f"{prefix}{n}", "heartbeat", "{" + tail[1:]))
                continue
            if cell:
                if state.replace_at_ms is not None and t >= state.replace_at_ms:
                    self._replace_cell(state, t)
                    level = 100.0
                level = max(2.0, level - state.drain_per_day * step / _DAY_MS)
                if level < _REPLACE_BELOW and state.replace_at_ms is None:
                    staff = random.Random(f"{state.seed}:replace:{t}")  # noqa: S311 -- simulation
                    state.replace_at_ms = t + staff.randrange(*_REPLACE_AFTER_MS)
            elif robot:  # docked and charging at night, playing (and draining) in the day
                hours = step / 3_600_000
                if (t // 3_600_000 + offset_h) % 24 in _ROBOT_DOCKED_HOURS:
                    level = min(100.0, level + _ROBOT_CHARGE_PER_H * hours)
                else:
                    level = max(_ROBOT_FLOOR, level - _ROBOT_DRAIN_PER_H * hours)
            append((t, device_id, f"{prefix}{n}", "heartbeat", f'{{"battery":{round(level)}{tail}'))
        state.counter = n
        state.battery = level

    @staticmethod
    def _replace_cell(state: _State, t: int) -> None:
        """A fresh cell; now and then a weak one, which will be low again within weeks."""
        fresh = random.Random(f"{state.seed}:cell:{t}")  # noqa: S311 -- simulation
        weak = fresh.random() < _WEAK_AT_START
        state.drain_per_day = fresh.uniform(
            *(_WEAK_DRAIN_PER_DAY if weak else state.profile.drain_per_day)
        )
        state.replace_at_ms = None

    @staticmethod
    def _row(state: _State, t: int, type_: str, data: str) -> Row:
        day = t // _DAY_MS
        if day != state.counter_day:
            state.counter_day, state.counter = day, 0
        state.counter += 1
        return (t, state.device.id, f"h{day:x}-{state.counter}", type_, data)

    # --- alerts ----------------------------------------------------------------------------

    def _offline_alert(
        self, state: _State, rng: random.Random, start: int, end: int, alerts: list[AlertRecord]
    ) -> None:
        """device_offline, if the silence outlasted the kind's limit (heartbeats stop at
        ``start``; the watchdog notices ``silence_ms`` after the last one)."""
        if not state.silence_ms or state.offline_reason is None or end - start <= state.silence_ms:
            return
        opened = start + state.silence_ms
        ack = opened + round(_lognormal(rng, *_ACK_OFFLINE_S) * 1000)
        by = rng.choice(self._staff)
        # Cleared when the device came back; an acknowledged alert then resolves itself, an
        # unacknowledged one waits for the acknowledgement (contract: Alerts).
        resolved, resolved_by = (end, "system") if ack <= end else (ack, by)
        alerts.append(
            AlertRecord(
                state.device.id, "device_offline", state.offline_severity, opened, ack, by,
                resolved, resolved_by, end, state.offline_reason, _SENDING_AGAIN,
            )
        )  # fmt: skip

    def _alarm_alert(
        self,
        state: _State,
        rng: random.Random,
        pressed: int,
        cancelled: Step | None,
        start: int,
        alerts: list[AlertRecord],
    ) -> None:
        ack = pressed + round(_lognormal(rng, *_ACK_ALARM_S) * 1000)
        by = rng.choice(self._staff)
        resolved = ack + round(rng.uniform(*_ALARM_VISIT_S) * 1000)
        cleared = None if cancelled is None else start + round(cancelled.after_s * 1000)
        alerts.append(
            AlertRecord(
                state.device.id, "alarm_pressed", "critical", pressed, ack, by, resolved, by,
                cleared, _ALARM_PRESSED, None if cleared is None else CANCELLED_BY_RESIDENT,
            )
        )  # fmt: skip


def _initial_battery(profile: KindProfile, rng: random.Random) -> tuple[float | None, float]:
    if profile.battery == "cell":
        if rng.random() < _WEAK_AT_START:
            return rng.uniform(20.5, 28.0), rng.uniform(*_WEAK_DRAIN_PER_DAY)
        return rng.uniform(30.0, 100.0), rng.uniform(*profile.drain_per_day)
    if profile.battery == "rechargeable":
        return rng.uniform(60.0, 100.0), 0.0
    return None, 0.0


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method; the means here are a few dozen at most)."""
    if mean <= 0:
        return 0
    if mean > 50:  # normal approximation, for long spans of a busy activity
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _utc_offset_h(ms: int) -> int:
    """Stockholm's whole-hour UTC offset at ``ms`` (the day's rhythm follows local time)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(LOCAL_TZ)
    offset = moment.utcoffset()
    return 0 if offset is None else int(offset.total_seconds()) // 3600
