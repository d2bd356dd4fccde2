"""Shared by the NER and QA benchmarks: train a card's task, then score it through the engine."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import temp_dir

from adapters_kit import TrainConfig, get_task, train
from adapters_kit.evaluation import evaluate_adapter


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--backbone", default="embedded-distilbert")
    ap.add_argument("--epochs", type=float, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--rank", type=int, default=None)
    ap.add_argument("--targets", default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--max-train", type=int, default=None, help="train on a seeded subset")
    ap.add_argument("--max-seconds", type=float, default=None, help="training time budget")
    ap.add_argument("--evals-per-epoch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="where the adapter goes (default: a temp folder)")
    return ap


def run(task: str, args: argparse.Namespace, eval_split: str) -> dict:
    """Train `task` with the card's defaults overridden by `args`; score `eval_split`."""
    spec = get_task(task)
    out = Path(args.out or temp_dir(f"{task}-")) / f"{task}-{args.backbone}"
    config = TrainConfig(backbone=args.backbone, epochs=args.epochs, learning_rate=args.lr,
                         rank=args.rank, targets=args.targets, batch_size=args.batch_size,
                         max_train_examples=args.max_train, max_seconds=args.max_seconds,
                         evals_per_epoch=args.evals_per_epoch, seed=args.seed, overwrite=True,
                         threads=args.threads,
                         resume=False)
    started = time.perf_counter()
    result = train(spec, out, config)
    if eval_split == "dev":  # training scored its kept checkpoint on exactly this split
        scored = {"examples": json.loads((result.path / "task.json").read_text())["training"][
            "dev_examples"], "metrics": result.metrics}
    else:  # through the serving engine, as users run it
        scored = evaluate_adapter(result.path, split=eval_split)
    training = json.loads((result.path / "task.json").read_text())["training"]
    return {"backbone": args.backbone, "train_seconds": round(result.train_seconds, 1),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "adapter_bytes": result.adapter_bytes, "dev_metrics": result.metrics,
            "eval_split": eval_split, "eval_examples": scored["examples"],
            "eval_metrics": scored["metrics"], "train_examples": training["train_examples"],
            "train_rows": training["train_rows"], "epochs_run": round(
                result.examples_seen / max(1, training["train_rows"]), 2),
            "targets": training["targets"], "rank": training["rank"],
            "learning_rate": training["learning_rate"], "precision": training["precision"],
            "threads": args.threads, "stopped_early": training["stopped_early"],
            "adapter": str(result.path)}
