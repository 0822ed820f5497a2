"""The alarm response on the board in a real chromium (+#12): two caregivers' boards on one
alarm; one takes it and the other sees it taken within a second; on site, then closed with an
action and a note; a refusal (409) said in words; forwarding; notifications and a repeating beep
while the tab is hidden; and a phone's screen."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Route, expect

from carewatch.passwords import hash_password
from tests.browser.conftest import (
    DESKTOP,
    PASSWORD,
    PHONE,
    TIMEOUT_MS,
    AppServer,
    axe_run,
    format_violations,
    sign_in,
)
from tests.fixtures.alerts import insert_alert
from tests.fixtures.services import SeededRegistry

pytestmark = pytest.mark.browser

RESIDENCE = "Lgh 1204"
# What the issue asks: a colleague's accept shows on the other board within a second.
LIVE_MS = 1_000

# The page sees a hidden tab when the test says so: document.visibilityState is stubbed and a
# visibilitychange dispatched (a headless tab is never hidden by itself). The Notification
# class is wrapped so that every notification shown, and closed, is recorded; and every
# oscillator the board starts (a beep) is counted.
SPIES = """
(() => {
  let hidden = false;
  Object.defineProperty(Document.prototype, "visibilityState", {
    configurable: true, get: () => (hidden ? "hidden" : "visible"),
  });
  Object.defineProperty(Document.prototype, "hidden", {configurable: true, get: () => hidden});
  window.__setHidden = (value) => {
    hidden = value;
    document.dispatchEvent(new Event("visibilitychange"));
  };
  window.__shown = [];
  window.__closed = [];
  if (window.Notification) {
    const Real = window.Notification;
    class Spy extends Real {
      constructor(title, options) {
        super(title, options);
        window.__shown.push({title, body: options?.body ?? "", tag: options?.tag ?? ""});
      }
      close() {
        window.__closed.push(this.tag);
        super.close();
      }
    }
    window.Notification = Spy;
  }
  window.__oscillators = 0;
  const create = AudioContext.prototype.createOscillator;
  AudioContext.prototype.createOscillator = function () {
    window.__oscillators += 1;
    return create.call(this);
  };
})();
"""

# Notifications neither allowed nor blocked yet; asking blocks them (as a user's "Block").
NOT_ASKED = """
(() => {
  let permission = "default";
  window.__asked = 0;
  Object.defineProperty(Notification, "permission", {configurable: true, get: () => permission});
  Notification.requestPermission = async () => {
    window.__asked += 1;
    permission = "denied";
    return permission;
  };
})();
"""


@dataclass(frozen=True)
class Team:
    """Two caregivers of the seeded organisation, each with a board open."""

    anna: str
    bo: str
    anna_page: Page
    bo_page: Page


@pytest.fixture
def residence(seeded: SeededRegistry, database_url: str) -> str:
    """Lgh 1204 at the seeded site, with the first alarm button in it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "WITH r AS (INSERT INTO residences (site_id, label) VALUES (%s, %s) RETURNING id)"
            " UPDATE devices SET residence_id = (SELECT id FROM r) WHERE id = %s",
            (seeded.site_id, RESIDENCE, seeded.device("alarm_button")),
        )
    return RESIDENCE


@pytest.fixture
def colleague(seeded: SeededRegistry, database_url: str, test_token: str) -> str:
    """Bo, a second caregiver of the seeded organisation."""
    username = f"bo-{test_token}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, org_id, role, password_hash, display_name)"
            " VALUES (%s, %s, 'caregiver', %s, 'Bo')",
            (username, seeded.org_id, hash_password(PASSWORD)),
        )
    return username


