"""The web pages: ``/login``, ``/logout`` and the alert board at ``/``.

Server-rendered shells (Jinja2) around a small script (static/board.js) that reads the JSON API
and the SSE stream with the session cookie. Everything the pages load comes from the app itself:
the Content-Security-Policy below lets the browser load nothing from anywhere else.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, FastAPI, Form, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from api.auth import UserContext, authenticate, issue_token, revoke_token, user_for_token
from api.deps import PoolDep, SettingsDep, same_origin
from api.errors import LoginRateLimited
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
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

router = APIRouter(include_in_schema=False)
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


# The pages, whom each is for, and the string that names it (the API decides what is allowed;
# this only spares a caregiver links that would answer 403).
_PAGE_LINKS: Final = (
    ("/", "fleet_nav_board", Permission.SEE_ALERTS),
    ("/fleet", "fleet_nav_fleet", Permission.MANAGE_FLEET),
    ("/onboarding", "onboarding_title", Permission.MANAGE_FLEET),
    ("/dashboards", "usage_title", Permission.READ_USAGE),
)


def page_links(role: str) -> list[dict[str, str]]:
    """The navigation links a user of ``role`` sees on every page: ``{href, key}``."""
    return [
        {"href": href, "key": key} for href, key, permission in _PAGE_LINKS if may(role, permission)
    ]


def _language(value: str | None) -> str:
    return value if value in LANGUAGES else DEFAULT_LANGUAGE


def _from_our_pages(request: Request) -> bool:
    """False for a cross-site form post (login CSRF, or a forced logout of a night shift's board).

    Browsers say where a request comes from in Sec-Fetch-Site; older ones only in Origin.
    A request with neither is not from a browser, and so not a CSRF.
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    return request.headers.get("origin") is None or same_origin(request)


def _page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    response = templates.TemplateResponse(
        request, name, context, status_code=status_code, headers=_PAGE_HEADERS
    )
    assert isinstance(response, HTMLResponse)
    return response


def _login_page(
    request: Request,
    lang: str,
    *,
    message: str = "",
    username: str = "",
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    response = _page(
        request,
        "login.html",
        {"lang": lang, "t": strings()[lang], "message": message, "username": username},
        status_code,
    )
    response.headers.update(headers or {})
    return response


async def _signed_in(request: Request, pool: PoolDep, settings: SettingsDep) -> UserContext | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await user_for_token(pool, token, kind="session", ttl_s=settings.token_ttl_s)


@router.get("/login", response_class=HTMLResponse)
async def login_form(
    request: Request, pool: PoolDep, settings: SettingsDep, lang: str | None = None
) -> Response:
    """The login form; straight to the board if the session is still good."""
    if await _signed_in(request, pool, settings) is not None:
        return RedirectResponse("/", status.HTTP_303_SEE_OTHER)
    return _login_page(request, _language(lang))


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1024)],
    lang: Annotated[str, Form()] = DEFAULT_LANGUAGE,
) -> Response:
    """Check the password, set the session cookie and go to the board; else the form again."""
    language = _language(lang)
    texts = strings()[language]
    if not _from_our_pages(request):
        return _login_page(request, language, message=texts["login_forbidden"], status_code=403)
    client = request.client.host if request.client else "unknown"
    try:
        user = await authenticate(pool, username, password, client)
    except LoginRateLimited as limited:
        minutes = max(1, -(-limited.retry_after_s // 60))
        return _login_page(
            request,
            language,
            message=texts["login_rate_limited"].replace("{minutes}", str(minutes)),
            username=username,
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(limited.retry_after_s)},
        )
    if user is None:
        return _login_page(
            request,
            language,
            message=texts["login_failed"],
            username=username,
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    token = await issue_token(pool, user, "session", ttl_s=settings.token_ttl_s)
    response = RedirectResponse("/", status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        # No max_age: the cookie ends with the browser; the token itself expires after
        # token_ttl_s without use (the server decides, the cookie only carries it).
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request, pool: PoolDep) -> Response:
    """Revoke the session token and forget the cookie; back to the login form."""
    if not _from_our_pages(request):
        return Response("cross-site logout refused", status.HTTP_403_FORBIDDEN)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await revoke_token(pool, token)
    response = RedirectResponse("/login", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/", response_class=HTMLResponse)
async def board(request: Request, pool: PoolDep, settings: SettingsDep) -> Response:
    """The alert board of the signed-in user; the login form for anyone else."""
    user = await _signed_in(request, pool, settings)
    if user is None:
        return RedirectResponse("/login", status.HTTP_303_SEE_OTHER)
    lang = _language(user.language)
    config = {
        "lang": lang,
        "username": user.username,
        # Only whether the board shows the buttons; the API decides what is allowed.
        "can_act": may(user.role, Permission.ACT_ON_ALERTS),
        "alerts_url": "/api/v1/alerts",
        "stream_url": "/api/v1/alerts/stream",
        "strings": strings(),
    }
    context = {
        "lang": lang,
        "t": strings()[lang],
        "username": user.username,
        "config": config,
        "links": page_links(user.role),
        "here": "/",
    }
    return _page(request, "board.html", context)


def mount_pages(app: FastAPI) -> None:
    """Serve the pages and their static files from ``app``."""
    app.include_router(router)
    from dashboards import fleet, usage  # they import this module: loaded here, not at the top

    app.include_router(fleet.router)
    app.include_router(usage.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
