"""The simulated fleet (devices.simulator) and the pure parts of its publishing edge."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import random
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.cli import build_parser
from devices.catalog import DEFAULT_CATALOG, HEARTBEAT, Catalog
from devices.envelope import DeviceRef, Event, StatusReport, parse
from devices.ids import DEVICE_ID_RE
from devices.simulator import GO_OFFLINE, GO_ONLINE, PROFILES, Fleet, Outgoing
from tools.simulate import SimulateOptions, TokenBucket

STOCKHOLM = ZoneInfo("Europe/Stockholm")
KINDS = ("door_lock", "safety_camera", "alarm_button", "companion_robot")
# A Monday in winter (UTC+1), midnight local time.
START = datetime(2026, 11, 23, tzinfo=STOCKHOLM)

Decoded = list[tuple[str, dict[str, Any], Outgoing]]  # (device id, envelope, message)


def envelopes(messages: list[Outgoing], *, resends: bool = True) -> Decoded:
    """(device id, decoded envelope, message) of every event message, or of every first copy."""
    found = []
    seen: set[tuple[str, str]] = set()
    for m in messages:
        if not m.topic.endswith("/events"):
            continue
        device_id, envelope = m.topic.split("/")[2], orjson.loads(m.payload)
        if not resends:
            if (device_id, envelope["id"]) in seen:
                continue
            seen.add((device_id, envelope["id"]))
        found.append((device_id, envelope, m))
    return found


def local_hour(ts: str) -> int:
    return datetime.fromisoformat(ts).astimezone(STOCKHOLM).hour


def slow_heartbeats(interval_s: int = 3600) -> Catalog:
    """The built-in catalog with every heartbeat interval set to ``interval_s``.

    Heartbeats are over 99 % of the traffic; fewer of them make long simulations cheap.
    """
    return Catalog(
        [
            dataclasses.replace(kind, heartbeat_interval_s=interval_s)
            for kind in DEFAULT_CATALOG.kinds.values()
        ],
        DEFAULT_CATALOG.heartbeat,
    )


@dataclasses.dataclass(frozen=True)
class Run:
    fleet: Fleet
    messages: list[Outgoing]
    events: Decoded  # every event message, decoded
    first_copies: Decoded  # the same without resends


@pytest.fixture(scope="module")
def three_days() -> Run:
    """60 devices over three simulated days, advanced an hour at a time."""
    fleet = Fleet(60, seed=7, start=START)
    messages: list[Outgoing] = []
    for hour in range(1, 3 * 24 + 1):
        messages += fleet.advance(START + timedelta(hours=hour))
    return Run(fleet, messages, envelopes(messages), envelopes(messages, resends=False))


# --- the fleet --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [4, 20, 1000], ids=lambda n: f"{n}-devices")
def test_every_kind_is_present_locks_most(n: int) -> None:
    """A fleet has all four kinds, locks most, then cameras, alarm buttons and robots."""
    counts = Counter(d.kind for d in Fleet(n, start=START).devices)
    assert sum(counts.values()) == n
    assert set(counts) == set(KINDS)
    assert [counts[k] for k in KINDS] == sorted(counts.values(), reverse=True)


def test_ids_are_valid_unique_and_labels_name_places() -> None:
    """Ids match the contract's pattern and encode the kind; labels are apartments, not people."""
    fleet = Fleet(300, seed=3, start=START)
    ids = [d.id for d in fleet.devices]
    assert len(set(ids)) == len(ids)
    assert all(DEVICE_ID_RE.fullmatch(i) for i in ids)
    assert "sim-lock-0001" in ids
    assert "sim-cam-0001" in ids
    assert all(d.label.startswith("Lgh ") and d.label[4:].isdigit() for d in fleet.devices)


def test_id_prefix_that_makes_invalid_ids_is_refused() -> None:
    """A prefix that would give ids outside the contract's pattern raises ValueError."""
    with pytest.raises(ValueError, match="invalid device id"):
        Fleet(4, start=START, id_prefix="Sim")


