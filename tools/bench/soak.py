"""``carewatch bench soak``: minutes of load through faults; what was lost, how fast, how big.

On private instances in a temporary directory (``soak_services``): PostgreSQL, Mosquitto from
the shipped configuration with a TLS listener that every MQTT client uses, two gateways on the
shared subscription (``--subscription plain`` gives each its own instead), two API processes
behind Caddy (the shipped ``deploy/caddy/Caddyfile``, over HTTPS). Then, for ``--minutes``:

- background load: two publisher processes (``soak_publisher``) send the benchmark fleet's
  events (mostly heartbeats, the everyday events of each kind) at ``--rate`` in total, at
  QoS 1, reconnecting through broker restarts, each event with an id of its own;
- alarm presses: ``--alarms-per-s`` ``alarm.pressed`` on alarm buttons of that fleet, each
  button pressed once (so each opens an alert), from this process;
- ``--sse-clients`` clients on ``GET /api/v1/alerts/stream`` through the proxy, reconnecting
  with ``Last-Event-ID`` as browsers do;
- a fault every ``--fault-every`` seconds (``soak_faults``), none with ``--no-faults``;
- every 2 s, each service's resident memory (``/proc/<pid>/status`` VmRSS) and each gateway's
  counters.

Then it counts, exactly, per event id: *acked* = the broker answered PUBACK Success, at once or
after resends (reason 16, "no matching subscribers", means the broker dropped it; the publishers
and the presses send such an event again until Success, as the device contract asks, and
*unrouted* counts those PUBACKs 16); *lost* = acked and not in ``events``; *duplicated* = an
event stored more than once (the table's key (device_id, time, event_id) makes that
impossible, so the redeliveries the gateways absorbed are counted too, from
``carewatch_events_duplicate_total``). Alert latency is publish (QoS 1,
``time.time()`` before the first send) to arrival on each SSE client, split by whether its
journey met a fault window (published inside one, or still in flight when one opened).
Memory is reported per process: start, end and the slope of a least-squares line after the
warm-up (the first tenth of the run, at most a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import secrets
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import orjson
import psycopg

from carewatch import admin
from carewatch.db.migrate import migrate
from devices.simulator import events_topic
from tools.bench import add_soak_arguments, workload
from tools.bench.alerts import AlertStream
from tools.bench.children import BenchChild
from tools.bench.endpoints import child_env
from tools.bench.errors import BenchError
from tools.bench.harness import (
    BENCH_ORG,
    BENCH_SITE,
    add_bench_site,
    default_retention_days,
    login,
    machine,
    module_main,
    print_report,
    run_benchmark,
)
from tools.bench.ingest import POSTGRES_SETTINGS
from tools.bench.publishers import Qos1Connection
from tools.bench.soak_faults import FAULT_KINDS, READ_ONLY_S, FaultInjector, schedule
from tools.bench.soak_publisher import event_id
from tools.bench.soak_services import SoakServices, caddy_version, client_ca
from tools.bench.soak_stats import (
    FaultWindow,
    RssSample,
    latency_by_window,
    memory_trend,
    read_rss_kib,
    round_peaks,
    slowest_outside,
)
from tools.local.postgres import PostgresInstance
from tools.metrics import sample_sums

log = logging.getLogger("tools.bench.soak")

_USER: Final = "bench-soak-caregiver"
_DATABASE: Final = "carewatch"
_PUBLISHERS: Final = 2
# The background is paced this much above --rate, which is a floor (as in ``alerts``).
_RATE_HEADROOM: Final = 1.01
# Alarm buttons kept for the probes that end fault windows (a few presses each at most).
_PROBE_SPARES: Final = 200
_SAMPLE_EVERY_S: Final = 2.0
_WARM_UP_SHARE: Final = 0.1
_WARM_UP_MAX_S: Final = 60.0
# After the last publish: time for the last PUBACKs, the last rows, the last alerts.
_DRAIN_S: Final = 60.0
_ALERT_GRACE_S: Final = 15.0
_STORED_SETTLE_S: Final = 5.0
_ALARM_RULE: Final = "alarm_pressed"
_COUNTERS: Final = (
    "carewatch_events_stored_total",
    "carewatch_events_duplicate_total",
    "carewatch_dead_letters_total",
    "carewatch_store_errors_total",
)
_PRESS_RETRY_S: Final = 0.2


@dataclass(frozen=True, slots=True)
class Options:
    """The options of ``carewatch bench soak``, checked."""

    minutes: float
    rate: float
    sse_clients: int
    fault_every_s: float
    faults: bool
    alarms_per_s: float
    devices: int
    subscription: str
    json: bool
    keep: bool

    @property
    def duration_s(self) -> float:
        """The loaded part of the run."""
        return self.minutes * 60.0

    @property
    def presses(self) -> int:
        """How many alarm presses the run makes."""
        return max(1, math.floor(self.duration_s * self.alarms_per_s))

    @property
    def fleet(self) -> int:
        """Devices of the background fleet: ``--devices``, or more when the presses (one alarm
        button each, every fourth device is one) and the probes need them. A multiple of 4
        (the kinds) and of the publishers."""
        needed = 4 * (self.presses + _PROBE_SPARES)
        return math.ceil(max(self.devices, needed) / 4) * 4

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        """The options given on the command line; ValueError for values that cannot work."""
        options = cls(
            minutes=args.minutes,
            rate=args.rate,
            sse_clients=args.sse_clients,
            fault_every_s=args.fault_every,
            faults=not args.no_faults,
            alarms_per_s=args.alarms_per_s,
            devices=args.devices,
            subscription=args.subscription,
            json=args.json,
            keep=args.keep,
        )
        if not (options.minutes > 0 and options.rate > 0 and options.alarms_per_s > 0):
            raise ValueError("--minutes, --rate and --alarms-per-s must be > 0")
        if options.sse_clients < 1 or options.fault_every_s <= 0 or options.devices < 4:
            raise ValueError("--sse-clients >= 1, --fault-every > 0 and --devices >= 4")
        return options


# --- the run's parts --------------------------------------------------------------------------


class AlarmButtons:
    """The fleet's alarm buttons, each handed out once (to a press or a probe)."""

    def __init__(self, fleet: Sequence[workload.Device]) -> None:
        self._ids = iter([device.id for device in fleet if device.kind == "alarm_button"])
        self._lock = threading.Lock()

    def next(self) -> str:
        """An alarm button that nobody has pressed yet."""
        with self._lock:
            try:
                return next(self._ids)
            except StopIteration:
                raise BenchError("out of alarm buttons (raise --devices)") from None


