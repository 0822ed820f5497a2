"""``carewatch bench alerts``: from an alert-triggering publish to its arrival on an SSE client
(the board), at a webhook receiver and at a phone's push service.

On private PostgreSQL and Mosquitto instances in a temporary directory (PostgreSQL with the
ingest benchmark's settings, durable defaults; the broker from the shipped configuration, with
its authentication and ACL: the gateway connects as the gateway, every publisher of this run
as the simulator):

1. migrate; register the background devices (the ingest benchmark's fleet, four kinds), one
   device per alert and a probe alarm button, all at one site; add a caregiver and an admin
   of the site's organisation;
2. start a webhook receiver and a Web Push service on loopback in this process (each checks
   what it gets as a real one would: the HMAC signature, :mod:`tools.local.webhook_receiver`;
   VAPID and the RFC 8291 decryption, :mod:`tools.local.push_service`), then
   ``python -m gateway``, ``python -m api`` and ``python -m notifier`` as production runs them,
   the API and the notifier with a VAPID key made for this run (and ``http://`` push endpoints
   allowed on loopback, the one setting a deployment does not have);
3. through the API as its clients do: the admin registers a webhook at the receiver for
   ``alert.opened`` and ``alert.updated``, of the response rules and the other measured rules
   (``lock_jammed``, ``camera_stream_lost``), so that every measured alert change is also a
   webhook; the caregiver logs in, subscribes a browser to Web Push at the push service (the
   key from ``GET /api/v1/push/vapid-public-key``) and opens ``GET /api/v1/alerts/stream`` in
   a reader thread;
4. publish a probe alarm until its ``alert.opened`` arrives on the stream, at the receiver and
   at the push service: every part is up, caches warm;
5. for ``--duration`` seconds: the ingest benchmark's publisher processes send the background
   workload (mostly heartbeats, the everyday events of each kind) paced at ``--rate`` in
   total (1 % above it, so that the achieved average is not below), while this process
   publishes the alert events at QoS 1, evenly spread over the run:
   ``alarm.pressed``, ``lock.jammed`` and ``camera.stream_lost``, each on a device of its own
   (so each opens a new alert: ``alert.opened``), and ``--repeats`` second presses of alarm
   buttons pressed half a run earlier (``alert.updated`` with count 2);
6. wait up to ``--grace`` seconds for the alerts, webhooks and pushes still on their way.

Latency is the arrival of the first ``alert.opened``/``alert.updated`` for (device, rule,
count) on the stream minus ``time.time()`` just before the PUBLISH was written to the socket;
both clocks are read in this process. The webhook's arrival is the moment the receiver's
handler started on the first request for it whose signature verified; the push's, the same at
the push service for the first ``alert.opened`` push of the alert that verified and decrypted.
Pushes are measured for the alarm presses that open an alert only: the notifier pushes a new
alert of a response rule, not a repeat, nor a jammed lock or a lost stream. It pushes whether
or not a board is open (the contract's condition is that nobody has taken the alarm), so the
caregiver with the stream open is the one pushed. What has not arrived at the end of the
grace is lost. Percentiles are nearest-rank. The achieved background rate is what the
publishers had acknowledged per second; the gateway's ``carewatch_events_stored_total`` says
how fast it stored over the same time (background and alert events).

The receivers share this process with the stream's reader and the alert publisher (threads):
what they note is when the request reached Python, which a busy interpreter delays a little.

Progress goes to stderr, the table (and with ``--json`` a last line of JSON) to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import httpx
import orjson
import psycopg
from httpx_sse import EventSource, SSEError

from broker.mosquitto import MosquittoInstance
from carewatch import admin
from carewatch.db.migrate import migrate
from carewatch.processes import free_port
from devices.response import DEFAULT_POLICY
from devices.simulator import events_topic
from tools.bench import add_alerts_arguments, workload
from tools.bench.children import BenchChild
from tools.bench.errors import BenchError
from tools.bench.harness import (
    BENCH_ORG,
    BENCH_SITE,
    START_TIMEOUT_S,
    add_bench_site,
    answer_json,
    api_url,
    default_retention_days,
    gateway_env,
    login,
    machine,
    module_main,
    print_report,
    run_benchmark,
    start_api,
    start_gateway,
    wait_ready,
)
from tools.bench.ingest import POSTGRES_SETTINGS
from tools.bench.publishers import Mqtt5Publishers, PublishReport, Qos1Connection
from tools.local.identities import LocalIdentities
from tools.local.postgres import PostgresInstance
from tools.local.push_service import Pushed, PushService, Subscriber, VapidKeys
from tools.local.webhook_receiver import Received, Receiver
from tools.metrics import metrics_url, sample_sums

# By name: run as ``python -m tools.bench.alerts`` this module is __main__.
log = logging.getLogger("tools.bench.alerts")

_USER: Final = "bench-caregiver"
_ADMIN: Final = "bench-admin"  # registers the webhook, as an organisation's admin does
_DATABASE: Final = "carewatch"
_PROBE_TIMEOUT_S: Final = 30.0
# The background publishers get this long beyond --duration to have every PUBACK.
_PUBLISHERS_EXTRA_S: Final = 60.0
# An SSE read that sees nothing for this long (the API sends a keepalive every 15 s) is a
# dead connection: the reader reconnects with Last-Event-ID, as a browser does.
_SSE_READ_TIMEOUT_S: Final = 60.0
_SSE_RECONNECT_S: Final = 0.5
# The background is paced this much above --rate: the achieved rate (acknowledged events over
# the time from the first send to the last PUBACK) loses a little to the start and the end, and
# --rate is a floor.
_RATE_HEADROOM: Final = 1.01
# Warn when the background load fell short of --rate by more than this share.
_RATE_TOLERANCE: Final = 0.02
_STORED_METRIC: Final = "carewatch_events_stored_total"
_METRICS_TIMEOUT_S: Final = 5.0
# The notifier is ready once it listens on the database (its metric says so).
_NOTIFIER_READY_METRIC: Final = "carewatch_notifier_database_connected"
# The webhook's endpoint at the receiver, and the events it asks for: what is measured.
_WEBHOOK_PATH: Final = "/carewatch"
_WEBHOOK_EVENTS: Final = ("alert.opened", "alert.updated")
# What the notifier pushes (notifier.push): a new alert of a response rule.
_PUSHED_EVENT: Final = "alert.opened"
_VAPID_SUBJECT: Final = "mailto:bench@carewatch.invalid"
# How often the receivers' takings are read while waiting for the last deliveries.
_DELIVERY_POLL_S: Final = 0.05


class _Alert:
    """What each alert device publishes, and the rule it opens."""

    def __init__(self, kind: str, event_type: str, rule: str) -> None:
        self.kind = kind
        self.event_type = event_type
        self.rule = rule


# Half alarm buttons (the critical path, and the ones that get repeats), a quarter each of
# jammed locks and lost camera streams.
_ALERT_MIX: Final = (
    _Alert("alarm_button", "alarm.pressed", "alarm_pressed"),
    _Alert("door_lock", "lock.jammed", "lock_jammed"),
    _Alert("alarm_button", "alarm.pressed", "alarm_pressed"),
    _Alert("safety_camera", "camera.stream_lost", "camera_stream_lost"),
)
_PROBE = _Alert("alarm_button", "alarm.pressed", "alarm_pressed")
_PROBE_DEVICE: Final = "bench-probe-alarm"
# The webhook hears the response rules without asking; these it asks for besides.
_WEBHOOK_RULES: Final = sorted({alert.rule for alert in _ALERT_MIX} - DEFAULT_POLICY.rules)

# (device id, rule, count): what one measured alert change is recognised by on the stream.
Key = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class Options:
    """The options of ``carewatch bench alerts``, checked."""

    rate: float
    duration_s: float
    alerts: int
    repeats: int
    devices: int
    publishers: int
    grace_s: float
    json: bool
    keep: bool

    @property
    def background_events(self) -> int:
        """How many background events the run publishes (``--rate`` over ``--duration``)."""
        return max(1, math.ceil(self.rate * _RATE_HEADROOM * self.duration_s))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        """The options given on the command line; ValueError for values that cannot work."""
        alerts: int = args.alerts
        repeats: int | None = args.repeats
        options = cls(
            rate=args.rate,
            duration_s=args.duration,
            alerts=alerts,
            repeats=alerts // 10 if repeats is None else repeats,
            devices=args.devices,
            publishers=args.publishers,
            grace_s=args.grace,
            json=args.json,
            keep=args.keep,
        )
        if not (options.rate > 0 and options.duration_s > 0 and options.grace_s >= 0):
            raise ValueError("--rate and --duration must be > 0, --grace >= 0")
        if min(options.alerts, options.devices, options.publishers) < 1 or options.repeats < 0:
            raise ValueError("--alerts, --devices and --publishers must be >= 1, --repeats >= 0")
        if options.publishers > options.devices:
            raise ValueError("--publishers must not exceed --devices (each owns its devices)")
        return options


# --- the alerts to publish ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertDevice:
    """A device of its own for one alert: what it publishes opens a new alert."""

    id: str
    alert: _Alert

    @property
    def topic(self) -> str:
        """Where it publishes its events."""
        return events_topic(self.id)


@dataclass(frozen=True, slots=True)
class PlannedAlert:
    """One alert-triggering publish of the run: when, on which device, and what it changes."""

    at_s: float  # after the start of the run
    device: AlertDevice
    count: int  # the alert's count once this event is stored: 1 opens it, 2 is a repeat
    event_id: str

    @property
    def key(self) -> Key:
        """How its alert change is recognised on the stream."""
        return (self.device.id, self.device.alert.rule, self.count)


def alert_devices(count: int) -> tuple[AlertDevice, ...]:
    """One device per new alert, the kinds of ``_ALERT_MIX`` in turn."""
    return tuple(
        AlertDevice(f"bench-alert-{number:05d}", _ALERT_MIX[number % len(_ALERT_MIX)])
        for number in range(count)
    )


def plan(devices: tuple[AlertDevice, ...], repeats: int, duration_s: float) -> list[PlannedAlert]:
    """Every device's first event evenly over the run; ``repeats`` alarm buttons of the first
    half pressed again half a run later. Sorted by time."""
    step_s = duration_s / len(devices)
    planned = [
        PlannedAlert((number + 0.5) * step_s, device, 1, "a1")
        for number, device in enumerate(devices)
    ]
    candidates = [
        first
        for first in planned
        if first.device.alert.kind == "alarm_button" and first.at_s < duration_s / 2
    ]
    if repeats > len(candidates):
        raise ValueError(
            f"--repeats {repeats}: only {len(candidates)} alarm buttons are pressed in the first "
            "half of the run (raise --alerts)"
        )
    for number in range(repeats):
        first = candidates[number * len(candidates) // repeats]
        planned.append(PlannedAlert(first.at_s + duration_s / 2, first.device, 2, "a2"))
    return sorted(planned, key=lambda item: item.at_s)


# --- the SSE client ----------------------------------------------------------------------------


class AlertStream:
    """``GET /api/v1/alerts/stream`` read event by event (httpx-sse) in a thread.

    Records, for every alert change of the stream, when it was read (``time.time()``), the
    first time each (device, rule, count) was seen. ``alert.opened`` counts as count 1
    whatever the row says by the time it was read; ``alert.updated`` carries the alert's
    count. If the stream ends, it reconnects with ``Last-Event-ID``, as a browser does.
    """

    def __init__(self, base_url: str, token: str) -> None:
        self._url = f"{base_url}/api/v1/alerts/stream"
        self._token = token
        self.arrivals: dict[Key, float] = {}
        self.reconnects = 0
        self._last_event_id: str | None = None
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=_SSE_READ_TIMEOUT_S))
        self._response: httpx.Response | None = None
        try:
            events = self._open()
        except BaseException:
            self._client.close()
            raise
        self._thread = threading.Thread(
            target=self._run, args=(events,), name="sse-reader", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open(self) -> EventSource:
        headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {self._token}"}
        if self._last_event_id is not None:
            headers["Last-Event-ID"] = self._last_event_id
        request = self._client.build_request("GET", self._url, headers=headers)
        response = self._client.send(request, stream=True)
        self._response = response
        if response.status_code != 200:
            body = response.read()[:500]
            response.close()
            raise BenchError(f"alert stream answered {response.status_code}: {body!r}")
        return EventSource(response)

    def _run(self, first: EventSource) -> None:
        events: EventSource | None = first
        while not self._closing.is_set():
            try:
                if events is None:
                    events = self._open()
                    self.reconnects += 1
                    log.warning("alert stream reconnected after event %s", self._last_event_id)
                self._read(events)
            except (httpx.HTTPError, SSEError, OSError, ValueError, BenchError) as error:
                if not self._closing.is_set():
                    log.warning("alert stream broke (%r)", error)
            finally:
                if events is not None:
                    events.response.close()
            events = None
            if self._closing.wait(_SSE_RECONNECT_S):
                return

    def _read(self, events: EventSource) -> None:
        for message in events.iter_sse():
            arrived_at = time.time()
            if message.id:
                self._last_event_id = message.id
            if message.event in ("alert.opened", "alert.updated"):
                alert = orjson.loads(message.data)
                count = 1 if message.event == "alert.opened" else int(alert["count"])
                key = (str(alert["device_id"]), str(alert["rule"]), count)
                with self._changed:
                    self.arrivals.setdefault(key, arrived_at)
                    self._changed.notify_all()
        if not self._closing.is_set():
            log.warning("alert stream ended by the server")

    def wait_for(self, keys: Iterable[Key], timeout_s: float) -> bool:
        """Wait until every key has arrived; False if some had not after ``timeout_s``."""
        wanted = set(keys)
        with self._changed:
            return self._changed.wait_for(lambda: wanted <= self.arrivals.keys(), timeout_s)

    def snapshot(self) -> dict[Key, float]:
        """What has arrived so far, and when."""
        with self._changed:
            return dict(self.arrivals)

    def close(self) -> None:
        """Stop reading and close the connection."""
        self._closing.set()
        response = self._response
        # Shut the socket down first: the reader sees the end and stops, then it is closed.
        if response is not None:
            sock = response.extensions["network_stream"].get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5.0)
        self._client.close()


# --- the webhook receiver and the push service --------------------------------------------------

_ALERTS_BY_ID: Final = "SELECT id, device_id, rule FROM alerts WHERE id = ANY (%s::bigint[])"


def webhook_key(request: Received) -> Key | None:
    """The alert change a verified webhook delivery is about; None for anything else."""
    if request.refusal is not None:
        return None
    body = request.json()
    event = body.get("event")
    if event not in _WEBHOOK_EVENTS:
        return None
    alert = body["alert"]
    # As on the stream: alert.opened is count 1 whatever the row said when it was enqueued.
    count = 1 if event == "alert.opened" else int(alert["count"])
    return (str(alert["device_id"]), str(alert["rule"]), count)


def webhook_arrivals(requests: Iterable[Received]) -> dict[Key, float]:
    """When the first verified delivery of each alert change arrived (at-least-once delivery:
    a repeat is not a new arrival)."""
    arrivals: dict[Key, float] = {}
    for request in requests:
        key = webhook_key(request)
        if key is not None:
            arrivals[key] = min(arrivals.get(key, math.inf), request.received_at)
    return arrivals


def opened_pushes(pushes: Iterable[Pushed]) -> dict[int, float]:
    """Alert id -> when its first verified, decrypted ``alert.opened`` push arrived."""
    first: dict[int, float] = {}
    for push in pushes:
        payload = push.payload
        if push.refusal is None and payload is not None and payload["event"] == _PUSHED_EVENT:
            alert_id = int(payload["alert_id"])
            first[alert_id] = min(first.get(alert_id, math.inf), push.received_at)
    return first


def push_arrivals(
    opened: Mapping[int, float], alerts: Mapping[int, tuple[str, str]]
) -> dict[Key, float]:
    """:func:`opened_pushes` by alert change: ``alerts`` says each id's (device, rule)."""
    return {(*alerts[alert_id], 1): at for alert_id, at in opened.items() if alert_id in alerts}


