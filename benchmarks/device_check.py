"""The device check: everything a GPU machine must show, in one script of under 8 minutes.

    python benchmarks/device_check.py [--skip-tests] [--sst2-seconds 120] [--budget 450]

On a CUDA machine it
  1. runs the `gpu` tests (`pytest -m gpu`) and counts passed / failed / skipped;
  2. prints P1 on CUDA for the DistilBERT-base shape (768 wide, 6 layers) at B=64, L=128 and
     K = 1, 8, 64 distinct adapters: engine time / merged-model time, next to peft's
     `adapter_names=` mixed batch, in fp32 and (where the GPU runs it) bf16. Whole batches in
     rounds of merged, engine, engine, merged, each run ended by a CUDA synchronize (the CPU
     benchmark's lock-step of layers means nothing for asynchronous kernels). Where the
     engine is over 1.10x at K=64, a profile of that batch shows the kernels that cost it;
  3. prints the cold adapter load (files on disk to servable on the GPU), 1 and 100 resident;
  4. trains SST-2 (20k rows) LoRA on the GPU (benchmarks/train_sst2.py) and prints its time
     to the dev score;
  5. prints the DistilBERT-base shape's memory with a QLoRA 4-bit (nf4) base against fp32.
Without CUDA it runs every part in a small, degraded form on the CPU, and says so: a check
that the script works, not a measure. The last line printed is one JSON object either way.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from _common import ROOT, emit  # noqa: E402

from adapters_kit import MultiTaskModel  # noqa: E402
from adapters_kit.backbones import Backbone  # noqa: E402
from adapters_kit.devices import autocast, cuda_bf16, describe  # noqa: E402

P1_TARGET = 1.10


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_tests(timeout: float) -> dict:
    """`pytest -m gpu` over the test suite in a child process; its counts from a JUnit report."""
    report = Path(tempfile.mkdtemp(prefix="gpu-tests-")) / "junit.xml"
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
           f"--junitxml={report}", "tests"]
    print("[gpu tests] " + " ".join(cmd[1:]), flush=True)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-25:]
    except subprocess.TimeoutExpired as e:
        tail = [f"timed out after {timeout:.0f} s"] + str(e.stdout or "").splitlines()[-10:]
    print("\n".join("  " + line for line in tail), flush=True)
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    if report.exists():
        suite = ET.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        total = int(suite.get("tests", 0))
        counts = {k: int(suite.get(k, 0)) for k in ("failures", "errors", "skipped")}
        counts = {"passed": total - sum(counts.values()), "failed": counts["failures"],
                  "errors": counts["errors"], "skipped": counts["skipped"]}
    else:
        counts["errors"] = 1  # no report: the run itself failed
    counts["seconds"] = round(time.perf_counter() - started, 1)
    return counts


def abba(base, other, rounds: int) -> tuple[list[float], list[float]]:
    """(base seconds, other/base ratio per round), in rounds of base, other, other, base."""
    base_s, ratios = [], []
    for _ in range(rounds):
        times = []
        for fn in (base, other, other, base):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        base_s += [times[0], times[3]]
        ratios.append((times[1] + times[2]) / (times[0] + times[3]))
    return base_s, ratios


def p1(backbone: Backbone, paths: list[Path], device: torch.device, batch: int, length: int,
       ks: list[int], precisions: list[str], rounds: int) -> tuple[list[dict], dict]:
    """P1 cells on `device`: engine and peft's mixed batch against the merged model."""
    from peft import PeftModel
    from serving_engine import merged_model, token_batch

    merged = merged_model(backbone, paths[0]).to(device)
    peft_model = PeftModel.from_pretrained(backbone.load_model(2), str(paths[0]),
                                           adapter_name="a000").to(device).eval()
    for i, p in enumerate(paths[1:], 1):
        peft_model.load_adapter(str(p), adapter_name=f"a{i:03d}")
    peft_model.to(device)
    ids = token_batch(batch, length)
    id_lists = ids.tolist()
    ids = ids.to(device)
    mask = torch.ones_like(ids)
    rows, profiles = [], {}
    for precision in precisions:
        engine = MultiTaskModel(str(backbone.path), capacity=len(paths) + 1, device=device,
                                precision=precision)
        names = [engine.load(p, name=f"a{i:03d}") for i, p in enumerate(paths)]
        ctx = autocast(precision, device)
        for k in ks:
            tasks = [engine.tasks[names[i % k]] for i in range(batch)]
            row_names = [names[i % k] for i in range(batch)]

            def run_engine(tasks=tasks, engine=engine):
                engine.forward(id_lists, tasks)
                sync(device)

            def run_merged(ctx=ctx):
                with torch.inference_mode(), ctx():
                    merged(input_ids=ids, attention_mask=mask)
                sync(device)

            def run_peft(row_names=row_names, ctx=ctx):
                with torch.inference_mode(), ctx():
                    peft_model(input_ids=ids, attention_mask=mask, adapter_names=row_names)
                sync(device)

            for fn in (run_merged, run_engine, run_peft) * 3:
                fn()  # warm-up: kernels chosen, allocator grown
            merged_s, ratios = abba(run_merged, run_engine, rounds)
            _, peft_ratios = abba(run_merged, run_peft, max(3, rounds // 3))
            row = {"device": str(device), "precision": engine.precision, "batch": batch,
                   "length": length, "k": k, "merged_ms": round(statistics.median(merged_s) * 1e3, 3),
                   "engine_ratio": round(statistics.median(ratios), 4),
                   "peft_mixed_ratio": round(statistics.median(peft_ratios), 4)}
            print(f"  {row['precision']:<5} B={batch} L={length} K={k:<3} merged "
                  f"{row['merged_ms']:8.2f} ms | engine x{row['engine_ratio']:.3f} | peft "
                  f"adapter_names x{row['peft_mixed_ratio']:.3f}", flush=True)
            rows.append(row)
            if device.type == "cuda" and k == max(ks) and row["engine_ratio"] > P1_TARGET:
                profiles[engine.precision] = profile(run_engine)
    return rows, profiles


def profile(fn, top: int = 8) -> list[dict]:
    """The GPU kernels one call of `fn` spends its time in, most first."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
    events = [e for e in prof.key_averages()
              if getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) > 0]
    events.sort(key=lambda e: -getattr(e, "self_device_time_total",
                                       getattr(e, "self_cuda_time_total", 0)))
    out = [{"kernel": e.key[:80], "ms": round(getattr(e, "self_device_time_total",
                                                      getattr(e, "self_cuda_time_total", 0)) / 1e3, 3),
            "calls": e.count} for e in events[:top]]
    print("    profile of the engine's batch (self GPU time):")
    for e in out:
        print(f"      {e['ms']:8.3f} ms  {e['calls']:5d} x  {e['kernel']}")
    return out


def cold_loads(backbone: Backbone, paths: list[Path], device: torch.device,
               resident_counts: tuple[int, ...] = (1, 100), probes: int = 21) -> dict[str, float]:
    """Median ms from adapter files on disk to servable on `device`, at each resident count."""
    engine = MultiTaskModel(str(backbone.path), capacity=max(resident_counts) + 8, device=device)
    engine.load(paths[0], name="warmup")
    engine.unload("warmup")
    loaded, out = 0, {}
    for target in resident_counts:
        while loaded < target - 1:
            engine.load(paths[loaded % len(paths)], name=f"r{loaded}")
            loaded += 1
        times = []
        for j in range(probes):
            time.sleep(0.01)
            t = time.perf_counter()
            engine.load(paths[j % len(paths)], name=f"probe{j}")
            sync(device)
            times.append(time.perf_counter() - t)
            engine.unload(f"probe{j}")
        out[str(target)] = round(statistics.median(times) * 1e3, 3)
        print(f"  cold load with {target:>4} resident: {out[str(target)]:.2f} ms (median of "
              f"{probes}; fastest {min(times) * 1e3:.2f}, slowest {max(times) * 1e3:.2f})", flush=True)
    return out


def sst2(device: torch.device, seconds: float, work: Path, degraded: bool) -> dict:
    """benchmarks/train_sst2.py on `device`, in a child process; its JSON line."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "train_sst2.py"), "--device", str(device),
           "--max-seconds", str(seconds), "--out", str(work / "sst2")]
    if degraded:
        cmd += ["--train-examples", "400", "--epochs", "1"]
    print("[sst2] " + " ".join(cmd[1:]), flush=True)
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=seconds + 240)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {seconds + 240:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"}
    if "skipped" in result:
        return result
    keep = ("device", "precision", "dev_accuracy", "train_seconds", "examples_per_second",
            "epochs_run", "best_step", "tfidf_accuracy")
    out = {k: result.get(k) for k in keep}
    out["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(f"  SST-2 on {out['device']} ({out['precision']}): dev accuracy {out['dev_accuracy']} "
          f"after {out['train_seconds']} s of training ({out['wall_seconds']} s in all, "
          f"{out['epochs_run']} epochs)", flush=True)
    return out


def qlora_memory(folder: Path, device: torch.device) -> dict:
    """Bytes of the base as QLoRA loads it (nf4, heads in full precision) against fp32."""
    try:
        import bitsandbytes  # noqa: F401
        from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig
    except ImportError as e:
        return {"skipped": f"bitsandbytes is not installed ({e})"}
    fp32 = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=2)
    fp32_bytes = fp32.get_memory_footprint()
    del fp32
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                bnb_4bit_compute_dtype=torch.bfloat16 if device.type == "cuda"
                                else torch.float32,
                                llm_int8_skip_modules=["pre_classifier", "classifier"])
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
    try:
        q = AutoModelForSequenceClassification.from_pretrained(
            str(folder), num_labels=2, quantization_config=config, device_map={"": str(device)})
    except Exception as e:  # a bitsandbytes build without this device's kernels
        return {"error": f"{type(e).__name__}: {e}"[:300], "fp32_bytes": fp32_bytes}
    out = {"fp32_bytes": fp32_bytes, "nf4_bytes": q.get_memory_footprint()}
    if before is not None:
        out["nf4_cuda_allocated_bytes"] = torch.cuda.memory_allocated(device) - before
    out["ratio_4bit"] = round(out["nf4_bytes"] / fp32_bytes, 4)
    print(f"  QLoRA 4-bit base (nf4; pre_classifier, classifier and embeddings kept): "
          f"{out['nf4_bytes'] / 2**20:.1f} MiB against fp32 {fp32_bytes / 2**20:.1f} MiB "
          f"(x{out['ratio_4bit']:.3f})", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-tests", action="store_true", help="do not run the gpu tests")
    ap.add_argument("--tests-timeout", type=float, default=270.0)
    ap.add_argument("--sst2-seconds", type=float, default=120.0,
                    help="SST-2 training budget on the GPU (it finishes its epochs sooner)")
    ap.add_argument("--rounds", type=int, default=None, help="P1 rounds per cell (default 15)")
    ap.add_argument("--budget", type=float, default=450.0,
                    help="seconds after which the remaining parts are skipped (said so)")
    args = ap.parse_args()
    started = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    degraded = None if cuda else ("no CUDA (torch.cuda.is_available() is False): every part "
                                  "runs small on the CPU, a check of the script, not a measure")
    print(f"device check on {describe(device)}; torch {torch.__version__}, CUDA "
          f"{torch.version.cuda}" + (f"\nDEGRADED: {degraded}" if degraded else ""), flush=True)
    work = Path(tempfile.mkdtemp(prefix="device-check-"))
    os.environ.setdefault("ADAPTERS_KIT_CACHE", str(work / "cache"))
    record: dict = {"cuda": cuda, "device": describe(device), "degraded": degraded,
                    "torch": torch.__version__}
    skipped = []

    def in_budget(part: str) -> bool:
        if time.perf_counter() - started < args.budget:
            return True
        skipped.append(part)
        print(f"[{part}] skipped: past the {args.budget:.0f} s budget", flush=True)
        return False

    record["gpu_tests"] = None if args.skip_tests else gpu_tests(args.tests_timeout)

    from serving_engine import make_adapters, make_base

    base = make_base(work, "distilbert")
    backbone = Backbone.resolve(base)
    ks = [1, 8, 64] if cuda else [1, 8]
    batch, length = (64, 128) if cuda else (8, 32)
    paths = make_adapters(backbone, max(ks), work)
    record["p1"], record["p1_profiles"] = [], {}
    if in_budget("p1"):
        precisions = ["fp32"] + (["bf16"] if cuda_bf16(device) else [])
        print(f"[p1] DistilBERT-base shape on {device}, B={batch} L={length}: ratio to the merged "
              "model", flush=True)
        record["p1"], record["p1_profiles"] = p1(backbone, paths, device, batch, length, ks,
                                                 precisions, args.rounds or (15 if cuda else 3))
    top = [r for r in record["p1"] if r["k"] == max(ks)]
    record["p1_engine_ratio_k_max"] = {r["precision"]: r["engine_ratio"] for r in top}
    record["peft_mixed_ratio_k_max"] = {r["precision"]: r["peft_mixed_ratio"] for r in top}
    record["p1_worst_ratio"] = max((r["engine_ratio"] for r in record["p1"]), default=None)
    record["p1_target_met_k64"] = (all(r["engine_ratio"] <= P1_TARGET for r in top)
                                   if cuda and top else None)
    record["cold_load_ms"] = None
    if in_budget("cold_load"):
        print(f"[cold load] DistilBERT-base shape adapters (r=8 q/v + head) onto {device}", flush=True)
        record["cold_load_ms"] = cold_loads(backbone, paths, device,
                                            (1, 100) if cuda else (1, 10), 21 if cuda else 5)
    record["sst2"] = sst2(device, args.sst2_seconds if cuda else 15.0, work, not cuda) \
        if in_budget("sst2") else None
    record["qlora_4bit"] = None
    if in_budget("qlora_4bit"):
        print("[qlora 4-bit] base memory", flush=True)
        record["qlora_4bit"] = qlora_memory(base, device)
    record["skipped_parts"] = skipped
    record["seconds"] = round(time.perf_counter() - started, 1)
    emit(record)


if __name__ == "__main__":
    main()
