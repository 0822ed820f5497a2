"""``/api/v1/night-round``: the night's planned supervision checks at the caller's sites (+#11).

Every role reads it, for its own sites: the board's night round and the managers' look at a past
night. The states come from the gateway's supervision pass (:mod:`api.night_round_queries`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from api import night_round_queries
from api.deps import CurrentUser, PoolDep
from api.schemas import NightRound, night_date

router = APIRouter(prefix="/api/v1/night-round", tags=["night round"])

_NIGHT = r"^\d{4}-\d{2}-\d{2}$"


@router.get(
    "",
    responses={
        404: {"description": "no such site the caller may see"},
        422: {"description": "a bad parameter: a night that is no date between 2000 and 2099"},
    },
)
async def get_night_round(
    user: CurrentUser,
    pool: PoolDep,
    site: Annotated[str | None, Query(max_length=64)] = None,
    night: Annotated[str | None, Query(pattern=_NIGHT, examples=["2026-12-05"])] = None,
) -> NightRound:
    """For each of the caller's sites (``site``: that one only), the night's planned checks in
    time order with their state, and its residences with a plan and their unresolved supervision
    alerts. ``night`` is the evening's date (a check at 02:00 belongs to the night before);
    default: the current night in each site's time zone. At most 500 residences (by site and
    label; ``truncated`` says there are more)."""
    asked = None
    if night is not None:
        try:
            asked = night_date(night)
        except ValueError as error:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"night: {error}"
            ) from None
    answer = await night_round_queries.night_round(pool, user, site_id=site, night=asked)
    if answer is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="site not found")
    return answer
