"""Every page, mounted: the one place that puts the web pages and their static files on an app.

One router per page module (board, login, night round, fleet, onboarding, residences, usage,
webhooks), each built on the page kit (:mod:`dashboards.kit`); none of them imports another.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from dashboards import (
    board,
    fleet,
    login,
    night_round,
    onboarding,
    residences,
    service_worker,
    usage,
    webhooks,
)
from dashboards.kit import STATIC_DIR

PAGE_ROUTERS: Final[tuple[APIRouter, ...]] = (
    login.router,
    board.router,
    night_round.router,
    fleet.router,
    onboarding.router,
    residences.router,
    usage.router,
    webhooks.router,
    service_worker.router,
)


def mount_pages(app: FastAPI) -> None:
    """Serve every page and the pages' static files (``/static``) from ``app``."""
    for router in PAGE_ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
