"""The night round page in a real chromium on a phone's screen: tonight's checks in time order
with their states, a physical visit recorded with one tap, live updates from the alert stream,
another site, English, and WCAG 2.1 AA (+#11).

The night is built the way the gateway builds it: residences with a camera and a plan, the
camera's ``check_ended`` events as the ingest stores them, an absence and a staff visit, then the
gateway's own supervision pass, which writes the verdicts and opens the alerts (with their
NOTIFY). The site's time zone is chosen when the test runs so that it is about 01:00 there: the
whole night, from 21:00 to 04:00, is tonight's.
"""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

import orjson
import psycopg
import pytest
from playwright.sync_api import Locator, Page, expect

from carewatch.passwords import hash_password
from devices.supervision import local_instant, night_of
from gateway.supervision import SupervisionOutcome, supervision_pass
from tests.browser.conftest import (
    PASSWORD,
    PHONE,
    AppServer,
    RecordedPage,
    axe_run,
    format_violations,
    sign_in,
    wait_live,
)
from tests.fixtures.services import SeededRegistry

pytestmark = pytest.mark.browser

EN_DASH = "\N{EN DASH}"  # the pages' own dash, which ruff would take for a hyphen

# One residence per state, one check each; the labels sort as the checks' times do.
DONE, LATE, VISITED, MISSED, PAUSED = "Lgh 1", "Lgh 2", "Lgh 3", "Lgh 4", "Lgh 5"
VISIT_NEEDED, RETRY_DUE, DUE, UPCOMING = "Lgh 6", "Lgh 7", "Lgh 8", "Lgh 9"
EXPECTED_STATES = [
    (DONE, "done"),
    (LATE, "late"),
    (VISITED, "visited"),
    (MISSED, "missed"),
    (PAUSED, "paused"),
    (VISIT_NEEDED, "visit_needed"),
    (RETRY_DUE, "retry_due"),
    (DUE, "due"),
    (UPCOMING, "upcoming"),
]


def zone_at_one_am(now: datetime) -> str:
    """A fixed-offset zone (IANA ``Etc/GMT±N``, whose sign is inverted) where ``now`` is 01:xx."""
    offset = (1 - now.hour) % 24
    if offset > 14:  # the zones run from UTC-12 to UTC+14
        offset -= 24
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


@dataclass(frozen=True)
class Night:
    """Tonight at the seeded site: its residences by label, their cameras, the clock."""

    database_url: str
    site_id: str
    tz: tzinfo
    night: date
    residences: dict[str, int]
    cameras: dict[str, str]

    def at(self, local: time) -> datetime:
        return local_instant(self.night, local, self.tz)

    def local(self, moment: datetime) -> str:
        return moment.astimezone(self.tz).strftime("%H:%M")

    def check_ended(self, label: str, at: datetime, outcome: str, duration_s: float) -> None:
        """A camera's ``camera.check_ended`` as the ingest stores it."""
        data = orjson.dumps({"outcome": outcome, "duration_s": duration_s, "by": "nattpatrull"})
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO events (time, received_at, device_id, event_id, type, data)"
                " VALUES (%s, %s, %s, %s, 'camera.check_ended', %s::jsonb)",
                (at, at, self.cameras[label], f"check-{at.timestamp()}", data.decode()),
            )

    def supervision_pass(self) -> SupervisionOutcome:
        """The gateway's pass, now; in a thread of its own (Playwright's loop holds this one)."""
        with ThreadPoolExecutor(max_workers=1) as thread:
            return thread.submit(asyncio.run, _pass(self.database_url)).result()


async def _pass(database_url: str) -> SupervisionOutcome:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        return await supervision_pass(conn, datetime.now(UTC))


