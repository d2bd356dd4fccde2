"""Base memory and engine throughput on bitsandbytes 8-bit and 4-bit bases, against fp32.

    python benchmarks/quantized_base.py [--rows 16] [--length 128] [--reps 3]

Shapes of the real checkpoints, randomly initialised (memory and speed do not depend on the
values): distilbert-base-uncased (6 layers, 768 wide) and albert-base-v2 (one 768-wide layer
shared 12 times, 128-wide embeddings). For each shape and base (fp32, int8, nf4), in a fresh
process each:
  memory      `get_memory_footprint()` of the loaded sequence-classification base, and the
              process RSS it adds (RSS after loading and reading every tensor once, minus
              RSS before, after gc and malloc_trim: safetensors maps the file lazily, so an
              fp32 weight costs RSS only once read, as serving reads it); then the RSS a
              second base of the same kind adds in that process, once the first load's
              one-time costs (bitsandbytes' code and the quantizer's heap) are paid;
  throughput  the serving engine's rows/s on a mixed batch (B rows of L tokens, K=4 adapters,
              r=8 on q/v plus the small head), median of `--reps` passes after one warm-up;
              its ratio to the fp32 engine of the same shape, measured in the same run.
The last line is one JSON object: per shape `fp32_bytes`, `int8_bytes`, `nf4_bytes` (the
footprint), the RSS figures and throughputs, and `ratio_8bit` / `ratio_4bit`, the worst
(largest) footprint ratio across shapes.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
MODES = {"fp32": None, "int8": "8bit", "nf4": "4bit"}


def rss() -> int:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(folder: str, mode: str | None, rows: int, length: int, reps: int) -> dict:
    """One base in this (fresh) process: its memory, then the engine's throughput on it."""
    import torch
    import transformers  # noqa: F401 (imported before the RSS baseline)
    from _common import median_seconds, random_adapters, temp_dir

    from adapters_kit import MultiTaskModel
    from adapters_kit.backbones import Backbone

    if mode is not None:
        import bitsandbytes  # noqa: F401
    bb = Backbone.resolve(folder)
    bb.head_dir(2)  # the head folder exists before the baseline
    before = rss()
    model = bb.load_model(2, quantize=mode)
    footprint = model.get_memory_footprint()
    with torch.no_grad():  # safetensors maps the file lazily: read every tensor once
        for t in model.state_dict().values():
            t.float().sum() if t.is_floating_point() else t.sum()
    added = rss() - before
    del model
    # A second base in the same process: what one more base costs once the first load's
    # one-time costs (bitsandbytes' and the quantizer's code, their heap) are paid.
    mid = rss()
    model = bb.load_model(2, quantize=mode)
    with torch.no_grad():
        for t in model.state_dict().values():
            t.float().sum() if t.is_floating_point() else t.sum()
    second = rss() - mid
    del model
    gc.collect()

    engine = MultiTaskModel(folder, quantize=mode)
    work = temp_dir("qbase-")
    names = [engine.load(p) for p in random_adapters(bb, work, 4)]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 29000, (rows, length), generator=g).tolist()
    with engine.leased([names[i % len(names)] for i in range(rows)]) as tasks:
        seconds = median_seconds(lambda: engine.forward(ids, tasks), reps)
    return {"footprint_bytes": footprint, "rss_bytes": added, "rss_second_bytes": second,
            "rows_per_s": round(rows / seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=16, help="rows of the timed mixed batch")
    ap.add_argument("--length", type=int, default=128, help="tokens per row")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--child", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        folder, mode = args.child
        print(json.dumps(child(folder, None if mode == "none" else mode, args.rows, args.length,
                               args.reps)))
        return

    from _common import emit, temp_dir
    from backbone_tradeoff import shaped

    from adapters_kit.backbones.quantize import FULL_PRECISION_MODULES, require_bitsandbytes

    require_bitsandbytes()
    work = temp_dir("quantized-base-")
    out: dict = {"shapes": {}, "rows": args.rows, "length": args.length, "adapters": 4,
                 "full_precision": FULL_PRECISION_MODULES + ["norms", "biases", "position embeddings"],
                 "word_embeddings": "bf16 on the quantized bases"}
    print(f"{'shape':<22} {'base':<5} {'footprint':>12} {'x fp32':>7} {'RSS added':>12} {'x fp32':>7} "
          f"{'2nd base RSS':>13} {'x fp32':>7} {'engine rows/s':>14} {'x fp32':>7}", flush=True)
    for arch, label in (("distilbert", "distilbert-base"), ("albert", "albert-base")):
        folder = str(shaped(work, arch))
        shape: dict = {}
        for name, mode in MODES.items():
            proc = subprocess.run([sys.executable, __file__, "--child", folder, mode or "none",
                                   "--rows", str(args.rows), "--length", str(args.length),
                                   "--reps", str(args.reps)], capture_output=True, text=True,
                                  cwd=HERE)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-4000:])
                raise SystemExit(f"{label} {name}: the measuring process failed")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            shape[f"{name}_bytes"] = r["footprint_bytes"]
            shape[f"{name}_rss_bytes"] = r["rss_bytes"]
            shape[f"{name}_rss_second_bytes"] = r["rss_second_bytes"]
            shape[f"{name}_rows_per_s"] = r["rows_per_s"]
            ref = (shape["fp32_bytes"], shape["fp32_rss_bytes"], shape["fp32_rows_per_s"],
                   shape["fp32_rss_second_bytes"])
            print(f"{label:<22} {name:<5} {r['footprint_bytes'] / 1e6:>9.1f} MB "
                  f"{r['footprint_bytes'] / ref[0]:>7.3f} {r['rss_bytes'] / 1e6:>9.1f} MB "
                  f"{r['rss_bytes'] / ref[1]:>7.3f} {r['rss_second_bytes'] / 1e6:>10.1f} MB "
                  f"{r['rss_second_bytes'] / ref[3]:>7.3f} {r['rows_per_s']:>14.2f} "
                  f"{r['rows_per_s'] / ref[2]:>7.3f}", flush=True)
        for name in ("int8", "nf4"):
            shape[f"{name}_ratio"] = round(shape[f"{name}_bytes"] / shape["fp32_bytes"], 4)
            shape[f"{name}_rss_ratio"] = round(shape[f"{name}_rss_bytes"] / shape["fp32_rss_bytes"], 4)
            shape[f"{name}_rss_second_ratio"] = round(shape[f"{name}_rss_second_bytes"]
                                                      / shape["fp32_rss_second_bytes"], 4)
            shape[f"{name}_speed_ratio"] = round(shape[f"{name}_rows_per_s"] / shape["fp32_rows_per_s"], 4)
        out["shapes"][label] = shape
    out["ratio_8bit"] = max(s["int8_ratio"] for s in out["shapes"].values())
    out["ratio_4bit"] = max(s["nf4_ratio"] for s in out["shapes"].values())
    out["rss_ratio_8bit"] = max(s["int8_rss_ratio"] for s in out["shapes"].values())
    out["rss_ratio_4bit"] = max(s["nf4_rss_ratio"] for s in out["shapes"].values())
    out["rss_second_ratio_8bit"] = max(s["int8_rss_second_ratio"] for s in out["shapes"].values())
    out["rss_second_ratio_4bit"] = max(s["nf4_rss_second_ratio"] for s in out["shapes"].values())
    print(f"worst footprint ratio: 8-bit {out['ratio_8bit']:.3f} (target <= 0.60), 4-bit "
          f"{out['ratio_4bit']:.3f} (target <= 0.40)")
    emit(out)


if __name__ == "__main__":
    main()
