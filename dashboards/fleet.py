"""Fleet health for technicians: ``/fleet`` (every device, filters, sorting, a summary) and
``/fleet/{device_id}`` (facts, open alerts, recent events, a 30-day battery chart).

Server-rendered from the same scoped queries as the JSON API (api/device_queries.py); no script
is needed. Filters, sorting and the page are query parameters, so a view can be bookmarked and
a plain form submits it. Charts are SVG drawn here: no JavaScript library, nothing from a CDN,
and only presentation attributes and classes (the CSP forbids inline styles).
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, get_args
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Path, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse

from api import device_queries, queries
from api.auth import UserContext
from api.deps import PoolDep, SettingsDep
from api.device_queries import BATTERY_LOW_BELOW, DeviceFilter
from api.schemas import BatteryPoint, DeviceSort, DeviceStatusFilter
from carewatch.roles import Permission, may
from dashboards.pages import _language, _page, _signed_in, page_links, strings
from devices.catalog import DEFAULT_CATALOG

router = APIRouter(include_in_schema=False)

# Fleet health is the technicians' view (CONTRACT.md roles); admins may do everything.
TIME_ZONE: Final = ZoneInfo("Europe/Stockholm")
PAGE_SIZE: Final = 100
RECENT_EVENTS: Final = 50
CHART_DAYS: Final = 30
# A chart point every 6 hours: 120 index probes, enough to see a battery's slope and a swap.
CHART_STEP: Final = timedelta(hours=6)
_STATUSES: Final[tuple[str, ...]] = get_args(DeviceStatusFilter)
_SORTS: Final[tuple[str, ...]] = get_args(DeviceSort)
# The columns of the table, in order, with the sort key each header sorts by.
COLUMNS: Final = (
    ("id", "fleet_col_device"),
    ("kind", "fleet_col_kind"),
    ("site", "fleet_col_site"),
    ("label", "fleet_col_label"),
    ("status", "fleet_col_status"),
    ("last_seen", "fleet_col_last_seen"),
    ("battery", "fleet_col_battery"),
    ("firmware", "fleet_col_firmware"),
    ("open_alerts", "fleet_col_alerts"),
)


# --- formatting (pure) -------------------------------------------------------------------------


def format_duration(seconds: float, t: Mapping[str, Any]) -> str:
    """ "42 s", "5 min", "3 h 5 min", "2 d 4 h", with the board's words."""
    whole = max(0, int(seconds))
    if whole < 60:
        return str(t["duration_seconds"]).replace("{n}", str(whole))
    minutes = whole // 60
    if minutes < 60:
        return str(t["duration_minutes"]).replace("{n}", str(minutes))
    hours = minutes // 60
    if hours < 24:
        return str(t["duration_hours"]).replace("{h}", str(hours)).replace("{m}", str(minutes % 60))
    return str(t["duration_days"]).replace("{d}", str(hours // 24)).replace("{h}", str(hours % 24))


def format_time(value: datetime | None, *, seconds: bool = False) -> str:
    """Stockholm time, to the minute or second (the care homes' clock, whatever the browser's
    zone)."""
    if value is None:
        return ""
    return value.astimezone(TIME_ZONE).strftime(
        "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    )


def kind_title(kind: str, lang: str) -> str:
    """The catalog's name of the kind in ``lang``; the kind itself if the catalog lacks it."""
    known = DEFAULT_CATALOG.get(kind)
    if known is None:
        return kind
    return known.title_sv if lang == "sv" else known.title_en


def data_summary(data: Mapping[str, object], max_chars: int = 120) -> str:
    """``battery=80, fw=1.2.3``: an event's data on one line, cut at ``max_chars``."""
    text = ", ".join(f"{key}={value}" for key, value in data.items())
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


@dataclass(frozen=True, slots=True)
class Sparkline:
    """A tiny battery line: ``points`` for an SVG polyline in a ``width`` x ``height`` box."""

    width: int
    height: int
    points: str


def sparkline(
    points: Sequence[BatteryPoint], width: int = 64, height: int = 20
) -> Sparkline | None:
    """The readings spread evenly across the box, 0-100 % bottom to top; None under 2 points."""
    if len(points) < 2:
        return None
    step = (width - 2) / (len(points) - 1)
    coordinates = " ".join(
        f"{1 + i * step:.1f},{1 + (height - 2) * (1 - p.battery / 100):.1f}"
        for i, p in enumerate(points)
    )
    return Sparkline(width, height, coordinates)


@dataclass(frozen=True, slots=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True, slots=True)
class BatteryChart:
    """A battery-over-time chart's geometry: plot area, axes' ticks, the line and the last dot."""

    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    line: str
    last_x: float
    last_y: float
    first_battery: int
    last_battery: int


def battery_chart(
    points: Sequence[BatteryPoint], end: datetime, days: int = CHART_DAYS
) -> BatteryChart | None:
    """Time on x (``end`` minus ``days`` to ``end``), 0-100 % on y; None without readings."""
    if not points:
        return None
    width, height, left, top, right, bottom = 640, 260, 52, 12, 612, 212
    start = end - timedelta(days=days)
    span_s = (end - start).total_seconds()

    def x(at: datetime) -> float:
        fraction = min(1.0, max(0.0, (at - start).total_seconds() / span_s))
        return left + (right - left) * fraction

    def y(battery: int) -> float:
        return bottom - (bottom - top) * battery / 100

    y_ticks = tuple(Tick(y(level), f"{level} %") for level in range(0, 101, 25))
    tick_every = max(1, math.ceil(days / 6))
    x_ticks = tuple(
        Tick(x(end - timedelta(days=back)), (end - timedelta(days=back)).astimezone(TIME_ZONE)
             .strftime("%d/%m"))
        for back in range(days, -1, -tick_every)
    )  # fmt: skip
    line = " ".join(f"{x(p.time):.1f},{y(p.battery):.1f}" for p in points)
    return BatteryChart(
        width, height, left, top, right, bottom, y_ticks, x_ticks, line,
        x(points[-1].time), y(points[-1].battery), points[0].battery, points[-1].battery,
    )  # fmt: skip


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
        query = urllib.parse.urlencode(self.params(**changes))
        return f"/fleet?{query}" if query else "/fleet"

    def sort_url(self, column: str) -> str:
        """Sort by ``column``; ascending first, the other way if it already sorts by it."""
        descending = column == self.sort and not self.descending
        return self.url(sort=column, order="desc" if descending else None, page=None)

    def aria_sort(self, column: str) -> str:
        if column != self.sort:
            return "none"
        return "descending" if self.descending else "ascending"


# --- pages -------------------------------------------------------------------------------------


def _context(request: Request, user: UserContext, **values: object) -> dict[str, Any]:
    lang = _language(request.query_params.get("lang") or user.language)
    # The language link: this very page (its filters kept) in the other language.
    other = {**request.query_params, "lang": "en" if lang == "sv" else "sv"}
    return {
        "lang_query": urllib.parse.urlencode(other),
        "lang": lang,
        "t": strings()[lang],
        "username": user.username,
        "links": page_links(user.role),
        "here": "/fleet",
        "format_time": format_time,
        "kind_title": lambda kind: kind_title(kind, lang),
        **values,
    }


def _message(
    request: Request, user: UserContext, title_key: str, text_key: str, status_code: int
) -> HTMLResponse:
    context = _context(request, user, title_key=title_key, text_key=text_key)
    return _page(request, "fleet_message.html", context, status_code)


async def _fleet_user(
    request: Request, pool: PoolDep, settings: SettingsDep
) -> UserContext | Response:
    """The signed-in technician or admin; else the login form or a friendly 403 page."""
    user = await _signed_in(request, pool, settings)
    if user is None:
        return RedirectResponse("/login", status.HTTP_303_SEE_OTHER)
    if not may(user.role, Permission.MANAGE_FLEET):
        return _message(request, user, "fleet_forbidden_title", "fleet_forbidden", 403)
    return user


@router.get("/fleet", response_class=HTMLResponse)
async def fleet(request: Request, pool: PoolDep, settings: SettingsDep) -> Response:
    """Every device of the caller's sites with its health; filters and sorting by query."""
    user = await _fleet_user(request, pool, settings)
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
    sites = await queries.list_sites(pool, user)
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
        format_duration=format_duration,
    )
    return _page(request, "fleet.html", context)


@router.get("/fleet/{device_id}", response_class=HTMLResponse)
async def fleet_device(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    device_id: Annotated[str, Path(max_length=64)],
) -> Response:
    """One device: facts, open alerts, the latest events and a 30-day battery chart."""
    user = await _fleet_user(request, pool, settings)
    if isinstance(user, Response):
        return user
    device = await device_queries.get_device(pool, user, device_id)
    if device is None:
        return _message(request, user, "fleet_not_found_title", "fleet_not_found", 404)
    alerts = await device_queries.open_alerts(pool, user, device_id)
    events = await device_queries.device_events(pool, user, device_id, limit=RECENT_EVENTS)
    history = await device_queries.battery_history(
        pool, user, device_id, days=CHART_DAYS, step=CHART_STEP
    )
    now = await device_queries.database_now(pool)
    context = _context(
        request,
        user,
        device=device,
        alerts=alerts,
        events=events or [],
        chart=battery_chart(history or [], now),
        format_duration=format_duration,
        data_summary=data_summary,
    )
    return _page(request, "fleet_device.html", context)
