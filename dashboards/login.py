"""Signing in and out: ``/login`` (the form and its post) and ``/logout``.

The session token travels in an HttpOnly, SameSite=Strict cookie; both posts are refused unless
they come from our own pages (login CSRF, or a forced logout of a night shift's board).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse

from api.auth import issue_token, revoke_token
from api.deps import PoolDep, SettingsDep, authenticate_caller, session_cookie_options
from api.errors import LoginRateLimited
from api.security import SESSION_COOKIE
from dashboards.formatting import fill
from dashboards.kit import (
    DEFAULT_LANGUAGE,
    LOGIN_PATH,
    choose_language,
    from_our_pages,
    render_page,
    signed_in,
    strings,
)

router = APIRouter(include_in_schema=False)


def _login_page(
    request: Request,
    lang: str,
    *,
    message: str = "",
    username: str = "",
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    response = render_page(
        request,
        "login.html",
        {"lang": lang, "t": strings()[lang], "message": message, "username": username},
        status_code,
    )
    response.headers.update(headers or {})
    return response


@router.get(LOGIN_PATH, response_class=HTMLResponse)
async def login_form(
    request: Request, pool: PoolDep, settings: SettingsDep, lang: str | None = None
) -> Response:
    """The login form; straight to the board if the session is still good."""
    if await signed_in(request, pool, settings) is not None:
        return RedirectResponse("/", status.HTTP_303_SEE_OTHER)
    return _login_page(request, choose_language(lang))


@router.post(LOGIN_PATH, response_class=HTMLResponse)
async def login(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1024)],
    lang: Annotated[str, Form()] = DEFAULT_LANGUAGE,
) -> Response:
    """Check the password, set the session cookie and go to the board; else the form again."""
    language = choose_language(lang)
    texts = strings()[language]
    if not from_our_pages(request):
        return _login_page(request, language, message=texts["login_forbidden"], status_code=403)
    try:
        user = await authenticate_caller(request, pool, settings, username, password)
    except LoginRateLimited as limited:
        return _login_page(
            request,
            language,
            message=fill(texts["login_rate_limited"], wait=_wait_text(limited.retry_after_s)),
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
    # No max_age: the cookie ends with the browser; the token itself expires after
    # token_ttl_s without use (the server decides, the cookie only carries it).
    response.set_cookie(SESSION_COOKIE, token, **session_cookie_options(request))
    return response


@router.post("/logout")
async def logout(request: Request, pool: PoolDep) -> Response:
    """Revoke the session token and forget the cookie; back to the login form."""
    if not from_our_pages(request):
        return Response("cross-site logout refused", status.HTTP_403_FORBIDDEN)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await revoke_token(pool, token)
    response = RedirectResponse(LOGIN_PATH, status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, **session_cookie_options(request))
    return response


def _wait_text(seconds: int) -> str:
    """How long to wait, as the throttle's waits grow: seconds first, then whole minutes
    (rounded up, so nobody is told to come back before they may)."""
    if seconds < 60:
        return f"{max(1, seconds)} s"
    return f"{-(-seconds // 60)} min"
