"""``/api/v1/webhooks``: an organisation's outgoing webhooks and their delivery log (admins)."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status

from api import webhook_queries
from api.auth import UserContext
from api.deps import PoolDep, client_address, require
from api.webhook_queries import (
    DeliveryState,
    WebhookCreate,
    WebhookCreated,
    WebhookDelivery,
    WebhookPublic,
)
from carewatch.roles import Permission

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])

# The role alone decides (every webhook is the organisation's, not a site's); a webhook of
# another organisation is then 404, as if it did not exist.
AdminUser = Annotated[UserContext, Depends(require(Permission.ADMINISTER))]
WebhookId = Annotated[int, Path(ge=1, le=2**63 - 1)]

_NOT_ADMIN: Final[dict[int | str, dict[str, Any]]] = {403: {"description": "not an admin"}}
_NOT_ADMIN_OR_NO_SUCH: Final[dict[int | str, dict[str, Any]]] = {
    **_NOT_ADMIN,
    404: {"description": "no such webhook in the caller's organisation"},
}


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail="webhook not found")


@router.post("", status_code=status.HTTP_201_CREATED, responses=_NOT_ADMIN)
async def create_webhook(
    webhook: WebhookCreate, request: Request, user: AdminUser, pool: PoolDep
) -> WebhookCreated:
    """Add a webhook. The answer holds its signing secret: this once, never again."""
    return await webhook_queries.create_webhook(pool, user, webhook, client=client_address(request))


@router.get("", responses=_NOT_ADMIN)
async def list_webhooks(user: AdminUser, pool: PoolDep) -> list[WebhookPublic]:
    """The organisation's webhooks (without their secrets)."""
    return await webhook_queries.list_webhooks(pool, user)


@router.delete(
    "/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_NOT_ADMIN_OR_NO_SUCH
)
async def delete_webhook(
    webhook_id: WebhookId, request: Request, user: AdminUser, pool: PoolDep
) -> Response:
    """Delete a webhook: nothing more is sent to it (what waited is given up); its delivery
    log is kept."""
    if not await webhook_queries.delete_webhook(
        pool, user, webhook_id, client=client_address(request)
    ):
        raise _not_found()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries", responses=_NOT_ADMIN_OR_NO_SUCH)
async def list_deliveries(
    webhook_id: WebhookId,
    user: AdminUser,
    pool: PoolDep,
    state: DeliveryState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[WebhookDelivery]:
    """The webhook's delivery log, newest first: state, attempts, the last status and error."""
    deliveries = await webhook_queries.list_deliveries(
        pool, user, webhook_id, state=state, limit=limit
    )
    if deliveries is None:
        raise _not_found()
    return deliveries
