"""``/api/v1/sites``: the caller's sites; admins add sites and change them, rule settings too."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status

from api import site_queries
from api.auth import UserContext
from api.deps import CurrentUser, PoolDep, client_address, require
from api.errors import SecondGroupRefused
from api.schemas import SiteCreate, SiteDetail, SitePublic, SiteUpdate
from carewatch.roles import Permission, may
from devices.ids import ORG_SITE_ID_PATTERN

router = APIRouter(prefix="/api/v1/sites", tags=["sites"])

AdminUser = Annotated[UserContext, Depends(require(Permission.ADMINISTER))]


@router.get("")
async def list_sites(user: CurrentUser, pool: PoolDep) -> list[SitePublic]:
    """The sites the caller may see: all of the organisation's, or the ones they are given."""
    return await site_queries.list_sites(pool, user)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={403: {"description": "not an admin"}, 409: {"description": "the id is taken"}},
)
async def create_site(site: SiteCreate, user: AdminUser, pool: PoolDep) -> SitePublic:
    """Add a site to the caller's organisation (admins only)."""
    return await site_queries.create_site(pool, user, site)


SiteId = Annotated[str, Path(pattern=ORG_SITE_ID_PATTERN)]


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail="site not found")


@router.get("/{site_id}", responses={404: {"description": "no such site the caller may see"}})
async def get_site(site_id: SiteId, user: CurrentUser, pool: PoolDep) -> SiteDetail:
    """One site with its overrides of the alert rules' defaults and the effect estimate's
    minutes."""
    site = await site_queries.get_site(pool, user, site_id)
    if site is None:
        raise _not_found()
    return site


@router.patch(
    "/{site_id}",
    responses={
        403: {"description": "not an admin"},
        404: {"description": "no such site the caller may see"},
        422: {
            "description": "an unknown rule setting or a bad value, a care rule routed to"
            " technicians alone, or a second group's member who may not take the site's"
            " alarms, named in the answer"
        },
    },
)
async def update_site(
    site_id: SiteId, change: SiteUpdate, request: Request, user: CurrentUser, pool: PoolDep
) -> SiteDetail:
    """Change a site's name, time zone, rule settings or the effect estimate's minutes
    (admins; the gateways apply new rule settings with their next evaluation). ``rule_settings``
    replaces all of the site's overrides: escalation_s, door_left_unlocked_min,
    door_left_open_min, night_from_hour, night_until_hour, battery_warning_below,
    battery_high_below, battery_resolved_at. ``visit_minutes`` (1-240, default 20) and
    ``key_handling_minutes`` (0-120, default 3) are what a physical night visit and a key
    handling cost in staff time (``/api/v1/supervision/summary``). The alarm response (+#12):
    ``contact_promise_s`` and ``on_site_promise_s`` (1-86400, null withdraws the promise) and
    ``escalation_steps`` ({step name: 1-86400 seconds after the alert opened}, a step of the
    default chain: not_accepted, call_out, not_on_site; replaces the site's times as a whole,
    ``{}`` the defaults). Who the site's alerts are for (issue 12): ``alert_audiences``
    ({rule: care, technical or both}, over ``devices/audience.toml``; replaces the site's routing
    as a whole, ``{}`` the defaults). A care rule may not go to technicians alone (422), and the
    safety exceptions (a silent alarm button, a dark camera with checks planned, a jammed or flat
    lock) reach care staff whatever the routing. The site's second group (issue 12):
    ``second_group`` (usernames, replacing the group as a whole; ``[]`` none), whom the
    escalation's notify_second_group step pushes besides the first group; they are pushed only
    then, not when an alarm opens. Members must be users of the organisation who take alarms
    (carewatch.roles) and are allowed at the site; anyone else is refused (422, named)."""
    if await site_queries.get_site(pool, user, site_id) is None:
        raise _not_found()
    if not may(user.role, Permission.ADMINISTER):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="only admins change sites")
    try:
        site = await site_queries.update_site(
            pool, user, site_id, change, client=client_address(request)
        )
    except SecondGroupRefused as refused:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(refused)) from None
    if site is None:
        raise _not_found()
    return site
