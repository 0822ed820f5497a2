"""``carewatch simulate`` against the session's real Mosquitto (and PostgreSQL, and the gateway)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from app import cli
from broker.mosquitto import MosquittoInstance
from carewatch.settings import MqttEndpoint, Settings
from devices.envelope import DeviceRef, Event, StatusReport, parse
from tests.fixtures.gateway_process import GatewayProcess, settings_env, wait_until
from tests.fixtures.mqtt import publish_all
from tests.fixtures.services import MakeSettings, connect_properties
from tools.local.identities import LocalIdentities
from tools.simulate import fleet_for

# `carewatch simulate` runs here with its default id prefix, so its devices are sim-*: the
# tests below listen for those only and clear their retained statuses afterwards.
PREFIX = "carewatch/devices/sim-"
DONE_RE = re.compile(
    r"simulate: done, (\d+) messages sent, (\d+) acknowledged, (\d+) refused for lack of a "
    r"subscriber"
)


class Listener:
    """A QoS 1 subscriber that keeps what the simulator publishes live (not retained copies).

    With ``session_expiry_s``, its session outlives a disconnect (a broker restart included):
    it reconnects by itself and the broker delivers what it queued for it meanwhile.
    """

    def __init__(self, mqtt_url: str, client_id: str, *, session_expiry_s: int = 0) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        endpoint = MqttEndpoint(mqtt_url)
        if endpoint.username:
            self._client.username_pw_set(endpoint.username, endpoint.password)
        self._client.reconnect_delay_set(1, 2)
        self._client.connect(
            endpoint.host,
            endpoint.port,
            # Mosquitto 2.0.11 does not save over a restart a session begun with clean start,
            # whatever its expiry; a persistent listener has a client id of its own instead.
            clean_start=session_expiry_s == 0,
            properties=connect_properties(SessionExpiryInterval=session_expiry_s),
        )
        self._client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK from the broker"

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe([("carewatch/devices/+/events", 1), ("carewatch/devices/+/status", 1)])

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        assert not any(code.is_failure for code in reason_codes)
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # Retained copies are from earlier tests' (or runs') devices, delivered on subscribing.
        if message.topic.startswith(PREFIX) and not message.retain:
            with self._lock:
                self.messages.append(message)


@pytest.fixture
def listener(gateway_url: str, publisher_url: str, test_token: str) -> Iterator[Listener]:
    """A subscriber to every device topic, and the simulated devices' retained statuses cleared."""
    listening = Listener(gateway_url, f"listener-{test_token}")
    yield listening
    listening.close()
    # The simulated devices' ids do not carry the test's token; leave no retained status behind.
    publish_all(
        publisher_url,
        [(f"carewatch/devices/{d.id}/status", b"") for d in fleet_for(100).devices],
        retain=True,
    )


def simulate(settings: Settings, publisher_url: str, *args: str) -> subprocess.Popen[str]:
    """``carewatch simulate`` with ``settings``, connecting as the simulator."""
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "simulate", *args],
        env={**settings_env(settings), "CAREWATCH_MQTT_URL": publisher_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(process: subprocess.Popen[str], timeout_s: float = 30.0) -> tuple[int, int]:
    """Waits for a clean exit; (messages sent, acknowledged) from its last line."""
    sent, acknowledged, _ = finished_with_log(process, timeout_s)
    return sent, acknowledged


def finished_with_log(
    process: subprocess.Popen[str], timeout_s: float = 30.0
) -> tuple[int, int, str]:
    """Waits for a clean exit; (messages sent, acknowledged, its log on stderr)."""
    out, err = process.communicate(timeout=timeout_s)
    assert process.returncode == 0, f"exit {process.returncode}\n{out}\n{err}"
    match = DONE_RE.search(out)
    assert match, out
    return int(match.group(1)), int(match.group(2)), err


def test_simulated_fleet_publishes_valid_traffic(
    publisher_url: str, make_settings: MakeSettings, listener: Listener
) -> None:
    """20 devices at 600x for 3 s: births, heartbeats, events, all acknowledged and valid."""
    settings = make_settings("postgresql://unused")
    process = simulate(
        settings, publisher_url, "--devices", "20", "--speed", "600", "--duration", "3"
    )
    sent, acknowledged = finished(process)
    assert sent == acknowledged
    # 30 simulated minutes: 20 births, cameras' heartbeats every minute, locks' every 5 min.
    assert 150 < sent < 500
    wait_until(lambda: listener.count() >= sent, timeout_s=10)

    fleet = fleet_for(20)
    registry = {d.id: DeviceRef(d.id, d.kind, True) for d in fleet.devices}
    statuses = {m.topic for m in listener.messages if m.topic.endswith("/status")}
    assert statuses >= {f"carewatch/devices/{d}/status" for d in registry}
    for message in listener.messages:
        result = parse(message.topic, bytes(message.payload), fleet.now, registry)
        assert isinstance(result, (Event, StatusReport)), (message.topic, message.payload, result)


def test_sigterm_stops_the_simulator_cleanly(
    publisher_url: str, make_settings: MakeSettings, listener: Listener
) -> None:
    """Without --duration it runs until SIGTERM, then waits for its PUBACKs and exits 0."""
    settings = make_settings("postgresql://unused")
    process = simulate(settings, publisher_url, "--devices", "10", "--speed", "120")
    wait_until(lambda: listener.count() >= 10, timeout_s=15)  # the births have arrived
    process.send_signal(signal.SIGTERM)
    sent, acknowledged = finished(process, timeout_s=20)
    assert sent == acknowledged >= 10
    wait_until(lambda: listener.count() >= sent, timeout_s=10)


def test_register_adds_the_fleet_to_the_demo_organisation(
    publisher_url: str, settings: Settings, listener: Listener, test_token: str
) -> None:
    """--register puts every simulated device in the site, under the demo organisation, once."""
    site = f"site-{test_token}"
    args = ("--devices", "12", "--duration", "0.5", "--site", site, "--register")
    first = simulate(settings, publisher_url, *args)
    finished(first)
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT d.id, d.kind, d.label, s.org_id FROM devices d JOIN sites s"
            " ON s.id = d.site_id WHERE d.site_id = %s ORDER BY d.id",
            (site,),
        ).fetchall()
    assert rows == sorted((d.id, d.kind, d.label, "demo") for d in fleet_for(12).devices)
    again = simulate(settings, publisher_url, *args)
    out, err = again.communicate(timeout=30)
    assert "registered 0 new device(s)" in out, err


