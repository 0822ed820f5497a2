"""A seeded, pure model of a fleet of welfare-technology devices: what they publish, and when.

``Fleet`` knows nothing about MQTT clients, sockets or clocks: it is given simulated time
(``advance(until)``) and hands back the messages its devices would have published by then, in
time order, as ``Outgoing`` values. Publishing them is the job of an edge (``tools.simulate``
for live traffic, the benchmark for canned payloads).

How the fleet behaves is data, in ``PROFILES``: per kind its share of the fleet, its battery and
firmware, and its *activities*. An activity is a Poisson process whose rate follows a 24-hour
profile in Europe/Stockholm local time (home-care visits peak at breakfast, lunch and evening;
camera checks happen at night; the robot is played with in the daytime) and which, when it
fires, plays an *episode*: a short script of events at offsets (unlocked ... locked minutes
later; check_started ... check_ended). Episodes on one *lane* of a device never overlap: a door
has one visitor at a time, but a connectivity outage can happen in the middle of a visit, and
then the device holds its events and sends them when it is back, with their original ``ts``.

Determinism: each device draws from its own random stream, seeded from the fleet seed and the
device id, and every draw happens while the device's scheduled actions are processed in
simulated-time order. So a seed gives the same messages however ``advance`` is chunked, and
when a device sends something does not depend on how many others there are.

A fleet can carry on from what is stored: ``resume`` gives a device the battery level and
firmware it last reported (the backfill's last heartbeat), so a demo that starts after its
backfill shows no jump of every battery; and ``nights`` (:class:`devices.simulated_nights.
NightSchedule`) makes the planned cameras check when their residences' plans say, instead of
at random, with the night's late, missed and not-seen checks and the patrol's lock visits.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Final, Literal, Protocol, cast
from zoneinfo import ZoneInfo

import orjson

from devices.catalog import DEFAULT_CATALOG, Catalog
from devices.envelope import TOPIC_PREFIX
from devices.ids import DEVICE_ID_RE
from devices.supervision import local_instant, night_of

__all__ = [
    "GO_OFFLINE",
    "GO_ONLINE",
    "LOCAL_TZ",
    "PROFILES",
    "Activity",
    "Episode",
    "EventData",
    "Fleet",
    "KindProfile",
    "NightEvents",
    "Outgoing",
    "Resume",
    "SimDevice",
    "Step",
    "events_topic",
    "status_topic",
    "without_random_checks",
]

# Devices are placed in Swedish care homes and report local wall-clock time; the day-and-night
# rhythm follows the local clock too (summer time included).
LOCAL_TZ: Final = ZoneInfo("Europe/Stockholm")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS_PER_DAY: Final = 86_400_000
# The broker publishes a device's Last Will 1.5 keep-alives after it went silent; devices here
# use a 60 s keep-alive.
_WILL_DELAY_MS: Final = 90_000

JsonScalar = str | int | float | bool
EventData = dict[str, JsonScalar]


def events_topic(device_id: str) -> str:
    """The topic a device publishes its events on."""
    return f"{TOPIC_PREFIX}{device_id}/events"


def status_topic(device_id: str) -> str:
    """The topic of a device's retained online/offline status (and Last Will)."""
    return f"{TOPIC_PREFIX}{device_id}/status"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One MQTT message a simulated device publishes (always QoS 1) at simulated time ``at``."""

    topic: str
    payload: bytes
    at: datetime
    retain: bool = False


@dataclass(frozen=True, slots=True)
class SimDevice:
    """A simulated device as the registry knows it: placed by a location label, never a name."""

    id: str
    kind: str
    label: str


@dataclass(frozen=True, slots=True)
class Resume:
    """What a device last reported, for a fleet that carries on from it (None: draw afresh)."""

    battery: int | None = None
    fw: str | None = None


# --- the behaviour table ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One event of an episode, ``after_s`` seconds after the episode started."""

    after_s: float
    type: str
    data: EventData = field(default_factory=dict)


# Pseudo event types an episode uses to take its device off the network and back; they never
# leave the simulator (real event types contain a dot and no tilde).
GO_OFFLINE: Final = "~offline"
GO_ONLINE: Final = "~online"

