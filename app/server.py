"""Runs the API under uvicorn (``carewatch api``)."""

from __future__ import annotations

import uvicorn

from app.web import create_app
from carewatch.settings import Settings


def run(settings: Settings, *, host: str, port: int) -> int:
    """Serve the API and the pages until SIGTERM or SIGINT; returns the exit status."""
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        proxy_headers=True,
        # Open SSE streams never end by themselves; on shutdown they are cut after this long
        # (browsers reconnect with Last-Event-ID to another process or the restarted one).
        timeout_graceful_shutdown=5,
    )
    return 0
