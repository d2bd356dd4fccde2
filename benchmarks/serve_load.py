"""The HTTP server under load, against a naive peft server; overload; a schema fuzz.

    python benchmarks/serve_load.py [--quick] [--adapters 100] [--clients 32] [--seconds 30]
        [--server-args "--precision bf16" ...] [--skip-overload]

Setup: the embedded DistilBERT base and N adapters (LoRA r=8 on q/v plus the classifier, random
non-zero factors: timing does not depend on training; all binary, so the naive server can
hold them all on one peft model). Request texts are real: SST-2 dev sentences and AG News test
titles with descriptions, from ../shared/data, one text per request, a random task each.

  load      C concurrent clients for a fixed time against `adapters-kit serve`, then the same
            load against the naive baseline (FastAPI + peft, one request at a time:
            set_adapter, then forward), each a subprocess on loopback. req/s, p50, p99, errors.
  overload  10 x C clients for a bounded time against the server with a small queue: the
            status counts (only 200 and 429 should come back) and the server's RSS, sampled.
  fuzz      schemathesis generates requests from the server's own OpenAPI spec (positive and
            negative cases, every operation): the number of cases and of responses >= 500.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import random
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import ROOT, emit, random_adapters, require_shared  # noqa: E402

BACKBONE = "embedded-distilbert"


# -- data and adapters --------------------------------------------------------------------------

def load_texts() -> list[str]:
    sst2 = require_shared("sst2", "dev.tsv")
    ag = require_shared("ag_news", "test.csv")
    texts = []
    with open(sst2, encoding="utf-8") as f:
        texts += [row["sentence"].strip() for row in csv.DictReader(f, delimiter="\t")]
    with open(ag, encoding="utf-8") as f:
        texts += [f"{row['title']}. {row['description']}".strip() for row in csv.DictReader(f)]
    return [t for t in texts if t]


def make_store(root: Path, k: int) -> list[str]:
    """K adapter directories with random LoRA factors (r=8, q/v + classifier), names task000..."""
    from adapters_kit.backbones import Backbone

    return [p.name for p in random_adapters(Backbone.resolve(BACKBONE), root, k, BACKBONE)]


# -- the naive baseline server ------------------------------------------------------------------

def baseline_app(store: Path):
    """FastAPI + peft: every adapter on one PeftModel; one request at a time, set_adapter, forward."""
    import threading

    import torch
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from peft import PeftModel

    from adapters_kit.backbones import Backbone

    backbone = Backbone.resolve(BACKBONE)
    tokenizer = backbone.tokenizer()
    names = sorted(p.name for p in store.iterdir() if (p / "task.json").exists())
    model = PeftModel.from_pretrained(backbone.load_model(2), str(store / names[0]),
                                      adapter_name=names[0]).eval()
    for name in names[1:]:
        model.load_adapter(str(store / name), adapter_name=name)
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/v1/predict")
    def predict(body: dict):  # a plain def: FastAPI runs it in its thread pool
        task, inputs = body.get("task"), body.get("inputs")
        if task not in names or not isinstance(inputs, list) or not inputs:
            return JSONResponse({"error": {"code": "bad_request"}}, status_code=422)
        with lock, torch.inference_mode():
            model.set_adapter(task)
            enc = tokenizer(inputs, padding=True, truncation=True, max_length=128,
                            return_tensors="pt")
            probs = model(**enc).logits.softmax(-1)  # [n, 2]
        return {"task": task, "outputs": [{"label": "ab"[int(p.argmax())],
                                           "scores": {"a": float(p[0]), "b": float(p[1])}}
                                          for p in probs]}

    @app.get("/readyz")
    def readyz():
        return {"status": "ready"}

    return app


def run_baseline_server(store: str, port: int) -> None:
    import uvicorn

    uvicorn.run(baseline_app(Path(store)), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


# -- processes ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(log, "a") as out:
        return subprocess.Popen([sys.executable, *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def wait_ready(proc: subprocess.Popen, url: str, log: Path, limit_s: float = 600) -> None:
    import httpx

    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}); log:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"server at {url} not ready after {limit_s} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- load -----------------------------------------------------------------------------------------

async def drive(url: str, clients: int, seconds: float, tasks: list[str], texts: list[str],
                seed: int = 0, on_tick=None, weights: list[float] | None = None,
                on_response=None) -> dict:
    """`clients` concurrent loops, each sending one request after the other for `seconds`.

    Tasks are drawn uniformly, or by `weights`; `on_response(response)` sees every response.
    """
    import httpx

    latencies: list[float] = []
    statuses: Counter = Counter()
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        end = time.monotonic() + seconds

        async def loop(i: int) -> None:
            rng = random.Random(seed * 1000 + i)
            while time.monotonic() < end:
                task = rng.choice(tasks) if weights is None else rng.choices(tasks, weights)[0]
                body = {"task": task, "inputs": [rng.choice(texts)]}
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/predict", json=body)
                    statuses[str(r.status_code)] += 1
                    if on_response is not None:
                        on_response(r)
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - t)
                except httpx.HTTPError as e:
                    statuses[type(e).__name__] += 1

        async def ticker() -> None:
            while on_tick is not None and time.monotonic() < end:
                on_tick()
                await asyncio.sleep(0.2)

        started = time.monotonic()
        await asyncio.gather(ticker(), *(loop(i) for i in range(clients)))
        elapsed = time.monotonic() - started
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3, 2) \
            if latencies else float("nan")

    ok = statuses.get("200", 0)
    return {"rps": round(ok / elapsed, 2), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "mean_ms": round(statistics.fmean(latencies) * 1e3, 2) if latencies else None,
            "requests": sum(statuses.values()), "errors": sum(statuses.values()) - ok,
            "status_counts": dict(statuses)}


def warm(url: str, tasks: list[str], texts: list[str]) -> None:
    """One request per task (loads every adapter) before anything is timed."""
    import httpx

    with httpx.Client(base_url=url, timeout=120) as c:
        for t in tasks:
            r = c.post("/v1/predict", json={"task": t, "inputs": texts[:2]})
            if r.status_code != 200:
                raise SystemExit(f"warm-up request for {t} got {r.status_code}: {r.text[:300]}")


# -- fuzz -----------------------------------------------------------------------------------------

def fuzz(url: str, examples: int, tasks: list[str]) -> dict:
    """schemathesis cases from the server's OpenAPI spec; count responses >= 500.

    Half the predict cases get a real task name, so that generated inputs reach the engine
    (a random name only ever meets the 404)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    cases, server_errors, failures = 0, 0, []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case) -> None:
                nonlocal cases, server_errors
                if case.operation.path == "/v1/predict" and isinstance(case.body, dict) \
                        and "task" in case.body and cases % 2 == 0:
                    case.body["task"] = tasks[cases % len(tasks)]
                response = case.call(base_url=url, timeout=30)
                cases += 1
                if response.status_code >= 500:
                    server_errors += 1
                    failures.append(f"{case.method} {case.formatted_path}: {response.status_code} "
                                    f"{response.text[:200]}")

            try:
                run()
            except Exception as e:  # noqa: BLE001
                # an operation with no inputs has no negative cases: hypothesis says so
                if type(e).__name__ != "Unsatisfiable":
                    failures.append(f"{operation.label} {mode.value}: {type(e).__name__}: {e}"[:300])
    return {"fuzz_cases": cases, "fuzz_5xx": server_errors, "fuzz_notes": failures[:10]}


