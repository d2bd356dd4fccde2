"""Dynamic batching: admission (`admission.Admission`: the tenants' lines, shares, refusals)
in front of the engine thread (`runner.EngineRunner`: mixed-task batches by a token budget).

`Batcher` puts the two together for the HTTP server and each Ray engine replica: requests are
submitted on the asyncio side and answered, through their futures, from the engine thread.
"""

from __future__ import annotations

import asyncio

from ..engine.cache import AdapterCache
from .admission import Admission
from .config import ServeConfig
from .metrics import ServerMetrics
from .runner import EngineRunner


class Batcher:
    """One admission queue and the one engine thread that serves it."""

    def __init__(self, cache: AdapterCache, config: ServeConfig, metrics: ServerMetrics,
                 tenant_inputs: int | None = None) -> None:
        self.cache = cache
        self.model = cache.model
        self.config = config
        self.admission = Admission(config, metrics, tenant_inputs)
        self.runner = EngineRunner(cache, config, metrics, self.admission)

    @property
    def tenant_inputs(self) -> int:
        """Most inputs one tenant may have waiting (its share of `queue_inputs`)."""
        return self.admission.tenant_inputs

    @property
    def on_failure(self) -> list:
        """Called (on the engine thread) if it dies; serve() ends the process non-zero."""
        return self.runner.on_failure

    def start(self) -> None:
        self.runner.start()

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new requests, run every queued one, then end the engine thread."""
        self.admission.close()
        self.runner.join(timeout)

    @property
    def alive(self) -> bool:
        return self.runner.running and not self.admission.closed

    @property
    def failed(self) -> bool:
        """The engine thread ended without a stop: nothing will answer predictions again."""
        return self.runner.failed

    def submit(self, task: str, inputs: list, deadline: float,
               tenant: str = "local") -> asyncio.Future:
        """Queue a request in `tenant`'s line; its future gets (task, outputs) or a ServeError."""
        return self.admission.submit(task, inputs, deadline, tenant)

    def expected_wait(self, chars: int, tenant: str | None = None) -> float | None:
        """Seconds until a request of `chars` characters would be answered (see Admission)."""
        return self.admission.expected_wait(chars, tenant)
