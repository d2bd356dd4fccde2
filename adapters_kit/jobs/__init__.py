"""Training as a service: a job table beside the store, and the trainer worker that drains it.

`table` (the SQLite job table, standard library only: the server and the CLI read it without
torch), `layout` (where a store keeps its jobs' files), `worker` (the trainer process:
`python -m adapters_kit.jobs.worker --store DIR`), `runner` (one group of jobs through
`train_many`, or `train` one by one where `train_many` is not installed).
"""

from .table import JOB_STATES, JobTable

__all__ = ["JOB_STATES", "JobTable"]
