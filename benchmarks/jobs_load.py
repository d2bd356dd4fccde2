"""Training jobs beside serving: latency while jobs train, a flooding tenant, SIGKILL mid-job.

    python benchmarks/jobs_load.py [--quick] [--seconds 30] [--clients 16] [--think-ms 250]
        [--kill-trials 10] [--job-rows 96]

Setup: `adapters-kit serve --jobs` on the embedded DistilBERT base (a subprocess on loopback,
its trainer worker beside it: 1 torch thread at a lower priority, the engine on the other
cores), 8 serving adapters (random LoRA factors: timing does not depend on training), tenants
`c0..c3` (the 16 clients, 4 each, each with two tasks), `trainer` (jobs), `flood`. Request
texts: SST-2 dev sentences and AG News titles with descriptions, one per request. Jobs:
slices of SST-2 train (`--job-rows` rows, 1 epoch, max_length 48).

  idle      16 clients (closed loop, `--think-ms` between requests) for `--seconds`: p50, p99.
  training  the same load while the trainer tenant's jobs train (checked running at the start
            and the end of the phase): p50, p99; the target is p99 < 2 x the idle p99.
  flood     the same 16 clients, plus tenant `flood` sending 10 x the request rate the 16
            clients sent when idle, open loop (whatever the answers), on the same tasks: the 16
            clients' errors (target 0) and the flood tenant's status counts.
  kill      10 jobs queued; each job, at a random moment (up to `--kill-window` s) after it is
            seen training, gets a SIGKILL (of the worker alone, then of the whole server, in
            turn; the server is restarted); then every job must finish, and no store entry may
            be a partial adapter.

The last line printed is one JSON object with idle_p99_ms, training_p99_ms,
flood_other_tenant_errors, kill_trials and partial_adapters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import ROOT, emit, random_adapters, require_shared, temp_dir  # noqa: E402

BACKBONE = "embedded-distilbert"
TENANTS = 4
TASKS = 2 * TENANTS


def key(tenant: str) -> str:
    return f"key-{tenant}-0123456789abcdef"


def keys_toml() -> str:
    parts = [f'[tenants.c{i}]\nkeys = ["{key(f"c{i}")}"]\ntasks = ["task{2 * i:03d}", '
             f'"task{2 * i + 1:03d}"]\n' for i in range(TENANTS)]
    parts.append(f'[tenants.trainer]\nkeys = ["{key("trainer")}"]\ntasks = ["job_*"]\n')
    parts.append(f'[tenants.flood]\nkeys = ["{key("flood")}"]\ntasks = ["task*"]\n')
    return "\n".join(parts)


def load_texts() -> list[str]:
    texts = []
    with open(require_shared("sst2", "dev.tsv"), encoding="utf-8") as f:
        texts += [r["sentence"].strip() for r in csv.DictReader(f, delimiter="\t")]
    with open(require_shared("ag_news", "test.csv"), encoding="utf-8") as f:
        texts += [f"{r['title']}. {r['description']}".strip() for r in csv.DictReader(f)]
    return [t for t in texts if t]


def job_files(n: int, rows: int) -> list[str]:
    """n CSV texts of `rows` SST-2 training rows each (different slices)."""
    with open(require_shared("sst2", "train.tsv"), encoding="utf-8") as f:
        data = [(r["sentence"].strip(), r["label"]) for r in csv.DictReader(f, delimiter="\t")]
    out = []
    for i in range(n):
        part = data[i * rows:(i + 1) * rows]
        lines = ["text,label"] + ['"' + t.replace('"', '""') + f'",{"pos" if lab == "1" else "neg"}'
                                  for t, lab in part]
        out.append("\n".join(lines) + "\n")
    return out


# -- the server process ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, store: Path, keys: Path, port: int, log: Path) -> None:
        self.store, self.keys, self.port, self.log = store, keys, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        started = time.perf_counter()
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "adapters_kit.cli", "serve", "--jobs", "--store",
                 str(self.store), "--keys", str(self.keys), "--backbone", BACKBONE, "--port",
                 str(self.port), "--tenant-queued-jobs", "16", "--deadline-s", "10"],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        import httpx

        for _ in range(3000):
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited ({self.proc.returncode}); see {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return time.perf_counter() - started
            time.sleep(0.1)
        raise SystemExit("the server did not become ready")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(60)
            if self.proc.poll() is None:
                self.proc.kill()


# -- load -----------------------------------------------------------------------------------------

async def load(url: str, texts: list[str], seconds: float, clients: int, think_s: float,
               flood_rate: float = 0.0) -> tuple[list[float], Counter, Counter]:
    """Closed-loop clients of tenants c0..c3 (and tenant flood sending `flood_rate` requests
    a second, open loop: whatever the answers, as a flood does): the clients' latencies in ms,
    their status counts, and the flood tenant's status counts."""
    import httpx

    latencies: list[float] = []
    statuses: Counter = Counter()
    flood: Counter = Counter()
    end = time.monotonic() + seconds
    rng = random.Random(0)

    async def client(c: httpx.AsyncClient, tenant: str, tasks: list[str], out: Counter,
                     timed: bool) -> None:
        while time.monotonic() < end:
            body = {"task": rng.choice(tasks), "inputs": [rng.choice(texts)]}
            t = time.perf_counter()
            try:
                r = await c.post("/v1/predict", json=body, headers={"Authorization":
                                                                     f"Bearer {key(tenant)}"})
                out[r.status_code] += 1
            except httpx.HTTPError as e:
                out[type(e).__name__] += 1
            if timed:
                latencies.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(think_s)

    async def one_flood(c: httpx.AsyncClient) -> None:
        body = {"task": f"task{rng.randrange(TASKS):03d}", "inputs": [rng.choice(texts)]}
        try:
            r = await c.post("/v1/predict", json=body,
                             headers={"Authorization": f"Bearer {key('flood')}"})
            flood[r.status_code] += 1
        except httpx.HTTPError as e:
            flood[type(e).__name__] += 1

    async def flooding(c: httpx.AsyncClient) -> None:
        sent, start, tasks = 0, time.monotonic(), set()
        while time.monotonic() < end:
            due = start + sent / flood_rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            task = asyncio.create_task(one_flood(c))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.gather(*tasks)

    limits = httpx.Limits(max_connections=clients + (256 if flood_rate else 0) + 8)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        work = []
        for i in range(clients):
            t = i % TENANTS
            work.append(client(c, f"c{t}", [f"task{2 * t:03d}", f"task{2 * t + 1:03d}"],
                               statuses, True))
        if flood_rate:
            work.append(flooding(c))
        await asyncio.gather(*work)
    return latencies, statuses, flood


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else values[0]


