"""The restore drill: pgBackRest backs up while the real gateway ingests, restores to a point in
time, and the restored database holds exactly what was committed up to it.

Plain PostgreSQL (the TimescaleDB steps are in docs/backup.md). pgBackRest runs with the
shipped deploy/pgbackrest/pgbackrest.conf, only its places replaced by the test's own (repo,
lock, log, spool, data directory, socket), and PostgreSQL with the shipped archive settings
(deploy/pgbackrest/postgresql.conf). The drill prints its restore time and the restore report.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import pwd
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql

from carewatch import admin
from carewatch.db.audit import AuditEntry, Auditor, write_audit
from carewatch.db.migrate import migrate
from carewatch.processes import is_root
from carewatch.settings import MqttEndpoint, Settings
from tests.fixtures.gateway_process import GatewayProcess, wait_until
from tests.fixtures.mqtt import envelope, events_topic, publish_all
from tests.fixtures.services import (
    TEST_POSTGRES_SETTINGS,
    MakeSettings,
    SeededRegistry,
    postgres_directory,
    seed_registry,
)
from tools.local.postgres import SUPERUSER, PostgresInstance

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "pgbackrest"
STANZA = "carewatch"
# Alarm buttons beyond the seeded ones: each first press opens an alert of its own, so the
# alerts table grows in every phase of the drill.
ALARM_BUTTONS = 120
# The tables whose counts must come back exactly; audit_log is written by no gateway, so the
# drill writes it in every phase.
COUNTED: tuple[str, ...] = ("events", "alerts", "alert_changes", "audit_log")


# --- the shipped configuration, with the test's places ------------------------------------------


def shipped_pgbackrest_conf(overrides: Mapping[str, str]) -> str:
    """deploy/pgbackrest/pgbackrest.conf with the values of ``overrides`` replaced.

    Every overridden key must be in the shipped file, so renaming one there fails here.
    """
    lines, seen = [], set()
    for line in (DEPLOY / "pgbackrest.conf").read_text(encoding="utf-8").splitlines():
        key = line.split("=", 1)[0].strip()
        if not line.lstrip().startswith("#") and "=" in line and key in overrides:
            line = f"{key}={overrides[key]}"
            seen.add(key)
        lines.append(line)
    assert seen == set(overrides), f"not in the shipped file: {set(overrides) - seen}"
    return "\n".join(lines) + "\n"


def shipped_archive_settings() -> dict[str, str]:
    """deploy/pgbackrest/postgresql.conf as a dict (``name = 'value'`` lines)."""
    settings = {}
    for line in (DEPLOY / "postgresql.conf").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, value = (part.strip() for part in line.split("=", 1))
            settings[name] = value.strip("'")
    return settings


@dataclass(frozen=True)
class Backrest:
    """pgBackRest with a configuration file of the drill's own, run as PostgreSQL's OS user."""

    config: Path

    def __call__(self, *args: str, timeout_s: float = 120.0) -> str:
        argv = ["pgbackrest", f"--config={self.config}", f"--stanza={STANZA}", *args]
        if is_root():
            argv = ["runuser", "-u", SUPERUSER, "--", *argv]
        result = subprocess.run(
            argv, cwd="/", capture_output=True, text=True, timeout=timeout_s, check=False
        )
        assert result.returncode == 0, f"pgbackrest {args[0]} failed:\n{result.stderr}"
        return result.stdout


def owned_by_postgres(path: Path) -> Path:
    """Make the directory ``path``, writable by the server's OS user (it runs archive-push)."""
    path.mkdir(mode=0o700, parents=True)
    if is_root():
        account = pwd.getpwnam(SUPERUSER)
        os.chown(path, account.pw_uid, account.pw_gid)
    return path


@dataclass
class Drill:
    """The drill's places: the source cluster, the restored one and pgBackRest's own."""

    base: Path
    source: PostgresInstance
    backrest: Backrest

    @contextlib.contextmanager
    def restore(self, label: str, *target: str) -> Iterator[tuple[PostgresInstance, float]]:
        """Restore the latest backup into a fresh data directory and start it on another port;
        yields it once recovery has reached ``target`` and promoted, with the seconds taken."""
        started = time.monotonic()
        instance = PostgresInstance(self.base / label, settings=TEST_POSTGRES_SETTINGS)
        owned_by_postgres(instance.data_dir)
        self.backrest(
            "restore", *target, "--target-action=promote", f"--pg1-path={instance.data_dir}"
        )
        with instance:
            wait_promoted(instance)
            yield instance, time.monotonic() - started


