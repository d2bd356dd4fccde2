"""Dynamic batching: one queue shared fairly by tenants, one engine thread, mixed-task batches
by a token budget.

The asyncio side enqueues whole requests (task, inputs, future), each in its tenant's line.
Each tenant may hold at most its share of the queue (`tenant_inputs`); beyond it that tenant
alone gets 429 with Retry-After. The engine thread takes requests from the tenants' lines in
turn (one request of each tenant that has one waiting, round and round), so a tenant that
floods the queue waits behind itself, not in front of the others. It takes the first request,
then keeps taking requests for at most `max_wait_ms` or until the gathered rows reach
`batch_tokens`. Each request's task is made resident (through the adapter
cache) and leased, so a replace or unload during the batch never changes an answer halfway;
its inputs are tokenised; all rows of all requests are sorted by length and cut into chunks
whose padded size (rows x longest row) fits the token budget, so short texts are not padded to
long ones. Each chunk is one pass through the base whatever its mix of tasks. Each request's
future is resolved on its own event loop with its own outputs, in input order.

A request that cannot be served (bad input, bad adapter file, past its deadline) fails alone:
the others in the batch are answered as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from ..engine.cache import AdapterCache
from ..engine.memory import HeapTrimmer
from ..engine.model import ResidentTask, plan_chunks
from ..errors import AdapterFileError, DataError
from ..tasks.kinds import Row
from .config import ServeConfig
from .errors import ServeError, deadline_exceeded, unknown_task
from .limits import input_chars
from .metrics import ServerMetrics

log = logging.getLogger("adapters_kit.server")


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


class _TooCostly(Exception):
    """A request whose inputs expand to more model rows than one request may cost."""


@dataclass
class _Prepared:
    job: Job
    task: ResidentTask
    items: list
    rows: list[list[Row]]  # per input: its model rows (a long QA context gives several)
    outs: list[list] = field(default_factory=list)


def coerce_input(task: ResidentTask, item) -> object:
    """A JSON input in the engine's terms for this task's kind, or a DataError naming the fix."""
    return task.impl.coerce(task.spec, item)


def _settle(future: asyncio.Future, result=None, error: BaseException | None = None) -> None:
    if future.done():  # the caller gave up (deadline, disconnect)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Batcher:
    """Owns the request queue and the one thread that runs the engine."""

    def __init__(self, cache: AdapterCache, config: ServeConfig, metrics: ServerMetrics,
                 tenant_inputs: int | None = None) -> None:
        self.cache = cache
        self.model = cache.model
        self.config = config
        self.metrics = metrics
        self.tenant_inputs = tenant_inputs or config.tenant_queue_inputs or config.queue_inputs
        """Most inputs one tenant may have waiting (its share of `queue_inputs`)."""
        self._lines: OrderedDict[str, deque[Job]] = OrderedDict()  # tenant -> its waiting
        # requests; the first tenant's turn is next
        self._tenant_inputs: dict[str, int] = {}  # tenant -> inputs waiting
        self._tenant_chars: dict[str, int] = {}  # tenant -> characters waiting
        self._seen: dict[str, float] = {}  # tenant -> when it last queued a request
        self._pending = 0  # inputs queued, not yet taken by the engine thread
        self._cond = threading.Condition()
        self._stopping = False
        self._failed = False
        self._pending_chars = 0  # characters of the queued inputs
        self._chars_per_s = 0.0  # the engine's recent rate (0: not yet measured)
        self._batch_chars, self._batch_started = 0, 0.0
        self._tokens_per_s = 0.0  # the forward passes' recent rate in word pieces (0: unknown)
        self._slowdown = 1.0  # recent worst of a batch's run time over its estimate
        self._carry: _Prepared | None = None  # taken, leased and tokenised; heads the next batch
        self.on_failure: list = []
        """Called (on the engine thread) if it dies; serve() ends the process non-zero."""
        self._thread = threading.Thread(target=self._work, name="adapters-kit-engine", daemon=True)

    # -- the asyncio side -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def submit(self, task: str, inputs: list, deadline: float,
               tenant: str = "local") -> asyncio.Future:
        """Queue a request in `tenant`'s line; its future gets the outputs or a ServeError.
        Never blocks."""
        loop = asyncio.get_running_loop()
        job = Job(task, inputs, loop, loop.create_future(), deadline,
                  sum(input_chars(x) for x in inputs), tenant)
        with self._cond:
            if self._stopping:
                raise ServeError(503, "shutting_down", "the server is shutting down; retry "
                                 "against another instance or after it restarts")
            mine = self._tenant_inputs.get(tenant, 0)
            if self.tenant_inputs < self.config.queue_inputs and mine + len(inputs) > self.tenant_inputs:
                # this tenant's share is full: it alone is refused, the others keep theirs
                raise self._refusal("tenant_queue_full", "tenant_overloaded",
                                    f"this API key's share of the queue is full ({mine} of its "
                                    f"inputs waiting, at most {self.tenant_inputs} per tenant); "
                                    "retry after {s} s or send fewer requests at once")
            wait = self.expected_wait(job.chars, tenant)
            if wait is not None and wait > ADMIT_SHARE * (deadline - time.monotonic()):
                # It would wait past its deadline and get 504 after holding a place: refused
                # now, while the caller can still go elsewhere.
                raise self._refusal("deadline_unreachable", "overloaded",
                                    f"the server's queue holds about {wait:.1f} s of work, more "
                                    "than this request's deadline leaves; retry after {s} s")
            if self._pending + len(inputs) > self.config.queue_inputs:
                raise self._refusal("queue_full", "overloaded",
                                    f"the server's queue is full ({self._pending} inputs waiting, "
                                    f"at most {self.config.queue_inputs}); retry after {{s}} s")
            self._lines.setdefault(tenant, deque()).append(job)
            self._seen[tenant] = time.monotonic()
            self._tenant_inputs[tenant] = mine + len(inputs)
            self._tenant_chars[tenant] = self._tenant_chars.get(tenant, 0) + job.chars
            self._pending += len(inputs)
            self._pending_chars += job.chars
            self.metrics.queue_depth.set(self._pending)
            self._cond.notify()
        return job.future

    def expected_wait(self, chars: int, tenant: str | None = None) -> float | None:
        """Seconds until a request of `chars` characters of `tenant` would be answered, from the
        batch running now, the queue's characters and the engine's recent rate; None while the
        engine is idle or its rate is not yet known (a request is never refused for its own size
        alone). Tenants take turns, so of another tenant's line only as much runs first as this
        tenant has waiting, its new request included (None: one line, first come first
        served)."""
        if not (self._pending_chars or self._batch_chars) or not self._chars_per_s:
            return None
        if tenant is None:
            ahead = self._pending_chars + chars
        else:
            mine = self._tenant_chars.get(tenant, 0) + chars
            ahead = mine + sum(min(c, mine) for t, c in self._tenant_chars.items() if t != tenant)
        return (ahead + self._batch_chars) / self._chars_per_s

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new requests, run every queued one, then end the engine thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the engine thread ----------------------------------------------------------------------

    @property
    def failed(self) -> bool:
        """The engine thread ended without a stop: nothing will answer predictions again."""
        return self._failed

    def _work(self) -> None:
        try:
            import torch

            torch.set_num_threads(self.config.engine_threads())  # see ServeConfig.torch_threads
            trimmer = HeapTrimmer()
            while True:
                try:
                    batch = self._gather()
                except Exception:  # a request that _prepare could not answer; it answered it
                    log.exception("gathering a batch failed")
                    continue
                if batch is None:
                    return
                if batch:
                    # the rate counts what was served: a refused request's characters (an
                    # oversized one is refused after tokenising part of it) would inflate it
                    self._batch_chars = sum(p.job.chars for p in batch)
                    self._run_safely(batch)
                    self._measure()
                trimmer.maybe()  # between batches: freed pages go back to the system
        except BaseException:
            # Nothing one request or adapter does reaches here (each is answered alone above).
            # If anything does, the process must not look alive: /healthz fails from now on
            # and the owner of the server (serve(): exits non-zero) is told.
            log.critical("the engine thread died; no prediction can be answered", exc_info=True)
            self._failed = True
            self._fail_queued()
            for callback in self.on_failure:
                with contextlib.suppress(Exception):
                    callback()
            raise

    def _measure(self) -> None:
        """The engine's rate in characters a second: a moving average over batches."""
        seconds = time.monotonic() - self._batch_started
        if self._batch_chars and seconds > 0:
            rate = self._batch_chars / seconds
            self._chars_per_s = rate if not self._chars_per_s else 0.8 * self._chars_per_s + 0.2 * rate
        self._batch_chars = 0

    def _measure_tokens(self, tokens: int, seconds: float) -> None:
        """The forward passes' rate in word pieces a second (a moving average over batches):
        the unit in which the engine judges, when it takes a request, whether it can still
        make its deadline. Also the slowdown: how much longer than estimated the batch ran
        (it follows a slower batch at once and relaxes by 5% a batch)."""
        if tokens and seconds > 0:
            rate = tokens / seconds
            if self._tokens_per_s:
                ratio = self._tokens_per_s / rate
                self._slowdown = max(ratio, 1.0 + 0.95 * (self._slowdown - 1.0))
            self._tokens_per_s = rate if not self._tokens_per_s else \
                0.8 * self._tokens_per_s + 0.2 * rate

    def _run_safely(self, batch: list[_Prepared]) -> None:
        try:
            self._run(batch)
        except Exception:  # the thread must survive anything one batch does
            log.exception("engine batch failed")
            for p in batch:
                _resolve(p.job, error=ServeError(500, "internal", "the engine failed on "
                                                 "this batch; the error is in the log"))
        finally:
            for p in batch:
                self.model.release(p.task)

    def _fail_queued(self) -> None:
        with self._cond:
            self._stopping = True
            jobs = [job for line in self._lines.values() for job in line]
            self._lines.clear()
            self._tenant_inputs.clear()
            self._tenant_chars.clear()
            self._pending = self._pending_chars = 0
            carried, self._carry = self._carry, None
        if carried is not None:
            with contextlib.suppress(Exception):
                self.model.release(carried.task)
            jobs.append(carried.job)
        for job in jobs:
            _resolve(job, error=ServeError(503, "engine_failed", "the engine stopped; retry "
                                           "against another instance or after a restart"))

    def _take(self, timeout: float | None) -> Job | None:
        """The next queued job, waiting up to `timeout` (None: until one comes or a stop)."""
        with self._cond:
            end = None if timeout is None else time.monotonic() + timeout
            while not self._lines:
                if self._stopping:
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
            self._batch_chars += job.chars
            self._pending -= len(job.inputs)
            self._pending_chars -= job.chars
            self.metrics.queue_depth.set(self._pending)
            return job

    def _gather(self) -> list[_Prepared] | None:
        """Requests for one batch (possibly none servable); None once stopped and drained.

        The batch is closed early when the next request would make it run past the earliest
        deadline already in it: that request is carried over to head the next batch."""
        carried, self._carry, job = self._carry, None, None
        self._batch_chars = 0 if carried is None else carried.job.chars
        if carried is None:
            job = self._take(None)
            if job is None:
                return None
        self._batch_started = time.monotonic()  # work from here: the idle wait is not counted
        batch: list[_Prepared] = []
        tokens, earliest = 0, float("inf")
        share = self.config.batch_tokens / self._active_tenants()
        mine: dict[str, int] = {}  # tenant -> its tokens in this batch
        end = time.monotonic() + self.config.max_wait_ms / 1000
        while carried is not None or job is not None:
            prepared, carried = (carried, None) if carried is not None else (self._prepare(job), None)
            if prepared is not None:
                cost = sum(len(r.ids) for rows in prepared.rows for r in rows)
                tenant = prepared.job.tenant
                if self._cannot_finish(prepared, tokens + cost):
                    self._shed(prepared)
                elif batch and (self._ends_after(tokens + cost, earliest)
                                or 0 < mine.get(tenant, 0) < mine.get(tenant, 0) + cost > share):
                    # it would make the batch late for another request, or take more than its
                    # tenant's share of a batch while other tenants are sending: a tenant that
                    # floods the server would otherwise fill every batch, and each other
                    # tenant's request would wait for a whole full batch before its own
                    self._carry = prepared
                    break
                else:
                    batch.append(prepared)
                    tokens += cost
                    mine[tenant] = mine.get(tenant, 0) + cost
                    earliest = min(earliest, prepared.job.deadline)
            if tokens >= self.config.batch_tokens:
                break
            job = self._take(max(0.0, end - time.monotonic()))
        return batch

    def _active_tenants(self) -> int:
        """Tenants that sent a request within the last ACTIVE_S seconds (at least 1)."""
        now = time.monotonic()
        with self._cond:
            for tenant, seen in list(self._seen.items()):
                if now - seen > ACTIVE_S:
                    del self._seen[tenant]
            return max(1, len(self._seen))

    def _ends_after(self, tokens: int, deadline: float) -> bool:
        """Would a batch of `tokens` word pieces, started now, end after `deadline` (less the
        delivery slack)? The estimate is the recent rate times the larger of the margin and
        the recent slowdown: on a machine shared with other work the rate swings within
        seconds, and a batch that ran twice as long as estimated makes the next estimates
        twice as cautious until the engine catches up."""
        rate = self._tokens_per_s
        margin = max(START_MARGIN, self._slowdown)
        return bool(rate) and time.monotonic() + tokens / rate * margin > deadline - DELIVERY_SLACK_S

    def _cannot_finish(self, prepared: _Prepared, batch_tokens: int) -> bool:
        """Would a batch of `batch_tokens` word pieces (this request's included) end past the
        request's deadline? Only a request that could finish with the engine to itself is
        judged so: one too costly for any deadline runs and gets its 504, as before."""
        rate = self._tokens_per_s
        if not rate:
            return False
        own = sum(len(r.ids) for rows in prepared.rows for r in rows) / rate * START_MARGIN
        if own > self.config.deadline_s * ADMIT_SHARE:
            return False
        return self._ends_after(batch_tokens, prepared.job.deadline)

    def _shed(self, prepared: _Prepared) -> None:
        """Answer a request that can no longer be served in time: 429 with Retry-After, before
        the engine spends anything on it; its place goes to requests that can still make it."""
        self.model.release(prepared.task)
        _resolve(prepared.job, error=self._refusal(
            "deadline_unreachable_at_start", "overloaded", "the server fell behind: this request "
            "waited in the queue and could no longer be answered within its deadline; retry "
            "after {s} s"))

    def _refusal(self, reason: str, code: str, message: str) -> ServeError:
        """A 429 with Retry-After, counted under `reason`; `{s}` in `message` is the wait."""
        self.metrics.rejected.labels(reason).inc()
        after = str(self.config.retry_after_s)
        return ServeError(429, code, message.replace("{s}", after), headers={"Retry-After": after})

    def _prepare(self, job: Job) -> _Prepared | None:
        """Make the job's task resident, lease it and tokenise; on failure answer the job."""
        try:
            return self._prepare_job(job)
        except Exception:
            log.exception("preparing a request for %s failed", job.task)
            _resolve(job, error=ServeError(500, "internal", "the request could not be prepared; "
                                           "the error is in the server log"))
            return None

    def _prepare_job(self, job: Job) -> _Prepared | None:
        if job.future.done():
            return None
        if time.monotonic() > job.deadline:
            self.metrics.deadline_exceeded.labels("queued").inc()
            _resolve(job, error=deadline_exceeded(self.config.deadline_s))
            return None
        error = self.cache.ensure_available([job.task]).get(job.task)
        if error is not None:
            _resolve(job, error=self._load_error(job.task, error))
            return None
        try:
            task = self.model.acquire(job.task)
        except KeyError:  # unloaded by an admin between the two calls
            _resolve(job, error=ServeError(503, "adapter_unavailable", f"task {job.task!r} was "
                                           "unloaded while the request waited; retry"))
            return None
        try:
            items, rows, n_rows = [], [], 0
            limit = self.config.max_request_rows
            for i, x in enumerate(job.inputs):
                try:
                    items.append(coerce_input(task, x))
                    rows.append(self.model.encode(task, items[-1]))
                except DataError as e:
                    raise DataError(f"task {job.task!r}: inputs[{i}]: {e}") from None
                n_rows += len(rows[-1])
                if n_rows > limit:  # a long QA context becomes many windows: bound the cost
                    raise _TooCostly(f"inputs[0..{i}] already expand to {n_rows} model rows "
                                     f"(windows of at most {task.spec.max_length} word pieces); "
                                     f"at most {limit} are accepted per request "
                                     "(max_request_rows): send fewer or shorter inputs")
        except _TooCostly as e:
            self.model.release(task)
            _resolve(job, error=ServeError(413, "too_many_rows", str(e)))
            return None
        except DataError as e:
            self.model.release(task)
            _resolve(job, error=ServeError(422, "invalid_input", str(e)))
            return None
        except BaseException:
            self.model.release(task)
            raise
        return _Prepared(job, task, items, rows)

    def _load_error(self, name: str, error: Exception) -> ServeError:
        if isinstance(error, AdapterFileError) and not self.cache.store.exists(name):
            return unknown_task()
        # the adapter's path on this machine is not the caller's business
        message = str(error).replace(str(self.cache.store.root), "<store>")
        log.error("task %s cannot be served: %s", name, error)
        return ServeError(503, "adapter_unavailable", f"task {name!r} cannot be served: its "
                          f"adapter file was refused ({message}). Other tasks are unaffected; "
                          "an operator must replace the adapter")

    def _run(self, batch: list[_Prepared]) -> None:
        for p in batch:
            p.outs = [[None] * len(rows) for rows in p.rows]
        flat = [(b, i, j) for b, p in enumerate(batch) for i, rows in enumerate(p.rows)
                for j in range(len(rows))]
        plan = plan_chunks([len(batch[b].rows[i][j].ids) for b, i, j in flat],
                           self.config.max_batch_rows, self.config.batch_tokens)
        chunks = [[flat[k] for k in chunk] for chunk in plan]
        self.metrics.batch_inputs.observe(sum(len(p.items) for p in batch))
        self.metrics.batch_tasks.observe(len({p.task.name for p in batch}))
        expired: set[int] = set()
        started, ran = time.monotonic(), 0
        for chunk in chunks:
            # between chunks: a request past its deadline (its caller has its 504) costs no more
            now = time.monotonic()
            expired |= {b for b, _, _ in chunk if batch[b].job.future.done()
                        or now > batch[b].job.deadline}
            chunk = [bij for bij in chunk if bij[0] not in expired]
            if not chunk:
                continue
            self.metrics.batch_rows.observe(len(chunk))
            outs = self.model.forward([batch[b].rows[i][j].ids for b, i, j in chunk],
                                      [batch[b].task for b, _, _ in chunk])
            for (b, i, j), out in zip(chunk, outs):
                batch[b].outs[i][j] = out
            ran += sum(len(batch[b].rows[i][j].ids) for b, i, j in chunk)
        self._measure_tokens(ran, time.monotonic() - started)
        for b, p in enumerate(batch):
            if b in expired:
                self.metrics.deadline_exceeded.labels("in_batch").inc()
                _resolve(p.job, error=deadline_exceeded(self.config.deadline_s))
                continue
            try:
                result = [p.task.impl.decode(p.task.spec, rows, outs, item)
                          for item, rows, outs in zip(p.items, p.rows, p.outs)]
            except Exception:
                log.exception("decoding a request for %s failed", p.task.name)
                _resolve(p.job, error=ServeError(500, "internal", "the outputs could not be "
                                                 "decoded; the error is in the server log"))
                continue
            _resolve(p.job, result=(p.task, result))


def _resolve(job: Job, result=None, error: BaseException | None = None) -> None:
    try:
        job.loop.call_soon_threadsafe(_settle, job.future, result, error)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass
