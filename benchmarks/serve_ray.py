"""The server on Ray Serve under load: 1 engine replica against 2, and multiplexed routing.

    python benchmarks/serve_ray.py [--quick] [--adapters 100] [--clients 32] [--seconds 20]

Setup as benchmarks/serve_load.py (its store maker, texts and load generator): the embedded
DistilBERT base, N random-factor adapters, real SST-2 and AG News texts, one text per request.
A local Ray instance (the machine's CPUs, no dashboard) runs the deployment in front of 1, then
2 engine replicas, each with 1 CPU and (CPUs - 1) / replicas torch threads.

  load     C concurrent clients for a fixed time, tasks drawn uniformly, every adapter loaded
           first: req/s, p50, p99 with 1 and with 2 replicas, and the ratio.
  routing  a fresh deployment (nothing resident), tasks drawn from a Zipf law (s = --zipf), each
           replica's cache budget holding --cache-fraction of all adapter bytes: the fraction of
           requests served by a replica that already held the task's adapter (the response
           header X-Adapter-Warm), with 2 replicas and, for reference, with 1.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from pathlib import Path

from _common import emit, temp_dir
from serve_load import BACKBONE, drive, free_port, load_texts, make_store, wait_ready, warm


def deploy(store: Path, port: int, replicas: int, cache_bytes: int | None = None) -> None:
    from adapters_kit.server import ServeConfig
    from adapters_kit.server.ray_app import start

    cpus = os.cpu_count() or 2
    extra = {"cache_bytes": cache_bytes} if cache_bytes else {}
    config = ServeConfig(store=store, backbone=BACKBONE, port=port,
                         torch_threads=max(1, (cpus - 1) // replicas), **extra)
    start(config, replicas)


def undeploy() -> None:
    from ray import serve

    from adapters_kit.server.ray_app import APP_NAME

    serve.delete(APP_NAME)


class _Proc:
    """wait_ready polls a process; the deployment is not one, so it never exits."""

    def poll(self):
        return None


def routing(url: str, args, tasks: list[str], texts: list[str]) -> dict:
    weights = [1 / (rank + 1) ** args.zipf for rank in range(len(tasks))]
    seen: Counter = Counter()
    replicas: Counter = Counter()

    def count(r) -> None:
        if r.status_code == 200:
            seen[r.headers.get("X-Adapter-Warm")] += 1
            replicas[r.headers.get("X-Served-By")] += 1

    result = asyncio.run(drive(url, args.clients, args.seconds, tasks, texts, seed=3,
                               weights=weights, on_response=count))
    total = seen["true"] + seen["false"]
    return {"warm_hit_fraction": round(seen["true"] / total, 4) if total else None,
            "requests": total, "per_replica": sorted(replicas.values(), reverse=True),
            "rps": result["rps"], "p99_ms": result["p99_ms"], "errors": result["errors"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: 6 adapters, seconds-long")
    ap.add_argument("--adapters", type=int, default=100)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20.0, help="load time per phase")
    ap.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of the task mix")
    ap.add_argument("--cache-fraction", type=float, default=0.6,
                    help="routing phase: each replica's cache budget, as a share of all adapters")
    ap.add_argument("--work", help="folder for the store (default: a temporary one)")
    args = ap.parse_args()
    if args.quick:
        args.adapters, args.clients, args.seconds = 6, 4, 3.0

    import ray

    texts = load_texts()
    store = Path(args.work or temp_dir("serve-ray-")) / "store"
    store.mkdir(parents=True, exist_ok=True)
    tasks = make_store(store, args.adapters)
    total_bytes = sum(f.stat().st_size for f in store.rglob("*.safetensors"))
    cpus = os.cpu_count() or 2
    record: dict = {"adapters": len(tasks), "clients": args.clients, "seconds": args.seconds,
                    "quick": args.quick, "cpus": cpus, "zipf": args.zipf,
                    "cache_fraction": args.cache_fraction}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ray.init(num_cpus=max(2, cpus), include_dashboard=False, log_to_driver=False)
    try:
        load = {}
        for replicas in (1, 2):
            t = time.perf_counter()
            deploy(store, port, replicas)
            wait_ready(_Proc(), url, Path(os.devnull))
            warm(url, tasks, texts)
            print(f"{replicas} replica(s) up and warm in {time.perf_counter() - t:.1f} s",
                  flush=True)
            load[replicas] = asyncio.run(drive(url, args.clients, args.seconds, tasks, texts,
                                               seed=1))
            print(f"load, {replicas} replica(s): {load[replicas]}", flush=True)
            undeploy()
        budget = max(1, int(args.cache_fraction * total_bytes))
        route = {}
        for replicas in (2, 1):
            deploy(store, port, replicas, cache_bytes=budget)
            wait_ready(_Proc(), url, Path(os.devnull))
            route[replicas] = routing(url, args, tasks, texts)
            print(f"routing, {replicas} replica(s), Zipf {args.zipf}, cache {budget} of "
                  f"{total_bytes} bytes: {route[replicas]}", flush=True)
            undeploy()
    finally:
        ray.shutdown()

    one, two = load[1], load[2]
    record.update({
        "rps_1_replica": one["rps"], "rps_2_replicas": two["rps"],
        "ratio": round(two["rps"] / one["rps"], 3) if one["rps"] else None,
        "p50_ms_1_replica": one["p50_ms"], "p99_ms_1_replica": one["p99_ms"],
        "p50_ms_2_replicas": two["p50_ms"], "p99_ms_2_replicas": two["p99_ms"],
        "errors": one["errors"] + two["errors"],
        "warm_hit_fraction": route[2]["warm_hit_fraction"],
        "warm_hit_fraction_1_replica": route[1]["warm_hit_fraction"],
        "routing_requests_per_replica": route[2]["per_replica"],
        "cache_budget_bytes": budget, "adapter_bytes_total": total_bytes,
    })
    emit(record)


if __name__ == "__main__":
    main()
