"""The QR codes on the onboarding page: what they carry, and when there are none."""

from __future__ import annotations

from datetime import UTC, datetime

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