def new_context(
    browser: Browser, viewport: dict[str, int] = PHONE, *, notifications: bool = False
) -> BrowserContext:
    """A fresh context as conftest makes them (Swedish, not Stockholm's zone), phone-sized."""
    context = browser.new_context(
        viewport=viewport,  # type: ignore[arg-type]  # a ViewportSize TypedDict
        locale="sv-SE",
        timezone_id="America/New_York",
        permissions=["notifications"] if notifications else [],
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


@pytest.fixture
def team(
    chromium: Browser, app_server: AppServer, caregiver: str, colleague: str
) -> Iterator[Team]:
    """Anna's and Bo's boards, each in a browser of its own, signed in and live."""
    contexts = [new_context(chromium), new_context(chromium)]
    try:
        pages = [context.new_page() for context in contexts]
        for page, username in zip(pages, (caregiver, colleague), strict=True):
            sign_in(page, app_server.url, username)
        yield Team(caregiver, colleague, pages[0], pages[1])
    finally:
        for context in contexts:
            context.close()


def card(page: Page, alert_id: int) -> Locator:
    return page.locator(f"li.card[data-id='{alert_id}']")


def post(page: Page, base_url: str, path: str, body: dict[str, Any] | None = None) -> int:
    """POST to the API as the page's user (its session cookie); the status."""
    response = page.request.post(
        f"{base_url}{path}",
        data=json.dumps(body or {}),
        headers={"Content-Type": "application/json", "X-Requested-With": "carewatch"},
    )
    return response.status


def alarm(database_url: str, seeded: SeededRegistry, index: int = 0) -> int:
    """An alarm press of alarm button ``index``, written as the gateway writes it."""
    device = seeded.device("alarm_button", index)
    return insert_alert(database_url, device, "alarm_pressed", "critical").alert_id


def test_a_colleagues_accept_shows_on_the_other_board_within_a_second(
    team: Team, app_server: AppServer, seeded: SeededRegistry, database_url: str, residence: str
) -> None:
    """Both boards show the alarm red with its residence first; Anna takes it and Bo's card
    turns yellow, "Anna has it", without its Accept button, within a second."""
    alert_id = alarm(database_url, seeded)
    anna, bo = card(team.anna_page, alert_id), card(team.bo_page, alert_id)
    for the_card in (anna, bo):
        expect(the_card.locator(".resp-place")).to_have_text(residence)
        expect(the_card.locator(".rule")).to_have_text("Trygghetslarm utlöst")
        expect(the_card.locator(".resp-status")).to_have_text("Ingen har tagit larmet")
        expect(the_card).to_have_class("card response sev-critical resp-open")
        # Residence before the rule, before the state: what a glance needs, in that order.
        heading = the_card.get_by_role("heading", level=2)
        expect(heading).to_have_text(f"{residence} Trygghetslarm utlöst")

    anna.get_by_role("button", name="Ta larmet").click()
    expect(bo.locator(".resp-status")).to_have_text(f"{team.anna} har larmet", timeout=LIVE_MS)
    expect(bo).to_have_class("card response sev-critical resp-accepted", timeout=LIVE_MS)
    expect(bo.get_by_role("button", name="Ta larmet")).to_be_hidden()
    expect(bo.get_by_role("button", name="På plats")).to_be_visible()
    # Only the one who has it may pass it on.
    expect(bo.get_by_role("button", name="Skicka vidare")).to_be_hidden()
    expect(anna.locator(".resp-status")).to_have_text("Du har larmet")
    expect(anna.get_by_role("button", name="Skicka vidare")).to_be_visible()
    expect(team.bo_page.locator("#announcer")).to_have_text(
        f"{team.anna} har tagit larmet: {residence}"
    )


def test_on_site_then_close_with_an_action_and_a_note(
    team: Team, app_server: AppServer, seeded: SeededRegistry, database_url: str, residence: str
) -> None:
    """Accepted, the close form offers only what needs no arrival; on site (contact made),
    "Help given" with a note closes it: the card leaves both boards and the API shows the
    response closed."""
    alert_id = alarm(database_url, seeded)
    anna, bo = card(team.anna_page, alert_id), card(team.bo_page, alert_id)
    anna.get_by_role("button", name="Ta larmet").click()
    expect(anna.locator(".resp-status")).to_have_text("Du har larmet")

    anna.get_by_role("button", name="Avsluta", exact=True).click()
    expect(anna.get_by_role("button", name="Avsluta", exact=True)).to_have_attribute(
        "aria-expanded", "true"
    )
    expect(anna.get_by_label("Hjälp given")).to_be_disabled()
    expect(anna.get_by_label("Falsklarm")).to_be_enabled()
    expect(anna.get_by_label("Falsklarm")).to_be_focused()
    anna.get_by_role("button", name="Avbryt").click()
    expect(anna.locator(".resp-close-form")).to_be_hidden()

    anna.get_by_role("button", name="På plats").click()
    expect(anna.locator(".resp-status")).to_contain_text(f"{team.anna} på plats sedan")
    expect(bo.locator(".resp-status")).to_contain_text(f"{team.anna} på plats sedan")
    expect(anna).to_have_class("card response sev-critical resp-on_site")
    contact = anna.get_by_role("group", name="Fick du kontakt med personen?")
    contact.get_by_role("button", name="Ja, kontakt").click()
    expect(contact.get_by_role("button", name="Ja, kontakt")).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(contact.get_by_role("button", name="Ingen kontakt")).to_have_attribute(
        "aria-pressed", "false"
    )

    anna.get_by_role("button", name="Avsluta", exact=True).click()
    anna.get_by_label("Hjälp given").check()
    anna.get_by_label("Anteckning (valfri)").fill("Hjälpt upp ur sängen")
    anna.get_by_role("button", name="Avsluta larmet").click()
    expect(anna).to_have_count(0)
    expect(bo).to_have_count(0, timeout=LIVE_MS)

    answer = team.anna_page.request.get(f"{app_server.url}/api/v1/alerts/{alert_id}")
    assert answer.status == 200
    alert = answer.json()
    response = alert["response"]
    assert alert["state"] == "resolved"
    assert (response["state"], response["holder"], response["on_site_by"]) == (
        "closed",
        team.anna,
        team.anna,
    )
    assert (response["on_site_source"], response["contact_made"]) == ("staff", True)
    assert (response["closed_by"], response["action"], response["note"]) == (
        team.anna,
        "help_given",
        "Hjälpt upp ur sängen",
    )


def test_taking_what_a_colleague_took_first_says_who_has_it(
    team: Team, app_server: AppServer, seeded: SeededRegistry, database_url: str, residence: str
) -> None:
    """Bo presses Accept while Anna's acceptance reaches the server first: Bo's card says, in
    words, that Anna has already taken it, and shows it taken."""
    alert_id = alarm(database_url, seeded)
    bo = card(team.bo_page, alert_id)
    expect(bo.get_by_role("button", name="Ta larmet")).to_be_visible()

    def anna_first(route: Route) -> None:
        assert post(team.anna_page, app_server.url, f"/api/v1/alerts/{alert_id}/accept") == 200
        route.continue_()

    team.bo_page.route(f"**/api/v1/alerts/{alert_id}/accept", anna_first)
    bo.get_by_role("button", name="Ta larmet").click()
    expect(bo.get_by_role("alert")).to_have_text(f"{team.anna} har redan tagit larmet.")
    expect(bo.locator(".resp-status")).to_have_text(f"{team.anna} har larmet")
    expect(bo.get_by_role("button", name="Ta larmet")).to_be_hidden()
    # The focus left with the button that went: it is on the card's next move.
    expect(bo.get_by_role("button", name="På plats")).to_be_focused()


def test_forward_to_a_colleague_and_back_to_the_team(
    team: Team, app_server: AppServer, seeded: SeededRegistry, database_url: str, residence: str
) -> None:
    """Anna forwards by username (an unknown one is said so): Bo sees it offered to him, Anna
    sees whom it was offered to; Bo sends it back to the team and it is nobody's again."""
    alert_id = alarm(database_url, seeded)
    anna, bo = card(team.anna_page, alert_id), card(team.bo_page, alert_id)
    anna.get_by_role("button", name="Skicka vidare").click()
    to = anna.get_by_label("Kollegans användarnamn")
    expect(to).to_be_focused()
    anna.get_by_role("button", name="Skicka till kollegan").click()
    expect(anna.get_by_role("alert")).to_have_text(
        "Skriv kollegans användarnamn, eller välj Tillbaka till teamet."
    )
    to.fill("nobody-here")
    anna.get_by_role("button", name="Skicka till kollegan").click()
    expect(anna.get_by_role("alert")).to_have_text(
        "Ingen kollega med det användarnamnet kan ta larm här."
    )
    to.fill(team.bo)
    anna.get_by_role("button", name="Skicka till kollegan").click()
    expect(anna.locator(".resp-status")).to_have_text(f"Erbjudet {team.bo}")
    expect(anna.locator(".resp-forward-form")).to_be_hidden()
    expect(bo.locator(".resp-status")).to_have_text("Erbjudet dig", timeout=LIVE_MS)
    expect(bo).to_have_class("card response sev-critical resp-forwarded")

    bo.get_by_role("button", name="Skicka vidare").click()
    bo.get_by_role("button", name="Tillbaka till teamet").click()
    expect(bo.locator(".resp-status")).to_have_text("Ingen har tagit larmet")
    expect(anna.locator(".resp-status")).to_have_text("Ingen har tagit larmet", timeout=LIVE_MS)


def test_next_escalation_step_counts_down(
    team: Team, seeded: SeededRegistry, database_url: str, residence: str
) -> None:
    """An alarm nobody has taken shows its next escalation step and a countdown that moves
    (the site has no second group: the step says so, issue 12); once someone has it, the step
    that waited for that is gone."""
    alert_id = alarm(database_url, seeded)
    next_step = card(team.anna_page, alert_id).locator(".resp-next")
    expect(next_step).to_contain_text("Nästa steg om ")
    expect(next_step).to_contain_text("personalen larmas igen (ingen andra grupp vald)")
    first = next_step.inner_text()
    expect(next_step).not_to_have_text(first, timeout=3_000)
    card(team.anna_page, alert_id).get_by_role("button", name="Ta larmet").click()
    expect(next_step).not_to_contain_text("personalen larmas igen")


def test_the_promise_counts_down_to_contact_then_to_on_site(
    team: Team, seeded: SeededRegistry, database_url: str, residence: str, axe_source: str
) -> None:
    """Where the site promises contact within 2 minutes and someone on site within 15, an alarm
    counts down to contact, every second, and once taken to on site; one older than the promise
    says "over by" in words. Screen readers get the deadline's clock time, never a ticking
    text; axe finds nothing; in English too. Without a promise, no countdown."""
    page = team.anna_page
    unpromised = alarm(database_url, seeded, 2)
    expect(card(page, unpromised).locator(".resp-status")).to_have_text("Ingen har tagit larmet")
    expect(card(page, unpromised).locator(".resp-promise")).to_be_hidden()

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE sites SET contact_promise_s = 120, on_site_promise_s = 900 WHERE id = %s",
            (seeded.site_id,),
        )
    alert_id = alarm(database_url, seeded)
    three_minutes_ago = datetime.now(UTC) - timedelta(minutes=3)
    late = insert_alert(
        database_url,
        seeded.device("alarm_button", 1),
        "alarm_pressed",
        "critical",
        opened_at=three_minutes_ago,
    ).alert_id

    promise = card(page, alert_id).locator(".resp-promise")
    clock = promise.locator(".resp-promise-clock")
    expect(clock).to_have_text(re.compile(r"^Kontakt lovad: [12]:\d\d kvar$"))
    first = clock.inner_text()
    expect(clock).not_to_have_text(first, timeout=3_000)
    # Nothing announced each second: the ticking text is hidden from screen readers, which
    # read a label that changes only with the promise, in no live region.
    expect(clock).to_have_attribute("aria-hidden", "true")
    expect(promise.locator(".resp-promise-label")).to_contain_text("Kontakt lovad senast ")
    assert promise.evaluate("n => n.closest('[aria-live]:not([aria-live=off])')") is None

    missed = card(page, late).locator(".resp-promise")
    expect(missed.locator(".resp-promise-clock")).to_have_text(
        re.compile(r"^Kontakt lovad: över med 1:\d\d$")
    )
    expect(missed).to_have_class(re.compile(r"\bover\b"))
    expect(missed.locator(".resp-promise-label")).to_contain_text("tiden har gått ut")

    card(page, alert_id).get_by_role("button", name="Ta larmet").click()
    expect(clock).to_have_text(re.compile(r"^På plats lovat: 1[45]:\d\d kvar$"))
    violations = axe_run(page, axe_source)
    assert violations == [], format_violations(violations)

    page.get_by_role("button", name="Switch to English").click()
    expect(clock).to_have_text(re.compile(r"^On site promised: 1[45]:\d\d left$"))
    expect(missed.locator(".resp-promise-clock")).to_have_text(
        re.compile(r"^Contact promised: over by 1:\d\d$")
    )


