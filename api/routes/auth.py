"""``/api/v1/auth``: a bearer token for a username and password, and logout."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, Response, status

from api.auth import issue_token, revoke_token
from api.deps import (
    CredentialsDep,
    PoolDep,
    SettingsDep,
    authenticate_caller,
    session_cookie_options,
)
from api.schemas import TokenPublic
from api.security import SESSION_COOKIE

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


@router.post(
    "/token",
    responses={
        401: {"description": "wrong username or password"},
        429: {"description": "too many failed logins; see Retry-After"},
    },
)
async def create_token(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    username: Annotated[str, Form(max_length=256)],
    password: Annotated[str, Form(max_length=1024)],
) -> TokenPublic:
    """A bearer token (valid for 12 hours) for API clients: the OAuth2 password flow."""
    user = await authenticate_caller(request, pool, settings, username, password)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="wrong username or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = await issue_token(pool, user, "bearer", ttl_s=settings.token_ttl_s)
    return TokenPublic(access_token=token)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(request: Request, credentials: CredentialsDep, pool: PoolDep) -> Response:
    """Revoke the token presented (bearer or session cookie)."""
    await revoke_token(pool, credentials.token)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    if credentials.via == "cookie":
        response.delete_cookie(SESSION_COOKIE, **session_cookie_options(request))
    return response
