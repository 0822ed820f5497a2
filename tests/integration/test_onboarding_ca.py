"""Onboarding with a broker behind a private CA: every credentials answer names the mqtts://
address and the CA certificate's fingerprint, and the API serves that certificate to anyone.

The world is built once for the module: organisation kommun (site-a), a technician and a
caregiver, a CA made with trustme whose certificate is CAREWATCH_DEVICE_MQTT_CA_FILE, and the
API serving them. Tests that replace the CA file put the original back.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psycopg
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from app.cli import main
from carewatch.settings import Settings
from tests.fixtures.api_client import (
    ApiResponse,
    add_org_with_sites,
    add_user,
    call,
    login,
    module_database,
)
from tests.fixtures.api_server import running_api
from tools.local.postgres import PostgresInstance

DEVICE_URL: Final = "mqtts://mqtt.kommun.example:8883"
CA_PATH: Final = "/api/v1/broker/ca.pem"


@dataclass(frozen=True)
class World:
    base: str
    database_url: str
    ca_file: Path
    ca_pem: bytes
    technician: str
    caregiver: str


def fingerprint(pem: bytes) -> str:
    """The certificate's SHA-256 fingerprint as ``openssl x509 -fingerprint -sha256`` shows it,
    computed by cryptography (not by the code under test)."""
    digest = x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256())
    return ":".join(f"{byte:02X}" for byte in digest)


@pytest.fixture(scope="module")
def world(
    pg: PostgresInstance, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """kommun with a technician and a caregiver; the API told about a private CA."""
    ca_pem = trustme.CA().cert_pem.bytes()
    ca_file = tmp_path_factory.mktemp("device-ca") / "ca.pem"
    ca_file.write_bytes(ca_pem)
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a")
            add_user(conn, "technician", "kommun", "technician")
            add_user(conn, "caregiver", "kommun", "caregiver")
        settings = Settings(
            database_url=database_url,
            device_mqtt_url=DEVICE_URL,
            device_mqtt_ca_file=str(ca_file),
        )
        with running_api(settings) as base:
            yield World(
                base,
                database_url,
                ca_file,
                ca_pem,
                login(base, "technician"),
                login(base, "caregiver"),
            )


@contextlib.contextmanager
def ca_file_holding(world: World, content: bytes) -> Iterator[None]:
    """The CA file replaced (atomically, as an operator's deploy would) for the block."""

    def write(data: bytes) -> None:
        staged = world.ca_file.with_suffix(".new")
        staged.write_bytes(data)
        os.replace(staged, world.ca_file)

    write(content)
    try:
        yield
    finally:
        write(world.ca_pem)


def new_id(prefix: str = "dev") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def post_device(world: World, **body: Any) -> ApiResponse:
    return call("POST", f"{world.base}/api/v1/devices", token=world.technician, json_body=body)


def device_exists(world: World, device_id: str) -> bool:
    with psycopg.connect(world.database_url) as conn:
        found = conn.execute("SELECT 1 FROM devices WHERE id = %s", (device_id,)).fetchone()
    return found is not None


def assert_carries_the_ca(world: World, credentials: dict[str, Any], pem: bytes) -> None:
    assert credentials["url"] == DEVICE_URL
    assert credentials["tls"] is True
    assert credentials["ca_sha256"] == fingerprint(pem)
    assert credentials["ca_url"] == world.base + CA_PATH


def test_onboarding_answers_the_mqtts_url_and_the_ca_fingerprint(world: World) -> None:
    """POST /devices: the credentials name the mqtts:// broker, the CA's fingerprint and URL."""
    response = post_device(world, id=new_id("lock"), kind="door_lock", site="site-a")
    assert response.status == 201, response.body
    assert_carries_the_ca(world, response.json()["credentials"], world.ca_pem)


def test_the_ca_certificate_is_served_to_anyone_exactly_as_configured(world: World) -> None:
    """GET ca.pem without a login: the file's bytes, as PEM; its fingerprint is the one the
    credentials carry, so a device can check what it downloaded."""
    credentials = post_device(world, id=new_id("lock"), kind="door_lock", site="site-a").json()[
        "credentials"
    ]
    response = call("GET", credentials["ca_url"])
    assert response.status == 200, response.body
    assert response.headers["content-type"] == "application/x-pem-file"
    assert response.body == world.ca_pem
    assert fingerprint(response.body) == credentials["ca_sha256"]
    assert "carewatch-broker-ca.pem" in response.headers["content-disposition"]
    assert response.headers["x-content-type-options"] == "nosniff"
    # The published schema says what it is (the fuzzer checks answers against it).
    spec = call("GET", f"{world.base}/openapi.json").json()
    ca = spec["paths"][CA_PATH]["get"]
    assert "security" not in ca
    assert "application/x-pem-file" in ca["responses"]["200"]["content"]
    assert set(ca["responses"]) >= {"200", "404"}


def test_every_credentials_answer_carries_the_ca(world: World) -> None:
    """Rotation, bridges (created and rotated) and CSV import (JSON and its CSV) alike."""
    device_id = new_id("lock")
    assert post_device(world, id=device_id, kind="door_lock", site="site-a").status == 201
    rotated = call(
        "POST", f"{world.base}/api/v1/devices/{device_id}/credentials", token=world.technician
    )
    assert rotated.status == 200, rotated.body
    assert_carries_the_ca(world, rotated.json()["credentials"], world.ca_pem)

    bridge_id = uuid.uuid4().hex[:10]
    bridge = call(
        "POST", f"{world.base}/api/v1/bridges", token=world.technician, json_body={"id": bridge_id}
    )
    assert bridge.status == 201, bridge.body
    assert_carries_the_ca(world, bridge.json()["credentials"], world.ca_pem)
    again = call(
        "POST", f"{world.base}/api/v1/bridges/{bridge_id}/credentials", token=world.technician
    )
    assert again.status == 200, again.body
    assert_carries_the_ca(world, again.json()["credentials"], world.ca_pem)

    imported = [new_id("imp"), new_id("imp")]
    text = "id,kind,site,label\n" + "".join(f"{i},door_lock,site-a,\n" for i in imported)
    report = call(
        "POST",
        f"{world.base}/api/v1/devices/import",
        token=world.technician,
        content=text.encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert report.status == 200, report.body
    body = report.json()
    for created in body["created"]:
        assert_carries_the_ca(world, created["credentials"], world.ca_pem)
    rows = list(csv.DictReader(io.StringIO(body["credentials_csv"])))
    assert [row["id"] for row in rows] == imported
    for row in rows:
        assert row["url"] == DEVICE_URL
        assert row["ca_sha256"] == fingerprint(world.ca_pem)
        assert row["ca_url"] == world.base + CA_PATH


def test_the_broker_description_is_for_technicians(world: World) -> None:
    """GET /broker: the address and CA for technicians; 403 for a caregiver, 401 signed out."""
    response = call("GET", f"{world.base}/api/v1/broker", token=world.technician)
    assert response.status == 200, response.body
    assert response.json() == {
        "url": DEVICE_URL,
        "host": "mqtt.kommun.example",
        "port": 8883,
        "tls": True,
        "ca_sha256": fingerprint(world.ca_pem),
        "ca_url": world.base + CA_PATH,
    }
    assert call("GET", f"{world.base}/api/v1/broker", token=world.caregiver).status == 403
    assert call("GET", f"{world.base}/api/v1/broker").status == 401


def test_a_replaced_ca_is_given_out_without_a_restart(world: World) -> None:
    """The file is read when needed: the next download and credentials carry the new CA."""
    renewed = trustme.CA().cert_pem.bytes()
    with ca_file_holding(world, renewed):
        assert call("GET", world.base + CA_PATH).body == renewed
        response = post_device(world, id=new_id("lock"), kind="door_lock", site="site-a")
        assert response.status == 201, response.body
        assert_carries_the_ca(world, response.json()["credentials"], renewed)
    assert call("GET", world.base + CA_PATH).body == world.ca_pem


def test_an_unusable_ca_file_refuses_onboarding_before_anything_is_written(
    world: World,
) -> None:
    """The broker's own certificate in place of the CA: 503 with a reason that does not show
    the server's paths, and no device (whose password nobody could use) is created."""
    leaf = trustme.CA().issue_cert("mqtt.kommun.example").cert_chain_pems[0].bytes()
    device_id = new_id("lock")
    with ca_file_holding(world, leaf):
        refused = post_device(world, id=device_id, kind="door_lock", site="site-a")
        assert refused.status == 503
        detail = refused.json()["detail"]
        assert "CAREWATCH_DEVICE_MQTT_CA_FILE" in detail
        assert str(world.ca_file.parent) not in detail
        assert not device_exists(world, device_id)
        assert call("GET", world.base + CA_PATH).status == 503
    assert post_device(world, id=device_id, kind="door_lock", site="site-a").status == 201


@pytest.mark.parametrize(
    ("device_url", "tls", "reason"),
    [
        pytest.param("mqtts://mqtt.kommun.example:8883", True, "publicly trusted", id="public"),
        pytest.param("mqtt://127.0.0.1:1883", False, "without TLS", id="plain"),
    ],
)
def test_without_a_private_ca_there_is_nothing_to_download(
    world: World, device_url: str, tls: bool, reason: str
) -> None:
    """404 saying why (a public certificate, or no TLS); credentials carry no CA fields."""
    settings = Settings(database_url=world.database_url, device_mqtt_url=device_url)
    with running_api(settings) as base:
        missing = call("GET", base + CA_PATH)
        assert missing.status == 404
        assert reason in missing.json()["detail"]
        token = login(base, "technician")
        response = call(
            "POST",
            f"{base}/api/v1/devices",
            token=token,
            json_body={"id": new_id("lock"), "kind": "door_lock", "site": "site-a"},
        )
        assert response.status == 201, response.body
        credentials = response.json()["credentials"]
        assert (credentials["url"], credentials["tls"]) == (device_url, tls)
        assert (credentials["ca_sha256"], credentials["ca_url"]) == (None, None)


def test_the_shell_prints_the_ca_fingerprint_and_refuses_an_unusable_ca_file(
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """``carewatch device add`` names the CA to trust; with the broker's own certificate as
    the CA file it exits 2 with the reason, before creating anything."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    monkeypatch.setenv("CAREWATCH_DEVICE_MQTT_URL", DEVICE_URL)
    monkeypatch.setenv("CAREWATCH_DEVICE_MQTT_CA_FILE", str(ca_file))

    def cli(*argv: str) -> int:
        return main([*argv[:2], "--database-url", database_url, *argv[2:]])

    assert cli("org", "add", "kommun", "--name", "Kommun") == 0
    assert cli("site", "add", "site-a", "--org", "kommun", "--name", "A") == 0
    capsys.readouterr()
    assert cli("device", "add", "lock-1", "--kind", "door_lock", "--site", "site-a") == 0
    out = capsys.readouterr().out
    assert f"broker:     {DEVICE_URL}" in out
    assert fingerprint(ca.cert_pem.bytes()) in out

    ca_file.write_bytes(ca.issue_cert("mqtt.kommun.example").cert_chain_pems[0].bytes())
    assert cli("device", "add", "lock-2", "--kind", "door_lock", "--site", "site-a") == 2
    err = capsys.readouterr().err
    assert "invalid CAREWATCH_DEVICE_MQTT_CA_FILE" in err
    assert "not a CA certificate" in err
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT 1 FROM devices WHERE id = 'lock-2'").fetchone() is None
