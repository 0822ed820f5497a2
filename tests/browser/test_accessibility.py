"""Every page the app serves passes axe-core's WCAG 2.1 A and AA rules, in a real chromium.

Municipal services must meet WCAG 2.1 AA by law. Each page is audited as care staff, technicians
and managers see it: empty and with data, in Swedish and in English where the language changes
the page, after the interactions that reveal more of it (an alert's action failing, a form's
error, a table opened), and at a desktop's and a phone's size (care staff carry phones). The
data is that of the pages' own browser tests: their fixtures seed it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import trustme
from playwright.sync_api import Browser, FilePayload, Page, expect

from carewatch.passwords import hash_password
from carewatch.settings import Settings
from dashboards.usage import add_months
from tests.browser import (
    test_board_response,
    test_fleet,
    test_night_round_page,
    test_usage_dashboards,
    test_usage_response,
    test_usage_supervision,
)
from tests.browser.conftest import (
    DESKTOP,
    PASSWORD,
    PHONE,
    TIMEOUT_MS,
    AppServer,
    AxeViolation,
    RecordedPage,
    axe_run,
    format_violations,
    sign_in,
    wait_live,
)
from tests.browser.test_usage_dashboards import History
from tests.fixtures.alerts import seed_full_board
from tests.fixtures.services import MakeSettings, SeededRegistry
from tests.fixtures.webhook_log import add_webhook, add_webhook_with_log

pytestmark = pytest.mark.browser

# The seeded states the fleet's and the dashboards' own browser tests check, so that the audit
# sees the pages as those tests prove them: a fleet with online, offline and never-seen devices,
# a battery trend, events and an open alert; a month of usage at two sites.
fleet = test_fleet.fleet
technician = test_fleet.technician
night = test_night_round_page.night  # tonight at the seeded site, every state (+#11)
history = test_usage_dashboards.history
manager = test_usage_dashboards.manager
nights = test_usage_supervision.nights  # night supervision's checks at two sites (+#11)
responses = test_usage_response.responses  # alarm responses at two sites, one promise (#12)
team = test_board_response.team  # two caregivers' boards, for the alarm response (+#12)
colleague = test_board_response.colleague
residence = test_board_response.residence

VIEWPORTS = {"desktop": DESKTOP, "phone": PHONE}


@dataclass
class Audit:
    """axe-core run on each state of a page at every viewport; the findings kept until
    :meth:`assert_clean`, so that one failure lists every broken page of the test."""

    source: str = field(repr=False)
    findings: list[str] = field(default_factory=list)
    audited: list[str] = field(default_factory=list)

    def check(self, page: Page, state: str) -> None:
        """Audit ``page`` as it is now, at desktop and at phone size (then back to desktop)."""
        for name, viewport in VIEWPORTS.items():
            page.set_viewport_size(viewport)  # type: ignore[arg-type]  # a ViewportSize TypedDict
            violations = axe_run(page, self.source)
            where = f"{state} [{name} {viewport['width']}x{viewport['height']}] {page.url}"
            self.audited.append(where)
            if violations:
                self.findings.append(f"{where}:\n{format_violations(violations)}")
        page.set_viewport_size(DESKTOP)  # type: ignore[arg-type]  # as above

    def assert_clean(self) -> None:
        """Fail with every violation found, page by page."""
        assert self.audited, "nothing was audited"
        if self.findings:
            pytest.fail("WCAG 2.1 AA violations (axe-core):\n" + "\n".join(self.findings))


@pytest.fixture
def audit(axe_source: str) -> Audit:
    """A fresh audit for the test; it ends with :meth:`Audit.assert_clean`."""
    return Audit(axe_source)


def add_user(database_url: str, org_id: str, username: str, role: str, language: str = "sv") -> str:
    """A user of ``org_id`` (every site) who signs in with PASSWORD."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, org_id, role, password_hash, language)"
            " VALUES (%s, %s, %s, %s, %s)",
            (username, org_id, role, hash_password(PASSWORD), language),
        )
    return username


