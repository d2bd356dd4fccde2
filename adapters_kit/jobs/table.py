"""The job table: one SQLite file in the jobs folder (`JOBS/jobs.sqlite3`, WAL mode; see layout.py).

The server writes a job when it takes an upload, the trainer worker claims and updates it, the
server publishes what the worker trained, and `adapters-kit jobs` reads and cancels. Every
change is one transaction that checks the state it starts from, so two writers never both win
(a cancel racing the worker's claim, two workers): the loser's update touches no row.

States: `queued` -> `running` -> `succeeded` | `failed` | `cancelled`. Between the last two
steps a job is `publishing` inside the table (trained, its adapter not yet in the store and
loaded): shown as `running`, phase `publishing`.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")
PUBLISHING = "publishing"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    backbone TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    rows INTEGER NOT NULL,
    spec TEXT NOT NULL,
    config TEXT NOT NULL,
    progress TEXT,
    result TEXT,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker_pid INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created);
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (tenant, created);
"""
_JSON = ("spec", "config", "progress", "result")


def new_job_id() -> str:
    """An unguessable id: knowing one job's id tells nothing of another's."""
    return "job_" + secrets.token_hex(8)


class JobTable:
    """The jobs of one store. Each call opens its own connection: safe from any thread or process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @classmethod
    def for_store(cls, store: str | Path, jobs_dir: str | Path | None = None) -> JobTable:
        """The table of `store`'s jobs (a folder or a remote store's URL; see jobs/layout.py)."""
        from .layout import JobLayout

        return cls(JobLayout.for_store(store, jobs_dir).table)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crashed process loses nothing
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE), so its reads stay true."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @staticmethod
    def _row(row: sqlite3.Row | None) -> dict | None:
        if row is None:
            return None
        out = dict(row)
        for k in _JSON:
            out[k] = json.loads(out[k]) if out[k] else None
        return out

    # -- the server's door --------------------------------------------------------------------

    def add(self, job_id: str, *, tenant: str, name: str, backbone: str, spec: dict,
            config: dict, rows: int, max_queued: int | None = None) -> dict | None:
        """Queue a job; None (nothing written) when `tenant` already has `max_queued` queued."""
        with self._write() as db:
            if max_queued is not None:
                (queued,) = db.execute("SELECT COUNT(*) FROM jobs WHERE tenant=? AND state='queued'",
                                       (tenant,)).fetchone()
                if queued >= max_queued:
                    return None
            db.execute("INSERT INTO jobs (id, tenant, name, backbone, state, created, rows, spec, "
                       "config) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
                       (job_id, tenant, name, backbone, time.time(), rows, json.dumps(spec),
                        json.dumps(config)))
        return self.get(job_id)

    def get(self, job_id: str, tenant: str | None = None) -> dict | None:
        """The job, or None when there is none or it is not `tenant`'s (None: any tenant)."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        job = self._row(row)
        if job is None or (tenant is not None and job["tenant"] != tenant):
            return None
        return job

    def list(self, tenant: str | None = None, limit: int = 100) -> list[dict]:
        """The newest `limit` jobs, newest first (of `tenant`, or of every tenant)."""
        with self._connect() as db:
            if tenant is None:
                rows = db.execute("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,))
            else:
                rows = db.execute("SELECT * FROM jobs WHERE tenant=? ORDER BY created DESC "
                                  "LIMIT ?", (tenant, limit))
            return [self._row(r) for r in rows.fetchall()]

    def cancel(self, job_id: str, tenant: str | None = None) -> dict | None:
        """Cancel: a queued job at once; a running one is asked to stop, and the worker ends it
        at its next progress report (the publisher, before it installs anything). A finished
        job stays as it is."""
        with self._write() as db:
            row = db.execute("SELECT tenant, state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None or (tenant is not None and row["tenant"] != tenant):
                return None
            if row["state"] == "queued":
                db.execute("UPDATE jobs SET state='cancelled', finished=?, cancel_requested=1 "
                           "WHERE id=?", (time.time(), job_id))
            elif row["state"] in ("running", PUBLISHING):  # the worker or the publisher ends it
                db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
        return self.get(job_id)

    # -- the worker ---------------------------------------------------------------------------

    def claim(self, *, pid: int, max_rows: int, max_tasks: int,
              running_per_tenant: int) -> list[dict]:
        """Take the oldest queued jobs that share a backbone, up to `max_rows` training rows
        (the first job is taken whatever its size) and `max_tasks` jobs of distinct names,
        leaving every tenant at most `running_per_tenant` running jobs. They are `running`
        under `pid` on return."""
        with self._write() as db:
            running: dict[str, int] = {r[0]: r[1] for r in db.execute(
                "SELECT tenant, COUNT(*) FROM jobs WHERE state IN ('running', ?) GROUP BY tenant",
                (PUBLISHING,))}
            taken, rows, backbone, names = [], 0, None, set()
            for job in db.execute("SELECT id, tenant, name, backbone, rows FROM jobs "
                                  "WHERE state='queued' ORDER BY created, id").fetchall():
                if len(taken) >= max_tasks:
                    break
                if running.get(job["tenant"], 0) >= running_per_tenant or job["name"] in names:
                    continue  # a run keys its tasks by name: a second job of a name waits
                if backbone is not None and (job["backbone"] != backbone
                                             or rows + job["rows"] > max_rows):
                    continue
                backbone = job["backbone"]
                rows += job["rows"]
                names.add(job["name"])
                running[job["tenant"]] = running.get(job["tenant"], 0) + 1
                taken.append(job["id"])
            now = time.time()
            for job_id in taken:
                db.execute("UPDATE jobs SET state='running', started=COALESCE(started, ?), "
                           "worker_pid=?, attempts=attempts+1, progress=NULL WHERE id=?",
                           (now, pid, job_id))
        return [self.get(j) for j in taken]

    def recover(self, pid: int) -> list[str]:
        """Put back in the queue every job left `running` by a worker that is gone (its
        checkpoint makes the next run resume). Only a worker holding the worker lock calls it:
        no other worker is alive then."""
        with self._write() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE state='running' AND "
                                            "(worker_pid IS NULL OR worker_pid != ?)", (pid,))]
            db.executemany("UPDATE jobs SET state='queued', progress=NULL, worker_pid=NULL "
                           "WHERE id=?", [(i,) for i in ids])
        return ids

    def report(self, job_id: str, progress: dict) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET progress=? WHERE id=? AND state='running'",
                       (json.dumps(progress), job_id))

    def cancel_requested(self, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        with self._connect() as db:
            marks = ",".join("?" * len(ids))
            return {r[0] for r in db.execute(f"SELECT id FROM jobs WHERE cancel_requested=1 AND "
                                             f"id IN ({marks})", ids)}

    def requeue(self, job_id: str) -> None:
        """A running job stopped for another's sake (a cancel in its group): queued again."""
        self._move(job_id, ("running",), "queued", progress_reset=True)

    def trained(self, job_id: str, result: dict) -> bool:
        """The worker's adapter is complete: the server publishes it next."""
        return self._move(job_id, ("running",), PUBLISHING, result=result)

    def succeed(self, job_id: str, result: dict) -> bool:
        return self._move(job_id, (PUBLISHING,), "succeeded", result=result, finished=True)

    def fail(self, job_id: str, message: str) -> bool:
        return self._move(job_id, ("running", PUBLISHING), "failed", error=message, finished=True)

    def cancelled(self, job_id: str) -> bool:
        return self._move(job_id, ("running", "queued", PUBLISHING), "cancelled", finished=True)

    def _move(self, job_id: str, sources: tuple[str, ...], state: str, *, result: dict | None = None,
              error: str | None = None, finished: bool = False,
              progress_reset: bool = False) -> bool:
        sets, values = ["state=?"], [state]
        if progress_reset:
            sets.append("progress=NULL")
        if result is not None:
            sets.append("result=?")
            values.append(json.dumps(result))
        if error is not None:
            sets.append("error=?")
            values.append(error)
        if finished:
            sets.append("finished=?")
            values.append(time.time())
        marks = ",".join("?" * len(sources))
        with self._write() as db:
            cur = db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id=? AND state IN ({marks})",
                             (*values, job_id, *sources))
            return cur.rowcount == 1

    def publishing(self) -> list[dict]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs WHERE state=? ORDER BY created", (PUBLISHING,))
            return [self._row(r) for r in rows.fetchall()]

    def counts(self) -> dict[str, int]:
        with self._connect() as db:
            return {r[0]: r[1] for r in db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}


def public_view(job: dict) -> dict:
    """What a tenant sees of its job (GET /v1/jobs/{id}, `adapters-kit jobs show`)."""
    state = job["state"]
    progress = dict(job["progress"] or {})
    if state == PUBLISHING:
        state, progress["phase"] = "running", "publishing"
    out = {"id": job["id"], "name": job["name"], "state": state, "backbone": job["backbone"],
           "created": _stamp(job["created"]), "started": _stamp(job["started"]),
           "finished": _stamp(job["finished"]), "rows": job["rows"], "progress": progress or None,
           "cancel_requested": bool(job["cancel_requested"])}
    result = job["result"] or {}
    if job["state"] == "succeeded":
        out.update(metrics=result.get("metrics"), tfidf_baseline=result.get("baseline"),
                   adapter_bytes=result.get("adapter_bytes"), train_seconds=result.get("train_seconds"),
                   warnings=result.get("warnings", []))
    if job["state"] == "failed":
        out["error"] = job["error"]
    return out


def _stamp(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
