"""The onboarding page in a real chromium: a technician adds one device and sees its password
once; a CSV upload with a bad row shows the report and a credentials download that works under
the page's Content-Security-Policy."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import FilePayload, expect

from carewatch.broker_passwords import verify_password
from carewatch.passwords import hash_password
from tests.browser.conftest import PASSWORD, AppServer, RecordedPage, sign_in
from tests.fixtures.services import SeededRegistry

pytestmark = pytest.mark.browser


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


def stored_hash(database_url: str, device_id: str) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT mqtt_password_hash FROM devices WHERE id = %s", (device_id,)
        ).fetchone()
    assert row is not None
    assert isinstance(row[0], str)
    return row[0]


def test_a_technician_onboards_one_device_and_sees_its_password_once(
    browser_page: RecordedPage,
    app_server: AppServer,
    technician: str,
    seeded: SeededRegistry,
    database_url: str,
    test_token: str,
) -> None:
    """The form adds the device; its password is on the answer page, and only there."""
    page = browser_page.page
    sign_in(page, app_server.url, technician)
    page.goto(f"{app_server.url}/onboarding")
    # The test's broker is plain MQTT on loopback: the page says what that means.
    expect(page.locator(".plaintext-warning")).to_contain_text("Okrypterat.")
    device_id = f"{test_token}-lock-new"
    page.get_by_label("Enhets-id").fill(device_id)
    page.get_by_label("Typ").select_option("door_lock")
    page.get_by_label("Enhet/boende").select_option(seeded.site_id)
    page.get_by_label("Placering").fill("Lgh 14")
    page.get_by_role("button", name="Lägg till enhet").click()
    row = page.locator(f"table.credentials tr[data-device='{device_id}']")
    expect(row).to_be_visible()
    expect(page.get_by_text("Lösenorden visas bara nu.")).to_be_visible()
    password = row.locator("code.password").inner_text()
    assert verify_password(password, stored_hash(database_url, device_id))
    # The installer's QR code: an SVG named after the device (its content: tests/unit).
    qr = row.locator("td.qr svg")
    expect(qr).to_have_count(1)
    expect(qr.locator("title")).to_contain_text(device_id)
    page.goto(f"{app_server.url}/onboarding")
    expect(page.get_by_role("heading", name="En enhet")).to_be_visible()
    assert password not in page.content()
    # Adding it again is refused with a reason, and the form keeps what was typed.
    page.get_by_label("Enhets-id").fill(device_id)
    page.get_by_label("Enhet/boende").select_option(seeded.site_id)
    page.get_by_role("button", name="Lägg till enhet").click()
    expect(page.get_by_role("alert")).to_contain_text("device id taken")
    expect(page.get_by_label("Enhets-id")).to_have_value(device_id)


def test_a_csv_upload_reports_each_row_and_offers_the_credentials(
    browser_page: RecordedPage,
    app_server: AppServer,
    technician: str,
    seeded: SeededRegistry,
    database_url: str,
    test_token: str,
    tmp_path: Path,
) -> None:
    """Good rows are created, the bad row is listed with its reason; the download holds the
    created devices' credentials, which match the stored hashes."""
    page = browser_page.page
    sign_in(page, app_server.url, technician)
    page.goto(f"{app_server.url}/onboarding")
    good = [f"{test_token}-cam-a", f"{test_token}-cam-b"]
    text = (
        "\ufeffid;kind;site;label\r\n"
        f"{good[0]};safety_camera;{seeded.site_id};Lgh 1\r\n"
        f"{test_token}-toaster;toaster;{seeded.site_id};Lgh 2\r\n"
        f"{good[1]};safety_camera;{seeded.site_id};Lgh 3\r\n"
    )
    upload: FilePayload = {"name": "enheter.csv", "mimeType": "text/csv", "buffer": text.encode()}
    page.get_by_label("CSV-fil", exact=True).set_input_files(files=[upload])
    page.get_by_role("button", name="Läs in filen").click()
    expect(page.get_by_text("2 tillagda, 1 avvisade.")).to_be_visible()
    refused = page.locator("table.refused tbody tr")
    expect(refused).to_have_count(1)
    expect(refused).to_contain_text("unknown kind 'toaster'")
    expect(refused.locator("td").first).to_have_text("3")
    expect(page.locator("table.credentials tbody tr")).to_have_count(2)

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Ladda ner inloggningsuppgifter (CSV)").click()
    download = download_info.value
    assert download.suggested_filename == "carewatch-credentials.csv"
    saved = tmp_path / "credentials.csv"
    download.save_as(saved)
    lines = saved.read_text(encoding="utf-8-sig").splitlines()
    assert lines[0] == "id,kind,site,label,username,password,url,ca_sha256,ca_url"
    rows = {line.split(",")[0]: line.split(",") for line in lines[1:]}
    assert sorted(rows) == sorted(good)
    for device_id in good:
        assert verify_password(rows[device_id][5], stored_hash(database_url, device_id))


def test_a_device_onboarded_into_a_residence_belongs_to_it(
    browser_page: RecordedPage,
    app_server: AppServer,
    technician: str,
    seeded: SeededRegistry,
    database_url: str,
    test_token: str,
) -> None:
    """The residence chosen in the form is stored with the device and shown in the answer; one
    of another site is refused with the form kept."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO residences (site_id, label) VALUES (%s, 'Lgh 7') RETURNING id",
            (seeded.site_id,),
        ).fetchone()
        assert row is not None
        residence_id: int = row[0]
        conn.execute(
            "INSERT INTO sites (id, org_id, name) VALUES (%s, %s, 'Björkgården')",
            (f"other-{test_token}", seeded.org_id),
        )
    page = browser_page.page
    sign_in(page, app_server.url, technician)
    page.goto(f"{app_server.url}/onboarding")
    residence = page.get_by_label("Bostad", exact=True)
    expect(residence).to_have_value("")  # none, unless chosen
    device_id = f"{test_token}-cam-lgh7"
    page.get_by_label("Enhets-id").fill(device_id)
    page.get_by_label("Typ").select_option("safety_camera")
    page.get_by_label("Enhet/boende").select_option(f"other-{test_token}")
    residence.select_option(label="Lgh 7")
    page.get_by_role("button", name="Lägg till enhet").click()
    expect(page.get_by_role("alert")).to_contain_text("residence_id not found at the device's site")
    expect(page.get_by_label("Bostad", exact=True)).to_have_value(str(residence_id))

    page.get_by_label("Enhet/boende").select_option(seeded.site_id)
    page.get_by_role("button", name="Lägg till enhet").click()
    expect(page.locator(f"tr[data-device='{device_id}'] td.residence")).to_have_text("Lgh 7")
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT residence_id FROM devices WHERE id = %s", (device_id,)
        ).fetchone()
    assert stored == (residence_id,)
