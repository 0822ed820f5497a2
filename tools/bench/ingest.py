"""``carewatch bench ingest``: the gateway against a naive bridge and the two limits, in one run.

On private PostgreSQL and Mosquitto instances in a temporary directory, with the same devices,
the same pre-encoded envelopes and the same publisher processes for every measurement:

- copy           COPY of the N rows into ``events`` (its indexes and unique key), batches of
                 ``BATCH_ROWS`` rows, each committed: how fast PostgreSQL takes them
- broker         a minimal mqtt5 subscriber that only acknowledges: how fast Mosquitto delivers
- mosquitto_sub  Debian's ``mosquitto_sub -q 1 -C N`` to /dev/null: the same, another client
- gateway        ``python -m gateway`` end to end: first publish to the N-th row in ``events``
- naive          paho callback + one INSERT per message (on ``--naive-events`` of them)

Every measurement gets a fresh broker (nothing queued or subscribed from the one before), with
the shipped configuration's authentication and ACL: publishers connect as the simulator, and
whatever reads (the gateway, the naive bridge, the do-nothing subscribers) as the gateway, the
identities of one ``LocalIdentities`` per run. Where it writes, each gets a fresh database
cloned from one migrated template, after a CHECKPOINT so that none pays for the previous one's
dirty pages. PostgreSQL keeps its durable defaults (fsync, synchronous_commit) for all of them.
The broker limit is the faster of the two do-nothing subscribers; ``fraction_of_limit``
compares the gateway with the smaller limit.

Progress goes to stderr, the table (and with ``--json`` a last line of JSON) to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from broker.mosquitto import MosquittoInstance
from carewatch.db.migrate import migrate
from carewatch.processes import free_port
from tools.bench import MEASUREMENTS, add_ingest_arguments, limits, workload
from tools.bench.children import BenchChild
from tools.bench.endpoints import child_env, mosquitto_client_env
from tools.bench.errors import MeasurementStalledError
from tools.bench.harness import (
    START_TIMEOUT_S,
    add_bench_site,
    default_retention_days,
    gateway_env,
    machine,
    module_main,
    print_report,
    run_benchmark,
    start_gateway,
    wait_ready,
)
from tools.bench.publishers import (
    PublisherKind,
    Publishers,
    PublishReport,
    Qos1Connection,
    start_publishers,
)
from tools.local.identities import LocalIdentities
from tools.local.postgres import PostgresInstance
from tools.metrics import metrics_url

# By name: run as ``python -m tools.bench.ingest`` this module is __main__.
log = logging.getLogger("tools.bench.ingest")

# The gateway's batch size (Settings.batch_max_messages), so that COPY is timed the same way.
BATCH_ROWS = 2000
# The same for every measurement. shared_buffers holds the whole run's rows and indexes
# (200k events are about 100 MB), so no measurement waits for the disk to read; durability
# settings (fsync, synchronous_commit, full_page_writes) stay at PostgreSQL's defaults.
POSTGRES_SETTINGS = {"shared_buffers": "256MB"}
_REPORTED_SETTINGS = (
    "shared_buffers",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "max_wal_size",
)
_NAIVE_DEFAULT_MAX = 50_000
_TEMPLATE_DB = "bench_template"
# A measurement fails when its count has not grown for this long.
_STALL_S = 30.0
# The gateway drains for up to Settings.drain_timeout_s (30 s) on SIGTERM.
_GATEWAY_STOP_S = 40.0
_PROBE_TIMEOUT_S = 30.0
_MOSQUITTO_SUB_CONNECT_S = 5.0


@dataclass(frozen=True, slots=True)
class Options:
    """The options of ``carewatch bench ingest``, checked."""

    events: int
    devices: int
    publishers: int
    naive_events: int
    publisher: PublisherKind
    skip: frozenset[str]
    json: bool
    keep: bool
    other_share: float = workload.REALISTIC_OTHER_SHARE

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        """The options given on the command line; ValueError for values that cannot work."""
        # getattr: the CLI's parser may predate an option; add_ingest_arguments has them all.
        events: int = args.events
        naive = getattr(args, "naive_events", None)
        options = cls(
            events=events,
            devices=args.devices,
            publishers=args.publishers,
            naive_events=min(events, _NAIVE_DEFAULT_MAX) if naive is None else min(naive, events),
            publisher=_publisher_kind(getattr(args, "publisher", "mqtt5")),
            skip=frozenset(getattr(args, "skip", None) or ()),
            json=args.json,
            keep=args.keep,
            other_share=_or_default(getattr(args, "other_share", None)),
        )
        if not 0 <= options.other_share <= 1:
            raise ValueError("--other-share must be between 0 and 1")
        if min(options.events, options.devices, options.publishers, options.naive_events) < 1:
            raise ValueError("--events, --devices, --publishers and --naive-events must be >= 1")
        if options.publishers > options.devices:
            raise ValueError("--publishers must not exceed --devices (each owns its devices)")
        return options


def _or_default(other_share: float | None) -> float:
    return workload.REALISTIC_OTHER_SHARE if other_share is None else other_share


def _publisher_kind(value: str) -> PublisherKind:
    if value == "mqtt5":
        return "mqtt5"
    if value == "mosquitto_pub":
        return "mosquitto_pub"
    raise ValueError(f"--publisher must be mqtt5 or mosquitto_pub, not {value!r}")


@dataclass(frozen=True, slots=True)
class Measurement:
    """One part's result: how many events it moved in how many seconds."""

    name: str
    events: int  # what it was asked to move
    elapsed_s: float
    delivered: int  # rows stored or messages received at the end
    note: str = ""

    @property
    def eps(self) -> float:
        """Events per second."""
        return self.events / self.elapsed_s


