"""Nothing accepted is lost and nothing is stored twice when the gateway or the database dies."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from broker.mosquitto import MosquittoInstance
from carewatch.settings import Settings
from tests.fixtures.gateway_process import GatewayProcess, wait_until
from tests.fixtures.mqtt import envelope, events_topic, publish_all
from tests.fixtures.services import MakeSettings, SeededRegistry
from tools.local.identities import LocalIdentities
from tools.local.postgres import PostgresInstance

pytestmark = pytest.mark.slow

STREAM_EVENTS = 20_000


def count_events(database_url: str) -> int:
    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM events").fetchone()
    except psycopg.OperationalError:
        return -1
    assert row is not None
    return int(row[0])


class Stream:
    """QoS 1 messages published from a thread while the test breaks things."""

    def __init__(
        self, mqtt_url: str, device_ids: list[str], count: int, *, prefix: str = "s"
    ) -> None:
        self.messages = [
            (
                events_topic(device_ids[i % len(device_ids)]),
                envelope(f"{prefix}{i}", "heartbeat", {"battery": 50 + i % 50, "rssi": -60}),
            )
            for i in range(count)
        ]
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(mqtt_url,), daemon=True)

    def _run(self, mqtt_url: str) -> None:
        try:
            publish_all(mqtt_url, self.messages, timeout_s=120)
        except BaseException as error:  # reported by join()
            self.error = error

    def start(self) -> Stream:
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join(120)
        assert not self._thread.is_alive(), "publisher did not finish"
        assert self.error is None, self.error


def assert_exactly_once(database_url: str, expected: int) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, event_id)) FROM events"
        ).fetchone()
    assert row == (expected, expected)


def test_gateway_killed_mid_stream_and_restarted_loses_nothing(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, tmp_path: Path
) -> None:
    """SIGKILL in the middle of a QoS 1 stream: after a restart every event is stored once."""
    gateway = GatewayProcess(settings, tmp_path / "gateway.log")
    with gateway:
        stream = Stream(publisher_url, seeded.all_devices(), STREAM_EVENTS).start()
        wait_until(lambda: count_events(settings.database_url) > STREAM_EVENTS // 5, 60, 0.01)
        gateway.kill()
        killed_at = count_events(settings.database_url)
        assert killed_at < STREAM_EVENTS, "the stream ended before the kill; make it longer"
        gateway.start()
        stream.join()
        wait_until(
            lambda: count_events(settings.database_url) >= STREAM_EVENTS,
            120,
            context=gateway.log_tail,
        )
        time.sleep(1)  # anything redelivered late would show up as an extra row now
    assert_exactly_once(settings.database_url, STREAM_EVENTS)


def test_database_stopped_mid_stream_loses_nothing_and_holds_bounded_memory(
    publisher_url: str,
    private_pg: PostgresInstance,
    private_settings: Settings,
    private_seeded: SeededRegistry,
    tmp_path: Path,
) -> None:
    """Database gone mid-stream: the gateway holds at most its Receive Maximum, then catches up."""
    settings = private_settings
    gateway = GatewayProcess(settings, tmp_path / "gateway.log")
    with gateway:
        stream = Stream(publisher_url, private_seeded.all_devices(), STREAM_EVENTS).start()
        wait_until(lambda: count_events(settings.database_url) > STREAM_EVENTS // 5, 60, 0.01)
        private_pg.stop(mode="immediate")
        time.sleep(3)
        held = gateway.metric("carewatch_ingest_held_messages")
        assert held is not None
        assert 0 < held <= settings.receive_maximum
        assert gateway.process is not None
        assert gateway.process.poll() is None, "the gateway must survive the outage"
        private_pg.start()
        stream.join()
        wait_until(
            lambda: count_events(settings.database_url) >= STREAM_EVENTS,
            120,
            context=gateway.log_tail,
        )
        time.sleep(1)
        assert gateway.metric("carewatch_store_errors_total", 'error="OperationalError"') or (
            gateway.metric("carewatch_store_errors_total", 'error="PoolTimeout"')
        )
    assert_exactly_once(settings.database_url, STREAM_EVENTS)


def test_sigterm_drains_commits_and_acknowledges_before_exit(
    publisher_url: str, settings: Settings, seeded: SeededRegistry, tmp_path: Path
) -> None:
    """SIGTERM mid-stream: the gateway stores what it holds and exits 0; a restart does the rest."""
    gateway = GatewayProcess(settings, tmp_path / "gateway.log")
    with gateway:
        stream = Stream(publisher_url, seeded.all_devices(), STREAM_EVENTS).start()
        wait_until(lambda: count_events(settings.database_url) > STREAM_EVENTS // 5, 60, 0.01)
        assert gateway.stop(timeout_s=settings.drain_timeout_s + 10) == 0
        assert "drained" in gateway.log()
        stored_at_exit = count_events(settings.database_url)
        assert stored_at_exit < STREAM_EVENTS
        gateway.start()
        stream.join()
        wait_until(
            lambda: count_events(settings.database_url) >= STREAM_EVENTS,
            120,
            context=gateway.log_tail,
        )
        time.sleep(1)
    assert_exactly_once(settings.database_url, STREAM_EVENTS)


@pytest.mark.parametrize(
    ("share_group", "publish_before_reconnect"),
    [
        pytest.param("carewatch", False, id="shared-subscription"),
        pytest.param("", True, id="plain-subscription-publish-before-reconnect"),
    ],
)
def test_broker_restarted_mid_stream_loses_nothing(
    broker_identities: LocalIdentities,
    make_settings: MakeSettings,
    database_url: str,
    seeded: SeededRegistry,
    tmp_path: Path,
    share_group: str,
    publish_before_reconnect: bool,
) -> None:
    """Mosquitto restarts mid-stream: the gateway reconnects, resumes its session and stores
    every event once, including those in flight to it when the broker went down.

    With a plain subscription the gateway is even away while the broker restarts and the
    second half is published.
    Mosquitto 2.0.11 forgets an offline session's shared subscriptions over a restart, so
    with a shared one the test waits for the gateway first (a limitation the README states).
    """
    with MosquittoInstance(tmp_path / "broker", auth=broker_identities.auth()) as broker:
        settings = make_settings(
            database_url,
            mqtt_url=broker_identities.gateway_url(broker),
            gateway_share_group=share_group,
        )
        half = STREAM_EVENTS // 4
        publisher_url = broker_identities.simulator_url(broker)
        first = Stream(publisher_url, seeded.all_devices(), half)
        second = Stream(publisher_url, seeded.all_devices(), half, prefix="after")
        gateway = GatewayProcess(settings, tmp_path / "gateway.log")
        with gateway:
            first.start().join()
            if publish_before_reconnect:
                assert gateway.stop() == 0  # the gateway is away while the broker restarts
            broker.stop()  # SIGTERM: Mosquitto saves sessions and in-flight messages first
            broker.start()
            if publish_before_reconnect:
                second.start().join()
                gateway.start()
            else:
                wait_until(lambda: gateway.log().count("session present: True") == 1, 30)
                second.start().join()
            wait_until(
                lambda: count_events(settings.database_url) >= 2 * half,
                60,
                context=gateway.log_tail,
            )
            time.sleep(1)
    assert_exactly_once(settings.database_url, 2 * half)


# The store retries' cap (Settings.store_retry_max_s, 2 s) plus a commit, with room for a busy
# machine; the broker reconnect cap (30 s here, as in production) must not be what decides.
RESUME_BOUND_S = 8.0
# A stopped database for long enough that a pool whose reconnect delays kept doubling (1, 2,
# 4, 8, 16 s: the next attempt 11 s after the return) would miss the bound.
OUTAGE_S = {"read_only": 10.0, "stopped": 20.0}


def _set_read_only(server_url: str, *, on: bool) -> None:
    """``default_transaction_read_only`` for every session, as a full disk refuses writes."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET default_transaction_read_only = {'on' if on else 'off'}")
        conn.execute("SELECT pg_reload_conf()")


