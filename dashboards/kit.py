"""The page kit every page builds on: templates, strings, the shell's context and the guard.

The pages are server-rendered shells (Jinja2). Everything they load comes from the app itself:
the Content-Security-Policy below lets the browser load nothing from anywhere else. Who may open
a page is :mod:`carewatch.roles`' table, checked here by :func:`page_user` for every page.
"""

from __future__ import annotations

import functools
import hashlib
import json
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from fastapi import Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from api.auth import UserContext, user_for_token
from api.deps import PoolDep, SettingsDep, same_origin
from api.security import SESSION_COOKIE
from carewatch.roles import Permission, may

PACKAGE_DIR: Final = Path(__file__).resolve().parent
STATIC_DIR: Final = PACKAGE_DIR / "static"
TEMPLATES_DIR: Final = PACKAGE_DIR / "templates"
LANGUAGES: Final = ("sv", "en")
DEFAULT_LANGUAGE: Final = "sv"
# Nothing from another origin, no inline script (the board's config is a JSON data block,
# which is not executed), no framing (clickjacking on the acknowledge button).
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
LOGIN_PATH: Final = "/login"

templates = Jinja2Templates(directory=TEMPLATES_DIR)


@functools.cache
def strings() -> dict[str, Any]:
    """Every text of the pages, by language: one dictionary for the server and board.js."""
    loaded: dict[str, Any] = json.loads((STATIC_DIR / "strings.json").read_text(encoding="utf-8"))
    return loaded


@functools.cache
def static_url(name: str) -> str:
    """``/static/<name>?v=<content hash>``: a new file is a new URL, so no stale cache."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"/static/{name}?v={digest}"


templates.env.globals["static_url"] = static_url


def choose_language(value: str | None) -> str:
    """``value`` if the pages speak it, else the default language (Swedish)."""
    return value if value in LANGUAGES else DEFAULT_LANGUAGE


def request_language(request: Request, user: UserContext) -> str:
    """The language a ``?lang=`` link asks for, else the user's own."""
    return choose_language(request.query_params.get("lang") or user.language)


def render_page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """Template ``name`` rendered with ``context``, with the pages' security headers."""
    response = templates.TemplateResponse(
        request, name, context, status_code=status_code, headers=PAGE_HEADERS
    )
    assert isinstance(response, HTMLResponse)
    return response


def from_our_pages(request: Request) -> bool:
    """False for a cross-site form post (login CSRF, or a forced logout of a night shift's board).

    Browsers say where a request comes from in Sec-Fetch-Site; older ones only in Origin.
    A request with neither is not from a browser, and so not a CSRF.
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    return request.headers.get("origin") is None or same_origin(request)


async def signed_in(request: Request, pool: PoolDep, settings: SettingsDep) -> UserContext | None:
    """The user of the session cookie, if it carries a live session token."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await user_for_token(pool, token, kind="session", ttl_s=settings.token_ttl_s)


def to_login() -> Response:
    """The answer to a request without a session: off to the login form."""
    return RedirectResponse(LOGIN_PATH, status.HTTP_303_SEE_OTHER)


Forbidden = Callable[[Request, UserContext], Response]
"""The page a signed-in user gets where their role may not go (each page says it its way)."""


async def page_user(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    permission: Permission,
    forbidden: Forbidden,
) -> UserContext | Response:
    """The signed-in user if their role has ``permission``; else the login redirect (no
    session) or ``forbidden``'s answer (a 403 page)."""
    user = await signed_in(request, pool, settings)
    if user is None:
        return to_login()
    if not may(user.role, permission):
        return forbidden(request, user)
    return user


# The pages, whom each is for, and the string that names it (the API decides what is allowed;
# this only spares a caregiver links that would answer 403).
_PAGE_LINKS: Final = (
    ("/", "fleet_nav_board", Permission.SEE_ALERTS),
    ("/night-round", "night_title", Permission.SEE_ALERTS),
    ("/fleet", "fleet_nav_fleet", Permission.MANAGE_FLEET),
    ("/onboarding", "onboarding_title", Permission.MANAGE_FLEET),
    ("/residences", "residences_nav", Permission.PLAN_SUPERVISION),
    ("/dashboards", "usage_title", Permission.READ_USAGE),
    ("/webhooks", "webhooks_nav", Permission.ADMINISTER),
)


def page_links(role: str) -> list[dict[str, str]]:
    """The navigation links a user of ``role`` sees on every page: ``{href, key}``."""
    return [
        {"href": href, "key": key} for href, key, permission in _PAGE_LINKS if may(role, permission)
    ]


def page_context(user: UserContext, lang: str, here: str, **values: object) -> dict[str, Any]:
    """What the shell of a signed-in page shows: its language and strings, the user, the
    navigation with ``here`` marked; and the page's own ``values``."""
    return {
        "lang": lang,
        "t": strings()[lang],
        "username": user.username,
        "links": page_links(user.role),
        "here": here,
        **values,
    }


def switchable_context(
    request: Request, user: UserContext, here: str, **values: object
) -> dict[str, Any]:
    """:func:`page_context` in the language the query asks for, with ``lang_query``: this very
    page (its filters kept) in the other language."""
    lang = request_language(request, user)
    other = {**request.query_params, "lang": "en" if lang == "sv" else "sv"}
    return page_context(user, lang, here, lang_query=urllib.parse.urlencode(other), **values)
