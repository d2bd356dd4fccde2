"""The multi-task serving API in one place: a shared base with a bank of adapters.

    from adapters_kit.serving import AdapterCache, MultiTaskModel, open_store

    engine = MultiTaskModel("embedded-distilbert")
    cache = AdapterCache(engine, open_store("adapters"), budget_bytes=512 * 2**20)
    cache.predict_mixed([("sst2", "a gem"), ("conll2003", "Ada Lovelace met Babbage")])

`MultiTaskModel` (runtime.py) owns the engine: banks, mixed batches, hot-swap with leases.
`AdapterCache` (cache.py) loads adapters lazily from a store under a byte budget, LRU.
`merge_adapter` (merge.py) exports one adapter merged into its base for single-task serving.
`ray_application` / `serve_ray` (server/ray_app.py, needs the `ray` extra) serve a store on
Ray Serve: N engine replicas, requests routed by task with model multiplexing.
"""

from .adapters import AdapterStore, LocalStore, RemoteStore, open_store
from .adapters.merge import merge_adapter
from .engine.cache import AdapterCache, CacheStats
from .engine.model import MultiTaskModel, ResidentTask
from .evaluation import evaluate_adapter

# and, lazily, ray_application and serve_ray
__all__ = ["AdapterCache", "AdapterStore", "CacheStats", "LocalStore", "MultiTaskModel",
           "RemoteStore", "ResidentTask", "evaluate_adapter", "merge_adapter", "open_store"]


def __getattr__(name: str):
    # Ray is imported only when asked for: `import adapters_kit` never needs it.
    if name in ("ray_application", "serve_ray"):
        from .server import ray_app

        return {"ray_application": ray_app.build, "serve_ray": ray_app.serve_ray}[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
