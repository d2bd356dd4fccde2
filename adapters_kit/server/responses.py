"""How every answer is written: NaN-safe JSON, and the error body for every exception.

Every error is JSON `{"error": {"code", "message"}}`; the message says what to fix.
"""

import json
import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import ServeError
from .models import ErrorBody

log = logging.getLogger("adapters_kit.server")

ERRORS = {s: {"model": ErrorBody} for s in (401, 403, 404, 413, 422, 429, 503, 504)}
"""The error statuses a route may answer, for its OpenAPI `responses`."""


def json_response(status: int, body: dict, headers: dict | None = None) -> Response:
    """`body` as JSON; a non-finite number (not JSON) is sent as null."""
    try:
        text = json.dumps(body, allow_nan=False)
    except ValueError:  # NaN is not JSON: a null, and a note in the log (adapters are checked
        log.warning("a response held a non-finite number; sent as null")  # finite at load)
        text = json.dumps(_finite(body), allow_nan=False)
    return Response(text, status_code=status, headers=headers, media_type="application/json")


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def add_error_handlers(app: FastAPI) -> None:
    """Answer every exception with the error body: ours, FastAPI's, Starlette's, a crash."""

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, e: ServeError):
        return json_response(e.status, e.body(), e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        problems = []
        for err in e.errors()[:5]:  # never echo the input back: it may be large
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return json_response(422, {"error": {"code": "invalid_request", "message": "; ".join(
            problems) + " (see the request schema at /docs)"}})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        if e.status_code == 400:  # FastAPI could not parse the body: bad UTF-8, bad or deep JSON
            return json_response(422, {"error": {"code": "invalid_request", "message": (
                "the body is not a JSON document this server can read (invalid UTF-8, invalid "
                "JSON, or nested too deeply); send a JSON object such as "
                '{"task": "sst2", "inputs": ["a text"]} (see the request schema at /docs)')}})
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return json_response(e.status_code, {"error": {"code": code, "message": str(e.detail)}},
                             getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return json_response(500, {"error": {"code": "internal", "message": "internal error; "
                                             "it is in the server log"}})
