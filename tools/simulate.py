"""``carewatch simulate``: publishes the traffic of a simulated fleet (``devices.simulator``).

The fleet model is pure and knows no clock; this module is its edge. It moves simulated time
forward by ``speed`` x the wall-clock time that passed, publishes what the fleet says is due
(QoS 1, ``--rate`` capping messages per second), prints a progress line every few seconds,
and stops after ``--duration`` or on Ctrl-C/SIGTERM.

One MQTT connection publishes for every simulated device. Real devices each have their own
connection, credentials and Last Will; the fleet model publishes the ``offline`` status itself
where a broker would have published a device's will. A clean stop of the simulator is not its
devices going offline, so it does not publish ``offline`` for them: it just disconnects.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from carewatch.settings import MqttEndpoint, Settings
from devices.simulator import Fleet, Outgoing, SimDevice
from gateway.transport import client_ssl_context

__all__ = [
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
# Publishes the broker has not acknowledged yet, beyond which we wait: bounds our memory when
# the broker is slow or away, instead of queueing the whole simulated future in paho.
_MAX_UNACKED: Final = 10_000
# Paho keeps at most this many QoS 1 messages on the wire; its default of 20 would make the
# round trip, not the broker, the limit. (Mosquitto also caps it: max_inflight_messages.)
_MAX_INFLIGHT: Final = 1000
_CONNECT_TIMEOUT_S: Final = 10.0
# On stop, how long to wait for the PUBACKs of what was already published.
_DRAIN_TIMEOUT_S: Final = 10.0
_KEEPALIVE_S: Final = 30
_RECONNECT_MIN_S: Final = 1
_RECONNECT_MAX_S: Final = 30
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
    acknowledged: int  # PUBACKed by the broker
    elapsed_s: float
    simulated_until: datetime


def fleet_for(
    n_devices: int, *, seed: int = 1, start: datetime | None = None, id_prefix: str = "sim"
) -> Fleet:
    """The fleet that ``carewatch simulate --devices n --seed seed`` publishes.

    Device ids depend only on ``n_devices`` and ``id_prefix``, so the registry and the
    publisher agree on them whenever each builds its fleet.
    """
    moment = start if start is not None else datetime.now(UTC)
    return Fleet(n_devices, seed=seed, start=moment, id_prefix=id_prefix)


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
    stop = threading.Event()
    with stop_on_signals(stop):
        try:
            stats = publish_fleet(settings, options, fleet, stop=stop)
        except ConnectError as exc:
            log.error("%s", exc)
            return 1
    rate = stats.sent / stats.elapsed_s if stats.elapsed_s > 0 else 0.0
    print(
        f"simulate: done, {stats.sent} messages sent, {stats.acknowledged} acknowledged, "
        f"in {stats.elapsed_s:.1f} s ({rate:.0f} msg/s), simulated until "
        f"{stats.simulated_until.isoformat(timespec='seconds')}",
        flush=True,
    )
    return 0


def publish_fleet(
    settings: Settings,
    options: SimulateOptions,
    fleet: Fleet,
    *,
    stop: threading.Event,
    report: Callable[[str], None] = lambda line: print(line, flush=True),
) -> PublishStats:
    """Publishes the fleet's traffic until ``options.duration_s`` has passed or ``stop`` is set.

    Blocking; ``carewatch demo`` may run it in a thread and set ``stop`` to end it.
    """
    bucket = TokenBucket(options.rate) if options.rate is not None else None
    max_ahead = timedelta(seconds=settings.max_clock_skew_s * _AHEAD_FRACTION)
    publisher = _Publisher(settings.mqtt, stop, ca_file=settings.mqtt_ca_file)
    publisher.connect()
    sim_start = fleet.now
    started = time.monotonic()
    deadline = started + options.duration_s if options.duration_s is not None else None
    progress = _Progress(report, started)
    capped = False

    def publish(messages: list[Outgoing]) -> bool:
        for message in messages:
            if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                return False
            if bucket is not None and not bucket.wait(stop):
                return False
            if not publisher.publish(message):
                return False
        return True

    try:
        running = publish(fleet.birth())
        while running and not stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            target = sim_start + timedelta(seconds=(now - started) * options.speed)
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
            running = publish(fleet.advance(target))
            progress.maybe_report(publisher.sent, publisher.acknowledged, fleet.now)
            stop.wait(_TICK_S)
        publisher.drain(_DRAIN_TIMEOUT_S)
    finally:
        publisher.close()
    return PublishStats(
        sent=publisher.sent,
        acknowledged=publisher.acknowledged,
        elapsed_s=time.monotonic() - started,
        simulated_until=fleet.now,
    )


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

    def wait(self, stop: threading.Event) -> bool:
        """Blocks until a token is taken (True) or ``stop`` is set (False)."""
        while (delay_s := self.take()) > 0:
            if stop.wait(delay_s):
                return False
        return True


class ConnectError(Exception):
    """The simulator could not connect to the broker at start."""

    def __init__(self, endpoint: MqttEndpoint, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"could not connect to the MQTT broker at {endpoint!r}: {reason}")


class _Publisher:
    """One paho-mqtt client publishing for the whole fleet, with a bound on unacknowledged messages.

    Paho's network thread (``loop_start``) sends, receives PUBACKs and reconnects with its own
    backoff; messages published while it is disconnected stay in its queue and go out after
    the reconnect.
    """

    def __init__(self, endpoint: MqttEndpoint, stop: threading.Event, *, ca_file: str) -> None:
        """``ca_file``: with an mqtts:// endpoint, the CA the broker is verified against
        (empty: the system's CAs)."""
        self._endpoint = endpoint
        self._stop = stop
        self._acked = threading.Condition()
        self.sent = 0
        self.acknowledged = 0
        self._connected = threading.Event()
        self._refused: str | None = None
        # Unique per run, so that two simulators do not take over each other's connection.
        client_id = f"carewatch-simulator-{socket.gethostname()}-{os.getpid()}"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if endpoint.username:
            client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls:
            client.tls_set_context(client_ssl_context(ca_file))
        client.reconnect_delay_set(_RECONNECT_MIN_S, _RECONNECT_MAX_S)
        client.max_inflight_messages_set(_MAX_INFLIGHT)
        client.max_queued_messages_set(0)  # unlimited: _MAX_UNACKED is the bound
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client

    def connect(self) -> None:
        endpoint = self._endpoint
        try:
            self._client.connect(endpoint.host, endpoint.port, _KEEPALIVE_S, clean_start=True)
        except OSError as exc:
            raise ConnectError(endpoint, str(exc) or type(exc).__name__) from exc
        self._client.loop_start()
        deadline = time.monotonic() + _CONNECT_TIMEOUT_S
        while not self._connected.wait(0.1):
            if self._refused is not None or time.monotonic() > deadline or self._stop.is_set():
                self.close()
                raise ConnectError(endpoint, self._refused or "no CONNACK")

    def publish(self, message: Outgoing) -> bool:
        """Publishes at QoS 1; waits while too much is unacknowledged. False if stopped."""
        with self._acked:
            while self.sent - self.acknowledged >= _MAX_UNACKED:
                if self._stop.is_set():
                    return False
                self._acked.wait(0.2)
            self.sent += 1
        # Outside the lock: paho calls on_publish (which takes it) from its own thread.
        self._client.publish(message.topic, message.payload, qos=1, retain=message.retain)
        return True

    def drain(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._acked:
            while self.acknowledged < self.sent and time.monotonic() < deadline:
                self._acked.wait(0.1)
        if self.acknowledged < self.sent:
            log.warning(
                "stopping with %d publish(es) not acknowledged by the broker",
                self.sent - self.acknowledged,
            )

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    # --- paho callbacks, in its network thread ----------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            log.warning("broker %r refused the connection: %s", self._endpoint, reason_code)
            return
        log.info("connected to %r", self._endpoint)
        self._connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("disconnected from %r (%s); paho reconnects", self._endpoint, reason_code)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._acked:
            self.acknowledged += 1
            self._acked.notify_all()


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
    from devices.history import History
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
        )
        result = backfill.backfill(
            settings.database_url,
            history,
            options.site,
            register=register,
            progress=lambda line: print(line, flush=True),
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
        f"rollups, in {result.seconds:.0f} s",
        flush=True,
    )
    return 0
