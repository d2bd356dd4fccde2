"""One group of jobs on one backbone: through `train_many` where it is installed, else with
`train`, one job after another. Either way every job reports progress in `train`'s dicts (plus
`task`), and each job's outcome is its own: a result, or the error that ended it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..tasks import TaskSpec
from ..training.config import TrainConfig

log = logging.getLogger("adapters_kit.jobs")


@dataclass
class GroupJob:
    id: str
    spec: TaskSpec
    out_dir: Path
    config: TrainConfig


class JobStopped(Exception):
    """Raised from a progress report to end a run: job `job_id` was cancelled (or the worker
    must stop). The other jobs of a `train_many` run stopped with it go back to the queue."""

    def __init__(self, job_id: str, why: str = "cancelled") -> None:
        super().__init__(f"job {job_id} {why}")
        self.job_id, self.why = job_id, why


class Requeue(Exception):
    """The outcome of a job whose shared run was ended for another job's sake."""


Progress = Callable[[str, dict], None]
"""(job id, event): raises JobStopped to end the job's run."""


def _train_many():
    try:
        from ..training.many import TrainJob, train_many
    except ImportError:
        return None
    return TrainJob, train_many


def run_group(jobs: list[GroupJob], on_progress: Progress, lanes: int = 1) -> dict[str, object]:
    """Train `jobs` (distinct task names); job id -> its adapter directory, or the exception
    that ended it (`JobStopped` for a cancelled one, `Requeue` for one stopped with it)."""
    many = _train_many()
    if many is not None and len(jobs) > 1:
        try:
            return _together(jobs, on_progress, *many, lanes=lanes)
        except JobStopped as e:
            return {j.id: e if j.id == e.job_id else Requeue(str(e)) for j in jobs}
        except Exception:  # one job's data or settings: find whose, each trained alone
            log.exception("train_many failed for %s; training them one by one",
                          [j.id for j in jobs])
    return _one_by_one(jobs, on_progress)


def _together(jobs, on_progress, TrainJob, train_many, lanes: int = 1) -> dict[str, object]:
    by_task = {j.spec.name: j for j in jobs}

    def relay(event: dict) -> None:
        job = by_task.get(event.get("task"))
        if job is not None:
            on_progress(job.id, event)

    results = train_many([TrainJob(j.spec, j.out_dir, j.config) for j in jobs], on_progress=relay,
                         lanes=lanes)
    return {j.id: results[j.spec.name].path for j in jobs}


def _one_by_one(jobs: list[GroupJob], on_progress: Progress) -> dict[str, object]:
    from ..training.loop import train

    out: dict[str, object] = {}
    for job in jobs:
        def relay(event: dict, job=job) -> None:
            on_progress(job.id, {**event, "task": job.spec.name})

        try:
            out[job.id] = train(job.spec, job.out_dir, job.config, on_progress=relay).path
        except Exception as e:
            out[job.id] = e
    return out
