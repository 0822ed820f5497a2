"""Fleet health for technicians: ``/fleet`` (every device, filters, sorting, a summary) and
``/fleet/{device_id}`` (facts, open alerts, recent events, a 30-day battery chart).

Server-rendered from the same scoped queries as the JSON API (api/device_queries.py); no script
is needed. Filters, sorting and the page are query parameters, so a view can be bookmarked and
a plain form submits it. Charts are SVG (dashboards/charts.py): no JavaScript library, nothing
from a CDN, and only presentation attributes and classes (the CSP forbids inline styles).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Final, get_args

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import HTMLResponse

from api import device_queries, site_queries
from api.auth import UserContext
from api.deps import PoolDep, SettingsDep
from api.device_queries import BATTERY_LOW_BELOW, DeviceFilter
from api.schemas import DeviceSort, DeviceStatusFilter
from carewatch.roles import Permission
from dashboards.charts import BATTERY_CHART_DAYS, battery_chart, sparkline
from dashboards.formatting import format_duration, format_time, kind_title
from dashboards.kit import page_user, render_page, request_language, switchable_context
from devices.catalog import DEFAULT_CATALOG

router = APIRouter(include_in_schema=False)

# Fleet health is the technicians' view (CONTRACT.md roles); admins may do everything.
PERMISSION: Final = Permission.MANAGE_FLEET
PAGE_SIZE: Final = 100
RECENT_EVENTS: Final = 50
# A chart point every 6 hours: 120 index probes, enough to see a battery's slope and a swap.
CHART_STEP: Final = timedelta(hours=6)
_STATUSES: Final[tuple[str, ...]] = get_args(DeviceStatusFilter)
_SORTS: Final[tuple[str, ...]] = get_args(DeviceSort)
# The columns of the table, in order, with the sort key each header sorts by (None: the API
# does not sort by it).
COLUMNS: Final[tuple[tuple[str | None, str], ...]] = (
    ("id", "fleet_col_device"),
    ("kind", "fleet_col_kind"),
    ("site", "fleet_col_site"),
    ("label", "fleet_col_label"),
    (None, "residences_col_residence"),
    ("status", "fleet_col_status"),
    ("last_seen", "fleet_col_last_seen"),
    ("battery", "fleet_col_battery"),
    ("firmware", "fleet_col_firmware"),
    ("open_alerts", "fleet_col_alerts"),
)


def data_summary(data: Mapping[str, object], max_chars: int = 120) -> str:
    """``battery=80, fw=1.2.3``: an event's data on one line, cut at ``max_chars``."""
    text = ", ".join(f"{key}={value}" for key, value in data.items())
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


# --- query parameters --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetView:
    """What /fleet shows, from its query parameters; unknown values fall back to defaults
    (a stale bookmark still opens the page)."""

    site: str | None = None
    kind: str | None = None
    status: DeviceStatusFilter = "active"
    battery_low: bool = False
    sort: DeviceSort = "id"
    descending: bool = False
    page: int = 1

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> FleetView:
        """The view a query string asks for, anything unknown or malformed left at default."""
        status_value = query.get("status", "active")
        sort_value = query.get("sort", "id")
        page_value = query.get("page", "1")
        return cls(
            site=query.get("site") or None,
            kind=query.get("kind") or None,
            status=status_value if status_value in _STATUSES else "active",  # type: ignore[arg-type]  # checked against the Literal's values
            battery_low=query.get("battery") == "low",
            sort=sort_value if sort_value in _SORTS else "id",  # type: ignore[arg-type]  # as above
            descending=query.get("order") == "desc",
            page=min(int(page_value), 10_000) if page_value.isdigit() and page_value != "0" else 1,
        )

    def params(self, **changes: object) -> dict[str, str]:
        """The view's query parameters (defaults left out), with ``changes`` applied."""
        values: dict[str, object] = {
            "site": self.site,
            "kind": self.kind,
            "status": None if self.status == "active" else self.status,
            "battery": "low" if self.battery_low else None,
            "sort": None if self.sort == "id" else self.sort,
            "order": "desc" if self.descending else None,
            "page": None if self.page == 1 else self.page,
        }
        values.update(changes)
        return {key: str(value) for key, value in values.items() if value not in (None, "")}

    def url(self, **changes: object) -> str:
        """This view's address, with ``changes`` to its parameters (None drops one)."""
        query = urllib.parse.urlencode(self.params(**changes))
        return f"/fleet?{query}" if query else "/fleet"

    def sort_url(self, column: str) -> str:
        """Sort by ``column``; ascending first, the other way if it already sorts by it."""
        descending = column == self.sort and not self.descending
        return self.url(sort=column, order="desc" if descending else None, page=None)

    def aria_sort(self, column: str) -> str:
        """The ``aria-sort`` of ``column``'s header: how the table is sorted by it, if at all."""
        if column != self.sort:
            return "none"
        return "descending" if self.descending else "ascending"