@pytest.mark.parametrize("outage", ["read_only", "stopped"])
def test_store_resumes_within_seconds_after_a_database_outage(
    publisher_url: str,
    private_pg: PostgresInstance,
    make_settings: MakeSettings,
    private_database_url: str,
    private_seeded: SeededRegistry,
    tmp_path: Path,
    outage: str,
) -> None:
    """After 10 s of a read-only or 20 s of a stopped database, the held event and a new one
    are stored within a few seconds of its return, whatever the broker reconnect cap."""
    settings = make_settings(private_database_url, reconnect_max_s=30.0)
    device = private_seeded.all_devices()[0]
    with GatewayProcess(settings, tmp_path / "gateway.log") as gateway:
        publish_all(publisher_url, [(events_topic(device), envelope("before"))])
        wait_until(lambda: count_events(settings.database_url) == 1, 30, context=gateway.log_tail)
        if outage == "read_only":
            _set_read_only(private_pg.url(), on=True)
        else:
            private_pg.stop()
        try:
            publish_all(publisher_url, [(events_topic(device), envelope("held"))])
            time.sleep(OUTAGE_S[outage])  # the gateway's retries back off meanwhile
        finally:
            if outage == "read_only":
                _set_read_only(private_pg.url(), on=False)
            else:
                private_pg.start()
        publish_all(publisher_url, [(events_topic(device), envelope("after"))])
        wait_until(
            lambda: count_events(settings.database_url) == 3,
            RESUME_BOUND_S,
            0.05,
            context=gateway.log_tail,
        )
    assert_exactly_once(settings.database_url, 3)
