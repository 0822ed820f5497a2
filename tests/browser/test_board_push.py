"""Web Push on the board (+#12): the button registers the service worker and hands this
phone's subscription to the API, the notifier's push for an alarm reaches the (local) push
service decryptable, and the service worker shows a pushed alarm in the user's words; a
technician's board offers it too; signing out removes the subscription (issue 12).

Headless Chromium has no push service to subscribe with, so ``PushManager.subscribe`` is
replaced by one that answers a subscription at the test's local push service (whose keys the
test holds) and records the key it was asked to subscribe with. Everything else is real: the
service worker's registration from ``/sw.js`` under the pages' CSP, the API, the notifier, the
encryption and the VAPID signature. The service worker's push handler is driven through the
DevTools protocol's ``ServiceWorker.deliverPushMessage``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from carewatch.passwords import hash_password
from carewatch.processes import free_port
from carewatch.settings import Settings
from tests.browser.conftest import PASSWORD, PHONE, TIMEOUT_MS, AppServer, sign_in
from tests.fixtures.alerts import insert_alert
from tests.fixtures.push import PushService, Subscriber, VapidKeys, unb64url
from tests.fixtures.services import MakeSettings, SeededRegistry
from tests.fixtures.webhooks import NotifierProcess

pytestmark = pytest.mark.browser

BUTTON = "Få larm på den här telefonen när tavlan är stängd"

FAKE_PUSH_MANAGER = """
(() => {
  const json = %s;
  let current = null;
  window.__serverKeys = [];
  const subscription = () => ({
    endpoint: json.endpoint,
    toJSON: () => json,
    unsubscribe: async () => {
      current = null;
      sessionStorage.setItem("unsubscribed", json.endpoint);  // outlives the sign-out's page
      return true;
    },
  });
  PushManager.prototype.subscribe = async function (options) {
    const key = new Uint8Array(options.applicationServerKey);
    window.__serverKeys.push(btoa(String.fromCharCode(...key)));
    current = subscription();
    return current;
  };
  PushManager.prototype.getSubscription = async function () { return current; };
})();
"""


@pytest.fixture
def vapid_keys() -> VapidKeys:
    return VapidKeys.generate()


@pytest.fixture
def settings(make_settings: MakeSettings, database_url: str, vapid_keys: VapidKeys) -> Settings:
    """The app and the notifier with a VAPID key; push endpoints on loopback allowed."""
    return make_settings(
        database_url,
        vapid_private_key=vapid_keys.private_pem,
        vapid_subject="mailto:drift@kommun.example",
        push_allow_http_loopback=True,
        notifier_metrics_port=free_port(),
        notifier_poll_s=0.1,
    )


@pytest.fixture
def push_service(vapid_keys: VapidKeys) -> Iterator[PushService]:
    with PushService(vapid_keys.public_b64) as service:
        yield service


@pytest.fixture
def caregiver(seeded: SeededRegistry, database_url: str, test_token: str) -> str:
    """A caregiver of the seeded organisation (all its sites)."""
    username = f"cilla-{test_token}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, org_id, role, password_hash)"
            " VALUES (%s, %s, 'caregiver', %s)",
            (username, seeded.org_id, hash_password(PASSWORD)),
        )
    return username


def phone_context(chromium: Browser) -> BrowserContext:
    context = chromium.new_context(
        viewport=PHONE,  # type: ignore[arg-type]  # a ViewportSize TypedDict
        locale="sv-SE",
        timezone_id="America/New_York",
        permissions=["notifications"],
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


def subscribe_on_board(page: Page, app_server: AppServer, user: str, phone: Subscriber) -> None:
    """Sign in with the fake push manager and press the board's button."""
    page.add_init_script(FAKE_PUSH_MANAGER % json.dumps(phone.json()))
    sign_in(page, app_server.url, user)
    panel = page.locator("#notify-panel")
    expect(panel).to_be_visible()
    page.get_by_role("button", name=BUTTON).click()
    expect(panel).to_be_hidden()


def test_the_button_registers_the_worker_and_the_alarm_is_pushed_to_this_phone(
    chromium: Browser,
    app_server: AppServer,
    settings: Settings,
    push_service: PushService,
    vapid_keys: VapidKeys,
    caregiver: str,
    seeded: SeededRegistry,
    database_url: str,
    tmp_path: Path,
) -> None:
    """The button registers /sw.js (scope /), subscribes with the server's VAPID key and posts
    the subscription as the caregiver's; an alarm then reaches the push service signed and
    decryptable."""
    phone = push_service.subscriber("cilla")
    context = phone_context(chromium)
    try:
        page = context.new_page()
        subscribe_on_board(page, app_server, caregiver, phone)
        worker = page.evaluate(
            "navigator.serviceWorker.ready.then(r => [r.scope, r.active.scriptURL])"
        )
        assert worker == [f"{app_server.url}/", f"{app_server.url}/sw.js"]
        key = base64.b64encode(unb64url(vapid_keys.public_b64)).decode()
        assert page.evaluate("window.__serverKeys") == [key]
    finally:
        context.close()
    with psycopg.connect(database_url) as conn:
        owners = conn.execute(
            "SELECT u.username FROM push_subscriptions p JOIN users u ON u.id = p.user_id"
            " WHERE p.endpoint = %s",
            (phone.endpoint,),
        ).fetchall()
    assert owners == [(caregiver,)]

    served = httpx.get(f"{app_server.url}/sw.js")
    assert served.headers["content-type"].startswith("text/javascript")
    assert served.headers["service-worker-allowed"] == "/"
    assert "default-src 'self'" in served.headers["content-security-policy"]

    with NotifierProcess(settings, tmp_path / "notifier.log"):
        alert_id = insert_alert(
            database_url, seeded.device("alarm_button"), "alarm_pressed", "critical"
        ).alert_id
        deadline = time.monotonic() + 10
        while not (pushed := push_service.received(phone)):
            assert time.monotonic() < deadline, "no push arrived"
            time.sleep(0.05)
    (push,) = pushed
    assert push.refusal is None
    assert push.payload is not None
    assert (push.payload["alert_id"], push.payload["rule"]) == (alert_id, "alarm_pressed")