def test_naive_datetimes_are_refused() -> None:
    """The fleet takes only timezone-aware datetimes, at start and in advance()."""
    with pytest.raises(ValueError, match="naive"):
        Fleet(4, start=datetime(2026, 1, 1))  # noqa: DTZ001 -- the naive datetime under test
    fleet = Fleet(4, start=START)
    with pytest.raises(ValueError, match="naive"):
        fleet.advance(datetime(2026, 1, 1))  # noqa: DTZ001 -- the naive datetime under test


def test_birth_is_a_retained_online_status_per_device() -> None:
    """birth() has one retained ``online`` on each device's status topic."""
    fleet = Fleet(20, start=START)
    birth = fleet.birth()
    assert sorted(m.topic for m in birth) == sorted(
        f"carewatch/devices/{d.id}/status" for d in fleet.devices
    )
    assert all(m.payload == b"online" and m.retain for m in birth)


def test_same_seed_gives_the_same_messages_another_seed_others() -> None:
    """Two fleets with one seed publish identical messages; another seed differs."""

    def run(seed: int) -> list[Outgoing]:
        return Fleet(30, seed=seed, start=START).advance(START + timedelta(hours=6))

    assert run(5) == run(5)
    assert run(5) != run(6)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    chunks_s=st.lists(st.integers(min_value=0, max_value=3600), min_size=1, max_size=12),
)
def test_chunking_of_advance_does_not_change_the_messages(seed: int, chunks_s: list[int]) -> None:
    """Advancing in any steps gives the same messages as one advance to the same end."""
    end = START + timedelta(seconds=sum(chunks_s))
    whole = Fleet(12, seed=seed, start=START).advance(end)
    fleet = Fleet(12, seed=seed, start=START)
    pieces: list[Outgoing] = []
    at = START
    for chunk_s in chunks_s:
        at += timedelta(seconds=chunk_s)
        pieces += fleet.advance(at)
    assert pieces == whole
    assert fleet.now == end


def test_advance_to_the_past_returns_nothing() -> None:
    """Going back in time is a no-op: no message is handed out twice."""
    fleet = Fleet(10, start=START)
    assert fleet.advance(START + timedelta(hours=1))
    assert fleet.advance(START + timedelta(minutes=30)) == []
    assert fleet.now == START + timedelta(hours=1)


def test_messages_come_in_time_order_within_the_window(
    three_days: Run,
) -> None:
    """Messages are ordered by publish time, all after the start and up to the last advance."""
    fleet, messages = three_days.fleet, three_days.messages
    times = [m.at for m in messages]
    assert times == sorted(times)
    assert times[0] > START
    assert times[-1] <= fleet.now == START + timedelta(days=3)
    assert all(m.at.tzinfo is not None for m in messages)


def test_every_message_is_accepted_by_the_envelope_parser(
    three_days: Run,
) -> None:
    """Each event parses to an Event of the device's kind, each status to a StatusReport."""
    fleet, messages = three_days.fleet, three_days.messages
    registry = {d.id: DeviceRef(d.id, d.kind, True) for d in fleet.devices}
    for message in fleet.birth() + messages:
        result = parse(message.topic, message.payload, message.at, registry)
        expected = StatusReport if message.topic.endswith("/status") else Event
        assert isinstance(result, expected), (message, result)
        if isinstance(result, Event):
            assert result.kind == registry[result.device_id].kind


def test_envelopes_carry_stockholm_time_in_milliseconds(
    three_days: Run,
) -> None:
    """ts is RFC 3339 with milliseconds and the local offset, never later than publication."""
    for _, envelope, message in three_days.events:
        ts = envelope["ts"]
        assert ts[19] == ".", ts
        assert len(ts) == len("2026-11-23T00:00:00.000+01:00"), ts
        assert ts.endswith("+01:00")  # November: standard time
        assert datetime.fromisoformat(ts) <= message.at


