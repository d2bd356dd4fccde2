"""`serve` (its settings flags are ServeConfig's fields, cli.flags) and `jobs`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import AdaptersKitError
from ..server.config import ENV_PREFIX, ServeConfig
from .args import json_flag
from .flags import ConfigFlags
from .report import print_json

SERVE_FLAGS = ConfigFlags(ServeConfig, env_prefix=ENV_PREFIX, custom={
    "store": {"type": str},  # a URL stays a string (a Path folds s3://b to s3:/b)
    "device": {"metavar": "auto|cpu|cuda|cuda:N"},
})
"""Every ServeConfig field is a flag of `serve`; a flag not given leaves the field to
ADAPTERS_KIT_<FIELD>, then to its default (ServeConfig.from_env)."""


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from ..server.app import serve
    except ImportError as e:
        print(f"adapters-kit: error: the server needs its extra ({e.name} is missing): "
              'pip install "adapters-kit[serve]"', file=sys.stderr)
        return 2
    # flags win over ADAPTERS_KIT_* variables, which win over the defaults
    config = ServeConfig.from_env(**SERVE_FLAGS.given(args))
    if not args.ray:
        if args.replicas is not None or args.ray_address or args.ray_gpus_per_replica is not None:
            raise AdaptersKitError("--replicas, --ray-address and --ray-gpus-per-replica need "
                                   "--ray; add --ray to serve on Ray Serve, or drop them for the "
                                   "single-process server")
        serve(config)
        return 0
    if args.replicas is not None and args.replicas < 1:
        raise AdaptersKitError(f"--replicas {args.replicas}: a deployment needs at least 1 "
                               "engine replica")
    try:
        from ..server.ray_app import serve_ray
    except ImportError as e:
        print(f"adapters-kit: error: --ray needs Ray Serve ({e.name} is missing): "
              'pip install "adapters-kit[ray]"', file=sys.stderr)
        return 2
    serve_ray(config, args.replicas or 1, args.ray_address, args.ray_gpus_per_replica or 0.0)
    return 0


def _gpu_count(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and (value <= 1 or value.is_integer())):
        raise argparse.ArgumentTypeError(f"{text!r} is not a GPU count; give a fraction of one "
                                         "GPU (e.g. 0.5) or a whole number")
    return value


def cmd_jobs(args: argparse.Namespace) -> int:
    """`jobs list|show|cancel`: the job table of a store, as the server sees it."""
    from ..adapters import store_location
    from ..jobs.layout import jobs_root
    from ..jobs.table import JobTable, public_view

    store = store_location(args.store)
    if isinstance(store, Path) and not store.is_dir():
        raise AdaptersKitError(f"store {store} is not a directory; pass --store DIR (or URL), the "
                               "store the server was started with")
    folder = jobs_root(store, args.jobs_dir)
    if not (folder / "jobs.sqlite3").is_file():
        raise AdaptersKitError(f"no job table for store {store} in {folder}; a server started "
                               "with --jobs on this machine keeps it there (pass --jobs-dir DIR "
                               "if it was started with one)")
    table = JobTable.for_store(store, args.jobs_dir)
    if args.action == "list":
        jobs = [{**public_view(j), "tenant": j["tenant"]} for j in table.list(args.tenant, args.limit)]
        if args.json:
            print_json({"jobs": jobs})
        for j in [] if args.json else jobs:
            p = j["progress"] or {}
            step = f"{p.get('step', 0)}/{p.get('total_steps') or '?'}" if p else ""
            print(f"{j['id']}  {j['tenant']:<12} {j['name']:<24} {j['state']:<10} {step:<10} "
                  f"{j['created']}")
        return 0
    if not args.job_id:
        raise AdaptersKitError(f"jobs {args.action} needs a job id; `adapters-kit jobs list "
                               f"--store {store}` lists them")
    job = table.cancel(args.job_id) if args.action == "cancel" else table.get(args.job_id)
    if job is None:
        raise AdaptersKitError(f"no job {args.job_id!r} in {store}; `adapters-kit jobs list "
                               f"--store {store}` lists them")
    view = {**public_view(job), "tenant": job["tenant"]}
    if args.json or args.action == "show":
        print(json.dumps(view, indent=None if args.json else 2, default=str))
    else:
        print(f"{job['id']}: {view['state']}" + (" (asked to stop; the worker ends it at its next "
                                                 "progress report)" if view["state"] == "running"
                                                 else ""))
    return 0


def add_serve(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="serve every adapter in a store over HTTP (see README); "
                       "every setting may also come from ADAPTERS_KIT_<SETTING>, under the flags")
    SERVE_FLAGS.add_to(p.add_argument_group("server settings (ServeConfig)"))
    ray = p.add_argument_group("Ray Serve (README, section Serving on Ray)")
    ray.add_argument("--ray", action="store_true",
                     help="serve on Ray Serve: engine replicas, requests routed by task")
    ray.add_argument("--replicas", type=int, help="with --ray: engine replicas (default 1)")
    ray.add_argument("--ray-address", help="with --ray: join the Ray cluster at this address "
                     "(default: RAY_ADDRESS, else start a local Ray instance)")
    ray.add_argument("--ray-gpus-per-replica", type=_gpu_count, metavar="N",
                     help="with --ray: GPUs each engine replica asks Ray for, a fraction (0.5: "
                     "two replicas share one) or a whole number (default 0: the CPU)")
    return p


def add_jobs(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("jobs", help="list, show or cancel the training jobs of a store")
    p.add_argument("action", choices=["list", "show", "cancel"], help="what to do")
    p.add_argument("job_id", nargs="?", help="the job (show, cancel)")
    p.add_argument("--store", required=True, help="the store the server takes jobs for (a "
                   "folder or a URL)")
    p.add_argument("--jobs-dir", help="the jobs folder the server was given, if any")
    p.add_argument("--tenant", help="list only this tenant's jobs")
    p.add_argument("--limit", type=int, default=100, help="list at most this many (newest first)")
    json_flag(p, "print the job(s) as one JSON object")
    return p
