"""Admission: who may wait for the engine, in which line, and who is refused (429, 503, 504).

The asyncio side enqueues whole requests (task, inputs, future), each in its tenant's line.
Each tenant may hold at most its share of the queue (`tenant_inputs`); beyond it that tenant
alone gets 429 with Retry-After. A request whose expected wait (the queue's characters over the
engine's recent rate) would eat most of its deadline is refused at the door with 429, while the
caller can still go elsewhere. The engine thread (`runner.EngineRunner`) takes requests from
the tenants' lines in turn (one request of each tenant that has one waiting, round and round),
so a tenant that floods the queue waits behind itself, not in front of the others; before it
runs one it asks here whether the request can still make its deadline (429 if not) and whether
it is already past it (504).

Nothing here touches the engine: the runner reports the engine's pace (`Pace`) and admission
judges with it, so these decisions can be tested without a model.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from .config import ServeConfig
from .errors import ServeError, deadline_exceeded
from .limits import input_chars
from .metrics import ServerMetrics

ADMIT_SHARE = 0.5
"""A request is refused (429) when its expected wait exceeds this share of its deadline: the
estimate is a moving average, and a batch already running may hold long rows."""

START_MARGIN = 1.25
"""When the engine takes a request, it is run only if the batch's expected run time, times
this margin (or the recent slowdown, if larger), still ends before the request's deadline;
otherwise it is shed with 429 before any of the engine's time is spent on it (it would only
have come back as a 504)."""

DELIVERY_SLACK_S = 0.25
"""The engine plans to finish this long before a deadline: the answer still has to cross to
the event loop, which may be busy with other callers, before the deadline's timer fires."""

ACTIVE_S = 2.0
"""A tenant that queued a request within this many seconds counts as sending: while several
are, each may fill at most an equal share of a batch's token budget (its first request always
fits)."""


@dataclass
class Job:
    """One predict request waiting for (or in) the engine."""

    task: str
    inputs: list
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    deadline: float
    """time.monotonic() after which the request is not worth running."""
    chars: int = 0
    """Characters of all its inputs: the admission estimate's unit of work."""
    tenant: str = "local"
    """Whose request it is: the line it waits in."""

    def resolve(self, result=None, error: BaseException | None = None) -> None:
        """Answer the request on its own event loop (from any thread)."""
        try:
            self.loop.call_soon_threadsafe(_settle, self.future, result, error)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


def _settle(future: asyncio.Future, result=None, error: BaseException | None = None) -> None:
    if future.done():  # the caller gave up (deadline, disconnect)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


@dataclass
class Pace:
    """The engine's recent pace, measured by the engine thread; admission's estimates read it."""

    chars_per_s: float = 0.0
    """Characters of requests served a second: a moving average over batches (0: unknown)."""
    tokens_per_s: float = 0.0
    """Word pieces through the forward passes a second: a moving average (0: unknown)."""
    slowdown: float = 1.0
    """Recent worst of a batch's run time over its estimate."""
    batch_chars: int = 0
    """Characters of the requests in hand: the batch being gathered or run."""
    batch_started: float = 0.0
    """When the engine started working on the batch (its idle wait not counted)."""

    def measure_batch(self) -> None:
        """The rate in characters a second, from the batch just finished."""
        seconds = time.monotonic() - self.batch_started
        if self.batch_chars and seconds > 0:
            rate = self.batch_chars / seconds
            self.chars_per_s = rate if not self.chars_per_s else 0.8 * self.chars_per_s + 0.2 * rate
        self.batch_chars = 0

    def measure_tokens(self, tokens: int, seconds: float) -> None:
        """The forward passes' rate in word pieces a second: the unit in which the engine
        judges, when it takes a request, whether it can still make its deadline. Also the
        slowdown: how much longer than estimated the batch ran (it follows a slower batch at
        once and relaxes by 5% a batch)."""
        if tokens and seconds > 0:
            rate = tokens / seconds
            if self.tokens_per_s:
                ratio = self.tokens_per_s / rate
                self.slowdown = max(ratio, 1.0 + 0.95 * (self.slowdown - 1.0))
            self.tokens_per_s = rate if not self.tokens_per_s else \
                0.8 * self.tokens_per_s + 0.2 * rate


