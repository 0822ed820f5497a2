"""``/sw.js``: the service worker that shows Web Push alarms (+#12), served from the root.

A service worker controls only the paths under its own URL, so it is served at ``/`` rather
than under ``/static`` (``Service-Worker-Allowed: /`` says the same explicitly). The pages' CSP
(``script-src 'self'``) lets the same-origin worker run; ``no-cache`` has the browser check for a
new worker with every registration instead of keeping an old one for up to a day.
"""

from __future__ import annotations

import functools
from typing import Final

from fastapi import APIRouter
from fastapi.responses import Response

from dashboards.kit import CONTENT_SECURITY_POLICY, STATIC_DIR

router = APIRouter(include_in_schema=False)

HEADERS: Final = {
    "Service-Worker-Allowed": "/",
    # A worker runs under its own script's policy, not the page's: the same one, so it too
    # fetches nothing but its own origin (the strings, the API).
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}


@functools.cache
def _script() -> bytes:
    return (STATIC_DIR / "sw.js").read_bytes()


@router.get("/sw.js")
async def service_worker() -> Response:
    """The service worker script."""
    return Response(_script(), media_type="text/javascript; charset=utf-8", headers=HEADERS)
