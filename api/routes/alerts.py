"""``/api/v1/alerts``: the board's list, one alert, acknowledge, resolve, the live stream, and
the response's moves (+#12): accept, forward, on site, close."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Header, HTTPException, Path, Query, Request, status
from fastapi.responses import StreamingResponse

from api import alert_queries, response_queries
from api.alert_queries import AlertAction, AlertStateFilter, Audience
from api.auth import UserContext, user_for_token
from api.deps import CredentialsDep, CurrentUser, PoolDep, SettingsDep, client_address, forbidden
from api.pool import Pool
from api.schemas import (
    AlertNote,
    AlertPublic,
    ArriveBody,
    CloseBody,
    ForwardBody,
    ResponseActionPublic,
    Severity,
)
from api.security import TokenKind
from api.stream import AlertHub, event_stream
from carewatch.roles import Permission, act_audiences, may, may_act_on
from devices.response import DEFAULT_POLICY, Accept, Arrive, Close, Forward, Move

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

AlertId = Annotated[int, Path(ge=1, le=2**63 - 1)]
_NOT_FOUND: Final[dict[int | str, dict[str, Any]]] = {
    404: {"description": "no such alert, or not one the caller may see"}
}


# Who acts on an alert of each audience, for the 403's sentence (carewatch.roles).
_ACTORS: Final = {"care": "caregivers", "technical": "technicians"}


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail="alert not found")


@router.get("")
async def list_alerts(
    user: CurrentUser,
    pool: PoolDep,
    state: AlertStateFilter = "unresolved",
    site: Annotated[str | None, Query(max_length=64)] = None,
    severity: Severity | None = None,
    audience: Audience | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> list[AlertPublic]:
    """The caller's alerts, most severe and newest first; by default the unresolved ones
    (open and acknowledged). ``audience`` (care, technical; absent: all) keeps those for that
    audience, as each alert's ``audiences`` says: the caregivers' board asks for care, the
    technicians' for technical."""
    return await alert_queries.list_alerts(
        pool, user, state=state, site_id=site, severity=severity, audience=audience, limit=limit
    )


# Declared before /{alert_id}, although "stream" would not parse as an id anyway.
@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_alerts(
    request: Request,
    credentials: CredentialsDep,
    pool: PoolDep,
    settings: SettingsDep,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: Annotated[int | None, Query(ge=0)] = None,
    audience: Audience | None = None,
) -> StreamingResponse:
    """Server-Sent Events ``alert.opened``, ``alert.updated``, ``alert.resolved`` of the
    caller's sites, each with its change id; ``Last-Event-ID`` (header, or query for a fresh
    EventSource) resumes after that id. ``audience`` (care, technical; absent: all) keeps the
    changes of alerts for that audience, as the list's does. A ``: keepalive`` comment comes
    when nothing else does."""
    resume_from = last_event_id
    if last_event_id_header is not None and last_event_id_header.strip().isdigit():
        resume_from = int(last_event_id_header.strip())
    hub: AlertHub = request.app.state.alert_hub
    user = credentials.user
    kind: TokenKind = "bearer" if credentials.via == "bearer" else "session"

    async def still_authorized() -> bool:
        # A stream outlives the check at its start: a logout, a revoked token, a disabled
        # user or changed sites must end it. (A session's expiry slides while its board is open.)
        now = await user_for_token(pool, credentials.token, kind=kind, ttl_s=settings.token_ttl_s)
        return now == user

    return StreamingResponse(
        event_stream(
            hub,
            pool,
            user,
            last_event_id=resume_from,
            heartbeat_s=settings.sse_heartbeat_s,
            retry_ms=settings.sse_retry_ms,
            still_authorized=still_authorized,
            recheck_s=settings.sse_recheck_s,
            audience=audience,
        ),
        media_type="text/event-stream",
        # no-cache: never replayed from a cache; X-Accel-Buffering: nginx passes each
        # message on at once instead of buffering the response.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/{alert_id}", responses=_NOT_FOUND)
async def get_alert(
    alert_id: AlertId, request: Request, user: CurrentUser, pool: PoolDep
) -> AlertPublic:
    """One alert; the access is recorded in the audit log."""
    alert = await alert_queries.view_alert(pool, user, alert_id, client=client_address(request))
    if alert is None:
        raise _not_found()
    return alert


async def _act(
    action: AlertAction,
    alert_id: int,
    body: AlertNote | None,
    request: Request,
    user: CurrentUser,
    pool: PoolDep,
) -> AlertPublic:
    # Who may acknowledge and resolve (the contract's roles, carewatch.roles): care staff the
    # care alerts, technicians the technical ones (issue 12), admins all; managers none.
    if not act_audiences(user.role):
        # 403 only for what the caller can see: anything else does not exist for them.
        if await alert_queries.alert_visible(pool, user, alert_id):
            raise forbidden()
        raise _not_found()
    seen = await alert_queries.peek_alert(pool, user, alert_id)
    if seen is None:
        raise _not_found()
    if not may_act_on(user.role, seen.audiences):
        whose = " and ".join(seen.audiences)
        actors = " and ".join(_ACTORS[a] for a in seen.audiences)
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail=f"a {whose} alert: {actors} and admins act on it"
        )
    alert = await alert_queries.change_alert(
        pool,
        user,
        alert_id,
        action,
        note=body.note if body is not None else None,
        client=client_address(request),
    )
    if alert is None:
        raise _not_found()
    return alert