# A press refused with PUBACK 16 goes again after 1 s, doubling up to 8 s (the device contract).
_PRESS_UNROUTED_MIN_S: Final = 1.0
_PRESS_UNROUTED_MAX_S: Final = 8.0


@dataclass(slots=True)
class Press:
    """One alarm press: on which button, when it was first sent, and what the broker said."""

    device: str
    event_id: str
    published_at: float
    routed: bool | None = None  # True: PUBACK Success; None: none by the end
    unrouted: int = 0  # PUBACKs 16 before that (each followed by a resend)


class Presses:
    """Alarm presses at a steady pace from a thread, through broker restarts (sent again, as a
    device does, until a PUBACK Success answers: after a lost connection at once, after a
    PUBACK 16 after a growing delay)."""

    def __init__(self, mqtt_url: str, buttons: AlarmButtons, count: int, every_s: float) -> None:
        self.done: list[Press] = []
        self._url = mqtt_url
        self._buttons = buttons
        self._count = count
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="presses", daemon=True)

    def start(self, started_at: float) -> None:
        """Start pressing; the first press is half an interval after ``started_at`` (monotonic)."""
        self._started_at = started_at
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Stop pressing, after the press being sent (for at most ``timeout_s``)."""
        self._thread.join(timeout_s)
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        mqtt: Qos1Connection | None = None
        try:
            for number in range(self._count):
                due = self._started_at + (number + 0.5) * self._every_s
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                device = self._buttons.next()
                press = Press(device, f"press-{number}", time.time())
                payload = workload.live_envelope(press.event_id, "alarm.pressed")
                self.done.append(press)
                while press.routed is None and not self._stop.is_set():
                    try:
                        if mqtt is None:
                            mqtt = Qos1Connection(self._url, client_id="bench-soak-presses")
                        if mqtt.publish(events_topic(device), payload)[1]:
                            press.routed = True
                        else:  # PUBACK 16: nobody subscribed, the broker dropped it
                            press.unrouted += 1
                            self._stop.wait(
                                min(
                                    _PRESS_UNROUTED_MAX_S,
                                    _PRESS_UNROUTED_MIN_S * 2.0 ** (press.unrouted - 1),
                                )
                            )
                    except (OSError, ConnectionError) as error:
                        log.info("press %s not acknowledged yet (%r)", number, error)
                        if mqtt is not None:
                            mqtt.close()
                        mqtt = None
                        self._stop.wait(_PRESS_RETRY_S)
        finally:
            if mqtt is not None:
                mqtt.close()


class Sampler:
    """Every few seconds from a thread: each service's RSS and each gateway's counters."""

    def __init__(self, services: SoakServices) -> None:
        self.services = services
        self.rss: dict[str, list[RssSample]] = {}
        # (gateway, pid) -> the last value of each counter: a killed gateway's counts stay.
        self.counters: dict[tuple[str, int], dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10.0)
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(_SAMPLE_EVERY_S):
            self.sample()

    def sample(self) -> None:
        """Read every process's RSS and every gateway's counters once."""
        now = time.time()
        for role, pid in self.services.pids().items():
            rss = read_rss_kib(pid) if pid is not None else None
            if pid is not None and rss is not None:
                self.rss.setdefault(role, []).append(RssSample(now, pid, rss))
        with httpx.Client(timeout=2.0) as client:
            for gateway in self.services.gateways:
                pid = gateway.pid
                if pid is None:
                    continue
                with contextlib.suppress(httpx.HTTPError):
                    sums = sample_sums(client, gateway.ready_url)
                    self.counters[(gateway.name, pid)] = {
                        name: sums.get(name, 0.0) for name in _COUNTERS
                    }

    def counter(self, name: str) -> int:
        """A counter summed over every gateway process of the run (at its last sample)."""
        return round(sum(values[name] for values in self.counters.values()))


def _seed(url: str, fleet: Sequence[workload.Device]) -> str:
    """Org, site, the fleet and the caregiver; the caregiver's password."""
    password = secrets.token_urlsafe(24)
    with psycopg.connect(url, autocommit=True) as conn:
        add_bench_site(conn, ((d.id, d.kind, f"Lgh {n}") for n, d in enumerate(fleet)))
        admin.add_user(conn, _USER, BENCH_ORG, "caregiver", password, [BENCH_SITE])
    return password


@contextlib.contextmanager
def _publishers(
    services: SoakServices, options: Options, base_dir: Path
) -> Iterator[list[BenchChild]]:
    """The background publisher processes, connected and waiting for ``go``."""
    env = {**child_env(services.simulator_url), **services.client_env}
    per_publisher = options.rate * _RATE_HEADROOM / _PUBLISHERS
    with contextlib.ExitStack() as stack:
        children = []
        for number in range(_PUBLISHERS):
            argv = [
                sys.executable,
                "-m",
                "tools.bench.soak_publisher",
                f"--publisher={number}",
                f"--publishers={_PUBLISHERS}",
                f"--devices={options.fleet}",
                f"--rate={per_publisher!r}",
                f"--duration={options.duration_s!r}",
                f"--drain={_DRAIN_S!r}",
            ]
            log_path = base_dir / "logs" / f"publisher-{number}.log"
            children.append(
                stack.enter_context(
                    BenchChild(f"publisher {number}", argv, log_path=log_path, env=env)
                )
            )
        for child in children:
            child.expect("ready", 60.0)
        yield children


# --- the run ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What the loaded part of the run recorded."""

    started_at: float  # time.time()
    elapsed_s: float
    reports: list[dict[str, Any]]
    presses: list[Press]
    probes: set[str]
    windows: list[FaultWindow]
    arrivals: list[dict[tuple[str, str, int], float]]
    reconnections: int
    rss: dict[str, list[RssSample]]
    counters: dict[str, int]
    mqtt_tls: bool


