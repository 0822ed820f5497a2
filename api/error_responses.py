"""How the API answers what goes wrong, and how its OpenAPI document says so.

Every error answer is JSON with ``detail``: a sentence (:class:`api.schemas.ErrorDetail`), or for
a refused parameter or body (422) the list of refusals in FastAPI's ``HTTPValidationError``
shape. The 422 handler here never echoes the input (a 50 MB note does not come back, a password
in a refused form does not either) and quotes only text JSON can carry: a NaN, an infinity or a
lone surrogate in the request once made FastAPI's own handler fail with a 500.

:func:`describe_error_answers` adds to the OpenAPI document what every operation can answer
besides its own outcomes (400, 401, 403, 413, 422, each with its schema), in one place, so that
a route added tomorrow is described as truthfully as the ones of today.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

import psycopg
from fastapi import status
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import (
    validation_error_definition,
    validation_error_response_definition,
)
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.schemas import ErrorDetail

# Longest text quoted from a refusal (a message or a location); the rest is cut.
_MAX_QUOTED_CHARS: Final = 200
_REF: Final = "#/components/schemas/"
_SAFE_METHODS: Final = frozenset({"get", "head", "options"})


async def validation_failed(request: Request, error: Exception) -> Response:
    """422 with each refusal's ``type``, ``loc``, ``msg`` (and ``ctx`` when it has one), never
    its ``input``; everything quoted is cut short and made encodable."""
    assert isinstance(error, RequestValidationError)
    refusals = [_refusal(item) for item in error.errors()]
    return JSONResponse({"detail": refusals}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def unstorable_text(request: Request, error: Exception) -> Response:
    """422 for text PostgreSQL cannot store that got as far as a query (a form field, say):
    psycopg refuses a NUL character, and UTF-8 a lone surrogate, before anything is sent.
    Any other error of these classes is not the caller's doing: it goes on as a 500."""
    nul = isinstance(error, psycopg.DataError) and error.sqlstate is None and "NUL" in str(error)
    surrogate = isinstance(error, UnicodeEncodeError) and "surrogates" in error.reason
    if not (nul or surrogate):
        raise error
    return JSONResponse(
        {"detail": "text with a NUL character or a lone surrogate cannot be stored"},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def method_not_allowed(
    routes: Iterable[object],
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """The 405 handler: its ``Allow`` lists every method the path has among ``routes``.

    The router answers 405 from the first route whose path matches, and lists only that
    route's methods (``GET`` for ``/api/v1/sites``, which also takes ``POST``). Where templates
    overlap (``/api/v1/devices/import`` and ``/api/v1/devices/{device_id}``), the one with
    the fewest parameters names the path, as in the OpenAPI document.
    """
    api_routes = [route for route in routes if isinstance(route, APIRoute)]

    async def handler(request: Request, error: Exception) -> Response:
        path = request.scope["path"]
        matching = [route for route in api_routes if route.path_regex.match(path)]
        headers = dict(getattr(error, "headers", None) or {})
        if matching:
            fewest = min(len(route.param_convertors) for route in matching)
            methods = {
                method
                for route in matching
                if len(route.param_convertors) == fewest
                for method in route.methods or ()
            }
            headers["Allow"] = ", ".join(sorted(methods))
        return JSONResponse(
            {"detail": "Method Not Allowed"},
            status_code=status.HTTP_405_METHOD_NOT_ALLOWED,
            headers=headers,
        )

    return handler


def _refusal(item: Mapping[str, Any]) -> dict[str, Any]:
    refusal: dict[str, Any] = {
        "type": _quoted(item.get("type", "")),
        "loc": [part if type(part) is int else _quoted(part) for part in item.get("loc", ())],
        "msg": _quoted(item.get("msg", "")),
    }
    if isinstance(context := item.get("ctx"), Mapping) and context:
        refusal["ctx"] = {_quoted(key): _scalar(value) for key, value in context.items()}
    return refusal


def _scalar(value: object) -> object:
    if value is None or type(value) is bool:
        return value
    if type(value) is int and value.bit_length() <= 63:
        return value
    if type(value) is float and math.isfinite(value):
        return value
    return _quoted(value)


def _quoted(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    if len(text) > _MAX_QUOTED_CHARS:
        text = text[: _MAX_QUOTED_CHARS - 1] + "…"
    # A lone surrogate cannot be UTF-8: shown escaped (\ud800) instead.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# --- the OpenAPI document ----------------------------------------------------------------------

_ERROR_DETAIL: Final = {"$ref": f"{_REF}ErrorDetail"}
_REFUSALS: Final = {"$ref": f"{_REF}HTTPValidationError"}
# What any operation may answer, whatever it does (the routes describe their own outcomes).
_EVERY_OPERATION: Final = {
    "400": "a NUL character in the URL, or a body that is not what its Content-Type says",
}
_WITH_BODY: Final = {"413": "the request body is larger than the limit"}
_AUTHENTICATED: Final = {"401": "no valid credentials (bearer token or session cookie)"}
_AUTHENTICATED_CHANGE: Final = {
    "403": "the caller's role may not do this, or a cookie without the CSRF header",
}


def authenticated_operations(
    routes: Iterable[object], credentials: Callable[..., Any]
) -> set[tuple[str, str]]:
    """(path, method) of every operation among ``routes`` that depends on ``credentials``
    (the dependency that answers 401), directly or through other dependencies."""
    found: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, APIRoute) and _depends_on(route.dependant, credentials):
            found.update((route.path, method.lower()) for method in route.methods or ())
    return found


def _depends_on(dependant: Any, call: Callable[..., Any]) -> bool:
    return any(sub.call is call or _depends_on(sub, call) for sub in dependant.dependencies)


def describe_error_answers(
    document: dict[str, Any], authenticated: set[tuple[str, str]]
) -> dict[str, Any]:
    """Add to every operation of an OpenAPI ``document`` the error answers it can give besides
    its own, and a schema to every error answer that has none; returns the document."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorDetail", ErrorDetail.model_json_schema(ref_template=_REF + "{model}"))
    schemas.setdefault("ValidationError", validation_error_definition)
    schemas.setdefault("HTTPValidationError", validation_error_response_definition)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            added = dict(_EVERY_OPERATION)
            if "requestBody" in operation:
                added |= _WITH_BODY
            if (path, method) in authenticated:
                added |= _AUTHENTICATED
                if method not in _SAFE_METHODS:
                    added |= _AUTHENTICATED_CHANGE
            for code, description in added.items():
                responses.setdefault(code, {"description": description})
            if "requestBody" in operation or operation.get("parameters"):
                responses.setdefault("422", {"description": "Validation Error"})
            _give_schemas(responses)
    return document


def _give_schemas(responses: dict[str, Any]) -> None:
    for code, response in responses.items():
        if not code.startswith("4"):
            continue
        if code == "422":
            # Refusals of parameters or body (a list), or a route's own sentence.
            schema: dict[str, Any] = {"anyOf": [_REFUSALS, _ERROR_DETAIL]}
        elif "content" in response:
            continue
        else:
            schema = _ERROR_DETAIL
        response["content"] = {"application/json": {"schema": schema}}
