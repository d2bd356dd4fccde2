"""The operations routes, without a key: liveness (/healthz), readiness (/readyz) and the
Prometheus metrics (/metrics)."""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time.

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import ServeError
from ..models import ErrorBody, Health


def router(srv) -> APIRouter:
    """The routes over `srv` (the app's Server)."""
    routes = APIRouter()

    @routes.get("/healthz", response_model=Health, responses={503: {"model": ErrorBody}},
                summary="The process is alive: it answers, and its engine runs")
    async def healthz():
        if not await srv.healthy():
            raise ServeError(503, "engine_failed", "the engine thread died; this process cannot "
                             "answer predictions and must be restarted")
        return Health(status="ok")

    @routes.get("/readyz", response_model=Health, responses={503: {"model": ErrorBody}},
                summary="Ready to take predictions")
    async def readyz():
        if not (srv.ready and await srv.alive()):
            raise ServeError(503, "not_ready", "the server is starting or shutting down")
        return Health(status="ready")

    @routes.get("/metrics", summary="Prometheus metrics (text format)",
                response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def metrics():
        await srv.refresh_metrics()
        return Response(generate_latest(srv.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return routes