def test_a_hidden_board_notifies_and_rings_until_the_alarm_is_taken(
    chromium: Browser,
    app_server: AppServer,
    caregiver: str,
    colleague: str,
    seeded: SeededRegistry,
    database_url: str,
    residence: str,
) -> None:
    """With notifications allowed and the sound on, a hidden board shows a notification for an
    alarm nobody has taken and beeps again and again; a colleague's accept stops both. Seen
    again, the board stops as well."""
    context = new_context(chromium, notifications=True)
    try:
        page = context.new_page()
        page.add_init_script(SPIES)
        sign_in(page, app_server.url, caregiver)
        # Allowed already: nothing to ask, nothing to explain.
        expect(page.locator("#notify-panel")).to_be_hidden()
        page.get_by_role("button", name="Ljud av").click()
        page.evaluate("window.__setHidden(true)")

        taken = alarm(database_url, seeded)
        page.wait_for_function("() => window.__shown.length === 1")
        (shown,) = page.evaluate("window.__shown")
        assert shown == {
            "title": f"Larm: {residence}",
            "body": f"Trygghetslarm utlöst, Solgården {seeded.org_id.removeprefix('org-')}."
            " Ingen har tagit larmet.",
            "tag": f"carewatch-alert-{taken}",
        }
        expect(page.locator("body")).to_have_attribute("data-ringing", "true")
        beeps = page.evaluate("window.__oscillators")
        # Every RING_MS (3 s) a beep, for as long as nobody has it.
        page.wait_for_function("n => window.__oscillators >= n", arg=beeps + 2, timeout=8_000)

        bo_context = new_context(chromium)
        try:
            bo = bo_context.new_page()
            sign_in(bo, app_server.url, colleague)
            assert post(bo, app_server.url, f"/api/v1/alerts/{taken}/accept") == 200
        finally:
            bo_context.close()
        expect(page.locator("body")).to_have_attribute("data-ringing", "false", timeout=LIVE_MS)
        assert page.evaluate("window.__closed") == [f"carewatch-alert-{taken}"]
        beeps = page.evaluate("window.__oscillators")
        page.wait_for_timeout(3_500)
        assert page.evaluate("window.__oscillators") == beeps, "still ringing after the accept"

        # A second alarm rings the hidden board again; seeing the board stops it.
        second = alarm(database_url, seeded, 1)
        page.wait_for_function("() => window.__shown.length === 2")
        assert page.evaluate("window.__shown[1].tag") == f"carewatch-alert-{second}"
        expect(page.locator("body")).to_have_attribute("data-ringing", "true")
        page.evaluate("window.__setHidden(false)")
        expect(page.locator("body")).to_have_attribute("data-ringing", "false")
        assert page.evaluate("window.__closed")[-1] == f"carewatch-alert-{second}"
    finally:
        context.close()