Episode = Callable[[random.Random, Sequence[str]], list[Step]]
"""Plays one occurrence of an activity: (the device's random stream, the staff ids) -> steps."""


@dataclass(frozen=True, slots=True)
class Activity:
    """Something a device does now and then, at a rate that follows the local time of day."""

    name: str
    per_day: float  # mean occurrences per device per simulated day
    hourly: tuple[float, ...]  # 24 relative weights, index = local hour
    episode: Episode
    # Episodes on one lane of a device never overlap ("use": the door, the camera, the robot;
    # "link": its network connection).
    lane: Literal["use", "link"] = "use"

    def __post_init__(self) -> None:
        if len(self.hourly) != 24 or min(self.hourly) < 0 or max(self.hourly) <= 0:
            raise ValueError(f"activity {self.name}: hourly needs 24 non-negative weights")
        if self.per_day <= 0:
            raise ValueError(f"activity {self.name}: per_day must be positive (drop it instead)")


@dataclass(frozen=True, slots=True)
class KindProfile:
    """How the devices of one kind behave."""

    kind: str
    short: str  # in device ids: sim-lock-0001
    share: float  # of the fleet
    battery: Literal["mains", "cell", "rechargeable"]
    drain_per_day: tuple[float, float]  # % a day, range for a healthy cell
    fw: tuple[str, str]  # (current, previous) firmware: a fleet is never fully up to date
    activities: tuple[Activity, ...]


def _hours(default: float, **ranges: float) -> tuple[float, ...]:
    """24 weights: ``default``, except ``h7=2.0`` (07) or ``h22_5=1.5`` (22 to 05 inclusive)."""
    weights = [default] * 24
    for key, weight in ranges.items():
        first, _, last = key[1:].partition("_")
        start, end = int(first), int(last or first)
        hour = start
        while True:
            weights[hour] = weight
            if hour == end:
                break
            hour = (hour + 1) % 24
    return tuple(weights)


# Home-care visits: breakfast, lunch, afternoon and evening rounds, and a thin night patrol.
_HOME_CARE_VISITS = _hours(
    0.15, h6=0.6, h7_8=2.4, h9=1.6, h10=1.0, h11_12=1.7, h13_15=0.9, h16_17=1.5, h18_19=1.2,
    h20_21=1.4, h22=0.6, h23=0.3,
)  # fmt: skip
# Camera supervision (nattillsyn) replaces night visits: 22-06, rarely on request in daytime.
_NIGHT_SUPERVISION = _hours(0.02, h21=0.5, h22=2.0, h23_3=1.5, h4_5=1.2, h6=0.5)
_DAYTIME = _hours(0.05, h7=0.6, h8_11=1.6, h12=1.0, h13_17=1.4, h18_20=1.0, h21=0.4)
_AWAKE = _hours(0.3, h6=0.6, h7_21=1.0, h22_23=0.6)
_ANY_TIME = _hours(1.0)

_METHODS: Final = (("app", 0.55), ("tag", 0.30), ("keypad", 0.15))
_OUTCOMES: Final = (("seen", 0.965), ("not_seen", 0.025), ("technical_failure", 0.010))
_ROBOT_MODES: Final = (("touch", 0.55), ("voice", 0.25), ("motion", 0.20))
_ROBOT_FAULTS: Final = ("E04", "E11", "E23", "E42")


def _pick(rng: random.Random, table: Sequence[tuple[str, float]]) -> str:
    x = rng.random() * sum(weight for _, weight in table)
    for value, weight in table:
        x -= weight
        if x < 0:
            return value
    return table[-1][0]


def _lognormal(rng: random.Random, median: float, spread: float, low: float, high: float) -> float:
    # Human durations are skewed: most short, a few long. Clamped so a tail never looks broken.
    return min(high, max(low, rng.lognormvariate(0.0, spread) * median))


def _lock_visit(rng: random.Random, staff: Sequence[str]) -> list[Step]:
    """A home-care visit: in and lock behind, the visit, out and lock (or forget, or jam)."""
    by = rng.choice(staff)
    method = _pick(rng, _METHODS)
    who: EventData = {"by": by, "method": method}
    enter_locked = rng.uniform(20, 180)
    leave = enter_locked + _lognormal(rng, 15 * 60, 0.5, 4 * 60, 75 * 60)
    steps = [
        Step(0, "lock.unlocked", who),
        Step(enter_locked, "lock.locked", who),
        Step(leave, "lock.unlocked", who),
    ]
    roll = rng.random()
    if roll < 0.003:
        # The bolt jams on the way out; a colleague or technician gets it locked later.
        steps.append(Step(leave + rng.uniform(5, 40), "lock.jammed"))
        fixer: EventData = {"by": rng.choice(staff), "method": "keypad"}
        steps.append(Step(leave + rng.uniform(20 * 60, 90 * 60), "lock.locked", fixer))
    elif roll < 0.023:
        # Forgotten: the door stays unlocked past the 10-minute rule until someone locks it
        # remotely from the app.
        steps.append(
            Step(leave + rng.uniform(11 * 60, 60 * 60), "lock.locked", {"by": by, "method": "app"})
        )
    else:
        steps.append(Step(leave + rng.uniform(5, 120), "lock.locked", who))
    return steps


def _lock_access_denied(rng: random.Random, staff: Sequence[str]) -> list[Step]:
    """An expired or foreign tag held to the reader (the credential id, never a person)."""
    return [Step(0, "lock.access_denied", {"credential": f"tag-{rng.getrandbits(24):06x}"})]


def _camera_supervision(rng: random.Random, staff: Sequence[str]) -> list[Step]:
    """A scheduled night check; a check that does not see the resident is retried once."""
    steps: list[Step] = []
    by = rng.choice(staff)
    at = 0.0
    for attempt in range(2):
        duration_s = round(_lognormal(rng, 35, 0.45, 8, 240), 1)
        outcome = (
            _pick(rng, _OUTCOMES)
            if attempt == 0
            else _pick(rng, (("seen", 0.85), ("not_seen", 0.15)))
        )
        steps.append(Step(at, "camera.check_started", {"by": by}))
        steps.append(
            Step(
                at + duration_s,
                "camera.check_ended",
                {"by": by, "duration_s": duration_s, "outcome": outcome},
            )
        )
        if outcome == "seen":
            break
        at += duration_s + rng.uniform(120, 360)
    return steps


def _camera_stream_lost(rng: random.Random, staff: Sequence[str]) -> list[Step]:
    return [
        Step(0, "camera.stream_lost"),
        Step(_lognormal(rng, 4 * 60, 0.9, 20, 45 * 60), "camera.stream_restored"),
    ]


def _camera_privacy(rng: random.Random, staff: Sequence[str]) -> list[Step]:
    """Privacy mode while the resident has company (a visit, a relative)."""
    return [
        Step(0, "camera.privacy_on"),
        Step(_lognormal(rng, 30 * 60, 0.5, 5 * 60, 3 * 3600), "camera.privacy_off"),
    ]


def _robot_interaction(rng: random.Random, staff: Sequence[str]) -> list[Step]:
    mode = _pick(rng, _ROBOT_MODES)
    duration_s = round(_lognormal(rng, 60, 0.8, 3, 1800))
    return [Step(0, "robot.interaction", {"mode": mode, "duration_s": duration_s})]


def _robot_fault(rng: random.Random, staff: Sequence[str]) -> list[Step]:
    return [Step(0, "robot.fault", {"code": rng.choice(_ROBOT_FAULTS)})]


def _alarm(rng: random.Random, staff: Sequence[str]) -> list[Step]:
    """A press of the alarm button; a third of them the resident cancels (pressed by mistake)."""
    steps = [Step(0, "alarm.pressed")]
    if rng.random() < 0.3:
        steps.append(Step(rng.uniform(8, 120), "alarm.cancelled"))
    return steps


def _single(event_type: str) -> Episode:
    def episode(rng: random.Random, staff: Sequence[str]) -> list[Step]:
        return [Step(0, event_type)]

    return episode


def _outage(rng: random.Random, staff: Sequence[str]) -> list[Step]:
    """The device loses its network (Wi-Fi, a router reboot) and comes back."""
    return [Step(0, GO_OFFLINE), Step(_lognormal(rng, 8 * 60, 0.9, 30, 2 * 3600), GO_ONLINE)]


