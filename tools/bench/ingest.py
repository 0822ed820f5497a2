"""``carewatch bench ingest``: the gateway against a naive bridge and the two limits, in one run.

On private PostgreSQL and Mosquitto instances in a temporary directory, with the same devices,
the same pre-encoded envelopes and the same publisher processes for every measurement:

- copy           COPY of the N rows into ``events`` (its indexes and unique key), batches of
                 ``BATCH_ROWS`` rows, each committed: how fast PostgreSQL takes them
- broker         a minimal mqtt5 subscriber that only acknowledges: how fast Mosquitto delivers
- mosquitto_sub  Debian's ``mosquitto_sub -q 1 -C N`` to /dev/null: the same, another client
- gateway        ``python -m gateway`` end to end: first publish to the N-th row in ``events``;
                 with ``--gateways G``, G of them on one shared subscription
- naive          paho callback + one INSERT per message (on ``--naive-events`` of them)

Every measurement gets a fresh broker (nothing queued or subscribed from the one before), with
the shipped configuration's authentication and ACL: publishers connect as the simulator, and
whatever reads (the gateway, the naive bridge, the do-nothing subscribers) as the gateway, the
identities of one ``LocalIdentities`` per run. Where it writes, each gets a fresh database
cloned from one migrated template, after a CHECKPOINT so that none pays for the previous one's
dirty pages, and dropped afterwards. PostgreSQL keeps its durable defaults (fsync,
synchronous_commit) for all of them. The broker limit is the faster of the two do-nothing
subscribers; ``fraction_of_limit`` compares the gateway with the smaller limit.

The first four are repeated ``--repeat K`` times (copy, broker, mosquitto_sub, gateway, then
again), each repetition on the same servers but a fresh database and broker, with the same
events (regenerated with the same seed, their device times again just before now): the same
work from the same empty state. Each repetition's gateway is divided by
its own limits, and the report gives every repetition and the medians. Each mix of
``--other-share`` (0.02 or 0.02,0.5) gets its own workload and its own K repetitions; the naive
bridge runs once, on the first mix. Before anything starts, ``hardware`` measures the disk's
fsync rate where PostgreSQL will keep its data; it and the CPU model go beside the figures.

Progress goes to stderr, the table (and with ``--json`` a last line of JSON) to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import psycopg

from broker.mosquitto import MosquittoInstance
from carewatch.db.migrate import migrate
from tools.bench import MEASUREMENTS, add_ingest_arguments, hardware, limits, workload
from tools.bench.children import BenchChild
from tools.bench.endpoints import child_env, mosquitto_client_env
from tools.bench.errors import MeasurementStalledError
from tools.bench.harness import (
    START_TIMEOUT_S,
    add_bench_site,
    default_retention_days,
    machine,
    module_main,
    print_report,
    run_benchmark,
)
from tools.bench.ingest_gateways import Gateways
from tools.bench.ingest_options import Options
from tools.bench.ingest_report import (
    TITLES,
    Measurement,
    MixResults,
    Results,
    RunResults,
    render_table,
    summary,
)
from tools.bench.publishers import Publishers, PublishReport, Qos1Connection, start_publishers
from tools.local.identities import LocalIdentities
from tools.local.postgres import PostgresInstance

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
_TEMPLATE_DB = "bench_template"
# A measurement fails when its count has not grown for this long.
_STALL_S = 30.0
_PROBE_TIMEOUT_S = 30.0
_MOSQUITTO_SUB_CONNECT_S = 5.0


class IngestBench:
    """One run's shared state: the base directory, the database server, the broker identities
    (the same accounts on every broker of the run), and the workload of the mix measured now
    (:meth:`use_workload`)."""

    def __init__(self, base_dir: Path, options: Options, postgres: PostgresInstance) -> None:
        self.base_dir = base_dir
        self.options = options
        self.postgres = postgres
        self.logs = base_dir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.identities = LocalIdentities()
        # Rendered once: every broker of the run knows the same two accounts.
        self._broker_auth = self.identities.auth()
        self.workload: workload.Workload | None = None
        self.shares: list[Path] = []

    # --- shared steps -----------------------------------------------------------------------

    def use_workload(self, data: workload.Workload) -> None:
        """Measure ``data`` from now on: its publishers' files."""
        self.workload = data
        self.shares = workload.write_shares(data, self.base_dir / "shares")

    def forget_workload(self) -> None:
        """Let the last repetition's events go."""
        self.workload = None

    def event_types(self) -> Counter[str]:
        """How many events of each type the workload has: what the mix gave."""
        return Counter(event.type for event in self._data().events)

    def _data(self) -> workload.Workload:
        if self.workload is None:
            raise RuntimeError("use_workload() first")
        return self.workload

    def prepare_template(self, retention_days: int) -> None:
        """The migrated database with the registered devices that every measurement clones
        (every mix has the same devices)."""
        url = self.postgres.create_database(_TEMPLATE_DB)
        migrate(url, retention_days=retention_days)
        with psycopg.connect(url, autocommit=True) as conn:
            add_bench_site(
                conn,
                (
                    (device.id, device.kind, f"Lgh {number}")
                    for number, device in enumerate(self._data().devices)
                ),
            )

    @contextlib.contextmanager
    def fresh_database(self, name: str) -> Iterator[str]:
        """A clone of the template for one measurement (its URL), dropped afterwards unless
        ``--keep``: every repetition starts from the same empty tables, and no earlier one's
        rows take disk or shared_buffers from it."""
        url = self.postgres.create_database(name, template=_TEMPLATE_DB)
        # Start every measurement from a clean slate: no dirty pages of the one before.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        try:
            yield url
        finally:
            if not self.options.keep:
                self.postgres.drop_database(name)

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
            workload=self._data(),
            shares=self.shares,
            first=first,
            log_dir=self.logs,
            options_dir=self.base_dir / "client-options" / f"{tag}-publishers",
            tag=tag,
        )

    def _timeout_s(self, events: int) -> float:
        # Generous: a measurement slower than 1,000 events/s has gone wrong anyway.
        return START_TIMEOUT_S + events / 1000

    # --- measurements (``tag`` names the mix and repetition: m1r2) ---------------------------

    def measure_copy(self, results: Results, tag: str) -> Measurement:
        """COPY of the same rows (no publishers, so ``results`` gets no publish report)."""
        batches = workload.copy_batches(
            self._data(), received_at=datetime.now(UTC), batch_rows=BATCH_ROWS
        )
        with self.fresh_database(f"copy_{tag}") as url:
            elapsed_s = limits.copy_rows(url, batches)
            delivered = _count_events(url)
        return Measurement(
            "copy", self.options.events, elapsed_s, delivered, f"{BATCH_ROWS} rows per COPY"
        )

    def measure_broker(self, results: Results, tag: str) -> Measurement:
        """The broker limit with the minimal mqtt5 subscriber: first publish to its last message."""
        events = self.options.events
        with self.broker(f"limit-{tag}") as broker:
            argv = [sys.executable, "-m", "tools.bench.limits", "--count", str(events)]
            env = child_env(self.identities.gateway_url(broker))
            log_path = self.logs / f"limit-subscriber-{tag}.log"
            with (
                BenchChild("mqtt5 subscriber", argv, log_path=log_path, env=env) as sub,
                self.publishers(broker, events, f"limit-{tag}") as publishers,
            ):
                sub.expect("ready", START_TIMEOUT_S)
                started_at = publishers.go()
                received, last_at = sub.expect("done", self._timeout_s(events))
                results.publish["broker"] = publishers.wait(START_TIMEOUT_S)
        return Measurement(
            "broker", events, float(last_at) - started_at, int(received), "mqtt5, batched PUBACKs"
        )

    def measure_mosquitto_sub(self, results: Results, tag: str) -> Measurement:
        """The broker limit with Debian's mosquitto_sub: first publish to its exit."""
        events = self.options.events
        client_id = "bench-mosquitto-sub"
        with self.broker(f"mosquitto_sub-{tag}") as broker:
            gateway_url = self.identities.gateway_url(broker)
            env = mosquitto_client_env(gateway_url, self.base_dir / "client-options" / f"sub-{tag}")
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
            log_path = self.logs / f"mosquitto_sub-{tag}.log"
            with (
                self.publishers(broker, events, f"mosquitto_sub-{tag}") as publishers,
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

    def measure_gateway(self, results: Results, tag: str) -> Measurement:
        """The gateway(s) end to end: from the first publish to the N-th committed row."""
        events = self.options.events
        with (
            self.fresh_database(f"gateway_{tag}") as url,
            self.broker(f"gateway-{tag}") as broker,
            Gateways(
                self.options.gateways,
                database_url=url,
                mqtt_url=self.identities.gateway_url(broker),
                log_dir=self.logs,
                tag=tag,
            ) as gateways,
            self.publishers(broker, events, f"gateway-{tag}") as publishers,
        ):
            gateways.wait_subscribed()
            self._probe(self.identities.simulator_url(broker), url, gateways)
            before = gateways.stored()
            started_at = publishers.go()
            done_at = _wait_for_rows(url, events, started_at, what="gateway", alive=gateways)
            results.publish["gateway"] = publishers.wait(START_TIMEOUT_S)
            delivered = _count_events(url)
            per_gateway = gateways.stored_since(before, delivered)
            gateways.stop()
        note = (
            f"{len(per_gateway)} gateways, one shared subscription" if len(per_gateway) > 1 else ""
        )
        return Measurement("gateway", events, done_at - started_at, delivered, note, per_gateway)

    def measure_naive(self, results: Results, tag: str) -> Measurement:
        """The naive bridge: first publish to its N-th row."""
        events = self.options.naive_events
        with (
            self.fresh_database(f"naive_{tag}") as url,
            self.broker(f"naive-{tag}") as broker,
        ):
            argv = [sys.executable, "-m", "tools.bench.naive", "--database-url", url]
            env = child_env(self.identities.gateway_url(broker))
            with (
                BenchChild(
                    "naive bridge", argv, log_path=self.logs / f"naive-{tag}.log", env=env
                ) as bridge,
                self.publishers(broker, events, f"naive-{tag}") as publishers,
            ):
                bridge.expect("ready", START_TIMEOUT_S)
                started_at = publishers.go()
                done_at = _wait_for_rows(url, events, started_at, what="naive bridge", alive=bridge)
                results.publish["naive"] = publishers.wait(START_TIMEOUT_S)
            delivered = _count_events(url)
        note = f"first {events} of the events" if events < self.options.events else ""
        return Measurement("naive", events, done_at - started_at, delivered, note)

    def _probe(self, mqtt_url: str, url: str, gateways: Gateways) -> None:
        """Publish probe events as ``mqtt_url``'s user (a publisher's: the simulator) until one
        is stored: a gateway is subscribed and storing.

        Mosquitto answers a PUBLISH that matched no subscription with reason 16, so a probe
        is repeated until one was routed, and then waited for in the database. The probe
        rows are deleted before the clock starts.
        """
        deadline = time.monotonic() + _PROBE_TIMEOUT_S
        with Qos1Connection(mqtt_url, client_id="bench-probe") as mqtt:
            routed = mqtt.publish_until_routed(
                self._data().devices[0].topic,
                lambda number: workload.live_envelope(f"probe-{number}", "heartbeat"),
                deadline=deadline,
                check=gateways.check_alive,
            )
        if not routed:
            raise gateways.failed(f"did not subscribe within {_PROBE_TIMEOUT_S:.0f} s")
        with psycopg.connect(url, autocommit=True) as conn:
            while conn.execute("SELECT count(*) FROM events").fetchone() != (1,):
                gateways.check_alive()
                if time.monotonic() > deadline:
                    raise gateways.failed("did not store the probe event")
                time.sleep(0.05)
            conn.execute("DELETE FROM events")


# --- helpers ------------------------------------------------------------------------------------


class _Alive(Protocol):
    """What a measurement checks while it waits: its reader has not exited."""

    def check_alive(self, when: str = "") -> None:
        """Raise if it has exited."""


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


def _wait_for_rows(url: str, target: int, started_at: float, *, what: str, alive: _Alive) -> float:
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
            alive.check_alive(f"at {count} rows")
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
    run_results = RunResults()
    # First, while nothing else of the run is running: how fast the disk under the private
    # PostgreSQL's data directory makes a write durable (every commit waits for one).
    (base_dir / "logs").mkdir(exist_ok=True)
    log.info("measuring the disk's fsync rate (pg_test_fsync) ...")
    fsync = hardware.fsync_rate(base_dir / "postgres", base_dir / "logs" / "pg_test_fsync.log")
    log.info("fdatasync: %s ops/s %s", fsync.ops_per_s, fsync.note)
    with PostgresInstance(base_dir / "postgres", settings=POSTGRES_SETTINGS) as postgres:
        bench = IngestBench(base_dir, options, postgres)
        for number, other_share in enumerate(options.other_shares, 1):
            mix: MixResults | None = None
            for repetition in range(1, options.repeat + 1):
                tag = f"m{number}r{repetition}"
                log.info(
                    "%s: generating %s events (other share %s) for %s devices",
                    tag,
                    options.events,
                    other_share,
                    options.devices,
                )
                # Generated again for every repetition, with the same seed: the same events
                # and ids, their device times again just before now. The timed rules compare
                # them with the clock (door_left_unlocked after 10 min), so a later repetition
                # must not get older events than the first.
                bench.use_workload(
                    workload.make_workload(
                        events=options.events,
                        devices=options.devices,
                        publishers=options.publishers,
                        now=datetime.now(UTC),
                        other_share=other_share,
                    )
                )
                if mix is None:
                    if number == 1:
                        # The run's events are minutes old: retention never touches them.
                        bench.prepare_template(default_retention_days())
                    mix = MixResults(other_share, bench.event_types())
                    run_results.mixes.append(mix)
                results = Results()
                for name, step in _repeated_steps(bench):
                    if name not in options.skip:
                        _measure(name, step, results, tag)
                mix.repetitions.append(results)
                if number == 1 and repetition == options.repeat and "naive" not in options.skip:
                    # Once, on the first mix: the naive bridge does the same for every type.
                    _measure("naive", bench.measure_naive, run_results.naive, tag)
                bench.forget_workload()  # one repetition's events in memory at a time
        facts = {
            "machine": {**machine(postgres.url()), "fsync": fsync.as_json()},
            "postgres_settings": _postgres_settings(postgres.url()),
        }
    result = summary(options, run_results, facts)
    print_report(render_table(options, run_results, result), result, as_json=options.json)
    log.info("done in %.0f s", time.monotonic() - started)
    return 0


_Step = Callable[[Results, str], Measurement]


def _repeated_steps(bench: IngestBench) -> tuple[tuple[str, _Step], ...]:
    """What every repetition measures, in this order: the limits, then the gateway."""
    steps: tuple[tuple[str, _Step], ...] = (
        ("copy", bench.measure_copy),
        ("broker", bench.measure_broker),
        ("mosquitto_sub", bench.measure_mosquitto_sub),
        ("gateway", bench.measure_gateway),
    )
    assert (*(name for name, _ in steps), "naive") == MEASUREMENTS
    return steps


def _measure(name: str, step: _Step, results: Results, tag: str) -> None:
    log.info("%s: measuring %s ...", tag, TITLES[name])
    measurement = step(results, tag)
    results.measurements[name] = measurement
    log.info(
        "%s: %s events in %.2f s = %.0f events/s (%s delivered%s)",
        name,
        measurement.events,
        measurement.elapsed_s,
        measurement.eps,
        measurement.delivered,
        f", by gateway {list(measurement.per_gateway)}" if len(measurement.per_gateway) > 1 else "",
    )
    _check_delivery(measurement, results.publish.get(name))


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
