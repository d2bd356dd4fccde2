"""Adapters loaded lazily from a store, kept resident under a byte budget, evicted LRU."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from .runtime import MultiTaskModel, TextInput
from .store import AdapterStore


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    loads: int = 0
    evictions: int = 0
    resident: int = 0
    resident_bytes: int = 0


class AdapterCache:
    """Serve any task in `store` on one `MultiTaskModel`, keeping at most `budget_bytes` resident.

    A request for a task that is not resident loads it (verified, as every load is); when the
    budget is exceeded, the least recently used adapters not needed by the current batch are
    unloaded. An evicted task comes back transparently on its next request.
    """

    def __init__(self, model: MultiTaskModel, store: AdapterStore, budget_bytes: int) -> None:
        self.model = model
        self.store = store
        self.budget_bytes = budget_bytes
        self.stats = CacheStats()
        self._lru: OrderedDict[str, int] = OrderedDict()  # task -> bytes, oldest first
        self._lock = threading.Lock()

    def ensure(self, tasks: list[str]) -> None:
        """Make `tasks` resident, evicting others if the budget needs it."""
        wanted = list(dict.fromkeys(tasks))
        with self._lock:
            for name in wanted:
                if name in self._lru and name in self.model.tasks:
                    self.stats.hits += 1
                    self._lru.move_to_end(name)
                    continue
                self.stats.misses += 1
                files = self.store.read(name)
                self.model.load(files, name=name)
                self.stats.loads += 1
                self._lru[name] = files.nbytes
                self._lru.move_to_end(name)
            self._evict(keep=set(wanted))
            self.stats.resident = len(self._lru)
            self.stats.resident_bytes = sum(self._lru.values())

    def _evict(self, keep: set[str]) -> None:
        total = sum(self._lru.values())
        for name in list(self._lru):
            if total <= self.budget_bytes:
                break
            if name in keep:
                continue
            total -= self._lru.pop(name)
            self.model.unload(name)
            self.stats.evictions += 1

    def predict_mixed(self, requests: list[tuple[str, TextInput]]) -> list[dict]:
        self.ensure([name for name, _ in requests])
        return self.model.predict_mixed(requests)

    def predict(self, task: str, inputs: list[TextInput]) -> list[dict]:
        self.ensure([task])
        return self.model.predict(task, inputs)