# Rates are per device per day. Heartbeats are 98 % of the volume: measured over a simulated
# week, a device sends per day (heartbeats + other events + 1 % resends) a lock 288 + 16.4 + 3,
# a camera 1440 + 6.7 + 14.4, an alarm button 24 + 0.2 + 0.2, a robot 96 + 10.2 + 1.1; so
# 1,000 devices in these shares publish about 6.0 messages/s at speed 1.
PROFILES: Final[tuple[KindProfile, ...]] = (
    KindProfile(
        kind="door_lock",
        short="lock",
        share=0.45,
        battery="cell",
        drain_per_day=(0.2, 0.5),  # a set of AA cells lasts six months to a year and a half
        fw=("2.4.1", "2.3.7"),
        activities=(
            Activity("visit", 4.0, _HOME_CARE_VISITS, _lock_visit),
            Activity("access_denied", 0.05, _HOME_CARE_VISITS, _lock_access_denied),
            Activity("tamper", 0.0005, _ANY_TIME, _single("lock.tamper")),
            Activity("outage", 0.01, _ANY_TIME, _outage, lane="link"),
        ),
    ),
    KindProfile(
        kind="safety_camera",
        short="cam",
        share=0.25,
        battery="mains",
        drain_per_day=(0.0, 0.0),
        fw=("5.12.0", "5.11.2"),
        activities=(
            Activity("supervision", 3.0, _NIGHT_SUPERVISION, _camera_supervision),
            Activity("stream_lost", 0.03, _ANY_TIME, _camera_stream_lost),
            Activity("privacy", 0.2, _DAYTIME, _camera_privacy),
            Activity("tamper", 0.0005, _ANY_TIME, _single("camera.tamper")),
            Activity("outage", 0.02, _ANY_TIME, _outage, lane="link"),
        ),
    ),
    KindProfile(
        kind="alarm_button",
        short="alarm",
        share=0.20,
        battery="cell",
        drain_per_day=(0.05, 0.15),  # a coin cell, one heartbeat an hour
        fw=("3.0.5", "2.9.9"),
        activities=(
            Activity("alarm", 0.15, _AWAKE, _alarm),
            Activity("outage", 0.005, _ANY_TIME, _outage, lane="link"),
        ),
    ),
    KindProfile(
        kind="companion_robot",
        short="robot",
        share=0.10,
        battery="rechargeable",
        drain_per_day=(0.0, 0.0),
        fw=("1.8.3", "1.8.0"),
        activities=(
            Activity("interaction", 10.0, _DAYTIME, _robot_interaction),
            Activity("fault", 0.01, _DAYTIME, _robot_fault),
            Activity("outage", 0.03, _ANY_TIME, _outage, lane="link"),
        ),
    ),
)

# Battery behaviour of cells (locks, alarm buttons). A few cells are weak from the start and a
# few age into it, so a run of a simulated day or two shows battery_low alerts; staff replace
# a low battery within days and the level jumps back to 100.
_WEAK_AT_START: Final = 0.03
_AGEING_PER_DAY: Final = 0.002
_WEAK_DRAIN_PER_DAY: Final = (3.0, 8.0)
_REPLACE_BELOW: Final = 20.0
_REPLACE_AFTER_S: Final = (12 * 3600, 3 * 86_400)
# A robot cat docks itself at night and leaves the dock in the morning.
_ROBOT_DOCKED_HOURS: Final = frozenset((22, 23, 0, 1, 2, 3, 4, 5, 6))
_ROBOT_CHARGE_PER_H: Final = 25.0
_ROBOT_DRAIN_PER_H: Final = 4.0
_ROBOT_FLOOR: Final = 35.0  # it goes back to its dock before the battery runs low
# Heartbeat clocks drift and devices schedule loosely: +-2 % of the interval.
_HEARTBEAT_JITTER: Final = 0.02
_RESEND_DELAY_S: Final = (1.0, 20.0)


class NightEvents(Protocol):
    """The planned night checks a fleet plays (devices.simulated_nights.NightSchedule)."""

    @property
    def tz(self) -> tzinfo:
        """The time zone of the plans' check times."""
        ...

    @property
    def cameras(self) -> frozenset[str]:
        """The cameras that check when the plans say, and never at random."""
        ...

    def events(self, night: date) -> Iterable[tuple[datetime, str, str, EventData]]:
        """The night's events: (when, device id, type, data)."""
        ...


def without_random_checks(profile: KindProfile) -> KindProfile:
    """``profile`` without the camera's random night checks: a camera under a supervision plan
    checks when the plan says (devices.simulated_nights), not at random."""
    if profile.kind != "safety_camera":
        return profile
    return replace(
        profile, activities=tuple(a for a in profile.activities if a.name != "supervision")
    )


# --- the fleet ------------------------------------------------------------------------------


def _to_ms(moment: datetime) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: the simulator only takes aware datetimes")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _from_ms(ms: int) -> datetime:
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(LOCAL_TZ)


@dataclass(slots=True)
class _DeviceState:
    device: SimDevice
    profile: KindProfile
    rng: random.Random
    events_topic: str
    status_topic: str
    heartbeat_ms: int
    boot: str
    fw: str
    rssi_base: int
    battery: float | None
    drain_per_day: float
    battery_at_ms: int
    replace_at_ms: int | None = None
    counter: int = 0
    busy_until_ms: dict[str, int] = field(default_factory=dict)
    offline: bool = False
    outage: int = 0  # which outage we are in, so a late Last Will of an old one is ignored
    held: list[bytes] = field(default_factory=list)  # events sent while offline


# Scheduled actions in the heap: (due_ms, seq, op, device index, argument).
_HEARTBEAT: Final = 0
_ARRIVAL: Final = 1  # argument: activity index (a candidate arrival, thinned by the hour)
_STEP: Final = 2  # argument: Step
_RESEND: Final = 3  # argument: the payload bytes
_WILL: Final = 4  # argument: outage number
_NIGHT: Final = 5  # argument: the night (its evening's date) whose planned checks to schedule
# A night's checks are scheduled this long before its noon: a window opens up to 3 h before
# its planned time (devices.supervision.PlanVersion).
_NIGHT_AHEAD: Final = timedelta(hours=4)

_Action = tuple[int, int, int, int, object]


