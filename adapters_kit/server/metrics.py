"""Prometheus metrics of one server: its own registry, so several servers in a process never mix."""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..engine.cache import CacheStats

CacheFigures = Callable[[], tuple[CacheStats, int]]
"""The adapter cache's counters and the number of resident adapters, read at scrape time."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _CacheCollector:
    """Reads the adapter cache's counters at scrape time (no second copy to keep in sync)."""

    def __init__(self, figures: CacheFigures) -> None:
        self.figures = figures

    def collect(self):
        s, resident = self.figures()
        for name, value, doc in (("hits", s.hits, "task lookups that found the adapter resident"),
                                 ("misses", s.misses, "task lookups that had to load the adapter"),
                                 ("loads", s.loads, "adapters loaded from the store"),
                                 ("evictions", s.evictions, "adapters unloaded for the budget")):
            c = CounterMetricFamily(f"adapters_kit_cache_{name}", doc)
            c.add_metric([], value)
            yield c
        g = GaugeMetricFamily("adapters_kit_resident_adapters", "adapters resident in the engine")
        g.add_metric([], resident)
        yield g
        g = GaugeMetricFamily("adapters_kit_resident_adapter_bytes",
                              "bytes the engine holds for resident adapters (bank rows, padding, "
                              "heads), under the cache budget")
        g.add_metric([], s.resident_bytes)
        yield g


OTHER_TASKS = "other"
"""The task label of every task past the first `limit` named ones (see TaskLabels)."""


class TaskLabels:
    """The `task` label of the per-task metrics, with the label set bounded: a task is named
    once it has been resident (so only real, loaded tasks are named, never a caller's
    made-up name) while fewer than `limit` are named; every other task counts as `other`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._named: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, task: str, resident: bool) -> str:
        if task in self._named:
            return task
        with self._lock:
            if resident and len(self._named) < self.limit:
                self._named.add(task)
                return task
        return OTHER_TASKS


class ServerMetrics:
    def __init__(self, cache_figures: CacheFigures, task_labels: int = 32) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("adapters_kit_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("adapters_kit_request_seconds", "HTTP request latency by route",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("adapters_kit_requests_in_flight", "HTTP requests being handled",
                               registry=r)
        self.queue_depth = Gauge("adapters_kit_queue_inputs",
                                 "inputs waiting in the batcher's queue", registry=r)
        self.batch_inputs = Histogram("adapters_kit_batch_inputs", "inputs per engine batch",
                                      buckets=_SIZE_BUCKETS, registry=r)
        self.batch_rows = Histogram("adapters_kit_batch_rows", "model rows per forward pass",
                                    buckets=_SIZE_BUCKETS, registry=r)
        self.batch_tasks = Histogram("adapters_kit_batch_tasks", "distinct tasks per engine batch",
                                     buckets=_SIZE_BUCKETS, registry=r)
        self.rejected = Counter("adapters_kit_rejected", "requests refused before the engine",
                                ["reason"], registry=r)
        self.deadline_exceeded = Counter(
            "adapters_kit_deadline_exceeded", "requests answered 504, by where their time ran "
            "out: queued (taken after it), in_batch (between chunks), answer (the batch ran "
            "past it)", ["where"], registry=r)
        self.task_label = TaskLabels(task_labels)
        self.task_requests = Counter("adapters_kit_task_requests", "predict requests by task and "
                                     "status (tasks past the label limit: task=\"other\")",
                                     ["task", "status"], registry=r)
        self.task_latency = Histogram("adapters_kit_task_seconds", "predict latency by task "
                                      "(tasks past the label limit: task=\"other\")", ["task"],
                                      buckets=_LATENCY_BUCKETS, registry=r)
        r.register(_CacheCollector(cache_figures))

    def observe_task(self, task: str, resident: bool, status: int, seconds: float) -> None:
        label = self.task_label(task, resident)
        self.task_requests.labels(label, str(status)).inc()
        self.task_latency.labels(label).observe(seconds)
