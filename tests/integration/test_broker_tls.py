"""MQTT over TLS (issue 10): ``carewatch broker run`` with a TLS listener, a private CA.

Devices and the gateway log in with passwords, so the broker's TLS listener is what keeps them
off the wire: a client that trusts the CA connects and verifies the broker (host name
included); one that does not is refused by its own TLS stack; plaintext on the TLS port gets
no CONNACK; TLS below 1.2 is refused. A renewed certificate is served after a SIGHUP to
``broker run`` without a restart (Mosquitto 2.0.11 re-reads certfile and keyfile on SIGHUP),
and the clients connected before stay connected.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mqtt5
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from broker.accounts import set_account
from broker.auth_files import Role
from broker.mosquitto import MosquittoInstance, TlsListener, shipped_config
from carewatch.broker_passwords import hash_password, new_password
from carewatch.processes import LOOPBACK, free_port
from gateway.transport import client_ssl_context
from tests.fixtures.broker import BrokerRun, Probe
from tests.fixtures.gateway_process import GatewayProcess, wait_until
from tests.fixtures.mqtt import envelope, events_topic, publish_all
from tests.fixtures.services import MakeSettings, SeededRegistry
from tools.bench.endpoints import CA_FILE_VARIABLE, mosquitto_client_env
from tools.bench.limits import mosquitto_sub_argv
from tools.bench.publishers import Qos1Connection
from tools.local.certificates import TlsFiles, issue_server_certificate, local_tls
from tools.local.identities import GATEWAY_USERNAME, SIMULATOR_USERNAME, LocalIdentities

_HANDSHAKE_TIMEOUT_S = 5.0


@dataclass
class TlsWorld:
    broker: BrokerRun
    tls: TlsFiles
    database_url: str
    gateway_password: str
    lock: str
    lock_password: str

    def probe(self, username: str, password: str) -> Probe:
        """A client connected over TLS to the broker, verifying it against the private CA."""
        assert self.broker.tls_port is not None
        probe = Probe(self.broker.tls_port, username, password, ca_file=self.tls.ca_file)
        code = probe.connect()
        assert not code.is_failure, f"{username} refused: {code}"
        return probe


@pytest.fixture
def tls_world(database_url: str, seeded: SeededRegistry, tmp_path: Path) -> Iterator[TlsWorld]:
    tls = local_tls(tmp_path / "tls")
    gateway_password, lock_password = new_password(), new_password()
    lock = seeded.device("door_lock", 0)
    with psycopg.connect(database_url, autocommit=True) as conn:
        set_account(conn, GATEWAY_USERNAME, Role.GATEWAY, gateway_password)
        conn.execute(
            "UPDATE devices SET mqtt_password_hash = %s, credentials_issued_at = now()"
            " WHERE id = %s",
            (hash_password(lock_password), lock),
        )
    with BrokerRun(database_url, tmp_path / "broker", tls=tls) as broker:
        yield TlsWorld(broker, tls, database_url, gateway_password, lock, lock_password)


def served_certificate(port: int, context: ssl.SSLContext, hostname: str = LOOPBACK) -> bytes:
    """The DER certificate the broker presents to a new TLS connection that ``context``
    verifies (raises ssl.SSLError if it does not)."""
    with (
        socket.create_connection((LOOPBACK, port), timeout=_HANDSHAKE_TIMEOUT_S) as raw,
        context.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def pem_fingerprint(pem: bytes) -> str:
    return fingerprint(x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER))


def stored_event_ids(database_url: str, device_id: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT event_id FROM events WHERE device_id = %s ORDER BY time", (device_id,)
        ).fetchall()
    return [row[0] for row in rows]


def test_a_device_publishes_over_verified_tls_with_its_own_credentials(
    tls_world: TlsWorld,
) -> None:
    """Both ends verify the broker against the private CA; the message reaches the gateway."""
    gateway = tls_world.probe(GATEWAY_USERNAME, tls_world.gateway_password)
    device = tls_world.probe(tls_world.lock, tls_world.lock_password)
    try:
        assert not gateway.subscribe(events_topic(tls_world.lock)).is_failure
        assert not device.publish(events_topic(tls_world.lock), envelope("tls-1")).is_failure
        wait_until(lambda: gateway.received, 10)
        assert gateway.received[0][0] == events_topic(tls_world.lock)
    finally:
        device.close()
        gateway.close()
    assert tls_world.broker.tls_port is not None
    context = client_ssl_context(str(tls_world.tls.ca_file))
    with (
        socket.create_connection((LOOPBACK, tls_world.broker.tls_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=LOOPBACK) as tls,
    ):
        assert tls.version() in {"TLSv1.2", "TLSv1.3"}


def test_a_client_that_does_not_trust_the_ca_is_refused(
    tls_world: TlsWorld, tmp_path: Path
) -> None:
    """Another CA, the system's CAs, or a name the certificate does not hold: no connection."""
    port = tls_world.broker.tls_port
    assert port is not None
    # (With raw sockets: paho leaks the socket of a failed handshake, a ResourceWarning.)
    stranger = local_tls(tmp_path / "another-ca")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        served_certificate(port, client_ssl_context(str(stranger.ca_file)))
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        served_certificate(port, client_ssl_context(None))
    trusting = client_ssl_context(str(tls_world.tls.ca_file))
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        served_certificate(port, trusting, hostname="mqtt.example.org")
    # The same context with the name the certificate holds is accepted: the refusals above
    # are the CA and the name, not something else.
    assert served_certificate(port, trusting)


