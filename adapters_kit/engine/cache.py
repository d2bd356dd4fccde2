"""Adapters loaded lazily from a store, kept resident under a byte budget, evicted LRU."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from ..adapters import AdapterStore, open_store
from ..errors import AdapterFileError
from .model import MultiTaskModel, TextInput

log = logging.getLogger("adapters_kit.engine.cache")


def _detached(error: Exception) -> AdapterFileError:
    """The error's message without its traceback: a kept traceback holds the frames of the
    refused load, and through them its bytes, for as long as anyone keeps the error."""
    if isinstance(error, AdapterFileError):
        return AdapterFileError(str(error))
    if isinstance(error, OSError):
        return AdapterFileError(f"the adapter could not be read ({error.strerror or error})")
    return AdapterFileError(f"the adapter was refused ({type(error).__name__}: {error})")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    loads: int = 0
    evictions: int = 0
    resident: int = 0
    resident_bytes: int = 0
    """Bytes the engine holds for adapters (`MultiTaskModel.resident_bytes`): what the budget
    bounds."""


class AdapterCache:
    """Serve any task in `store` on one `MultiTaskModel`, keeping at most `budget_bytes` resident.

    The budget counts what the engine holds (`MultiTaskModel.resident_bytes`): bank rows as
    allocated, rank padding included, and the heads; not file sizes. A request for a task that
    is not resident loads it (verified, as every load is); when the budget is exceeded, the
    least recently used adapters not needed by the current batch are unloaded and the banks
    give back the rows they held (`MultiTaskModel.trim`). An evicted task comes back
    transparently on its next request. Only the tasks of one batch can hold more than the
    budget: they stay resident for it rather than fail.
    """

    def __init__(self, model: MultiTaskModel, store: AdapterStore | str | Path,
                 budget_bytes: int) -> None:
        self.model = model
        self.store = open_store(store)  # a store, or its folder or URL
        self.budget_bytes = budget_bytes
        self.stats = CacheStats()
        self._lru: OrderedDict[str, None] = OrderedDict()  # resident tasks, oldest first
        self._lock = threading.Lock()

    def ensure(self, tasks: list[str]) -> None:
        """Make `tasks` resident, evicting others if the budget needs it."""
        errors = self.ensure_available(tasks)
        if errors:
            raise next(iter(errors.values()))

    def ensure_available(self, tasks: list[str]) -> dict[str, Exception]:
        """Make as many of `tasks` resident as can be; return the error of each that cannot be.

        A task whose adapter is refused (corrupt, foreign, missing) does not stop the others:
        a server batch holding it still serves every other task.
        """
        wanted = list(dict.fromkeys(tasks))
        errors: dict[str, Exception] = {}
        with self._lock:
            for name in wanted:
                if name in self._lru and name in self.model.tasks:
                    self.stats.hits += 1
                    self._lru.move_to_end(name)
                    continue
                self.stats.misses += 1
                try:
                    self._load(name)
                except Exception as e:  # whatever one task's files do, it fails that task alone
                    errors[name] = _detached(e)
                    if not isinstance(e, (AdapterFileError, OSError)):
                        log.error("loading %s failed unexpectedly", name, exc_info=e)
                    continue
                self.stats.loads += 1
                self._lru[name] = None
                self._lru.move_to_end(name)
            self._evict(keep=set(wanted))
            self._update_stats()
        return errors

    def _load(self, name: str) -> None:
        files = self.store.read(name, self.model.max_adapter_bytes())
        self.model.load(files, name=name)

    def reload(self, name: str) -> bool:
        """Swap a resident task to the store's current files; False if it was not resident.

        The files are verified before the swap: if they are refused, the old version keeps
        serving and the error is raised.
        """
        with self._lock:
            if name not in self._lru or name not in self.model.tasks:
                return False
            files = self.store.read(name, self.model.max_adapter_bytes())
            self.model.replace(name, files)
            self._evict(keep={name})
            self._update_stats()
            return True

    def drop(self, name: str) -> bool:
        """Unload a task now (requests already running on it finish); False if not resident."""
        with self._lock:
            self._lru.pop(name, None)
            resident = name in self.model.tasks
            if resident:
                self.model.unload(name)
            self._update_stats()
            return resident

    def _update_stats(self) -> None:
        self.stats.resident = len(self._lru)
        self.stats.resident_bytes = self.model.resident_bytes()

    def _evict(self, keep: set[str]) -> None:
        if self.model.resident_bytes() <= self.budget_bytes:
            return  # free rows kept from growth cost nothing to keep while under budget
        for name in list(self._lru):
            if self.model.resident_bytes(trimmed=True) <= self.budget_bytes:
                break
            if name in keep:
                continue
            del self._lru[name]
            self.model.unload(name)
            self.stats.evictions += 1
        self.model.trim()

    def predict_mixed(self, requests: list[tuple[str, TextInput]]) -> list[dict]:
        self.ensure([name for name, _ in requests])
        return self.model.predict_mixed(requests)

    def predict(self, task: str, inputs: list[TextInput]) -> list[dict]:
        self.ensure([task])
        return self.model.predict(task, inputs)
