"""The onboarding page with a broker behind a private CA, in a real chromium: the page names the
mqtts:// broker and the CA's fingerprint, its download is that very certificate, and the
credentials CSV carries the fingerprint."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import psycopg
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from playwright.sync_api import expect

from carewatch.passwords import hash_password
from carewatch.settings import Settings
from tests.browser.conftest import PASSWORD, AppServer, RecordedPage, sign_in
from tests.fixtures.services import MakeSettings, SeededRegistry

pytestmark = pytest.mark.browser

DEVICE_URL = "mqtts://mqtt.kommun.example:8883"


@pytest.fixture
def ca_pem() -> bytes:
    """A private CA's certificate, as tools.local.certificates makes one."""
    return trustme.CA().cert_pem.bytes()


@pytest.fixture
def settings(
    make_settings: MakeSettings, database_url: str, tmp_path: Path, ca_pem: bytes
) -> Settings:
    """The app tells devices an mqtts:// broker whose certificate the private CA signed."""
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca_pem)
    return make_settings(database_url, device_mqtt_url=DEVICE_URL, device_mqtt_ca_file=str(ca_file))


@pytest.fixture
def technician(seeded: SeededRegistry, database_url: str, test_token: str) -> str:
    """A technician of the seeded organisation who signs in with PASSWORD."""
    username = f"tekla-{test_token}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, org_id, role, password_hash, display_name)"
            " VALUES (%s, %s, 'technician', %s, 'Tekla')",
            (username, seeded.org_id, hash_password(PASSWORD)),
        )
    return username


def fingerprint(pem: bytes) -> str:
    digest = x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256())
    return ":".join(f"{byte:02X}" for byte in digest)


def test_the_page_names_the_broker_and_its_ca_and_the_csv_carries_it(
    browser_page: RecordedPage,
    app_server: AppServer,
    technician: str,
    seeded: SeededRegistry,
    test_token: str,
    ca_pem: bytes,
    tmp_path: Path,
) -> None:
    """mqtts:// address, fingerprint and a download that is the CA itself; no plain-MQTT
    warning; a new device's CSV row has the same fingerprint."""
    page = browser_page.page
    sign_in(page, app_server.url, technician)
    page.goto(f"{app_server.url}/onboarding")
    broker = page.locator("section.broker")
    expect(broker.locator("code.broker-url")).to_have_text(DEVICE_URL)
    expect(broker.locator("code.ca-sha256")).to_have_text(fingerprint(ca_pem))
    expect(page.locator(".plaintext-warning")).to_have_count(0)
    link = page.get_by_role("link", name="Ladda ner CA-certifikatet (PEM)")
    href = link.get_attribute("href")
    assert href == f"{app_server.url}/api/v1/broker/ca.pem"
    assert page.request.get(href).body() == ca_pem

    device_id = f"{test_token}-lock-ca"
    page.get_by_label("Enhets-id").fill(device_id)
    page.get_by_label("Enhet/boende").select_option(seeded.site_id)
    page.get_by_role("button", name="Lägg till enhet").click()
    row = page.locator(f"table.credentials tr[data-device='{device_id}']")
    expect(row.locator("td.qr svg")).to_have_count(1)
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Ladda ner inloggningsuppgifter (CSV)").click()
    saved = tmp_path / "credentials.csv"
    download_info.value.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8-sig"))))
    assert [(r["id"], r["url"], r["ca_sha256"]) for r in rows] == [
        (device_id, DEVICE_URL, fingerprint(ca_pem))
    ]
    assert rows[0]["ca_url"] == href