def test_plaintext_on_the_tls_port_gets_no_connack(tls_world: TlsWorld) -> None:
    """A CONNECT in clear (with a valid password) is not MQTT to the TLS listener: it closes."""
    assert tls_world.broker.tls_port is not None
    connect = mqtt5.ConnectPacket(
        "plaintext-probe",
        username=tls_world.lock,
        password=tls_world.lock_password.encode(),
        clean_start=True,
    ).write()
    received = b""
    with socket.create_connection((LOOPBACK, tls_world.broker.tls_port), timeout=5) as sock:
        sock.sendall(connect)
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass  # as good as a close
    # Whatever came back (nothing, or a TLS alert record, 0x15) is not a CONNACK (0x20).
    assert not received.startswith(b"\x20"), received
    # The plaintext listener on loopback still answers the same CONNECT: the refusal above is
    # the TLS port's, not the credentials'.
    with socket.create_connection((LOOPBACK, tls_world.broker.port), timeout=5) as sock:
        sock.sendall(connect)
        assert sock.recv(4096).startswith(b"\x20")


def test_tls_below_1_2_is_refused(tls_world: TlsWorld) -> None:
    """The listener's minimum is TLS 1.2: a client that offers at most 1.1 gets no session."""
    assert tls_world.broker.tls_port is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(tls_world.tls.ca_file)
    with warnings.catch_warnings():  # Python deprecates naming TLS 1.1; we mean to offer it
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    # OpenSSL 3 allows TLS 1.1 only at security level 0, on the client side too; lowering it
    # here makes the client offer 1.1, so that the refusal comes from the broker.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|protocol version"):
        served_certificate(tls_world.broker.tls_port, context)


def test_a_renewed_certificate_is_served_after_sighup_without_a_restart(
    tls_world: TlsWorld,
) -> None:
    """New files in the same paths, SIGHUP to ``broker run``: new connections get the new
    certificate, the broker's pids stay, and the clients connected before stay connected."""
    port = tls_world.broker.tls_port
    assert port is not None
    context = client_ssl_context(str(tls_world.tls.ca_file))
    gateway = tls_world.probe(GATEWAY_USERNAME, tls_world.gateway_password)
    device = tls_world.probe(tls_world.lock, tls_world.lock_password)
    try:
        assert not gateway.subscribe(events_topic(tls_world.lock)).is_failure
        before = fingerprint(served_certificate(port, context))
        pids = (tls_world.broker.pid, tls_world.broker.mosquitto_pid())

        renewed = pem_fingerprint(issue_server_certificate(tls_world.tls))
        assert renewed != before
        # Mosquitto holds the certificate in memory: new files alone change nothing.
        assert fingerprint(served_certificate(port, context)) == before

        tls_world.broker.send_signal(signal.SIGHUP)
        wait_until(lambda: fingerprint(served_certificate(port, context)) == renewed, 10,
                   context=tls_world.broker.log)  # fmt: skip

        assert (tls_world.broker.pid, tls_world.broker.mosquitto_pid()) == pids
        assert not device.disconnected.is_set()
        assert not gateway.disconnected.is_set()
        assert not device.publish(events_topic(tls_world.lock), envelope("after-1")).is_failure
        wait_until(lambda: gateway.received, 10)
        # And a client connecting now verifies the new certificate against the same CA.
        late = tls_world.probe(tls_world.lock, tls_world.lock_password)
        late.close()
    finally:
        device.close()
        gateway.close()