_ACT_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    **_NOT_FOUND,
    403: {
        "description": "the caller's role may not do this, or not to an alert of this audience"
        " (caregivers act on care alerts, technicians on technical ones)"
    },
}


@router.post("/{alert_id}/ack", responses=_ACT_RESPONSES)
async def acknowledge_alert(
    alert_id: AlertId,
    request: Request,
    user: CurrentUser,
    pool: PoolDep,
    body: Annotated[AlertNote | None, Body()] = None,
) -> AlertPublic:
    """Acknowledge: someone is on it. Idempotent; a ``cleared`` alert is resolved by it."""
    return await _act("acknowledge", alert_id, body, request, user, pool)


@router.post("/{alert_id}/resolve", responses=_ACT_RESPONSES)
async def resolve_alert(
    alert_id: AlertId,
    request: Request,
    user: CurrentUser,
    pool: PoolDep,
    body: Annotated[AlertNote | None, Body()] = None,
) -> AlertPublic:
    """Resolve: dealt with. Idempotent."""
    return await _act("resolve", alert_id, body, request, user, pool)


# --- the response (+#12) -----------------------------------------------------------------------

_MOVE_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    **_ACT_RESPONSES,
    409: {
        "description": "the response's state does not allow it (taken by someone else, closed, "
        "not accepted yet, not a response alert): `detail` says why, `code` names it "
        "(taken, closed, not_accepted, not_on_site, on_site, to_self, unknown_action, "
        "not_a_response, resolved)"
    },
    422: {"description": "a bad body, or a colleague who cannot take alerts at this site"},
}


async def _move(
    alert_id: int,
    make_move: Callable[[datetime], Move],
    request: Request,
    user: UserContext,
    pool: Pool,
) -> AlertPublic:
    if not may(user.role, Permission.ACT_ON_ALERTS):
        if await alert_queries.alert_visible(pool, user, alert_id):
            raise forbidden()
        raise _not_found()
    # A MoveRefused goes to the app's handler: 409 with the sentence and its code.
    try:
        alert = await response_queries.move_response(
            pool, user, alert_id, make_move, client=client_address(request)
        )
    except response_queries.ColleagueUnknownError as unknown:
        raise HTTPException(422, detail=str(unknown)) from unknown
    if alert is None:
        raise _not_found()
    return alert


@router.post("/{alert_id}/accept", responses=_MOVE_RESPONSES)
async def accept_alert(
    alert_id: AlertId, request: Request, user: CurrentUser, pool: PoolDep
) -> AlertPublic:
    """Take the response: everyone sees who has it. Idempotent for the one who has it; 409 if
    a colleague has."""
    return await _move(alert_id, lambda now: Accept(user.username, now), request, user, pool)


@router.post("/{alert_id}/forward", responses=_MOVE_RESPONSES)
async def forward_alert(
    alert_id: AlertId, body: ForwardBody, request: Request, user: CurrentUser, pool: PoolDep
) -> AlertPublic:
    """Offer the response to a colleague (``to``), or back to the team (``to`` null), before
    anyone is on site. Only the one who has it may forward a taken response."""
    return await _move(
        alert_id, lambda now: Forward(user.username, now, body.to), request, user, pool
    )


@router.post("/{alert_id}/on-site", responses=_MOVE_RESPONSES)
async def alert_on_site(
    alert_id: AlertId,
    request: Request,
    user: CurrentUser,
    pool: PoolDep,
    body: Annotated[ArriveBody | None, Body()] = None,
) -> AlertPublic:
    """Someone is with the person (the residence's lock does this by itself when it is
    unlocked after the acceptance); ``contact_made`` says whether they could talk."""
    contact = None if body is None else body.contact_made
    return await _move(
        alert_id, lambda now: Arrive(user.username, now, contact), request, user, pool
    )


@router.post("/{alert_id}/close", responses=_MOVE_RESPONSES)
async def close_alert(
    alert_id: AlertId, body: CloseBody, request: Request, user: CurrentUser, pool: PoolDep
) -> AlertPublic:
    """Close the response with an action and a note; the alert is resolved. An action that
    says someone was there needs the arrival first."""
    return await _move(
        alert_id, lambda now: Close(user.username, now, body.action, body.note), request, user, pool
    )


response_actions_router = APIRouter(prefix="/api/v1/response-actions", tags=["alerts"])


@response_actions_router.get("")
async def list_response_actions(user: CurrentUser) -> list[ResponseActionPublic]:
    """The codes a response may be closed with, in the policy's order, titles in both
    languages."""
    return [
        ResponseActionPublic(
            code=a.code, title_sv=a.title_sv, title_en=a.title_en, arrived=a.arrived
        )
        for a in DEFAULT_POLICY.actions.values()
    ]
