"""What devices are told about the broker: the CA certificate's fingerprint, the files refused
as a device CA, which CA file applies, and the credentials CSV that carries them."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from carewatch.device_broker import (
    MAX_CA_FILE_BYTES,
    DeviceBroker,
    device_broker,
    fingerprint_sha256,
    parse_device_ca,
    read_device_ca,
)
from carewatch.errors import InvalidValueError
from carewatch.fleet import (
    CREDENTIALS_CSV_COLUMNS,
    CreatedDevice,
    DeviceRecord,
    MqttCredentials,
    credentials_csv,
)
from carewatch.settings import Settings


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A private CA, as the demo and the tests make one."""
    return trustme.CA()


def openssl_style(pem: bytes) -> str:
    """The fingerprint as cryptography computes it, written as OpenSSL and browsers show it."""
    digest = x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256())
    return ":".join(f"{byte:02X}" for byte in digest)


def test_the_fingerprint_is_the_certificates_sha256_as_openssl_writes_it(ca: trustme.CA) -> None:
    """SHA-256 of the DER certificate, upper-case hex pairs joined by colons."""
    pem = ca.cert_pem.bytes()
    device_ca = parse_device_ca(pem)
    assert device_ca.sha256 == openssl_style(pem)
    assert len(device_ca.sha256) == 95
    assert device_ca.pem == pem  # served exactly as configured


def test_another_ca_has_another_fingerprint(ca: trustme.CA) -> None:
    """A device pinning the fingerprint refuses any other CA's certificate."""
    assert parse_device_ca(trustme.CA().cert_pem.bytes()).sha256 != (
        parse_device_ca(ca.cert_pem.bytes()).sha256
    )


def test_fingerprint_of_known_bytes() -> None:
    """The digest of the empty string, formatted: a fixed point independent of any library."""
    assert fingerprint_sha256(b"").startswith("E3:B0:C4:42:98:FC:1C:14:9A:FB")


def test_text_around_the_certificate_is_served_too(ca: trustme.CA) -> None:
    """Comments around the block (openssl's 'Bag Attributes') do not change the fingerprint."""
    pem = b"# Carewatch private CA\n" + ca.cert_pem.bytes()
    device_ca = parse_device_ca(pem)
    assert device_ca.pem == pem
    assert device_ca.sha256 == openssl_style(ca.cert_pem.bytes())


@pytest.mark.parametrize(
    ("which", "reason"),
    [
        pytest.param("empty", "holds no PEM certificate", id="empty"),
        pytest.param("two", "holds 2 certificates", id="a-bundle"),
        pytest.param("leaf", "not a CA certificate", id="the-broker-certificate"),
        pytest.param("garbage", "not a readable X.509 certificate", id="garbage-in-a-pem-block"),
        pytest.param("key", "holds no PEM certificate", id="a-private-key"),
    ],
)
def test_files_that_are_not_one_ca_certificate_are_refused(
    ca: trustme.CA, which: str, reason: str
) -> None:
    """Each wrong file is refused with a sentence saying what is wrong and naming the setting."""
    leaf = ca.issue_cert("mqtt.kommun.example")
    pem = {
        "empty": b"",
        "two": ca.cert_pem.bytes() + trustme.CA().cert_pem.bytes(),
        "leaf": leaf.cert_chain_pems[0].bytes(),
        "garbage": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "key": ca.private_key_pem.bytes(),
    }[which]
    with pytest.raises(InvalidValueError, match=reason) as caught:
        parse_device_ca(pem, "/etc/carewatch/ca.pem")
    assert "CAREWATCH_DEVICE_MQTT_CA_FILE" in str(caught.value)
    assert "/etc/carewatch/ca.pem" in str(caught.value)


def test_an_unreadable_or_huge_file_is_refused(tmp_path: Path, ca: trustme.CA) -> None:
    """A missing file and one far larger than a certificate are refused before parsing."""
    with pytest.raises(InvalidValueError, match="cannot be read"):
        read_device_ca(tmp_path / "missing.pem")
    huge = tmp_path / "huge.pem"
    huge.write_bytes(ca.cert_pem.bytes() + b"#" * MAX_CA_FILE_BYTES)
    with pytest.raises(InvalidValueError, match="larger than 64 KiB"):
        read_device_ca(huge)
    good = tmp_path / "ca.pem"
    good.write_bytes(ca.cert_pem.bytes())
    assert read_device_ca(good).sha256 == openssl_style(ca.cert_pem.bytes())