def test_the_gateway_stores_the_simulated_traffic_once(
    publisher_url: str, settings: Settings, listener: Listener, tmp_path: Path, test_token: str
) -> None:
    """Every simulated event is stored exactly once (resends included), none dead-lettered.

    The gateway is already running when the simulator registers its devices, so it meets
    them first in a message (and looks them up then), not in its registry refresh.
    """
    with GatewayProcess(settings, tmp_path / "gateway.log"):
        args = ("--devices", "12", "--speed", "900", "--duration", "3", "--register")
        finished(simulate(settings, publisher_url, *args, "--site", f"site-{test_token}"))
        unique_events = {
            (m.topic, orjson.loads(m.payload)["id"])
            for m in listener.messages
            if m.topic.endswith("/events")
        }
        assert len(unique_events) > 50

        def stored() -> int:
            with psycopg.connect(settings.database_url) as conn:
                row = conn.execute("SELECT count(*) FROM events").fetchone()
            return int(row[0]) if row else 0

        wait_until(lambda: stored() == len(unique_events), timeout_s=15)
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)


def test_the_live_simulator_carries_on_from_the_backfill(
    publisher_url: str, settings: Settings, listener: Listener, tmp_path: Path, test_token: str
) -> None:
    """After a backfill the live fleet starts each battery where the backfill left it (within a
    point for a cell) and runs the firmware stored, so the gateway counts no battery replaced
    at the start; it reads the residences' plans (its cameras check when planned)."""
    site = f"site-{test_token}"
    until = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    code = cli.main(["simulate", "--database-url", settings.database_url, "--backfill", "2d",
                     "--devices", "20", "--site", site, "--until", until.isoformat()])  # fmt: skip
    assert code == 0
    with psycopg.connect(settings.database_url) as conn:
        stored = {
            device_id: (kind, battery, firmware)
            for device_id, kind, battery, firmware in conn.execute(
                "SELECT id, kind, battery, firmware FROM devices WHERE site_id = %s", (site,)
            )
        }
    with GatewayProcess(settings, tmp_path / "gateway.log"):
        # 70 simulated minutes: every device beats at least once (alarm buttons hourly).
        args = ("--devices", "20", "--speed", "600", "--duration", "7", "--register")
        process = simulate(settings, publisher_url, *args, "--site", site)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert "carrying on from 20 stored device(s), 5 residence(s) with a supervision plan" in out
        beats = sorted(
            (envelope["ts"], m.topic.split("/")[2], envelope["data"])
            for m in listener.messages
            if m.topic.endswith("/events")
            and (envelope := orjson.loads(m.payload))["type"] == "heartbeat"
        )
        sent = {(m.topic, orjson.loads(m.payload)["id"]) for m in listener.messages
                if m.topic.endswith("/events")}  # fmt: skip

        def stored_live() -> int:
            with psycopg.connect(settings.database_url) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM events WHERE time >= %s", (until,)
                ).fetchone()
            return int(row[0]) if row else 0

        wait_until(lambda: stored_live() >= len(sent), timeout_s=20)
    first: dict[str, dict[str, Any]] = {}
    for _, device_id, data in beats:
        first.setdefault(device_id, data)
    assert set(first) == set(stored)
    for device_id, (kind, battery, firmware) in stored.items():
        assert first[device_id]["fw"] == firmware
        if kind in ("door_lock", "alarm_button"):
            assert abs(first[device_id]["battery"] - battery) <= 1, device_id
    with psycopg.connect(settings.database_url) as conn:
        replaced = conn.execute(
            "SELECT coalesce(sum(events), 0) FROM usage_device_hourly"
            " WHERE type = 'battery.replaced' AND bucket >= %s",
            (until,),
        ).fetchone()
    assert replaced == (0,)