class Admission:
    """The tenants' lines, their shares, and every refusal decided before the engine runs."""

    def __init__(self, config: ServeConfig, metrics: ServerMetrics,
                 tenant_inputs: int | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.tenant_inputs = tenant_inputs or config.tenant_queue_inputs or config.queue_inputs
        """Most inputs one tenant may have waiting (its share of `queue_inputs`)."""
        self.pace = Pace()
        self.pending = 0
        """Inputs queued, not yet taken by the engine thread."""
        self._lines: OrderedDict[str, deque[Job]] = OrderedDict()  # tenant -> its waiting
        # requests; the first tenant's turn is next
        self._tenant_inputs: dict[str, int] = {}  # tenant -> inputs waiting
        self._tenant_chars: dict[str, int] = {}  # tenant -> characters waiting
        self._seen: dict[str, float] = {}  # tenant -> when it last queued a request
        self._pending_chars = 0  # characters of the queued inputs
        self._cond = threading.Condition()
        self._closed = False

    # -- the asyncio side -----------------------------------------------------------------------

    def submit(self, task: str, inputs: list, deadline: float,
               tenant: str = "local") -> asyncio.Future:
        """Queue a request in `tenant`'s line; its future gets the outputs or a ServeError.
        Never blocks; raises ServeError (503 closed, 429 full or too late) instead of queuing."""
        loop = asyncio.get_running_loop()
        job = Job(task, inputs, loop, loop.create_future(), deadline,
                  sum(input_chars(x) for x in inputs), tenant)
        with self._cond:
            if self._closed:
                raise ServeError(503, "shutting_down", "the server is shutting down; retry "
                                 "against another instance or after it restarts")
            mine = self._tenant_inputs.get(tenant, 0)
            if self.tenant_inputs < self.config.queue_inputs and mine + len(inputs) > self.tenant_inputs:
                # this tenant's share is full: it alone is refused, the others keep theirs
                raise self.refusal("tenant_queue_full", "tenant_overloaded",
                                   f"this API key's share of the queue is full ({mine} of its "
                                   f"inputs waiting, at most {self.tenant_inputs} per tenant); "
                                   "retry after {s} s or send fewer requests at once")
            wait = self.expected_wait(job.chars, tenant)
            if wait is not None and wait > ADMIT_SHARE * (deadline - time.monotonic()):
                # It would wait past its deadline and get 504 after holding a place: refused
                # now, while the caller can still go elsewhere.
                raise self.refusal("deadline_unreachable", "overloaded",
                                   f"the server's queue holds about {wait:.1f} s of work, more "
                                   "than this request's deadline leaves; retry after {s} s")
            if self.pending + len(inputs) > self.config.queue_inputs:
                raise self.refusal("queue_full", "overloaded",
                                   f"the server's queue is full ({self.pending} inputs waiting, "
                                   f"at most {self.config.queue_inputs}); retry after {{s}} s")
            self._lines.setdefault(tenant, deque()).append(job)
            self._seen[tenant] = time.monotonic()
            self._tenant_inputs[tenant] = mine + len(inputs)
            self._tenant_chars[tenant] = self._tenant_chars.get(tenant, 0) + job.chars
            self.pending += len(inputs)
            self._pending_chars += job.chars
            self.metrics.queue_depth.set(self.pending)
            self._cond.notify()
        return job.future

    def expected_wait(self, chars: int, tenant: str | None = None) -> float | None:
        """Seconds until a request of `chars` characters of `tenant` would be answered, from the
        batch running now, the queue's characters and the engine's recent rate; None while the
        engine is idle or its rate is not yet known (a request is never refused for its own size
        alone). Tenants take turns, so of another tenant's line only as much runs first as this
        tenant has waiting, its new request included (None: one line, first come first
        served)."""
        pace = self.pace
        if not (self._pending_chars or pace.batch_chars) or not pace.chars_per_s:
            return None
        if tenant is None:
            ahead = self._pending_chars + chars
        else:
            mine = self._tenant_chars.get(tenant, 0) + chars
            ahead = mine + sum(min(c, mine) for t, c in self._tenant_chars.items() if t != tenant)
        return (ahead + pace.batch_chars) / pace.chars_per_s

    def close(self) -> None:
        """Refuse new requests (503); the queued ones are still taken, then `take` gives None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the engine thread's side ---------------------------------------------------------------

    def take(self, timeout: float | None) -> Job | None:
        """The next queued job, the tenants in turn, waiting up to `timeout` (None: until one
        comes or a close with the queue empty)."""
        with self._cond:
            end = None if timeout is None else time.monotonic() + timeout
            while not self._lines:
                if self._closed:
                    return None
                remaining = None if end is None else end - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            tenant, line = next(iter(self._lines.items()))
            job = line.popleft()
            if line:
                self._lines.move_to_end(tenant)  # the next tenant's turn
            else:
                del self._lines[tenant]
            left = self._tenant_inputs.pop(tenant) - len(job.inputs)
            chars = self._tenant_chars.pop(tenant) - job.chars
            if left > 0 or line:
                self._tenant_inputs[tenant], self._tenant_chars[tenant] = left, chars
            # in hand from now on: `expected_wait` counts it as the running batch's (preparing
            # it may wait for a load or a held engine), before it leaves the queue's count
            self.pace.batch_chars += job.chars
            self.pending -= len(job.inputs)
            self._pending_chars -= job.chars
            self.metrics.queue_depth.set(self.pending)
            return job

    def drain(self) -> list[Job]:
        """Close, and hand back every queued job (the engine died: the caller answers them)."""
        with self._cond:
            self._closed = True
            jobs = [job for line in self._lines.values() for job in line]
            self._lines.clear()
            self._tenant_inputs.clear()
            self._tenant_chars.clear()
            self.pending = self._pending_chars = 0
        return jobs

    def active_tenants(self) -> int:
        """Tenants that sent a request within the last ACTIVE_S seconds (at least 1)."""
        now = time.monotonic()
        with self._cond:
            for tenant, seen in list(self._seen.items()):
                if now - seen > ACTIVE_S:
                    del self._seen[tenant]
            return max(1, len(self._seen))

    def late(self, job: Job) -> ServeError | None:
        """The 504 for a job whose deadline passed while it waited in the queue (counted)."""
        if time.monotonic() <= job.deadline:
            return None
        self.metrics.deadline_exceeded.labels("queued").inc()
        return deadline_exceeded(self.config.deadline_s)

    def ends_after(self, tokens: int, deadline: float) -> bool:
        """Would a batch of `tokens` word pieces, started now, end after `deadline` (less the
        delivery slack)? The estimate is the recent rate times the larger of the margin and
        the recent slowdown: on a machine shared with other work the rate swings within
        seconds, and a batch that ran twice as long as estimated makes the next estimates
        twice as cautious until the engine catches up."""
        rate = self.pace.tokens_per_s
        margin = max(START_MARGIN, self.pace.slowdown)
        return bool(rate) and time.monotonic() + tokens / rate * margin > deadline - DELIVERY_SLACK_S

    def cannot_finish(self, own_tokens: int, batch_tokens: int, deadline: float) -> bool:
        """Would a batch of `batch_tokens` word pieces (a request's `own_tokens` included) end
        past the request's deadline? Only a request that could finish with the engine to
        itself is judged so: one too costly for any deadline runs and gets its 504, as before."""
        rate = self.pace.tokens_per_s
        if not rate:
            return False
        if own_tokens / rate * START_MARGIN > self.config.deadline_s * ADMIT_SHARE:
            return False
        return self.ends_after(batch_tokens, deadline)

    def shed(self) -> ServeError:
        """The 429 for a request taken too late to make its deadline (see `cannot_finish`)."""
        return self.refusal("deadline_unreachable_at_start", "overloaded", "the server fell "
                            "behind: this request waited in the queue and could no longer be "
                            "answered within its deadline; retry after {s} s")

    def refusal(self, reason: str, code: str, message: str) -> ServeError:
        """A 429 with Retry-After, counted under `reason`; `{s}` in `message` is the wait."""
        self.metrics.rejected.labels(reason).inc()
        after = str(self.config.retry_after_s)
        return ServeError(429, code, message.replace("{s}", after), headers={"Retry-After": after})