@pytest.mark.parametrize(
    ("device_url", "device_ca", "gateway_ca", "expected"),
    [
        pytest.param("", "", "", None, id="no-ca-anywhere"),
        pytest.param("", "", "ca", "ca", id="gateway-broker-gateway-ca"),
        pytest.param("", "other", "ca", "other", id="own-ca-wins"),
        pytest.param("mqtts://mqtt.kommun.example", "", "ca", None, id="public-broker-no-ca"),
        pytest.param("mqtts://mqtt.kommun.example", "other", "ca", "other", id="public-own-ca"),
    ],
)
def test_which_ca_file_devices_are_given(
    tmp_path: Path, device_url: str, device_ca: str, gateway_ca: str, expected: str | None
) -> None:
    """As device_mqtt_url falls back to mqtt_url, the device CA falls back to the gateway's CA,
    but only when devices use the gateway's broker."""
    pems = {name: trustme.CA().cert_pem.bytes() for name in ("ca", "other")}
    for name, pem in pems.items():
        (tmp_path / f"{name}.pem").write_bytes(pem)

    def path(name: str) -> str:
        return str(tmp_path / f"{name}.pem") if name else ""

    settings = Settings(
        mqtt_url="mqtts://carewatch.gateway:secret@broker.internal:8883",
        device_mqtt_url=device_url,
        device_mqtt_ca_file=path(device_ca),
        mqtt_ca_file=path(gateway_ca),
    )
    broker = device_broker(settings)
    assert broker.tls
    assert broker.ca_sha256 == (None if expected is None else openssl_style(pems[expected]))


def test_a_missing_gateway_ca_file_is_named_as_that_setting(tmp_path: Path) -> None:
    """The sentence names the variable to fix: the one the path came from."""
    settings = Settings(mqtt_ca_file=str(tmp_path / "gone.pem"))
    with pytest.raises(InvalidValueError, match="CAREWATCH_MQTT_CA_FILE"):
        device_broker(settings)


def test_the_broker_address_is_device_mqtt_without_credentials() -> None:
    """Devices are told the host and port, never the gateway's own identity."""
    broker = device_broker(Settings(mqtt_url="mqtt://gw:pw@127.0.0.1:1884"))
    assert broker == DeviceBroker("127.0.0.1", 1884, tls=False)
    assert broker.url == "mqtt://127.0.0.1:1884"


def _created(device_id: str, credentials: MqttCredentials | None) -> CreatedDevice:
    now = datetime(2026, 12, 5, tzinfo=UTC)
    record = DeviceRecord(
        id=device_id, kind="door_lock", site_id="s1", label="=Lgh 1", status="active",
        source="mqtt", zigbee_name=None, zigbee_model=None, bridge=None,
        has_credentials=credentials is not None, credentials_issued_at=now, created_at=now,
        decommissioned_at=None,
    )  # fmt: skip
    return CreatedDevice(2, record, credentials)


def test_credentials_carry_the_ca_fingerprint_and_where_it_is_served(ca: trustme.CA) -> None:
    """Issued for a broker with a CA: the fingerprint and URL; without: neither."""
    device_ca = parse_device_ca(ca.cert_pem.bytes())
    ca_url = "https://carewatch.kommun.example/api/v1/broker/ca.pem"
    broker = DeviceBroker("mqtt.kommun.example", 8883, True, device_ca).served_at(ca_url)
    credentials = MqttCredentials.issued("lock-1", "pw", broker)
    assert (credentials.ca_sha256, credentials.ca_url) == (device_ca.sha256, ca_url)
    plain = MqttCredentials.issued("lock-1", "pw", DeviceBroker("127.0.0.1", 1883, False))
    assert (plain.ca_sha256, plain.ca_url) == (None, None)


def test_the_csv_has_the_ca_columns_filled_or_empty(ca: trustme.CA) -> None:
    """v1's columns first, then ca_sha256 and ca_url; empty for a broker without a private CA;
    no row for a device without credentials; a formula-like label stays text."""
    fingerprint = parse_device_ca(ca.cert_pem.bytes()).sha256
    ca_url = "https://carewatch.kommun.example/api/v1/broker/ca.pem"
    with_ca = MqttCredentials("lock-1", "pw1", "mqtt.k", 8883, True, fingerprint, ca_url)
    plain = MqttCredentials("lock-2", "pw2", "127.0.0.1", 1883, False)
    rows = [_created("lock-1", with_ca), _created("lock-2", plain), _created("zb-1", None)]
    text = credentials_csv(rows)
    assert text.startswith("id,kind,site,label,username,password,url,ca_sha256,ca_url\r\n")
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert list(parsed[0]) == list(CREDENTIALS_CSV_COLUMNS)
    assert [row["id"] for row in parsed] == ["lock-1", "lock-2"]
    assert parsed[0]["url"] == "mqtts://mqtt.k:8883"
    assert (parsed[0]["ca_sha256"], parsed[0]["ca_url"]) == (fingerprint, ca_url)
    assert (parsed[1]["ca_sha256"], parsed[1]["ca_url"]) == ("", "")
    assert parsed[0]["label"] == "'=Lgh 1"