def _measure(base_dir: Path, options: Options, postgres: PostgresInstance, url: str) -> Outcome:
    fleet = workload.make_devices(options.fleet)
    password = _seed(url, fleet)
    buttons = AlarmButtons(fleet)
    share_group = "carewatch" if options.subscription == "shared" else ""
    with contextlib.ExitStack() as stack:
        services = SoakServices(stack, base_dir, postgres, url, share_group=share_group)
        stack.enter_context(client_ca(services))
        token = login(services.proxy_url, _USER, password)
        streams = [
            stack.enter_context(AlertStream(services.proxy_url, token))
            for _ in range(options.sse_clients)
        ]
        faults = FaultInjector(
            services, streams, buttons.next, min(READ_ONLY_S, options.fault_every_s / 2)
        )
        log.info("probing: broker -> gateways -> PostgreSQL -> APIs -> proxy -> streams")
        _, problem = faults.probe(time.time())
        if problem:
            raise BenchError(f"before the run: {problem}")
        presses = Presses(
            services.simulator_url, buttons, options.presses, 1 / options.alarms_per_s
        )
        publishers = stack.enter_context(_publishers(services, options, base_dir))
        sampler = stack.enter_context(Sampler(services))
        log.info(
            "soaking %.1f min: %s events/s, %s alarms/s, %s SSE clients, faults %s",
            options.minutes,
            f"{options.rate:,.0f}",
            options.alarms_per_s,
            options.sse_clients,
            f"every {options.fault_every_s:.0f} s" if options.faults else "off",
        )
        started_at, started_mono = time.time(), time.monotonic()
        for publisher in publishers:
            publisher.send_line("go")
        presses.start(started_mono)
        plan = schedule(options.duration_s, options.fault_every_s) if options.faults else []
        for at_s, kind in plan:
            wait_s = started_mono + at_s - time.monotonic()
            if wait_s > 0:
                time.sleep(wait_s)
            _check_alive(services)
            faults.inject(kind)
        reports = [
            orjson.loads(" ".join(child.expect("done", options.duration_s + _DRAIN_S + 120)))
            for child in publishers
        ]
        elapsed_s = time.monotonic() - started_mono
        presses.stop(_DRAIN_S)
        log.info("published; waiting up to %.0f s for the last alerts", _ALERT_GRACE_S)
        wanted = [(p.device, _ALARM_RULE, 1) for p in presses.done if p.routed]
        for stream in streams:
            stream.wait_for(wanted, _ALERT_GRACE_S)
        _wait_stored(url)
        sampler.sample()
        return Outcome(
            started_at=started_at,
            elapsed_s=elapsed_s,
            reports=reports,
            presses=presses.done,
            probes=faults.probes,
            windows=faults.windows,
            arrivals=[stream.snapshot() for stream in streams],
            reconnections=sum(stream.reconnects for stream in streams),
            rss=sampler.rss,
            counters={name: sampler.counter(name) for name in _COUNTERS},
            mqtt_tls=services.tls,
        )


def _check_alive(services: SoakServices) -> None:
    for slot in (*services.gateways, *services.apis):
        slot.child.check_alive()
    services.proxy.check_alive()


def _wait_stored(url: str) -> None:
    """Until the number of stored events has stopped growing (the gateways are through)."""
    with psycopg.connect(url, autocommit=True) as conn:
        last, steady_since = -1, time.monotonic()
        while time.monotonic() - steady_since < _STORED_SETTLE_S:
            row = conn.execute("SELECT count(*) FROM events").fetchone()
            count = int(row[0]) if row else 0
            if count != last:
                last, steady_since = count, time.monotonic()
            time.sleep(0.5)


# --- counting -----------------------------------------------------------------------------------

