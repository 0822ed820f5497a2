"""The night round at ``/night-round``: tonight's planned supervision checks of one site, on the
night staff's phones (+#11).

A server-rendered shell around static/night_round.js, as the board is: the script reads
``/api/v1/night-round`` with the session cookie, refetches it when a supervision alert changes
(the alert stream) and every minute (a check turns due, then missed, with the clock alone), and
records physical visits through ``POST /api/v1/residences/{id}/visits``. Every role that reads
alerts may open it; the record buttons are shown to those who act on alerts (the API decides).
"""

from __future__ import annotations

import urllib.parse
from typing import Final

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from api import site_queries
from api.auth import UserContext
from api.deps import PoolDep, SettingsDep
from api.schemas import SitePublic
from carewatch.roles import Permission, may
from dashboards.kit import (
    page_context,
    page_user,
    render_page,
    request_language,
    strings,
    switchable_context,
)

router = APIRouter(include_in_schema=False)

PATH: Final = "/night-round"
PERMISSION: Final = Permission.SEE_ALERTS
# States move with the clock alone (upcoming → due → missed) and no alert says so: a minute
# is well inside a check's ±15 min window.
REFRESH_S: Final = 60
# The alerts whose changes mean the night round changed (devices.supervision's two rules).
SUPERVISION_RULES: Final = ("supervision_missed", "physical_visit_needed")


def _message(
    request: Request, user: UserContext, title_key: str, text_key: str, status_code: int
) -> HTMLResponse:
    context = switchable_context(request, user, PATH, title_key=title_key, text_key=text_key)
    return render_page(request, "night_round.html", context, status_code)


def _forbidden(request: Request, user: UserContext) -> Response:
    return _message(request, user, "night_forbidden_title", "night_forbidden", 403)


def _chosen(sites: list[SitePublic], wanted: str | None) -> SitePublic | None:
    """The site asked for (None if it is not the user's), else the first of theirs by name."""
    if wanted is not None:
        return next((site for site in sites if site.id == wanted), None)
    return sites[0] if sites else None


@router.get(PATH, response_class=HTMLResponse)
async def night_round(request: Request, pool: PoolDep, settings: SettingsDep) -> Response:
    """Tonight's planned checks of one of the user's sites (``?site=``; default the first by
    name), live."""
    user = await page_user(request, pool, settings, PERMISSION, _forbidden)
    if isinstance(user, Response):
        return user
    sites = await site_queries.list_sites(pool, user)
    wanted = request.query_params.get("site") or None
    site = _chosen(sites, wanted)
    if wanted is not None and site is None:
        return _message(request, user, "night_not_found_title", "night_not_found", 404)
    lang = request_language(request, user)
    config = {
        "lang": lang,
        "site_id": site.id if site else None,
        # Only whether the page shows the record buttons; the API decides what is allowed.
        "can_act": may(user.role, Permission.ACT_ON_ALERTS),
        "night_round_url": f"/api/v1/night-round?{urllib.parse.urlencode({'site': site.id})}"
        if site
        else None,
        "visits_url": "/api/v1/residences/{id}/visits",
        "stream_url": "/api/v1/alerts/stream",
        "refresh_s": REFRESH_S,
        "supervision_rules": list(SUPERVISION_RULES),
        "strings": strings(),
    }
    context = page_context(user, lang, PATH, config=config, sites=sites, site=site)
    return render_page(request, "night_round.html", context)
