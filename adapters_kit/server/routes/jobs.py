"""The training-job routes (`serve --jobs`) and the checks at the door.

    POST   /v1/jobs        multipart: file (CSV, TSV or JSONL) + name, kind, labels, text_fields,
                           label_field, label_map, overrides (JSON of TrainConfig fields)
    GET    /v1/jobs        this key's jobs, newest first
    GET    /v1/jobs/{id}   state, progress; metrics, TF-IDF baseline and adapter bytes on success
    DELETE /v1/jobs/{id}   cancel

An upload is checked at the door as `adapters-kit train` checks its data (the task card's
checks, the training settings' checks, the kind's data checks, same messages), so a bad file is
refused at once, not when its turn to train comes. The worker and the publishing of what it
trained are `server/jobs.py`'s (JobService).
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time.

import json
import shutil
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool

from ...errors import AdaptersKitError, shown
from ...jobs.table import new_job_id, public_view
from ...tasks import TASK_NAME_RULE, is_task_name
from ...tasks.kinds import DEFAULT_KIND
from ..auth import callers
from ..errors import ServeError
from ..responses import json_response
from ..tenants import Tenant

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}
FIXED = ("backbone", "threads", "progress", "resume", "overwrite", "baseline")
"""TrainConfig fields a job may not set: the server's base, the worker's budget, resuming."""


def unknown_job() -> ServeError:
    # One body for "no such job" and "another tenant's job", byte for byte.
    return ServeError(404, "unknown_job", "this job does not exist or this API key may not see "
                      "it; GET /v1/jobs lists this key's jobs")


def _names(text: str | None, field: str) -> list[str] | None:
    """A list form field: a JSON list of strings, or names separated by commas."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ServeError(422, "invalid_task", f"{field} {shown(text)} is not a JSON list of "
                             'strings; send e.g. ["neg", "pos"] or neg,pos')
        return value
    return [part.strip() for part in text.split(",") if part.strip()]


def _table_field(text: str | None, field: str) -> dict:
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ServeError(422, "invalid_task" if field == "label_map" else "invalid_config",
                         f"{field} {shown(text)} is not a JSON object; send e.g. "
                         + ('{"0": "neg", "1": "pos"}' if field == "label_map"
                            else '{"epochs": 2, "learning_rate": 0.001}'))
    return value


def check_upload(path: Path, shown_as: str, spec_fields: dict, overrides: dict,
                 max_rows: int) -> tuple[dict, dict, int]:
    """The job's task card and training settings, checked with its data as `train` checks
    them; (spec dict, overrides, training rows) or ServeError 422 naming the problem."""
    from dataclasses import fields

    from ...tasks import TaskSpec
    from ...tasks.kinds import kind_of
    from ...training.config import TrainConfig

    def hide(message: str) -> str:  # the server's paths are not the caller's business
        return message.replace(str(path), shown_as).replace(str(path.parent), "<upload>")

    allowed = sorted(f.name for f in fields(TrainConfig) if f.name not in FIXED)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ServeError(422, "invalid_config", f"overrides {unknown} are not training settings a "
                         f"job may set; use {allowed}")
    try:
        spec = TaskSpec(**spec_fields, train=str(path))
    except (AdaptersKitError, TypeError) as e:
        raise ServeError(422, "invalid_task", hide(str(e))) from None
    try:
        run = TrainConfig(**overrides).resolved(spec)
    except (AdaptersKitError, TypeError) as e:
        raise ServeError(422, "invalid_config", hide(str(e))) from None
    try:
        train, dev = kind_of(spec).splits(spec, seed=run.seed, max_train=run.max_train_examples)
    except (AdaptersKitError, ValueError, OSError) as e:
        raise ServeError(422, "invalid_data", hide(str(e))) from None
    rows = len(train) + len(dev)
    if rows > max_rows:
        raise ServeError(422, "too_many_rows", f"{shown_as} has {rows} rows; a job takes at most "
                         f"{max_rows} (job_max_rows): send a sample of them")
    return spec.to_dict(), overrides, len(train)


