"""What the API refuses before a route uses a request: a body over its size limit (413) and a
NUL character in the URL (400).

FastAPI reads and parses a route's whole body before any dependency runs, authentication
included, so a body limit, not the order of dependencies, is what bounds the memory an anonymous
caller can make the API spend (a 24 MB JSON array once cost half a gigabyte before its 401).
:class:`BodyLimit` counts the bytes as they arrive, so a chunked body without a Content-Length is
cut off at the limit too; a declared Content-Length over it is refused before a byte is read.

PostgreSQL cannot store a NUL character in text (psycopg refuses it before sending the query).
The URL is checked here, for every route at once (:func:`reject_nul_in_url`); JSON bodies are
checked by their models (:class:`api.schemas.RequestBody`), and whatever else reaches the
database (a form field, say) is answered 422 by :mod:`api.error_responses`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from fastapi import HTTPException, Request, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from devices.device_specs import MAX_IMPORT_BYTES

# The largest body an ordinary request needs: a site or device is well under a kilobyte, a note
# at most 2000 characters (8 KB of UTF-8), a login form a few hundred bytes.
DEFAULT_BODY_MAX_BYTES: Final = 64 * 1024
# A CSV import: the file's own limit (the route answers it more precisely) plus room for a
# multipart envelope, so that it is the route that refuses a file just over its limit.
UPLOAD_BODY_MAX_BYTES: Final = MAX_IMPORT_BYTES + 256 * 1024


def too_large(limit_bytes: int) -> HTTPException:
    """The 413 for a body over ``limit_bytes``; the connection closes (its body is unread)."""
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"request body larger than {limit_bytes} bytes",
        headers={"Connection": "close"},
    )


class BodyLimit:
    """Pure ASGI middleware: a request body may be at most ``max_bytes`` (or the larger limit
    ``limits`` gives its path).

    The check sits in the ``receive`` channel, so it happens once the route is chosen (metrics
    name the route) and only if something reads the body: then a declared Content-Length over
    the limit is refused before reading, and otherwise the bytes are counted as they come. Over
    the limit, the reader gets an HTTPException 413 (FastAPI passes it on from its body parsing,
    and the app's handler answers ``{"detail": ...}``); once the response has started, the
    reader is told the client went away instead.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.limits = dict(limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request with a receive channel that stops at the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.max_bytes)
        declared = _content_length(scope)
        received = 0
        responding = False

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None and declared > limit:
                return _refuse(limit, responding)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    return _refuse(limit, responding)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal responding
            if message["type"] == "http.response.start":
                responding = True
            await send(message)

        await self.app(scope, limited_receive, watched_send)


def _refuse(limit: int, responding: bool) -> Message:
    if responding:
        return {"type": "http.disconnect"}
    raise too_large(limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            # The server has already refused a malformed one; be safe anyway.
            return int(value) if value.isdigit() else None
    return None


async def reject_nul_in_url(request: Request) -> None:
    """A dependency of every route: 400 if the path or a query parameter (name or value)
    contains a NUL character, which no id, filter or date of ours can hold."""
    nul = "\x00"
    if nul in request.scope["path"] or any(
        nul in name or nul in value for name, value in request.query_params.multi_items()
    ):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="NUL character in the URL")
