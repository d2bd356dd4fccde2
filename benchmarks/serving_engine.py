"""The multi-task serving engine against a merged model and against peft, side by side.

    python benchmarks/serving_engine.py [--quick]

Backbones: a DistilBERT-base-shaped model (768 wide, 6 layers) and the ALBERT-base shape (one
768-wide layer shared 12 times), randomly initialised; and for one P1 cell the backbone users
run by default, embedded-distilbert (384 wide), at real SST-2 dev lengths (B=48, K=3).
Adapters: LoRA r=8 on q/v plus the small head, random non-zero weights (timing does not depend on training).

Measured, each as a ratio against a baseline timed in the same run:
  P1  engine time / merged-model time for one batch, K distinct adapters in the batch. The
      engine's pass and the merged model's pass run in lock-step (`_lockstep.py`): each
      linear layer of one, then of the other, in ABBA order, so the shared machine's drift,
      correlated over seconds, hits both alike. Each pass pair gives one ratio of the two
      passes' total times; `p1_worst_ratio` is the worst cell's median ratio, with a
      distribution-free 95% confidence interval of that median (`p1_worst_ratio_ci95_high`
      is the highest upper bound of any cell). `lockstep_check.py` checks the method itself
      (A/A, and each side's lock-step time against its time alone). `--reps N` adds the plain
      whole-batch measure (rounds of merged, engine, engine, merged) as a cross-check. peft's
      `adapter_names=` mixed batch and peft `set_adapter` per group are timed interleaved
      with the merged model (ratio of medians, fewer repetitions: they are the comparison,
      not the target);
  P2  cold swap: adapter directory on disk -> servable, with 1, 100, 1000 and 2000 (ALBERT
      10000) resident: median of 21 loads spread over a second;
  P3  warm switch: the engine's own switch path (acquire, route, release) when the next batch
      uses another resident adapter,
      and a one-row forward right after another adapter's against one right after its own
      adapter's (median difference of adjacent runs: a check, as noisy as one forward);
  memory: bytes per resident adapter, and how many fit.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _common import emit, random_adapters, temp_dir  # noqa: E402
from _lockstep import linears, lockstep  # noqa: E402

from adapters_kit import MultiTaskModel  # noqa: E402
from adapters_kit.backbones import Backbone  # noqa: E402


def make_base(work: Path, arch: str) -> Path:
    from transformers import AlbertConfig, AlbertModel, DistilBertConfig, DistilBertModel

    from adapters_kit.backbones.embedded import embedded_dir

    folder = work / f"{arch}-base-shape"
    torch.manual_seed(0)
    if arch == "distilbert":
        model = DistilBertModel(DistilBertConfig())
    else:
        model = AlbertModel(AlbertConfig(embedding_size=128, hidden_size=768, num_hidden_layers=12,
                                         num_hidden_groups=1, num_attention_heads=12,
                                         intermediate_size=3072, vocab_size=30522))
    model.save_pretrained(str(folder))
    src = embedded_dir("embedded-distilbert")
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / f).write_bytes((src / f).read_bytes())
    return folder


def make_adapters(backbone: Backbone, k: int, work: Path) -> list[Path]:
    """K adapter directories with random LoRA factors (r=8, q/v + head)."""
    return random_adapters(backbone, work / backbone.arch, k)


def load_engine(backbone: Backbone, paths: list[Path]) -> tuple[MultiTaskModel, list[str]]:
    """An engine with every adapter of `paths` resident, and their task names in order."""
    # the CPU benchmark (its merged floor and lock-step are CPU's); device_check.py does CUDA
    engine = MultiTaskModel(str(backbone.path), capacity=len(paths) + 1, device="cpu")
    for p in paths:
        engine.load(p)
    return engine, sorted(engine.tasks)


def merged_model(backbone: Backbone, path: Path) -> torch.nn.Module:
    """The floor: one adapter merged into the base with peft, a plain transformers model."""
    from peft import PeftModel

    return PeftModel.from_pretrained(backbone.load_model(2), str(path)).merge_and_unload().eval()


def token_batch(batch: int, length: int) -> torch.Tensor:
    """The benchmarks' input ids [batch, length]: seeded random tokens after [CLS]."""
    ids = torch.randint(1000, 30000, (batch, length), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = 101
    return ids


def interleaved(fns: dict, reps: int) -> dict[str, float]:
    """Median seconds per function, the functions taking turns so drift hits all alike."""
    samples = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in samples.items()}


