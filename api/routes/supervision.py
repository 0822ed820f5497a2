"""``/api/v1/supervision/summary``: planned night checks counted per site and night, and the
effect estimate with its assumptions, as JSON or CSV (managers and admins, own sites; +#11)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status

from api import supervision_queries
from api.auth import UserContext
from api.deps import PoolDep, require
from api.schemas import SupervisionSummary, night_date
from api.supervision_queries import TALLY_FIELDS, SummaryQuery
from carewatch.roles import Permission
from devices.supervision import night_of

router = APIRouter(prefix="/api/v1/supervision", tags=["supervision"])

SummaryReader = Annotated[UserContext, Depends(require(Permission.READ_USAGE))]
DEFAULT_NIGHTS: Final = 30
MAX_NIGHTS: Final = 366  # a year, leap or not: the monthly report's longest comparison
_NIGHT = r"^\d{4}-\d{2}-\d{2}$"
_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    403: {"description": "not a manager or an admin"},
    404: {"description": "no such site, or not one the caller may see"},
    422: {"description": "a night that is no date, since after until, more than 366 nights"},
}
_FORMULA_STARTS: Final = frozenset("=+-@\t\r")
CSV_COLUMNS: Final = (
    "site_id",
    "site_name",
    "night",
    *TALLY_FIELDS,
    "visits_avoided",
    "staff_minutes_saved",
    "lock_visits",
    "key_minutes_saved",
    "visit_minutes",
    "key_handling_minutes",
)

SinceNight = Annotated[
    str | None,
    Query(pattern=_NIGHT, description="first night (its evening's date), included"),
]
UntilNight = Annotated[
    str | None, Query(pattern=_NIGHT, description="last night, included (default: the current)")
]
SiteFilter = Annotated[str | None, Query(max_length=64)]


def summary_query(site: str | None, since: str | None, until: str | None) -> SummaryQuery:
    """The nights asked for, checked (HTTP 422 if not): default the last 30 nights up to the
    current one (in UTC: one period for every site), at most 366."""
    try:
        last = night_of(datetime.now(UTC), UTC) if until is None else night_date(until)
        first = last - timedelta(days=DEFAULT_NIGHTS - 1) if since is None else night_date(since)
    except ValueError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(error)) from None
    if until is None and since is not None:
        last = max(first, last)
    if first > last:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"since {first} is after until {last}"
        )
    if (last - first).days + 1 > MAX_NIGHTS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"at most {MAX_NIGHTS} nights"
        )
    return SummaryQuery(since=first, until=last, site=site)


async def _summary(
    user: UserContext, pool: PoolDep, site: str | None, since: str | None, until: str | None
) -> SupervisionSummary:
    query = summary_query(site, since, until)
    answer = await supervision_queries.supervision_summary(pool, user, query)
    if answer is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="site not found")
    return answer


@router.get("/summary", responses=_RESPONSES)
async def get_summary(
    user: SummaryReader,
    pool: PoolDep,
    site: SiteFilter = None,
    since: SinceNight = None,
    until: UntilNight = None,
) -> SupervisionSummary:
    """Per site (``site``: that one only) and per night with checks or lock visits: the planned
    checks (paused ones included), done in the window, late, missed, not seen, visits needed and
    checks replaced by visits because the camera failed; totals over the period; and the effect
    estimate: visits avoided (done + late), staff minutes saved (times the site's visit_minutes),
    lock visits and key minutes saved (times key_handling_minutes), with those assumptions beside
    them. Nights are evenings' dates, ``since`` to ``until`` both included; default the last 30
    nights up to the current one in UTC; at most 366."""
    return await _summary(user, pool, site, since, until)


@router.get(
    "/summary.csv",
    responses={**_RESPONSES, 200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
    response_class=Response,
)
async def get_summary_csv(
    user: SummaryReader,
    pool: PoolDep,
    site: SiteFilter = None,
    since: SinceNight = None,
    until: UntilNight = None,
) -> Response:
    """The summary as CSV: one row per site and night, with the night's effect and the site's
    assumptions as columns (the same parameters)."""
    answer = await _summary(user, pool, site, since, until)
    filename = f"carewatch-supervision-{site or 'all'}-{answer.since}-{answer.until}.csv"
    return Response(
        summary_csv(answer),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


def summary_csv(summary: SupervisionSummary) -> str:
    """One row per site and night (:data:`CSV_COLUMNS`); a text cell that starts like a formula
    gets a leading apostrophe (CSV injection), as the usage page's CSV does."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for site in summary.sites:
        minutes = site.assumptions
        for night in site.nights:
            avoided = night.done_in_window + night.late
            writer.writerow(
                [
                    _text(site.site_id),
                    _text(site.site_name),
                    night.night.isoformat(),
                    *(getattr(night, name) for name in TALLY_FIELDS),
                    avoided,
                    avoided * minutes.visit_minutes,
                    night.lock_visits,
                    night.lock_visits * minutes.key_handling_minutes,
                    minutes.visit_minutes,
                    minutes.key_handling_minutes,
                ]
            )
    return out.getvalue()


def _text(value: str) -> str:
    return "'" + value if value[:1] in _FORMULA_STARTS else value
