"""The trainer worker: its own process, its own torch thread budget, at a lower CPU priority,
so the server's engine keeps its cores.

    python -m adapters_kit.jobs.worker --store DIR|URL [--jobs-dir DIR] [--threads 1] [--lanes 1]
                                       [--nice 10]

`adapters-kit serve --jobs` starts it (and starts it again if it dies). One worker per jobs
folder (jobs/layout.py): it holds `JOBS/worker.lock` for its life. On start it puts back in
the queue whatever a killed worker left running; the job's next run resumes from the
checkpoint `train` left beside its adapter directory. A trained adapter is complete (written
atomically) before the job is marked trained; the server then publishes it into the store and
loads it.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .layout import JobLayout
from .table import JobTable

log = logging.getLogger("adapters_kit.jobs")

PROGRESS_SECONDS = 1.0
"""How often a running job reports its step (train's own default is every 10 s)."""


@dataclass
class WorkerSettings:
    store: str | Path
    """The store's folder or URL: it names the jobs folder (the server publishes, not the worker)."""
    jobs_dir: Path | None = None
    """The jobs folder, where not the store's default (jobs/layout.py)."""
    threads: int = 1
    """torch intra-op threads of the worker."""
    lanes: int = 1
    """`train_many` lanes: a run's jobs in groups trained side by side, sharing the threads."""
    nice: int = 10
    """Added to the worker's CPU niceness: under contention the engine's threads run first."""
    max_rows: int = 20_000
    """Most training rows in one group (one `train_many` run)."""
    max_tasks: int = 8
    """Most jobs in one group."""
    running_per_tenant: int = 2
    """Most jobs of one tenant running at once."""
    poll_s: float = 0.5
    parent_pid: int | None = None
    """Exit when this process (the server) is gone."""


def adapter_result(directory: Path) -> dict:
    """What a succeeded job reports, read from its adapter's own task.json."""
    from ..adapters.store import CONFIG, WEIGHTS, read_adapter

    files = read_adapter(directory)
    meta = files.task
    return {"metrics": meta.get("metrics"), "baseline": meta.get("tfidf_baseline"),
            "adapter_bytes": (directory / WEIGHTS).stat().st_size + (directory / CONFIG).stat().st_size,
            "train_seconds": meta.get("training", {}).get("train_seconds"),
            "warnings": meta.get("warnings", []), "digest": files.digest}


def job_config(job: dict, threads: int):
    """The job's TrainConfig: its overrides on the server's backbone, resumable, quiet."""
    from ..training.config import TrainConfig

    return TrainConfig(**{**job["config"], "backbone": job["backbone"], "threads": threads,
                          "progress": False, "resume": True, "overwrite": False})


class Worker:
    def __init__(self, settings: WorkerSettings) -> None:
        self.s = settings
        self.layout = JobLayout.for_store(settings.store, settings.jobs_dir)
        self.table = JobTable(self.layout.table)
        self._lock_file = None
        self._reports: dict[str, dict] = {}

    def lock(self) -> None:
        """Hold the store's worker lock (waits while another worker holds it)."""
        self.layout.root.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.layout.lock, "a+")  # noqa: SIM115 (held for the process's life)
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                self._check_parent()
                time.sleep(self.s.poll_s)

    def _check_parent(self) -> None:
        if self.s.parent_pid is not None and os.getppid() != self.s.parent_pid:
            log.warning("the server that started this worker is gone; exiting")
            os._exit(0)  # as a kill would: every job is safe to resume from its checkpoint

    def run(self, once: bool = False) -> None:
        import torch

        from ..training import fit

        fit.PROGRESS_SECONDS = PROGRESS_SECONDS
        torch.set_num_threads(self.s.threads)
        if self.s.nice:
            os.nice(self.s.nice)
        self.lock()
        back = self.table.recover(os.getpid())
        if back:
            log.info("jobs %s were running when their worker stopped; queued again", back)
        while True:
            self._check_parent()
            group = self.table.claim(pid=os.getpid(), max_rows=self.s.max_rows,
                                     max_tasks=self.s.max_tasks,
                                     running_per_tenant=self.s.running_per_tenant)
            if group:
                self.run_group(group)
            elif once:
                return
            else:
                time.sleep(self.s.poll_s)

    def run_group(self, group: list[dict]) -> None:
        from ..errors import AdaptersKitError
        from ..tasks import TaskSpec
        from .runner import GroupJob, JobStopped, Requeue, run_group

        ready, todo = {}, []
        for job in group:
            out = self.layout.adapter_dir(job["id"], job["name"])
            try:
                if out.exists():  # trained before the last worker died: only publishing was left
                    ready[job["id"]] = out
                    continue
                spec = TaskSpec(**job["spec"])
                todo.append(GroupJob(job["id"], spec, out, job_config(job, self.s.threads)))
                self._reports[job["id"]] = {"batch_size": todo[-1].config.resolved(spec).batch_size}
            except Exception as e:  # checked at the door; a table written by hand may differ
                ready[job["id"]] = e
        log.info("training %d job(s): %s", len(todo), [j.id for j in todo])
        outcomes = {**ready, **(run_group(todo, self._progress, self.s.lanes) if todo else {})}
        for job_id, outcome in outcomes.items():
            if isinstance(outcome, Path):
                try:
                    result = adapter_result(outcome)
                except Exception as e:
                    self._fail(job_id, f"the trained adapter could not be read back ({e}); "
                               "submit the job again")
                    continue
                if not self.table.trained(job_id, result):  # cancelled meanwhile
                    self.layout.clean(job_id)
            elif isinstance(outcome, JobStopped):
                self.table.cancelled(job_id)
                self.layout.clean(job_id)
            elif isinstance(outcome, Requeue):
                self.table.requeue(job_id)
            elif isinstance(outcome, (AdaptersKitError, FileExistsError, ValueError)):
                self._fail(job_id, str(outcome))
            else:
                log.error("job %s failed", job_id, exc_info=outcome)
                self._fail(job_id, f"training failed ({type(outcome).__name__}: {outcome}); "
                           "the worker's log has the details")
            self._reports.pop(job_id, None)

    def _fail(self, job_id: str, message: str) -> None:
        self.table.fail(job_id, message)
        self.layout.clean(job_id)

    def _progress(self, job_id: str, event: dict) -> None:
        """Keep a job's progress in the table; stop its run if it was cancelled."""
        self._check_parent()
        state = self._reports.setdefault(job_id, {})
        now = time.time()
        kind = event.get("event")
        if kind == "start":
            state.update(t0=now, step0=event.get("step", 0), rows=event.get("train_rows"),
                         metric=event.get("metric"))
        if "total_steps" in event:
            state["total"] = event["total_steps"]
        if "step" in event:
            state["step"] = event["step"]
        if kind == "eval":
            metrics = event.get("metrics") or {}
            state["dev"] = {state.get("metric") or "metric": metrics.get(state.get("metric"))} \
                if state.get("metric") in metrics else metrics
        self.table.report(job_id, _progress_view(state, now, kind))
        if job_id in self.table.cancel_requested([job_id]):
            from .runner import JobStopped

            raise JobStopped(job_id)