def test_notifications_are_asked_for_only_by_the_button_and_a_refusal_is_explained(
    chromium: Browser, app_server: AppServer, caregiver: str
) -> None:
    """The board never asks on load: it explains, and asks when the button is pressed; a
    refusal says how to allow them later and the button goes."""
    context = new_context(chromium, DESKTOP)
    try:
        page = context.new_page()
        page.add_init_script(NOT_ASKED)
        sign_in(page, app_server.url, caregiver)
        panel = page.locator("#notify-panel")
        expect(panel).to_be_visible()
        expect(panel).to_contain_text("Få en avisering på enheten när ett larm")
        assert page.evaluate("window.__asked") == 0
        page.get_by_role("button", name="Slå på aviseringar").click()
        expect(panel).to_contain_text("Aviseringar är blockerade för den här sidan.")
        expect(page.get_by_role("button", name="Slå på aviseringar")).to_be_hidden()
        assert page.evaluate("window.__asked") == 1
        page.get_by_role("button", name="Switch to English").click()
        expect(panel).to_contain_text("Notifications are blocked for this page.")
    finally:
        context.close()


def test_a_manager_sees_the_response_without_its_buttons(
    chromium: Browser,
    app_server: AppServer,
    seeded: SeededRegistry,
    database_url: str,
    test_token: str,
    residence: str,
) -> None:
    """Who may not act sees who has the alarm, and no buttons, and is not asked about
    notifications. (A manager: a technician's board no longer shows alarms at all, issue 12.)"""
    username = f"mgr-{test_token}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, org_id, role, password_hash)"
            " VALUES (%s, %s, 'manager', %s)",
            (username, seeded.org_id, hash_password(PASSWORD)),
        )
    context = new_context(chromium)
    try:
        page = context.new_page()
        sign_in(page, app_server.url, username)
        the_card = card(page, alarm(database_url, seeded))
        expect(the_card.locator(".resp-status")).to_have_text("Ingen har tagit larmet")
        expect(the_card.get_by_role("button")).to_have_count(0)
        expect(page.locator("#notify-panel")).to_be_hidden()
    finally:
        context.close()


