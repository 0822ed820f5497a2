"""``http.server`` on a free loopback port in a daemon thread, taking POSTs: what the local
webhook receiver and the local Web Push service are built on."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from carewatch.processes import LOOPBACK


class LoopbackPostServer:
    """Hands every POST to :meth:`take` with its body and the moment it arrived
    (``time.time()`` as its handler starts, before the body is read); ``with`` runs it."""

    def __init__(self, thread_name: str) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived_at = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.take(self, body, arrived_at)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the callers say what they saw

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=thread_name, daemon=True
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def take(self, handler: BaseHTTPRequestHandler, body: bytes, arrived_at: float) -> None:
        """Answer one POST (on the server's thread for its connection)."""
        raise NotImplementedError