def pushed_changes(published: Mapping[Key, float]) -> dict[Key, float]:
    """The published alert changes the notifier pushes: new alerts of a response rule."""
    return {
        key: sent_at
        for key, sent_at in published.items()
        if key[2] == 1 and key[1] in DEFAULT_POLICY.rules
    }


class _AlertNames:
    """Each alert id's (device, rule), read from the database once: a push names its alert by
    id only."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._known: dict[int, tuple[str, str]] = {}

    def of(self, ids: Iterable[int]) -> dict[int, tuple[str, str]]:
        """Every id's (device, rule) known so far, ``ids`` included."""
        missing = sorted(set(ids) - self._known.keys())
        if missing:
            for alert_id, device_id, rule in self._conn.execute(_ALERTS_BY_ID, (missing,)):
                self._known[alert_id] = (device_id, rule)
        return self._known


@dataclass(frozen=True, slots=True)
class _Listeners:
    """Where the notifier delivers: the webhook's receiver, and the caregiver's phone at the
    push service; with what the webhook's and the pushes' arrivals are about."""

    receiver: Receiver
    push_service: PushService
    phone: Subscriber
    names: _AlertNames

    def webhooks(self) -> dict[Key, float]:
        """Each alert change's first verified webhook delivery, when it arrived."""
        return webhook_arrivals(self.receiver.received(_WEBHOOK_PATH))

    def pushes(self) -> dict[Key, float]:
        """Each new alert's first verified ``alert.opened`` push, when it arrived."""
        opened = opened_pushes(self.push_service.received(self.phone))
        return push_arrivals(opened, self.names.of(opened))

    def refused(self) -> tuple[int, int]:
        """Webhook deliveries and pushes that did not verify (or decrypt): answered 401."""
        return (
            sum(r.refusal is not None for r in self.receiver.received(_WEBHOOK_PATH)),
            sum(p.refusal is not None for p in self.push_service.received(self.phone)),
        )

    def wait_for(
        self, webhooks: Iterable[Key], pushes: Iterable[Key], deadline: float, services: _Services
    ) -> bool:
        """Wait until ``webhooks`` and ``pushes`` have all arrived, or ``deadline`` (monotonic)
        passes; False then."""
        wanted_webhooks, wanted_pushes = set(webhooks), set(pushes)
        while not (
            wanted_webhooks <= self.webhooks().keys() and wanted_pushes <= self.pushes().keys()
        ):
            if time.monotonic() >= deadline:
                return False
            services.check_alive()
            time.sleep(_DELIVERY_POLL_S)
        return True