_LOST = """
SELECT count(*), (array_agg(want.id ORDER BY want.id))[1:10]
FROM (
    SELECT format('bg%%s-%%s', %(publisher)s::int, lpad(seq::text, 9, '0')) AS id
    FROM generate_series(0, %(sent)s::bigint - 1) AS seq
    WHERE NOT seq = ANY(%(exceptions)s::bigint[])
) AS want
WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = want.id)
"""
_STORED_ANYWAY = "SELECT count(DISTINCT event_id) FROM events WHERE event_id = ANY(%s)"
_OURS = "SELECT count(DISTINCT event_id) FROM events WHERE event_id LIKE 'bg%'"
_DUPLICATED = """
SELECT count(*) FROM (
    SELECT 1 FROM events GROUP BY device_id, event_id HAVING count(*) > 1
) AS twice
"""
_PRESSES_LOST = """
SELECT count(*) FROM unnest(%s::text[], %s::text[]) AS p(device_id, event_id)
WHERE NOT EXISTS (
    SELECT 1 FROM events e WHERE e.device_id = p.device_id AND e.event_id = p.event_id
)
"""
_DEAD_LETTERS = "SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason"


def count_events(url: str, outcome: Outcome) -> dict[str, Any]:
    """Published, acknowledged, unrouted, stored, lost and duplicated, by event id."""
    sent = acked = unrouted = unrouted_events = refused = unacked = lost = stored_anyway = 0
    lost_ids: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        # No index leads by event_id: one hash anti-join over events, never a nested loop
        # that scans events once per wanted id (the planner cannot see generate_series's size
        # through a parameter).
        conn.execute("SET enable_nestloop = off")
        conn.execute("SET plan_cache_mode = force_custom_plan")
        for report in outcome.reports:
            publisher = int(report["publisher"])
            # Refused with 16 and resent until Success is acked: it must be stored.
            exceptions = [*report["refused"], *report["unacked"]]
            sent += report["sent"]
            unrouted += len(report["unrouted"])
            unrouted_events += len({seq for seq, _ in report["unrouted"]})
            refused += len(report["refused"])
            unacked += len(report["unacked"])
            acked += report["sent"] - len(exceptions)
            row = conn.execute(
                _LOST, {"publisher": publisher, "sent": report["sent"], "exceptions": exceptions}
            ).fetchone()
            if row is not None:
                lost += int(row[0])
                lost_ids += list(row[1] or [])
            ids = [event_id(publisher, seq) for seq in exceptions]
            row = conn.execute(_STORED_ANYWAY, (ids,)).fetchone()
            stored_anyway += int(row[0]) if row else 0
        stored = _one(conn, _OURS)
        duplicated = _one(conn, _DUPLICATED)
        routed = [press for press in outcome.presses if press.routed]
        presses_lost = _one(
            conn,
            _PRESSES_LOST,
            ([p.device for p in routed], [p.event_id for p in routed]),
        )
        dead_letters = {str(r[0]): int(r[1]) for r in conn.execute(_DEAD_LETTERS).fetchall()}
    return {
        "published": sent,
        "acked": acked,
        "unrouted": unrouted,
        "unrouted_events": unrouted_events,
        "refused": refused,
        "unacked_at_end": unacked,
        "stored": stored,
        "lost": lost + presses_lost,
        "lost_background": lost,
        "lost_presses": presses_lost,
        "lost_ids": lost_ids[:10],
        "stored_without_puback": stored_anyway,
        "duplicated": duplicated,
        "dead_letters": dead_letters,
    }


def _one(conn: psycopg.Connection[Any], query: str, params: Any = None) -> int:
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0


def unrouted_by_fault(outcome: Outcome) -> dict[str, int]:
    """The PUBACKs 16 the background events got (each followed by a resend), by the fault
    window they fell in (``none`` outside every window)."""
    counts: dict[str, int] = {}
    for report in outcome.reports:
        for _, at in report["unrouted"]:
            kind = next((w.kind for w in outcome.windows if w.contains(at)), "none")
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def alert_latency(outcome: Outcome) -> dict[str, Any]:
    """Publish to arrival on each SSE client of every routed press, inside and outside faults."""
    samples = [
        (press.published_at, arrivals.get((press.device, _ALARM_RULE, 1)))
        for press in outcome.presses
        if press.routed
        for arrivals in outcome.arrivals
    ]
    by_window = latency_by_window(samples, outcome.windows)
    return {
        "slowest_outside": slowest_outside(samples, outcome.windows, outcome.started_at),
        "presses": len(outcome.presses),
        "presses_unrouted": sum(1 for p in outcome.presses if p.unrouted),
        "presses_unrouted_pubacks": sum(p.unrouted for p in outcome.presses),
        "presses_unacked": sum(1 for p in outcome.presses if p.routed is None),
        "presses_in_fault_windows": sum(
            1 for p in outcome.presses if any(w.contains(p.published_at) for w in outcome.windows)
        ),
        **by_window,
    }


