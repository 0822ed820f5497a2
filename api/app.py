"""``create_api(settings)``: the HTTP API (FastAPI) and the lifetime of its connection pool.

The web pages are added on top of it by ``app.web.create_app``; the API knows nothing of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import psycopg
import psycopg_pool
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.routing import Match

from api.auth import delete_expired_tokens
from api.deps import PoolDep, get_pool
from api.errors import LoginRateLimited, SiteIdTaken
from api.pool import Pool
from api.routes import alerts, auth, bridges, devices, sites, usage
from api.stream import AlertHub
from carewatch.settings import Settings

__all__ = ["Pool", "PoolDep", "create_api", "get_pool"]

log = logging.getLogger(__name__)

# Expired tokens and old login failures are deleted this often (they are ignored anyway).
_HOUSEKEEPING_INTERVAL_S: Final = 3600.0
# What /readyz asks the database.
_READY_PROBE: Final = "SELECT 1"


def create_api(settings: Settings, *, metrics_registry: CollectorRegistry | None = None) -> FastAPI:
    """The API's routes, health and metrics endpoints, with the pool and alert hub as lifespan."""
    registry = metrics_registry or CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # open=False + open() here: the pool lives exactly as long as the application.
        pool: Pool = psycopg_pool.AsyncConnectionPool(
            settings.database_url, min_size=1, max_size=10, open=False, name="api"
        )
        await pool.open(wait=False)
        app.state.pool = pool
        hub = AlertHub(
            pool,
            settings.database_url,
            queue_max=settings.sse_queue_max,
            reconnect_min_s=settings.reconnect_min_s,
            reconnect_max_s=settings.reconnect_max_s,
        )
        app.state.alert_hub = hub
        await hub.prime(timeout_s=2.0)
        tasks = [
            asyncio.create_task(hub.run(), name="alert-hub"),
            asyncio.create_task(_housekeeping(pool), name="api-housekeeping"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await pool.close()

    app = FastAPI(title="Carewatch", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    _instrument(app, registry)
    app.add_exception_handler(LoginRateLimited, _too_many_logins)
    app.add_exception_handler(SiteIdTaken, _site_id_taken)
    for router in (
        auth.router,
        alerts.router,
        sites.router,
        usage.router,
        devices.router,
        bridges.router,
    ):
        app.include_router(router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(pool: PoolDep) -> Response:
        """Ready: the database answers within two seconds."""
        try:
            async with pool.connection(timeout=2.0) as conn:
                await conn.execute(_READY_PROBE)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
            return JSONResponse({"status": "unavailable", "detail": str(error)}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _too_many_logins(request: Request, error: Exception) -> Response:
    assert isinstance(error, LoginRateLimited)
    return JSONResponse(
        {"detail": str(error)},
        status_code=429,
        headers={"Retry-After": str(error.retry_after_s)},
    )


async def _site_id_taken(request: Request, error: Exception) -> Response:
    return JSONResponse({"detail": str(error)}, status_code=409)


async def _housekeeping(pool: Pool) -> None:
    while True:
        try:
            deleted = await delete_expired_tokens(pool)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
            log.warning("deleting expired tokens failed: %s", error)
        else:
            if deleted:
                log.info("deleted %s expired token(s)", deleted)
        await asyncio.sleep(_HOUSEKEEPING_INTERVAL_S)


def _instrument(app: FastAPI, registry: CollectorRegistry) -> None:
    """HTTP request count and latency by method, route template and status."""
    requests = Counter(
        "carewatch_http_requests_total",
        "HTTP requests answered",
        ["method", "route", "status"],
        registry=registry,
    )
    latency = Histogram(
        "carewatch_http_request_duration_seconds",
        "Time to answer an HTTP request",
        ["method", "route"],
        registry=registry,
    )

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Response:
        # The route template ("/api/v1/alerts/{id}"), never the raw path: ids would make a
        # new time series per alert.
        route = "unmatched"
        for candidate in request.app.router.routes:
            match, _ = candidate.matches(request.scope)
            if match is Match.FULL:
                route = getattr(candidate, "path", "unmatched")
                break
        started = time.perf_counter()
        response: Response = await call_next(request)
        latency.labels(request.method, route).observe(time.perf_counter() - started)
        requests.labels(request.method, route, str(response.status_code)).inc()
        return response
