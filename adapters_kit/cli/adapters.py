"""Commands over a trained adapter: `eval`, `predict`, `merge`."""

from __future__ import annotations

import argparse
import time

from .args import device_flag, device_of, json_flag
from .report import print_json, print_report, warn


def _model_for(adapter_dir: str, args: argparse.Namespace):
    from ..adapters import load_adapter
    from ..engine.model import MultiTaskModel

    device = device_of(args)  # a device that is not there fails before anything is read
    files = load_adapter(adapter_dir)  # a directory, or STORE_URL/TASK
    model = MultiTaskModel(files.task["backbone"]["name"], device=device)
    name = model.load(files)
    return model, name, files


def cmd_eval(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_adapter

    started = time.perf_counter()
    model, _, files = _model_for(args.adapter_dir, args)
    result = evaluate_adapter(files, args.data, args.split, model=model,  # read once
                              baseline=not args.no_baseline, encoding=args.encoding)
    seconds = time.perf_counter() - started
    if args.json:
        print_json({**result, "seconds": round(seconds, 2), "adapter": files.where,
                    "device": str(model.device)})
    else:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
        print(f"{result['task']} on {result['split']} ({result['examples']} examples): {shown}")
        if result["baseline"]:
            print("TF-IDF baseline (trained on the task's train split, same rows): "
                  + ", ".join(f"{k} {v:.4f}" for k, v in result["baseline"].items()))
        print_report(result["report"])
        warn(result["warnings"])
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    model, name, _ = _model_for(args.adapter_dir, args)
    task = model.tasks[name]
    inputs = [tuple(t.split(args.sep, 1)) if task.spec.is_pair else t for t in args.texts]
    preds = model.predict(name, inputs)
    if args.json:
        print_json({"task": name, "predictions": preds, "device": str(model.device)})
    else:
        for text, p in zip(args.texts, preds):
            if "entities" in p:
                found = ", ".join(f"{e['text']} ({e['type']}, {e['score']:.2f})"
                                  for e in p["entities"])
                print(f"{found or '(no entities)'}\t{text}")
            elif "answer" in p:
                print(f"{p['answer']}\t{p['score']:.3f}\t{text}")
            elif p.get("value") is not None:
                print(f"{p['value']:.4f}\t{text}")
            else:
                best = p["scores"].get(p["label"], 0.0) if p["label"] else 0.0
                print(f"{p['label']}\t{best:.3f}\t{text}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from ..adapters.merge import merge_adapter

    device = device_of(args)
    out = merge_adapter(args.adapter_dir, args.out, overwrite=args.overwrite, device=device)
    if args.json:
        print_json({"merged": str(out), "adapter": args.adapter_dir, "device": str(device)})
    else:
        print(f"merged {args.adapter_dir} into its base -> {out} (a plain transformers folder)")
    return 0


ADAPTER_DIR = ("an adapter directory (adapters-kit train ... --out DIR), or STORE_URL/TASK "
               "(e.g. s3://bucket/adapters/sst2)")


def add_eval(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="score an adapter on its dev/test split or a data file")
    p.add_argument("adapter_dir", help=ADAPTER_DIR)
    p.add_argument("--data", help="a labelled data file in the task's format")
    p.add_argument("--split", default="dev", choices=["dev", "test"],
                   help="the task's split to score when no --data is given (default dev)")
    p.add_argument("--encoding", help="text encoding of the --data file (default: the task's)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the TF-IDF baseline (it trains on the task's training split)")
    device_flag(p)
    json_flag(p)
    return p


def add_predict(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("predict", help="predict labels for texts with an adapter")
    p.add_argument("adapter_dir", help=ADAPTER_DIR)
    p.add_argument("texts", nargs="+", metavar="TEXT", help="the texts (a pair task: A|||B)")
    p.add_argument("--sep", default="|||", help="separates the two texts of a pair task")
    device_flag(p)
    json_flag(p)
    return p


def add_merge(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("merge", help="export an adapter merged into its base (no peft needed)")
    p.add_argument("adapter_dir", help="an adapter directory (adapters-kit train ... --out DIR)")
    p.add_argument("out", help="model folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    device_flag(p, "where the merge runs (the weights written are the same)")
    json_flag(p)
    return p
