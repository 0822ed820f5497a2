"""``/api/v1/devices`` (read side): the list with filters, the fleet summary, one device and
its events. Onboarding, changes and decommissioning live in ``api/routes/onboarding.py``.

Every role reads the devices it can see (its organisation, its sites if it has a list): the
contract gives caregivers the devices of their sites and technicians fleet health; a manager's
usage reports name the same devices, and every alert already shows its device's id, label, kind
and site to every role, so reading them adds no exposure. What the caller cannot see answers
404, as if it did not exist.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import AwareDatetime

from api import device_queries
from api.deps import CurrentUser, PoolDep
from api.device_queries import MAX_EVENTS, MAX_PAGE, DeviceFilter
from api.schemas import (
    DeviceEventPublic,
    DevicePage,
    DevicePublic,
    DeviceSort,
    DeviceStatusFilter,
    FleetSummary,
)

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])

DeviceId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{2,63}$")]
SiteQuery = Annotated[str | None, Query(max_length=64)]
KindQuery = Annotated[str | None, Query(max_length=64)]
_NOT_FOUND: Final[dict[int | str, dict[str, Any]]] = {
    404: {"description": "no such device, or not one the caller may see"}
}


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail="device not found")


@router.get("")
async def list_devices(
    user: CurrentUser,
    pool: PoolDep,
    site: SiteQuery = None,
    kind: KindQuery = None,
    status: DeviceStatusFilter = "active",
    battery_below: Annotated[int | None, Query(ge=1, le=101)] = None,
    sort: DeviceSort = "id",
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    trend: bool = True,
) -> DevicePage:
    """The caller's devices, a page at a time (``limit`` up to 500, then ``next_offset``).

    ``status``: ``active`` (default), ``online``, ``offline`` (seen before, silent now),
    ``never_seen`` (no message since onboarding), ``decommissioned`` or ``all``.
    ``battery_below``: only devices whose last battery is under this percentage.
    ``trend=false`` leaves out the week's battery trend (cheaper for bulk exports)."""
    return await device_queries.list_devices(
        pool,
        user,
        DeviceFilter(site_id=site, kind=kind, status=status, battery_below=battery_below),
        sort=sort,
        descending=order == "desc",
        limit=limit,
        offset=offset,
        trend=trend,
    )


# Declared before /{device_id}: "summary" would otherwise be taken for a device id.
@router.get("/summary")
async def fleet_summary(
    user: CurrentUser, pool: PoolDep, site: SiteQuery = None, kind: KindQuery = None
) -> FleetSummary:
    """Fleet health in numbers: active devices, online, offline, battery under 20 %, never seen
    since onboarding, in all and by kind; decommissioned ones counted apart."""
    return await device_queries.fleet_summary(pool, user, site_id=site, kind=kind)


@router.get("/{device_id}", responses=_NOT_FOUND)
async def get_device(device_id: DeviceId, user: CurrentUser, pool: PoolDep) -> DevicePublic:
    """One device with its health and the week's battery trend."""
    device = await device_queries.get_device(pool, user, device_id)
    if device is None:
        raise _not_found()
    return device


@router.get("/{device_id}/events", responses=_NOT_FOUND)
async def list_device_events(
    device_id: DeviceId,
    user: CurrentUser,
    pool: PoolDep,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = 100,
) -> list[DeviceEventPublic]:
    """The device's events with ``since`` <= time < ``until`` (device time, RFC 3339 with an
    offset), newest first, at most ``limit`` (up to 1000). For the next page ask again with
    ``until`` = the oldest time received."""
    if since is not None and until is not None and since >= until:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail="since must be < until")
    events = await device_queries.device_events(
        pool, user, device_id, since=since, until=until, limit=limit
    )
    if events is None:
        raise _not_found()
    return events