def test_the_service_worker_shows_a_pushed_alarm_in_the_users_words(
    chromium: Browser, app_server: AppServer, push_service: PushService, caregiver: str
) -> None:
    """A push delivered to the worker becomes a notification: the rule in the user's language
    and the residence as its title, the site and "nobody has it" as its body, the board's tag."""
    context = phone_context(chromium)
    try:
        page = context.new_page()
        subscribe_on_board(page, app_server, caregiver, push_service.subscriber("cilla-sw"))
        cdp = context.new_cdp_session(page)
        registrations: list[dict[str, Any]] = []
        cdp.on(
            "ServiceWorker.workerRegistrationUpdated",
            lambda event: registrations.extend(event["registrations"]),
        )
        cdp.send("ServiceWorker.enable")
        deadline = time.monotonic() + 5
        while not registrations:
            assert time.monotonic() < deadline, "no registration reported"
            page.wait_for_timeout(50)
        registration_id = next(
            r["registrationId"] for r in registrations if r["scopeURL"] == f"{app_server.url}/"
        )
        for event, alert_id in (("alert.opened", 41), ("alert.escalated", 42)):
            payload = {
                "id": alert_id,
                "alert_id": alert_id,
                "event": event,
                "step": None,
                "rule": "alarm_pressed",
                "residence_label": "Lgh 1204",
                "site_name": "Solgården",
                "severity": "critical",
                "lang": "sv",
            }
            cdp.send(
                "ServiceWorker.deliverPushMessage",
                {
                    "origin": app_server.url,
                    "registrationId": registration_id,
                    "data": json.dumps(payload),
                },
            )
        shown_js = (
            "navigator.serviceWorker.ready.then(r => r.getNotifications()).then(ns =>"
            " ns.map(n => ({title: n.title, body: n.body, tag: n.tag})))"
        )
        deadline = time.monotonic() + 5
        while len(shown := page.evaluate(shown_js)) < 2:
            assert time.monotonic() < deadline, f"shown: {shown}"
            page.wait_for_timeout(50)
        shown.sort(key=lambda n: n["tag"])
        assert shown == [
            {
                "title": "Trygghetslarm utlöst: Lgh 1204",
                "body": "Solgården. Ingen har tagit larmet.",
                "tag": "carewatch-alert-41",
            },
            {
                "title": "Trygghetslarm utlöst: Lgh 1204",
                "body": "Solgården. Fortfarande har ingen tagit larmet.",
                "tag": "carewatch-alert-42",
            },
        ]
    finally:
        context.close()


def _owners(database_url: str, endpoint: str) -> list[tuple[str, bool]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT u.username, p.disabled_at IS NULL FROM push_subscriptions p"
            " JOIN users u ON u.id = p.user_id WHERE p.endpoint = %s",
            (endpoint,),
        ).fetchall()


def test_signing_out_removes_this_phones_subscription(
    chromium: Browser,
    app_server: AppServer,
    push_service: PushService,
    caregiver: str,
    database_url: str,
) -> None:
    """A shared phone stops getting the person's alarms at sign-out: the board deletes the
    subscription at the API and unsubscribes the browser, then signs out."""
    phone = push_service.subscriber("cilla-leaves")
    context = phone_context(chromium)
    try:
        page = context.new_page()
        subscribe_on_board(page, app_server, caregiver, phone)
        assert _owners(database_url, phone.endpoint) == [(caregiver, True)]
        page.get_by_role("button", name="Logga ut").click()
        page.wait_for_url(f"{app_server.url}/login")
        assert page.evaluate("sessionStorage.getItem('unsubscribed')") == phone.endpoint
    finally:
        context.close()
    assert _owners(database_url, phone.endpoint) == []


def test_a_technicians_board_offers_pushes_for_device_faults(
    chromium: Browser,
    app_server: AppServer,
    push_service: PushService,
    seeded: SeededRegistry,
    database_url: str,
    test_token: str,
) -> None:
    """Technicians act on device faults: their board offers the phone's pushes (without the
    alarm notifications' text, which is for care staff) and the subscription is theirs."""
    username = f"tove-{test_token}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, org_id, role, password_hash)"
            " VALUES (%s, %s, 'technician', %s)",
            (username, seeded.org_id, hash_password(PASSWORD)),
        )
    phone = push_service.subscriber("tove")
    context = phone_context(chromium)
    try:
        page = context.new_page()
        page.add_init_script(FAKE_PUSH_MANAGER % json.dumps(phone.json()))
        sign_in(page, app_server.url, username)
        expect(page.locator("#notify-text")).to_be_hidden()
        page.get_by_role("button", name=BUTTON).click()
        expect(page.locator("#notify-panel")).to_be_hidden()
    finally:
        context.close()
    assert _owners(database_url, phone.endpoint) == [(username, True)]
