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
from fastapi import Depends, FastAPI, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import delete_expired_tokens
from api.deps import PoolDep, get_credentials, get_pool
from api.error_responses import (
    authenticated_operations,
    describe_error_answers,
    method_not_allowed,
    unstorable_text,
    validation_failed,
)
from api.errors import LoginRateLimited, SiteIdTaken
from api.limits import (
    DEFAULT_BODY_MAX_BYTES,
    UPLOAD_BODY_MAX_BYTES,
    BodyLimit,
    reject_nul_in_url,
)
from api.pool import Pool
from api.routes import (
    alerts,
    auth,
    bridges,
    broker,
    devices,
    night_round,
    pauses,
    push,
    residences,
    responses,
    sites,
    supervision,
    usage,
    webhooks,
)
from api.security import SecurityHeaders
from api.stream import AlertHub
from carewatch.settings import Settings
from devices.response import MoveRefused

__all__ = ["Pool", "PoolDep", "create_api", "get_pool"]

log = logging.getLogger(__name__)

# Expired tokens and old login failures are deleted this often (they are ignored anyway).
_HOUSEKEEPING_INTERVAL_S: Final = 3600.0
# What /readyz asks the database.
_READY_PROBE: Final = "SELECT 1"
# The routes whose body is a CSV file (the API's import, and the onboarding page's, which
# posts the same file to the same code): they may be larger than any other request.
_UPLOAD_PATHS: Final = ("/api/v1/devices/import", "/onboarding/import")
# The label of a request no route took (a 404): one time series for every unknown path.
UNMATCHED: Final = "unmatched"


def create_api(settings: Settings, *, metrics_registry: CollectorRegistry | None = None) -> FastAPI:
    """The API's routes, health and metrics endpoints, with the pool and alert hub as lifespan."""
    registry = metrics_registry or CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # open=False + open() here: the pool lives exactly as long as the application.
        pool: Pool = psycopg_pool.AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=10,
            open=False,
            name="api",
            reconnect_timeout=settings.db_reconnect_window_s,
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

    app = FastAPI(
        title="Carewatch",
        version="0.1.0",
        lifespan=lifespan,
        # No Swagger UI or ReDoc: FastAPI's pages load their scripts from a CDN (nothing works
        # offline, and it is outside the pages' Content-Security-Policy), and bundling them
        # would ship a front end for developers in a care service's image. /openapi.json stays:
        # any OpenAPI tool on a developer's machine reads it.
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(reject_nul_in_url)],
    )
    app.state.settings = settings
    # Added innermost first: the metrics see every answer, 413s and 400s included.
    app.add_middleware(
        BodyLimit,
        max_bytes=DEFAULT_BODY_MAX_BYTES,
        limits=dict.fromkeys(_UPLOAD_PATHS, UPLOAD_BODY_MAX_BYTES),
    )
    app.add_middleware(SecurityHeaders)
    _instrument(app, registry)
    app.add_exception_handler(RequestValidationError, validation_failed)
    app.add_exception_handler(psycopg.DataError, unstorable_text)
    app.add_exception_handler(UnicodeEncodeError, unstorable_text)
    app.add_exception_handler(LoginRateLimited, _too_many_logins)
    app.add_exception_handler(SiteIdTaken, _site_id_taken)
    app.add_exception_handler(MoveRefused, _move_refused)
    api_routers = (
        auth.router,
        alerts.router,
        alerts.response_actions_router,
        sites.router,
        residences.router,
        night_round.router,
        pauses.router,
        supervision.router,
        responses.router,
        usage.router,
        devices.router,
        bridges.router,
        broker.router,
        webhooks.router,
        push.router,
    )
    for router in api_routers:
        app.include_router(router)
    api_routes = [route for router in api_routers for route in router.routes]
    app.add_exception_handler(status.HTTP_405_METHOD_NOT_ALLOWED, method_not_allowed(api_routes))
    _document_errors(app, api_routes)

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


async def _move_refused(request: Request, error: Exception) -> Response:
    """A response move its state does not allow: the sentence, and a code for programs."""
    code = error.code if isinstance(error, MoveRefused) else "refused"
    return JSONResponse({"detail": str(error), "code": code}, status_code=409)


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


def _document_errors(app: FastAPI, routes: list[Any]) -> None:
    """Serve the OpenAPI document with every error answer described (api.error_responses)."""
    generate = app.openapi
    described = False

    def openapi() -> dict[str, Any]:
        nonlocal described
        document = generate()  # generated once, then FastAPI's cached copy
        if not described:
            describe_error_answers(document, authenticated_operations(routes, get_credentials))
            described = True
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's way to extend the document


def route_label(scope: Scope) -> str:
    """The template of the route that took the request ("/api/v1/alerts/{alert_id}"), never
    the raw path (ids would make a time series per alert); UNMATCHED if none did.

    The router puts the route it chose in ``scope["route"]``, in whatever way it nests
    included routers; matching the app's top-level routes again here would not find the
    routes of included routers in recent FastAPI versions.
    """
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) and template else UNMATCHED


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
    app.add_middleware(_Measured, requests=requests, latency=latency)


class _Measured:
    """Pure ASGI middleware: counts and times each HTTP request until its answer starts (a
    stream's lifetime is not its latency); an exception nobody answered counts as a 500."""

    def __init__(self, app: ASGIApp, *, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = False

        def record(status_code: int) -> None:
            nonlocal answered
            answered = True
            method, route = scope["method"], route_label(scope)
            self.latency.labels(method, route).observe(time.perf_counter() - started)
            self.requests.labels(method, route, str(status_code)).inc()

        async def measured_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not answered:
                record(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, measured_send)
        except Exception:  # a cancelled request (the client went away) is not counted
            if not answered:
                record(500)
            raise
