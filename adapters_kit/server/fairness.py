"""Each tenant's share of the server: a request rate per tenant (a token bucket at the door).

The queue's share per tenant is the batcher's (`Batcher.tenant_inputs`, its lines taken in
turn); this is the optional rate on top of it (`ServeConfig.tenant_rate`): a tenant over its
rate gets 429 with Retry-After, and no other tenant's requests are counted against it.
"""

from __future__ import annotations

import math
import threading
import time

from .errors import ServeError


class TenantRates:
    """Requests a second per tenant, with bursts of up to one second's worth (at least one)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, when)
        self._lock = threading.Lock()

    def admit(self, tenant: str) -> None:
        """Take one request's token for `tenant`, or raise 429 saying when to come back."""
        if not self.rate:
            return
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(tenant, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens < 1.0:
                self._buckets[tenant] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / self.rate)
                raise ServeError(429, "tenant_rate_limited", f"this API key sends more than its "
                                 f"{self.rate:g} requests a second; retry after {wait} s",
                                 headers={"Retry-After": str(wait)})
            self._buckets[tenant] = (tokens - 1.0, now)
