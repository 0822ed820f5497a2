"""``/api/v1/pauses``: what is paused now at the caller's sites (+#11), for the board.

Residences whose resident is away (their checks do not fall due) and devices in repair (their
health alerts are silent): what staff must know to read the board right. Read with the alerts'
permission (:attr:`Permission.SEE_ALERTS`), for the caller's own sites; the absences and windows
themselves are recorded and ended under ``/api/v1/residences`` and ``/api/v1/devices``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status

from api import pause_queries
from api.auth import UserContext
from api.deps import PoolDep, require
from api.schemas import PausesPublic
from carewatch.roles import Permission

router = APIRouter(prefix="/api/v1/pauses", tags=["pauses"])

AlertReader = Annotated[UserContext, Depends(require(Permission.SEE_ALERTS))]


@router.get(
    "",
    responses={
        403: {"description": "the caller's role may not see alerts"},
        404: {"description": "no such site the caller may see"},
    },
)
async def list_pauses(
    user: AlertReader,
    pool: PoolDep,
    site: Annotated[str | None, Query(max_length=64)] = None,
) -> PausesPublic:
    """The absences and maintenance windows in force now at the caller's sites (``site``: that
    one only), by site and label; expired, ended and upcoming ones are not listed. Times carry
    their offset; ``timezone`` is the site's, for showing them locally. At most 500 of each
    (``truncated`` says there are more)."""
    pauses = await pause_queries.paused_now(pool, user, site_id=site)
    if pauses is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="site not found")
    return pauses