def event_counters(messages: list[mqtt.MQTTMessage]) -> dict[str, set[int]]:
    """Per device, the counters of the event ids received ({boot}-{counter}, from 1 on)."""
    counters: dict[str, set[int]] = defaultdict(set)
    for message in messages:
        if message.topic.endswith("/events"):
            event_id: str = orjson.loads(message.payload)["id"]
            counters[message.topic.split("/")[2]].add(int(event_id.rsplit("-", 1)[1]))
    return counters


def test_the_simulator_reconnects_after_a_broker_restart_and_loses_nothing(
    broker_identities: LocalIdentities,
    make_settings: MakeSettings,
    tmp_path: Path,
    test_token: str,
) -> None:
    """The broker restarts mid-run: the simulator reconnects and publishes again what it had
    not got acknowledged, so every device's events arrive without a gap; SIGTERM still stops it
    cleanly."""
    settings = make_settings("postgresql://unused")
    with MosquittoInstance(tmp_path / "broker", auth=broker_identities.auth()) as broker:
        # A persistent session: the broker keeps what arrives while the listener reconnects.
        listening = Listener(
            broker_identities.gateway_url(broker), f"listener-{test_token}", session_expiry_s=600
        )
        args = ("--devices", "10", "--speed", "600")
        process = simulate(settings, broker_identities.simulator_url(broker), *args)
        try:
            wait_until(lambda: listening.count() >= 10, timeout_s=15)  # the births have arrived
            broker.stop()
            time.sleep(1.0)  # the simulator goes on producing while the broker is away
            broker.start()
            after_restart = listening.count()
            wait_until(lambda: listening.count() >= after_restart + 20, timeout_s=30)
            process.send_signal(signal.SIGTERM)
            sent, acknowledged, log = finished_with_log(process, timeout_s=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        try:
            assert re.search(r"reconnected to .*; publishing [1-9]\d* unacknowledged", log), log
            assert sent >= acknowledged  # resends count as sent, a message is acknowledged once
            wait_until(lambda: listening.count() >= acknowledged, timeout_s=15)
            counters = event_counters(listening.messages)
            assert len(counters) == 10
            gaps = {
                device: sorted(set(range(1, max(seen) + 1)) - seen)
                for device, seen in counters.items()
                if seen != set(range(1, max(seen) + 1))
            }
            assert gaps == {}
        finally:
            listening.close()


def gaps_in(messages: list[mqtt.MQTTMessage]) -> dict[str, list[int]]:
    """Per device, the event counters missing below its highest one received."""
    return {
        device: sorted(set(range(1, max(seen) + 1)) - seen)
        for device, seen in event_counters(messages).items()
        if seen != set(range(1, max(seen) + 1))
    }


def test_events_refused_for_lack_of_a_subscriber_are_published_again(
    broker_identities: LocalIdentities,
    make_settings: MakeSettings,
    tmp_path: Path,
    test_token: str,
) -> None:
    """With nobody subscribed the broker answers PUBACK 16 and drops the events; the simulator
    keeps them and publishes them again, so once a subscriber is there every event arrives."""
    settings = make_settings("postgresql://unused")
    with MosquittoInstance(tmp_path / "broker", auth=broker_identities.auth()) as broker:
        args = ("--devices", "6", "--speed", "600")
        process = simulate(settings, broker_identities.simulator_url(broker), *args)
        listeners: list[Listener] = []
        try:
            time.sleep(2.0)  # births and 20 simulated minutes of events, refused with 16
            assert process.poll() is None, process.communicate()
            late = Listener(broker_identities.gateway_url(broker), f"late-{test_token}")
            listeners.append(late)
            wait_until(lambda: late.count() >= 30, timeout_s=30)
            process.send_signal(signal.SIGTERM)
            out, log = process.communicate(timeout=30)
            assert process.returncode == 0, f"{out}\n{log}"
            match = DONE_RE.search(out)
            assert match, out
            assert int(match.group(3)) > 0, out  # refused with 16
            assert "no subscriber for the devices' messages (PUBACK 16)" in log, log
            # Each device's events from its first on: those published before the subscriber
            # came were refused, and arrived because they were published again.
            wait_until(lambda: gaps_in(late.messages) == {}, timeout_s=15)
            assert len(event_counters(late.messages)) == 6
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
            for listener in listeners:
                listener.close()