@dataclass(slots=True)
class Results:
    """Every part's measurement, and what its publishers reported."""

    measurements: dict[str, Measurement] = field(default_factory=dict)
    publish: dict[str, PublishReport] = field(default_factory=dict)

    def eps(self, name: str) -> float | None:
        """Events per second of the part ``name``; None if it was skipped."""
        measurement = self.measurements.get(name)
        return measurement.eps if measurement else None


class IngestBench:
    """One run's shared state: the base directory, the database server, the workload, and the
    broker identities (the same accounts on every broker of the run)."""

    def __init__(
        self, base_dir: Path, options: Options, postgres: PostgresInstance, data: workload.Workload
    ) -> None:
        self.base_dir = base_dir
        self.options = options
        self.postgres = postgres
        self.workload = data
        self.logs = base_dir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.shares = workload.write_shares(data, base_dir / "shares")
        self.identities = LocalIdentities()
        # Rendered once: every broker of the run knows the same two accounts.
        self._broker_auth = self.identities.auth()

    # --- shared steps -----------------------------------------------------------------------

    def prepare_template(self, retention_days: int) -> None:
        """The migrated database with the registered devices that every measurement clones."""
        url = self.postgres.create_database(_TEMPLATE_DB)
        migrate(url, retention_days=retention_days)
        with psycopg.connect(url, autocommit=True) as conn:
            add_bench_site(
                conn,
                (
                    (device.id, device.kind, f"Lgh {number}")
                    for number, device in enumerate(self.workload.devices)
                ),
            )

    def fresh_database(self, name: str) -> str:
        """A clone of the template for one measurement; its URL."""
        url = self.postgres.create_database(name, template=_TEMPLATE_DB)
        # Start every measurement from a clean slate: no dirty pages of the one before.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        return url

    @contextlib.contextmanager
    def broker(self, name: str) -> Iterator[MosquittoInstance]:
        """A fresh broker from the shipped configuration: no sessions or queues from before."""
        with MosquittoInstance(
            self.base_dir / f"mosquitto-{name}", auth=self._broker_auth
        ) as broker:
            yield broker

    def publishers(self, broker: MosquittoInstance, first: int, tag: str) -> Publishers:
        """The publishers of the first ``first`` events, connected as the simulator."""
        return start_publishers(
            self.options.publisher,
            mqtt_url=self.identities.simulator_url(broker),
            workload=self.workload,
            shares=self.shares,
            first=first,
            log_dir=self.logs,
            options_dir=self.base_dir / "client-options" / f"{tag}-publishers",
            tag=tag,
        )

    def _timeout_s(self, events: int) -> float:
        # Generous: a measurement slower than 1,000 events/s has gone wrong anyway.
        return START_TIMEOUT_S + events / 1000

    # --- measurements -----------------------------------------------------------------------

    def measure_copy(self, results: Results) -> Measurement:
        """COPY of the same rows (no publishers, so ``results`` gets no publish report)."""
        url = self.fresh_database("copy_limit")
        batches = workload.copy_batches(
            self.workload, received_at=datetime.now(UTC), batch_rows=BATCH_ROWS
        )
        elapsed_s = limits.copy_rows(url, batches)
        return Measurement(
            "copy",
            self.options.events,
            elapsed_s,
            _count_events(url),
            f"{BATCH_ROWS} rows per COPY, committed",
        )

    def measure_broker(self, results: Results) -> Measurement:
        """The broker limit with the minimal mqtt5 subscriber: first publish to its last message."""
        events = self.options.events
        with self.broker("limit") as broker:
            argv = [sys.executable, "-m", "tools.bench.limits", "--count", str(events)]
            env = child_env(self.identities.gateway_url(broker))
            log_path = self.logs / "limit-subscriber.log"
            with (
                BenchChild("mqtt5 subscriber", argv, log_path=log_path, env=env) as sub,
                self.publishers(broker, events, "limit") as publishers,
            ):
                sub.expect("ready", START_TIMEOUT_S)
                started_at = publishers.go()
                received, last_at = sub.expect("done", self._timeout_s(events))
                results.publish["broker"] = publishers.wait(START_TIMEOUT_S)
        return Measurement(
            "broker", events, float(last_at) - started_at, int(received), "mqtt5, batched PUBACKs"
        )

    def measure_mosquitto_sub(self, results: Results) -> Measurement:
        """The broker limit with Debian's mosquitto_sub: first publish to its exit."""
        events = self.options.events
        client_id = "bench-mosquitto-sub"
        with self.broker("mosquitto_sub") as broker:
            gateway_url = self.identities.gateway_url(broker)
            env = mosquitto_client_env(gateway_url, self.base_dir / "client-options" / "sub")
            # First only subscribe (-E): the persistent session then holds everything published
            # from the start, whenever the measuring mosquitto_sub gets connected.
            subprocess.run(
                limits.mosquitto_sub_argv(gateway_url, client_id, count=None),
                check=True,
                capture_output=True,
                timeout=START_TIMEOUT_S,
                env=env,
            )
            argv = limits.mosquitto_sub_argv(gateway_url, client_id, count=events)
            log_path = self.logs / "mosquitto_sub.log"
            with (
                self.publishers(broker, events, "mosquitto_sub") as publishers,
                # Its output is what it received: to /dev/null, as a subscriber that does nothing.
                BenchChild(
                    "mosquitto_sub",
                    argv,
                    log_path=log_path,
                    env=env,
                    stdout="null",
                    stdin_pipe=False,
                ) as sub,
            ):
                sub.watch_exit()
                # Its connection is not timed: wait for the broker to log it (a second time).
                _wait_for_log(broker.log_path, f" as {client_id} ", 2, _MOSQUITTO_SUB_CONNECT_S)
                started_at = publishers.go()
                exited_at = sub.exited_at(self._timeout_s(events))
                if exited_at is None:
                    raise sub.failed(f"had not received {events} messages in time")
                code = sub.poll()
                if code != 0:
                    raise sub.failed(f"exited with {code}")
                results.publish["mosquitto_sub"] = publishers.wait(START_TIMEOUT_S)
        return Measurement(
            "mosquitto_sub", events, exited_at - started_at, events, "-q 1 -C N > /dev/null"
        )

    def measure_gateway(self, results: Results) -> Measurement:
        """The gateway end to end: from the first publish to the N-th committed row."""
        events = self.options.events
        url = self.fresh_database("gateway")
        with self.broker("gateway") as broker:
            metrics_port = free_port()
            env = gateway_env(url, self.identities.gateway_url(broker), metrics_port)
            log_path = self.logs / "gateway.log"
            with (
                start_gateway(env, log_path) as gw,
                self.publishers(broker, events, "gateway") as publishers,
            ):
                wait_ready(metrics_url(metrics_port), gw)
                self._probe(self.identities.simulator_url(broker), url, gw)
                started_at = publishers.go()
                done_at = _wait_for_rows(url, events, started_at, what="gateway", child=gw)
                results.publish["gateway"] = publishers.wait(START_TIMEOUT_S)
                code = gw.stop(_GATEWAY_STOP_S)
                if code != 0:
                    log.warning("gateway exited with %s after SIGTERM (see %s)", code, log_path)
        return Measurement("gateway", events, done_at - started_at, _count_events(url))

    def measure_naive(self, results: Results) -> Measurement:
        """The naive bridge: first publish to its N-th row."""
        events = self.options.naive_events
        url = self.fresh_database("naive")
        with self.broker("naive") as broker:
            argv = [sys.executable, "-m", "tools.bench.naive", "--database-url", url]
            env = child_env(self.identities.gateway_url(broker))
            with (
                BenchChild(
                    "naive bridge", argv, log_path=self.logs / "naive.log", env=env
                ) as bridge,
                self.publishers(broker, events, "naive") as publishers,
            ):
                bridge.expect("ready", START_TIMEOUT_S)
                started_at = publishers.go()
                done_at = _wait_for_rows(url, events, started_at, what="naive bridge", child=bridge)
                results.publish["naive"] = publishers.wait(START_TIMEOUT_S)
        note = f"first {events} of the events" if events < self.options.events else ""
        return Measurement("naive", events, done_at - started_at, _count_events(url), note)

    def _probe(self, mqtt_url: str, url: str, gateway: BenchChild) -> None:
        """Publish probe events as ``mqtt_url``'s user (a publisher's: the simulator) until one
        is stored: the gateway is subscribed and storing.

        Mosquitto answers a PUBLISH that matched no subscription with reason 16, so a probe
        is repeated until one was routed, and then waited for in the database. The probe
        rows are deleted before the clock starts.
        """
        deadline = time.monotonic() + _PROBE_TIMEOUT_S
        with Qos1Connection(mqtt_url, client_id="bench-probe") as mqtt:
            routed = mqtt.publish_until_routed(
                self.workload.devices[0].topic,
                lambda number: workload.live_envelope(f"probe-{number}", "heartbeat"),
                deadline=deadline,
                check=gateway.check_alive,
            )
        if not routed:
            raise gateway.failed(f"did not subscribe within {_PROBE_TIMEOUT_S:.0f} s")
        with psycopg.connect(url, autocommit=True) as conn:
            while conn.execute("SELECT count(*) FROM events").fetchone() != (1,):
                gateway.check_alive()
                if time.monotonic() > deadline:
                    raise gateway.failed("did not store the probe event")
                time.sleep(0.05)
            conn.execute("DELETE FROM events")