def router(srv) -> APIRouter:
    """The routes over `srv` (the app's Server) and its `jobs` (a server.jobs.JobService)."""
    routes = APIRouter(tags=["jobs"])
    Caller, _ = callers(srv.tenants)
    config, jobs = srv.config, srv.jobs

    @routes.post("/v1/jobs", status_code=201,
                 summary="Upload a labelled file and queue a training job for it")
    async def submit(tenant: Caller, file: Annotated[UploadFile, File()],
                     name: Annotated[str, Form()], kind: Annotated[str, Form()] = DEFAULT_KIND,
                     labels: Annotated[str | None, Form()] = None,
                     text_fields: Annotated[str | None, Form()] = None,
                     label_field: Annotated[str | None, Form()] = None,
                     label_map: Annotated[str | None, Form()] = None,
                     overrides: Annotated[str | None, Form()] = None):
        if not is_task_name(name):
            raise ServeError(422, "invalid_name", f"name {shown(name)} is not a task name: use "
                             f"{TASK_NAME_RULE}")
        if not tenant.may_use(name):
            raise ServeError(403, "forbidden_task", f"this API key may not train {name!r}: its "
                             f"task names must match {list(tenant.tasks)}")
        original = Path(file.filename or "upload").name[:100] or "upload"
        fmt = FORMATS.get(Path(original).suffix.lower())
        if fmt is None:
            raise ServeError(422, "invalid_data", f"file {shown(original)} is not a .csv, .tsv or "
                             ".jsonl file; send the labelled file with one of those suffixes")
        spec_fields = {"name": name, "kind": kind, "format": fmt}
        for key, value in (("labels", _names(labels, "labels")),
                           ("text_fields", _names(text_fields, "text_fields")),
                           ("label_field", label_field or None),
                           ("label_map", _table_field(label_map, "label_map") or None)):
            if value is not None:
                spec_fields[key] = value
        settings = _table_field(overrides, "overrides")
        job_id = new_job_id()
        upload = jobs.layout.upload_dir(job_id) / f"data.{fmt}"

        def take() -> dict:
            upload.parent.mkdir(parents=True, exist_ok=True)
            with open(upload, "wb") as out:
                shutil.copyfileobj(file.file, out)
            spec, checked, rows = check_upload(upload, original, spec_fields, settings,
                                               config.job_max_rows)
            job = jobs.table.add(job_id, tenant=tenant.name, name=name, backbone=config.backbone,
                                 spec=spec, config=checked, rows=rows,
                                 max_queued=config.tenant_queued_jobs)
            if job is None:
                raise ServeError(429, "too_many_jobs", f"this API key already has "
                                 f"{config.tenant_queued_jobs} jobs queued (tenant_queued_jobs); "
                                 "submit more once some have started, or cancel some",
                                 headers={"Retry-After": "30"})
            return job

        try:
            job = await run_in_threadpool(take)
        except BaseException:
            await run_in_threadpool(shutil.rmtree, upload.parent, True)
            raise
        return json_response(201, public_view(job), {"Location": f"/v1/jobs/{job_id}"})

    @routes.get("/v1/jobs", summary="This API key's jobs, newest first")
    async def listing(tenant: Caller):
        found = await run_in_threadpool(jobs.table.list, tenant.name)
        return json_response(200, {"jobs": [public_view(j) for j in found]})

    async def one_job(action, job_id: str, tenant: Tenant):
        """`action` (the table's get or cancel) on this tenant's job; 404 for any other."""
        job = await run_in_threadpool(action, job_id, tenant.name)
        if job is None:
            raise unknown_job()
        return json_response(200, public_view(job))

    @routes.get("/v1/jobs/{job_id}", summary="One job: state, progress, results")
    async def show(job_id: str, tenant: Caller):
        return await one_job(jobs.table.get, job_id, tenant)

    @routes.delete("/v1/jobs/{job_id}", summary="Cancel a job")
    async def cancel(job_id: str, tenant: Caller):
        return await one_job(jobs.table.cancel, job_id, tenant)

    return routes
