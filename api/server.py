"""Runs the API under uvicorn (``carewatch api``)."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from carewatch.settings import Settings


def run(settings: Settings, *, host: str, port: int) -> int:
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", proxy_headers=True)
    return 0
