"""The engine runner: the one thread that takes admitted requests and runs the engine on them.

It takes the first request from admission's lines, then keeps taking requests for at most
`max_wait_ms` or until the gathered rows reach `batch_tokens`. Each request's task is made
resident (through the adapter cache) and leased, so a replace or unload during the batch never
changes an answer halfway; its inputs are tokenised; all rows of all requests are sorted by
length and cut into chunks (`plan_chunks`) whose padded size (rows x longest row) fits the
token budget, so short texts are not padded to long ones. Each chunk is one pass through the
base whatever its mix of tasks. Each request's future is resolved on its own event loop with
its own outputs, in input order. Between batches, freed heap pages go back to the system.

A request that cannot be served (bad input, bad adapter file, past its deadline) fails alone:
the others in the batch are answered as usual.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field

from ..engine.cache import AdapterCache
from ..engine.memory import HeapTrimmer
from ..engine.model import ResidentTask, plan_chunks
from ..errors import AdapterFileError, DataError
from ..tasks.kinds import Row
from .admission import Admission, Job
from .config import ServeConfig
from .errors import ServeError, deadline_exceeded, unknown_task
from .metrics import ServerMetrics

log = logging.getLogger("adapters_kit.server")


class _TooCostly(Exception):
    """A request whose inputs expand to more model rows than one request may cost."""


@dataclass
class Prepared:
    """A request taken from the queue: its task leased, its inputs coerced and tokenised."""

    job: Job
    task: ResidentTask
    items: list
    rows: list[list[Row]]  # per input: its model rows (a long QA context gives several)
    outs: list[list] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """Word pieces of all its rows: its cost in a batch."""
        return sum(len(r.ids) for rows in self.rows for r in rows)


def coerce_input(task: ResidentTask, item) -> object:
    """A JSON input in the engine's terms for this task's kind, or a DataError naming the fix."""
    return task.impl.coerce(task.spec, item)


class EngineRunner:
    """The engine thread: gathers admitted requests into batches and runs them."""

    def __init__(self, cache: AdapterCache, config: ServeConfig, metrics: ServerMetrics,
                 admission: Admission) -> None:
        self.cache = cache
        self.model = cache.model
        self.config = config
        self.metrics = metrics
        self.admission = admission
        self.carry: Prepared | None = None
        """Taken, leased and tokenised, but left out of the last batch: it heads the next one."""
        self.on_failure: list = []
        """Called (on the engine thread) if it dies; serve() ends the process non-zero."""
        self._failed = False
        self._thread = threading.Thread(target=self._work, name="adapters-kit-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (after admission closes and the queue drains)."""
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def failed(self) -> bool:
        """The engine thread ended without a stop: nothing will answer predictions again."""
        return self._failed

    # -- the thread -----------------------------------------------------------------------------

    def _work(self) -> None:
        pace = self.admission.pace
        try:
            import torch

            torch.set_num_threads(self.config.engine_threads())  # see ServeConfig.torch_threads
            trimmer = HeapTrimmer()
            while True:
                try:
                    batch = self.gather()
                except Exception:  # a request that _prepare could not answer; it answered it
                    log.exception("gathering a batch failed")
                    continue
                if batch is None:
                    return
                if batch:
                    # the rate counts what was served: a refused request's characters (an
                    # oversized one is refused after tokenising part of it) would inflate it
                    pace.batch_chars = sum(p.job.chars for p in batch)
                    self._run_safely(batch)
                    pace.measure_batch()
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

    def _run_safely(self, batch: list[Prepared]) -> None:
        try:
            self._run(batch)
        except Exception:  # the thread must survive anything one batch does
            log.exception("engine batch failed")
            for p in batch:
                p.job.resolve(error=ServeError(500, "internal", "the engine failed on this "
                                               "batch; the error is in the log"))
        finally:
            for p in batch:
                self.model.release(p.task)

    def _fail_queued(self) -> None:
        jobs = self.admission.drain()
        carried, self.carry = self.carry, None
        if carried is not None:
            with contextlib.suppress(Exception):
                self.model.release(carried.task)
            jobs.append(carried.job)
        for job in jobs:
            job.resolve(error=ServeError(503, "engine_failed", "the engine stopped; retry "
                                         "against another instance or after a restart"))

    # -- gathering a batch ----------------------------------------------------------------------

    def gather(self) -> list[Prepared] | None:
        """Requests for one batch (possibly none servable); None once closed and drained.

        The batch is closed early when the next request would make it run past the earliest
        deadline already in it: that request is carried over to head the next batch."""
        admission, pace = self.admission, self.admission.pace
        carried, self.carry, job = self.carry, None, None
        pace.batch_chars = 0 if carried is None else carried.job.chars
        if carried is None:
            job = admission.take(None)
            if job is None:
                return None
        pace.batch_started = time.monotonic()  # work from here: the idle wait is not counted
        batch: list[Prepared] = []
        tokens, earliest = 0, float("inf")
        share = self.config.batch_tokens / admission.active_tenants()
        mine: dict[str, int] = {}  # tenant -> its tokens in this batch
        end = time.monotonic() + self.config.max_wait_ms / 1000
        while carried is not None or job is not None:
            prepared, carried = (carried, None) if carried is not None else (self._prepare(job), None)
            if prepared is not None:
                cost = prepared.tokens
                tenant = prepared.job.tenant
                if admission.cannot_finish(cost, tokens + cost, prepared.job.deadline):
                    # answered before the engine spends anything on it; its place goes to
                    # requests that can still make theirs
                    self.model.release(prepared.task)
                    prepared.job.resolve(error=admission.shed())
                elif batch and (admission.ends_after(tokens + cost, earliest)
                                or 0 < mine.get(tenant, 0) < mine.get(tenant, 0) + cost > share):
                    # it would make the batch late for another request, or take more than its
                    # tenant's share of a batch while other tenants are sending: a tenant that
                    # floods the server would otherwise fill every batch, and each other
                    # tenant's request would wait for a whole full batch before its own
                    self.carry = prepared
                    break
                else:
                    batch.append(prepared)
                    tokens += cost
                    mine[tenant] = mine.get(tenant, 0) + cost
                    earliest = min(earliest, prepared.job.deadline)
            if tokens >= self.config.batch_tokens:
                break
            job = admission.take(max(0.0, end - time.monotonic()))
        return batch

    def _prepare(self, job: Job) -> Prepared | None:
        """Make the job's task resident, lease it and tokenise; on failure answer the job."""
        try:
            return self._prepare_job(job)
        except Exception:
            log.exception("preparing a request for %s failed", job.task)
            job.resolve(error=ServeError(500, "internal", "the request could not be prepared; "
                                         "the error is in the server log"))
            return None

    def _prepare_job(self, job: Job) -> Prepared | None:
        if job.future.done():
            return None
        late = self.admission.late(job)
        if late is not None:
            job.resolve(error=late)
            return None
        error = self.cache.ensure_available([job.task]).get(job.task)
        if error is not None:
            job.resolve(error=self._load_error(job.task, error))
            return None
        try:
            task = self.model.acquire(job.task)
        except KeyError:  # unloaded by an admin between the two calls
            job.resolve(error=ServeError(503, "adapter_unavailable", f"task {job.task!r} was "
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
            job.resolve(error=ServeError(413, "too_many_rows", str(e)))
            return None
        except DataError as e:
            self.model.release(task)
            job.resolve(error=ServeError(422, "invalid_input", str(e)))
            return None
        except BaseException:
            self.model.release(task)
            raise
        return Prepared(job, task, items, rows)

    def _load_error(self, name: str, error: Exception) -> ServeError:
        if isinstance(error, AdapterFileError) and not self.cache.store.exists(name):
            return unknown_task()
        # the adapter's path on this machine is not the caller's business
        message = str(error).replace(str(self.cache.store.root), "<store>")
        log.error("task %s cannot be served: %s", name, error)
        return ServeError(503, "adapter_unavailable", f"task {name!r} cannot be served: its "
                          f"adapter file was refused ({message}). Other tasks are unaffected; "
                          "an operator must replace the adapter")

    # -- running a batch ------------------------------------------------------------------------

    def _run(self, batch: list[Prepared]) -> None:
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
        self.admission.pace.measure_tokens(ran, time.monotonic() - started)
        for b, p in enumerate(batch):
            if b in expired:
                self.metrics.deadline_exceeded.labels("in_batch").inc()
                p.job.resolve(error=deadline_exceeded(self.config.deadline_s))
                continue
            try:
                result = [p.task.impl.decode(p.task.spec, rows, outs, item)
                          for item, rows, outs in zip(p.items, p.rows, p.outs)]
            except Exception:
                log.exception("decoding a request for %s failed", p.task.name)
                p.job.resolve(error=ServeError(500, "internal", "the outputs could not be "
                                               "decoded; the error is in the server log"))
                continue
            p.job.resolve(result=(p.task, result))
