"""FastAPI dependencies as ``Annotated`` aliases: the pool, the settings and the caller.

A caller proves who they are with ``Authorization: Bearer <token>`` (API clients) or the session
cookie (the web pages). A cookie is sent by the browser on its own, so a state-changing request
that carries one must also show it comes from our pages (CSRF): the header
``X-Requested-With: carewatch`` (which a cross-site form cannot set, and a cross-site script
cannot set without a CORS preflight we never grant) or an ``Origin`` of our own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Final, Literal, TypedDict

from fastapi import Depends, HTTPException, Request, status

from api.auth import LoginLimits, UserContext, authenticate, user_for_token
from api.pool import Pool
from api.security import SESSION_COOKIE
from carewatch.errors import AdminError, AlreadyExistsError, ConflictError, NotFoundError
from carewatch.fleet import Actor
from carewatch.roles import Permission, may
from carewatch.settings import Settings

CSRF_HEADER: Final = "X-Requested-With"
CSRF_HEADER_VALUE: Final = "carewatch"
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def client_address(request: Request) -> str:
    """The caller's address, as the audit log and the login throttle know them.

    Behind the TLS proxy this is the address the proxy saw: uvicorn's proxy headers replace
    the connection's address with X-Forwarded-For only when the connection comes from
    ``Settings.trusted_proxies`` (app.server); anyone else's X-Forwarded-For is ignored.
    """
    return request.client.host if request.client is not None else "unknown"


class SessionCookieOptions(TypedDict):
    """How the session cookie is set and deleted (the same attributes for both)."""

    path: str
    httponly: bool
    samesite: Literal["strict"]
    secure: bool


def session_cookie_options(request: Request) -> SessionCookieOptions:
    """HttpOnly, SameSite=Strict for the whole site, and Secure when the request came over
    HTTPS: the scheme is the proxy's X-Forwarded-Proto when the proxy is trusted, so the
    cookie is Secure behind the TLS proxy and still works on the demo's plain loopback HTTP."""
    return SessionCookieOptions(
        path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


async def authenticate_caller(
    request: Request, pool: Pool, settings: Settings, username: str, password: str
) -> UserContext | None:
    """The user whose password this is, or None; throttled by the caller's address as the
    settings say (LoginRateLimited). The API's token route and the login page both sign in here."""
    return await authenticate(
        pool,
        username,
        password,
        client_address(request),
        limits=LoginLimits.from_settings(settings),
    )


def actor_for(user: UserContext, request: Request | None) -> Actor:
    """Who changes the fleet, as the onboarding service and its audit entries need it."""
    return Actor(
        username=user.username,
        org_id=user.org_id,
        site_ids=user.site_ids,
        user_id=user.user_id,
        client=None if request is None else client_address(request),
    )


def get_pool(request: Request) -> Pool:
    """The application's connection pool (opened in the lifespan)."""
    pool: Pool = request.app.state.pool
    return pool


def get_settings(request: Request) -> Settings:
    """The settings the application was created with."""
    settings: Settings = request.app.state.settings
    return settings


PoolDep = Annotated[Pool, Depends(get_pool)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


@dataclass(frozen=True, slots=True)
class Credentials:
    """The caller and the token they presented (logout revokes exactly that one)."""

    user: UserContext
    token: str
    via: Literal["bearer", "cookie"]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def same_origin(request: Request) -> bool:
    """True if the request's Origin is this server's own scheme, host and port."""
    origin = request.headers.get("origin")
    host = request.headers.get("host")
    return origin is not None and host is not None and origin == f"{request.url.scheme}://{host}"


def csrf_ok(request: Request) -> bool:
    """True if a cookie-authenticated request may change state (see the module docstring)."""
    if request.method in _SAFE_METHODS:
        return True
    return request.headers.get(CSRF_HEADER) == CSRF_HEADER_VALUE or same_origin(request)


async def get_credentials(request: Request, pool: PoolDep, settings: SettingsDep) -> Credentials:
    """The caller from the bearer header, else from the session cookie; 401 if neither works."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, bearer = authorization.partition(" ")
        bearer = bearer.strip()
        if scheme.lower() != "bearer" or not bearer:
            raise _unauthorized("expected Authorization: Bearer <token>")
        user = await user_for_token(pool, bearer, kind="bearer", ttl_s=settings.token_ttl_s)
        if user is None:
            raise _unauthorized("invalid or expired token")
        return Credentials(user, bearer, "bearer")
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise _unauthorized("not authenticated")
    user = await user_for_token(pool, token, kind="session", ttl_s=settings.token_ttl_s)
    if user is None:
        raise _unauthorized("session expired")
    if not csrf_ok(request):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"cookie requests that change state need the header {CSRF_HEADER}: "
            f"{CSRF_HEADER_VALUE} or a same-origin Origin",
        )
    return Credentials(user, token, "cookie")


CredentialsDep = Annotated[Credentials, Depends(get_credentials)]


async def get_current_user(credentials: CredentialsDep) -> UserContext:
    """The authenticated caller (401 if there is none)."""
    return credentials.user


CurrentUser = Annotated[UserContext, Depends(get_current_user)]


def forbidden() -> HTTPException:
    """The 403 for a caller whose role may not do what they asked."""
    return HTTPException(status.HTTP_403_FORBIDDEN, detail="your role may not do this")


def require(permission: Permission) -> Callable[[UserContext], Awaitable[UserContext]]:
    """A dependency: the caller, if their role has ``permission``; 403 otherwise.

    Use it only where the role alone decides. Where the object's visibility comes first
    (404 for what the caller cannot see, 403 for what they see but may not change), check
    the role in the route after the scoped lookup.
    """

    async def dependency(user: CurrentUser) -> UserContext:
        if not may(user.role, permission):
            raise forbidden()
        return user

    return dependency


# Technicians and admins: who onboards, changes and decommissions devices and manages bridges.
FleetManager = Annotated[UserContext, Depends(require(Permission.MANAGE_FLEET))]


@contextmanager
def fleet_refusals() -> Iterator[None]:
    """Answer a refusal of :mod:`carewatch.fleet` (an AdminError) in the block over HTTP.

    A device or bridge out of the caller's scope is 404 (the resource); any other missing thing
    (a site or bridge the body names) is 422, as the body's fault; a taken id or a state that
    refuses the change is 409; a bad value 422.
    """
    try:
        yield
    except NotFoundError as error:
        if error.entity in ("device", "bridge"):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{error.entity} not found") from None
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"{error.entity} not found"
        ) from None
    except AlreadyExistsError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, f"{error.entity} id taken") from None
    except ConflictError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, error.detail) from None
    except AdminError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