def test_the_gateway_ingests_over_mqtts_verifying_the_broker(
    tls_world: TlsWorld, make_settings: MakeSettings, tmp_path: Path
) -> None:
    """The gateway process with an mqtts:// URL and the CA file; a device publishes over TLS
    with its own credentials; the event is stored."""
    settings = make_settings(
        tls_world.database_url,
        mqtt_url=tls_world.broker.tls_url(GATEWAY_USERNAME, tls_world.gateway_password),
        mqtt_ca_file=str(tls_world.tls.ca_file),
    )
    device_url = tls_world.broker.tls_url(tls_world.lock, tls_world.lock_password)
    with GatewayProcess(settings, tmp_path / "gateway.log") as gateway:
        locked = envelope("tls-own-1", "lock.locked", {"by": "staff-1", "method": "app"})
        publish_all(
            device_url, [(events_topic(tls_world.lock), locked)], ca_file=str(tls_world.tls.ca_file)
        )
        wait_until(lambda: stored_event_ids(tls_world.database_url, tls_world.lock)
                   == ["tls-own-1"], 20, context=gateway.log_tail)  # fmt: skip


def test_a_gateway_that_does_not_trust_the_broker_does_not_connect(
    tls_world: TlsWorld, make_settings: MakeSettings, tmp_path: Path
) -> None:
    """With the system's CAs instead of the private one, the gateway refuses the broker (and
    keeps retrying) rather than sending its password to it."""
    settings = make_settings(
        tls_world.database_url,
        mqtt_url=tls_world.broker.tls_url(GATEWAY_USERNAME, tls_world.gateway_password),
    )
    gateway = GatewayProcess(settings, tmp_path / "gateway.log")
    gateway.start(wait=False)
    try:
        wait_until(lambda: "certificate verify failed" in gateway.log(), 20,
                   context=gateway.log_tail)  # fmt: skip
        assert gateway.metric("carewatch_broker_connected") != 1.0
    finally:
        gateway.stop()