def _register(
    base_url: str, listeners: _Listeners, vapid: VapidKeys, *, admin_token: str, user_token: str
) -> None:
    """Through the API as its clients do: the admin's webhook at the receiver, the caregiver's
    push subscription at the push service."""
    with httpx.Client(base_url=f"{base_url}/api/v1", timeout=10.0) as client:
        as_admin = {"Authorization": f"Bearer {admin_token}"}
        as_user = {"Authorization": f"Bearer {user_token}"}
        created = answer_json(
            client.post(
                "/webhooks",
                json={
                    "url": listeners.receiver.url(_WEBHOOK_PATH),
                    "events": list(_WEBHOOK_EVENTS),
                    "rules": _WEBHOOK_RULES,
                    "description": "carewatch bench alerts",
                },
                headers=as_admin,
            ),
            "creating the webhook",
        )
        listeners.receiver.expect(_WEBHOOK_PATH, created["secret"])
        # What the board does: the key from the API, then PushManager.subscribe, then the post.
        served = answer_json(client.get("/push/vapid-public-key", headers=as_user), "VAPID key")
        if served["public_key"] != vapid.public_b64:
            raise BenchError("the API serves another VAPID key than this run's")
        answer_json(
            client.post("/push/subscriptions", json=listeners.phone.json(), headers=as_user),
            "subscribing to Web Push",
        )


