"""The admins' webhook pages (+#12), over HTTP against a real database: ``/webhooks`` lists the
organisation's webhooks with their last delivery and the last day's counts, ``/webhooks/{id}``
their delivery log; never another organisation's webhook, never a secret, not for care staff."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest

from carewatch.settings import Settings
from dashboards.kit import strings
from dashboards.webhooks import LOG_LIMIT
from tests.fixtures.api_client import (
    ApiResponse,
    add_device,
    add_org_with_sites,
    add_session,
    add_user,
    call,
    module_database,
)
from tests.fixtures.api_server import running_api
from tests.fixtures.webhook_log import (
    RECEIVER_HOST,
    SECRET,
    WebhookLog,
    add_delivered,
    add_webhook,
    add_webhook_with_log,
)
from tools.local.postgres import PostgresInstance

# A dead letter is said in words, not by colour alone.
DEAD_SV = strings()["sv"]["webhooks_state"]["dead"]
DEAD_EN = strings()["en"]["webhooks_state"]["dead"]
USERS = {
    "admin": ("kommun", "admin"),
    "caregiver": ("kommun", "caregiver"),
    "other-admin": ("annan", "admin"),
}


@dataclass(frozen=True)
class World:
    base: str
    database_url: str
    cookies: dict[str, str]  # session cookie by user
    log: WebhookLog  # kommun's webhook, with a delivered, a pending and a dead delivery
    unused: int  # kommun's webhook without deliveries
    others: int  # annan's webhook

    def page(self, user: str, path: str) -> ApiResponse:
        return call("GET", f"{self.base}{path}", cookie=self.cookies[user])


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[World]:
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a")
            add_org_with_sites(conn, "annan", "site-c")
            add_device(conn, "lock-01", "site-a")
            add_device(conn, "lock-02", "site-c")
            cookies = {
                name: add_session(conn, add_user(conn, name, org, role), "session")
                for name, (org, role) in USERS.items()
            }
        log = add_webhook_with_log(database_url, "kommun", "lock-01", "Larmcentralen")
        unused = add_webhook(database_url, "kommun", "")
        others = add_webhook_with_log(database_url, "annan", "lock-02", "Annans central")
        with running_api(Settings(database_url=database_url)) as base:
            yield World(base, database_url, cookies, log, unused, others.webhook_id)


def text(response: ApiResponse) -> str:
    return response.body.decode()


def test_an_admin_sees_the_organisations_webhooks_with_counts(world: World) -> None:
    """Both of the organisation's webhooks, by name (or number) and host; the last delivery
    (dead, said in words) and the last day's counts; the other organisation's not at all."""
    response = world.page("admin", "/webhooks")
    assert response.status == 200, response.body
    html = text(response)
    assert f'data-webhook="{world.log.webhook_id}"' in html
    assert f'data-webhook="{world.unused}"' in html
    assert f'href="/webhooks/{world.log.webhook_id}"' in html
    assert f'data-webhook="{world.others}"' not in html
    assert "Annans central" not in html
    assert RECEIVER_HOST in html
    assert f">{DEAD_SV}</strong>: connection refused" in html  # the last delivery: dead
    assert '<td class="delivered">1</td>' in html
    assert '<td class="pending">1</td>' in html
    assert '<strong class="tag tag-escalated">1</strong>' in html  # one dead in 24 h
    assert f"Webhook {world.unused}" in html
    assert "Ingen leverans ännu" in html
    assert 'href="/webhooks" aria-current="page"' in html  # in the admin's navigation


def test_an_admin_reads_a_webhooks_delivery_log(world: World) -> None:
    """Newest first: the dead letter marked in words, the retry with its status, error and
    next attempt, the delivery with its status; in English on asking."""
    response = world.page("admin", f"/webhooks/{world.log.webhook_id}")
    assert response.status == 200, response.body
    html = text(response)
    rows = [
        f'data-delivery="{d}"' for d in (world.log.dead, world.log.pending, world.log.delivered)
    ]
    positions = [html.index(row) for row in rows]
    assert positions == sorted(positions)
    assert "<h2>Leveranslogg: Larmcentralen</h2>" in html
    assert "Leveranser: 3" in html
    assert f">{DEAD_SV}</strong>: connection refused" in html
    assert "Försöker igen: HTTP 503, HTTP 503 from the receiver" in html
    assert "Levererad: HTTP 200" in html
    english = text(world.page("admin", f"/webhooks/{world.log.webhook_id}?lang=en"))
    assert f">{DEAD_EN}</strong>: connection refused" in english
    assert 'href="/webhooks?lang=en"' in english


def test_a_long_log_shows_the_latest_deliveries_and_says_so(world: World) -> None:
    """More deliveries than the page shows: the newest LOG_LIMIT, and the page says so."""
    webhook_id = add_webhook(world.database_url, "kommun", "Lång logg")
    delivered = add_delivered(world.database_url, webhook_id, "lock-01", LOG_LIMIT + 5)
    html = text(world.page("admin", f"/webhooks/{webhook_id}"))
    assert f"Visar de senaste {LOG_LIMIT} leveranserna." in html
    assert html.count("data-delivery=") == LOG_LIMIT
    assert f'data-delivery="{delivered[-1]}"' in html
    assert f'data-delivery="{delivered[4]}"' not in html


@pytest.mark.parametrize("path", ["/webhooks", "/webhooks/{log}", "/webhooks/{unused}"])
def test_no_page_shows_the_secret_or_the_receivers_path(world: World, path: str) -> None:
    """The secret is never on a page, nor the URL's path and query (some carry a token)."""
    path = path.format(log=world.log.webhook_id, unused=world.unused)
    html = text(world.page("admin", path))
    assert SECRET not in html
    assert "whsec_" not in html
    assert "t0ken-in-path" not in html
    assert "k3y-in-query" not in html


def test_another_organisations_webhook_is_not_found(world: World) -> None:
    """The other organisation's admin: 404 for this webhook, and it is not in their list;
    an id that exists nowhere is 404 too."""
    response = world.page("other-admin", f"/webhooks/{world.log.webhook_id}")
    assert response.status == 404
    assert "connection refused" not in text(response)
    listed = text(world.page("other-admin", "/webhooks"))
    assert f'data-webhook="{world.log.webhook_id}"' not in listed
    assert f'data-webhook="{world.others}"' in listed
    assert world.page("admin", f"/webhooks/{world.others}").status == 404
    assert world.page("admin", "/webhooks/999999999").status == 404


@pytest.mark.parametrize("path", ["/webhooks", "/webhooks/{log}"])
def test_care_staff_are_refused_and_see_no_link(world: World, path: str) -> None:
    """A caregiver gets the 403 page (as for the other admin-only pages), without the log."""
    response = world.page("caregiver", path.format(log=world.log.webhook_id))
    assert response.status == 403
    assert "connection refused" not in text(response)
    assert 'href="/webhooks"' not in text(response)


def test_without_a_session_it_is_the_login_form(world: World) -> None:
    """No session cookie: off to /login, as every page."""
    response = httpx.get(f"{world.base}/webhooks", follow_redirects=False, timeout=10)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
