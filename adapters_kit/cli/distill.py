"""The distillation commands of `adapters-kit`, thin over the Python API:

    adapters-kit backbones make NAME --from BACKBONE (--layers N | --share-layers [--embedding-size E])
                                [--general-distill FILE ...]
    adapters-kit distill TEACHER_ADAPTER --student BACKBONE [--unlabelled FILE] [--temperature T]
                         [--alpha A] [--out DIR]

`add_parsers(subparsers)` adds `distill`, and `make` under the existing `backbones` command
(plain `adapters-kit backbones` still lists them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _print_json(obj: dict) -> None:
    print(json.dumps(obj, indent=None, default=str))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def cmd_make(args: argparse.Namespace) -> int:
    from ..backbones.students import make_student, report

    made = make_student(args.name, args.teacher, layers=args.layers, share_layers=args.share_layers,
                        embedding_size=args.embedding_size, shared_layer=args.shared_layer,
                        out=args.out, overwrite=args.overwrite)
    general = None
    if args.general_distill:
        from ..training.general_distill import GeneralDistillConfig, general_distill

        cfg = GeneralDistillConfig(max_seconds=args.max_seconds, max_texts=args.max_texts,
                                   text_column=args.text_column, progress=not args.json)
        general = general_distill(args.name, args.general_distill, cfg).to_dict()
        made = report(args.name)
    if args.json:
        _print_json({"student": made.to_dict(), "general_distillation": general})
    else:
        print(made.summary())
        if general:
            print(f"  general distillation: {general['steps']} steps on {general['texts']} texts in "
                  f"{general['seconds']:.0f} s, loss {general['first_loss']:.4f} -> "
                  f"{general['last_loss']:.4f}")
        print(f"use it as --backbone {args.name}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from ..training.config import TrainConfig
    from ..training.distill import distill, teacher_task

    spec = teacher_task(args.teacher) if args.task is None else args.task
    name = spec if isinstance(spec, str) else spec.name
    out = Path(args.out or Path("adapters") / f"{name}--{args.student}")
    config = TrainConfig(backbone=args.student, epochs=args.epochs, learning_rate=args.lr,
                         batch_size=args.batch_size, max_train_examples=args.max_train_examples,
                         max_seconds=args.max_seconds, seed=args.seed, threads=args.threads,
                         device=args.device, overwrite=args.overwrite, progress=not args.json)
    result = distill(args.teacher, out, args.student, config, task=spec,
                     unlabelled=args.unlabelled, text_column=args.text_column,
                     max_unlabelled=args.max_unlabelled, temperature=args.temperature,
                     alpha=args.alpha)
    if args.json:
        _print_json({"task": name, "student": args.student, "teacher": args.teacher,
                     **result.to_dict()})
    else:
        metric = next(iter(result.metrics))
        print(f"distilled {name} onto {args.student}: dev {metric} {result.metrics[metric]:.4f} "
              f"-> {result.path}", file=sys.stdout)
    return 0


def add_parsers(sub) -> None:
    """Add `distill`, and `make` under `backbones`, to the `adapters-kit` subcommands."""
    backbones = sub.choices.get("backbones")
    if backbones is not None:
        actions = backbones.add_subparsers(dest="backbones_action", required=False,
                                           metavar="{make}")
        p = actions.add_parser("make", help="make a compact student backbone from a teacher's "
                               "weights, registered under NAME")
        p.add_argument("name", help="the student's name (then --backbone NAME works anywhere)")
        p.add_argument("--from", dest="teacher", default="embedded-distilbert",
                       help="the teacher backbone (default embedded-distilbert)")
        p.add_argument("--layers", type=_positive_int,
                       help="keep this many of the teacher's layers, evenly spaced (DistilBERT's "
                       "way); with --share-layers: the shared stack's depth")
        p.add_argument("--share-layers", action="store_true",
                       help="one ALBERT layer shared at every depth, factorised embeddings (ALBERT's way)")
        p.add_argument("--embedding-size", type=_positive_int,
                       help="with --share-layers: the embedding size E (default 128)")
        p.add_argument("--shared-layer", type=int,
                       help="with --share-layers: the teacher layer to start from (default the middle)")
        p.add_argument("--out", help="the student's folder (default: in the cache)")
        p.add_argument("--overwrite", action="store_true", help="replace a student of that name")
        p.add_argument("--general-distill", metavar="FILE",
                       help="then distil the student's base on this file's text (hidden states and "
                       "attention against the teacher's)")
        p.add_argument("--text-column", help="the text column of the --general-distill file")
        p.add_argument("--max-seconds", type=float, default=600.0,
                       help="general distillation's time budget (default 600)")
        p.add_argument("--max-texts", type=_positive_int, help="use at most this many texts")
        p.add_argument("--json", action="store_true", help="print the result as one JSON line")
        p.set_defaults(func=cmd_make)

    p = sub.add_parser("distill", help="train a student backbone's adapter from a teacher "
                       "adapter's soft outputs (and unlabelled text the teacher labels)")
    p.add_argument("teacher", metavar="TEACHER_ADAPTER", help="the teacher's adapter directory")
    p.add_argument("--student", required=True, help="the student backbone (e.g. one made with "
                   "`adapters-kit backbones make`)")
    p.add_argument("--task", help="the task (default: the teacher's; another is refused)")
    p.add_argument("--unlabelled", metavar="FILE", help="a file of unlabelled text for the "
                   "teacher to label: any text column of a csv/tsv/jsonl/parquet file, a .txt")
    p.add_argument("--text-column", help="the --unlabelled file's text column (a,b for a pair)")
    p.add_argument("--max-unlabelled", type=_positive_int,
                   help="label at most this many rows of the --unlabelled file")
    p.add_argument("--temperature", type=float, default=2.0, help="softens both distributions (> 0)")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="the hard labels' weight, 1 - alpha the teacher's (1: labels only)")
    p.add_argument("--out", help="adapter directory (default adapters/TASK--STUDENT)")
    p.add_argument("--epochs", type=float, help="passes over the data (default: the card's)")
    p.add_argument("--lr", type=float, help="learning rate (default: the card's)")
    p.add_argument("--batch-size", type=int, help="rows per step (default: the card's)")
    p.add_argument("--max-train-examples", type=int, help="train on a seeded subset of this size")
    p.add_argument("--max-seconds", type=float, help="training time budget in seconds")
    p.add_argument("--seed", type=int, default=0, help="seed for data order and LoRA init")
    p.add_argument("--threads", type=_positive_int, help="torch threads (default: all)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (a GPU if visible)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.set_defaults(func=cmd_distill)