# --- metrics -----------------------------------------------------------------------------------


def stored_total(client: httpx.Client, url: str) -> float:
    """The gateway's ``carewatch_events_stored_total`` at ``url``, summed over its kinds."""
    return sample_sums(client, url).get(_STORED_METRIC, 0.0)


def _wait_stored(client: httpx.Client, url: str, target: float, deadline: float) -> float:
    """Poll the stored count until it reaches ``target`` or ``deadline`` (monotonic) passes."""
    while True:
        stored = stored_total(client, url)
        if stored >= target or time.monotonic() >= deadline:
            return stored
        time.sleep(0.1)


# --- statistics --------------------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest rank: the smallest value that at least ``fraction`` of the values do not exceed."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(
    published: Mapping[Key, float], arrivals: Mapping[Key, float]
) -> dict[str, Any]:
    """Count, lost and the latency statistics (ms) of the published alert changes."""
    latencies = sorted(
        (arrivals[key] - sent_at) * 1000.0 for key, sent_at in published.items() if key in arrivals
    )
    result: dict[str, Any] = {"arrived": len(latencies), "lost": len(published) - len(latencies)}
    for name, fraction in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        result[name] = round(percentile(latencies, fraction), 1) if latencies else None
    result["max_ms"] = round(latencies[-1], 1) if latencies else None
    result["min_ms"] = round(latencies[0], 1) if latencies else None
    result["mean_ms"] = round(sum(latencies) / len(latencies), 1) if latencies else None
    return result