class Fleet:
    """N simulated devices of every kind, deterministic for a seed; time moves by ``advance``."""

    def __init__(
        self,
        n_devices: int,
        *,
        seed: int = 1,
        start: datetime,
        id_prefix: str = "sim",
        resend_rate: float = 0.01,
        catalog: Catalog = DEFAULT_CATALOG,
        profiles: Sequence[KindProfile] = PROFILES,
        resume: Mapping[str, Resume] | None = None,
        nights: NightEvents | None = None,
        nights_after: datetime | None = None,
    ) -> None:
        """``catalog`` gives the heartbeat intervals of the ``profiles``' kinds; ``resume``
        (by device id) what devices last reported; ``nights`` the planned night checks, whose
        events are played from ``start`` on, or from just after ``nights_after`` (what the
        database already holds of them, from a backfill or an earlier run that ran ahead)."""
        if n_devices < 1:
            raise ValueError(f"a fleet needs at least one device, got {n_devices}")
        if not 0.0 <= resend_rate <= 1.0:
            raise ValueError(f"resend_rate must be between 0 and 1, got {resend_rate}")
        self._now_ms = _to_ms(start)
        self._start_ms = self._now_ms
        self._resend_rate = resend_rate
        self._heap: list[_Action] = []
        self._seq = 0
        if len({p.kind for p in profiles}) != len(profiles):
            raise ValueError("profiles: one profile per kind")
        if missing := [p.kind for p in profiles if p.kind not in catalog]:
            raise ValueError(f"the catalog has no kind {', '.join(missing)}")

        counts = _kind_counts(n_devices, profiles)
        width = max(4, len(str(max(counts.values()))))
        # A boot marker makes event ids unique per device across simulator runs, as a real
        # device's persistent counter would: a rerun with the same seed restarts the counter.
        boot = f"{self._start_ms // 1000:x}"
        fleet_rng = random.Random(f"carewatch-sim:{seed}:staff")  # noqa: S311 -- simulation, not security
        self._staff = tuple(
            f"staff-{n}" for n in fleet_rng.sample(range(1000, 10_000), max(8, n_devices // 10))
        )

        self.devices: list[SimDevice] = []
        self._states: list[_DeviceState] = []
        self._nights = nights
        self._nights_from_ms = self._start_ms if nights_after is None else _to_ms(nights_after) + 1
        planned = nights.cameras if nights is not None else frozenset()
        resumed = resume or {}
        for profile in profiles:
            for k in range(counts[profile.kind]):
                device_id = f"{id_prefix}-{profile.short}-{k + 1:0{width}d}"
                if not DEVICE_ID_RE.fullmatch(device_id):
                    raise ValueError(
                        f"id_prefix {id_prefix!r} makes an invalid device id {device_id!r}"
                    )
                device = SimDevice(device_id, profile.kind, _apartment(k))
                rng = random.Random(f"carewatch-sim:{seed}:{device_id}")  # noqa: S311 -- simulation
                self.devices.append(device)
                self._states.append(
                    _new_state(
                        device,
                        without_random_checks(profile) if device_id in planned else profile,
                        rng,
                        catalog[profile.kind].heartbeat_interval_s,
                        boot,
                        self._start_ms,
                        resumed.get(device_id),
                    )
                )
        self._index = {device.id: index for index, device in enumerate(self.devices)}

        for index, state in enumerate(self._states):
            # Random phases, so that the fleet does not send all its heartbeats at once.
            self._push(
                self._now_ms + state.rng.randrange(state.heartbeat_ms), _HEARTBEAT, index, None
            )
            for a, activity in enumerate(state.profile.activities):
                self._push(self._next_arrival(state, activity, self._now_ms), _ARRIVAL, index, a)
        if nights is not None:
            # Last night too: a retry or a late check of it may still be to come.
            self._push(self._now_ms, _NIGHT, 0, night_of(start, nights.tz) - timedelta(days=1))

    @property
    def now(self) -> datetime:
        """The simulated time up to which messages have been handed out."""
        return _from_ms(self._now_ms)

    def birth(self) -> list[Outgoing]:
        """The retained ``online`` status of every device, as each publishes it on connecting."""
        at = _from_ms(self._start_ms)
        return [Outgoing(s.status_topic, b"online", at, retain=True) for s in self._states]

    def advance(self, until: datetime) -> list[Outgoing]:
        """Every message due after the previous call and up to ``until``, in time order."""
        until_ms = _to_ms(until)
        out: list[Outgoing] = []
        heap = self._heap
        while heap and heap[0][0] <= until_ms:
            due_ms, _, op, index, arg = heapq.heappop(heap)
            state = self._states[index]
            if op == _HEARTBEAT:
                self._heartbeat(state, index, due_ms, out)
            elif op == _ARRIVAL:
                self._arrival(state, index, cast(int, arg), due_ms)
            elif op == _STEP:
                self._step(state, index, cast(Step, arg), due_ms, out)
            elif op == _RESEND:
                self._send(state, cast(bytes, arg), _from_ms(due_ms), out)
            elif op == _WILL and state.offline and arg == state.outage:
                out.append(Outgoing(state.status_topic, b"offline", _from_ms(due_ms), retain=True))
            elif op == _NIGHT:
                self._night(cast(date, arg), due_ms)
        self._now_ms = max(self._now_ms, until_ms)
        return out

    # --- scheduling ----------------------------------------------------------------------

    def _push(self, due_ms: int, op: int, index: int, arg: object) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due_ms, self._seq, op, index, arg))

    @staticmethod
    def _next_arrival(state: _DeviceState, activity: Activity, now_ms: int) -> int:
        # Thinning (Lewis & Shedler): candidates at the peak rate, each kept with probability
        # weight(hour) / peak weight, give a Poisson process whose rate follows the profile.
        mean = sum(activity.hourly) / 24
        peak_per_ms = activity.per_day * max(activity.hourly) / mean / _MS_PER_DAY
        return now_ms + 1 + int(state.rng.expovariate(peak_per_ms))

    def _arrival(self, state: _DeviceState, index: int, a: int, due_ms: int) -> None:
        activity = state.profile.activities[a]
        self._push(self._next_arrival(state, activity, due_ms), _ARRIVAL, index, a)
        weight = activity.hourly[_from_ms(due_ms).hour]
        if state.rng.random() * max(activity.hourly) >= weight:
            return
        steps = activity.episode(state.rng, self._staff)
        busy_until = state.busy_until_ms.get(activity.lane, 0)
        start_ms = due_ms
        if busy_until >= due_ms:
            # Someone is already at the door: this visit starts a little after that one ends.
            start_ms = busy_until + state.rng.randrange(30_000, 300_000)
        for step in steps:
            self._push(start_ms + round(step.after_s * 1000), _STEP, index, step)
        last_s = max(step.after_s for step in steps)
        state.busy_until_ms[activity.lane] = start_ms + round(last_s * 1000)

    def _night(self, night: date, due_ms: int) -> None:
        """Schedules the events of ``night``'s planned checks (those of its own devices not
        played yet: see ``nights_after``), and the next night."""
        assert self._nights is not None
        for at, device_id, event_type, data in self._nights.events(night):
            index = self._index.get(device_id)
            at_ms = _to_ms(at)
            if index is not None and at_ms >= self._nights_from_ms:
                self._push(at_ms, _STEP, index, Step(0, event_type, data))
        following = night + timedelta(days=1)
        opens = local_instant(following, time(12, 0), self._nights.tz) - _NIGHT_AHEAD
        self._push(max(due_ms, _to_ms(opens)), _NIGHT, 0, following)

    # --- what a device sends ---------------------------------------------------------------

    def _heartbeat(self, state: _DeviceState, index: int, due_ms: int, out: list[Outgoing]) -> None:
        jitter = 1.0 + state.rng.uniform(-_HEARTBEAT_JITTER, _HEARTBEAT_JITTER)
        self._push(due_ms + round(state.heartbeat_ms * jitter), _HEARTBEAT, index, None)
        data: EventData = {}
        battery = _update_battery(state, due_ms)
        if battery is not None:
            data["battery"] = battery
        data["rssi"] = state.rssi_base + state.rng.randint(-3, 3)
        data["fw"] = state.fw
        if not state.offline:  # a device without network skips its heartbeats; none are held
            self._event(state, index, "heartbeat", data, due_ms, out)

    def _step(
        self, state: _DeviceState, index: int, step: Step, due_ms: int, out: list[Outgoing]
    ) -> None:
        if step.type == GO_OFFLINE:
            state.offline = True
            state.outage += 1
            self._push(due_ms + _WILL_DELAY_MS, _WILL, index, state.outage)
        elif step.type == GO_ONLINE:
            state.offline = False
            at = _from_ms(due_ms)
            out.append(Outgoing(state.status_topic, b"online", at, retain=True))
            out.extend(Outgoing(state.events_topic, payload, at) for payload in state.held)
            state.held.clear()
        else:
            self._event(state, index, step.type, step.data, due_ms, out)

    def _event(
        self,
        state: _DeviceState,
        index: int,
        event_type: str,
        data: EventData,
        due_ms: int,
        out: list[Outgoing],
    ) -> None:
        state.counter += 1
        at = _from_ms(due_ms)
        envelope = {
            "v": 1,
            "id": f"{state.boot}-{state.counter:07d}",
            "ts": at.isoformat(timespec="milliseconds"),
            "type": event_type,
            "data": data,
        }
        payload = orjson.dumps(envelope)
        self._send(state, payload, at, out)
        if state.rng.random() < self._resend_rate:
            # A flaky device that missed the PUBACK sends the very same bytes again.
            delay_s = state.rng.uniform(*_RESEND_DELAY_S)
            self._push(due_ms + round(delay_s * 1000), _RESEND, index, payload)

    @staticmethod
    def _send(state: _DeviceState, payload: bytes, at: datetime, out: list[Outgoing]) -> None:
        if state.offline:
            state.held.append(payload)
        else:
            out.append(Outgoing(state.events_topic, payload, at))