def summary(
    options: Options, outcome: Outcome, events: dict[str, Any], facts: dict[str, Any]
) -> dict[str, Any]:
    """The JSON object: the agreed keys first, then what explains them."""
    alerts = alert_latency(outcome)
    warm_up_s = min(_WARM_UP_MAX_S, _WARM_UP_SHARE * options.duration_s)
    warm_up_until = outcome.started_at + warm_up_s
    # A round: every fault kind once, from the first fault on (the same length without faults).
    round_s = len(FAULT_KINDS) * options.fault_every_s
    first_round_at = outcome.started_at + options.fault_every_s
    ended_at = outcome.started_at + outcome.elapsed_s
    return {
        "minutes": options.minutes,
        "target_eps": options.rate,
        # Over the publishers' own time, from go to their last PUBACK.
        "achieved_eps": round(
            events["acked"] / max(max(float(r["elapsed_s"]) for r in outcome.reports), 1e-9), 1
        ),
        "published": events["published"],
        "acked": events["acked"],
        "stored": events["stored"],
        "lost": events["lost"],
        "duplicated": events["duplicated"],
        "unrouted": events["unrouted"],
        "redeliveries_absorbed": outcome.counters["carewatch_events_duplicate_total"],
        "dead_letters": sum(events["dead_letters"].values()),
        "p50_outside_ms": alerts["outside"]["p50_ms"],
        "p99_outside_ms": alerts["outside"]["p99_ms"],
        "p50_inside_ms": alerts["inside"]["p50_ms"],
        "p99_inside_ms": alerts["inside"]["p99_ms"],
        "sse_reconnections": outcome.reconnections,
        "faults": [window.as_dict(outcome.started_at) for window in outcome.windows],
        "unrouted_by_fault": unrouted_by_fault(outcome),
        "events": events,
        "alerts": alerts,
        "rss": {
            role: {
                **memory_trend(samples, warm_up_until, warm_up_s),
                **round_peaks(samples, first_round_at, round_s, ended_at),
            }
            for role, samples in sorted(outcome.rss.items())
        },
        "round_s": round_s,
        "warm_up_s": round(warm_up_s, 1),
        "elapsed_s": round(outcome.elapsed_s, 1),
        "devices": options.fleet,
        "gateways": 2,
        "apis": 2,
        "sse_clients": options.sse_clients,
        "subscription": options.subscription,
        "fault_every_s": options.fault_every_s if options.faults else None,
        "publisher_resent": sum(int(r["resent"]) for r in outcome.reports),
        "publisher_reconnects": sum(int(r["reconnects"]) for r in outcome.reports),
        "gateway_counters": outcome.counters,
        **facts,
    }


