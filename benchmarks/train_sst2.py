"""SST-2 on an embedded backbone: dev accuracy, training time, adapter size, TF-IDF baseline.

    python benchmarks/train_sst2.py [--backbone embedded-albert] [--head full] [--device cuda]
    python benchmarks/train_sst2.py --quantize 8bit|4bit [--double-quant] [--optim adamw8bit]

Trains on the first 20,000 rows of SST-2 train after a seeded shuffle and scores the GLUE dev
set. `--quantize` trains QLoRA on a bitsandbytes base (README, "Quantized bases"); the JSON adds
`quantize` and `base_bytes` (the base's `get_memory_footprint()`, quantized or not). The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import emit, require_shared, temp_dir

from adapters_kit import TrainConfig, get_task, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="embedded-distilbert")
    ap.add_argument("--train-examples", type=int, default=20_000)
    ap.add_argument("--epochs", type=float, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--rank", type=int, default=None)
    ap.add_argument("--targets", default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--head", default="lora", choices=["lora", "full"])
    ap.add_argument("--dropout", type=float, default=None,
                    help="override every dropout (model and LoRA) during training")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--device", default="auto", help="auto (a GPU when present), cpu, cuda, cuda:N")
    ap.add_argument("--max-seconds", type=float, default=300.0,
                    help="training time budget; the best checkpoint so far is kept")
    ap.add_argument("--evals-per-epoch", type=int, default=1)
    ap.add_argument("--quantize", default=None, choices=["8bit", "4bit"],
                    help="QLoRA on a bitsandbytes 8-bit or 4-bit (NF4) base")
    ap.add_argument("--double-quant", action="store_true", help="with --quantize 4bit")
    ap.add_argument("--optim", default="adamw", choices=["adamw", "adamw8bit"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    require_shared("sst2", "train.tsv")

    spec = get_task("sst2")
    out = Path(args.out or temp_dir("sst2-")) / \
        f"sst2-{args.backbone}-{args.head}-{args.quantize or 'fp32'}"
    config = TrainConfig(backbone=args.backbone, epochs=args.epochs, learning_rate=args.lr,
                         rank=args.rank, targets=args.targets, batch_size=args.batch_size,
                         head=args.head, max_train_examples=args.train_examples, seed=args.seed,
                         max_seconds=args.max_seconds, precision=args.precision,
                         evals_per_epoch=args.evals_per_epoch, dropout=args.dropout,
                         lora_dropout=args.dropout, device=args.device, quantize=args.quantize,
                         double_quant=args.double_quant, optim=args.optim,
                         overwrite=True, resume=False)
    result = train(spec, out, config)
    print(f"dev accuracy {result.metrics['accuracy']:.4f} | TF-IDF {result.baseline['accuracy']:.4f}"
          f" | {result.train_seconds:.0f} s | {result.examples_per_second:.0f} ex/s | "
          f"adapter {result.adapter_bytes:,} bytes | {out}")
    import json

    from adapters_kit.backbones import Backbone
    from adapters_kit.backbones.quantize import Quantization

    base_bytes = Backbone.resolve(args.backbone).load_model(
        2, quantize=Quantization.of(args.quantize, args.double_quant)).get_memory_footprint()
    print(f"base {args.quantize or 'fp32'}: {base_bytes:,} bytes")
    training = json.loads((out / "task.json").read_text())["training"]
    emit({"backbone": args.backbone, "head": args.head, "targets": training["targets"],
          "rank": training["rank"], "learning_rate": training["learning_rate"],
          "epochs_run": round(result.examples_seen / training["train_examples"], 2),
          "precision": training["precision"], "device": result.device,
          "dev_accuracy": round(result.metrics["accuracy"], 4),
          "train_seconds": round(result.train_seconds, 1),
          "examples_per_second": round(result.examples_per_second, 1),
          "adapter_bytes": result.adapter_bytes,
          "tfidf_accuracy": round(result.baseline["accuracy"], 4),
          "best_step": result.history.get("best_step"), "evals": result.history.get("evals"),
          "quantize": args.quantize, "double_quant": args.double_quant, "optim": args.optim,
          "base_bytes": base_bytes, "path": str(out)})


if __name__ == "__main__":
    main()