def goto(page: Page, url: str, status: int = 200) -> None:
    """Open ``url`` and insist on its status: an audit of the wrong page proves nothing."""
    response = page.goto(url)
    assert response is not None
    assert response.status == status, (url, response.status)


# --- the audit itself ---------------------------------------------------------------------------


def test_the_audit_reports_what_breaks_wcag(
    browser_page: RecordedPage, app_server: AppServer, axe_source: str
) -> None:
    """axe-core runs under the pages' own CSP and reports an image without a text alternative
    and an unlabelled field, by rule, impact and selector."""
    page = browser_page.page
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    goto(page, f"{app_server.url}/login")
    assert axe_run(page, axe_source) == []
    page.evaluate(
        """() => {
            const img = document.createElement("img");
            img.id = "no-alt";
            img.src = "data:,";
            const input = document.createElement("input");
            input.id = "no-label";
            document.querySelector("main").append(img, input);
        }"""
    )
    violations = {v.rule: v for v in axe_run(page, axe_source)}
    assert violations["image-alt"] == AxeViolation(
        "image-alt", "critical", violations["image-alt"].help, ("#no-alt",)
    )
    assert violations["label"].targets == ("#no-label",)
    text = format_violations(list(violations.values()))
    assert "image-alt (critical): " in text
    assert "at #no-alt" in text
    # The script was not refused by the Content-Security-Policy, and nothing else was either.
    assert [line for line in console if "Content Security Policy" in line] == []


# --- login -------------------------------------------------------------------------------------


def test_login_page_is_accessible(
    browser_page: RecordedPage, app_server: AppServer, caregiver: str, audit: Audit
) -> None:
    """The login form in Swedish and English, and with the wrong-password message."""
    page = browser_page.page
    for lang, username_label, password_label, button in (
        ("sv", "Användarnamn", "Lösenord", "Logga in"),
        ("en", "Username", "Password", "Sign in"),
    ):
        goto(page, f"{app_server.url}/login?lang={lang}")
        expect(page.locator("html")).to_have_attribute("lang", lang)
        audit.check(page, f"login form ({lang})")
        page.get_by_label(username_label).fill(caregiver)
        page.get_by_label(password_label).fill(PASSWORD + "x")
        page.get_by_role("button", name=button).click()
        expect(page.get_by_role("alert")).to_be_visible()
        audit.check(page, f"login form, wrong password ({lang})")
    audit.assert_clean()


# --- the alert board ---------------------------------------------------------------------------


