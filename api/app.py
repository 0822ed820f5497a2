"""``create_app(settings)``: the FastAPI application and the lifetime of its connection pool."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import psycopg
import psycopg_pool
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.routing import Match

from carewatch.settings import Settings

Pool = psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[object]]


def get_pool(request: Request) -> Pool:
    pool: Pool = request.app.state.pool
    return pool


PoolDep = Annotated[Pool, Depends(get_pool)]


def create_app(settings: Settings, *, metrics_registry: CollectorRegistry | None = None) -> FastAPI:
    registry = metrics_registry or CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # open=False + open() here: the pool lives exactly as long as the application.
        pool: Pool = psycopg_pool.AsyncConnectionPool(
            settings.database_url, min_size=1, max_size=10, open=False, name="api"
        )
        await pool.open(wait=False)
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(title="Carewatch", version="0.1.0", lifespan=lifespan)
    _instrument(app, registry)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(pool: PoolDep) -> Response:
        """Ready: the database answers within two seconds."""
        try:
            async with pool.connection(timeout=2.0) as conn:
                await conn.execute("SELECT 1")
        except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
            return JSONResponse({"status": "unavailable", "detail": str(error)}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


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
