"""``carewatch bench alerts``: from an alert-triggering publish to its arrival on an SSE client.

On private PostgreSQL and Mosquitto instances in a temporary directory (PostgreSQL with the
ingest benchmark's settings, durable defaults; the broker from the shipped configuration, with
its authentication and ACL: the gateway connects as the gateway, every publisher of this run
as the simulator):

1. migrate; register the background devices (the ingest benchmark's fleet, four kinds), one
   device per alert and a probe alarm button, all at one site; add a caregiver of the site's
   organisation;
2. start ``python -m gateway`` and ``python -m api`` as production runs them, log in
   (``POST /api/v1/auth/token``) and open ``GET /api/v1/alerts/stream`` in a reader thread;
3. publish a probe alarm until its ``alert.opened`` arrives: every part is up, caches warm;
4. for ``--duration`` seconds: the ingest benchmark's publisher processes send the background
   workload (mostly heartbeats, the everyday events of each kind) paced at ``--rate`` in
   total (1 % above it, so that the achieved average is not below), while this process
   publishes the alert events at QoS 1, evenly spread over the run:
   ``alarm.pressed``, ``lock.jammed`` and ``camera.stream_lost``, each on a device of its own
   (so each opens a new alert: ``alert.opened``), and ``--repeats`` second presses of alarm
   buttons pressed half a run earlier (``alert.updated`` with count 2);
5. wait up to ``--grace`` seconds for the alerts still on their way.

Latency is the arrival of the first ``alert.opened``/``alert.updated`` for (device, rule,
count) on the stream minus ``time.time()`` just before the PUBLISH was written to the socket;
both clocks are read in this process. An alert that has not arrived at the end of the grace
is lost. Percentiles are nearest-rank. The achieved background rate is what the publishers had
acknowledged per second; the gateway's ``carewatch_events_stored_total`` says how fast it
stored over the same time (background and alert events).

Progress goes to stderr, the table (and with ``--json`` a last line of JSON) to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import math
import os
import platform
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, cast

import orjson
import psycopg

from broker.mosquitto import MosquittoInstance
from carewatch import admin
from carewatch.db.migrate import migrate
from carewatch.processes import free_port
from carewatch.settings import Settings
from tools.bench import add_alerts_arguments, workload
from tools.bench.children import Child
from tools.bench.errors import BenchError
from tools.bench.ingest import (
    POSTGRES_SETTINGS,
    Terminated,
    gateway_env,
    mosquitto_version,
    progress_on_stderr,
    server_version,
    sigterm_unwinds,
    wait_for_metrics,
)
from tools.bench.publishers import Mqtt5Publishers, PublishReport, Qos1Connection
from tools.local.identities import LocalIdentities
from tools.local.postgres import PostgresInstance

# By name: run as ``python -m tools.bench.alerts`` this module is __main__.
log = logging.getLogger("tools.bench.alerts")

_ORG: Final = "bench-org"
_SITE: Final = "bench-site"
_USER: Final = "bench-caregiver"
_DATABASE: Final = "carewatch"
_START_TIMEOUT_S: Final = 60.0
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

# (device id, rule, count): what one measured alert change is recognised by on the stream.
Key = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class Options:
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
        return max(1, math.ceil(self.rate * _RATE_HEADROOM * self.duration_s))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
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
    id: str
    alert: _Alert

    @property
    def topic(self) -> str:
        return f"carewatch/devices/{self.id}/events"


@dataclass(frozen=True, slots=True)
class PlannedAlert:
    at_s: float  # after the start of the run
    device: AlertDevice
    count: int  # the alert's count once this event is stored: 1 opens it, 2 is a repeat
    event_id: str

    @property
    def key(self) -> Key:
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


def envelope(event_id: str, event_type: str) -> bytes:
    """A valid envelope of ``event_type`` happening now."""
    ts = datetime.now(UTC).astimezone().isoformat(timespec="milliseconds")
    return orjson.dumps({"v": 1, "id": event_id, "ts": ts, "type": event_type, "data": {}})


# --- the SSE client ----------------------------------------------------------------------------


class AlertStream:
    """``GET /api/v1/alerts/stream`` read line by line in a thread.

    Records, for every alert change of the stream, when its ``data:`` line was read
    (``time.time()``), the first time each (device, rule, count) was seen. ``alert.opened``
    counts as count 1 whatever the row says by the time it was read; ``alert.updated`` carries
    the alert's count. If the stream ends, it reconnects with ``Last-Event-ID``, as a browser.
    """

    def __init__(self, base_url: str, token: str) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._token = token
        self.arrivals: dict[Key, float] = {}
        self.reconnects = 0
        self._last_event_id: str | None = None
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._connection: http.client.HTTPConnection | None = None
        self._response = self._open()
        self._thread = threading.Thread(target=self._run, name="sse-reader", daemon=True)
        self._thread.start()

    def __enter__(self) -> AlertStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open(self) -> http.client.HTTPResponse:
        headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {self._token}"}
        if self._last_event_id is not None:
            headers["Last-Event-ID"] = self._last_event_id
        connection = http.client.HTTPConnection(self._host, self._port, timeout=_SSE_READ_TIMEOUT_S)
        self._connection = connection
        connection.request("GET", "/api/v1/alerts/stream", headers=headers)
        response = connection.getresponse()
        if response.status != 200:
            body = response.read(500)
            connection.close()
            raise BenchError(f"alert stream answered {response.status}: {body!r}")
        return response

    def _run(self) -> None:
        response: http.client.HTTPResponse | None = self._response
        while not self._closing.is_set():
            try:
                if response is None:
                    response = self._open()
                    self.reconnects += 1
                    log.warning("alert stream reconnected after event %s", self._last_event_id)
                self._read(response)
            except (OSError, ValueError, http.client.HTTPException, BenchError) as error:
                if not self._closing.is_set():
                    log.warning("alert stream broke (%r)", error)
            response = None
            if self._closing.wait(_SSE_RECONNECT_S):
                return

    def _read(self, response: http.client.HTTPResponse) -> None:
        event = ""
        while True:
            raw = response.readline()
            arrived_at = time.time()
            if not raw:
                if not self._closing.is_set():
                    log.warning("alert stream ended by the server")
                return
            line = raw.decode().rstrip("\r\n")
            if not line:
                event = ""
            elif line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("id:"):
                self._last_event_id = line.partition(":")[2].strip()
            elif line.startswith("data:") and event in ("alert.opened", "alert.updated"):
                alert = orjson.loads(line.partition(":")[2])
                count = 1 if event == "alert.opened" else int(alert["count"])
                key = (str(alert["device_id"]), str(alert["rule"]), count)
                with self._changed:
                    self.arrivals.setdefault(key, arrived_at)
                    self._changed.notify_all()

    def wait_for(self, keys: Iterable[Key], timeout_s: float) -> bool:
        """Wait until every key has arrived; False if some had not after ``timeout_s``."""
        wanted = set(keys)
        with self._changed:
            return self._changed.wait_for(lambda: wanted <= self.arrivals.keys(), timeout_s)

    def snapshot(self) -> dict[Key, float]:
        with self._changed:
            return dict(self.arrivals)

    def close(self) -> None:
        self._closing.set()
        connection = self._connection
        # Shut the socket down first: the reader sees the end and stops, then it is closed.
        if connection is not None and connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5.0)
        if connection is not None:
            connection.close()


# --- HTTP and metrics --------------------------------------------------------------------------


def _wait_ready(base_url: str, api: Child) -> None:
    """Poll ``/readyz`` until it answers 200: the API serves and reaches the database."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=1.0) as response:  # noqa: S310 - our loopback
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if api.proc.poll() is not None:
            raise api.failed(f"exited with {api.proc.returncode}")
        if time.monotonic() > deadline:
            raise api.failed(f"/readyz did not answer 200 within {_START_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def login(base_url: str, username: str, password: str) -> str:
    """A bearer token from ``POST /api/v1/auth/token``."""
    form = urllib.parse.urlencode({"username": username, "password": password}).encode()
    request = urllib.request.Request(  # noqa: S310 - our own loopback http URL
        f"{base_url}/api/v1/auth/token",
        data=form,
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            token: str = json.loads(response.read())["access_token"]
            return token
    except urllib.error.HTTPError as error:
        with error:
            raise BenchError(f"login answered {error.code}: {error.read(500)!r}") from None


def stored_total(metrics_port: int) -> float:
    """The gateway's ``carewatch_events_stored_total``, summed over its kinds."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5.0) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith((_STORED_METRIC + "{", _STORED_METRIC + " ")):
            total += float(line.rsplit(maxsplit=1)[1])
    return total


def _wait_stored(metrics_port: int, target: float, deadline: float) -> float:
    """Poll the stored count until it reaches ``target`` or ``deadline`` (monotonic) passes."""
    while True:
        stored = stored_total(metrics_port)
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
    published: dict[Key, float]
    arrivals: dict[Key, float]
    no_subscribers: int
    background: PublishReport
    stored_eps: float
    unstored: int
    reconnects: int
    elapsed_s: float


def _seed(url: str, fleet: Iterable[workload.Device], targets: Iterable[AlertDevice]) -> str:
    """Org, site, devices and the caregiver; the caregiver's password."""
    password = secrets.token_urlsafe(24)
    rows = [(device.id, device.kind, _SITE, f"Lgh {n}") for n, device in enumerate(fleet)]
    rows += [(device.id, device.alert.kind, _SITE, f"Larm {device.id[-5:]}") for device in targets]
    rows.append((_PROBE_DEVICE, _PROBE.kind, _SITE, "Probe"))
    with psycopg.connect(url, autocommit=True) as conn:
        admin.ensure_org(conn, _ORG, "Benchmark municipality")
        admin.ensure_site(conn, _SITE, _ORG, "Benchmark site")
        admin.add_devices_bulk(conn, rows)
        admin.add_user(conn, _USER, _ORG, "caregiver", password, [_SITE])
    return password


def _probe(mqtt: Qos1Connection, stream: AlertStream, children: Iterable[Child]) -> None:
    """Press the probe alarm until the broker routes it, then wait for it on the stream."""
    topic = f"carewatch/devices/{_PROBE_DEVICE}/events"
    deadline = time.monotonic() + _PROBE_TIMEOUT_S
    number = 0
    while True:
        number += 1
        _, routed = mqtt.publish(topic, envelope(f"probe-{number}", _PROBE.event_type))
        if routed:
            break
        _check_alive(children)
        if time.monotonic() > deadline:
            raise BenchError(f"the gateway did not subscribe within {_PROBE_TIMEOUT_S:.0f} s")
        time.sleep(0.1)
    if not stream.wait_for([(_PROBE_DEVICE, _PROBE.rule, 1)], max(deadline - time.monotonic(), 1)):
        _check_alive(children)
        raise BenchError("the probe alarm did not arrive on the alert stream")


def _check_alive(children: Iterable[Child]) -> None:
    for child in children:
        if child.proc.poll() is not None:
            raise child.failed(f"exited with {child.proc.returncode}")


def _publish_alerts(
    mqtt: Qos1Connection, schedule: list[PlannedAlert], started_at: float, children: list[Child]
) -> tuple[dict[Key, float], int]:
    """Publish each planned alert at its time; (publish times by key, how many found nobody)."""
    published: dict[Key, float] = {}
    no_subscribers = 0
    for item in schedule:
        delay_s = started_at + item.at_s - time.monotonic()
        if delay_s > 0:
            time.sleep(delay_s)
        payload = envelope(item.event_id, item.device.alert.event_type)
        sent_at, routed = mqtt.publish(item.device.topic, payload)
        published[item.key] = sent_at
        if not routed:
            no_subscribers += 1
        _check_alive(children)
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


def _measure(base_dir: Path, options: Options, url: str, password: str) -> Outcome:
    """Gateway, API, stream, probe, then the timed run; the numbers."""
    logs = base_dir / "logs"
    logs.mkdir(exist_ok=True)
    schedule = plan(alert_devices(options.alerts), options.repeats, options.duration_s)
    identities = LocalIdentities()
    with MosquittoInstance(base_dir / "mosquitto", auth=identities.auth()) as broker:
        metrics_port, api_port = free_port(), free_port()
        env = gateway_env(url, identities.gateway_url(broker), metrics_port)
        # The API does not connect to the broker (it only tells onboarded devices where it is,
        # without credentials): it gets the address, not the gateway's password.
        api_env = {**env, "CAREWATCH_MQTT_URL": broker.url()}
        simulator_url = identities.simulator_url(broker)
        gateway_argv = [sys.executable, "-m", "gateway"]
        api_argv = [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(api_port)]
        with (
            Child(
                "gateway",
                gateway_argv,
                env=env,
                log_path=logs / "gateway.log",
                pipe_stdin=False,
                pipe_stdout=False,
            ) as gw,
            Child(
                "api",
                api_argv,
                env=api_env,
                log_path=logs / "api.log",
                pipe_stdin=False,
                pipe_stdout=False,
            ) as api,
        ):
            children = [gw, api]
            wait_for_metrics(metrics_port, gw)
            base_url = f"http://127.0.0.1:{api_port}"
            _wait_ready(base_url, api)
            token = login(base_url, _USER, password)
            with (
                AlertStream(base_url, token) as stream,
                Qos1Connection(simulator_url, client_id="bench-alerts") as mqtt,
            ):
                log.info("probing: broker -> gateway -> PostgreSQL -> API -> stream")
                _probe(mqtt, stream, children)
                data, shares = _background(options, base_dir)
                with Mqtt5Publishers(
                    mqtt_url=simulator_url,
                    shares=shares,
                    counts=data.share_counts(len(data.events)),
                    log_dir=logs,
                    tag="background",
                    spread_over_s=options.duration_s,
                ) as publishers:
                    stored_before = stored_total(metrics_port)
                    log.info(
                        "running %.0f s: %s background events/s, %s alerts + %s repeats",
                        options.duration_s,
                        f"{options.rate:,.0f}",
                        options.alerts,
                        options.repeats,
                    )
                    started_at = publishers.go()
                    published, no_subscribers = _publish_alerts(
                        mqtt, schedule, started_at, children
                    )
                    background = publishers.wait(options.duration_s + _PUBLISHERS_EXTRA_S)
                    stored_after = stored_total(metrics_port)
                    stored_at = time.monotonic()
                log.info("published; waiting up to %.0f s for the alerts", options.grace_s)
                grace_ends = time.monotonic() + options.grace_s
                stream.wait_for(published, options.grace_s)
                arrivals = stream.snapshot()
                reconnects = stream.reconnects
            # Every routed event of the run stored by the end of the grace?
            expected = stored_before + background.acked + len(published) - no_subscribers
            unstored = max(0, round(expected - _wait_stored(metrics_port, expected, grace_ends)))
    return Outcome(
        published=published,
        arrivals=arrivals,
        no_subscribers=no_subscribers,
        background=background,
        stored_eps=(stored_after - stored_before) / max(stored_at - started_at, 1e-9),
        unstored=unstored,
        reconnects=reconnects,
        elapsed_s=stored_at - started_at,
    )


def summary(options: Options, outcome: Outcome, machine: dict[str, Any]) -> dict[str, Any]:
    """The JSON object: the agreed keys first, then what explains them."""
    stats = latency_summary(outcome.published, outcome.arrivals)
    background = outcome.background
    return {
        "alerts": options.alerts,
        "background_eps": round(background.eps, 1),
        "p50_ms": stats["p50_ms"],
        "p95_ms": stats["p95_ms"],
        "p99_ms": stats["p99_ms"],
        "max_ms": stats["max_ms"],
        "lost": stats["lost"],
        "repeats": options.repeats,
        "measured": len(outcome.published),
        "arrived": stats["arrived"],
        "min_ms": stats["min_ms"],
        "mean_ms": stats["mean_ms"],
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
        **machine,
    }


def render_table(data: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return f"{value:,.1f} ms" if value is not None else "-"

    machine = data["machine"]
    lines = [
        f"Carewatch alert benchmark: {data['measured']} alert changes ({data['alerts']} opened, "
        f"{data['repeats']} repeats) over {data['duration_s']:.0f} s, publish (QoS 1) to "
        "arrival on an SSE client",
        f"background: {data['background_events']:,} events from {data['devices']} devices by "
        f"{data['publishers']} publishers, {data['background_eps']:,.0f} events/s achieved "
        f"(target {data['target_eps']:,.0f}); gateway stored {data['gateway_stored_eps']:,.0f}/s",
        f"PostgreSQL {machine['postgres']}, Mosquitto {machine['mosquitto']}, "
        f"{machine['cpus']} CPUs shared by everything",
        "",
        f"{'p50':<12} {ms(data['p50_ms'])}",
        f"{'p95':<12} {ms(data['p95_ms'])}",
        f"{'p99':<12} {ms(data['p99_ms'])}",
        f"{'max':<12} {ms(data['max_ms'])}",
        f"{'arrived':<12} {data['arrived']} of {data['measured']}",
        f"{'lost':<12} {data['lost']} (not on the stream {data['grace_s']:.0f} s after the end)",
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
    with progress_on_stderr(), sigterm_unwinds():
        try:
            return _run(options)
        except BenchError as error:
            log.error("benchmark failed: %s", error)
            return 1
        except (KeyboardInterrupt, Terminated):
            log.error("benchmark interrupted; cleaned up")
            return 130


def _run(options: Options) -> int:
    base_dir = Path(tempfile.mkdtemp(prefix="carewatch-bench-alerts-"))
    try:
        return _run_in(base_dir, options)
    finally:
        if options.keep:
            log.info("kept %s", base_dir)
        else:
            shutil.rmtree(base_dir, ignore_errors=True)


def _run_in(base_dir: Path, options: Options) -> int:
    started = time.monotonic()
    with PostgresInstance(base_dir / "postgres", settings=POSTGRES_SETTINGS) as postgres:
        url = postgres.create_database(_DATABASE)
        # The default, not the environment's: a CAREWATCH_* meant for the gateway must not
        # stop us here (the background events are minutes old).
        migrate(url, retention_days=int(Settings.model_fields["retention_days"].default))
        password = _seed(url, workload.make_devices(options.devices), alert_devices(options.alerts))
        outcome = _measure(base_dir, options, url, password)
        machine = {
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "postgres": server_version(url),
                "mosquitto": mosquitto_version(),
            }
        }
    result = summary(options, outcome, machine)
    _warn(result)
    print(render_table(result))
    if options.json:
        print(json.dumps(result))
    log.info("done in %.0f s", time.monotonic() - started)
    return 0


def _warn(result: dict[str, Any]) -> None:
    """Say so when the numbers do not mean what they claim."""
    if result["lost"]:
        log.warning("%s of %s alert changes never arrived", result["lost"], result["measured"])
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
    parser = argparse.ArgumentParser(prog="python -m tools.bench.alerts", description=__doc__)
    add_alerts_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=cast(str, args.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
