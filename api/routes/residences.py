"""``/api/v1/residences``: residences, their supervision plans and absences (+#11).

Every role reads the residences of its sites. Managers and admins add and change residences and
record plan versions (:attr:`Permission.PLAN_SUPERVISION`); care staff, managers and admins
record and end absences (:attr:`Permission.RECORD_ABSENCE`); the staff who act on alerts, care
staff and admins, record physical visits (:attr:`Permission.ACT_ON_ALERTS`). A residence the
caller may not see answers 404; one they see but may not change, 403.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status

from api import residence_queries
from api.auth import UserContext
from api.deps import CurrentUser, PoolDep, client_address, forbidden, require
from api.errors import AbsenceOver, ResidenceLabelTaken, UnknownSite, VisitRecorded
from api.pool import Pool
from api.schemas import (
    VISITS_LISTED_DAYS,
    AbsenceCreate,
    AbsencePublic,
    PlanChange,
    PlanPublic,
    QueryAwareTime,
    ResidenceCreate,
    ResidencePublic,
    ResidenceUpdate,
    VisitCreate,
    VisitPublic,
)
from carewatch.roles import Permission, may

router = APIRouter(prefix="/api/v1/residences", tags=["residences"])

Planner = Annotated[UserContext, Depends(require(Permission.PLAN_SUPERVISION))]
ResidenceId = Annotated[int, Path(ge=1, le=2**63 - 1)]
AbsenceId = Annotated[int, Path(ge=1, le=2**63 - 1)]

Responses = dict[int | str, dict[str, Any]]
_NOT_FOUND: Final[Responses] = {404: {"description": "no such residence the caller may see"}}
_FORBIDDEN: Final[Responses] = {403: {"description": "the caller's role may not do this"}}
_LABEL_TAKEN: Final[Responses] = {409: {"description": "the site has a residence so labelled"}}


def _not_found(what: str = "residence") -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{what} not found")


async def _may_change(
    pool: Pool, user: UserContext, residence_id: int, permission: Permission
) -> None:
    """404 if the caller cannot see the residence, 403 if their role may not change it."""
    if await residence_queries.get_residence(pool, user, residence_id) is None:
        raise _not_found()
    if not may(user.role, permission):
        raise forbidden()


@router.get("")
async def list_residences(
    user: CurrentUser,
    pool: PoolDep,
    site: Annotated[str | None, Query(max_length=64)] = None,
) -> list[ResidencePublic]:
    """The residences of the caller's sites (``site``: of that one only), by site and label."""
    return await residence_queries.list_residences(pool, user, site_id=site)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        **_FORBIDDEN,
        **_LABEL_TAKEN,
        422: {"description": "a bad value, or a site that is not the caller's"},
    },
)
async def create_residence(
    residence: ResidenceCreate, request: Request, user: Planner, pool: PoolDep
) -> ResidencePublic:
    """Add a residence (an apartment, a home) at one of the caller's sites: the label staff use
    and optionally the municipality's case number; never a resident's name or identity number."""
    try:
        return await residence_queries.create_residence(
            pool, user, residence, client=client_address(request)
        )
    except UnknownSite as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(error)) from None
    except ResidenceLabelTaken as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from None


@router.get("/{residence_id}", responses=_NOT_FOUND)
async def get_residence(
    residence_id: ResidenceId, user: CurrentUser, pool: PoolDep
) -> ResidencePublic:
    """One residence with its site and active devices."""
    residence = await residence_queries.get_residence(pool, user, residence_id)
    if residence is None:
        raise _not_found()
    return residence


@router.patch("/{residence_id}", responses={**_NOT_FOUND, **_FORBIDDEN, **_LABEL_TAKEN})
async def update_residence(
    residence_id: ResidenceId,
    change: ResidenceUpdate,
    request: Request,
    user: CurrentUser,
    pool: PoolDep,
) -> ResidencePublic:
    """Change a residence's label or external reference (``null`` removes the reference)."""
    await _may_change(pool, user, residence_id, Permission.PLAN_SUPERVISION)
    try:
        residence = await residence_queries.update_residence(
            pool, user, residence_id, change, client=client_address(request)
        )
    except ResidenceLabelTaken as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from None
    if residence is None:
        raise _not_found()
    return residence


@router.get("/{residence_id}/plan", responses=_NOT_FOUND)
async def get_plan(residence_id: ResidenceId, user: CurrentUser, pool: PoolDep) -> PlanPublic:
    """The residence's supervision plan: the version in force (null if none was ever
    recorded) and the versions recorded, newest first."""
    plan = await residence_queries.get_plan(pool, user, residence_id)
    if plan is None:
        raise _not_found()
    return plan


