"""Where the engine's time goes: the share of one batch spent in the LoRA bank's own ops.

    python benchmarks/profile_engine.py [--batch 64] [--length 32] [--k 1]
    python benchmarks/profile_engine.py --sst2 [--k 3]   (embedded-distilbert, SST-2 dev rows)

Builds the DistilBERT-base-shaped model and K random r=8 q/v adapters as serving_engine.py
does, runs one batch under torch.profiler, and splits CPU time between the LoRA factors'
matmuls (any op whose inputs have a rank-8 dimension, plus the bank gathers) and everything
else. The share is measured inside one run, so the machine's drift between runs cannot move it.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import emit, random_adapters, temp_dir  # noqa: E402
from serving_engine import load_engine, make_adapters, make_base, sst2_rows, token_batch  # noqa: E402

from adapters_kit.backbones import Backbone  # noqa: E402

RANK = 8
LORA_OPS = {"aten::index", "aten::bmm", "aten::baddbmm_", "aten::baddbmm"}


def is_lora(event) -> bool:
    shapes = [s for s in (event.input_shapes or []) if s]
    if event.key == "aten::index_select":  # the bank's slot gathers; not the embedding lookups
        return bool(shapes) and len(shapes[0]) == 3
    if event.key in LORA_OPS:
        return True
    return event.key in ("aten::mm", "aten::addmm_", "aten::addmm") and any(
        RANK in s[-1:] or (len(s) == 2 and s[0] == RANK) for s in shapes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="distilbert", choices=["distilbert", "albert"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--sst2", action="store_true",
                    help="embedded-distilbert with B real SST-2 dev rows (default B=48)")
    args = ap.parse_args()
    work = temp_dir("profile-engine-")
    os.environ.setdefault("ADAPTERS_KIT_CACHE", str(work / "cache"))
    if args.sst2:
        backbone = Backbone.resolve("embedded-distilbert")
        paths = random_adapters(backbone, work / "embedded", max(args.k, 1),
                                backbone_name="embedded-distilbert")
        args.arch = "embedded-distilbert"
        args.batch = 48 if args.batch == 64 else args.batch
        id_lists = sst2_rows(backbone.tokenizer(), args.batch)
        args.length = round(sum(map(len, id_lists)) / len(id_lists))
    else:
        backbone = Backbone.resolve(make_base(work, args.arch))
        paths = make_adapters(backbone, max(args.k, 1), work)
        id_lists = token_batch(args.batch, args.length).tolist()
    engine, names = load_engine(backbone, paths)
    tasks = [engine.tasks[names[i % args.k]] for i in range(args.batch)]
    engine.forward(id_lists, tasks)  # warm-up
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.reps):
            engine.forward(id_lists, tasks)
    events = prof.key_averages(group_by_input_shape=True)
    # self CPU time of leaf ops: the parts add up to the whole without double counting
    total = sum(e.self_cpu_time_total for e in events)
    lora = sum(e.self_cpu_time_total for e in events if is_lora(e))
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    for e in top:
        print(f"  {e.key:<24} {e.self_cpu_time_total / 1e3 / args.reps:8.2f} ms/batch  "
              f"{'LoRA' if is_lora(e) else '    '} {e.input_shapes}")
    share = lora / total
    print(f"{args.arch} B={args.batch} L={args.length} K={args.k}: LoRA bank ops take "
          f"{share * 100:.2f}% of the batch's CPU time -> engine/merged about {1 / (1 - share):.4f}")
    emit({"arch": args.arch, "batch": args.batch, "length": args.length, "k": args.k,
          "lora_share": round(share, 5), "implied_ratio": round(1 / (1 - share), 4)})


if __name__ == "__main__":
    main()
