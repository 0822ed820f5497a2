"""Private PostgreSQL and Mosquitto instances, and what the shipped broker config promises."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker.mosquitto import MosquittoInstance, shipped_config
from carewatch.errors import LocalInstanceError
from carewatch.processes import ChildProcess, free_port, start_listening
from carewatch.settings import MqttEndpoint
from tests.fixtures.mqtt import publish_all
from tests.fixtures.services import connect_properties
from tools.local.identities import LocalIdentities
from tools.local.postgres import PostgresInstance

REPO = Path(__file__).resolve().parents[2]
FAST = {"fsync": "off"}


def test_free_port_is_a_bindable_loopback_port() -> None:
    """free_port() names a port on 127.0.0.1 that can be bound right away."""
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_child_process_logs_both_streams_and_ends_with_its_block(tmp_path: Path) -> None:
    """stdout and stderr go to the log file; leaving the block ends the child with SIGTERM."""
    log_path = tmp_path / "child.log"
    script = (
        "import sys, time; print('out', flush=True); print('err', file=sys.stderr); time.sleep(60)"
    )
    with ChildProcess("sleeper", [sys.executable, "-c", script], log_path=log_path) as child:
        deadline = time.monotonic() + 10
        while child.log_tail().splitlines() != ["out", "err"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert child.log_tail().splitlines() == ["out", "err"]
        assert child.is_running()
    assert child.poll() == -signal.SIGTERM


def test_child_process_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    """stop() waits stop_timeout_s after SIGTERM, then SIGKILLs."""
    script = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " print('ready', flush=True); time.sleep(60)"
    )
    child = ChildProcess(
        "stubborn",
        [sys.executable, "-c", script],
        log_path=tmp_path / "stubborn.log",
        stdout="pipe",
        stop_timeout_s=0.2,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    assert child.stop() == -signal.SIGKILL
    assert not child.is_running()


def test_start_listening_tries_another_port_when_the_first_was_taken(tmp_path: Path) -> None:
    """A start whose log says the port is in use is retried on a fresh port, when allowed."""
    log_path = tmp_path / "server.log"
    tried: list[int] = []

    def start(port: int) -> str | None:
        tried.append(port)
        if len(tried) == 1:
            with log_path.open("a") as log:
                log.write("bind: Address already in use\n")
            return ""
        return None

    port = free_port()
    assert start_listening("server", start, port=port, retry_ports=True, log_path=log_path) != port
    assert len(tried) == 2
    assert tried[0] == port

    tried.clear()
    with pytest.raises(LocalInstanceError, match="Address already in use"):
        start_listening("server", start, port=port, retry_ports=False, log_path=log_path)
    assert tried == [port]


def test_postgres_listens_on_loopback_and_keeps_data_across_restarts(
    postgres_base_dir: Path,
) -> None:
    """A restart on the same directory reuses the cluster (no initdb) and keeps its rows."""
    with PostgresInstance(postgres_base_dir, settings=FAST) as pg:
        assert pg.is_running()
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (42)")
    assert not pg.is_running()
    version_file = (postgres_base_dir / "data" / "PG_VERSION").stat()

    with PostgresInstance(postgres_base_dir) as again:
        with psycopg.connect(again.url()) as conn:
            assert conn.execute("SELECT x FROM kept").fetchall() == [(42,)]
        assert (postgres_base_dir / "data" / "PG_VERSION").stat().st_mtime == version_file.st_mtime
    assert (postgres_base_dir / "postgres.log").stat().st_size > 0


def test_postgres_kill_then_start_recovers_committed_rows(postgres_base_dir: Path) -> None:
    """SIGKILL of the server leaves a stale postmaster.pid; start() recovers what committed."""
    with PostgresInstance(postgres_base_dir, settings=FAST) as pg:
        port = pg.port
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
            pg.kill()
            assert not pg.is_running()
            assert (pg.data_dir / "postmaster.pid").exists()
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        pg.start()
        assert pg.port == port, "clients reconnect to the same address"
        with psycopg.connect(pg.url()) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (1000,)


def test_postgres_start_ignores_a_pid_file_naming_an_unrelated_process(
    postgres_base_dir: Path,
) -> None:
    """A postmaster.pid whose pid now belongs to another process is stale and removed."""
    pg = PostgresInstance(postgres_base_dir, settings=FAST)
    pg.start()
    pg.stop()
    pid_file = pg.data_dir / "postmaster.pid"
    pid_file.write_text(f"{os.getpid()}\n{pg.data_dir}\n")
    with pg:
        assert pg.is_running()
        with psycopg.connect(pg.url()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_postgres_create_database_from_template_and_drop(postgres_base_dir: Path) -> None:
    """create_database copies a template's tables; drop_database ends open connections."""
    with PostgresInstance(postgres_base_dir, settings=FAST) as pg:
        with psycopg.connect(pg.create_database("tpl"), autocommit=True) as conn:
            conn.execute("CREATE TABLE inherited (x int)")
        url = pg.create_database("copy", template="tpl")
        assert url == f"postgresql://postgres@127.0.0.1:{pg.port}/copy"
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM inherited").fetchone() == (0,)
            pg.drop_database("copy")
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")