# --- the run -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What one run measured."""

    published: dict[Key, float]
    arrivals: dict[Key, float]
    webhooks: dict[Key, float]  # arrivals at the webhook receiver
    pushes: dict[Key, float]  # arrivals at the push service
    webhook_refused: int
    push_refused: int
    no_subscribers: int
    background: PublishReport
    stored_eps: float
    unstored: int
    reconnects: int
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class _Services:
    """The run's broker, gateway and API, started and answering."""

    simulator_url: str  # the broker, as the publishers of this run connect to it
    api_url: str
    metrics_url: str  # the gateway's
    children: tuple[BenchChild, ...]

    def check_alive(self) -> None:
        """Raise if the gateway, the API or the notifier has exited."""
        for child in self.children:
            child.check_alive()


@dataclass(frozen=True, slots=True)
class _Load:
    """What the timed part did: the alerts published, the background, the stored counts."""

    published: dict[Key, float]
    no_subscribers: int
    background: PublishReport
    started_at: float
    stored_before: float
    stored_after: float
    stored_at: float


@dataclass(frozen=True, slots=True)
class _Passwords:
    """The passwords of the run's caregiver and admin, made up for it."""

    caregiver: str
    admin: str


def _seed(url: str, fleet: Iterable[workload.Device], targets: Iterable[AlertDevice]) -> _Passwords:
    """Org, site, devices, the caregiver and the admin; their passwords."""
    passwords = _Passwords(secrets.token_urlsafe(24), secrets.token_urlsafe(24))
    rows = [(device.id, device.kind, f"Lgh {n}") for n, device in enumerate(fleet)]
    rows += [(device.id, device.alert.kind, f"Larm {device.id[-5:]}") for device in targets]
    rows.append((_PROBE_DEVICE, _PROBE.kind, "Probe"))
    with psycopg.connect(url, autocommit=True) as conn:
        add_bench_site(conn, rows)
        admin.add_user(conn, _USER, BENCH_ORG, "caregiver", passwords.caregiver, [BENCH_SITE])
        admin.add_user(conn, _ADMIN, BENCH_ORG, "admin", passwords.admin, [])
    return passwords