def test_the_shipped_config_listens_with_tls_and_keeps_plaintext_on_loopback() -> None:
    """Production: TLS on 8883 with the certificate paths, TLS 1.2 at least; 1883 on loopback."""
    active = [
        line.split()
        for line in shipped_config().read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    listeners = [words[1:] for words in active if words[0] == "listener"]
    assert listeners == [["1883", "127.0.0.1"], ["8883"]]
    options = {words[0]: words[1:] for words in active}
    for option in ("certfile", "keyfile", "cafile"):
        assert options[option][0].startswith("/etc/carewatch/tls/"), option
    assert options["tls_version"] == ["tlsv1.2"]


def test_a_private_broker_config_has_its_own_tls_listener_or_none(tmp_path: Path) -> None:
    """The shipped TLS paths never leak into a private instance; its own listener follows."""
    tls = TlsListener(
        port=free_port(),
        certfile=tmp_path / "server.pem",
        keyfile=tmp_path / "server.key",
        cafile=tmp_path / "ca.pem",
    )
    with_tls = MosquittoInstance(tmp_path / "a", tls=tls).render_config()
    without = MosquittoInstance(tmp_path / "b").render_config()
    for config in (with_tls, without):
        assert "/etc/carewatch/tls" not in "\n".join(
            line for line in config.splitlines() if not line.startswith("#")
        )
    tail = with_tls.splitlines()[-5:]
    assert tail == [
        f"listener {tls.port} 127.0.0.1",
        f"certfile {tmp_path / 'server.pem'}",
        f"keyfile {tmp_path / 'server.key'}",
        f"cafile {tmp_path / 'ca.pem'}",
        "tls_version tlsv1.2",
    ]
    assert "certfile" not in "\n".join(
        line for line in without.splitlines() if not line.startswith("#")
    )


def test_the_simulator_publishes_over_mqtts_verifying_the_broker(
    tls_world: TlsWorld, tmp_path: Path
) -> None:
    """``carewatch simulate`` with an mqtts:// URL and the CA: every message acknowledged and
    delivered; with another CA it refuses the broker and exits with an error."""
    password = new_password()
    with psycopg.connect(tls_world.database_url, autocommit=True) as conn:
        set_account(conn, SIMULATOR_USERNAME, Role.SIMULATOR, password)
    listener = tls_world.probe(GATEWAY_USERNAME, tls_world.gateway_password)
    url = tls_world.broker.tls_url(SIMULATOR_USERNAME, password)

    def simulate(ca_file: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "simulate", "--devices", "5", "--speed", "600",
             "--duration", "1", "--id-prefix", "tls"],
            env={**os.environ, "CAREWATCH_MQTT_URL": url, "CAREWATCH_MQTT_CA_FILE": str(ca_file)},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    try:
        # The identity reaches the broker through the sync; until then the simulator is refused.
        wait_until(lambda: simulate(tls_world.tls.ca_file).returncode == 0, 20)
        assert not listener.subscribe("carewatch/devices/+/events").is_failure
        done = simulate(tls_world.tls.ca_file)
        assert done.returncode == 0, done.stderr
        sent, acknowledged = map(int, re.findall(r"(\d+) messages sent, (\d+) acknowledged",
                                                 done.stdout)[-1])  # fmt: skip
        assert sent == acknowledged > 0
        wait_until(lambda: listener.received, 10)
    finally:
        listener.close()
    refused = simulate(local_tls(tmp_path / "another-ca").ca_file)
    assert refused.returncode != 0
    assert "certificate verify failed" in refused.stdout + refused.stderr


def test_the_benchmark_clients_connect_over_verified_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A benchmark's broker with a TLS listener: its QoS 1 publisher (raw socket) reaches
    ``mosquitto_sub`` with ``--cafile``; mosquitto_sub with another CA cannot connect."""
    tls = local_tls(tmp_path / "tls")
    identities = LocalIdentities()
    listener = TlsListener(free_port(), tls.certfile, tls.keyfile, tls.ca_file)
    monkeypatch.setenv(CA_FILE_VARIABLE, str(tls.ca_file))
    with MosquittoInstance(tmp_path / "mq", auth=identities.auth(), tls=listener) as broker:
        gateway_url = broker.tls_url(GATEWAY_USERNAME, identities.gateway_password)
        env = mosquitto_client_env(gateway_url, tmp_path / "options")
        stranger = local_tls(tmp_path / "another-ca")
        refused = subprocess.run(
            mosquitto_sub_argv(gateway_url, "bench-tls-x", count=1, ca_file=str(stranger.ca_file)),
            env=env, capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        assert refused.returncode != 0
        assert "TLS" in refused.stderr
        subscriber = subprocess.Popen(
            mosquitto_sub_argv(gateway_url, "bench-tls-sub", count=1),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            topic = "carewatch/devices/bench-tls-1/events"

            def subscriber_alive() -> None:
                assert subscriber.poll() is None, subscriber.communicate()

            with Qos1Connection(
                broker.tls_url(SIMULATOR_USERNAME, identities.simulator_password),
                client_id="bench-tls-pub",
            ) as publisher:
                routed = publisher.publish_until_routed(
                    topic,
                    lambda n: f"probe {n}".encode(),
                    deadline=time.monotonic() + 15,
                    check=subscriber_alive,
                )
            assert routed
            out, err = subscriber.communicate(timeout=10)
            assert subscriber.returncode == 0, err
            assert out.startswith("probe "), out
        finally:
            if subscriber.poll() is None:
                subscriber.kill()
                subscriber.communicate()
