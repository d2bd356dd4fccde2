"""The HTTP app: routes, authentication, error bodies, metrics; `serve` runs it on uvicorn.

    adapters-kit serve --store DIR --backbone NAME [--keys keys.toml] [--host H] [--port P]

Every error is JSON `{"error": {"code", "message"}}`; the message says what to fix.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at run time,
# and the Annotated dependency aliases below are local to `create_app`.

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import sys
import time
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..adapters import open_store
from ..adapters.meta import task_problems
from ..devices import choice_note
from ..engine.cache import AdapterCache
from ..engine.model import MultiTaskModel
from ..engine.watch import StoreWatcher
from ..tasks import SERVED_NAME_RULE, is_served_name
from ..tasks.kinds import kind_of
from . import admin
from .batcher import Batcher
from .config import ServeConfig
from .errors import ServeError, deadline_exceeded, unknown_task
from .fairness import TenantRates
from .limits import BodyLimit, JsonBodies, check_inputs
from .metrics import ServerMetrics
from .models import (
    AdapterList,
    AdapterState,
    ErrorBody,
    Health,
    PredictRequest,
    PredictResponse,
    ReplaceRequest,
    TaskInfo,
    TaskList,
)
from .tenants import Tenant, Tenants

log = logging.getLogger("adapters_kit.server")

ENGINE_FAILED_EXIT = 70  # EX_SOFTWARE: `serve` exits with it if the engine thread dies
_ERRORS = {s: {"model": ErrorBody} for s in (401, 403, 404, 413, 422, 429, 503, 504)}


def _json(status: int, body: dict, headers: dict | None = None) -> Response:
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


class Server:
    """What the routes share: settings, tenants, the store, metrics, state; and the engine.

    This one runs the engine in this process (model, cache, batcher). The Ray Serve gateway
    (`ray_app.RayServer`) overrides the engine methods (`start` to `unload`) to forward to
    engine replicas; the routes, and so the HTTP contract, are the same for both.
    """

    def __init__(self, config: ServeConfig, model: MultiTaskModel | None = None) -> None:
        self.config = config
        self.tenants = Tenants.load(config.keys)
        self.store = store_of(config)
        self.disabled: set[str] = set()  # unloaded by an admin: not served until loaded again
        self.admin_lock = asyncio.Lock()
        self.ready = False
        self.rates = TenantRates(config.tenant_rate)
        self.engine_init(model)
        self.jobs = None
        if config.jobs:
            from .jobs import JobService

            self.jobs = JobService(self)

    def engine_init(self, model: MultiTaskModel | None) -> None:
        config = self.config
        self.model = model or MultiTaskModel(config.backbone, capacity=config.capacity,
                                              precision=config.precision, device=config.device,
                                              quantize=config.quantize)
        self.cache = AdapterCache(self.model, self.store, config.cache_bytes)
        self.metrics = ServerMetrics(lambda: (self.cache.stats, len(self.model.tasks)),
                                     config.metrics_tasks)
        self.batcher = Batcher(self.cache, config, self.metrics, self.tenant_share())
        self.served_by = f"{socket.gethostname()}:{os.getpid()}"
        self.watcher = None  # a remote store's pointer poller, from start()

    def tenant_share(self) -> int:
        """Most inputs one tenant may have waiting: `tenant_queue_inputs`, or the queue split
        evenly over the tenants (never less than one request's worth)."""
        config = self.config
        if config.tenant_queue_inputs:
            return config.tenant_queue_inputs
        if self.tenants.open:
            return config.queue_inputs
        callers = {t.name for t in self.tenants.by_key.values()}
        return max(config.max_inputs, config.queue_inputs // max(1, len(callers)))

    def is_resident(self, name: str) -> bool:
        return name in self.model.tasks

    def servable(self, name: str) -> bool:
        # a resident task stays servable while an admin replace swaps its store directory
        return (is_served_name(name) and name not in self.disabled
                and (self.is_resident(name) or self.store.has(name)))

    # -- the engine: what the Ray gateway forwards instead ----------------------------------------

    async def start(self) -> None:
        self.batcher.start()
        self.watcher = StoreWatcher.for_store(self.cache, self.config.store_poll_s)

    async def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        # uvicorn has already waited for in-flight requests; run anything still queued
        await run_in_threadpool(self.batcher.stop, self.config.shutdown_grace_s)

    async def alive(self) -> bool:
        return self.batcher.alive

    async def healthy(self) -> bool:
        """False once the engine has died: the process must be restarted (see serve())."""
        return not self.batcher.failed

    async def predict(self, task: str, inputs: list, deadline: float,
                      tenant: str = "local") -> tuple[str, list, dict]:
        """(kind, outputs, response headers) for one request of `tenant`; raises ServeError."""
        warm = self.is_resident(task)
        kind_task, outputs = await self.batcher.submit(task, inputs, deadline, tenant)
        return kind_task.spec.kind, outputs, served_headers(self.served_by, warm)

    async def residents(self) -> dict[str, str]:
        """Resident task -> digest of its resident version."""
        return {name: t.digest for name, t in list(self.model.tasks.items())}

    async def load(self, name: str) -> str | None:
        """Make `name` resident; the refusal message if its adapter is refused."""
        error = (await run_in_threadpool(self.cache.ensure_available, [name])).get(name)
        return None if error is None else str(error)

    async def install(self, name: str, source: str) -> None:
        """Install or replace from `source` (raises ValueError/OSError, the store unchanged)."""
        await run_in_threadpool(admin.install, self.cache, name, source)

    async def unload(self, name: str) -> None:
        await run_in_threadpool(self.cache.drop, name)

    async def refresh_metrics(self) -> None:
        """Gather figures kept elsewhere before a scrape (nothing to do in one process)."""

    def task_info(self, name: str) -> TaskInfo | None:
        """A listing's view of a store adapter; None where its metadata is unreadable or invalid
        (requests for it get the load error, which says why)."""
        try:
            spec, problems = task_problems(self.store.info(name))
        except Exception:
            return None
        if spec is None or problems:
            return None
        return TaskInfo(name=name, kind=spec.kind, labels=list(spec.labels),
                        input=kind_of(spec).describe_input(spec))


def store_of(config: ServeConfig):
    """The store `config` names: a local folder, or a remote store read through its cache."""
    if not isinstance(config.store, str):
        return open_store(config.store)
    return open_store(config.store, cache_dir=config.store_cache,
                      cache_bytes=config.store_cache_bytes, pointer_ttl_s=config.store_poll_s)


def served_headers(served_by: str, warm: bool) -> dict[str, str]:
    """Which engine answered, and whether the task's adapter was resident there already."""
    return {"X-Served-By": served_by, "X-Adapter-Warm": "true" if warm else "false"}


def create_app(config: ServeConfig, model: MultiTaskModel | None = None,
               server: Server | None = None) -> FastAPI:
    """The FastAPI app for `config` (the engine is built here unless `model` or `server` is given)."""
    srv = server or Server(config, model)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        srv.store.names()  # puts back what a writer killed mid-replace left aside
        await srv.start()
        if srv.jobs is not None:
            await srv.jobs.start()
        srv.ready = True
        try:
            yield
        finally:
            srv.ready = False
            if srv.jobs is not None:
                await srv.jobs.stop()
            await srv.stop()

    app = FastAPI(title="adapters-kit", version="1", lifespan=lifespan, summary=(
        "Many LoRA task adapters on one base model: predictions batched across tasks."))
    app.state.server = srv

    # -- errors ---------------------------------------------------------------------------------

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, e: ServeError):
        return _json(e.status, e.body(), e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        problems = []
        for err in e.errors()[:5]:  # never echo the input back: it may be large
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return _json(422, {"error": {"code": "invalid_request", "message": "; ".join(problems)
                                     + " (see the request schema at /docs)"}})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        if e.status_code == 400:  # FastAPI could not parse the body: bad UTF-8, bad or deep JSON
            return _json(422, {"error": {"code": "invalid_request", "message": (
                "the body is not a JSON document this server can read (invalid UTF-8, invalid "
                "JSON, or nested too deeply); send a JSON object such as "
                '{"task": "sst2", "inputs": ["a text"]} (see the request schema at /docs)')}})
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return _json(e.status_code, {"error": {"code": code, "message": str(e.detail)}},
                     getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return _json(500, {"error": {"code": "internal", "message": "internal error; it is in "
                                     "the server log"}})

    # -- callers --------------------------------------------------------------------------------

    def caller(request: Request) -> Tenant:
        key = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
        tenant = srv.tenants.identify(key)
        if tenant is None:
            raise ServeError(401, "unauthorized", "missing or unknown API key; send "
                             "'Authorization: Bearer KEY' with a key from the keys file",
                             headers={"WWW-Authenticate": "Bearer"})
        return tenant

    Caller = Annotated[Tenant, Depends(caller)]

    def admin_caller(tenant: Caller) -> Tenant:
        if not tenant.admin:
            raise ServeError(403, "forbidden", "admin routes need the admin key")
        return tenant

    Admin = Annotated[Tenant, Depends(admin_caller)]

    # -- predictions ----------------------------------------------------------------------------

    @app.post("/v1/predict", response_model=PredictResponse, responses=_ERRORS,
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
        return _json(200, {"task": body.task, "kind": kind, "outputs": outputs}, headers)

    @app.get("/v1/tasks", response_model=TaskList, responses=_ERRORS,
             summary="The tasks this API key may use")
    async def tasks(tenant: Caller):
        def listing() -> list[TaskInfo]:  # file reads: off the event loop
            names = [n for n in srv.store.names() if tenant.may_use(n) and srv.servable(n)]
            return [i for i in map(srv.task_info, names) if i is not None]

        return TaskList(tasks=await run_in_threadpool(listing))

    # -- admin ----------------------------------------------------------------------------------

    def adapter_state(name: str, residents: dict[str, str]) -> AdapterState:
        info = srv.task_info(name)
        return AdapterState(name=name, kind=info.kind if info else None,
                            enabled=name not in srv.disabled, resident=name in residents,
                            digest=residents.get(name))

    def in_store(name: str) -> None:
        if not (is_served_name(name) and srv.store.has(name)):
            raise ServeError(404, "unknown_adapter", f"no adapter {name!r} in the store; "
                             "GET /v1/admin/adapters lists them")

    @app.get("/v1/admin/adapters", response_model=AdapterList, responses=_ERRORS,
             summary="Every adapter in the store, with its state", tags=["admin"])
    async def adapters(_: Admin):
        names = await run_in_threadpool(srv.store.names)
        residents = await srv.residents()
        return AdapterList(adapters=[adapter_state(n, residents) for n in names])

    @app.post("/v1/admin/adapters/{name}/load", response_model=AdapterState, responses=_ERRORS,
              summary="Load (and enable) a store adapter now", tags=["admin"])
    async def load(name: str, _: Admin):
        in_store(name)
        async with srv.admin_lock:
            error = await srv.load(name)
            if error is not None:
                raise ServeError(422, "adapter_refused", error)
            srv.disabled.discard(name)
        return adapter_state(name, await srv.residents())

    @app.put("/v1/admin/adapters/{name}", response_model=AdapterState, responses=_ERRORS,
             summary="Install or replace an adapter from a directory on the server",
             tags=["admin"])
    async def replace(name: str, body: ReplaceRequest, _: Admin):
        if not is_served_name(name):
            raise ServeError(422, "invalid_name", f"{name!r} is not an adapter name: use "
                             f"{SERVED_NAME_RULE} characters")
        async with srv.admin_lock:
            try:
                await srv.install(name, body.source)
            except (ValueError, OSError) as e:  # AdapterFileError is a ValueError
                # the store and the resident version are as they were
                raise ServeError(422, "adapter_refused", str(e)) from None
            srv.disabled.discard(name)
        return adapter_state(name, await srv.residents())

    @app.delete("/v1/admin/adapters/{name}", response_model=AdapterState, responses=_ERRORS,
                summary="Unload an adapter and stop serving it (it stays in the store)",
                tags=["admin"])
    async def unload(name: str, _: Admin):
        in_store(name)
        async with srv.admin_lock:
            srv.disabled.add(name)
            await srv.unload(name)
        return adapter_state(name, await srv.residents())

    # -- training jobs (serve --jobs) -------------------------------------------------------------

    if srv.jobs is not None:
        from . import jobs

        jobs.add_routes(app, srv, caller)

    # -- operations -----------------------------------------------------------------------------

    @app.get("/healthz", response_model=Health, responses={503: {"model": ErrorBody}},
             summary="The process is alive: it answers, and its engine runs")
    async def healthz():
        if not await srv.healthy():
            raise ServeError(503, "engine_failed", "the engine thread died; this process cannot "
                             "answer predictions and must be restarted")
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, responses={503: {"model": ErrorBody}},
             summary="Ready to take predictions")
    async def readyz():
        if not (srv.ready and await srv.alive()):
            raise ServeError(503, "not_ready", "the server is starting or shutting down")
        return Health(status="ready")

    @app.get("/metrics", summary="Prometheus metrics (text format)",
             response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def metrics():
        await srv.refresh_metrics()
        return Response(generate_latest(srv.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    uploads = {"/v1/jobs": config.job_max_bytes} if srv.jobs is not None else None
    return _Instrumented(BodyLimit(JsonBodies(app), config.max_body_bytes, uploads), app,
                         srv.metrics)


class _Instrumented:
    """ASGI wrapper counting requests by route and status, timing them, tracking in-flight.

    It also forwards attribute access to the FastAPI app (`.state`, `.openapi()`).
    """

    def __init__(self, asgi, app: FastAPI, metrics: ServerMetrics) -> None:
        self._asgi = asgi
        self._app = app
        self._metrics = metrics

    def __getattr__(self, name):
        return getattr(self._app, name)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self._asgi(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self._metrics.in_flight.inc()
        try:
            await self._asgi(scope, receive, send_status)
        finally:
            self._metrics.in_flight.dec()
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self._metrics.requests.labels(label, str(status)).inc()
            self._metrics.latency.labels(label).observe(time.perf_counter() - started)


def serve(config: ServeConfig) -> None:
    """Run the server until SIGTERM/SIGINT, then finish in-flight requests and exit."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(config)
    srv: Server = app.state.server
    if srv.tenants.open:
        print(f"adapters-kit serve: no keys file, so listening on loopback only "
              f"({config.host}); every local caller may use every task and the admin routes. "
              "Pass --keys FILE.toml to serve tenants.", file=sys.stderr, flush=True)
    names = srv.store.names()
    print(f"adapters-kit serve: {len(names)} adapters in {config.store}, base "
          f"{config.backbone} on {choice_note(config.device, srv.model.device)} "
          f"({srv.model.precision}); http://{config.host}:{config.port}/docs", file=sys.stderr,
          flush=True)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port,
                                           log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=int(config.shutdown_grace_s) or 1))

    def engine_died() -> None:  # on the engine thread: ask uvicorn to stop, as SIGTERM does
        server.should_exit = True

    srv.batcher.on_failure.append(engine_died)
    server.run()
    if srv.batcher.failed:
        print(f"adapters-kit serve: the engine thread died (the log above says why); exiting "
              f"with status {ENGINE_FAILED_EXIT} so that a supervisor restarts the server",
              file=sys.stderr, flush=True)
        sys.exit(ENGINE_FAILED_EXIT)