def abba(base, other, rounds: int) -> tuple[list[float], list[float], list[float]]:
    """Time `base` and `other` in rounds of base, other, other, base.

    Returns (base samples, other samples, one ratio per round). Each round's ratio,
    (other1 + other2) / (base1 + base2), cancels any drift of the machine that is linear over
    the round's four runs; the median over rounds then discards the rounds a burst from a
    neighbour hit.
    """
    a_s, b_s, ratios = [], [], []
    for _ in range(rounds):
        times = []
        for fn in (base, other, other, base):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        a_s += [times[0], times[3]]
        b_s += [times[1], times[2]]
        ratios.append((times[1] + times[2]) / (times[0] + times[3]))
    return a_s, b_s, ratios


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free confidence interval of the median (order statistics of a binomial):
    None when there are too few values for the level."""
    xs, n = sorted(values), len(values)
    k, tail = 0, 0.0
    while True:  # largest k with P(Bin(n, 1/2) <= k - 1) <= (1 - level) / 2
        tail_next = tail + math.comb(n, k) / 2**n
        if tail_next > (1 - level) / 2:
            break
        tail, k = tail_next, k + 1
    return (xs[k - 1], xs[n - k]) if k >= 1 else None


def sst2_rows(tokenizer, batch: int) -> list[list[int]]:
    """Token ids of `batch` real SST-2 dev sentences (every 7th from the top, so short and
    long ones alike), as users send them."""
    from _common import require_shared

    lines = require_shared("sst2", "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    texts = [line.split("\t")[0] for line in lines[::7][:batch]]
    return [tokenizer(t, truncation=True, max_length=128)["input_ids"] for t in texts]


def p1(backbone: Backbone, paths: list[Path], batch: int, length: int, ks: list[int],
       passes: int, reps: int, peft_reps: int, id_lists: list[list[int]] | None = None
       ) -> list[dict]:
    """P1 cells; `id_lists`: real rows of varied lengths instead of `token_batch`'s."""
    from peft import PeftModel

    engine, names = load_engine(backbone, paths)
    merged = merged_model(backbone, paths[0])
    peft_model = PeftModel.from_pretrained(backbone.load_model(2), str(paths[0]),
                                           adapter_name=names[0]).eval()
    for p, name in zip(paths[1:], names[1:]):
        peft_model.load_adapter(str(p), adapter_name=name)
    label = backbone.arch if id_lists is None else "embedded-distilbert-sst2"
    if id_lists is None:
        ids = token_batch(batch, length)
        mask = torch.ones_like(ids)
        id_lists = ids.tolist()
    else:  # the merged model gets the same padded batch the engine builds
        width = max(len(x) for x in id_lists)
        ids = torch.tensor([x + [0] * (width - len(x)) for x in id_lists])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in id_lists])
    rows = []
    for k in ks:
        tasks = [engine.tasks[names[i % k]] for i in range(batch)]
        row_names = [names[i % k] for i in range(batch)]
        groups = {n: [i for i, r in enumerate(row_names) if r == n] for n in dict.fromkeys(row_names)}

        def run_engine(tasks=tasks):
            engine.forward(id_lists, tasks)

        def run_merged():
            with torch.inference_mode():
                merged(input_ids=ids, attention_mask=mask)

        def run_peft_mixed(row_names=row_names):
            with torch.inference_mode():
                peft_model(input_ids=ids, attention_mask=mask, adapter_names=row_names)

        def run_peft_groups(groups=groups):
            with torch.inference_mode():
                for name, idx in groups.items():
                    peft_model.set_adapter(name)
                    peft_model(input_ids=ids[idx], attention_mask=mask[idx])

        for fn in (run_merged, run_engine, run_peft_mixed, run_peft_groups):
            fn()  # warm-up: allocator, thread pool, first-call paths
        gc.collect()
        gc.disable()  # a collection inside one timed run would land on whichever ran then
        try:
            ratios = []
            for i in range(passes):  # who starts alternates
                if i % 2 == 0:
                    m_seg, e_seg = lockstep(run_merged, merged, run_engine, engine.model, at=linears)
                else:
                    e_seg, m_seg = lockstep(run_engine, engine.model, run_merged, merged, at=linears)
                ratios.append(sum(e_seg) / sum(m_seg))
            whole = abba(run_merged, run_engine, reps)[2] if reps else None
            t = interleaved({"merged": run_merged, "peft_mixed": run_peft_mixed,
                             "peft_groups": run_peft_groups}, peft_reps)
        finally:
            gc.enable()
        ci = median_ci(ratios)
        med = statistics.median
        row = {"arch": label,
               "batch": batch, "length": length, "k": k,
               "k_in_batch": len(groups),
               "merged_ms": round(t["merged"] * 1e3, 2),
               "engine_ratio": round(med(ratios), 4),
               "engine_ratio_ci95": [round(c, 4) for c in ci] if ci else None,
               "engine_ratio_whole_batch": round(med(whole), 4) if whole else None,
               "peft_mixed_ratio": round(t["peft_mixed"] / t["merged"], 4),
               "peft_groups_ratio": round(t["peft_groups"] / t["merged"], 4)}
        ci_text = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "(too few passes)"
        whole_text = f" (whole batches x{row['engine_ratio_whole_batch']:.3f})" if whole else ""
        print(f"  {row['arch']:<10} B={batch:<3} L={length:<4} K={len(groups):<3} merged "
              f"{row['merged_ms']:8.1f} ms | engine x{row['engine_ratio']:.3f} "
              f"95% CI {ci_text}{whole_text} | peft mixed x{row['peft_mixed_ratio']:.3f} | peft set_adapter "
              f"x{row['peft_groups_ratio']:.3f}", flush=True)
        rows.append(row)
    gc.collect()
    return rows


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def forward_after_switch(engine, ids, a, b, pairs: int) -> tuple[float, float, float]:
    """One-row forwards in the order a a b b a a b b ...: every other run follows a run of
    the same adapter, the rest follow the other adapter. Returns the median seconds of each
    kind and the median difference between each switched run and the same-adapter run just
    before it (adjacent runs, so the machine's drift mostly cancels)."""
    engine.forward(ids, [a])
    times, after_other = [], []
    prev = a
    gc.collect()
    gc.disable()
    try:
        for i in range(4 * pairs):
            task = a if (i // 2) % 2 else b
            t = time.perf_counter()
            engine.forward(ids, [task])
            times.append(time.perf_counter() - t)
            after_other.append(task is not prev)
            prev = task
    finally:
        gc.enable()
    same = [t for t, o in zip(times, after_other) if not o]
    other = [t for t, o in zip(times, after_other) if o]
    diffs = [times[i] - times[i - 1] for i in range(1, len(times)) if after_other[i]]
    return statistics.median(same), statistics.median(other), statistics.median(diffs)


def p2_p3_memory(backbone: Backbone, paths: list[Path], resident_counts: list[int]) -> dict:
    """Cold load latency at several resident counts, warm switch cost, bytes per adapter."""
    engine = MultiTaskModel(str(backbone.path), capacity=max(resident_counts) + 64, device="cpu")
    ids = [[101] + [2000 + i for i in range(30)] + [102]]
    cold = {}
    loaded = 0
    rss0 = rss_bytes()
    # One untimed load first: it allocates the banks at full capacity and warms the code paths.
    engine.load(paths[0], name="warmup")
    engine.unload("warmup")
    for target in resident_counts:
        while loaded < target - 1:
            engine.load(paths[loaded % len(paths)], name=f"r{loaded}")
            loaded += 1
        times = []
        for j in range(21):  # load one more (from disk), time it, take it out again
            name = f"probe{j}"
            time.sleep(0.05)  # spread over a second: one burst from a neighbour hits few probes
            t = time.perf_counter()
            engine.load(paths[j % len(paths)], name=name)
            times.append(time.perf_counter() - t)
            engine.unload(name)
        cold[target] = statistics.median(times) * 1e3
        print(f"  {backbone.arch:<10} cold load with {target:>5} resident: {cold[target]:.2f} ms "
              f"(median of {len(times)}; fastest {min(times) * 1e3:.2f}, slowest "
              f"{max(times) * 1e3:.2f})", flush=True)
    rss_per_adapter = (rss_bytes() - rss0) / max(1, loaded)
    head_bytes = statistics.mean(t.head_bytes for t in engine.tasks.values())
    per_adapter = engine.slot_bytes() + head_bytes
    # warm switch: what a batch pays to use another resident adapter than the last, through
    # the engine's own path: lease the version, route a pass to it, end the lease
    a, b = engine.tasks["r0"], engine.tasks[f"r{loaded - 1}"]
    n = 2000

    def switch(name):
        task = engine.acquire(name)
        try:
            with engine.route([task]):
                pass
        finally:
            engine.release(task)

    t = time.perf_counter()
    for i in range(n):
        switch(a.name if i % 2 else b.name)
    warm_us = (time.perf_counter() - t) / n * 1e6
    same, switched, extra = forward_after_switch(engine, ids, a, b, 40)
    print(f"  {backbone.arch:<10} warm switch bookkeeping {warm_us:.1f} us; one-row forward "
          f"after the same adapter {same * 1e3:.2f} ms, after another {switched * 1e3:.2f} ms "
          f"(median paired difference {extra * 1e6:+.0f} us); "
          f"{per_adapter / 1e3:.1f} KB per resident adapter (banks + head; RSS grew "
          f"{rss_per_adapter / 1e3:.1f} KB per adapter); {loaded} resident, process RSS "
          f"{rss_bytes() / 2**30:.2f} GiB", flush=True)
    return {"cold_ms": cold, "warm_us": warm_us, "switch_forward_extra_us": extra * 1e6,
            "bytes_per_adapter": per_adapter,
            "rss_bytes_per_adapter": rss_per_adapter, "resident": loaded,
            "rss_gib": rss_bytes() / 2**30}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and adapters")
    ap.add_argument("--passes", type=int, default=None,
                    help="P1 lock-step passes of engine and merged model per cell (default 24)")
    ap.add_argument("--reps", type=int, default=0,
                    help="also time P1 as whole batches, in this many rounds of merged, engine, "
                         "engine, merged per cell (default 0: off; the cross-check for a quiet "
                         "machine)")
    ap.add_argument("--peft-reps", type=int, default=None,
                    help="interleaved repetitions of the peft comparisons per cell (default 5)")
    ap.add_argument("--skip-p1", action="store_true", help="only P2/P3/memory")
    ap.add_argument("--only-sst2", action="store_true",
                    help="only the embedded-distilbert SST-2 cell of P1")
    ap.add_argument("--sst2-passes", type=int, default=None,
                    help="lock-step passes of the SST-2 cell (default: --passes; it is short)")
    ap.add_argument("--skip-p2", action="store_true", help="only P1")
    ap.add_argument("--resident", type=int, default=None,
                    help="largest resident count for P2/memory (default 2000 distilbert, 10000 albert)")
    args = ap.parse_args()
    passes = args.passes or (4 if args.quick else 24)
    reps = args.reps
    peft_reps = args.peft_reps or (2 if args.quick else 5)
    work = temp_dir("serving-bench-")
    os.environ.setdefault("ADAPTERS_KIT_CACHE", str(work / "cache"))
    result = {"p1": [], "p2": {}, "memory": {}}
    if not args.skip_p1:
        # the backbone users run by default, at real SST-2 lengths: 384 wide, short rows
        backbone = Backbone.resolve("embedded-distilbert")
        paths = random_adapters(backbone, work / "embedded", 3, backbone_name="embedded-distilbert")
        print("[embedded-distilbert] P1 at SST-2 dev lengths, K=3", flush=True)
        id_lists = sst2_rows(backbone.tokenizer(), 48)
        length = round(statistics.mean(len(x) for x in id_lists))
        result["p1"] += p1(backbone, paths, 48, length, [3], args.sst2_passes or passes, reps,
                           peft_reps, id_lists)
    if args.only_sst2:
        args.skip_p2 = True
    for arch in () if args.only_sst2 else ("distilbert", "albert"):
        backbone = Backbone.resolve(make_base(work, arch))
        paths = make_adapters(backbone, 8 if args.quick else 64, work)
        if not args.skip_p1:
            print(f"[{arch}] P1: one batch, K distinct adapters, ratio to the merged model",
                  flush=True)
        ks = [1, 8] if args.quick else [1, 8, 64]
        for batch, length in ((32, 128), (64, 32)):
            if not args.skip_p1:
                result["p1"] += p1(backbone, paths, batch, length, ks, passes, reps, peft_reps)
        if args.skip_p2:
            continue
        top = args.resident or (100 if args.quick else (2000 if arch == "distilbert" else 10000))
        counts = [c for c in (1, 100, 1000, top) if c <= top]
        print(f"[{arch}] P2/P3/memory", flush=True)
        result["p2"][arch] = p2_p3_memory(backbone, paths, sorted(set(counts)))
    p1_rows = result["p1"]

    def worst(key):
        values = [r[key] for r in p1_rows if r[key] is not None]
        return max(values) if values else None

    ci_highs = [r["engine_ratio_ci95"][1] for r in p1_rows if r["engine_ratio_ci95"]]

    emit({
        "p1_worst_ratio": worst("engine_ratio"),
        "p1_worst_ratio_ci95_high": max(ci_highs) if ci_highs else None,
        "p1_worst_ratio_whole_batch": worst("engine_ratio_whole_batch"),
        "peft_mixed_worst_ratio": worst("peft_mixed_ratio"),
        "peft_groups_worst_ratio": worst("peft_groups_ratio"),
        "p2_cold_ms_worst": round(max(max(v["cold_ms"].values()) for v in result["p2"].values()), 3)
        if result["p2"] else None,
        "p3_warm_us": round(max(v["warm_us"] for v in result["p2"].values()), 2)
        if result["p2"] else None,
        "p3_switch_forward_extra_us": {a: round(v["switch_forward_extra_us"], 1)
                                       for a, v in result["p2"].items()},
        "bytes_per_resident_adapter": {a: int(v["bytes_per_adapter"]) for a, v in result["p2"].items()},
        "max_resident_adapters": {a: v["resident"] for a, v in result["p2"].items()},
        "p1": p1_rows,
        "p2_cold_ms": {a: v["cold_ms"] for a, v in result["p2"].items()},
    })


if __name__ == "__main__":
    main()
