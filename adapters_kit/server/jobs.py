"""Training jobs on the server (`serve --jobs`): the trainer worker's process, and the publishing
of what it trained (the routes and the checks at the door: `routes/jobs.py`).

The worker (jobs/worker.py) trains in its own process; when it marks a job trained, the server
installs the adapter into the store the way an admin replace does (verified copy, one rename,
the resident version swapped), so the next prediction uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys

from fastapi.concurrency import run_in_threadpool

from ..jobs.layout import JobLayout
from ..jobs.table import JobTable

log = logging.getLogger("adapters_kit.server")

PUBLISH_POLL_S = 0.25


def _die_with_parent() -> None:  # in the child, before exec: SIGKILL when the server dies
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class JobService:
    """The trainer worker's process (started again if it dies) and the publisher loop."""

    def __init__(self, srv) -> None:
        self.srv = srv
        self.config = srv.config
        self.layout = JobLayout.for_store(self.config.store, self.config.jobs_dir)
        self.table = JobTable(self.layout.table)
        self.worker: subprocess.Popen | None = None
        self._loop_task: asyncio.Task | None = None

    def spawn(self) -> None:
        c = self.config
        threads = str(c.job_threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
               "TOKENIZERS_PARALLELISM": "false"}
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "adapters_kit.jobs.worker", "--store", str(c.store),
             "--jobs-dir", str(self.layout.root),
             "--threads", threads, "--lanes", str(c.job_lanes),
             "--max-rows", str(c.job_group_rows),
             "--max-tasks", str(c.job_group_tasks), "--running-per-tenant",
             str(c.tenant_running_jobs), "--parent-pid", str(os.getpid())],
            env=env, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        log.info("trainer worker started (pid %d)", self.worker.pid)

    async def start(self) -> None:
        self.spawn()  # on the event loop's thread: the child's death signal follows this thread
        self._loop_task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()  # a job stopped here resumes from its checkpoint
            with contextlib.suppress(subprocess.TimeoutExpired):
                await run_in_threadpool(self.worker.wait, 10)
            if self.worker.poll() is None:
                self.worker.kill()

    async def _run(self) -> None:
        while True:
            try:
                await self.publish()
            except Exception:
                log.exception("publishing trained jobs failed; trying again")
            if self.worker is not None and self.worker.poll() is not None:
                log.warning("the trainer worker exited (status %s); starting it again",
                            self.worker.returncode)
                self.spawn()
            await asyncio.sleep(PUBLISH_POLL_S)

    async def publish(self) -> None:
        """Install every trained job's adapter into the store and the engine (a replace when
        the task exists); the job succeeds once the next prediction would use it."""
        for job in await run_in_threadpool(self.table.publishing):
            if job["cancel_requested"]:
                await run_in_threadpool(self.table.cancelled, job["id"])
                await run_in_threadpool(self.layout.clean, job["id"])
                continue
            source = self.layout.adapter_dir(job["id"], job["name"])
            try:
                async with self.srv.admin_lock:
                    await self.srv.install(job["name"], str(source))
                    self.srv.disabled.discard(job["name"])
            except (ValueError, OSError) as e:  # the store and the resident version unchanged
                message = str(e).replace(str(source), "<trained adapter>")
                await run_in_threadpool(self.table.fail, job["id"], "the trained adapter was "
                                        f"refused by the server ({message}); submit the job again")
            else:
                await run_in_threadpool(self.table.succeed, job["id"], job["result"])
                log.info("job %s published: task %s", job["id"], job["name"])
            await run_in_threadpool(self.layout.clean, job["id"])
