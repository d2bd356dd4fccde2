"""A soak of the HTTP server: mixed tasks, damaged adapters and oversized inputs, for minutes.

    python benchmarks/serve_soak.py [--quick] [--minutes 10] [--clients 64] [--tasks 20]
        [--server-args "--precision bf16"] [--work DIR]

Setup: the embedded DistilBERT base and `--tasks` adapters of three kinds (classification,
NER, extractive QA; random non-zero LoRA factors: timing and robustness do not depend on
training), plus three damaged adapters whose files pass the checksum but hold a bad value
(`labels: 5`, an unknown task-card key, a string `lora_alpha`). `adapters-kit serve` runs as a
subprocess on loopback.

C concurrent clients send requests for the whole run, one after the other (after a 429, a
client waits the Retry-After the server sends, as a well-behaved client does): 1 in 50 at a
damaged adapter, 1 in 100 an oversized QA request (50 inputs of about 19,000 characters each,
under the per-input limit; about 800 windows of 384 word pieces in all), the rest 1-4 real
texts (SST-2, AG News, CoNLL-2003 sentences, SQuAD dev questions) for a random good task.

Expected statuses: 200 and 429; 413 or 422 for the oversized requests; 503 for the damaged
adapters. Anything else is listed under `unexpected_statuses`. A dead engine (the server
exits, /readyz says 503, or nothing healthy comes back for `--stall-seconds`) is restarted and
counted in `engine_restarts`, with the cause read from the server log.

Requests in flight when a dead server is killed come back as "error" (each restart says how
many). Also reported: the server's RSS (with children) at minute 1 and in the last minute, each the
median of that minute's samples (flat means under +5%; see `rss_figures`), and the p99
latency of good-task 200s in the first and the last minute (for runs under 2 minutes, the
first and last 20%). A progress line per minute goes to stderr. The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shlex
import shutil
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import emit, random_adapters, require_shared, temp_dir  # noqa: E402
from serve_load import BACKBONE, free_port, load_texts, start, stop, wait_ready, warm  # noqa: E402

DAMAGED_SHARE, OVERSIZED_SHARE = 1 / 50, 1 / 100
OVERSIZED_INPUTS, OVERSIZED_CHARS = 50, 19_000
EXPECTED = {"200", "429", "413", "422"}  # and 503, for the damaged adapters only
NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


# -- data -------------------------------------------------------------------------------------------

def ner_sentences() -> list[str]:
    """CoNLL-2003 validation sentences, words joined by spaces."""
    sentences, words = [], []
    with open(require_shared("conll2003", "valid.txt"), encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if words:
                    sentences.append(" ".join(words))
                words = []
            else:
                words.append(parts[0])
    if words:
        sentences.append(" ".join(words))
    return sentences


def squad_pairs() -> list[dict]:
    """SQuAD v1.1 dev (question, context) pairs, in file order."""
    data = json.loads(require_shared("squad_v1.1", "dev-v1.1.json").read_text(encoding="utf-8"))
    return [{"question": qa["question"], "context": p["context"]}
            for article in data["data"] for p in article["paragraphs"] for qa in p["qas"]]


def oversized_input(pairs: list[dict]) -> dict:
    """One question with a context of SQuAD paragraphs, about OVERSIZED_CHARS in all."""
    question = pairs[0]["question"]
    contexts, n = [], len(question)
    for c in dict.fromkeys(p["context"] for p in pairs):
        if n + len(c) + 1 > OVERSIZED_CHARS:
            break
        contexts.append(c)
        n += len(c) + 1
    return {"question": question, "context": " ".join(contexts)}


# -- adapters -----------------------------------------------------------------------------------------

def random_token_adapters(backbone, root: Path, kind: str, names: list[str]) -> list[Path]:
    """Adapter directories for a token-level kind (NER or extractive QA) with random LoRA
    factors on q/v; the output layer is saved whole, as training saves it."""
    import torch
    from peft import get_peft_model

    from adapters_kit import TaskSpec
    from adapters_kit.adapters.store import save_adapter
    from adapters_kit.tasks.kinds import kind_of
    from adapters_kit.training import lora_config

    impl = kind_of(kind)
    labels = NER_LABELS if impl.labelled else []
    specs = [TaskSpec(name=n, kind=kind, labels=labels) for n in names]
    base = impl.load_model(backbone, specs[0].num_outputs)
    cfg = {"targets": "qv", "head": "lora", "rank": 8, "lora_alpha": 16, "lora_dropout": 0.0}
    peft_model = get_peft_model(base, lora_config(backbone.arch, specs[0].num_outputs, cfg, impl))
    fp = backbone.fingerprint()  # token kinds carry the sequence model's fingerprint
    paths = []
    for i, spec in enumerate(specs):
        torch.manual_seed(200 + i)
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if ".lora_" in n or ("modules_to_save" in n and n.endswith("weight")):
                    p.normal_(0, 0.02)
        meta = {"task": spec.to_dict(),
                "backbone": {"name": BACKBONE, "fingerprint": fp, "arch": backbone.arch}}
        paths.append(save_adapter(root / spec.name, peft_model, meta, overwrite=True))
    return paths


def damage(source: Path, target: Path, how: str) -> str:
    """A copy of `source` with one bad value; checksums recomputed, so only loading finds it."""
    from adapters_kit.adapters.store import CONFIG, TASK, write_checksums

    shutil.copytree(source, target)
    task, config = json.loads((target / TASK).read_text()), json.loads((target / CONFIG).read_text())
    task["task"]["name"] = target.name
    if how == "labels":
        task["task"]["labels"] = 5
    elif how == "card":
        task["task"]["colour"] = "red"
    elif how == "alpha":
        config["lora_alpha"] = "16"
    (target / TASK).write_text(json.dumps(task))
    (target / CONFIG).write_text(json.dumps(config))
    write_checksums(target)
    return target.name


def make_store(root: Path, k: int) -> tuple[dict[str, str], list[str]]:
    """K good adapters spread over three kinds (task name -> kind) and the damaged ones."""
    from adapters_kit.backbones import Backbone

    backbone = Backbone.resolve(BACKBONE)
    n_ner = n_qa = k // 3
    kinds = {p.name: "classification"
             for p in random_adapters(backbone, root, k - n_ner - n_qa, BACKBONE)}
    for kind, prefix, n in (("token-classification", "ner", n_ner), ("extractive-qa", "qa", n_qa)):
        if n:
            names = [f"{prefix}{i:03d}" for i in range(n)]
            kinds.update({p.name: kind for p in random_token_adapters(backbone, root, kind, names)})
    first = root / next(iter(kinds))
    damaged = [damage(first, root / f"damaged_{how}", how) for how in ("labels", "card", "alpha")]
    return kinds, damaged


# -- the server, restarted when its engine dies -----------------------------------------------------

class Supervised:
    """The `adapters-kit serve` subprocess on one port; `restart` replaces a dead one."""

    def __init__(self, argv: list[str], url: str, log: Path) -> None:
        self.argv, self.url, self.log = argv, url, log
        self.proc = None
        self.restarts: list[dict] = []
        self.counters: dict = {}
        self._log_mark = 0

    def start(self) -> None:
        self._log_mark = self.log.stat().st_size if self.log.exists() else 0
        self.proc = start(self.argv, self.log)
        wait_ready(self.proc, self.url, self.log)

    def cause(self) -> str | None:
        """The last exception line the server logged since it started."""
        with open(self.log, encoding="utf-8", errors="replace") as f:
            f.seek(self._log_mark)
            lines = [ln.strip() for ln in f if re.match(r"^[\w.]+(Error|Exception)\b", ln)]
        return lines[-1][:300] if lines else None

    async def restart(self, t: float, reason: str) -> None:
        self.restarts.append({"t_s": round(t, 1), "reason": reason, "cause": self.cause()})
        self.proc.kill()  # a dead engine has nothing to drain
        self.proc.wait()
        await asyncio.to_thread(self.start)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def rss_mb(pid: int) -> float | None:
    """RSS of a process and its children, in MiB; None once it is gone."""
    import psutil

    try:
        p = psutil.Process(pid)
        return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20
    except psutil.Error:
        return None


# -- the soak ---------------------------------------------------------------------------------------

def p99_ms(latencies: list[float]) -> float | None:
    if not latencies:
        return None
    latencies = sorted(latencies)
    return round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1e3, 1)


async def soak(server: Supervised, seconds: float, clients: int, kinds: dict[str, str],
               damaged: list[str], texts: dict[str, list], oversized: dict[str, bytes],
               stall_s: float, seed: int = 0) -> tuple[list[tuple], list[tuple], float]:
    """Run the clients, the RSS sampler, the engine watch and the progress lines until the end.

    Returns the records (sent at [s], latency [s], status, target), the RSS samples
    (t [s], pid, MiB) and the elapsed seconds.
    """
    import httpx

    records: list[tuple[float, float, str, str]] = []
    samples: list[tuple[float, int, float]] = []
    up = asyncio.Event()
    up.set()
    t0 = time.monotonic()
    end = t0 + seconds
    last_healthy = t0  # the last 200 or 429 for a good task
    tasks, qa_tasks = list(kinds), [t for t, k in kinds.items() if k == "extractive-qa"]
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)

    def body(rng: random.Random) -> tuple[str, dict | bytes]:
        r = rng.random()
        if r < DAMAGED_SHARE:
            return "damaged", {"task": rng.choice(damaged), "inputs": [rng.choice(texts["classification"])]}
        if r < DAMAGED_SHARE + OVERSIZED_SHARE and qa_tasks:
            return "oversized", oversized[rng.choice(qa_tasks)]
        task = rng.choice(tasks)
        return "normal", {"task": task, "inputs": rng.choices(texts[kinds[task]], k=rng.randint(1, 4))}

    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:

        async def loop(i: int) -> None:
            nonlocal last_healthy
            rng = random.Random(seed * 1000 + i)
            while True:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(up.wait(), max(0.0, end - time.monotonic()))
                if time.monotonic() >= end:
                    return
                target, b = body(rng)
                sent = time.monotonic()
                try:
                    if isinstance(b, bytes):
                        r = await client.post("/v1/predict", content=b,
                                              headers={"content-type": "application/json"})
                    else:
                        r = await client.post("/v1/predict", json=b)
                    status = str(r.status_code)
                except httpx.HTTPError:
                    status = "error"
                done = time.monotonic()
                records.append((sent - t0, done - sent, status, target))
                if target == "normal" and status in ("200", "429"):
                    last_healthy = done
                if status == "429":  # a well-behaved client waits as the server asks
                    with contextlib.suppress(ValueError):
                        pause = float(r.headers.get("Retry-After", "1"))
                        await asyncio.sleep(min(pause, max(0.0, end - time.monotonic())))

        async def watch() -> None:
            """Restart the server when its engine is dead: exited, /readyz 503, or stalled."""
            nonlocal last_healthy
            not_ready = 0
            while time.monotonic() < end:
                await asyncio.sleep(1.0)
                reason = None
                if server.proc.poll() is not None:
                    reason = f"exited ({server.proc.returncode})"
                else:
                    try:
                        r = await client.get("/readyz", timeout=5)
                        not_ready = not_ready + 1 if r.status_code == 503 else 0
                    except httpx.HTTPError:
                        not_ready += 1
                    if not_ready >= 2:
                        reason = "readyz not ready"
                    elif time.monotonic() - last_healthy > stall_s:
                        reason = f"stalled (no 200 or 429 for {stall_s:.0f} s)"
                if reason and time.monotonic() < end:
                    up.clear()
                    print(f"[soak] engine dead at {time.monotonic() - t0:.0f} s: {reason}; "
                          "restarting the server", file=sys.stderr, flush=True)
                    await server.restart(time.monotonic() - t0, reason)
                    print(f"[soak] restarted ({server.restarts[-1]['cause']})", file=sys.stderr,
                          flush=True)
                    not_ready, last_healthy = 0, time.monotonic()
                    up.set()

        async def sample() -> None:
            while time.monotonic() < end:
                mb = rss_mb(server.proc.pid) if up.is_set() else None  # not a server half up
                if mb is not None:
                    samples.append((time.monotonic() - t0, server.proc.pid, mb))
                await asyncio.sleep(0.5)

        async def progress() -> None:
            every = 60.0 if seconds >= 120 else max(5.0, seconds / 3)
            mark = 0.0
            while time.monotonic() + every < end + 1:
                await asyncio.sleep(every)
                window = [r for r in records if mark <= r[0] < mark + every]
                counts = dict(sorted(Counter(r[2] for r in window).items()))
                rss = f"{samples[-1][2]:.0f} MB" if samples else "?"
                print(f"[soak] {mark + every:4.0f} s: {len(window)} requests {counts}, RSS {rss}, "
                      f"p99 {p99_ms([r[1] for r in window if r[2] == '200'])} ms, "
                      f"restarts {len(server.restarts)}", file=sys.stderr, flush=True)
                mark += every

        await asyncio.gather(watch(), sample(), progress(), *(loop(i) for i in range(clients)))
        elapsed = time.monotonic() - t0
        with contextlib.suppress(httpx.HTTPError):  # the server's own account of 429s and 504s
            server.counters = server_counters((await client.get("/metrics")).text)
    mb = rss_mb(server.proc.pid)
    if mb is not None:
        samples.append((elapsed, server.proc.pid, mb))
    return records, samples, elapsed


def server_counters(text: str) -> dict[str, dict[str, int]]:
    """From the server's /metrics: 429s by reason and 504s by where the time ran out (since
    the last start of the server)."""
    out: dict[str, dict[str, int]] = {"rejected": {}, "deadline_exceeded": {}}
    for family, label in (("rejected", "reason"), ("deadline_exceeded", "where")):
        pattern = rf'^adapters_kit_{family}_total\{{{label}="([^"]+)"\}} (\S+)$'
        for key, value in re.findall(pattern, text, re.M):
            out[family][key] = int(float(value))
    return out


def rss_figures(samples: list[tuple], window: float, elapsed: float) -> dict:
    """RSS at minute 1 and at the end, each the median of that minute's samples (every 0.5 s).

    One sample is what the heap holds at that instant: the queued request bodies and the
    batch being run, which swing by hundreds of MB from one sample to the next at 64 clients.
    A leak shows as a rise of the median (and as a slope); a swing does not. The single
    samples at those two points are reported too, with the least and most seen.
    """
    if not samples:
        return {"rss_mb_start": None, "rss_mb_end": None, "rss_growth_pct": None,
                "rss_flat": None, "rss_same_process": False}
    pid = samples[-1][1]
    same = all(s[1] == pid for s in samples if s[0] >= window)  # a restart between: not comparable
    first = [mb for t, p, mb in samples if window <= t < 2 * window] or [samples[-1][2]]
    last = [mb for t, p, mb in samples if t >= elapsed - window and p == pid]
    start, end = statistics.median(first), statistics.median(last)
    growth = round(100 * (end / start - 1), 2)
    steady = [(t, mb) for t, p, mb in samples if t >= window and p == pid]
    slope = None
    if len(steady) >= 3:  # least squares, MB per minute
        slope = round(60 * statistics.linear_regression([t for t, _ in steady],
                                                        [mb for _, mb in steady]).slope, 2)
    point = next((s for s in samples if s[0] >= window), samples[-1])
    return {
        "rss_mb_start": round(start, 1), "rss_mb_end": round(end, 1), "rss_growth_pct": growth,
        "rss_same_process": same, "rss_flat": growth < 5.0 if same else None,
        "rss_window_s": [round(window, 1), round(2 * window, 1), round(elapsed - window, 1),
                         round(elapsed, 1)],
        "rss_samples_start_end": [len(first), len(last)],
        "rss_mb_point_start": round(point[2], 1), "rss_mb_point_end": round(samples[-1][2], 1),
        "rss_mb_min": round(min(mb for _, mb in steady), 1) if steady else None,
        "rss_mb_max": round(max(mb for _, mb in steady), 1) if steady else None,
        "rss_slope_mb_per_min": slope,
    }


def report(records: list[tuple], samples: list[tuple], elapsed: float, seconds: float,
           restarts: list[dict]) -> dict:
    by_target: dict[str, Counter] = defaultdict(Counter)
    for _, _, status, target in records:
        by_target[target][status] += 1
    counts = Counter(r[2] for r in records)
    for r in restarts:  # killed with the server: these come back as "error"
        r["in_flight"] = sum(1 for sent, lat, _, _ in records if sent <= r["t_s"] < sent + lat)
    unexpected = Counter()
    for target, c in by_target.items():
        for status, n in c.items():
            if status not in EXPECTED and not (status == "503" and target == "damaged"):
                unexpected[f"{target}:{status}"] += n

    window = 60.0 if seconds >= 120 else 0.2 * seconds  # "minute 1", or the first 20% of a short run
    rss = rss_figures(samples, window, elapsed)
    ok = [(r[0], r[1]) for r in records if r[2] == "200" and r[3] == "normal"]
    first = p99_ms([lat for t, lat in ok if t < window])
    final = p99_ms([lat for t, lat in ok if t >= elapsed - window])
    return {
        "seconds": round(elapsed, 1),
        "status_counts": dict(counts.most_common()),
        "status_counts_by_target": {t: dict(c.most_common()) for t, c in sorted(by_target.items())},
        "unexpected_statuses": dict(unexpected.most_common()),
        **rss,
        "p99_ms_first_minute": first, "p99_ms_last_minute": final, "p99_window_s": round(window, 1),
        "engine_restarts": len(restarts), "restarts": restarts,
        "requests": len(records), "ok_rps": round(counts.get("200", 0) / elapsed, 2),
    }


# -- main -------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--tasks", type=int, default=20, help="good adapters, over the three kinds")
    ap.add_argument("--quick", action="store_true", help="1 minute, 16 clients")
    ap.add_argument("--server-args", default="", metavar="ARGS",
                    help="extra `adapters-kit serve` arguments, e.g. \"--precision bf16\"")
    ap.add_argument("--stall-seconds", type=float, default=30.0,
                    help="no 200 or 429 for a good task this long counts as a dead engine")
    ap.add_argument("--work", help="folder for the store and the server log (default: temporary)")
    args = ap.parse_args()
    if args.quick:
        args.minutes, args.clients = 1.0, 16
    if args.tasks < 3:
        ap.error("--tasks must be at least 3 (one per kind)")

    texts = {"classification": load_texts(), "token-classification": ner_sentences()}
    pairs = squad_pairs()
    texts["extractive-qa"] = pairs
    work = Path(args.work) if args.work else temp_dir("serve-soak-")
    store = work / "store"
    store.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    kinds, damaged = make_store(store, args.tasks)
    big = oversized_input(pairs)
    oversized = {name: json.dumps({"task": name, "inputs": [big] * OVERSIZED_INPUTS}).encode()
                 for name, kind in kinds.items() if kind == "extractive-qa"}
    size = len(next(iter(oversized.values()))) if oversized else 0
    print(f"{len(kinds)} adapters ({dict(Counter(kinds.values()))}) and {len(damaged)} damaged "
          f"in {store} ({time.perf_counter() - t:.1f} s); oversized request: {OVERSIZED_INPUTS} "
          f"inputs of {len(big['question']) + len(big['context'])} characters, {size} bytes",
          flush=True)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Supervised(["-m", "adapters_kit.cli", "serve", "--store", str(store), "--backbone",
                         BACKBONE, "--port", str(port), *shlex.split(args.server_args)], url,
                        work / "server.log")
    seconds = 60 * args.minutes
    try:
        server.start()
        for kind in texts:  # every good adapter resident before the clock starts
            warm(url, [n for n, k in kinds.items() if k == kind], texts[kind])
        records, samples, elapsed = asyncio.run(soak(
            server, seconds, args.clients, kinds, damaged, texts, oversized, args.stall_seconds))
    finally:
        server.stop()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    record = {"minutes": args.minutes, "clients": args.clients, "tasks": len(kinds),
              "damaged_tasks": damaged, "server_args": args.server_args, "cpus": os.cpu_count(),
              **report(records, samples, elapsed, seconds, server.restarts),
              "server_counters": server.counters}
    print(f"{record['requests']} requests in {record['seconds']} s, {record['ok_rps']} ok/s; "
          f"statuses {record['status_counts']}", flush=True)
    for target, c in record["status_counts_by_target"].items():
        print(f"  {target:9s} {c}", flush=True)
    print(f"unexpected statuses: {record['unexpected_statuses'] or 'none'}", flush=True)
    if record["rss_growth_pct"] is None:
        print("RSS: no samples", flush=True)
    else:
        verdict = {True: "flat", False: "NOT flat", None: "not comparable: a restart between"}
        w = record["rss_window_s"]
        print(f"RSS median {record['rss_mb_start']} MB over {w[0]:.0f}-{w[1]:.0f} s -> "
              f"{record['rss_mb_end']} MB over {w[2]:.0f}-{w[3]:.0f} s "
              f"({record['rss_growth_pct']:+}%; {verdict[record['rss_flat']]}; the target is "
              f"under +5%); slope {record['rss_slope_mb_per_min']} MB/min; single samples "
              f"{record['rss_mb_point_start']} -> {record['rss_mb_point_end']} MB, range "
              f"{record['rss_mb_min']}-{record['rss_mb_max']} MB", flush=True)
    print(f"p99 of 200s: {record['p99_ms_first_minute']} ms in the first "
          f"{record['p99_window_s']} s, {record['p99_ms_last_minute']} ms in the last", flush=True)
    print(f"engine restarts: {record['engine_restarts']}", flush=True)
    for r in server.restarts:
        print(f"  at {r['t_s']} s: {r['reason']}; cause in the log: {r['cause']}", flush=True)
    emit(record)


if __name__ == "__main__":
    main()