def test_summer_time_changes_the_offset_and_the_rhythm_follows_it() -> None:
    """Across the March switch the offset goes from +01:00 to +02:00, ts still exact instants."""
    start = datetime(2026, 3, 28, 12, tzinfo=STOCKHOLM)
    fleet = Fleet(20, start=start, catalog=slow_heartbeats(600))
    offsets = Counter(
        env["ts"][-6:] for _, env, _ in envelopes(fleet.advance(start + timedelta(days=1)))
    )
    assert set(offsets) == {"+01:00", "+02:00"}


def test_event_ids_are_unique_per_device_except_resends(
    three_days: Run,
) -> None:
    """An id occurs twice on a device only for a resend, and then with the very same bytes."""
    payloads: dict[tuple[str, str], bytes] = {}
    for device_id, envelope, message in three_days.events:
        key = (device_id, envelope["id"])
        assert len(envelope["id"]) <= 64
        assert payloads.setdefault(key, message.payload) == message.payload


@pytest.mark.parametrize("resend_rate", [0.0, 0.01, 0.05])
def test_resends_are_about_as_frequent_as_configured(resend_rate: float) -> None:
    """About ``resend_rate`` of the events come twice, byte for byte the same."""
    fleet = Fleet(40, seed=11, start=START, resend_rate=resend_rate)
    messages = fleet.advance(START + timedelta(days=1))
    seen: dict[tuple[str, str], bytes] = {}
    resends = 0
    for device_id, envelope, message in envelopes(messages):
        key = (device_id, envelope["id"])
        if key in seen:
            assert seen[key] == message.payload
            resends += 1
        seen[key] = message.payload
    originals = len(seen)
    assert originals > 10_000
    # The binomial standard deviation at 5 % of ~15,000 is under 0.2 percentage points.
    assert resends / originals == pytest.approx(resend_rate, abs=0.003)


# --- cadence and rhythm ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "interval_s"),
    [("safety_camera", 60), ("door_lock", 300), ("companion_robot", 900), ("alarm_button", 3600)],
)
def test_heartbeats_come_at_the_kinds_interval(three_days: Run, kind: str, interval_s: int) -> None:
    """Each device's heartbeats are one catalog interval apart, give or take 2 %."""
    fleet = three_days.fleet
    assert DEFAULT_CATALOG[kind].heartbeat_interval_s == interval_s
    kinds = {d.id: d.kind for d in fleet.devices}
    beats: dict[str, list[datetime]] = defaultdict(list)
    for device_id, envelope, _ in three_days.first_copies:
        if envelope["type"] == HEARTBEAT and kinds[device_id] == kind:
            beats[device_id].append(datetime.fromisoformat(envelope["ts"]))
    assert len(beats) == sum(1 for k in kinds.values() if k == kind)
    for device_id, times in beats.items():
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        # Outages skip heartbeats (longer gaps); the typical gap is the interval.
        assert statistics.median(gaps) == pytest.approx(interval_s, rel=0.02), device_id
        assert min(gaps) >= interval_s * 0.98 - 0.001
        expected = 3 * 86_400 / interval_s
        assert expected * 0.9 <= len(times) <= expected * 1.03, device_id


def test_camera_checks_are_at_night_lock_visits_in_the_daytime(
    three_days: Run,
) -> None:
    """Camera supervision happens 21-07 local time; door and robot activity mostly 07-22."""
    hours: dict[str, list[int]] = defaultdict(list)
    for _, envelope, _ in three_days.events:
        hours[envelope["type"]].append(local_hour(envelope["ts"]))

    def share(event_type: str, predicate: Callable[[int], bool]) -> float:
        return sum(map(predicate, hours[event_type])) / len(hours[event_type])

    assert len(hours["camera.check_started"]) > 100
    assert share("camera.check_started", lambda h: h >= 21 or h < 7) > 0.95
    assert len(hours["lock.unlocked"]) > 500
    assert share("lock.unlocked", lambda h: 7 <= h < 22) > 0.85
    assert share("robot.interaction", lambda h: 7 <= h < 22) > 0.95
    # The rhythm has peaks: the breakfast round is busier than the small hours.
    assert hours["lock.unlocked"].count(8) > 5 * hours["lock.unlocked"].count(3)