class Collector:
    """An MQTT 5 client that subscribes and never acknowledges what it receives."""

    def __init__(self, url: str, topic: str, *, receive_maximum: int | None = None) -> None:
        endpoint = MqttEndpoint(url)
        self.messages: list[mqtt.MQTTMessage] = []
        self.subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"collector-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        self._client.on_message = lambda _c, _u, message: self.messages.append(message)
        self._client.on_subscribe = lambda *_args: self.subscribed.set()
        if endpoint.username:
            self._client.username_pw_set(endpoint.username, endpoint.password)
        properties = connect_properties(
            **({} if receive_maximum is None else {"ReceiveMaximum": receive_maximum})
        )
        self._client.connect(endpoint.host, endpoint.port, clean_start=True, properties=properties)
        self._client.subscribe(topic, qos=1)
        self._client.loop_start()
        assert self.subscribed.wait(5), "no SUBACK"

    def settle(self, *, at_least: int, timeout_s: float = 10.0, quiet_s: float = 0.5) -> int:
        """Wait for ``at_least`` messages, then until none arrived for ``quiet_s``; the count."""
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < at_least and time.monotonic() < deadline:
            time.sleep(0.02)
        seen = -1
        while seen != len(self.messages):
            seen = len(self.messages)
            time.sleep(quiet_s)
        return seen

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def test_mosquitto_restart_keeps_port_and_persisted_retained_messages(tmp_path: Path) -> None:
    """stop() lets the broker save its state; after a restart on the same port it is still there."""
    identities = LocalIdentities()
    with MosquittoInstance(tmp_path / "mq", auth=identities.auth()) as broker:
        port = broker.port
        publish_all(
            identities.simulator_url(broker),
            [("carewatch/devices/t-lock-1/status", b"online")],
            retain=True,
        )
        broker.restart()
        assert broker.port == port
        collector = Collector(identities.gateway_url(broker), "carewatch/devices/+/status")
        collector.settle(at_least=1)
        collector.close()
    assert not broker.is_running()
    assert [(m.topic, m.payload) for m in collector.messages] == [
        ("carewatch/devices/t-lock-1/status", b"online")
    ]


def test_mosquitto_kill_then_start_serves_again(tmp_path: Path) -> None:
    """After SIGKILL the broker starts again on the same port."""
    identities = LocalIdentities()
    with MosquittoInstance(tmp_path / "mq", auth=identities.auth()) as broker:
        broker.kill()
        assert not broker.is_running()
        broker.start()
        url = identities.simulator_url(broker)
        assert publish_all(url, [("carewatch/devices/t-lock-1/events", b"{}")]) == 1


def test_private_broker_config_is_the_shipped_one_with_its_own_listener(tmp_path: Path) -> None:
    """The generated file keeps the shipped options and replaces the places with private ones."""
    shipped = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    assert shipped_config().read_text() == shipped
    broker = MosquittoInstance(tmp_path / "mq", port=free_port())
    config = broker.render_config()
    active = [line for line in config.splitlines() if line and not line.startswith("#")]
    for option in (
        "max_queued_messages",
        "max_queued_bytes",
        "persistence true",
        "allow_anonymous false",
    ):
        assert any(line.startswith(option) for line in active), option
    assert f"listener {broker.port} 127.0.0.1" in active
    assert "listener 1883" not in active
    assert f"persistence_location {broker.data_dir}/" in active
    assert f"password_file {broker.auth_paths.password_file}" in active
    assert f"acl_file {broker.auth_paths.acl_file}" in active
    assert "allow_anonymous true" not in active


def test_receive_maximum_not_max_inflight_messages_bounds_a_v5_subscriber(
    gateway_url: str, publisher_url: str, test_token: str
) -> None:
    """Shipped config: a v5 client with Receive Maximum 4000 gets 4000 unacknowledged messages.

    This is what lets the gateway fill batches of 2000 while the previous batch commits:
    the shipped max_inflight_messages (1000) applies to MQTT 3.1.1 clients only.
    """
    topic = f"carewatch/devices/{test_token}-inflight/events"
    collector = Collector(gateway_url, topic, receive_maximum=4000)
    try:
        publish_all(publisher_url, [(topic, b"x")] * 4500)
        received = collector.settle(at_least=4000)
    finally:
        collector.close()
    assert received == 4000
