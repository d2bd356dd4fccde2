"""The prediction routes: POST /v1/predict (batched with other callers' requests) and
GET /v1/tasks (what this API key may ask for)."""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time.

import asyncio
import time

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from ..auth import callers
from ..errors import ServeError, deadline_exceeded, unknown_task
from ..limits import check_inputs
from ..models import PredictRequest, PredictResponse, TaskInfo, TaskList
from ..responses import ERRORS, json_response


def router(srv) -> APIRouter:
    """The routes over `srv` (the app's Server)."""
    routes = APIRouter()
    config = srv.config
    Caller, _ = callers(srv.tenants)

    @routes.post("/v1/predict", response_model=PredictResponse, responses=ERRORS,
                 summary="Predict with one task's adapter; batched with other callers' requests")
    async def predict(body: PredictRequest, tenant: Caller):
        arrived = time.monotonic()
        if not (tenant.may_use(body.task) and srv.servable(body.task)):
            raise unknown_task()  # not counted by task: a made-up name must not become a label
        status = 500
        try:
            srv.rates.admit(tenant.name)
            inputs = [x.model_dump() if hasattr(x, "model_dump") else x for x in body.inputs]
            check_inputs(inputs, config)
            deadline = arrived + config.deadline_s
            try:
                kind, outputs, headers = await asyncio.wait_for(
                    srv.predict(body.task, inputs, deadline, tenant.name),
                    deadline - time.monotonic())
            except asyncio.TimeoutError:
                srv.metrics.deadline_exceeded.labels("answer").inc()
                raise deadline_exceeded(config.deadline_s) from None
            status = 200
        except ServeError as e:
            status = e.status
            raise
        finally:
            srv.metrics.observe_task(body.task, srv.is_resident(body.task), status,
                                     time.monotonic() - arrived)
        return json_response(200, {"task": body.task, "kind": kind, "outputs": outputs}, headers)

    @routes.get("/v1/tasks", response_model=TaskList, responses=ERRORS,
                summary="The tasks this API key may use")
    async def tasks(tenant: Caller):
        def listing() -> list[TaskInfo]:  # file reads: off the event loop
            names = [n for n in srv.store.names() if tenant.may_use(n) and srv.servable(n)]
            return [i for i in map(srv.task_info, names) if i is not None]

        return TaskList(tasks=await run_in_threadpool(listing))

    return routes