def test_board_is_accessible_empty_and_full(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    seeded: SeededRegistry,
    database_url: str,
    audit: Audit,
) -> None:
    """The board empty; full of alerts; with a note being typed; in English with the sound on;
    and with the connection-lost banner and an action's error."""
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    expect(page.locator("#empty")).to_be_visible()
    audit.check(page, "board, no alerts")

    info_alert = seed_full_board(database_url, seeded).info
    expect(page.locator("li.card")).to_have_count(5)
    audit.check(page, "board, five alerts")

    card = page.locator(f"li.card[data-id='{info_alert}']")
    card.get_by_label("Anteckning (valfri)").fill("Besökt")
    card.get_by_label("Anteckning (valfri)").focus()
    audit.check(page, "board, a note being typed")

    page.get_by_role("button", name="Switch to English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.get_by_role("button", name="Sound off").click()
    expect(page.locator("#sound-toggle")).to_have_attribute("aria-pressed", "true")
    audit.check(page, "board in English, sound on")
    page.get_by_role("button", name="Byt till svenska").click()
    expect(page.locator("html")).to_have_attribute("lang", "sv")

    app_server.stop()
    expect(page.locator("#connection-banner")).to_be_visible()
    # The server is away: acknowledging fails, and the card says why.
    card.get_by_role("button", name="Kvittera").click()
    expect(card.locator(".action-error")).not_to_be_empty()
    audit.check(page, "board, connection lost and an action failed")
    app_server.start()
    expect(page.locator("#connection-banner")).to_be_hidden(timeout=15_000)
    audit.assert_clean()


def test_board_is_accessible_for_every_role(
    browser_page: RecordedPage,
    app_server: AppServer,
    seeded: SeededRegistry,
    database_url: str,
    test_token: str,
    audit: Audit,
) -> None:
    """The board of a technician (the technical alert, with its actions: issue 12), a manager
    (every alert, without actions; links to their pages) and an admin (every link, every
    action), Swedish and English."""
    seed_full_board(database_url, seeded)
    page = browser_page.page
    boards = (("technician", "sv", 1), ("manager", "en", 5), ("admin", "sv", 5))
    for role, language, cards in boards:
        username = add_user(database_url, seeded.org_id, f"{role[:4]}-{test_token}", role, language)
        page.context.clear_cookies()
        sign_in_as(page, app_server.url, username, language)
        expect(page.locator("li.card")).to_have_count(cards)
        audit.check(page, f"board of a {role} ({language})")
    audit.assert_clean()


def sign_in_as(page: Page, base_url: str, username: str, language: str) -> None:
    """Sign in through the form in ``language`` and wait for the live board."""
    if language == "sv":
        sign_in(page, base_url, username)
        return
    page.goto(f"{base_url}/login?lang=en")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/")
    wait_live(page)


def test_board_response_is_accessible_in_every_state(
    team: test_board_response.Team,
    app_server: AppServer,
    seeded: SeededRegistry,
    database_url: str,
    residence: str,
    audit: Audit,
) -> None:
    """Response cards (+#12) nobody's, offered to a colleague, taken and on site; the close
    form and the forward form open; a move refused in words; in Swedish and English; and the
    board of the colleague it is offered to."""
    ids = test_board_response.board_in_every_state(team, app_server, seeded, database_url)
    page = team.anna_page
    audit.check(page, "board, a response in every state")
    on_site = page.locator(f"li.card[data-id='{ids.on_site}']")
    on_site.get_by_role("button", name="Avsluta", exact=True).click()
    on_site.get_by_label("Hjälp given").check()
    audit.check(page, "board, a response's close form")
    accepted = page.locator(f"li.card[data-id='{ids.accepted}']")
    accepted.get_by_role("button", name="Avsluta", exact=True).click()
    audit.check(page, "board, a close form waiting for the arrival")
    waiting = page.locator(f"li.card[data-id='{ids.open}']")
    waiting.get_by_role("button", name="Skicka vidare").click()
    waiting.get_by_role("button", name="Skicka till kollegan").click()
    expect(waiting.locator(".action-error")).not_to_be_empty()
    audit.check(page, "board, a response's forward form with its error")
    page.get_by_role("button", name="Switch to English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    audit.check(page, "board, responses (en)")
    audit.check(team.bo_page, "board of the colleague a response is offered to")
    audit.assert_clean()


# --- fleet ---------------------------------------------------------------------------------------


def test_fleet_pages_are_accessible(
    browser_page: RecordedPage,
    app_server: AppServer,
    technician: str,
    caregiver: str,
    fleet: SeededRegistry,
    audit: Audit,
) -> None:
    """The fleet list (sorted, filtered to nothing, English), a device with a chart, events and
    an alert, a device never heard from, the 404 and the 403 pages."""
    page = browser_page.page
    base = app_server.url
    sign_in(page, base, technician)
    lock, robot = fleet.device("door_lock"), fleet.device("companion_robot")
    for path, state in (
        ("/fleet", "fleet list"),
        ("/fleet?sort=battery&order=desc", "fleet list by battery, descending"),
        ("/fleet?status=offline&battery=low", "fleet list, nothing matches"),
        ("/fleet?lang=en", "fleet list (en)"),
        (f"/fleet/{lock}", "a device with data"),
        (f"/fleet/{lock}?lang=en", "a device with data (en)"),
        (f"/fleet/{robot}", "a device never heard from"),
    ):
        goto(page, f"{base}{path}")
        audit.check(page, state)
    goto(page, f"{base}/fleet/no-such-device", 404)
    audit.check(page, "fleet, unknown device")
    page.context.clear_cookies()
    sign_in(page, base, caregiver)
    goto(page, f"{base}/fleet", 403)
    audit.check(page, "fleet, not for a caregiver")
    audit.assert_clean()


# --- onboarding ----------------------------------------------------------------------------------


def test_onboarding_page_is_accessible(
    browser_page: RecordedPage,
    app_server: AppServer,
    technician: str,
    caregiver: str,
    seeded: SeededRegistry,
    database_url: str,
    test_token: str,
    audit: Audit,
) -> None:
    """The forms; a device added (credentials and QR code); the same device refused (the form's
    error); a CSV with a bad row; the page in English; the 403 answer."""
    page = browser_page.page
    base = app_server.url
    sign_in(page, base, technician)
    goto(page, f"{base}/onboarding")
    audit.check(page, "onboarding forms (plain MQTT warning)")

    device_id = f"{test_token}-lock-a11y"
    for attempt in ("added", "refused"):
        page.get_by_label("Enhets-id").fill(device_id)
        page.get_by_label("Typ").select_option("door_lock")
        page.get_by_label("Enhet/boende").select_option(seeded.site_id)
        page.get_by_label("Placering").fill("Lgh 14")
        page.get_by_role("button", name="Lägg till enhet").click()
        if attempt == "added":
            expect(page.locator("table.credentials td.qr svg")).to_have_count(1)
        else:
            expect(page.get_by_role("alert")).to_contain_text("device id taken")
        audit.check(page, f"onboarding, one device {attempt}")

    text = (
        "id;kind;site;label\r\n"
        f"{test_token}-cam-a;safety_camera;{seeded.site_id};Lgh 1\r\n"
        f"{test_token}-toaster;toaster;{seeded.site_id};Lgh 2\r\n"
    )
    upload: FilePayload = {"name": "enheter.csv", "mimeType": "text/csv", "buffer": text.encode()}
    page.get_by_label("CSV-fil", exact=True).set_input_files(files=[upload])
    page.get_by_role("button", name="Läs in filen").click()
    expect(page.locator("table.refused tbody tr")).to_have_count(1)
    audit.check(page, "onboarding, a CSV with a refused row")

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET language = 'en' WHERE username = %s", (technician,))
    goto(page, f"{base}/onboarding")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    audit.check(page, "onboarding forms (en)")

    page.context.clear_cookies()
    sign_in(page, base, caregiver)
    goto(page, f"{base}/onboarding", 403)
    audit.check(page, "onboarding, not for a caregiver")
    audit.assert_clean()


@pytest.fixture
def fresh_page(chromium: Browser) -> Iterator[Page]:
    """A page of its own context, for a test that runs a server of its own."""
    context = chromium.new_context(viewport=DESKTOP)  # type: ignore[arg-type]  # ViewportSize
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def test_onboarding_with_a_private_ca_is_accessible(
    fresh_page: Page,
    make_settings: MakeSettings,
    database_url: str,
    seeded: SeededRegistry,
    test_token: str,
    tmp_path: Path,
    audit: Audit,
) -> None:
    """The onboarding page for an mqtts:// broker under a private CA: its fingerprint and
    download."""
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(trustme.CA().cert_pem.bytes())
    settings: Settings = make_settings(
        database_url,
        device_mqtt_url="mqtts://mqtt.kommun.example:8883",
        device_mqtt_ca_file=str(ca_file),
    )
    server = AppServer(settings)
    server.start()
    try:
        username = add_user(database_url, seeded.org_id, f"tekla-{test_token}", "technician")
        sign_in(fresh_page, server.url, username)
        goto(fresh_page, f"{server.url}/onboarding")
        expect(fresh_page.locator("code.ca-sha256")).to_be_visible()
        audit.check(fresh_page, "onboarding, broker with a private CA")
    finally:
        fresh_page.close()
        server.stop()
    audit.assert_clean()


# --- the night round ---------------------------------------------------------------------------


def test_night_round_is_accessible(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    night: test_night_round_page.Night,
    audit: Audit,
) -> None:
    """The night round with a check in every state, in Swedish and English, with a visit being
    noted and one recorded; the page of a site that is not the user's."""
    page = browser_page.page
    base = app_server.url
    sign_in(page, base, caregiver)
    goto(page, f"{base}/night-round")
    wait_live(page)
    audit.check(page, "night round, every state (sv)")
    needed = page.locator("li.check[data-state='visit_needed']")
    needed.get_by_label("Anteckning (valfri)").fill("Sover")
    needed.get_by_label("Anteckning (valfri)").focus()
    audit.check(page, "night round, a note being typed")
    needed.get_by_role("button", name="Registrera besök").click()
    expect(needed.locator(".recorded")).to_be_visible()
    audit.check(page, "night round, a visit recorded")
    page.get_by_role("button", name="Switch to English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    audit.check(page, "night round (en)")
    goto(page, f"{base}/night-round?site=someone-elses", 404)
    audit.check(page, "night round, unknown site")
    audit.assert_clean()


# --- residences and their plans -----------------------------------------------------------------


def test_residences_pages_are_accessible(
    browser_page: RecordedPage,
    app_server: AppServer,
    manager: str,
    caregiver: str,
    technician: str,
    seeded: SeededRegistry,
    audit: Audit,
) -> None:
    """The list empty and full, a label refused, a residence without and with a plan (two
    versions), a plan refused, an absence current and ended, in Swedish and English; the
    caregiver's view without the plan's form; the 403 and 404 pages."""
    page = browser_page.page
    base = app_server.url
    sign_in(page, base, manager)
    goto(page, f"{base}/residences")
    audit.check(page, "residences, none yet")
    for attempt in ("added", "refused"):
        goto(page, f"{base}/residences")
        page.get_by_label("Bostadens namn").fill("Lgh 1")
        page.get_by_role("button", name="Lägg till bostad").click()
        if attempt == "added":
            expect(page.get_by_role("status")).to_be_visible()
            audit.check(page, "a residence added, no plan, no absence")
        else:
            expect(page.get_by_role("alert")).to_contain_text("already has a residence")
            audit.check(page, "residences, a label refused")
    goto(page, f"{base}/residences")
    page.get_by_role("link", name="Lgh 1").click()
    detail = page.url.split("?")[0]
    page.get_by_label("Tillsynstider").fill("22:00, 25:00")
    page.get_by_role("button", name="Spara ny version").click()
    expect(page.get_by_role("alert")).to_be_visible()
    audit.check(page, "a plan refused")
    for times in ("22:00, 02:00", "22:00, 02:00, 05:00"):
        page.get_by_label("Tillsynstider").fill(times)
        page.get_by_role("button", name="Spara ny version").click()
        expect(page.get_by_role("status")).to_be_visible()
    page.get_by_label("Orsak").select_option("hospital")
    page.get_by_role("button", name="Registrera frånvaro").click()
    expect(page.locator("#absences tbody tr")).to_have_count(1)
    audit.check(page, "a residence with two plan versions and a current absence")
    for path, state in (
        ("/residences", "residences listed"),
        ("/residences?lang=en", "residences listed (en)"),
        (f"{detail.removeprefix(base)}?lang=en", "a residence (en)"),
    ):
        goto(page, f"{base}{path}")
        audit.check(page, state)
    page.get_by_role("button", name="End now").click()
    expect(page.locator("#absences tbody tr .state")).to_have_text("Over")
    audit.check(page, "an absence ended (en)")
    goto(page, f"{base}/residences/999999", 404)
    audit.check(page, "residences, unknown residence")

    page.context.clear_cookies()
    sign_in(page, base, caregiver)
    goto(page, detail)
    expect(page.locator("#plan-form")).to_have_count(0)
    audit.check(page, "a residence as care staff see it")
    page.context.clear_cookies()
    sign_in(page, base, technician)
    goto(page, f"{base}/residences", 403)
    audit.check(page, "residences, not for a technician")
    audit.assert_clean()


# --- webhooks and their delivery log (admins) ---------------------------------------------------


def test_webhook_pages_are_accessible(
    browser_page: RecordedPage,
    app_server: AppServer,
    caregiver: str,
    seeded: SeededRegistry,
    database_url: str,
    test_token: str,
    audit: Audit,
) -> None:
    """The list empty and with webhooks; a delivery log with a delivery, a retry and a dead
    letter (marked in words), and an empty one, in Swedish and English; the 404 and the
    caregiver's 403 page."""
    page = browser_page.page
    base = app_server.url
    admin = add_user(database_url, seeded.org_id, f"admi-{test_token}", "admin")
    sign_in(page, base, admin)
    page.get_by_role("link", name="Webhooks").click()
    expect(page.locator("#webhooks-count")).to_have_text("Inga webhooks ännu.")
    audit.check(page, "webhooks, none yet")
    log = add_webhook_with_log(database_url, seeded.org_id, seeded.device("door_lock"))
    unused = add_webhook(database_url, seeded.org_id, "")
    for path, state in (
        ("/webhooks", "webhooks listed"),
        ("/webhooks?lang=en", "webhooks listed (en)"),
        (f"/webhooks/{log.webhook_id}", "a delivery log with a dead letter"),
        (f"/webhooks/{log.webhook_id}?lang=en", "a delivery log with a dead letter (en)"),
        (f"/webhooks/{unused}", "an empty delivery log"),
    ):
        goto(page, f"{base}{path}")
        audit.check(page, state)
    goto(page, f"{base}/webhooks/{log.webhook_id}")
    expect(page.locator("#deliveries tbody tr")).to_have_count(3)
    expect(page.locator("#deliveries tr[data-state='dead'] .outcome")).to_contain_text("Död")
    goto(page, f"{base}/webhooks/999999999", 404)
    audit.check(page, "webhooks, unknown webhook")
    page.context.clear_cookies()
    sign_in(page, base, caregiver)
    goto(page, f"{base}/webhooks", 403)
    audit.check(page, "webhooks, not for a caregiver")
    audit.assert_clean()


# --- usage dashboards and the monthly report ----------------------------------------------------


def open_every_table(page: Page) -> None:
    """Unfold each chart's "show as a table", as a reader who wants the numbers would."""
    summaries = page.locator("details.as-table summary")
    for index in range(summaries.count()):
        summaries.nth(index).click()
    expect(page.locator("details.as-table:not([open])")).to_have_count(0)


def test_usage_pages_are_accessible(
    browser_page: RecordedPage,
    app_server: AppServer,
    manager: str,
    history: History,
    audit: Audit,
) -> None:
    """The dashboards by day, week and hour with their tables open, in Swedish and English; the
    monthly report; an empty period; a date error; an unknown site."""
    page = browser_page.page
    base = app_server.url
    sign_in(page, base, manager)
    month, site = history.month, history.site_a
    day = (month + timedelta(days=5)).isoformat()
    before = add_months(month, -3)
    for path, state, tables in (
        ("/dashboards", "dashboards, last 30 days", False),
        ("/dashboards?period=last_month", "dashboards, last month by day", True),
        ("/dashboards?period=last_month&lang=en", "dashboards, last month (en)", True),
        (f"/dashboards?period=last_month&site={site}&bucket=week", "dashboards by week", False),
        (f"/dashboards?since={day}&until={day}&site={site}", "dashboards, a day by hour", False),
        (f"/dashboards?since={before}&until={add_months(before, 1) - timedelta(days=1)}",
         "dashboards, a period without data", False),
        ("/dashboards?since=2026-02-30&until=2026-03-10", "dashboards, an unreadable date", False),
        ("/dashboards/report", "monthly report", False),
        ("/dashboards/report?lang=en", "monthly report (en)", False),
        (f"/dashboards/report?month=2026-99&site={history.site_b}",
         "monthly report, an unreadable month", False),
    ):  # fmt: skip
        goto(page, f"{base}{path}")
        if tables:
            open_every_table(page)
        audit.check(page, state)
    goto(page, f"{base}/dashboards?site=someone-elses", 404)
    audit.check(page, "dashboards, unknown site")
    page.emulate_media(media="print")
    goto(page, f"{base}/dashboards/report")
    audit.check(page, "monthly report, printed")
    page.emulate_media(media="screen")
    audit.assert_clean()


def test_usage_pages_with_night_supervision_are_accessible(
    browser_page: RecordedPage,
    app_server: AppServer,
    manager: str,
    nights: test_usage_supervision.Nights,
    audit: Audit,
) -> None:
    """The dashboards and the monthly report with night supervision's figures, its estimate and
    assumptions and the nights' table open, in Swedish and English, and the report printed."""
    page = browser_page.page
    base = app_server.url
    sign_in(page, base, manager)
    month = nights.month.strftime("%Y-%m")
    for path, state, tables in (
        ("/dashboards?period=last_month", "dashboards with night supervision", True),
        ("/dashboards?period=last_month&lang=en", "dashboards with night supervision (en)", True),
        (f"/dashboards?period=last_month&site={nights.site_b}",
         "dashboards with one site's night supervision", True),
        (f"/dashboards/report?month={month}", "monthly report with night supervision", False),
        (f"/dashboards/report?month={month}&lang=en",
         "monthly report with night supervision (en)", False),
    ):  # fmt: skip
        goto(page, f"{base}{path}")
        expect(page.locator("#supervision-summary")).to_be_visible()
        if tables:
            open_every_table(page)
        audit.check(page, state)
    page.emulate_media(media="print")
    goto(page, f"{base}/dashboards/report?month={month}")
    audit.check(page, "monthly report with night supervision, printed")
    page.emulate_media(media="screen")
    audit.assert_clean()


def test_usage_pages_with_alarm_response_are_accessible(
    browser_page: RecordedPage,
    app_server: AppServer,
    manager: str,
    responses: test_usage_response.Responses,
    audit: Audit,
) -> None:
    """The dashboards and the monthly report with the alarm response's figures, a promise and
    a site without one, the months' table open, in Swedish and English, printed, and a period
    without responses."""
    page = browser_page.page
    base = app_server.url
    sign_in(page, base, manager)
    month = responses.month.strftime("%Y-%m")
    for path, state, tables in (
        ("/dashboards?period=last_month", "dashboards with alarm response", True),
        ("/dashboards?period=last_month&lang=en", "dashboards with alarm response (en)", True),
        (f"/dashboards/report?month={month}", "monthly report with alarm response", False),
        (f"/dashboards/report?month={month}&lang=en",
         "monthly report with alarm response (en)", False),
    ):  # fmt: skip
        goto(page, f"{base}{path}")
        expect(page.locator("#alarm-response-summary")).to_be_visible()
        if tables:
            open_every_table(page)
        audit.check(page, state)
    page.emulate_media(media="print")
    goto(page, f"{base}/dashboards/report?month={month}")
    audit.check(page, "monthly report with alarm response, printed")
    page.emulate_media(media="screen")
    before = add_months(responses.month, -1).strftime("%Y-%m")
    goto(page, f"{base}/dashboards/report?month={before}")
    expect(page.locator("#alarm-response-empty")).to_be_visible()
    audit.check(page, "monthly report without alarm responses")
    audit.assert_clean()


def test_usage_pages_forbidden_page_is_accessible(
    browser_page: RecordedPage, app_server: AppServer, caregiver: str, audit: Audit
) -> None:
    """The 403 page a caregiver gets for the dashboards and the report."""
    page = browser_page.page
    sign_in(page, app_server.url, caregiver)
    for path in ("/dashboards", "/dashboards/report?lang=en"):
        goto(page, f"{app_server.url}{path}", 403)
        audit.check(page, f"{path}, not for a caregiver")
    audit.assert_clean()
