"""``/api/v1/responses/summary``: the alarm response as a municipality reports it, per site and
local month: times to accept, to arrive and to close against each site's promise, and the
slowest responses (managers and admins, own sites; #12). The figures are
:mod:`api.response_report_queries`', the same the managers' pages show."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Query, status

from api.auth import UserContext
from api.deps import PoolDep, require
from api.response_report_queries import ResponseReport, ResponseReportQuery, response_report
from api.schemas import night_date
from carewatch.roles import Permission

router = APIRouter(prefix="/api/v1/responses", tags=["responses"])

SummaryReader = Annotated[UserContext, Depends(require(Permission.READ_USAGE))]
DEFAULT_DAYS: Final = 30
# Two years and a day, as the usage report: "this year against the last".
MAX_DAYS: Final = 731
_DAY = r"^\d{4}-\d{2}-\d{2}$"
_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    403: {"description": "not a manager or an admin"},
    404: {"description": "no such site, or not one the caller may see"},
    422: {"description": "a day that is no date, since after until, more than 731 days"},
}

SinceDay = Annotated[
    str | None, Query(pattern=_DAY, description="first local day (YYYY-MM-DD), included")
]
UntilDay = Annotated[
    str | None, Query(pattern=_DAY, description="last local day, included (default: today)")
]
SiteFilter = Annotated[str | None, Query(max_length=64)]


def report_query(site: str | None, since: str | None, until: str | None) -> ResponseReportQuery:
    """The days asked for, checked (HTTP 422 if not): default the last 30 days up to today (in
    UTC: one period for every site), at most 731; each site counts them in its own zone."""
    try:
        # night_date: a YYYY-MM-DD between 2000 and 2099, whatever it names.
        last = datetime.now(UTC).date() if until is None else night_date(until)
        first = last - timedelta(days=DEFAULT_DAYS - 1) if since is None else night_date(since)
    except ValueError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(error)) from None
    if until is None and since is not None:
        last = max(first, last)
    if first > last:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"since {first} is after until {last}"
        )
    if (last - first).days + 1 > MAX_DAYS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"at most {MAX_DAYS} days"
        )
    return ResponseReportQuery(since=first, until=last, site=site)


@router.get("/summary", responses=_RESPONSES)
async def get_summary(
    user: SummaryReader,
    pool: PoolDep,
    site: SiteFilter = None,
    since: SinceDay = None,
    until: UntilDay = None,
) -> ResponseReport:
    """Per site (``site``: that one only), its promise and, per local month with responses and
    over the period: responses (alerts of a response rule, by their opening in the site's
    time zone), accepted, median and 90th percentile of the seconds to accept, to arrive and to
    close, how many kept each promise and their share of those accepted (or on site; null
    without a promise), arrivals proved by the lock and recorded by hand; and the 10 slowest
    responses (by time to arrive, else to accept) by residence, never by resident."""
    answer = await response_report(pool, user, report_query(site, since, until))
    if answer is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="site not found")
    return answer
