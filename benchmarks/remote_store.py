"""The object-storage store against a real S3 API: moto's server (its own process, loopback).

    python benchmarks/remote_store.py [--loads 60] [--kills 20] [--poll 1.0] [--skip-ray]

A DistilBERT-base-shaped base (768 wide, 6 layers, random init) and an adapter of it (LoRA r=8
on q/v plus the small head, 2 labels, random factors: 668 KB), as in serving_engine.py.

  cold     S3 to servable, cache miss: the pointer GET, the version's listing and files
           (checksummed), the local cache write, the verified read and the engine load;
  warm     the same adapter, cache hit: the pointer known (the serving process's watcher
           keeps its resident tasks' pointers fresh), the cached files verified and loaded;
           `warm_pointer_get` adds the pointer GET, for a task no poll has seen lately;
  local    serving_engine.py's P2 in the same run: the adapter directory on local disk to
           servable, interleaved with the warm loads (warm_p50_ms / local_p50_ms is the ratio
           the target bounds, <= 1.2);
  propagation  2 Ray Serve replicas serving from the store, polling every --poll seconds: from
           the end of a publish (its pointer PUT) to both replicas serving the new version,
           the worst of 3 publishes (the target: <= the poll interval + 1 s);
  kills    --kills publishers SIGKILLed at a random moment of their publish (uniform over its
           measured duration): afterwards the pointer must name a complete, verifying version
           (`partial_versions` counts those that do not: the target is 0).
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import emit, random_adapters, temp_dir  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CREDS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
         "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", (
        "import logging, sys, time\nfrom moto.server import ThreadedMotoServer\n"
        "logging.getLogger('werkzeug').setLevel(logging.ERROR)\n"
        f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False)\n"
        "s.start()\nprint('up', flush=True)\ntime.sleep(10**6)\n")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "up"
    return proc, f"http://127.0.0.1:{port}"


def options(endpoint: str) -> dict:
    return {"client_kwargs": {"endpoint_url": endpoint}, "anon": False,
            "key": CREDS["AWS_ACCESS_KEY_ID"], "secret": CREDS["AWS_SECRET_ACCESS_KEY"]}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def loads(url: str, endpoint: str, base: str, adapter: Path, work: Path, n: int) -> dict:
    from adapters_kit import MultiTaskModel, RemoteStore

    store = RemoteStore(url, storage_options=options(endpoint), cache_dir=work / "cache",
                        pointer_ttl_s=3600)
    digest = store.publish("task000", adapter)
    model = MultiTaskModel(base)
    limit = model.max_adapter_bytes()

    def remote_load(drop_cache: bool, fresh_pointer: bool) -> float:
        if "task000" in model.tasks:
            model.unload("task000")
        model.trim()
        if drop_cache:
            store.cache.discard(digest)
        t = time.perf_counter()
        if fresh_pointer:
            store.refresh("task000")
        model.load(store.read("task000", limit), name="task000")
        return time.perf_counter() - t

    def local_load() -> float:
        if "task000" in model.tasks:
            model.unload("task000")
        model.trim()
        t = time.perf_counter()
        model.load(adapter, name="task000")
        return time.perf_counter() - t

    for _ in range(3):  # warm-up: code paths, the s3fs session
        remote_load(True, True), remote_load(False, False), local_load()
    cold = [remote_load(True, True) for _ in range(n)]
    warm, local, warm_get = [], [], []
    for i in range(n):  # interleaved, alternating which goes first
        pair = [lambda: warm.append(remote_load(False, False)), lambda: local.append(local_load())]
        for f in (pair if i % 2 == 0 else pair[::-1]):
            f()
        warm_get.append(remote_load(False, True))
    ms = lambda xs, q: round(pct(xs, q) * 1e3, 3)  # noqa: E731
    out = {"cold_p50_ms": ms(cold, 0.5), "cold_p99_ms": ms(cold, 0.99),
           "warm_p50_ms": ms(warm, 0.5), "local_p50_ms": ms(local, 0.5),
           "warm_pointer_get_p50_ms": ms(warm_get, 0.5), "loads": n}
    out["warm_over_local"] = round(out["warm_p50_ms"] / out["local_p50_ms"], 3)
    # each warm load over the local load timed next to it: the machine's drift cancels
    out["warm_over_local_paired"] = round(statistics.median([w / x for w, x in zip(warm, local)]), 3)
    print(f"  cold (S3 -> servable, cache miss): p50 {out['cold_p50_ms']:.2f} ms, p99 "
          f"{out['cold_p99_ms']:.2f} ms over {n}")
    print(f"  warm (cache hit, pointer known):   p50 {out['warm_p50_ms']:.2f} ms; local disk P2 "
          f"p50 {out['local_p50_ms']:.2f} ms: ratio {out['warm_over_local']:.3f} (target <= 1.2), "
          f"paired {out['warm_over_local_paired']:.3f}")
    print(f"  warm with a pointer GET:           p50 {out['warm_pointer_get_p50_ms']:.2f} ms")
    return out


_PUBLISHER = """
import json, sys
from adapters_kit import RemoteStore
store = RemoteStore(sys.argv[1], storage_options=json.loads(sys.argv[2]), cache_dir=sys.argv[3])
store.pointer("task000", fresh=True)  # the session up before the timed part
print("ready", flush=True)
sys.stdin.readline()
import time
t = time.perf_counter()
store.publish("task000", sys.argv[4])
print("done", time.perf_counter() - t, flush=True)
"""


def kills(url: str, endpoint: str, adapters: list[Path], work: Path, trials: int) -> dict:
    from adapters_kit import RemoteStore

    store = RemoteStore(url, storage_options=options(endpoint), cache_dir=work / "kcache")
    store.publish("task000", adapters[0])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def publisher(i: int, source: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", _PUBLISHER, url, json.dumps(options(endpoint)),
                                 str(work / f"pub{i}"), str(source)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout.readline().strip() == "ready"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        return proc

    calibration = publisher(-1, adapters[1])  # one publish as the killed ones run it, whole
    span = float(calibration.stdout.readline().split()[1])
    calibration.wait()
    rng = random.Random(0)
    partial, became_new, finished = 0, 0, 0
    for i in range(trials):
        before = store.pointer("task000", fresh=True).version
        source = adapters[2 + i % (len(adapters) - 2)]
        proc = publisher(i, source)
        time.sleep(rng.uniform(0, 1.2 * span))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        finished += proc.stdout.read().startswith("done")
        reader = RemoteStore(url, storage_options=options(endpoint), cache_dir=work / f"check{i}")
        try:
            pointer = reader.pointer("task000", fresh=True)
            got = reader.read_version("task000", pointer.version)
            ok = got.digest == pointer.version
        except Exception as e:
            print(f"  trial {i}: torn: {e}")
            ok = False
        partial += not ok
        became_new += ok and pointer.version != before
        shutil.rmtree(work / f"check{i}", ignore_errors=True)
    orphans = store.gc("task000", grace_s=0)
    print(f"  {trials} SIGKILLed publishes (kill uniform over {span * 1e3:.0f} ms): "
          f"{partial} partial or torn current versions; {became_new} ended on the new version "
          f"(old version kept otherwise); {len(orphans)} versions collected by gc")
    return {"kill_trials": trials, "partial_versions": partial, "kills_new_version": became_new,
            "kills_after_finish": finished,
            "publish_ms": round(span * 1e3, 1), "gc_collected": len(orphans)}


def propagation(url: str, endpoint: str, base: str, adapters: list[Path], poll: float,
                work: Path) -> dict:
    import httpx
    import ray
    from ray import serve

    from adapters_kit import RemoteStore
    from adapters_kit.server import ServeConfig
    from adapters_kit.server.ray_app import APP_NAME, start

    store = RemoteStore(url, storage_options=options(endpoint), cache_dir=work / "pcache")
    store.publish("task000", adapters[0])
    os.environ["FSSPEC_S3"] = json.dumps(options(endpoint))  # the replicas' fsspec configuration
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"FSSPEC_S3": os.environ["FSSPEC_S3"], **CREDS,
                                       "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}})
    port = free_port()
    times = []
    try:
        config = ServeConfig(store=url, backbone=base, port=port, store_poll_s=poll,
                             store_cache=work / "replica-cache", torch_threads=1)
        start(config, replicas=2, replica_cpus=0.5)
        handle = serve.get_deployment_handle("AdapterEngine", app_name=APP_NAME)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
        r = client.post("/v1/admin/adapters/task000/load")
        assert r.status_code == 200, r.text

        def digests() -> list[str]:
            states = handle.broadcast("state").results(timeout_s=30)
            return [s["resident"].get("task000") for s in states]

        assert len(digests()) == 2
        for trial in range(3):
            digest = store.publish("task000", adapters[1 + trial % 2])
            done = time.monotonic()
            while any(d != digest for d in digests()):
                if time.monotonic() - done > 60:
                    raise RuntimeError("the replicas did not swap within 60 s")
                time.sleep(0.02)
            times.append(time.monotonic() - done)
            r = client.post("/v1/predict", json={"task": "task000", "inputs": ["a text"]})
            assert r.status_code == 200, r.text
            print(f"  publish {trial}: served by both replicas after {times[-1]:.2f} s")
    finally:
        import contextlib

        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
    print(f"  propagation to 2 Ray replicas, poll {poll} s: worst {max(times):.2f} s of 3 "
          f"(target <= {poll + 1:.1f} s)")
    return {"propagation_s": round(max(times), 3), "propagation_all_s": [round(t, 3) for t in times],
            "poll_s": poll}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loads", type=int, default=60, help="cold and warm loads each (>= 50)")
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLed publishes")
    ap.add_argument("--poll", type=float, default=1.0, help="replicas' poll interval, seconds")
    ap.add_argument("--skip-ray", action="store_true", help="no propagation figure")
    args = ap.parse_args()
    os.environ.update(CREDS)
    import torch

    torch.set_num_threads(1)
    from serving_engine import make_base

    from adapters_kit.backbones import Backbone

    moto, endpoint = start_moto()
    work = temp_dir("remote-store-bench-")
    os.environ["ADAPTERS_KIT_CACHE"] = os.environ.get("ADAPTERS_KIT_CACHE", str(work / "kit-cache"))
    try:
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True, **options(endpoint)).mkdir("bench")
        base = str(make_base(work, "distilbert"))
        backbone = Backbone.resolve(base)
        adapters = random_adapters(backbone, work / "adapters", 8)
        print(f"adapter: {sum(p.stat().st_size for p in adapters[0].iterdir()):,} bytes; "
              f"moto at {endpoint}", flush=True)
        result = loads("s3://bench/loads", endpoint, base, adapters[0], work, args.loads)
        result.update(kills("s3://bench/kills", endpoint, adapters, work, args.kills))
        if args.skip_ray:
            result["propagation_s"] = None
        else:
            result.update(propagation("s3://bench/ray", endpoint, base, adapters, args.poll, work))
    finally:
        moto.kill()
        shutil.rmtree(work, ignore_errors=True)
    keys = ["cold_p50_ms", "cold_p99_ms", "warm_p50_ms", "local_p50_ms", "propagation_s",
            "kill_trials", "partial_versions"]
    emit({**{k: result[k] for k in keys}, **{k: v for k, v in result.items() if k not in keys}})


if __name__ == "__main__":
    main()
