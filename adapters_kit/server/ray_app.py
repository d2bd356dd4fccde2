"""The HTTP server on Ray Serve: a gateway replica in front of N engine replicas.

    adapters-kit serve --ray --replicas N --store DIR [--keys keys.toml] [--ray-address ADDR]

`Gateway` runs the very app of the single-process server (`app.create_app`: routes, tenants,
limits, error bodies, metrics), with a `RayServer` that forwards the engine's work instead of
doing it. `EngineReplica` holds one base model, an `AdapterCache` (its own byte budget, LRU)
and the `Batcher` (cross-request, cross-task batches within the replica).

Routing uses Ray Serve model multiplexing: the gateway sends each prediction with
`multiplexed_model_id=task`, so Ray prefers a replica that already holds the task's adapter,
and a task new to all replicas goes to the replica holding the fewest. Ray's own per-replica
model cap is off: the replica's cache evicts by bytes, and Ray's list of the replica's models
is trimmed to what the cache kept. Admin load, replace and unload reach every replica
(`DeploymentHandle.broadcast`); the store is shared: one folder every replica sees, or an
object store URL (`--store s3://bucket/prefix`), which each replica reads through its own
local cache and whose pointers each replica polls (`StoreWatcher`), so a version published
from anywhere is served by every replica within the poll interval.

Every response to a prediction carries `X-Served-By` (the replica) and `X-Adapter-Warm` (the
adapter was resident there before the request); the single-process server sends them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, replace

from ray import serve

from ..engine.cache import AdapterCache, CacheStats
from ..engine.model import MultiTaskModel
from ..engine.watch import StoreWatcher
from . import admin
from .app import Server, create_app, served_headers, store_of
from .batcher import Batcher
from .config import ServeConfig, ServeConfigError
from .errors import ServeError
from .metrics import ServerMetrics

log = logging.getLogger("adapters_kit.server")

APP_NAME = "adapters-kit"


class EngineReplica:
    """One Ray Serve replica: a base model, its adapter cache and batcher."""

    def __init__(self, config: ServeConfig) -> None:
        import torch

        torch.set_num_threads(config.torch_threads)
        self.model = MultiTaskModel(config.backbone, capacity=config.capacity,
                                    precision=config.precision, device=config.device,
                                    quantize=config.quantize)
        self.cache = AdapterCache(self.model, store_of(config), config.cache_bytes)
        self.batcher = Batcher(self.cache, config,
                               ServerMetrics(lambda: (self.cache.stats, len(self.model.tasks))))
        self.batcher.start()
        self.replica = serve.get_replica_context().replica_id.unique_id
        self._evictions_seen = 0
        self.watcher = StoreWatcher.for_store(self.cache, config.store_poll_s)

    def check_health(self) -> None:
        if not self.batcher.alive:
            raise RuntimeError("the engine thread of this replica has stopped")

    @serve.multiplexed(max_num_models_per_replica=-1)  # no cap: the cache's byte budget evicts
    async def adapter(self, task: str) -> str:
        error = (await asyncio.to_thread(self.cache.ensure_available, [task])).get(task)
        if error is not None:
            raise error  # not registered with Ray; the batcher answers with the error body
        return task

    def _trim_routing(self, force: bool = False) -> None:
        """Ray's list of this replica's models := the adapters the cache kept resident.

        Per request only when the cache evicted something since the last trim."""
        evictions = self.cache.stats.evictions
        if not force and evictions == self._evictions_seen:
            return
        self._evictions_seen = evictions
        wrapper = getattr(self, "__serve_multiplex_wrapper", None)  # Ray's LRU of our ids
        if wrapper is None:
            return
        gone = [name for name in wrapper.models if name not in self.model.tasks]
        for name in gone:
            del wrapper.models[name]
        if gone:
            wrapper._push_multiplexed_replica_info = True

    async def predict(self, inputs: list, seconds_left: float) -> dict:
        """Outputs for the request's task (its multiplexed model id), or an error body."""
        task = serve.get_multiplexed_model_id()
        warm = task in self.model.tasks
        with contextlib.suppress(Exception):  # a refused adapter: the batcher gives its error
            await self.adapter(task)
        answer = {"served_by": self.replica, "warm": warm}
        try:
            resident, outputs = await self.batcher.submit(task, inputs,
                                                          time.monotonic() + seconds_left)
        except ServeError as e:
            return {**answer, "error": [e.status, e.code, e.message, e.headers]}
        finally:
            self._trim_routing()
        return {**answer, "kind": resident.spec.kind, "outputs": outputs}

    # -- admin, broadcast to every replica ------------------------------------------------------

    async def load(self, name: str) -> str | None:
        error = (await asyncio.to_thread(self.cache.ensure_available, [name])).get(name)
        if error is not None:
            return str(error)
        await self.adapter(name)  # the router learns that this replica holds it
        return None

    async def install(self, name: str, source: str) -> str | None:
        """Verify and install into the shared store (run on one replica); the error, if any."""
        try:
            await asyncio.to_thread(admin.install, self.cache, name, source)
        except (ValueError, OSError) as e:
            return str(e)
        return None

    async def reload(self, name: str) -> None:
        """A resident `name` swaps to the store's current version (after an install)."""
        store = self.cache.store
        if getattr(store, "remote", False):  # the pointer as it is now, not as last polled
            await asyncio.to_thread(store.refresh, name)
        await asyncio.to_thread(self.cache.reload, name)

    async def unload(self, name: str) -> None:
        await asyncio.to_thread(self.cache.drop, name)
        self._trim_routing(force=True)

    async def state(self) -> dict:
        return {"replica": self.replica, "alive": self.batcher.alive,
                "swaps": 0 if self.watcher is None else self.watcher.swaps,
                "resident": {n: t.digest for n, t in list(self.model.tasks.items())},
                "stats": asdict(self.cache.stats)}