# -- jobs -----------------------------------------------------------------------------------------

def submit(url: str, name: str, data: str, settings: dict) -> str:
    import httpx

    r = httpx.post(url + "/v1/jobs", headers={"Authorization": f"Bearer {key('trainer')}"},
                   data={"name": name, "labels": "neg,pos", "overrides": json.dumps(settings)},
                   files={"file": (f"{name}.csv", data.encode(), "text/csv")}, timeout=120)
    if r.status_code != 201:
        raise SystemExit(f"job {name} refused: {r.status_code} {r.text}")
    return r.json()["id"]


def jobs_now(store: Path) -> list[dict]:
    from adapters_kit.jobs.table import JobTable

    return JobTable.for_store(store).list(limit=1000)


def wait_until(predicate, timeout: float, what: str, poll: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            value = predicate()
            if value:
                return value
        time.sleep(poll)
    raise SystemExit(f"gave up waiting for {what}")


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


def training(store: Path, ids: set[str]) -> list[dict]:
    """The jobs a live worker is training now (it has reported a step)."""
    return [j for j in jobs_now(store) if j["id"] in ids and j["state"] == "running"
            and (j["progress"] or {}).get("step") and alive(j["worker_pid"])]


def partial_adapters(store: Path) -> list[str]:
    from adapters_kit import read_adapter

    bad = []
    for p in store.iterdir():
        if not p.name.startswith("."):
            try:
                read_adapter(p)
            except Exception:
                bad.append(p.name)
    return bad


# -- the run --------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter phases (about 10 minutes)")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--think-ms", type=float, default=250.0)
    ap.add_argument("--train-jobs", type=int, default=3)
    ap.add_argument("--job-rows", type=int, default=96)
    ap.add_argument("--kill-trials", type=int, default=10)
    ap.add_argument("--kill-window", type=float, default=6.0,
                    help="a kill comes at a random moment up to this many seconds after the job "
                    "is seen training")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.job_rows = min(args.seconds, 15.0), min(args.job_rows, 64)
    texts = load_texts()
    tmp = temp_dir("jobs-load-")
    store = tmp / "store"
    store.mkdir()
    (tmp / "keys.toml").write_text(keys_toml())
    from adapters_kit.backbones import Backbone

    random_adapters(Backbone.resolve(BACKBONE), store, TASKS, BACKBONE)
    server = ServerProcess(store, tmp / "keys.toml", free_port(), tmp / "server.log")
    print(f"server up in {server.start():.1f} s; log {server.log}", flush=True)
    think = args.think_ms / 1000
    record: dict = {"clients": args.clients, "seconds": args.seconds, "think_ms": args.think_ms}
    try:
        asyncio.run(load(server.url, texts, 3.0, args.clients, think))  # warm: every adapter

        lat, st, _ = asyncio.run(load(server.url, texts, args.seconds, args.clients, think))
        idle = {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "n": len(lat), "statuses": dict(st)}
        print(f"idle      p50 {idle['p50']:7.1f} ms  p99 {idle['p99']:7.1f} ms  {len(lat)} requests "
              f"{dict(st)}", flush=True)

        rows = job_files(args.train_jobs, max(args.job_rows, 400))
        settings = {"epochs": 3, "max_length": 48, "batch_size": 16}
        ids = {submit(server.url, f"job_train{i}", d, settings) for i, d in enumerate(rows)}
        wait_until(lambda: training(store, ids), 600, "a job to train")
        lat, st, _ = asyncio.run(load(server.url, texts, args.seconds, args.clients, think))
        still = bool(training(store, ids))
        busy = {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "n": len(lat), "statuses": dict(st),
                "training_throughout": still}
        print(f"training  p50 {busy['p50']:7.1f} ms  p99 {busy['p99']:7.1f} ms  {len(lat)} requests "
              f"{dict(st)}; a job still training at the end: {still}", flush=True)
        for j in ids:  # the next phases do not need them
            import httpx

            httpx.delete(f"{server.url}/v1/jobs/{j}", headers={"Authorization":
                                                                 f"Bearer {key('trainer')}"})

        rate = 10 * idle["n"] / args.seconds  # 10 x the load the 16 clients sent when idle
        lat, st, flood = asyncio.run(load(server.url, texts, args.seconds, args.clients, think,
                                          flood_rate=rate))
        errors = sum(v for k, v in st.items() if k != 200)
        print(f"flood     others p50 {pct(lat, 0.5):7.1f} ms  p99 {pct(lat, 0.99):7.1f} ms  "
              f"{dict(st)}; flood tenant {dict(flood)}", flush=True)
        record["flood"] = {"flood_rate": round(rate, 1), "others": dict(st),
                           "flood": {str(k): v for k, v in flood.items()},
                           "others_p99_ms": pct(lat, 0.99)}

        trials, during = kill_trials(server, store, args)
        names = {j["name"]: j for j in jobs_now(store) if j["name"].startswith("job_kill")}
        finished = sum(j["state"] == "succeeded" for j in names.values())
        partial = partial_adapters(store) + [n for n, j in names.items()
                                             if j["state"] != "succeeded" and (store / n).exists()]
        print(f"kill      {trials} SIGKILLs ({during} with a job training); {finished} of "
              f"{len(names)} jobs succeeded; partial adapters: {partial}", flush=True)
        record.update(idle=idle, training=busy, kill={"trials": trials, "during_a_job": during,
                                                      "jobs_finished": finished,
                                                      "jobs": len(names)})
    finally:
        server.stop()
    emit({"idle_p99_ms": round(idle["p99"], 1), "training_p99_ms": round(busy["p99"], 1),
          "idle_p50_ms": round(idle["p50"], 1), "training_p50_ms": round(busy["p50"], 1),
          "p99_ratio": round(busy["p99"] / idle["p99"], 2), "flood_other_tenant_errors": errors,
          "kill_trials": trials, "kill_jobs_finished": finished, "partial_adapters": len(partial),
          "detail": record})


def kill_trials(server: ServerProcess, store: Path, args) -> tuple[int, int]:
    """Queue `kill_trials` small jobs; SIGKILL the worker or the server at random moments while
    one trains, `kill_trials` times; restart; wait for all of them."""
    rng = random.Random(1)
    data = job_files(args.kill_trials, args.job_rows)
    settings = {"epochs": 2, "max_length": 48, "batch_size": 16, "evals_per_epoch": 2}
    ids = {submit(server.url, f"job_kill{i}", d, settings) for i, d in enumerate(data)}
    trials = during = 0
    killed: set[str] = set()  # each job is killed once, at a random point of its run
    while trials < args.kill_trials:
        done = {j["id"] for j in jobs_now(store) if j["id"] in ids and j["state"] in
                ("succeeded", "failed", "cancelled")}
        if done | killed >= ids:
            break  # every job finished or was killed once before all the kills were spent
        try:
            target = wait_until(lambda: [j for j in training(store, ids)  # noqa: B023
                                         if j["id"] not in killed], 900, "a job to train",
                                poll=0.05)[0]
        except SystemExit:
            break
        time.sleep(rng.uniform(0.0, args.kill_window))
        killed.add(target["id"])
        running = training(store, ids)
        if trials % 2 == 0:
            pids = {j["worker_pid"] for j in running} or {j["worker_pid"] for j in jobs_now(store)
                                                          if j["state"] == "running"}
            for pid in pids - {None}:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            what = "worker"
        else:
            server.kill()
            what = "server"
        trials += 1
        during += bool(running)
        print(f"  kill {trials}: {what}, {len(running)} job(s) training "
              f"{[(j['name'], (j['progress'] or {}).get('step')) for j in running]}", flush=True)
        if what == "server":
            server.start()
    wait_until(lambda: all(j["state"] in ("succeeded", "failed", "cancelled")
                           for j in jobs_now(store) if j["id"] in ids), 1800, "every job to finish",
               poll=1.0)
    return trials, during


if __name__ == "__main__":
    main()