@pytest.fixture
def drill() -> Iterator[Drill]:
    """A source PostgreSQL archiving its WAL through pgBackRest into a private repository."""
    with postgres_directory("backup") as base:
        places = {
            name: owned_by_postgres(base / name)
            for name in ("repo", "lock", "log", "spool", "sock")
        }
        source = PostgresInstance(base / "source")
        config = base / "pgbackrest.conf"
        archive = shipped_archive_settings()
        # Where the drill's archive_command finds its configuration; the rest is as shipped.
        archive["archive_command"] = archive["archive_command"].replace(
            "pgbackrest ", f"pgbackrest --config={config} ", 1
        )
        source.settings = {
            **TEST_POSTGRES_SETTINGS,
            **archive,
            # pgBackRest talks to the server over its unix socket (pg1-socket-path).
            "unix_socket_directories": str(places["sock"]),
        }
        source.start()
        config.write_text(
            shipped_pgbackrest_conf(
                {
                    "repo1-path": str(places["repo"]),
                    "lock-path": str(places["lock"]),
                    "log-path": str(places["log"]),
                    "spool-path": str(places["spool"]),
                    "pg1-path": str(source.data_dir),
                    "pg1-socket-path": str(places["sock"]),
                    "pg1-port": str(source.port),
                    "pg1-user": SUPERUSER,
                }
            ),
            encoding="utf-8",
        )
        config.chmod(0o644)
        try:
            yield Drill(base, source, Backrest(config))
        finally:
            source.stop("immediate")


# --- traffic and writes ----------------------------------------------------------------------


class Traffic:
    """Device events through the real broker, a steady stream on a thread, QoS 1.

    Heartbeats from the seeded devices, with a press of the next alarm button every 20th
    message (an alert opened in the same gateway transaction). Records when each was published.
    """

    def __init__(self, mqtt_url: str, devices: list[str], buttons: list[str]) -> None:
        endpoint = MqttEndpoint(mqtt_url)
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="drill-traffic", protocol=mqtt.MQTTv5
        )
        self._client.username_pw_set(endpoint.username, endpoint.password)
        self._client.max_inflight_messages_set(1000)
        self._client.connect(endpoint.host, endpoint.port, clean_start=True)
        self._devices, self._buttons = itertools.cycle(devices), itertools.cycle(buttons)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-traffic", daemon=True)
        self._infos: list[mqtt.MQTTMessageInfo] = []
        self.published: list[tuple[str, str, float]] = []  # (device, event id, wall clock)

    def __enter__(self) -> Traffic:
        self._client.loop_start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop publishing and wait until the broker has acknowledged every message."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            for info in self._infos:
                info.wait_for_publish(30)
            self._client.disconnect()
            self._client.loop_stop()

    def _run(self) -> None:
        for n in itertools.count():
            if self._stop.wait(0.01):  # about 100 messages a second: a live care home or two
                return
            event_id = f"drill-{n}"
            if n % 20 == 0:
                device = next(self._buttons)
                payload = envelope(event_id, "alarm.pressed")
            else:
                device = next(self._devices)
                payload = envelope(event_id, "heartbeat", {"battery": 80})
            self.published.append((device, event_id, time.time()))
            self._infos.append(self._client.publish(events_topic(device), payload, qos=1))


def write_audit_entries(database_url: str, org_id: str, note: str, count: int = 3) -> None:
    """``count`` audit entries, as the API writes them (the one writer of the audit log)."""

    async def write() -> None:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await write_audit(
                conn,
                Auditor(username="drill", client="test"),
                [AuditEntry("alert.view", org_id=org_id, note=f"{note} {i}") for i in range(count)],
            )

    asyncio.run(write())


def counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Rows per counted table."""
    result = {}
    for table in COUNTED:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        row = conn.execute(query).fetchone()
        assert row is not None
        result[table] = row[0]
    return result


def event_keys(database_url: str) -> set[tuple[str, str]]:
    with psycopg.connect(database_url) as conn:
        return set(conn.execute("SELECT device_id, event_id FROM events").fetchall())


@dataclass(frozen=True)
class Target:
    """A restore target and what was committed up to it."""

    time: str  # the server's clock_timestamp(), as PostgreSQL prints it
    name: str
    at: datetime
    counts: dict[str, int]


def take_target(database_url: str, name: str) -> Target:
    """Counts, a time and a named restore point, all at one instant of the committed state.

    Writers of the counted tables are held off (EXCLUSIVE lets readers through) for the
    instant it takes: every transaction that wrote them before is committed and counted, every
    later one commits after the time read here, so its commit record comes after both targets
    in the WAL. Without the lock, a batch committing between the count and the target would
    be restored but not counted (or the other way round).
    """
    with psycopg.connect(database_url) as conn, conn.transaction():
        tables = sql.SQL(", ").join(sql.Identifier(table) for table in COUNTED)
        conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(tables))
        committed = counts(conn)
        row = conn.execute(
            "SELECT clock_timestamp()::text, clock_timestamp(), pg_create_restore_point(%s)",
            (name,),
        ).fetchone()
        assert row is not None
    return Target(row[0], name, row[1], committed)


def wait_promoted(instance: PostgresInstance, timeout_s: float = 60.0) -> None:
    """Wait until recovery has reached its target and the server accepts writes."""

    def promoted() -> bool:
        with psycopg.connect(instance.url(), autocommit=True) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        return row == (False,)

    wait_until(promoted, timeout_s, 0.1, context=lambda: instance.log_path.read_text())


def restore_report(database_url: str, failed_at: datetime) -> tuple[dict[str, Any], str]:
    """``carewatch restore report`` as an operator runs it: (the JSON, the text)."""

    def run(*extra: str) -> str:
        argv = [sys.executable, "-m", "app.cli", "restore", "report", "--database-url"]
        argv += [database_url, "--failed-at", failed_at.isoformat(), *extra]
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    return json.loads(run("--json")), run()


# --- the drill -------------------------------------------------------------------------------


@pytest.mark.slow
def test_restore_to_a_point_in_time_holds_exactly_what_was_committed(
    drill: Drill,
    make_settings: MakeSettings,
    publisher_url: str,
    test_token: str,
) -> None:
    """A backup taken during ingest restores to a point in time with exactly the committed
    rows; the gateway resumes against it; the window lost after the target is reported."""
    source_url = drill.source.create_database("carewatch")
    migrate(source_url, retention_days=Settings().retention_days)
    seeded: SeededRegistry = seed_registry(source_url, test_token)
    buttons = [f"{test_token}-button-{i:03d}" for i in range(ALARM_BUTTONS)]
    # Pressed only after the target, so that an alert is opened after it whatever the timing.
    late_button, buttons = buttons[-1], buttons[:-1]
    with psycopg.connect(source_url, autocommit=True) as conn:
        admin.add_devices_bulk(
            conn, ((b, "alarm_button", seeded.site_id, "") for b in [*buttons, late_button])
        )
    drill.backrest("stanza-create")

    source_settings = make_settings(source_url)
    gateway = GatewayProcess(source_settings, drill.base / "gateway-source.log")
    heartbeats = [d for d in seeded.all_devices() if "alarm_button" not in d]
    with gateway, Traffic(publisher_url, heartbeats, buttons) as traffic:
        wait_until(lambda: event_count(source_url) > 50, context=gateway.log_tail)
        write_audit_entries(source_url, seeded.org_id, "before the backup")

        # The full backup, while the gateway stores ~100 events a second.
        stored_before, backup_started = event_count(source_url), time.monotonic()
        drill.backrest("backup", "--type=full")
        backup_s = time.monotonic() - backup_started
        (backup,) = json.loads(drill.backrest("info", "--output=json"))[0]["backup"]
        sizes_mb = backup["info"]["size"] / 1e6, backup["info"]["repository"]["size"] / 1e6
        # A time target picks the newest backup that stopped before it; pgBackRest records
        # whole seconds, so the target keeps a second away from the stop.
        backup_stop = backup["timestamp"]["stop"] + 1
        assert event_count(source_url) > stored_before, "nothing was stored during the backup"

        # More after the backup (replayed from the archived WAL), then the target.
        write_audit_entries(source_url, seeded.org_id, "after the backup")
        before_target = event_count(source_url)
        wait_until(lambda: event_count(source_url) > before_target + 100)
        wait_until(lambda: time.time() > backup_stop, timeout_s=5)
        target = take_target(source_url, "drill")

        # Even more after the target: the gateway stores and acknowledges it, then we lose it.
        write_audit_entries(source_url, seeded.org_id, "after the target")
        pressed_after = [(events_topic(late_button), envelope("after-target", "alarm.pressed"))]
        publish_all(publisher_url, pressed_after)
        wait_until(lambda: event_count(source_url) > target.counts["events"] + 100)
        traffic.stop()
        published = len(traffic.published) + len(pressed_after)
        wait_until(lambda: event_count(source_url) == published, context=gateway.log_tail)
        assert gateway.stop() == 0

    # The failure: the WAL written so far reaches the repository (check switches the segment
    # and waits for it; an abrupt loss of the disk would lose up to archive_timeout of it).
    drill.backrest("check")
    # Every file of the backup and every archived segment reads back with its checksum.
    drill.backrest("verify")
    failed_at = datetime.now(UTC)
    with psycopg.connect(source_url) as conn:
        lost_source = counts(conn)
    source_keys = event_keys(source_url)
    drill.source.stop("immediate")
    for table in COUNTED:
        assert lost_source[table] > target.counts[table], f"nothing written to {table} after"

    # While nothing ingests, devices go on: the broker queues for the gateway's session.
    during_outage = [(events_topic(heartbeats[0]), envelope(f"outage-{i}")) for i in range(5)]
    publish_all(publisher_url, during_outage)

    # The named restore point: exact by construction (a position in the WAL, no clocks).
    with (
        drill.restore("by-name", "--type=name", f"--target={target.name}") as (by_name, _),
        psycopg.connect(by_name.url("carewatch")) as conn,
    ):
        assert counts(conn) == target.counts

    # The target time, as an operator restores: exact too, as the time was read while the
    # writers were held off (take_target). Into a fresh data directory, on another port.
    with drill.restore("by-time", "--type=time", f"--target={target.time}") as (restored, rto_s):
        restored_url = restored.url("carewatch")
        with psycopg.connect(restored_url) as conn:
            assert counts(conn) == target.counts
        restored_keys = event_keys(restored_url)
        assert restored_keys <= source_keys
        after_target = {(d, e) for d, e, at in traffic.published if at > target.at.timestamp()}
        assert after_target, "no event was published after the target"
        assert not after_target & restored_keys

        # What was acknowledged after the target is reported, with the window it fell in.
        report, text = restore_report(restored_url, failed_at)
        print(
            f"\nrestore drill: full backup of {sizes_mb[0]:.0f} MB ({sizes_mb[1]:.1f} MB in the"
            f" repository) during ingest in {backup_s:.1f} s; restored to the target time and"
            f" promoted in {rto_s:.1f} s\n{text}"
        )
        data_until = datetime.fromisoformat(report["data_until"])
        assert data_until <= target.at
        assert report["lost_s"] >= (failed_at - target.at).total_seconds()
        (site,) = report["sites"]
        assert site["site_id"] == seeded.site_id
        assert site["devices"] == len(seeded.all_devices()) + ALARM_BUTTONS
        with psycopg.connect(restored_url) as conn:
            row = conn.execute("SELECT count(*) FROM alerts WHERE state <> 'resolved'").fetchone()
        assert row == (site["open_alerts"],)

        # The gateway resumes against the restored database under the same client id: the
        # broker hands it what it queued during the outage, and new events are stored.
        resumed = GatewayProcess(make_settings(restored_url), drill.base / "gateway-restored.log")
        with resumed:
            publish_all(publisher_url, [(events_topic(heartbeats[1]), envelope("resumed-1"))])
            expected = target.counts["events"] + len(during_outage) + 1
            wait_until(lambda: event_count(restored_url) == expected, context=resumed.log_tail)
            assert resumed.stop() == 0


def event_count(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    assert row is not None
    return int(row[0])


def compose_db_settings() -> dict[str, str]:
    """The ``-c name=value`` options of docker-compose.yml's db service, read as text."""
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    service = text.split("\n  db:\n", 1)[1].split("\n\n", 1)[0]
    items = [line.strip()[2:] for line in service.splitlines() if line.strip().startswith("- ")]
    pairs = [items[i + 1] for i, item in enumerate(items[:-1]) if item == "-c"]
    return dict(pair.split("=", 1) for pair in pairs)


def test_compose_archives_the_wal_as_the_drill_does() -> None:
    """docker-compose.yml's db service runs with the archive settings the drill tested."""
    assert compose_db_settings() == shipped_archive_settings()