def _start_services(
    stack: contextlib.ExitStack, base_dir: Path, url: str, vapid: VapidKeys
) -> _Services:
    """The broker, ``python -m gateway``, ``python -m api`` and ``python -m notifier``,
    stopped when ``stack`` closes."""
    logs = base_dir / "logs"
    identities = LocalIdentities()
    broker = stack.enter_context(MosquittoInstance(base_dir / "mosquitto", auth=identities.auth()))
    metrics_port, api_port, notifier_port = free_port(), free_port(), free_port()
    env = gateway_env(url, identities.gateway_url(broker), metrics_port)
    # The API and the notifier need the same VAPID key: the API serves its public half to the
    # browser that subscribes, the notifier signs every push with it. The push service of this
    # run is on loopback over http, which only this setting lets the API accept.
    web_push = {
        "CAREWATCH_VAPID_PRIVATE_KEY": vapid.private_pem,
        "CAREWATCH_VAPID_SUBJECT": _VAPID_SUBJECT,
        "CAREWATCH_PUSH_ALLOW_HTTP_LOOPBACK": "true",
    }
    # The API does not connect to the broker (it only tells onboarded devices where it is,
    # without credentials): it gets the address, not the gateway's password.
    api_env = {**env, **web_push, "CAREWATCH_MQTT_URL": broker.url()}
    notifier_env = {**api_env, "CAREWATCH_NOTIFIER_METRICS_PORT": str(notifier_port)}
    gateway = stack.enter_context(start_gateway(env, logs / "gateway.log"))
    api = stack.enter_context(start_api(api_port, api_env, logs / "api.log"))
    notifier = stack.enter_context(
        BenchChild(
            "notifier",
            [sys.executable, "-m", "notifier"],
            log_path=logs / "notifier.log",
            env=notifier_env,
            stdout="log",
            stdin_pipe=False,
        )
    )
    wait_ready(metrics_url(metrics_port), gateway)
    wait_ready(f"{api_url(api_port)}/readyz", api)
    _wait_listening(metrics_url(notifier_port), notifier)
    return _Services(
        simulator_url=identities.simulator_url(broker),
        api_url=api_url(api_port),
        metrics_url=metrics_url(metrics_port),
        children=(gateway, api, notifier),
    )


def _wait_listening(url: str, notifier: BenchChild) -> None:
    """Wait until the notifier listens on the database (its metrics at ``url`` say so)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=1.0) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if sample_sums(client, url).get(_NOTIFIER_READY_METRIC) == 1.0:
                    return
            notifier.check_alive()
            if time.monotonic() > deadline:
                raise notifier.failed(f"not listening within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.1)


def _probe(
    mqtt: Qos1Connection, stream: AlertStream, listeners: _Listeners, services: _Services
) -> None:
    """Press the probe alarm until the broker routes it, then wait for it on the stream, at
    the webhook receiver and at the push service."""
    log.info("probing: broker -> gateway -> PostgreSQL -> API -> stream, notifier -> receivers")
    deadline = time.monotonic() + _PROBE_TIMEOUT_S
    if not mqtt.publish_until_routed(
        events_topic(_PROBE_DEVICE),
        lambda number: workload.live_envelope(f"probe-{number}", _PROBE.event_type),
        deadline=deadline,
        check=services.check_alive,
    ):
        raise BenchError(f"the gateway did not subscribe within {_PROBE_TIMEOUT_S:.0f} s")
    key = (_PROBE_DEVICE, _PROBE.rule, 1)
    if not stream.wait_for([key], max(deadline - time.monotonic(), 1)):
        services.check_alive()
        raise BenchError("the probe alarm did not arrive on the alert stream")
    if not listeners.wait_for([key], [key], max(deadline, time.monotonic() + 1), services):
        missing = [
            where
            for where, arrived in (
                ("the webhook receiver", listeners.webhooks()),
                ("the push service", listeners.pushes()),
            )
            if key not in arrived
        ]
        webhooks_refused, pushes_refused = listeners.refused()
        raise BenchError(
            f"the probe alarm did not arrive at {' and '.join(missing)} ({webhooks_refused} "
            f"webhook deliveries and {pushes_refused} pushes refused; see the notifier's log)"
        )


def _publish_alerts(
    mqtt: Qos1Connection, schedule: list[PlannedAlert], started_at: float, services: _Services
) -> tuple[dict[Key, float], int]:
    """Publish each planned alert at its time; (publish times by key, how many found nobody)."""
    published: dict[Key, float] = {}
    no_subscribers = 0
    for item in schedule:
        delay_s = started_at + item.at_s - time.monotonic()
        if delay_s > 0:
            time.sleep(delay_s)
        payload = workload.live_envelope(item.event_id, item.device.alert.event_type)
        sent_at, routed = mqtt.publish(item.device.topic, payload)
        published[item.key] = sent_at
        if not routed:
            no_subscribers += 1
        services.check_alive()
    return published, no_subscribers


def _background(options: Options, base_dir: Path) -> tuple[workload.Workload, list[Path]]:
    """The background events and their publishers' share files, generated just before the
    run: their device times run from now over the run, at the pace they are sent, so that
    they are never far behind the clock (see workload.make_workload)."""
    data = workload.make_workload(
        events=options.background_events,
        devices=options.devices,
        publishers=options.publishers,
        now=datetime.now(UTC) + timedelta(seconds=options.duration_s),
        span_s=options.duration_s,
    )
    return data, workload.write_shares(data, base_dir / "shares")


def _measure(base_dir: Path, options: Options, url: str, passwords: _Passwords) -> Outcome:
    """Receivers, services, webhook and push subscription, stream, probe, the timed run under
    load, the grace; the numbers."""
    (base_dir / "logs").mkdir(exist_ok=True)
    schedule = plan(alert_devices(options.alerts), options.repeats, options.duration_s)
    vapid = VapidKeys.generate()
    with contextlib.ExitStack() as stack:
        push_service = stack.enter_context(PushService(vapid.public_b64))
        listeners = _Listeners(
            receiver=stack.enter_context(Receiver()),
            push_service=push_service,
            phone=push_service.subscriber(_USER),
            names=_AlertNames(stack.enter_context(psycopg.connect(url, autocommit=True))),
        )
        services = _start_services(stack, base_dir, url, vapid)
        metrics = stack.enter_context(httpx.Client(timeout=_METRICS_TIMEOUT_S))
        token = login(services.api_url, _USER, passwords.caregiver)
        _register(
            services.api_url,
            listeners,
            vapid,
            admin_token=login(services.api_url, _ADMIN, passwords.admin),
            user_token=token,
        )
        stream = stack.enter_context(AlertStream(services.api_url, token))
        mqtt = stack.enter_context(Qos1Connection(services.simulator_url, client_id="bench-alerts"))
        _probe(mqtt, stream, listeners, services)
        load = _run_under_load(base_dir, options, schedule, mqtt, metrics, services)
        log.info("published; waiting up to %.0f s for alerts, webhooks, pushes", options.grace_s)
        grace_ends = time.monotonic() + options.grace_s
        stream.wait_for(load.published, options.grace_s)
        arrivals = stream.snapshot()
        listeners.wait_for(load.published, pushed_changes(load.published), grace_ends, services)
        webhook_refused, push_refused = listeners.refused()
        # Every routed event of the run stored by the end of the grace?
        expected = (
            load.stored_before + load.background.acked + len(load.published) - load.no_subscribers
        )
        stored = _wait_stored(metrics, services.metrics_url, expected, grace_ends)
        return Outcome(
            published=load.published,
            arrivals=arrivals,
            webhooks=listeners.webhooks(),
            pushes=listeners.pushes(),
            webhook_refused=webhook_refused,
            push_refused=push_refused,
            no_subscribers=load.no_subscribers,
            background=load.background,
            stored_eps=(load.stored_after - load.stored_before)
            / max(load.stored_at - load.started_at, 1e-9),
            unstored=max(0, round(expected - stored)),
            reconnects=stream.reconnects,
            elapsed_s=load.stored_at - load.started_at,
        )


def _run_under_load(
    base_dir: Path,
    options: Options,
    schedule: list[PlannedAlert],
    mqtt: Qos1Connection,
    metrics: httpx.Client,
    services: _Services,
) -> _Load:
    """The timed part: the background publishers paced over ``--duration`` while this process
    publishes the planned alerts; the gateway's stored count before and after."""
    data, shares = _background(options, base_dir)
    with Mqtt5Publishers(
        mqtt_url=services.simulator_url,
        shares=shares,
        counts=data.share_counts(len(data.events)),
        log_dir=base_dir / "logs",
        tag="background",
        spread_over_s=options.duration_s,
    ) as publishers:
        stored_before = stored_total(metrics, services.metrics_url)
        log.info(
            "running %.0f s: %s background events/s, %s alerts + %s repeats",
            options.duration_s,
            f"{options.rate:,.0f}",
            options.alerts,
            options.repeats,
        )
        started_at = publishers.go()
        published, no_subscribers = _publish_alerts(mqtt, schedule, started_at, services)
        background = publishers.wait(options.duration_s + _PUBLISHERS_EXTRA_S)
        stored_after = stored_total(metrics, services.metrics_url)
        stored_at = time.monotonic()
    return _Load(
        published=published,
        no_subscribers=no_subscribers,
        background=background,
        started_at=started_at,
        stored_before=stored_before,
        stored_after=stored_after,
        stored_at=stored_at,
    )