def build_night(database_url: str, site_id: str, token: str) -> Night:
    """Nine residences at ``site_id``, one check each, every state of a night; judged."""
    now = datetime.now(UTC)
    zone = zone_at_one_am(now)
    tz = ZoneInfo(zone)
    tonight = night_of(now, tz)
    due_now = now.astimezone(tz).time().replace(second=0, microsecond=0)
    times = {
        DONE: time(21),
        LATE: time(21, 30),
        VISITED: time(22),
        MISSED: time(22, 30),
        PAUSED: time(23),
        VISIT_NEEDED: time(0),
        RETRY_DUE: time(1),
        DUE: due_now,
        UPCOMING: time(4),
    }
    residences: dict[str, int] = {}
    cameras: dict[str, str] = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE sites SET timezone = %s WHERE id = %s", (zone, site_id))
        for n, (label, at) in enumerate(times.items(), start=1):
            row = conn.execute(
                "INSERT INTO residences (site_id, label) VALUES (%s, %s) RETURNING id",
                (site_id, label),
            ).fetchone()
            assert row is not None
            residences[label] = row[0]
            cameras[label] = f"{token}-nightcam-{n}"
            conn.execute(
                "INSERT INTO devices (id, kind, site_id, residence_id, label)"
                " VALUES (%s, 'safety_camera', %s, %s, %s)",
                (cameras[label], site_id, row[0], label),
            )
            # Planned from tonight's noon: no earlier night for the pass to judge.
            conn.execute(
                "INSERT INTO supervision_plans (residence_id, recorded_at, recorded_by,"
                " check_times) VALUES (%s, %s, 'planner', %s::time[])",
                (row[0], local_instant(tonight, time(12), tz), [at]),
            )
    night = Night(database_url, site_id, tz, tonight, residences, cameras)
    night.check_ended(DONE, night.at(time(21, 3)), "seen", 24.0)
    night.check_ended(LATE, night.at(time(22, 10)), "seen", 31.0)
    night.check_ended(VISITED, night.at(time(22, 1)), "technical_failure", 2.0)
    night.check_ended(VISIT_NEEDED, night.at(time(0, 2)), "not_seen", 20.0)
    night.check_ended(RETRY_DUE, now - timedelta(minutes=1), "not_seen", 20.0)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO physical_visits (residence_id, visited_at, source, recorded_by, note)"
            " VALUES (%s, %s, 'staff', 'nattpatrull', 'Kameran svart')",
            (residences[VISITED], night.at(time(22, 20))),
        )
        conn.execute(
            "INSERT INTO absences (residence_id, reason, starts_at, expected_end, created_by)"
            " VALUES (%s, 'hospital', %s, %s, 'nattpatrull')",
            (residences[PAUSED], night.at(time(22)), night.at(time(11))),
        )
    night.supervision_pass()
    return night


@pytest.fixture
def night(seeded: SeededRegistry, database_url: str, test_token: str) -> Night:
    """Tonight at the seeded site, judged by the gateway's supervision pass."""
    return build_night(database_url, seeded.site_id, test_token)


@pytest.fixture
def phone(browser_page: RecordedPage) -> Page:
    """The test's page at a phone's size (390x844)."""
    browser_page.page.set_viewport_size(PHONE)  # type: ignore[arg-type]  # a ViewportSize TypedDict
    return browser_page.page


def open_night_round(page: Page, base_url: str, username: str) -> None:
    """Sign in and open the night round, until its list is loaded and the stream open."""
    sign_in(page, base_url, username)
    page.goto(f"{base_url}/night-round")
    wait_live(page)


def row(page: Page, night: Night, label: str) -> Locator:
    return page.locator(f"li.check[data-residence='{night.residences[label]}']")


def states(page: Page) -> list[tuple[str, str]]:
    found: list[list[str]] = page.locator("li.check").evaluate_all(
        "rows => rows.map(r => [r.querySelector('.label').textContent, r.dataset.state])"
    )
    return [(label, state) for label, state in found]


