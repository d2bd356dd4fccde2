"""Where a server keeps its jobs: a local folder, never shown by the store's listing.

    JOBS/jobs.sqlite3          the job table (and its WAL files)
    JOBS/worker.lock           held by the one running trainer worker
    JOBS/uploads/JOB/FILE      the uploaded labelled file, as checked at the door
    JOBS/work/JOB/NAME         the trained adapter before it is published
    JOBS/work/JOB/.checkpoints/NAME   its resume state while it trains

JOBS is `--jobs-dir` where given. Otherwise, for a store that is a folder it is the hidden
`STORE/.jobs`; for a remote store (an fsspec URL: SQLite, locks and checkpoints need a local
disk) it is `<adapters_kit cache>/jobs/<hash of the URL>`, so one machine's server finds its
table again after a restart. What is trained is published into the store itself either way.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path


def jobs_root(store: str | Path, jobs_dir: str | Path | None = None) -> Path:
    """The local folder of the jobs of `store` (see the module's docstring)."""
    if jobs_dir is not None:
        return Path(jobs_dir)
    from ..adapters import store_location

    store = store_location(store)
    if isinstance(store, Path):
        return store / ".jobs"
    from ..backbones.embedded import cache_root

    return cache_root() / "jobs" / hashlib.sha256(str(store).rstrip("/").encode()).hexdigest()[:16]


@dataclass(frozen=True)
class JobLayout:
    root: Path

    @classmethod
    def for_store(cls, store: str | Path, jobs_dir: str | Path | None = None) -> JobLayout:
        return cls(jobs_root(store, jobs_dir))

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
