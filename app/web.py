"""``create_app(settings)``: what ``carewatch api`` serves, the HTTP API with the pages on it."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from api.app import create_api
from carewatch.settings import Settings
from dashboards.pages import mount_pages


def create_app(settings: Settings, *, metrics_registry: CollectorRegistry | None = None) -> FastAPI:
    """The API (``api.app.create_api``) with the pages and their static files mounted on it."""
    app = create_api(settings, metrics_registry=metrics_registry)
    mount_pages(app)
    return app