def retry_time(night: Night) -> str:
    """When the retry of the check that was not seen is due, as the page shows it."""
    with psycopg.connect(night.database_url) as conn:
        row = conn.execute(
            "SELECT retry_at FROM supervision_checks WHERE residence_id = %s",
            (night.residences[RETRY_DUE],),
        ).fetchone()
    assert row is not None
    assert row[0] is not None
    retry_at: datetime = row[0]
    return retry_at.astimezone(night.tz).strftime("%H:%M")


def test_tonight_shows_every_state_in_time_order(
    phone: Page, app_server: AppServer, caregiver: str, night: Night
) -> None:
    """Each check of the night in time order with its state and what happened, in Swedish and
    the site's own time; record buttons only where a visit is wanted; nothing wider than the
    phone."""
    open_night_round(phone, app_server.url, caregiver)
    expect(phone.locator("li.check")).to_have_count(len(EXPECTED_STATES))
    assert states(phone) == EXPECTED_STATES
    expect(phone.get_by_role("heading", name="Carewatch Nattrunda")).to_be_visible()
    expect(phone.locator("#summary")).to_have_text(
        "9 planerade tillsyner · 1 behöver besök · 1 missade · 1 att titta till igen · 1 dags nu"
    )
    expected_text = {
        DONE: ("21:00", "Klar", "Sedd 21:03 · 24 s"),
        LATE: ("21:30", "Sen", "Sedd 22:10, efter fönstret · 31 s"),
        VISITED: (
            "22:00",
            "Besökt",
            f"Kameran fungerade inte {EN_DASH} fysiskt besök gjort 22:20 i stället",
        ),
        MISSED: ("22:30", "Missad", "Ingen tillsyn före 22:45"),
        PAUSED: ("23:00", f"Pausad {EN_DASH} frånvarande", "Den boende är borta (frånvaro)"),
        VISIT_NEEDED: (
            "00:00",
            "Besök behövs",
            f"Inte sedd vid tillsynen {EN_DASH} gör ett fysiskt besök",
        ),
        # Looked at a minute before the test began: again 15 minutes after that.
        RETRY_DUE: ("01:00", "Inte sedd", f"Titta igen senast {retry_time(night)}"),
        UPCOMING: ("04:00", "Kommande", f"Fönster 03:45{EN_DASH}04:15"),
    }
    for label, (planned, badge, detail) in expected_text.items():
        the_row = row(phone, night, label)
        expect(the_row.locator(".planned")).to_have_text(planned)
        expect(the_row.locator(".badge")).to_have_text(badge)
        expect(the_row.locator(".detail")).to_have_text(detail)
    expect(row(phone, night, DUE).locator(".badge")).to_have_text("Dags nu")
    expect(row(phone, night, VISITED).locator(".flags")).to_have_text("Kamerafel")
    # A visit is offered where one is needed and where nobody looked in time, only there.
    buttons = phone.get_by_role("button", name="Registrera besök")
    expect(buttons).to_have_count(2)
    offered = row(phone, night, VISIT_NEEDED).get_by_role("button", name="Registrera besök")
    expect(offered).to_be_visible()
    expect(row(phone, night, MISSED).get_by_role("button", name="Registrera besök")).to_be_visible()
    box = offered.bounding_box()
    assert box is not None
    assert box["height"] >= 48
    assert box["width"] >= 300  # the whole row's width on a phone: easy to hit in the dark
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_one_tap_records_a_visit_and_the_row_turns_visited(
    phone: Page, app_server: AppServer, caregiver: str, night: Night, database_url: str
) -> None:
    """Registrera besök records a staff visit by the caregiver with the note; the gateway's
    next pass settles the check and ends its alert, and the row turns visited without reload."""
    open_night_round(phone, app_server.url, caregiver)
    phone.evaluate("window.__sameDocument = true")
    the_row = row(phone, night, VISIT_NEEDED)
    the_row.get_by_label("Anteckning (valfri)").fill("Sov gott")
    the_row.get_by_role("button", name="Registrera besök").click()
    expect(the_row.locator(".recorded")).to_contain_text("Besök registrerat")
    expect(the_row.get_by_role("button", name="Registrera besök")).to_be_hidden()
    expect(phone.locator("#announcer")).to_have_text(f"Besök registrerat för {VISIT_NEEDED}")
    with psycopg.connect(database_url) as conn:
        visits = conn.execute(
            "SELECT source, recorded_by, note FROM physical_visits WHERE residence_id = %s",
            (night.residences[VISIT_NEEDED],),
        ).fetchall()
    assert visits == [("staff", caregiver, "Sov gott")]

    night.supervision_pass()
    expect(the_row).to_have_attribute("data-state", "visited")
    expect(the_row.locator(".badge")).to_have_text("Besökt")
    expect(the_row.locator(".detail")).to_have_text(re.compile(r"^Fysiskt besök gjort \d\d:\d\d$"))
    expect(the_row.locator(".recorded")).to_be_hidden()
    with psycopg.connect(database_url) as conn:
        check = conn.execute(
            "SELECT state, by_visit FROM supervision_checks WHERE residence_id = %s",
            (night.residences[VISIT_NEEDED],),
        ).fetchone()
        alert = conn.execute(
            "SELECT state FROM alerts WHERE residence_id = %s AND rule = 'physical_visit_needed'",
            (night.residences[VISIT_NEEDED],),
        ).fetchone()
    assert check == ("visited", True)
    assert alert == ("resolved",)
    assert phone.evaluate("window.__sameDocument") is True