# -- main -------------------------------------------------------------------------------------------

def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: 4 adapters, seconds-long")
    ap.add_argument("--adapters", type=int, default=100)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30.0, help="load time per server")
    ap.add_argument("--overload-seconds", type=float, default=20.0)
    ap.add_argument("--overload-queue", type=int, default=128,
                    help="the server's queue (inputs) in the overload phase")
    ap.add_argument("--fuzz-examples", type=int, default=50, help="per operation and mode")
    ap.add_argument("--server-args", action="append", default=None, metavar="ARGS",
                    help="extra `adapters-kit serve` arguments, e.g. \"--precision bf16\"; "
                    "repeat to load several server settings in one run, each against the same "
                    "baseline (default: the server's defaults)")
    ap.add_argument("--skip-overload", action="store_true", help="only the load phase")
    ap.add_argument("--work", help="folder for the store and logs (default: a temporary one)")
    ap.add_argument("--baseline-server", nargs=2, metavar=("STORE", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline_server:
        run_baseline_server(args.baseline_server[0], int(args.baseline_server[1]))
        return
    if args.quick:
        args.adapters, args.clients, args.seconds = 4, 8, 3.0
        args.overload_seconds, args.overload_queue, args.fuzz_examples = 3.0, 16, 3

    texts = load_texts()
    work = Path(args.work or tempfile.mkdtemp(prefix="serve-load-"))
    store = work / "store"
    store.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    tasks = make_store(store, args.adapters)
    print(f"{len(tasks)} adapters in {store} ({time.perf_counter() - t:.1f} s); "
          f"{len(texts)} request texts", flush=True)
    record: dict = {"adapters": len(tasks), "clients": args.clients, "seconds": args.seconds,
                    "quick": args.quick, "cpus": os.cpu_count()}

    # the server, once per setting
    log = work / "server.log"
    variants = []
    for extra in args.server_args or [""]:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start(["-m", "adapters_kit.cli", "serve", "--store", str(store), "--backbone",
                        BACKBONE, "--port", str(port), *shlex.split(extra)], log)
        try:
            wait_ready(server, url, log)
            warm(url, tasks, texts)
            ours = asyncio.run(drive(url, args.clients, args.seconds, tasks, texts, seed=1))
            print(f"server {extra or '(defaults)'}: {ours}", flush=True)
            variants.append({"server_args": extra, **ours})
        finally:
            stop(server)
    ours = variants[0]

    # the naive baseline, same load
    port = free_port()
    burl = f"http://127.0.0.1:{port}"
    blog = work / "baseline.log"
    baseline = start([str(Path(__file__).resolve()), "--baseline-server", str(store), str(port)],
                     blog)
    try:
        wait_ready(baseline, burl, blog)
        warm(burl, tasks, texts)
        base = asyncio.run(drive(burl, args.clients, args.seconds, tasks, texts, seed=1))
        print(f"baseline: {base}", flush=True)
    finally:
        stop(baseline)

    for v in variants:
        v["rps_ratio"] = round(v["rps"] / base["rps"], 2) if base["rps"] else None
    record.update({
        "rps": ours["rps"], "p50_ms": ours["p50_ms"], "p99_ms": ours["p99_ms"],
        "errors": ours["errors"],
        "baseline_rps": base["rps"], "baseline_p50_ms": base["p50_ms"],
        "baseline_p99_ms": base["p99_ms"], "baseline_errors": base["errors"],
        "rps_ratio": ours["rps_ratio"], "variants": variants,
    })
    if args.skip_overload:
        emit(record)
        return

    # overload: 10 x the clients against a small queue; RSS sampled throughout
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(["-m", "adapters_kit.cli", "serve", "--store", str(store), "--backbone",
                    BACKBONE, "--port", str(port), "--queue-inputs", str(args.overload_queue),
                    "--max-inputs", str(min(64, args.overload_queue)),
                    *shlex.split(variants[0]["server_args"])], log)
    try:
        wait_ready(server, url, log)
        warm(url, tasks, texts)
        rss = [rss_mb(server.pid)]
        before = rss[0]
        over = asyncio.run(drive(url, 10 * args.clients, args.overload_seconds, tasks, texts,
                                 seed=2, on_tick=lambda: rss.append(rss_mb(server.pid))))
        rss.append(rss_mb(server.pid))
        print(f"overload: {over}; RSS {before:.0f} -> peak {max(rss):.0f} -> {rss[-1]:.0f} MB",
              flush=True)
        fuzzed = fuzz(url, args.fuzz_examples, tasks)
        print(f"fuzz:     {fuzzed}", flush=True)
        alive = server.poll() is None
    finally:
        stop(server)

    record.update({
        "overload_clients": 10 * args.clients, "overload_seconds": args.overload_seconds,
        "overload_status_counts": over["status_counts"],
        "overload_rss_start_mb": round(before, 1), "peak_rss_mb": round(max(rss), 1),
        "overload_rss_end_mb": round(rss[-1], 1), "alive_after_fuzz": alive,
        **fuzzed,
    })
    emit(record)


if __name__ == "__main__":
    main()