def _kind_counts(n_devices: int, profiles: Sequence[KindProfile]) -> dict[str, int]:
    """Devices per kind by ``share`` (largest remainder), at least one of each when n allows."""
    total = sum(p.share for p in profiles)
    exact = [(p.kind, n_devices * p.share / total) for p in profiles]
    counts = {kind: int(x) for kind, x in exact}
    by_remainder = sorted(exact, key=lambda kx: kx[1] - int(kx[1]), reverse=True)
    for kind, _ in by_remainder[: n_devices - sum(counts.values())]:
        counts[kind] += 1
    for kind in counts:
        if counts[kind] == 0 and n_devices >= len(profiles):
            richest = max(counts, key=lambda k: counts[k])
            counts[richest] -= 1
            counts[kind] = 1
    return counts


def _apartment(k: int) -> str:
    # Swedish apartment numbers: floor (10 = entrance level) then the door, 20 doors a floor.
    # Device k of every kind sits in the same apartment, so Lgh 1001 has a lock, a camera, ...
    return f"Lgh {1000 + (k // 20) * 100 + k % 20 + 1}"


def _new_state(
    device: SimDevice,
    profile: KindProfile,
    rng: random.Random,
    heartbeat_s: int,
    boot: str,
    start_ms: int,
    resume: Resume | None = None,
) -> _DeviceState:
    battery: float | None = None
    drain = 0.0
    if profile.battery == "cell":
        if rng.random() < _WEAK_AT_START:
            battery, drain = rng.uniform(20.5, 28.0), rng.uniform(*_WEAK_DRAIN_PER_DAY)
        else:
            battery, drain = rng.uniform(30.0, 100.0), rng.uniform(*profile.drain_per_day)
    elif profile.battery == "rechargeable":
        battery = rng.uniform(60.0, 100.0)
    fw = profile.fw[0] if rng.random() < 0.85 else profile.fw[1]
    if resume is not None:
        # Carry on from the last report: a level stored for a device that has a battery, the
        # firmware it runs (the drain is drawn afresh: a cell's rate was never reported).
        if battery is not None and resume.battery is not None:
            battery = float(resume.battery)
        fw = resume.fw or fw
    return _DeviceState(
        device=device,
        profile=profile,
        rng=rng,
        events_topic=events_topic(device.id),
        status_topic=status_topic(device.id),
        heartbeat_ms=heartbeat_s * 1000,
        boot=boot,
        fw=fw,
        rssi_base=rng.randint(-88, -45),
        battery=battery,
        drain_per_day=drain,
        battery_at_ms=start_ms,
    )


