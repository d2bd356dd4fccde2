"""A serving process notices new versions in a remote store: it polls the pointers of its
resident tasks and hot-swaps through `AdapterCache.reload`, with the same refusal rules as an
admin replace (the new version is verified first; if refused, the old one keeps serving).

    watcher = StoreWatcher(cache, interval_s=2.0)
    watcher.start()   # a daemon thread; watcher.stop() ends it
"""

from __future__ import annotations

import logging
import threading

from .cache import AdapterCache

log = logging.getLogger("adapters_kit.engine.watch")


class StoreWatcher:
    """Poll every `interval_s` the pointers of the tasks resident in `cache` (one batch of GETs
    per poll); swap each whose pointer names another version."""

    def __init__(self, cache: AdapterCache, interval_s: float = 2.0) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.cache = cache
        self.interval_s = interval_s
        self.swaps = 0
        self.refused: dict[str, str] = {}  # task -> the version refused (not retried until it changes)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_store(cls, cache: AdapterCache, interval_s: float) -> StoreWatcher | None:
        """A started watcher if the cache's store is remote; None for a local folder store."""
        if not getattr(cache.store, "remote", False):
            return None
        watcher = cls(cache, interval_s)
        watcher.start()
        return watcher

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="adapters-kit-store-watch",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception as e:  # the store unreachable for a while: keep serving, retry
                log.warning("polling the store's pointers failed: %s", e)

    def poll(self) -> dict[str, str]:
        """One poll: task -> outcome ("swapped", "refused: ...") for each task that changed."""
        store, model = self.cache.store, self.cache.model
        resident = {name: t.digest for name, t in list(model.tasks.items())}
        if not resident:
            return {}
        pointers = store.pointers(sorted(resident))
        outcome = {}
        for name, pointer in pointers.items():
            if pointer is None or pointer.version == resident[name]:
                continue  # a task removed from the store keeps serving what it has
            if self.refused.get(name) == pointer.version:
                continue
            try:
                # fetched and verified into the local cache first, outside the cache's lock:
                # the swap itself then reads local files, and batches wait only for that
                store.read_version(name, pointer.version, model.max_adapter_bytes())
                self.cache.reload(name)
            except Exception as e:
                self.refused[name] = pointer.version
                outcome[name] = f"refused: {e}"
                log.error("task %s: new version %s refused, the old one keeps serving: %s",
                          name, pointer.version[:12], e)
                continue
            self.refused.pop(name, None)
            self.swaps += 1
            outcome[name] = "swapped"
            log.info("task %s: now serving version %s", name, pointer.version[:12])
        return outcome
