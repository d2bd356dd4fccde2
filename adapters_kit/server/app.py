"""The HTTP app: `create_app` assembles the routes (`routes/`) over a `Server`, the error
bodies (`responses`), the body limits and the request metrics; `serve` runs it on uvicorn.

    adapters-kit serve --store DIR --backbone NAME [--keys keys.toml] [--host H] [--port P]

Every error is JSON `{"error": {"code", "message"}}`; the message says what to fix.
"""

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from ..adapters import open_store
from ..adapters.meta import task_problems
from ..devices import choice_note
from ..engine.cache import AdapterCache
from ..engine.model import MultiTaskModel
from ..engine.watch import StoreWatcher
from ..tasks import is_served_name
from ..tasks.kinds import kind_of
from . import admin
from .batcher import Batcher
from .config import ServeConfig
from .fairness import TenantRates
from .limits import BodyLimit, JsonBodies
from .metrics import ServerMetrics
from .models import TaskInfo
from .responses import add_error_handlers
from .routes import admin as admin_routes
from .routes import health, predict
from .tenants import Tenants

log = logging.getLogger("adapters_kit.server")

ENGINE_FAILED_EXIT = 70  # EX_SOFTWARE: `serve` exits with it if the engine thread dies


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
    app = FastAPI(title="adapters-kit", version="1", lifespan=_lifespan(srv), summary=(
        "Many LoRA task adapters on one base model: predictions batched across tasks."))
    app.state.server = srv
    add_error_handlers(app)
    app.include_router(predict.router(srv))
    app.include_router(admin_routes.router(srv))
    if srv.jobs is not None:  # serve --jobs
        from .routes import jobs

        app.include_router(jobs.router(srv))
    app.include_router(health.router(srv))
    uploads = {"/v1/jobs": config.job_max_bytes} if srv.jobs is not None else None
    return _Instrumented(BodyLimit(JsonBodies(app), config.max_body_bytes, uploads), app,
                         srv.metrics)


def _lifespan(srv: Server):
    """Start the engine (and the jobs) before the first request; stop them after the last."""

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

    return lifespan


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