# --- helpers ------------------------------------------------------------------------------------


def _wait_for_log(path: Path, needle: str, occurrences: int, timeout_s: float) -> None:
    """Wait until ``needle`` appears ``occurrences`` times in a log; warn and go on if not."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if path.read_text(errors="replace").count(needle) >= occurrences:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    log.warning("%r not seen %s times in %s; starting anyway", needle, occurrences, path)


def _count_events(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0


def _wait_for_rows(
    url: str, target: int, started_at: float, *, what: str, child: BenchChild
) -> float:
    """Poll ``count(*)`` of events until it reaches ``target``; the monotonic time it did."""
    with psycopg.connect(url, autocommit=True) as conn:
        # One backend, no parallel workers: the poll must take as little as it can from the
        # two cores the measured processes share.
        conn.execute("SET max_parallel_workers_per_gather = 0")
        reached, progress_at = 0, time.monotonic()
        while True:
            row = conn.execute("SELECT count(*) FROM events").fetchone()
            now = time.monotonic()
            count = int(row[0]) if row else 0
            if count >= target:
                return now
            if count > reached:
                reached, progress_at = count, now
            elif now - progress_at > _STALL_S:
                raise MeasurementStalledError(what, count, target, now - progress_at)
            child.check_alive(f"at {count} rows")
            # count(*) scans the table; far from the target, sleep half the expected remaining
            # time (at most 1 s); near it, every 50 ms, which is the timing's resolution.
            rate = count / max(now - started_at, 1e-3)
            remaining_s = (target - count) / rate if rate > 0 else 0.0
            time.sleep(min(max(0.05, remaining_s / 2), 1.0))


def _postgres_settings(url: str) -> dict[str, str]:
    """The server's actual values, not what we asked for: the output says what was measured."""
    settings = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name in _REPORTED_SETTINGS:
            row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            settings[name] = str(row[0]) if row else "?"
    return settings


