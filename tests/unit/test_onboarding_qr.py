"""The QR codes on the onboarding page: what they carry, and when there are none."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
import segno

from carewatch.fleet import CreatedDevice, DeviceRecord, MqttCredentials
from dashboards.onboarding import QR_CODES_MAX, qr_codes


def created(device_id: str, *, with_credentials: bool = True) -> CreatedDevice:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    record = DeviceRecord(
        id=device_id, kind="door_lock", site_id="s1", label="", status="active", source="mqtt",
        zigbee_name=None, zigbee_model=None, bridge=None, has_credentials=with_credentials,
        credentials_issued_at=now, created_at=now, decommissioned_at=None,
    )  # fmt: skip
    credentials = MqttCredentials(device_id, "pw-Abc_123", "mqtt.kommun.se", 8883, True)
    return CreatedDevice(2, record, credentials if with_credentials else None)


def test_the_connection_url_carries_everything_a_device_needs() -> None:
    credentials = created("lock-0001").credentials
    assert credentials is not None
    assert credentials.connection_url == "mqtts://lock-0001:pw-Abc_123@mqtt.kommun.se:8883"
    assert credentials.url == "mqtts://mqtt.kommun.se:8883"  # what the page shows in clear


def test_one_svg_per_device_with_credentials_titled_and_without_inline_style() -> None:
    codes = qr_codes([created("lock-0001"), created("door-7", with_credentials=False)], "QR {id}")
    assert list(codes) == ["lock-0001"]
    svg = str(codes["lock-0001"])
    assert svg.startswith("<svg")
    assert "<title>QR lock-0001</title>" in svg
    assert "style=" not in svg  # the pages' CSP allows no inline style
    assert "pw-Abc_123" not in svg  # drawn as modules, not written out as text
    # The modules are those of the connection URL (another text gives another pattern).
    url = "mqtts://lock-0001:pw-Abc_123@mqtt.kommun.se:8883"
    same = segno.make(url, error="m").svg_inline(scale=3, border=2, title="QR lock-0001")
    other = segno.make(url + "x", error="m").svg_inline(scale=3, border=2, title="QR lock-0001")
    assert svg == same
    assert svg != other


def test_a_big_import_gets_no_qr_codes() -> None:
    many = [created(f"lock-{i:04d}") for i in range(QR_CODES_MAX + 1)]
    assert qr_codes(many, "{id}") == {}
    assert len(qr_codes(many[:QR_CODES_MAX], "{id}")) == QR_CODES_MAX


# A CA fingerprint as the credentials carry it (95 characters), and where the API serves it.
FINGERPRINT = ":".join(f"{byte:02X}" for byte in range(32))
CA_URL = "https://carewatch.kommun.se/api/v1/broker/ca.pem"


def test_with_a_private_ca_the_connection_url_also_says_which_ca_and_where() -> None:
    """The fingerprint to check and the certificate's address ride in the query, unescaped."""
    credentials = MqttCredentials(
        "lock-0001", "pw-Abc_123", "mqtt.kommun.se", 8883, True, FINGERPRINT, CA_URL
    )
    assert credentials.connection_url == (
        f"mqtts://lock-0001:pw-Abc_123@mqtt.kommun.se:8883?ca_sha256={FINGERPRINT}&ca_url={CA_URL}"
    )
    assert credentials.url == "mqtts://mqtt.kommun.se:8883"


@pytest.mark.parametrize(
    ("device_id", "host", "most_version"),
    [
        # What a municipality's names look like: version 11 (61 modules, 195 px on the page).
        pytest.param("lock-0001", "mqtt.kommun.se", 11, id="typical"),
        # Every part as long as it can be: version 14 (73 modules, 231 px), still read by a
        # phone from the screen or an A4 printout; beyond about 15 the modules get too small.
        pytest.param("d" * 64, "mqtt.vard.stadsbyggnadskontoret.goteborg.se", 15, id="longest"),
    ],
)
def test_the_qr_code_with_a_ca_stays_small_enough_to_scan(
    device_id: str, host: str, most_version: int
) -> None:
    """The payload with CA fingerprint and URL keeps the code at a version phones read."""
    ca_url = f"https://carewatch.{host.removeprefix('mqtt.')}/api/v1/broker/ca.pem"
    password = "x" * 32  # new_password() gives 24; room to grow
    credentials = MqttCredentials(device_id, password, host, 8883, True, FINGERPRINT, ca_url)
    code = segno.make(credentials.connection_url, error="m")
    assert isinstance(code.version, int)
    assert code.version <= most_version
    svg = str(qr_codes([created_with(device_id, credentials)], "QR {id}")[device_id])
    assert svg == code.svg_inline(scale=3, border=2, title=f"QR {device_id}")


def created_with(device_id: str, credentials: MqttCredentials) -> CreatedDevice:
    return replace(created(device_id), credentials=credentials)