def test_camera_checks_end_with_duration_and_mostly_seen(
    three_days: Run,
) -> None:
    """Every check_started is followed by a check_ended by the same staff member."""
    open_checks: dict[str, str] = {}
    outcomes: Counter[str] = Counter()
    for device_id, envelope, _ in three_days.first_copies:
        data = envelope["data"]
        if envelope["type"] == "camera.check_started":
            open_checks[device_id] = data["by"]
        elif envelope["type"] == "camera.check_ended":
            assert open_checks.pop(device_id) == data["by"]
            assert data["duration_s"] > 0
            outcomes[data["outcome"]] += 1
    assert outcomes["seen"] / sum(outcomes.values()) > 0.9


def test_batteries_drain_run_low_and_get_replaced() -> None:
    """Some cells drop under 20 % (battery_low), and a later heartbeat shows a new one at 100 %."""
    fleet = Fleet(200, seed=2, start=START, catalog=slow_heartbeats(3600))
    levels: dict[str, list[int]] = defaultdict(list)
    for device_id, envelope, _ in envelopes(fleet.advance(START + timedelta(days=6))):
        if envelope["type"] == HEARTBEAT and "battery" in envelope["data"]:
            levels[device_id].append(envelope["data"]["battery"])
    kinds = {d.id: d.kind for d in fleet.devices}
    assert {kinds[d] for d in levels} == {"door_lock", "alarm_button", "companion_robot"}
    low = [d for d, seq in levels.items() if min(seq) < 20]
    replaced = [d for d in low if 100 in levels[d][levels[d].index(min(levels[d])) :]]
    assert low
    assert replaced
    assert len(low) < 0.2 * len(levels)  # occasionally, not a fleet of dying devices
    robots = [seq for d, seq in levels.items() if kinds[d] == "companion_robot"]
    assert min(min(seq) for seq in robots) >= 30  # the robot docks itself before running low


def test_outages_publish_offline_hold_events_and_come_back_online() -> None:
    """An outage: retained offline (the Last Will), silence, then online and the held events."""
    # Outages made 100 times likelier than in PROFILES, so that some catch events.
    flaky = [
        dataclasses.replace(
            profile,
            activities=tuple(
                dataclasses.replace(a, per_day=a.per_day * 100) if a.lane == "link" else a
                for a in profile.activities
            ),
        )
        for profile in PROFILES
    ]
    fleet = Fleet(40, seed=4, start=START, catalog=slow_heartbeats(600), profiles=flaky)
    messages = fleet.advance(START + timedelta(days=2))
    offline_since: dict[str, datetime] = {}
    outages = 0
    for message in messages:
        device_id = message.topic.split("/")[2]
        if message.topic.endswith("/status"):
            assert message.retain
            if message.payload == b"offline":
                offline_since[device_id] = message.at
            elif device_id in offline_since:
                del offline_since[device_id]
                outages += 1
        elif device_id in offline_since:
            raise AssertionError(f"{device_id} published while offline: {message}")
    assert outages >= 20
    late = [
        (message.at - datetime.fromisoformat(env["ts"])).total_seconds()
        for _, env, message in envelopes(messages)
        if env["type"] != HEARTBEAT
    ]
    assert max(late) > 60  # some events were held through an outage and sent late


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.kind)
def test_the_behaviour_table_covers_every_event_type_of_the_catalog(profile: Any) -> None:
    """Played often enough, a kind's activities produce each of its catalog event types."""
    rng = random.Random(1)
    staff = ("staff-1001", "staff-1002")
    produced: set[str] = set()
    for activity in profile.activities:
        for _ in range(3000):
            produced.update(step.type for step in activity.episode(rng, staff))
    produced -= {GO_OFFLINE, GO_ONLINE}
    assert produced == set(DEFAULT_CATALOG[profile.kind].event_types) - {HEARTBEAT}