def summary(options: Options, outcome: Outcome, facts: dict[str, Any]) -> dict[str, Any]:
    """The JSON object: the agreed keys first (the board's unprefixed, then the webhook's and
    the push's), then what explains them."""
    stats = latency_summary(outcome.published, outcome.arrivals)
    pushed = pushed_changes(outcome.published)
    channels = {
        "webhook": latency_summary(outcome.published, outcome.webhooks),
        "push": latency_summary(pushed, outcome.pushes),
    }
    background = outcome.background
    return {
        "alerts": options.alerts,
        "background_eps": round(background.eps, 1),
        "p50_ms": stats["p50_ms"],
        "p95_ms": stats["p95_ms"],
        "p99_ms": stats["p99_ms"],
        "max_ms": stats["max_ms"],
        "lost": stats["lost"],
        **{
            f"{channel}_{name}": numbers[name]
            for channel, numbers in channels.items()
            for name in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "lost")
        },
        "repeats": options.repeats,
        "measured": len(outcome.published),
        "arrived": stats["arrived"],
        "min_ms": stats["min_ms"],
        "mean_ms": stats["mean_ms"],
        "webhook_measured": len(outcome.published),
        "webhook_arrived": channels["webhook"]["arrived"],
        "webhook_min_ms": channels["webhook"]["min_ms"],
        "webhook_mean_ms": channels["webhook"]["mean_ms"],
        "webhook_refused": outcome.webhook_refused,
        "push_measured": len(pushed),
        "push_arrived": channels["push"]["arrived"],
        "push_min_ms": channels["push"]["min_ms"],
        "push_mean_ms": channels["push"]["mean_ms"],
        "push_refused": outcome.push_refused,
        "target_eps": options.rate,
        "gateway_stored_eps": round(outcome.stored_eps, 1),
        "background_events": background.acked,
        "duration_s": options.duration_s,
        "devices": options.devices,
        "publishers": options.publishers,
        "no_subscribers": outcome.no_subscribers + background.no_subscribers,
        "unstored_events": outcome.unstored,
        "stream_reconnects": outcome.reconnects,
        "grace_s": options.grace_s,
        **facts,
    }


