"""``carewatch simulate``: publishes the traffic of a simulated fleet (``devices.simulator``).

The fleet model is pure and knows no clock; this module is its edge. It moves simulated time
forward by ``speed`` x the wall-clock time that passed, publishes what the fleet says is due
(QoS 1, ``--rate`` capping messages per second), prints a progress line every few seconds,
and stops after ``--duration`` or on Ctrl-C/SIGTERM.

The edge runs on asyncio with aiomqtt: one task produces the fleet's messages, another keeps
the connection and publishes them, each publish awaiting its PUBACK. When the broker goes away
it reconnects with capped, jittered backoff and publishes again what the broker had not
acknowledged (at least once: the gateway stores an event id once).

With ``--register`` the database is at hand, so the fleet carries on from what it stores
(:func:`stored_state`): each device's battery and firmware as last reported (after a backfill,
its last heartbeat: no jump of every battery when the demo starts), and the supervision plans
of the devices' residences, whose checks the cameras then make at the planned times (the late,
missed and not-seen ones too), with the patrol's visits through the residences' locks.

A PUBACK with reason code 16 (No matching subscribers) is not an acknowledgement here: no
gateway was subscribed (after a broker restart, until the gateways have subscribed again), so
the broker dropped the message. Following the device contract (``docs/contract.md``, MQTT), an
event refused so is kept and published again after 1 s, then 2, 4, up to 8 s, until the broker
answers Success. A status (retained) is not resent: the broker keeps it as the topic's retained
value whether or not anyone subscribed, and a late copy could overwrite a newer status.

One MQTT connection publishes for every simulated device, as the broker's simulator account
(``broker.auth_files``). Real devices each have their own connection, credentials and Last Will;
the fleet model publishes the ``offline`` status itself where a broker would have published a
device's will. A clean stop of the simulator is not its devices going offline, so it does not
publish ``offline`` for them: it just disconnects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import itertools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, Final

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from carewatch.backoff import Backoff
from carewatch.settings import MqttEndpoint, Settings
from devices.simulated_nights import NightSchedule
from devices.simulator import Fleet, Outgoing, Resume, SimDevice
from gateway.transport import client_ssl_context

__all__ = [
    "ConnectError",
    "PublishStats",
    "SimulateOptions",
    "TokenBucket",
    "fleet_for",
    "publish_fleet",
    "run",
    "stop_on_signals",
]

log = logging.getLogger(__name__)

DEMO_ORG_ID: Final = "demo"
DEMO_ORG_NAME: Final = "Demo kommun"

# How often simulated time catches up with the wall clock: at speed 600 one tick is 30
# simulated seconds, finer than the shortest heartbeat (60 s).
_TICK_S: Final = 0.05
_PROGRESS_EVERY_S: Final = 5.0
# Publishes the broker has not acknowledged yet, beyond which production waits: bounds our
# memory when the broker is slow or away, instead of queueing the whole simulated future. Each
# is a task awaiting its PUBACK, and aiomqtt looks through its pending calls on every publish,
# so a larger window costs CPU without making a loopback or LAN broker any faster.
_MAX_UNACKED: Final = 1000
# paho (under aiomqtt) keeps at most this many QoS 1 messages on the wire; its default of 20
# would make the round trip, not the broker, the limit. (Mosquitto also caps it:
# max_inflight_messages.)
_MAX_INFLIGHT: Final = 1000
_CONNECT_TIMEOUT_S: Final = 10.0
# A PUBACK this late means a dead connection: it is dropped and the message published again
# on the next one. (Keep-alive notices a silent broker too, after 1.5 x _KEEPALIVE_S.)
_PUBACK_TIMEOUT_S: Final = 60.0
# On stop, how long to wait for the PUBACKs of what was already published.
_DRAIN_TIMEOUT_S: Final = 10.0
_KEEPALIVE_S: Final = 30
_RECONNECT_MIN_S: Final = 1.0
_RECONNECT_MAX_S: Final = 30.0
# PUBACK reason codes (MQTT 5): Success, and No matching subscribers (the broker dropped it).
_SUCCESS: Final = 0
_NO_MATCHING_SUBSCRIBERS: Final = 16
# An event refused with 16 is published again after 1 s, doubling up to 8 s: the gateways
# subscribe again within a few seconds of a broker restart, and a fleet resending every few
# seconds costs the broker little.
_UNROUTED_RESEND_MIN_S: Final = 1.0
_UNROUTED_RESEND_MAX_S: Final = 8.0
# The gateway dead-letters events whose ts is further than max_clock_skew_s from when it
# received them. Faster than real time, the simulated clock would get there (at speed 60 after
# about 2.5 hours); from this fraction of the allowance on, it keeps pace with the wall clock.
_AHEAD_FRACTION: Final = 0.9


@dataclass(frozen=True, slots=True)
class SimulateOptions:
    """What to simulate; ``from_args`` reads the ``simulate`` subcommand's arguments."""

    devices: int
    speed: float = 1.0
    rate: float | None = None  # messages per second, None: no cap
    duration_s: float | None = None  # wall-clock seconds, None: until stopped
    seed: int = 1
    site: str = "demo-site"
    register: bool = False
    id_prefix: str = "sim"  # device ids are {id_prefix}-lock-0001, ...

    def __post_init__(self) -> None:
        if self.devices < 1:
            raise ValueError(f"--devices must be at least 1, got {self.devices}")
        if self.speed <= 0:
            raise ValueError(f"--speed must be positive, got {self.speed}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"--rate must be positive, got {self.rate}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"--duration must be positive, got {self.duration_s}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SimulateOptions:
        """The options of the ``simulate`` command line (or the demo's namespace)."""
        # getattr: `carewatch demo` builds its own namespace with only some of these.
        return cls(
            devices=args.devices,
            speed=getattr(args, "speed", 1.0),
            rate=getattr(args, "rate", None),
            duration_s=getattr(args, "duration", None),
            seed=getattr(args, "seed", 1),
            site=getattr(args, "site", "demo-site"),
            register=getattr(args, "register", False),
            id_prefix=getattr(args, "id_prefix", None) or "sim",
        )


@dataclass(frozen=True, slots=True)
class PublishStats:
    """What a simulator run published, and up to which simulated moment."""

    sent: int  # handed to the MQTT client, resends included
    acknowledged: int  # PUBACKed by the broker with Success (or a refusal other than 16)
    unrouted: int  # PUBACKs that said 16 (No matching subscribers); those events were resent
    elapsed_s: float
    simulated_until: datetime


def fleet_for(
    n_devices: int,
    *,
    seed: int = 1,
    start: datetime | None = None,
    id_prefix: str = "sim",
    state: StoredState | None = None,
) -> Fleet:
    """The fleet that ``carewatch simulate --devices n --seed seed`` publishes (carrying on
    from ``state``, if given).

    Device ids depend only on ``n_devices`` and ``id_prefix``, so the registry and the
    publisher agree on them whenever each builds its fleet.
    """
    moment = start if start is not None else datetime.now(UTC)
    if state is None:
        return Fleet(n_devices, seed=seed, start=moment, id_prefix=id_prefix)
    return Fleet(
        n_devices,
        seed=seed,
        start=moment,
        id_prefix=id_prefix,
        resume=state.resume,
        nights=state.nights,
        nights_after=state.nights_after,
    )


@dataclass(frozen=True, slots=True)
class StoredState:
    """What the database knows of a fleet: each device's last report, its residences' night
    schedule (None: no device is placed in a residence), and the newest event stored of the
    residences' devices: the planned checks' events up to then are stored already (by the
    backfill, or by an earlier run whose simulated clock ran ahead), and are not played again.
    Those after it are, even from before the start: the checks planned while the backfill ran
    or the demo was stopped arrive late instead of looking missed."""

    resume: dict[str, Resume]
    nights: NightSchedule | None
    nights_after: datetime | None = None


_LAST_REPORTS: Final = "SELECT id, battery, firmware FROM devices WHERE id = ANY(%s)"
# One backward probe of the (device_id, time) index per device.
_NEWEST_EVENT: Final = """
SELECT max(e.time) FROM unnest(%s::text[]) AS x(id)
CROSS JOIN LATERAL (SELECT time FROM events WHERE device_id = x.id ORDER BY time DESC LIMIT 1) e
"""


def stored_state(database_url: str, devices: Iterable[SimDevice], *, seed: int) -> StoredState:
    """The devices' battery and firmware as last stored, and their residences' plans."""
    import psycopg

    from tools.backfill import stored_nights

    ids = [d.id for d in devices]
    with psycopg.connect(database_url) as conn:
        resume = {
            device_id: Resume(battery, firmware)
            for device_id, battery, firmware in conn.execute(_LAST_REPORTS, (ids,)).fetchall()
        }
        nights = stored_nights(conn, ids, seed=seed)
        after: datetime | None = None
        if nights is not None:
            placed = [d for r in nights.residences for d in (r.camera_id, r.lock_id) if d]
            row = conn.execute(_NEWEST_EVENT, (placed,)).fetchone()
            after = row[0] if row is not None else None
    return StoredState(resume, nights, after)


def register(database_url: str, site_id: str, devices: Iterable[SimDevice]) -> int:
    """Registers the devices in ``site_id`` of the demo organisation; returns how many were new."""
    import psycopg

    from carewatch import admin

    with psycopg.connect(database_url) as conn:
        admin.ensure_org(conn, DEMO_ORG_ID, DEMO_ORG_NAME)
        admin.ensure_site(conn, site_id, DEMO_ORG_ID, f"Simulerat boende {site_id}")
        return admin.add_devices_bulk(conn, ((d.id, d.kind, site_id, d.label) for d in devices))


def run(settings: Settings, args: argparse.Namespace) -> int:
    """The ``carewatch simulate`` command: 0 after a clean stop, 1 if it could not start, 2 if
    the arguments were refused."""
    if getattr(args, "backfill", None):
        return run_backfill(settings, args)
    try:
        options = SimulateOptions.from_args(args)
        settings.mqtt  # noqa: B018 -- parses CAREWATCH_MQTT_URL: a bad one is refused here
        fleet = fleet_for(options.devices, seed=options.seed, id_prefix=options.id_prefix)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if options.register:
        import psycopg

        from carewatch.errors import AdminError

        try:
            added = register(settings.database_url, options.site, fleet.devices)
        except AdminError as exc:
            log.error("cannot register the simulated devices: %s", exc)
            return 2
        except psycopg.OperationalError as exc:
            log.error("cannot register the simulated devices: %s", exc)
            return 1
        print(f"simulate: registered {added} new device(s) in site {options.site}", flush=True)
        try:
            state = stored_state(settings.database_url, fleet.devices, seed=options.seed)
        except psycopg.OperationalError as exc:
            log.error("cannot read the simulated devices' state: %s", exc)
            return 1
        fleet = fleet_for(
            options.devices, seed=options.seed, id_prefix=options.id_prefix, state=state
        )
        planned = len(state.nights.plans) if state.nights is not None else 0
        print(
            f"simulate: carrying on from {len(state.resume)} stored device(s),"
            f" {planned} residence(s) with a supervision plan",
            flush=True,
        )
    try:
        stats = asyncio.run(_publish_until_signalled(settings, options, fleet))
    except ConnectError as exc:
        log.error("%s", exc)
        return 1
    rate = stats.sent / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
    print(
        f"simulate: done, {stats.sent} messages sent, {stats.acknowledged} acknowledged, "
        f"{stats.unrouted} refused for lack of a subscriber (resent), "
        f"in {stats.elapsed_s:.1f} s ({rate:.0f} msg/s), simulated until "
        f"{stats.simulated_until.isoformat(timespec='seconds')}",
        flush=True,
    )
    return 0


async def _publish_until_signalled(
    settings: Settings, options: SimulateOptions, fleet: Fleet
) -> PublishStats:
    """``publish_fleet``, with SIGINT and SIGTERM asking for a clean stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, _stopping, signum, stop)
    try:
        return await publish_fleet(settings, options, fleet, stop=stop)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def _stopping(signum: int, stop: asyncio.Event) -> None:
    log.info("%s: stopping", signal.Signals(signum).name)
    stop.set()


async def publish_fleet(
    settings: Settings,
    options: SimulateOptions,
    fleet: Fleet,
    *,
    stop: asyncio.Event,
    report: Callable[[str], None] = lambda line: print(line, flush=True),
) -> PublishStats:
    """Publishes the fleet's traffic until ``options.duration_s`` has passed or ``stop`` is set,
    then waits a while for the PUBACKs of what it published.

    Raises ConnectError when the first connection fails or is refused (or ``stop`` comes first);
    after that, a lost broker is reconnected to for as long as the run lasts.
    """
    publisher = _Publisher(settings.mqtt, ca_file=settings.mqtt_ca_file)
    max_ahead = timedelta(seconds=settings.max_clock_skew_s * _AHEAD_FRACTION)
    try:
        async with asyncio.TaskGroup() as tasks:
            connection = tasks.create_task(publisher.stay_connected(), name="simulate-mqtt")
            if not await _unless_stopped(publisher.connected.wait(), stop):
                raise ConnectError(publisher.endpoint, "stopped before the broker answered")
            started = time.monotonic()
            production = _produce(fleet, options, publisher, max_ahead, report)
            await _unless_stopped(production, stop, timeout_s=options.duration_s)
            await publisher.drain(_DRAIN_TIMEOUT_S)
            connection.cancel()  # disconnects
    except* ConnectError as failed:
        error = failed.exceptions[0]
        raise error from error.__cause__  # itself, not the group around it
    return PublishStats(
        sent=publisher.sent,
        acknowledged=publisher.acknowledged,
        unrouted=publisher.unrouted,
        elapsed_s=time.monotonic() - started,
        simulated_until=fleet.now,
    )


async def _produce(
    fleet: Fleet,
    options: SimulateOptions,
    publisher: _Publisher,
    max_ahead: timedelta,
    report: Callable[[str], None],
) -> None:
    """Hands over the births, then whatever falls due as simulated time follows the wall clock
    (``speed`` times faster), reporting progress meanwhile; runs until cancelled."""
    bucket = TokenBucket(options.rate) if options.rate is not None else None
    sim_start = fleet.now
    started = time.monotonic()
    capped = False

    async def publish(messages: list[Outgoing]) -> None:
        for message in messages:
            if bucket is not None:
                await bucket.wait()
            await publisher.publish(message)

    async def report_progress() -> None:
        # A task of its own: a tick far behind (a high --speed, a low --rate) can take longer
        # than the reporting interval to publish.
        progress = _Progress(report, started)
        while True:
            await asyncio.sleep(_PROGRESS_EVERY_S)
            progress.maybe_report(publisher.sent, publisher.acknowledged, fleet.now)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(report_progress(), name="simulate-progress")
        await publish(fleet.birth())
        while True:
            target = sim_start + timedelta(seconds=(time.monotonic() - started) * options.speed)
            wall_limit = datetime.now(UTC) + max_ahead
            if target > wall_limit:
                if not capped:
                    log.warning(
                        "the simulated clock is %s ahead of the wall clock, near the gateway's "
                        "max_clock_skew_s; from now on it keeps pace with the wall clock",
                        max_ahead,
                    )
                    capped = True
                target = max(wall_limit, fleet.now)
            await publish(fleet.advance(target))
            await asyncio.sleep(_TICK_S)


async def _unless_stopped(
    work: Coroutine[Any, Any, Any], stop: asyncio.Event, *, timeout_s: float | None = None
) -> bool:
    """Runs ``work`` to its end (True) unless ``stop`` is set or ``timeout_s`` passes first
    (False: it is cancelled). An exception of ``work`` is raised here."""
    task = asyncio.create_task(work)
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopped}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        task.cancel()  # nothing if it has ended
    await asyncio.wait({task})
    if task.cancelled():
        return False
    task.result()
    return True


class TokenBucket:
    """At most ``rate_per_s`` on average, in bursts of at most ``burst`` (default 0.1 s worth)."""

    # Sleeping for a single token at 10,000 msg/s would mean 100 us sleeps, mostly overhead;
    # waiting at least this long lets a few tokens accumulate instead.
    _MIN_WAIT_S: Final = 0.005

    def __init__(
        self,
        rate_per_s: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate must be positive, got {rate_per_s}")
        self.rate_per_s = rate_per_s
        self.burst = burst if burst is not None else max(1.0, rate_per_s * 0.1)
        self._clock = clock
        self._tokens = 1.0
        self._updated = clock()

    def take(self) -> float:
        """Takes a token and returns 0, or returns how long to wait before trying again."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate_per_s)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return max((1.0 - self._tokens) / self.rate_per_s, self._MIN_WAIT_S)

    async def wait(self) -> None:
        """Sleeps until a token is taken (cancel the caller to give up)."""
        while True:
            delay_s = self.take()
            if delay_s == 0:
                return
            await asyncio.sleep(delay_s)


class ConnectError(Exception):
    """The simulator could not connect to the broker at start."""

    def __init__(self, endpoint: MqttEndpoint, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"could not connect to the MQTT broker at {endpoint!r}: {reason}")


# The reason codes of the PUBACKs that answer the publishes of the task that set it.
_PUBACK_REASONS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "_PUBACK_REASONS", default=None
)


