"""The alert board at ``/``: a server-rendered shell around static/board.js.

The script reads the JSON API and the SSE stream with the session cookie; the page only gives it
its configuration (a JSON data block, which the CSP lets through because it is not executed).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from api.deps import PoolDep, SettingsDep
from carewatch.roles import BOARD_AUDIENCES, Permission, act_audiences, may
from dashboards.kit import choose_language, page_context, render_page, signed_in, strings, to_login

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def board(request: Request, pool: PoolDep, settings: SettingsDep) -> Response:
    """The alert board of the signed-in user; the login form for anyone else."""
    user = await signed_in(request, pool, settings)
    if user is None:
        return to_login()
    lang = choose_language(user.language)
    push_on = bool(settings.vapid_private_key and settings.vapid_subject)
    board_audiences = BOARD_AUDIENCES.get(user.role, frozenset())
    config = {
        "lang": lang,
        "username": user.username,
        # Only whether the board shows the buttons; the API decides what is allowed.
        "can_act": may(user.role, Permission.ACT_ON_ALERTS),
        # Who the alerts on this board are for (issue 12): caregivers see care alerts,
        # technicians technical ones, managers and admins all; the buttons show on the cards
        # of the audiences the role acts on.
        "audiences": sorted(a.value for a in board_audiences),
        "act_audiences": sorted(a.value for a in act_audiences(user.role)),
        "alerts_url": "/api/v1/alerts",
        # The board's audience, asked of the list and of the stream alike.
        "alerts_query": f"?audience={next(iter(board_audiences)).value}"
        if len(board_audiences) == 1
        else "",
        "stream_url": "/api/v1/alerts/stream",
        # The codes a response is closed with (+#12), fetched once the board shows a response.
        "response_actions_url": "/api/v1/response-actions",
        # Web Push (+#12), offered only where the server can push (a VAPID key and subject).
        "push_key_url": "/api/v1/push/vapid-public-key" if push_on else "",
        # Who may have pushes: roles that act on some alerts (technicians get device faults).
        "can_push": bool(act_audiences(user.role)),
        "push_subscriptions_url": "/api/v1/push/subscriptions",
        "strings": strings(),
    }
    return render_page(request, "board.html", page_context(user, lang, "/", config=config))
