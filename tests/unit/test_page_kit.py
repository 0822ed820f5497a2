"""The page kit and the mounting of the pages: navigation by role, language choice, the
cross-site check, placeholder filling, and every page's address on the app."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from starlette.requests import Request
from starlette.routing import Match

from carewatch.roles import Role
from dashboards.formatting import DASH, fill, format_duration, kind_title
from dashboards.kit import choose_language, from_our_pages, page_links, strings
from dashboards.pages import mount_pages


def _request(headers: dict[str, str]) -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "path": "/login",
        "query_string": b"",
        "headers": [(key.lower().encode(), value.encode()) for key, value in headers.items()],
        "server": ("carewatch.test", 80),
    }
    return Request(scope)


@pytest.mark.parametrize(
    ("role", "hrefs"),
    [
        pytest.param(Role.CAREGIVER, ["/", "/night-round"], id="caregiver"),
        pytest.param(
            Role.TECHNICIAN, ["/", "/night-round", "/fleet", "/onboarding"], id="technician"
        ),
        pytest.param(
            Role.MANAGER, ["/", "/night-round", "/residences", "/dashboards"], id="manager"
        ),
        pytest.param(
            Role.ADMIN,
            [
                "/",
                "/night-round",
                "/fleet",
                "/onboarding",
                "/residences",
                "/dashboards",
                "/webhooks",
            ],
            id="admin",
        ),
        pytest.param("stranger", [], id="unknown-role"),
    ],
)
def test_page_links_follow_the_role_table(role: str, hrefs: list[str]) -> None:
    """Each role sees links to the pages its role may open, and only those."""
    assert [link["href"] for link in page_links(role)] == hrefs


@pytest.mark.parametrize(
    ("value", "language"),
    [("sv", "sv"), ("en", "en"), ("de", "sv"), (None, "sv"), ("", "sv")],
)
def test_choose_language_falls_back_to_swedish(value: str | None, language: str) -> None:
    """Only the pages' own languages are taken; anything else is Swedish."""
    assert choose_language(value) == language


@pytest.mark.parametrize(
    ("headers", "ours"),
    [
        pytest.param({"sec-fetch-site": "same-origin"}, True, id="fetch-same-origin"),
        pytest.param({"sec-fetch-site": "none"}, True, id="fetch-typed-address"),
        pytest.param({"sec-fetch-site": "cross-site"}, False, id="fetch-cross-site"),
        pytest.param({}, True, id="not-a-browser"),
        pytest.param(
            {"origin": "http://carewatch.test", "host": "carewatch.test"}, True, id="same-origin"
        ),
        pytest.param(
            {"origin": "http://evil.example", "host": "carewatch.test"}, False, id="other-origin"
        ),
    ],
)
def test_from_our_pages(headers: dict[str, str], ours: bool) -> None:
    """A form post counts as ours by Sec-Fetch-Site, else by Origin; no header is no browser."""
    assert from_our_pages(_request(headers)) is ours


def test_fill_and_durations_without_a_value() -> None:
    """Placeholders are filled by name; a missing duration is a dash, not "0 s"."""
    assert fill("{a} och {b}", a="1", b="2") == "1 och 2"
    assert format_duration(None, strings()["sv"]) == DASH
    assert format_duration(-3, strings()["en"]) == "0 s"


def test_kind_title_in_both_languages() -> None:
    """The catalog names a kind in the page's language; an unknown kind is shown as it is."""
    assert kind_title("door_lock", "sv") != kind_title("door_lock", "en")
    assert kind_title("no_such_kind", "sv") == "no_such_kind"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/login"),
        ("POST", "/login"),
        ("POST", "/logout"),
        ("GET", "/night-round"),
        ("GET", "/fleet"),
        ("GET", "/fleet/door-1"),
        ("GET", "/onboarding"),
        ("POST", "/onboarding/device"),
        ("POST", "/onboarding/import"),
        ("GET", "/residences"),
        ("POST", "/residences"),
        ("GET", "/residences/12"),
        ("POST", "/residences/12/plan"),
        ("POST", "/residences/12/absences"),
        ("POST", "/residences/12/absences/3/end"),
        ("GET", "/dashboards"),
        ("GET", "/dashboards/export/alarms.csv"),
        ("GET", "/dashboards/report"),
        ("GET", "/webhooks"),
        ("GET", "/webhooks/7"),
        ("GET", "/static/board.css"),
    ],
)
def test_mount_pages_serves_every_page_and_the_static_files(method: str, path: str) -> None:
    """One call puts every page's address (and /static) on the app."""
    app = FastAPI()
    mount_pages(app)
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    assert any(route.matches(scope)[0] is Match.FULL for route in app.routes)


def test_an_unknown_address_is_no_page() -> None:
    """The check above can fail: nothing answers an address no page has."""
    app = FastAPI()
    mount_pages(app)
    scope = {"type": "http", "method": "GET", "path": "/no-such-page", "root_path": ""}
    assert not any(route.matches(scope)[0] is Match.FULL for route in app.routes)