# --- the report ---------------------------------------------------------------------------------

_TITLES = {
    "gateway": "(a) gateway, end to end",
    "naive": "(b) naive bridge (paho, INSERT each)",
    "broker": "(c) broker limit: mqtt5 subscriber",
    "mosquitto_sub": "(c) broker limit: mosquitto_sub",
    "copy": "(c) COPY limit",
}


def summary(options: Options, results: Results, facts: dict[str, Any]) -> dict[str, Any]:
    """The JSON object: the agreed keys first, then what explains them."""
    gateway = results.eps("gateway")
    naive = results.eps("naive")
    subscribers = {
        name: eps for name in ("broker", "mosquitto_sub") if (eps := results.eps(name)) is not None
    }
    source = max(subscribers, key=subscribers.__getitem__) if subscribers else None
    broker = subscribers[source] if source else None
    copy = results.eps("copy")
    limit = min(broker, copy) if broker and copy else None
    return {
        "events": options.events,
        "other_share": options.other_share,
        "gateway_eps": _round(gateway),
        "naive_eps": _round(naive),
        "broker_limit_eps": _round(broker),
        "copy_limit_eps": _round(copy),
        "speedup_vs_naive": round(gateway / naive, 2) if gateway and naive else None,
        "fraction_of_limit": round(gateway / limit, 3) if gateway and limit else None,
        "devices": options.devices,
        "publishers": options.publishers,
        "publisher": options.publisher,
        "naive_events": options.naive_events,
        "broker_limit_source": source,
        "mqtt5_subscriber_eps": _round(results.eps("broker")),
        "mosquitto_sub_eps": _round(results.eps("mosquitto_sub")),
        "delivered": {name: m.delivered for name, m in results.measurements.items()},
        "seconds": {name: round(m.elapsed_s, 3) for name, m in results.measurements.items()},
        "publish_eps": {name: _round(report.eps) for name, report in results.publish.items()},
        # The broker's Receive Maximum for the publishers (0: mosquitto_pub does not say).
        "publisher_receive_max": min(
            (r.receive_max for r in results.publish.values() if r.receive_max), default=None
        ),
        **facts,
    }


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def render_table(options: Options, results: Results, data: dict[str, Any]) -> str:
    """The human-readable report of :func:`summary`'s result."""
    settings = ", ".join(f"{k}={v}" for k, v in data["postgres_settings"].items())
    lines = [
        f"Carewatch ingest benchmark: {options.events} events from {options.devices} devices "
        f"({options.other_share:.0%} not heartbeats), "
        f"{options.publishers} {options.publisher} publishers at QoS 1, "
        f"{data['machine']['cpus']} CPUs shared by all",
        f"PostgreSQL {data['machine']['postgres']} ({settings}; the same for every measurement), "
        f"Mosquitto {data['machine']['mosquitto']} (shipped configuration, fresh per measurement)",
        "",
        f"{'measurement':<40} {'events':>8} {'seconds':>8} {'events/s':>10}  note",
    ]
    for name in ("gateway", "naive", "broker", "mosquitto_sub", "copy"):
        m = results.measurements.get(name)
        if m is None:
            lines.append(f"{_TITLES[name]:<40} {'-':>8} {'-':>8} {'skipped':>10}")
            continue
        lines.append(
            f"{_TITLES[name]:<40} {m.events:>8} {m.elapsed_s:>8.2f} {m.eps:>10,.0f}  {m.note}"
        )
    lines.append("")

    def number(value: float | None, unit: str) -> str:
        return f"{value:,.0f} {unit}" if value is not None else "-"

    broker = number(data["broker_limit_eps"], "events/s")
    if data["broker_limit_source"]:
        broker += f" ({_TITLES[data['broker_limit_source']].rpartition(': ')[2]})"
    speedup = data["speedup_vs_naive"]
    fraction = data["fraction_of_limit"]
    lines += [
        f"{'broker limit (the faster subscriber)':<40} {broker}",
        f"{'COPY limit':<40} {number(data['copy_limit_eps'], 'rows/s')}",
        f"{'speedup vs naive (gateway / naive)':<40} {f'{speedup:.2f}x' if speedup else '-'}",
        f"{'fraction of limit (gateway / min limit)':<40} {fraction if fraction else '-'}",
    ]
    return "\n".join(lines)