def test_every_state_fits_a_phone_one_handed(
    team: Team, app_server: AppServer, seeded: SeededRegistry, database_url: str, residence: str
) -> None:
    """At 390x844, with cards open, forwarded, accepted and on site and a close form open: no
    sideways scrolling, every button and choice at least 44 px high, waiting alarms first."""
    ids = board_in_every_state(team, app_server, seeded, database_url)
    page = team.anna_page
    expect(card(page, ids.on_site).locator(".resp-status")).to_contain_text("på plats")
    card(page, ids.on_site).get_by_role("button", name="Avsluta", exact=True).click()
    scroll_width, client_width = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert scroll_width <= client_width
    targets = page.locator("button, .resp-choice, input").evaluate_all(
        "nodes => nodes.filter(n => n.offsetParent !== null && n.type !== 'radio')"
        ".map(n => [Math.round(n.getBoundingClientRect().height), n.textContent || n.id])"
    )
    assert targets
    assert all(height >= 44 for height, _ in targets), targets
    order = page.locator("li.card").evaluate_all("cards => cards.map(c => Number(c.dataset.id))")
    assert set(order[:2]) == {ids.open, ids.forwarded}


@dataclass(frozen=True)
class ResponseBoard:
    """The alarms of :func:`board_in_every_state`, by the state their response is in."""

    open: int
    forwarded: int
    accepted: int
    on_site: int


def board_in_every_state(
    team: Team, app_server: AppServer, seeded: SeededRegistry, database_url: str
) -> ResponseBoard:
    """Four alarms on the team's boards: nobody's, offered to Bo, Anna's, Anna's on site."""
    base = app_server.url
    waiting, forwarded, accepted = (alarm(database_url, seeded, index) for index in (0, 1, 2))
    # A door left open at night is a response too (devices/response.toml).
    door = insert_alert(database_url, seeded.device("door_lock"), "door_left_open", "high")
    ids = ResponseBoard(waiting, forwarded, accepted, door.alert_id)
    anna = team.anna_page
    assert post(anna, base, f"/api/v1/alerts/{ids.forwarded}/forward", {"to": team.bo}) == 200
    assert post(anna, base, f"/api/v1/alerts/{ids.accepted}/accept") == 200
    assert post(anna, base, f"/api/v1/alerts/{ids.on_site}/accept") == 200
    assert post(anna, base, f"/api/v1/alerts/{ids.on_site}/on-site", {"contact_made": True}) == 200
    for page in (team.anna_page, team.bo_page):
        expect(page.locator("li.card.response")).to_have_count(4)
        expect(card(page, ids.on_site)).to_have_class("card response sev-high resp-on_site")
    return ids