def test_a_new_supervision_alert_updates_the_page_live(
    phone: Page, browser_page: RecordedPage, app_server: AppServer, caregiver: str, night: Night
) -> None:
    """A camera failing at the due check opens physical_visit_needed; the stream brings it and
    the row turns "visit needed" and is announced, long before the minute's refresh."""
    open_night_round(phone, app_server.url, caregiver)
    phone.evaluate("window.__sameDocument = true")
    fetched_before = sum("/api/v1/night-round" in url for url in browser_page.requests)
    the_row = row(phone, night, DUE)
    expect(the_row).to_have_attribute("data-state", "due")
    night.check_ended(DUE, datetime.now(UTC), "technical_failure", 1.0)
    outcome = night.supervision_pass()
    assert outcome.opened == 1
    # The periodic refresh is a minute away: within seconds, only the stream can have told.
    expect(the_row).to_have_attribute("data-state", "visit_needed", timeout=10_000)
    expect(the_row.locator(".detail")).to_have_text(
        f"Kameran fungerade inte {EN_DASH} gör ett fysiskt besök"
    )
    expect(the_row.get_by_role("button", name="Registrera besök")).to_be_visible()
    planned = the_row.locator(".planned").inner_text()
    expect(phone.locator("#announcer")).to_have_text(f"{DUE} {planned}: Besök behövs")
    assert phone.evaluate("window.__sameDocument") is True
    assert sum("/api/v1/night-round" in url for url in browser_page.requests) > fetched_before


def test_staff_who_do_not_act_see_no_record_buttons(
    phone: Page, app_server: AppServer, night: Night, seeded: SeededRegistry, test_token: str
) -> None:
    """A manager sees the same night, without the buttons only care staff and admins may use."""
    manager = f"maja-{test_token}"
    with psycopg.connect(night.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, org_id, role, password_hash)"
            " VALUES (%s, %s, 'manager', %s)",
            (manager, seeded.org_id, hash_password(PASSWORD)),
        )
    open_night_round(phone, app_server.url, manager)
    assert states(phone) == EXPECTED_STATES
    expect(phone.get_by_role("button", name="Registrera besök")).to_have_count(0)