def render_table(data: dict[str, Any]) -> str:
    """The human-readable report of :func:`summary`'s result."""

    def ms(value: float | None) -> str:
        return f"{value:,.1f} ms" if value is not None else "-"

    events = data["events"]
    alerts = data["alerts"]
    machine_facts = data["machine"]
    lines = [
        f"Carewatch soak: {data['minutes']:g} min, {data['gateways']} gateways "
        f"({data['subscription']} subscription), {data['apis']} API processes behind "
        f"Caddy {data['proxy']}, MQTT over {'TLS' if data['mqtt_tls'] else 'plain TCP'}",
        f"load: {data['achieved_eps']:,.0f} events/s acknowledged (target "
        f"{data['target_eps']:,.0f}) from {data['devices']:,} devices, "
        f"{alerts['presses']} alarm presses, {data['sse_clients']} SSE clients; PostgreSQL "
        f"{machine_facts['postgres']}, Mosquitto {machine_facts['mosquitto']}, "
        f"{machine_facts['cpus']} CPUs shared by everything",
        "",
        f"{'published':<28} {events['published']:>12,}",
        f"{'acked (PUBACK Success)':<28} {events['acked']:>12,}",
        f"{'PUBACK 16, resent':<28} {events['unrouted']:>12,}  {data['unrouted_by_fault']} "
        f"({events['unrouted_events']:,} events)",
        f"{'stored':<28} {events['stored']:>12,}",
        f"{'lost (acked, not stored)':<28} {events['lost']:>12,}",
        f"{'duplicated':<28} {events['duplicated']:>12,}  (redeliveries absorbed: "
        f"{data['redeliveries_absorbed']:,})",
        f"{'dead letters':<28} {data['dead_letters']:>12,}",
        f"{'SSE reconnections':<28} {data['sse_reconnections']:>12,}",
        "",
        f"{'alert latency':<28} {'samples':>8} {'p50':>12} {'p99':>12} {'max':>12} {'missing':>8}",
    ]
    for where in ("outside", "inside"):
        stats = alerts[where]
        lines.append(
            f"{where + ' fault windows':<28} {stats['samples']:>8} {ms(stats['p50_ms']):>12} "
            f"{ms(stats['p99_ms']):>12} {ms(stats['max_ms']):>12} {stats['never_arrived']:>8}"
        )
    lines += ["", f"{'fault':<18} {'target':<10} {'at':>8} {'recovered':>10} {'end to end':>11}"]
    for fault in data["faults"]:
        lines.append(
            f"{fault['kind']:<18} {fault['target']:<10} {fault['at_s']:>7.0f}s "
            f"{fault['recovered_s']:>9.1f}s {fault['end_to_end_s']:>10.1f}s"
        )
    lines += [
        "",
        f"{'RSS (MB)':<12} {'start':>8} {'end':>8} {'MB/h':>8} {'growth':>8} {'restarts':>9}"
        f"  peak of each round (growth, last over second)",
    ]
    for role, trend in data["rss"].items():
        if not trend.get("samples"):
            continue
        growth = trend["growth_pct"]
        peak_growth = trend["peak_growth_pct"]
        lines.append(
            f"{role:<12} {trend['start_mb']:>8.1f} {trend['end_mb']:>8.1f} "
            f"{trend['slope_mb_per_h']:>8.1f} "
            f"{(f'{growth:+.1f}%' if growth is not None else '-'):>8} {trend['restarts']:>9}"
            f"  {' '.join(f'{peak:.0f}' for peak in trend['round_peaks_mb'])}"
            f"{f' ({peak_growth:+.1f}%)' if peak_growth is not None else ''}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """``carewatch bench soak``; the exit code."""
    try:
        options = Options.from_args(args)
    except ValueError as error:
        print(f"carewatch bench soak: {error}", file=sys.stderr)
        return 2
    return run_benchmark(
        lambda base_dir: _run_in(base_dir, options),
        dir_prefix="carewatch-bench-soak-",
        keep=options.keep,
    )


def _run_in(base_dir: Path, options: Options) -> int:
    started = time.monotonic()
    with PostgresInstance(base_dir / "postgres", settings=POSTGRES_SETTINGS) as postgres:
        url = postgres.create_database(_DATABASE)
        migrate(url, retention_days=default_retention_days())
        outcome = _measure(base_dir, options, postgres, url)
        events = count_events(url, outcome)
        facts = {"machine": machine(url), "proxy": caddy_version(), "mqtt_tls": outcome.mqtt_tls}
    result = summary(options, outcome, events, facts)
    _warn(result)
    print_report(render_table(result), result, as_json=options.json)
    log.info("done in %.0f s", time.monotonic() - started)
    return 0


def _warn(result: dict[str, Any]) -> None:
    """Say so when the numbers do not mean what they claim, or when something was lost."""
    if result["lost"]:
        log.warning("%s acknowledged events were not stored", result["lost"])
    if result["achieved_eps"] < result["target_eps"] * 0.98:
        log.warning(
            "background load %.0f events/s fell short of --rate %.0f",
            result["achieved_eps"],
            result["target_eps"],
        )
    if result["events"]["unacked_at_end"]:
        log.warning("%s events had no PUBACK by the end", result["events"]["unacked_at_end"])


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.bench.soak``; the exit code."""
    return module_main("python -m tools.bench.soak", __doc__, add_soak_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
