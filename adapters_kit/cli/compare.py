"""`compare`: one task on each backbone x precision, measured on this machine; and `demo`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import json_flag, thread_count
from .report import print_json, progress_line


def cmd_compare(args: argparse.Namespace) -> int:
    from ..comparison import compare

    result = compare(args.task, args.backbones, args.precisions, device=args.device,
                     budget_s=args.budget_s, epochs=args.epochs,
                     max_train_examples=args.max_train_examples, seed=args.seed,
                     threads=args.threads, out=args.out,
                     progress=not args.json, on_progress=progress_line if args.json else None)
    if args.json:
        print_json(result.to_dict())
    else:
        print(result.table())
        print(result.recommendation)
        print(f"wrote {result.json_path} and {result.png}; adapters in {result.store}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run_demo(Path(args.out))
    return 0


def add_compare(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="train a task on each backbone x precision and measure "
                       "the trade-off on this machine (table, compare.json, compare.png)")
    p.add_argument("task", help="a registered task name, or a path to a .toml task card")
    p.add_argument("--backbones", help="comma-separated (default: the embedded backbones, and "
                   "distilbert-base-uncased, albert-base-v2 when the hub can give them)")
    p.add_argument("--precisions", help="comma-separated from fp32,bf16,8bit,4bit (default: all; "
                   "those this machine cannot run are listed with the reason)")
    p.add_argument("--device", help="where to train and measure (default cpu)")
    p.add_argument("--budget-s", type=float, help="training seconds per combination (default 120, "
                   "or none when --epochs is given)")
    p.add_argument("--epochs", type=float, help="train every combination for these epochs")
    p.add_argument("--max-train-examples", type=int,
                   help="train on at most this many rows, a seeded sample (default: every row)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling and training (default 0)")
    p.add_argument("--threads", type=thread_count, help="torch threads for training and "
                   "measuring (default: all cores)")
    p.add_argument("--out", help="folder for compare.json, compare.png and the adapters' store "
                   "(default: compare-TASK)")
    json_flag(p, "print one JSON object on stdout; progress goes to stderr as JSON lines")
    return p


def add_demo(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="train two demo adapters and serve both on one base model")
    p.add_argument("--out", default="adapters-demo", help="where the demo writes its adapters")
    return p
