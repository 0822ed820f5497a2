"""``/api/v1/push``: the caller's Web Push subscriptions and the key browsers subscribe with.

Only those who act on some alerts subscribe (caregivers for alarms, technicians for device
faults that need someone soon, admins): a push is something to go to. Anyone signed in may
delete their own subscription (the board does at sign-out), whatever their role is now.
"""

from __future__ import annotations

import functools
import logging
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from api import push_queries
from api.auth import UserContext
from api.deps import CurrentUser, PoolDep, SettingsDep, forbidden
from api.push_queries import (
    EndpointTakenError,
    PushSubscriptionCreate,
    PushSubscriptionDelete,
    PushSubscriptionPublic,
    VapidPublicKey,
)
from carewatch import vapid
from carewatch.roles import act_audiences

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/push", tags=["push"])


async def _pushed(user: CurrentUser) -> UserContext:
    """The caller, if their role acts on alerts of some audience (carewatch.roles); else 403."""
    if not act_audiences(user.role):
        raise forbidden()
    return user


PushedUser = Annotated[UserContext, Depends(_pushed)]

_PUSHES_NOTHING: Final[dict[int | str, dict[str, Any]]] = {
    403: {"description": "the caller's role acts on no alerts"}
}


@functools.cache
def _public_key(private_key: str) -> str:
    return vapid.public_key(vapid.load(private_key))


@router.get(
    "/vapid-public-key",
    responses={
        404: {"description": "Web Push is not configured here"},
        503: {"description": "the configured VAPID key is unusable"},
    },
)
async def vapid_public_key(user: CurrentUser, settings: SettingsDep) -> VapidPublicKey:
    """The VAPID public key (base64url) for ``PushManager.subscribe``'s applicationServerKey."""
    if not settings.vapid_private_key or not settings.vapid_subject:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Web Push is not configured")
    try:
        return VapidPublicKey(public_key=_public_key(settings.vapid_private_key))
    except vapid.VapidKeyError as error:
        log.error("%s", error)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail="the VAPID key is unusable"
        ) from None


@router.post(
    "/subscriptions",
    status_code=status.HTTP_201_CREATED,
    responses={
        **_PUSHES_NOTHING,
        409: {"description": "the endpoint is another user's subscription"},
        422: {"description": "not a push subscription, or not an https endpoint"},
    },
)
async def subscribe(
    subscription: PushSubscriptionCreate,
    request: Request,
    user: PushedUser,
    pool: PoolDep,
    settings: SettingsDep,
) -> PushSubscriptionPublic:
    """Register this browser's push subscription for the caller (again: renewed)."""
    refusal = push_queries.endpoint_refusal(
        subscription.endpoint, allow_http_loopback=settings.push_allow_http_loopback
    )
    if refusal is not None:
        raise HTTPException(422, detail=refusal)
    try:
        return await push_queries.subscribe(
            pool, user, subscription, user_agent=request.headers.get("user-agent", "")
        )
    except EndpointTakenError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from None


@router.delete(
    "/subscriptions",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "the caller has no such subscription"}},
)
async def unsubscribe(body: PushSubscriptionDelete, user: CurrentUser, pool: PoolDep) -> Response:
    """Delete the caller's subscription at ``endpoint``: this browser gets no more pushes (the
    board does this at sign-out, so a shared phone stops getting the person's alarms)."""
    if not await push_queries.unsubscribe(pool, user, body.endpoint):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such subscription")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