def _update_battery(state: _DeviceState, now_ms: int) -> int | None:
    """Moves the battery to ``now_ms`` and returns the level a heartbeat reports."""
    if state.battery is None:
        return None
    elapsed_ms = now_ms - state.battery_at_ms
    state.battery_at_ms = now_ms
    if state.profile.battery == "rechargeable":
        hours = elapsed_ms / 3_600_000
        if _from_ms(now_ms).hour in _ROBOT_DOCKED_HOURS:
            state.battery = min(100.0, state.battery + _ROBOT_CHARGE_PER_H * hours)
        else:
            state.battery = max(_ROBOT_FLOOR, state.battery - _ROBOT_DRAIN_PER_H * hours)
        return round(state.battery)
    days = elapsed_ms / _MS_PER_DAY
    if state.replace_at_ms is not None and now_ms >= state.replace_at_ms:
        state.battery, state.replace_at_ms = 100.0, None
        state.drain_per_day = state.rng.uniform(*state.profile.drain_per_day)
    elif state.rng.random() < _AGEING_PER_DAY * days:
        state.drain_per_day = state.rng.uniform(*_WEAK_DRAIN_PER_DAY)
    # Below 2 % the device would die; the simulator keeps it just alive and reporting.
    state.battery = max(2.0, state.battery - state.drain_per_day * days)
    if state.battery < _REPLACE_BELOW and state.replace_at_ms is None:
        state.replace_at_ms = now_ms + round(state.rng.uniform(*_REPLACE_AFTER_S) * 1000)
    return round(state.battery)
