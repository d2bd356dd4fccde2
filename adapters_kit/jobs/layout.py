"""Where a store keeps its jobs: a hidden `.jobs` folder the store's listing never shows.

    STORE/.jobs/jobs.sqlite3          the job table (and its WAL files)
    STORE/.jobs/worker.lock           held by the one running trainer worker
    STORE/.jobs/uploads/JOB/FILE      the uploaded labelled file, as checked at the door
    STORE/.jobs/work/JOB/NAME         the trained adapter before it is published
    STORE/.jobs/work/JOB/.checkpoints/NAME   its resume state while it trains
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JobLayout:
    store: Path

    @property
    def root(self) -> Path:
        return self.store / ".jobs"

    @property
    def table(self) -> Path:
        return self.root / "jobs.sqlite3"

    @property
    def lock(self) -> Path:
        return self.root / "worker.lock"

    def upload_dir(self, job_id: str) -> Path:
        return self.root / "uploads" / job_id

    def work_dir(self, job_id: str) -> Path:
        return self.root / "work" / job_id

    def adapter_dir(self, job_id: str, name: str) -> Path:
        """Where the worker trains (train's checkpoint goes beside it, in `.checkpoints`)."""
        return self.work_dir(job_id) / name

    def clean(self, job_id: str) -> None:
        """Remove a finished job's files (its upload and its work); the table keeps its record."""
        shutil.rmtree(self.upload_dir(job_id), ignore_errors=True)
        shutil.rmtree(self.work_dir(job_id), ignore_errors=True)
