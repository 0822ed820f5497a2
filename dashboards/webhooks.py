"""Outgoing webhooks and their delivery log, for the organisation's admins (+#12):
``/webhooks`` (each webhook: its receiver's host, events, whether it is on, its last delivery
and the last 24 hours' deliveries by state) and ``/webhooks/{id}`` (its delivery log, newest
first, capped at :data:`LOG_LIMIT`).

Read-only and without script. Who may open them is the API's rule: admins only, and a webhook
of another organisation is not found. The rows are :mod:`api.webhook_queries`', as for
``GET /api/v1/webhooks``; the secret is never among them. Only the receiver's host is shown:
some receivers carry a token in the URL's path or query.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import HTMLResponse

from api import webhook_queries
from api.auth import UserContext
from api.deps import PoolDep, SettingsDep
from carewatch.roles import Permission
from dashboards.formatting import DASH, fill, format_time
from dashboards.kit import page_user, render_page, request_language, switchable_context

router = APIRouter(include_in_schema=False)

PERMISSION: Final = Permission.ADMINISTER
HERE: Final = "/webhooks"
WebhookId = Annotated[int, Path(ge=1, le=2**63 - 1)]
# The newest deliveries shown of one webhook: a day of a busy organisation's alerts; the API
# (``GET /api/v1/webhooks/{id}/deliveries?limit=1000``) reads further back.
LOG_LIMIT: Final = 200


def receiver_host(url: str) -> str:
    """The host (and port) a webhook posts to, without the path or query that may hold a token."""
    return urllib.parse.urlsplit(url).netloc.rpartition("@")[2] or DASH


@dataclass(frozen=True, slots=True)
class Shown:
    """The words of one language for the templates."""

    t: Mapping[str, Any]

    def word(self, state: str) -> str:
        """A delivery's state in words (a dead letter says so: not by colour alone)."""
        return str(self.t["webhooks_state"][state])

    def detail(self, status: int | None, error: str | None) -> str:
        """What the receiver answered and what went wrong: ``HTTP 503, timeout``; or empty."""
        parts = [] if status is None else [fill(self.t["webhooks_http_status"], status=str(status))]
        if error:
            parts.append(error)
        return ", ".join(parts)

    @staticmethod
    def time(value: datetime | None) -> str:
        """A moment in the care homes' time, to the second; a dash for none."""
        return DASH if value is None else format_time(value, seconds=True)


def _message(
    request: Request, user: UserContext, title_key: str, text_key: str, status_code: int
) -> HTMLResponse:
    context = switchable_context(
        request, user, HERE, heading_key="webhooks_title", title_key=title_key, text_key=text_key
    )
    return render_page(request, "fleet_message.html", context, status_code)


def _forbidden(request: Request, user: UserContext) -> Response:
    return _message(request, user, "fleet_forbidden_title", "webhooks_forbidden", 403)


def _lang_suffix(request: Request, user: UserContext) -> str:
    """``?lang=en`` on the links when the page was opened with it (else the user's own)."""
    if not request.query_params.get("lang"):
        return ""
    return "?" + urllib.parse.urlencode({"lang": request_language(request, user)})


@router.get("/webhooks", response_class=HTMLResponse)
async def webhooks_page(request: Request, pool: PoolDep, settings: SettingsDep) -> Response:
    """The organisation's webhooks, each with its last delivery and the last day's counts."""
    user = await page_user(request, pool, settings, PERMISSION, _forbidden)
    if isinstance(user, Response):
        return user
    webhooks = await webhook_queries.list_webhooks(pool, user)
    summaries = await webhook_queries.summarise_deliveries(pool, user)
    rows = [
        {"webhook": hook, "host": receiver_host(hook.url), "summary": summaries.get(hook.id)}
        for hook in webhooks
    ]
    context = switchable_context(
        request,
        user,
        HERE,
        heading_key="webhooks_title",
        rows=rows,
        lang_suffix=_lang_suffix(request, user),
    )
    context["shown"] = Shown(context["t"])
    return render_page(request, "webhooks.html", context)


@router.get("/webhooks/{webhook_id}", response_class=HTMLResponse)
async def webhook_page(
    request: Request, pool: PoolDep, settings: SettingsDep, webhook_id: WebhookId
) -> Response:
    """One webhook's delivery log, newest first; 404 for one the organisation does not have."""
    user = await page_user(request, pool, settings, PERMISSION, _forbidden)
    if isinstance(user, Response):
        return user
    webhooks = await webhook_queries.list_webhooks(pool, user)
    webhook = next((webhook for webhook in webhooks if webhook.id == webhook_id), None)
    deliveries = await webhook_queries.list_deliveries(pool, user, webhook_id, limit=LOG_LIMIT)
    if webhook is None or deliveries is None:
        return _message(request, user, "webhooks_not_found_title", "webhooks_not_found", 404)
    context = switchable_context(
        request,
        user,
        HERE,
        heading_key="webhooks_title",
        webhook=webhook,
        host=receiver_host(webhook.url),
        deliveries=deliveries,
        capped=len(deliveries) == LOG_LIMIT,
        limit=LOG_LIMIT,
        lang_suffix=_lang_suffix(request, user),
    )
    context["shown"] = Shown(context["t"])
    return render_page(request, "webhooks_detail.html", context)
