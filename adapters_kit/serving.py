"""The multi-task serving API in one place: a shared base with a bank of adapters.

    from adapters_kit.serving import AdapterCache, AdapterStore, MultiTaskModel

    engine = MultiTaskModel("embedded-distilbert")
    cache = AdapterCache(engine, AdapterStore("adapters"), budget_bytes=512 * 2**20)
    cache.predict_mixed([("sst2", "a gem"), ("conll2003", "Ada Lovelace met Babbage")])

`MultiTaskModel` (runtime.py) owns the engine: banks, mixed batches, hot-swap with leases.
`AdapterCache` (cache.py) loads adapters lazily from a store under a byte budget, LRU.
`merge_adapter` (merge.py) exports one adapter merged into its base for single-task serving.
"""

from .cache import AdapterCache, CacheStats
from .evaluation import evaluate_adapter
from .merge import merge_adapter
from .runtime import MultiTaskModel, ResidentTask
from .store import AdapterStore

__all__ = ["AdapterCache", "AdapterStore", "CacheStats", "MultiTaskModel", "ResidentTask",
           "evaluate_adapter", "merge_adapter"]
