"""``/api/v1/usage``: the usage measures of the caller's sites (managers and admins)."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Query, status

from api.auth import UserContext
from api.deps import PoolDep, require
from api.schemas import QueryTime, UsageBucket, UsageReport
from api.usage_report import UsageQuery, UsageQueryError, UsageSiteNotFound, usage_report
from carewatch.roles import Permission

router = APIRouter(prefix="/api/v1/usage", tags=["usage"])

# The contract: managers see usage dashboards and reports; admins everything.
UsageReader = Annotated[UserContext, Depends(require(Permission.READ_USAGE))]
_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    403: {"description": "not a manager or an admin"},
    404: {"description": "no such site, or not one the caller may see"},
    422: {"description": "since is not before until, the period is too long for its bucket"},
}


@router.get("", responses=_RESPONSES)
async def get_usage(
    user: UsageReader,
    pool: PoolDep,
    site: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[
        QueryTime | None,
        Query(description="start (RFC 3339; a date or a time without offset is local time)"),
    ] = None,
    until: Annotated[QueryTime | None, Query(description="end, exclusive (as since)")] = None,
    bucket: UsageBucket = "day",
) -> UsageReport:
    """Usage per bucket of local time: camera checks per night, lock visits, robot minutes,
    alarms, alerts, response times, availability, battery replacements and a comparison of the
    sites. Default: the last 30 days by day. The period is widened to whole buckets; hour
    buckets cover at most 31 days, any period at most two years."""
    query = UsageQuery(site=site, since=since, until=until, bucket=bucket)
    try:
        return await usage_report(pool, user, query)
    except UsageSiteNotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(error)) from None
    except UsageQueryError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(error)) from None