@router.put("/{residence_id}/plan", responses={**_NOT_FOUND, **_FORBIDDEN})
async def change_plan(
    residence_id: ResidenceId,
    plan: PlanChange,
    request: Request,
    user: CurrentUser,
    pool: PoolDep,
) -> PlanPublic:
    """Record a new version of the plan, in force from now; the earlier versions are kept
    (managers and admins). Checks whose window has opened keep the version they began under."""
    await _may_change(pool, user, residence_id, Permission.PLAN_SUPERVISION)
    changed = await residence_queries.change_plan(
        pool, user, residence_id, plan, client=client_address(request)
    )
    if changed is None:
        raise _not_found()
    return changed


@router.get("/{residence_id}/absences", responses=_NOT_FOUND)
async def list_absences(
    residence_id: ResidenceId, user: CurrentUser, pool: PoolDep
) -> list[AbsencePublic]:
    """The residence's current and upcoming absences, and those over in the last 30 days,
    the latest start first."""
    absences = await residence_queries.list_absences(pool, user, residence_id)
    if absences is None:
        raise _not_found()
    return absences


@router.post(
    "/{residence_id}/absences",
    status_code=status.HTTP_201_CREATED,
    responses={**_NOT_FOUND, **_FORBIDDEN},
)
async def create_absence(
    residence_id: ResidenceId,
    absence: AbsenceCreate,
    request: Request,
    user: CurrentUser,
    pool: PoolDep,
) -> AbsencePublic:
    """Record that the resident is away (hospital, travel, respite stay, other): no checks fall
    due meanwhile; safety alerts never pause (care staff, managers, admins)."""
    await _may_change(pool, user, residence_id, Permission.RECORD_ABSENCE)
    created = await residence_queries.create_absence(
        pool, user, residence_id, absence, client=client_address(request)
    )
    if created is None:
        raise _not_found()
    return created


@router.post(
    "/{residence_id}/absences/{absence_id}/end",
    responses={
        404: {"description": "no such absence of a residence the caller may see"},
        **_FORBIDDEN,
        409: {"description": "the absence was ended already, or its expected end has passed"},
    },
)
async def end_absence(
    residence_id: ResidenceId,
    absence_id: AbsenceId,
    request: Request,
    user: CurrentUser,
    pool: PoolDep,
) -> AbsencePublic:
    """End an absence now: the resident came back early (an upcoming one is cancelled)."""
    await _may_change(pool, user, residence_id, Permission.RECORD_ABSENCE)
    try:
        ended = await residence_queries.end_absence(
            pool, user, residence_id, absence_id, client=client_address(request)
        )
    except AbsenceOver as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from None
    if ended is None:
        raise _not_found("absence")
    return ended


@router.get("/{residence_id}/visits", responses=_NOT_FOUND)
async def list_visits(
    residence_id: ResidenceId,
    user: CurrentUser,
    pool: PoolDep,
    since: QueryAwareTime | None = None,
) -> list[VisitPublic]:
    """The residence's physical visits, recorded by staff or proved by its lock, from ``since``
    on (RFC 3339 with an offset; default: the last 7 days), newest first, at most 200."""
    start = since if since is not None else datetime.now(UTC) - timedelta(days=VISITS_LISTED_DAYS)
    visits = await residence_queries.list_visits(pool, user, residence_id, since=start)
    if visits is None:
        raise _not_found()
    return visits


@router.post(
    "/{residence_id}/visits",
    status_code=status.HTTP_201_CREATED,
    responses={
        **_NOT_FOUND,
        **_FORBIDDEN,
        409: {"description": "staff recorded a visit to the residence at that instant already"},
    },
)
async def record_visit(
    residence_id: ResidenceId,
    visit: VisitCreate,
    request: Request,
    user: CurrentUser,
    pool: PoolDep,
) -> VisitPublic:
    """Record a physical visit made to the residence (care staff and admins, who act on
    alerts): it settles the planned check whose window it falls in and ends its
    ``physical_visit_needed`` alert at the gateway's next supervision pass. Audited
    (``visit.record``)."""
    await _may_change(pool, user, residence_id, Permission.ACT_ON_ALERTS)
    try:
        recorded = await residence_queries.record_visit(
            pool, user, residence_id, visit, client=client_address(request)
        )
    except VisitRecorded as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from None
    if recorded is None:
        raise _not_found()
    return recorded