# --- pages -------------------------------------------------------------------------------------


def _context(request: Request, user: UserContext, **values: object) -> dict[str, Any]:
    lang = request_language(request, user)
    return switchable_context(
        request,
        user,
        "/fleet",
        heading_key="fleet_title",
        format_time=format_time,
        kind_title=lambda kind: kind_title(kind, lang),
        format_duration=format_duration,
        **values,
    )


def _message(
    request: Request, user: UserContext, title_key: str, text_key: str, status_code: int
) -> HTMLResponse:
    context = _context(request, user, title_key=title_key, text_key=text_key)
    return render_page(request, "fleet_message.html", context, status_code)


def _forbidden(request: Request, user: UserContext) -> Response:
    return _message(request, user, "fleet_forbidden_title", "fleet_forbidden", 403)


@router.get("/fleet", response_class=HTMLResponse)
async def fleet(request: Request, pool: PoolDep, settings: SettingsDep) -> Response:
    """Every device of the caller's sites with its health; filters and sorting by query."""
    user = await page_user(request, pool, settings, PERMISSION, _forbidden)
    if isinstance(user, Response):
        return user
    view = FleetView.from_query(request.query_params)
    page = await device_queries.list_devices(
        pool,
        user,
        DeviceFilter(
            site_id=view.site,
            kind=view.kind,
            status=view.status,
            battery_below=BATTERY_LOW_BELOW if view.battery_low else None,
        ),
        sort=view.sort,
        descending=view.descending,
        limit=PAGE_SIZE,
        offset=(view.page - 1) * PAGE_SIZE,
    )
    summary = await device_queries.fleet_summary(pool, user)
    sites = await site_queries.list_sites(pool, user)
    # The catalog's kinds, and any kind a device has that the catalog no longer lists.
    kinds = list(DEFAULT_CATALOG) + sorted(set(summary.by_kind) - set(DEFAULT_CATALOG))
    context = _context(
        request,
        user,
        view=view,
        page=page,
        summary=summary,
        sites=sites,
        kinds=kinds,
        statuses=_STATUSES,
        columns=COLUMNS,
        sparkline=sparkline,
    )
    return render_page(request, "fleet.html", context)


@router.get("/fleet/{device_id}", response_class=HTMLResponse)
async def fleet_device(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    device_id: Annotated[str, Path(max_length=64)],
) -> Response:
    """One device: facts, open alerts, the latest events and a 30-day battery chart."""
    user = await page_user(request, pool, settings, PERMISSION, _forbidden)
    if isinstance(user, Response):
        return user
    device = await device_queries.get_device(pool, user, device_id)
    if device is None:
        return _message(request, user, "fleet_not_found_title", "fleet_not_found", 404)
    alerts = await device_queries.open_alerts(pool, user, device_id)
    events = await device_queries.device_events(pool, user, device_id, limit=RECENT_EVENTS)
    history = await device_queries.battery_history(
        pool, user, device_id, days=BATTERY_CHART_DAYS, step=CHART_STEP
    )
    now = await device_queries.database_now(pool)
    context = _context(
        request,
        user,
        device=device,
        alerts=alerts,
        events=events or [],
        chart=battery_chart(history or [], now),
        data_summary=data_summary,
    )
    return render_page(request, "fleet_device.html", context)