def render_table(data: dict[str, Any]) -> str:
    """The human-readable report of :func:`summary`'s result."""

    def ms(value: float | None) -> str:
        return f"{value:,.1f} ms" if value is not None else "-"

    channels = ("", "webhook_", "push_")  # the board's keys have no prefix

    def row(label: str, cells: Iterable[str]) -> str:
        return f"{label:<10}" + "".join(f"{cell:>16}" for cell in cells)

    machine = data["machine"]
    lines = [
        f"Carewatch alert benchmark: {data['measured']} alert changes ({data['alerts']} opened, "
        f"{data['repeats']} repeats) over {data['duration_s']:.0f} s, publish (QoS 1) to "
        "arrival on an SSE client (board), at a webhook receiver (webhook) and at a push "
        f"service (push: the {data['push_measured']} alarm presses that open an alert)",
        f"background: {data['background_events']:,} events from {data['devices']} devices by "
        f"{data['publishers']} publishers, {data['background_eps']:,.0f} events/s achieved "
        f"(target {data['target_eps']:,.0f}); gateway stored {data['gateway_stored_eps']:,.0f}/s",
        f"PostgreSQL {machine['postgres']}, Mosquitto {machine['mosquitto']}, "
        f"{machine['cpus']} CPUs shared by everything",
        "",
        row("", ("board", "webhook", "push")),
        *(
            row(name, (ms(data[f"{channel}{name}_ms"]) for channel in channels))
            for name in ("p50", "p95", "p99", "max")
        ),
        row("arrived", (f"{data[f'{c}arrived']} of {data[f'{c}measured']}" for c in channels)),
        row("lost", (str(data[f"{channel}lost"]) for channel in channels)),
        f"(lost: not arrived {data['grace_s']:.0f} s after the end; refused, not counted as "
        f"arrived: {data['webhook_refused']} webhook deliveries, {data['push_refused']} pushes)",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """``carewatch bench alerts``; the exit code."""
    try:
        options = Options.from_args(args)
        plan(alert_devices(options.alerts), options.repeats, options.duration_s)
    except ValueError as error:
        print(f"carewatch bench alerts: {error}", file=sys.stderr)
        return 2
    return run_benchmark(
        lambda base_dir: _run_in(base_dir, options),
        dir_prefix="carewatch-bench-alerts-",
        keep=options.keep,
    )


def _run_in(base_dir: Path, options: Options) -> int:
    started = time.monotonic()
    with PostgresInstance(base_dir / "postgres", settings=POSTGRES_SETTINGS) as postgres:
        url = postgres.create_database(_DATABASE)
        # The background events are minutes old (see default_retention_days).
        migrate(url, retention_days=default_retention_days())
        passwords = _seed(
            url, workload.make_devices(options.devices), alert_devices(options.alerts)
        )
        outcome = _measure(base_dir, options, url, passwords)
        facts = {"machine": machine(url)}
    result = summary(options, outcome, facts)
    _warn(result)
    print_report(render_table(result), result, as_json=options.json)
    log.info("done in %.0f s", time.monotonic() - started)
    return 0


def _warn(result: dict[str, Any]) -> None:
    """Say so when the numbers do not mean what they claim."""
    if result["lost"]:
        log.warning("%s of %s alert changes never arrived", result["lost"], result["measured"])
    for channel, what in (("webhook", "webhook deliveries"), ("push", "pushes")):
        if result[f"{channel}_lost"]:
            log.warning(
                "%s of %s %s never arrived",
                result[f"{channel}_lost"],
                result[f"{channel}_measured"],
                what,
            )
        if result[f"{channel}_refused"]:
            log.warning("%s %s did not verify", result[f"{channel}_refused"], what)
    if result["background_eps"] < result["target_eps"] * (1 - _RATE_TOLERANCE):
        log.warning(
            "background load %.0f events/s fell short of --rate %.0f",
            result["background_eps"],
            result["target_eps"],
        )
    if result["no_subscribers"]:
        log.warning("%s messages matched no subscription", result["no_subscribers"])
    if result["unstored_events"]:
        log.warning("%s published events were not stored by the end", result["unstored_events"])
    if result["stream_reconnects"]:
        log.warning("the alert stream reconnected %s times", result["stream_reconnects"])


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.bench.alerts``; the exit code."""
    return module_main("python -m tools.bench.alerts", __doc__, add_alerts_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