class _PubackAwareClient(aiomqtt.Client):
    """aiomqtt's client, telling the caller of a QoS 1 publish the PUBACK's reason code.

    aiomqtt 2.5 returns None from ``publish`` and drops the reason code that paho hands its
    ``on_publish`` callback, so 16 (No matching subscribers) looks like Success. Two of its
    private methods are extended, nothing replaced: ``_pending_call`` (run synchronously inside
    ``publish``, in the caller's context, with the packet id paho just gave the message) notes
    where that packet id's reason code goes, and ``_on_publish`` puts it there before aiomqtt
    wakes the caller. The simulator's test against a broker with no subscriber proves it still
    works (tests/integration/test_simulate.py).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._puback_reasons: dict[int, list[int]] = {}  # by packet id

    async def publish_qos1(
        self, topic: str, payload: bytes, *, retain: bool, timeout_s: float
    ) -> int:
        """Publishes at QoS 1 and waits for the PUBACK; its reason code (0: Success)."""
        reasons: list[int] = []
        token = _PUBACK_REASONS.set(reasons)
        try:
            await self.publish(topic, payload, qos=1, retain=retain, timeout=timeout_s)
        finally:
            _PUBACK_REASONS.reset(token)
        return reasons[0] if reasons else _SUCCESS

    @contextlib.contextmanager
    def _pending_call(self, mid: int, value: Any, pending_dict: dict[int, Any]) -> Iterator[None]:
        reasons = _PUBACK_REASONS.get()
        if reasons is not None and pending_dict is self._pending_publishes:
            self._puback_reasons[mid] = reasons
        try:
            with super()._pending_call(mid, value, pending_dict):
                yield
        finally:
            self._puback_reasons.pop(mid, None)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        reasons = self._puback_reasons.pop(mid, None)
        if reasons is not None:
            reasons.append(reason_code.value)
        super()._on_publish(client, userdata, mid, reason_code, properties)


class _Publisher:
    """One aiomqtt connection publishing for the whole fleet, at least once across reconnects.

    ``publish`` hands a message over, waiting while ``_MAX_UNACKED`` are unacknowledged;
    ``stay_connected`` publishes each in a task of its own that awaits the PUBACK. A message is
    forgotten only once acknowledged: when a connection fails, its tasks are cancelled and the
    next connection publishes whatever is still unacknowledged again, in the original order.
    An event the broker refused for lack of a subscriber (16) stays unacknowledged and is
    published again after a growing delay, as if no PUBACK had come.
    """

    def __init__(self, endpoint: MqttEndpoint, *, ca_file: str) -> None:
        """``ca_file``: with an mqtts:// endpoint, the CA the broker is verified against
        (empty: the system's CAs)."""
        self.endpoint = endpoint
        self._tls_context = client_ssl_context(ca_file) if endpoint.tls else None
        # Unique per run, so that two simulators do not take over each other's connection.
        self._client_id = f"carewatch-simulator-{socket.gethostname()}-{os.getpid()}"
        self.connected = asyncio.Event()  # once the first connection is up
        self.sent = 0  # handed to the MQTT client, resends after a reconnect included
        self.acknowledged = 0  # distinct messages PUBACKed
        self.unrouted = 0  # PUBACKs that said 16 (No matching subscribers)
        self._unacked: dict[int, Outgoing] = {}  # by sequence number, so in publishing order
        self._refusals: dict[int, int] = {}  # by sequence number: how often 16 answered it
        self._refusing = False  # the last PUBACK said 16 (logged once per episode)
        self._sequence = itertools.count()
        self._room = asyncio.Semaphore(_MAX_UNACKED)
        self._all_acked = asyncio.Event()
        self._all_acked.set()
        self._to_send: asyncio.Queue[int] = asyncio.Queue()  # the current connection's

    async def publish(self, message: Outgoing) -> None:
        """Hands ``message`` over for publishing (QoS 1); waits while too much is unacknowledged."""
        await self._room.acquire()
        sequence = next(self._sequence)
        self._unacked[sequence] = message
        self._all_acked.clear()
        self._to_send.put_nowait(sequence)

    async def drain(self, timeout_s: float) -> None:
        """Waits up to ``timeout_s`` for the PUBACKs of everything handed over."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._all_acked.wait()
        if self._unacked:
            log.warning(
                "stopping with %d publish(es) not acknowledged by the broker", len(self._unacked)
            )

    async def stay_connected(self) -> None:
        """Connects and publishes; reconnects with backoff whenever the connection fails, until
        cancelled. Raises ConnectError if the first connection fails or is refused."""
        backoff = Backoff(_RECONNECT_MIN_S, _RECONNECT_MAX_S)
        while True:
            try:
                async with self._client() as client:
                    if self.connected.is_set():
                        log.info(
                            "reconnected to %r; publishing %d unacknowledged message(s) again",
                            self.endpoint,
                            len(self._unacked),
                        )
                    else:
                        log.info("connected to %r", self.endpoint)
                        self.connected.set()
                    backoff.reset()
                    await self._publish_on(client)
            except aiomqtt.MqttError as exc:
                if not self.connected.is_set():
                    raise ConnectError(self.endpoint, _reason(exc)) from exc
                delay_s = backoff.next()
                log.warning(
                    "lost the broker at %r (%s); reconnecting in %.1f s",
                    self.endpoint,
                    _reason(exc),
                    delay_s,
                )
                await asyncio.sleep(delay_s)

    def _client(self) -> _PubackAwareClient:
        """A new client for each connection: paho, under aiomqtt, would otherwise publish the
        previous connection's unacknowledged messages again by itself, beside ours."""
        endpoint = self.endpoint
        client = _PubackAwareClient(
            endpoint.host,
            endpoint.port,
            username=endpoint.username,
            password=endpoint.password,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=True,
            keepalive=_KEEPALIVE_S,
            timeout=_CONNECT_TIMEOUT_S,
            max_inflight_messages=_MAX_INFLIGHT,
            tls_context=self._tls_context,
        )
        # aiomqtt warns once more than this many calls await their answer; up to
        # _MAX_UNACKED publishes do here, by design.
        client.pending_calls_threshold = _MAX_UNACKED
        return client

    async def _publish_on(self, client: _PubackAwareClient) -> None:
        """Publishes the unacknowledged messages, then those handed over, until the connection
        fails (MqttError)."""
        to_send: asyncio.Queue[int] = asyncio.Queue()
        self._to_send = to_send
        for sequence in self._unacked:  # what an earlier connection left unacknowledged
            to_send.put_nowait(sequence)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(_until_disconnected(client), name="simulate-mqtt-watch")
                while True:
                    sequence = await to_send.get()
                    message = self._unacked.get(sequence)
                    if message is not None:
                        self.sent += 1
                        tasks.create_task(self._publish_one(client, sequence, message))
        except* aiomqtt.MqttError as failed:
            # Itself, not the group around it, keeping the cause that says what happened.
            error = failed.exceptions[0]
            raise error from error.__cause__

    async def _publish_one(
        self, client: _PubackAwareClient, sequence: int, message: Outgoing
    ) -> None:
        to_send = self._to_send  # this connection's: the task ends with it
        reason = await client.publish_qos1(
            message.topic, message.payload, retain=message.retain, timeout_s=_PUBACK_TIMEOUT_S
        )
        if reason == _NO_MATCHING_SUBSCRIBERS:
            self.unrouted += 1
            if not self._refusing:
                self._refusing = True
                log.warning(
                    "the broker has no subscriber for the devices' messages (PUBACK 16); "
                    "publishing the events again until it has"
                )
            if not message.retain:
                await asyncio.sleep(self._unrouted_delay_s(sequence))
                to_send.put_nowait(sequence)
                return
        elif reason != _SUCCESS:
            # Refused outright (not authorised, say): publishing it again would not help.
            log.warning("the broker refused a message to %s: reason %s", message.topic, reason)
        elif self._refusing:
            self._refusing = False
            log.info("the broker routes messages again (%d refused with 16 so far)", self.unrouted)
        self._refusals.pop(sequence, None)
        if self._unacked.pop(sequence, None) is not None:
            self.acknowledged += 1
            self._room.release()
            if not self._unacked:
                self._all_acked.set()

    def _unrouted_delay_s(self, sequence: int) -> float:
        """How long to wait before publishing again an event refused with 16: 1 s after the
        first refusal, doubling with each further one, at most 8 s."""
        refusals = self._refusals.get(sequence, 0) + 1
        self._refusals[sequence] = refusals
        return min(_UNROUTED_RESEND_MAX_S, _UNROUTED_RESEND_MIN_S * 2.0 ** (refusals - 1))


async def _until_disconnected(client: aiomqtt.Client) -> None:
    """Raises MqttError when the connection fails: the simulator subscribes to nothing, so the
    message iterator ends only that way."""
    async for _ in client.messages:
        pass


def _reason(exc: aiomqtt.MqttError) -> str:
    """What went wrong, with the cause aiomqtt chains to its own message."""
    cause = exc.__cause__
    reason = str(exc) or type(exc).__name__
    return f"{reason}: {cause}" if cause is not None else reason


class _Progress:
    """A one-line summary every few seconds: how many sent, how fast, simulated time."""

    def __init__(self, report: Callable[[str], None], started: float) -> None:
        self._report = report
        self._last_at = started
        self._last_sent = 0

    def maybe_report(self, sent: int, acknowledged: int, simulated: datetime) -> None:
        now = time.monotonic()
        if now - self._last_at < _PROGRESS_EVERY_S:
            return
        rate = (sent - self._last_sent) / (now - self._last_at)
        self._last_at, self._last_sent = now, sent
        self._report(
            f"simulate: {sent} sent, {acknowledged} acknowledged, {rate:.0f} msg/s, "
            f"simulated time {simulated:%Y-%m-%d %H:%M} (Stockholm)"
        )


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (a clean stop) while inside; the old handlers come back."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; whoever started us owns ``stop``
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_backfill(settings: Settings, args: argparse.Namespace) -> int:
    """``carewatch simulate --backfill DURATION``: history into the database (tools.backfill)
    instead of traffic to the broker. 0 when written, 2 for refused arguments, 1 when the
    database refused or was away."""
    import psycopg

    from carewatch.errors import AdminError
    from carewatch.rollup_rebuild import parse_moment
    from devices.history import BACKFILL_PROFILES, History
    from devices.simulator import without_random_checks
    from tools import backfill

    try:
        options = SimulateOptions.from_args(args)
        length = backfill.parse_duration(args.backfill)
        if args.until:
            end = parse_moment(args.until, "--until")
        else:
            end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        history = History(
            options.devices,
            start=end - length,
            end=end,
            seed=options.seed,
            id_prefix=options.id_prefix,
            heartbeat_every_s=args.heartbeat_every,
            # The cameras check when their plans say (tools.backfill), not at random.
            profiles=tuple(without_random_checks(p) for p in BACKFILL_PROFILES),
        )
        result = backfill.backfill(
            settings.database_url,
            history,
            options.site,
            register=register,
            progress=lambda line: print(line, flush=True),
            seed=options.seed,
        )
    except (ValueError, AdminError, backfill.BackfillRefusedError) as exc:
        log.error("%s", exc)
        return 2
    except psycopg.Error as exc:
        log.error("cannot backfill: %s", exc)
        return 1
    print(
        f"simulate: backfilled {result.start.isoformat()} .. {result.end.isoformat()}: "
        f"{result.events} events, {result.alerts} alerts, {result.rollup_rows} counted in the "
        f"rollups, {result.checks} planned checks of {result.residences} residence(s) judged, "
        f"in {result.seconds:.0f} s",
        flush=True,
    )
    return 0