# --- the run ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """``carewatch bench ingest``; the exit code."""
    try:
        options = Options.from_args(args)
    except ValueError as error:
        print(f"carewatch bench ingest: {error}", file=sys.stderr)
        return 2
    return run_benchmark(
        lambda base_dir: _run_in(base_dir, options),
        dir_prefix="carewatch-bench-",
        keep=options.keep,
    )


def _run_in(base_dir: Path, options: Options) -> int:
    started = time.monotonic()
    log.info(
        "generating %s events for %s devices, %s publishers",
        options.events,
        options.devices,
        options.publishers,
    )
    data = workload.make_workload(
        events=options.events,
        devices=options.devices,
        publishers=options.publishers,
        now=datetime.now(UTC),
        other_share=options.other_share,
    )
    results = Results()
    with PostgresInstance(base_dir / "postgres", settings=POSTGRES_SETTINGS) as postgres:
        bench = IngestBench(base_dir, options, postgres, data)
        # The run's events are minutes old: retention never touches them.
        bench.prepare_template(default_retention_days())
        steps: tuple[tuple[str, Callable[[Results], Measurement]], ...] = (
            ("copy", bench.measure_copy),
            ("broker", bench.measure_broker),
            ("mosquitto_sub", bench.measure_mosquitto_sub),
            ("gateway", bench.measure_gateway),
            ("naive", bench.measure_naive),
        )
        assert tuple(name for name, _ in steps) == MEASUREMENTS
        for name, step in steps:
            if name in options.skip:
                continue
            log.info("measuring %s ...", _TITLES[name])
            measurement = step(results)
            results.measurements[name] = measurement
            log.info(
                "%s: %s events in %.2f s = %.0f events/s (%s delivered)",
                name,
                measurement.events,
                measurement.elapsed_s,
                measurement.eps,
                measurement.delivered,
            )
            _check_delivery(measurement, results.publish.get(name))
        facts = {
            "machine": machine(postgres.url()),
            "postgres_settings": _postgres_settings(postgres.url()),
        }
    result = summary(options, results, facts)
    print_report(render_table(options, results, result), result, as_json=options.json)
    log.info("done in %.0f s", time.monotonic() - started)
    return 0


def _check_delivery(measurement: Measurement, publish: PublishReport | None) -> None:
    """Say so when something was lost or stored twice: the numbers would be wrong."""
    if measurement.delivered != measurement.events:
        log.warning(
            "%s: %s delivered for %s published",
            measurement.name,
            measurement.delivered,
            measurement.events,
        )
    if publish is not None and publish.no_subscribers:
        log.warning(
            "%s: %s messages matched no subscription", measurement.name, publish.no_subscribers
        )


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.bench.ingest``; the exit code."""
    return module_main("python -m tools.bench.ingest", __doc__, add_ingest_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