def test_some_lock_visits_leave_the_door_unlocked_past_ten_minutes() -> None:
    """About 2 % of visits end with the door unlocked for more than 10 min (door_left_unlocked)."""
    (visit,) = (a for a in PROFILES[0].activities if a.name == "visit")
    rng = random.Random(3)
    forgotten = 0
    for _ in range(5000):
        steps = visit.episode(rng, ("staff-4711",))
        assert steps[0].type == "lock.unlocked"
        unlocked_at = None
        for step in steps:
            if step.type == "lock.unlocked":
                unlocked_at = step.after_s
            elif step.type == "lock.locked" and unlocked_at is not None:
                forgotten += step.after_s - unlocked_at > 600
                unlocked_at = None
    assert 0.01 < forgotten / 5000 < 0.04


def test_the_simulator_imports_no_io_library() -> None:
    """devices.simulator stays pure: importing it loads no MQTT, database or asyncio module."""
    code = (
        "import sys, devices.simulator; "
        "print(','.join(m for m in ('paho', 'aiomqtt', 'asyncio', 'psycopg', 'fastapi') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


# --- the publishing edge's pure parts -------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_caps_the_average_rate() -> None:
    """At 100/s, taking tokens as fast as allowed for 10 s yields about 1000 of them."""
    clock = FakeClock()
    bucket = TokenBucket(100.0, clock=clock)
    taken = 0
    while clock.now < 110.0:
        delay = bucket.take()
        if delay == 0:
            taken += 1
        else:
            clock.now += delay
    assert 995 <= taken <= 1011  # 1000 plus the initial token and the burst of 10


def test_token_bucket_waits_at_least_a_few_milliseconds() -> None:
    """An empty bucket asks for a short wait, not a busy loop of microsecond sleeps."""
    clock = FakeClock()
    bucket = TokenBucket(10_000.0, clock=clock)
    assert bucket.take() == 0
    assert bucket.take() >= 0.005


def test_options_come_from_the_cli_arguments() -> None:
    """``carewatch simulate`` flags map onto SimulateOptions."""
    args = build_parser().parse_args(
        ["simulate", "--devices", "20", "--speed", "600", "--duration", "3", "--rate", "50"]
    )
    assert SimulateOptions.from_args(args) == SimulateOptions(
        devices=20, speed=600.0, rate=50.0, duration_s=3.0, seed=1, site="demo-site"
    )
    demo_like = argparse.Namespace(devices=5, speed=60.0)
    assert SimulateOptions.from_args(demo_like).speed == 60.0


@pytest.mark.parametrize(
    "bad",
    [{"devices": 0}, {"speed": 0.0}, {"rate": -1.0}, {"duration_s": 0.0}],
    ids=["no-devices", "zero-speed", "negative-rate", "zero-duration"],
)
def test_options_refuse_nonsense(bad: dict[str, Any]) -> None:
    """Non-positive counts, speeds, rates and durations are refused with ValueError."""
    with pytest.raises(ValueError, match="must be"):
        SimulateOptions(**{"devices": 5, **bad})


def test_start_is_any_aware_moment() -> None:
    """A UTC start works as well as a Stockholm one: the rhythm is in local time regardless."""
    fleet = Fleet(8, start=datetime(2026, 11, 23, 12, tzinfo=UTC))
    assert fleet.now == datetime(2026, 11, 23, 13, tzinfo=STOCKHOLM)