def _progress_view(state: dict, now: float, event: str | None) -> dict:
    step, total = state.get("step", 0), state.get("total")
    out = {"phase": "training" if event != "done" else "saving", "step": step, "total_steps": total}
    rows, batch = state.get("rows"), state.get("batch_size")
    if rows and batch:
        out["epoch"] = round(step / math.ceil(rows / batch), 2)
    out["last_dev_metric"] = state.get("dev")
    if state.get("step0"):
        out["resumed_from_step"] = state["step0"]  # from the checkpoint a killed run left
    done = step - state.get("step0", 0)
    if total and done > 0 and "t0" in state:
        out["eta_seconds"] = round((now - state["t0"]) / done * max(0, total - step), 1)
    return out


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m adapters_kit.jobs.worker",
                                 description="train the queued jobs of a store")
    ap.add_argument("--store", required=True, help="the store's folder or URL")
    ap.add_argument("--jobs-dir", type=Path, help="the jobs folder (default: the store's)")
    ap.add_argument("--threads", type=_positive, default=1)
    ap.add_argument("--lanes", type=_positive, default=1,
                    help="train_many lanes, at most one per thread (default 1)")
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--max-rows", type=int, default=20_000)
    ap.add_argument("--max-tasks", type=int, default=8)
    ap.add_argument("--running-per-tenant", type=int, default=2)
    ap.add_argument("--parent-pid", type=int)
    ap.add_argument("--once", action="store_true", help="exit when the queue is empty")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s adapters-kit worker: %(message)s")
    Worker(WorkerSettings(store=args.store, jobs_dir=args.jobs_dir, threads=args.threads,
                          lanes=args.lanes,
                          nice=args.nice, max_rows=args.max_rows, max_tasks=args.max_tasks,
                          running_per_tenant=args.running_per_tenant,
                          parent_pid=args.parent_pid)).run(once=args.once)
    return 0


if __name__ == "__main__":
    sys.exit(main())