def test_a_user_with_several_sites_chooses_one(
    phone: Page, app_server: AppServer, caregiver: str, night: Night, seeded: SeededRegistry
) -> None:
    """With two sites the page offers a choice; the other site shows its own night; a site
    that is not the user's is a 404 page."""
    other = f"{seeded.site_id}-b"
    with psycopg.connect(night.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO sites (id, org_id, name) VALUES (%s, %s, 'Ängsgården')",
            (other, seeded.org_id),
        )
        row_ = conn.execute(
            "INSERT INTO residences (site_id, label) VALUES (%s, 'Lgh 40') RETURNING id", (other,)
        ).fetchone()
        assert row_ is not None
        conn.execute(
            "INSERT INTO supervision_plans (residence_id, recorded_at, recorded_by, check_times)"
            " VALUES (%s, '2020-01-01T00:00:00Z', 'planner', '{22:00,03:00}'::time[])",
            (row_[0],),
        )
    open_night_round(phone, app_server.url, caregiver)
    choice = phone.get_by_label("Boende/område")
    expect(choice.locator("option")).to_have_count(2)
    choice.select_option(other)
    phone.get_by_role("button", name="Visa").click()
    phone.wait_for_url(f"{app_server.url}/night-round?site={other}")
    wait_live(phone)
    expect(phone.locator("#site-heading")).to_have_text("Ängsgården")
    expect(phone.locator("li.check .label")).to_have_text(["Lgh 40", "Lgh 40"])
    expect(phone.locator("li.check .planned")).to_have_text(["22:00", "03:00"])
    response = phone.goto(f"{app_server.url}/night-round?site=someone-elses")
    assert response is not None
    assert response.status == 404
    expect(phone.get_by_role("heading", name="Boendet finns inte")).to_be_visible()
    phone.get_by_role("link", name="English").click()
    expect(phone.get_by_role("heading", name="No such site")).to_be_visible()
    expect(phone.locator("html")).to_have_attribute("lang", "en")


def test_english_and_wcag_at_phone_size(
    phone: Page, app_server: AppServer, caregiver: str, night: Night, axe_source: str
) -> None:
    """The page in Swedish, then switched to English, and with the connection lost: no axe-core
    WCAG 2.1 AA violation at 390x844; the banner says when the stream is gone and goes when it
    is back."""
    open_night_round(phone, app_server.url, caregiver)
    findings = []
    violations = axe_run(phone, axe_source)
    if violations:
        findings.append(f"sv:\n{format_violations(violations)}")

    phone.get_by_role("button", name="Switch to English").click()
    expect(phone.locator("html")).to_have_attribute("lang", "en")
    expect(phone.get_by_role("heading", name="Carewatch Night round")).to_be_visible()
    expect(row(phone, night, VISIT_NEEDED).locator(".badge")).to_have_text("Visit needed")
    expect(row(phone, night, DONE).locator(".detail")).to_have_text("Seen 21:03 · 24 s")
    expect(phone.locator("#summary")).to_have_text(
        "9 planned checks · 1 need a visit · 1 missed · 1 to look at again · 1 due now"
    )
    expect(phone.get_by_role("button", name="Record visit")).to_have_count(2)
    violations = axe_run(phone, axe_source)
    if violations:
        findings.append(f"en:\n{format_violations(violations)}")

    app_server.stop()
    expect(phone.locator("#connection-banner")).to_be_visible()
    expect(phone.locator("#connection-banner")).to_have_text(
        f"The live connection is lost {EN_DASH} trying again…"
    )
    violations = axe_run(phone, axe_source)
    if violations:
        findings.append(f"en, connection lost:\n{format_violations(violations)}")
    app_server.start()
    expect(phone.locator("#connection-banner")).to_be_hidden(timeout=15_000)
    # The choice is kept: the page opens in English next time.
    phone.reload()
    wait_live(phone)
    expect(phone.locator("html")).to_have_attribute("lang", "en")
    assert not findings, "WCAG 2.1 AA violations (axe-core):\n" + "\n".join(findings)
