"""A local webhook receiver that checks every signature, as a receiver written from the contract
would: the tests' counterpart of the notifier, and ``carewatch bench alerts``' webhook end.

:class:`Receiver` is ``http.server`` in a thread on a free loopback port. Each path is one
webhook's endpoint: it verifies ``Carewatch-Signature`` with that webhook's secret
(:func:`notifier.signing.check`, the receiver's side of the scheme) and answers the statuses it
was told to, then 200; a request it cannot verify is answered 401. Every request is kept with
the moment it arrived (``time.time()`` as its handler starts, before the body is read), so a
benchmark can time the delivery against its own clock.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from notifier.signing import HEADER, check
from tools.local.loopback_http import LoopbackPostServer


@dataclass(frozen=True)
class Received:
    """One request the receiver took, and whether its signature verified."""

    path: str
    headers: dict[str, str]
    body: bytes
    refusal: str | None  # None: the signature verified
    answered: int
    received_at: float  # time.time() when the request's handler started

    def json(self) -> Any:
        """The body, parsed."""
        return json.loads(self.body)


class Receiver(LoopbackPostServer):
    """A local webhook receiver; ``with Receiver() as receiver: receiver.url("/a")``."""

    def __init__(self) -> None:
        super().__init__("webhook-receiver")
        self._lock = threading.Lock()
        self._secrets: dict[str, str] = {}
        self._answers: dict[str, collections.deque[int]] = {}
        self._received: list[Received] = []

    def url(self, path: str) -> str:
        """The address of the endpoint ``path`` (give it to the webhook)."""
        return f"{self.origin}{path}"

    def expect(self, path: str, secret: str, answers: Iterable[int] = ()) -> None:
        """Verify requests to ``path`` with ``secret``; answer ``answers`` first, then 200."""
        with self._lock:
            self._secrets[path] = secret
            self._answers[path] = collections.deque(answers)

    def received(self, path: str) -> list[Received]:
        """Every request to ``path`` so far, in the order they were taken."""
        with self._lock:
            return [r for r in self._received if r.path == path]

    def take(self, handler: BaseHTTPRequestHandler, body: bytes, arrived_at: float) -> None:
        """Verify the signature, keep the request, answer it."""
        with self._lock:
            secret = self._secrets.get(handler.path)
            answers = self._answers.get(handler.path)
            status = answers.popleft() if answers else 200
        refusal: str | None = "unknown path"
        if secret is not None:
            header = handler.headers.get(HEADER, "")
            found = check(header, body, secret, now_s=time.time())
            refusal = None if found is None else str(found)
        if refusal is not None:
            status = 401
        with self._lock:
            self._received.append(
                Received(
                    handler.path, dict(handler.headers.items()), body, refusal, status, arrived_at
                )
            )
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