class RayServer(Server):
    """The gateway's side of the routes: the engine's work goes to the engine replicas."""

    def __init__(self, config: ServeConfig, engine) -> None:
        self.engine = engine  # the DeploymentHandle of the EngineReplica deployment
        super().__init__(config)

    def engine_init(self, model: None) -> None:
        self._figures = (CacheStats(), 0)  # the replicas' cache figures at the last scrape
        self.metrics = ServerMetrics(lambda: self._figures)

    def is_resident(self, name: str) -> bool:
        return False  # the store decides (an install exchanges directories atomically)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def _states(self) -> list[dict]:
        return await self.engine.broadcast("state").results_async(timeout_s=30)

    async def alive(self) -> bool:
        with contextlib.suppress(Exception):
            states = await self._states()
            return bool(states) and all(s["alive"] for s in states)
        return False

    async def healthy(self) -> bool:
        # The gateway runs no engine; a replica whose engine died fails Ray's health check
        # (EngineReplica.check_health) and Ray replaces it.
        return True

    async def predict(self, task: str, inputs: list, deadline: float,
                      tenant: str = "local") -> tuple[str, list, dict]:
        # each replica's queue is shared by tenants without lines of their own (not yet fair)
        handle = self.engine.options(multiplexed_model_id=task)
        answer = await handle.predict.remote(inputs, deadline - time.monotonic())
        headers = served_headers(answer["served_by"], answer["warm"])
        if "error" in answer:
            status, code, message, extra = answer["error"]
            raise ServeError(status, code, message, extra)  # the same error as one process
        return answer["kind"], answer["outputs"], headers

    async def residents(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for s in await self._states():
            found.update(s["resident"])
        return found

    async def load(self, name: str) -> str | None:
        errors = await self.engine.broadcast("load", name).results_async(timeout_s=300)
        return next((e for e in errors if e is not None), None)

    async def install(self, name: str, source: str) -> None:
        error = await self.engine.install.remote(name, source)
        if error is not None:
            raise ValueError(error)
        await self.engine.broadcast("reload", name).results_async(timeout_s=300)

    async def unload(self, name: str) -> None:
        await self.engine.broadcast("unload", name).results_async(timeout_s=300)

    async def refresh_metrics(self) -> None:
        total, resident = CacheStats(), 0
        for s in await self._states():
            for key, value in s["stats"].items():
                setattr(total, key, getattr(total, key) + value)
            resident += len(s["resident"])
        self._figures = (total, resident)


@serve.ingress()
class Gateway:
    """The HTTP ingress: the single-process server's app over a `RayServer`."""

    def __init__(self, config: ServeConfig, engine) -> None:
        self.config = config
        self.server = RayServer(config, engine)

    def __serve_build_asgi_app__(self):
        return create_app(self.config, server=self.server)


def replica_options(config: ServeConfig, replica_cpus: float = 1.0,
                    gpus_per_replica: float = 0.0) -> tuple[dict, ServeConfig]:
    """What each engine replica asks Ray for, and the settings it runs with.

    GPUs are a resource Ray hands out: a replica uses one only when it asked for one
    (`gpus_per_replica`, a fraction such as 0.5 to share a GPU, or a whole number), and then
    Ray makes it the replica's `cuda:0`. So `--device auto` means the GPU with GPUs asked for
    and the CPU without, and `--device cuda` without GPUs asked for is refused."""
    gpus = float(gpus_per_replica)
    if not (gpus >= 0 and (gpus <= 1 or gpus.is_integer())):
        raise ServeConfigError(f"--ray-gpus-per-replica {gpus_per_replica}: give a fraction "
                               "of one GPU (e.g. 0.5, replicas then share it) or a whole number")
    device = config.device.strip().lower()
    if gpus and device == "cpu":
        raise ServeConfigError(f"--ray-gpus-per-replica {gpus_per_replica} with --device cpu: "
                               "the GPUs would sit idle; drop one of the two")
    if not gpus and device.startswith("cuda"):
        raise ServeConfigError(f"--device {config.device} on Ray needs GPUs for the replicas: "
                               "add --ray-gpus-per-replica 1 (or a fraction), or use --device auto")
    options = {"num_cpus": replica_cpus}
    if gpus:
        options["num_gpus"] = gpus
    elif device == "auto":
        config = replace(config, device="cpu")
    return options, config


def build(config: ServeConfig, replicas: int = 1, replica_cpus: float = 1.0,
          gpus_per_replica: float = 0.0):
    """The Ray Serve application: a gateway and `replicas` engine replicas (each asking Ray
    for `replica_cpus` CPUs and `gpus_per_replica` GPUs: see `replica_options`)."""
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    # replicas share the machine: each defaults to its share of the cores
    config = replace(config, torch_threads=config.engine_threads(replicas))
    options, replica_config = replica_options(config, replica_cpus, gpus_per_replica)
    # Both deployments take many requests at once: the batcher's bounded queue answers 429,
    # and a replica that holds a task's adapter stays the router's choice under load.
    ongoing = config.queue_inputs
    grace = config.shutdown_grace_s
    engine = serve.deployment(EngineReplica, name="AdapterEngine", num_replicas=replicas,
                              max_ongoing_requests=ongoing, graceful_shutdown_timeout_s=grace,
                              ray_actor_options=options)
    gateway = serve.deployment(Gateway, name="Gateway", num_replicas=1,
                               max_ongoing_requests=ongoing, graceful_shutdown_timeout_s=grace,
                               ray_actor_options={"num_cpus": 0})
    return gateway.bind(config, engine.bind(replica_config))


def start(config: ServeConfig, replicas: int = 1, replica_cpus: float = 1.0,
          gpus_per_replica: float = 0.0) -> None:
    """Deploy on the Ray instance this process is connected to (call `ray.init` first)."""
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(build(config, replicas, replica_cpus, gpus_per_replica), name=APP_NAME,
              route_prefix="/")


def serve_ray(config: ServeConfig, replicas: int, address: str | None = None,
              gpus_per_replica: float = 0.0) -> None:
    """Run on Ray until SIGTERM/SIGINT: join the cluster at `address` (or RAY_ADDRESS), or
    start a local Ray instance; then delete the application (and stop a local instance)."""
    import ray

    replica_options(config, gpus_per_replica=gpus_per_replica)  # refused before Ray starts
    address = address or os.environ.get("RAY_ADDRESS") or None
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    if config.keys is None:
        print(f"adapters-kit serve --ray: no keys file, so listening on loopback only "
              f"({config.host}); every local caller may use every task and the admin routes. "
              "Pass --keys FILE.toml to serve tenants.", file=sys.stderr, flush=True)
    where = f"the Ray cluster at {address}" if address else "a local Ray instance"
    try:
        start(config, replicas, gpus_per_replica=gpus_per_replica)
        gpus = f", {gpus_per_replica:g} GPU each" if gpus_per_replica else ", on the CPU"
        print(f"adapters-kit serve --ray: {replicas} engine replica(s){gpus} on {where}, store "
              f"{config.store}, base {config.backbone}; http://{config.host}:{config.port}/docs",
              file=sys.stderr, flush=True)
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        done.wait()
    finally:
        with contextlib.suppress(Exception):
            serve.delete(APP_NAME)
        if not address:
            serve.shutdown()
        ray.shutdown()
