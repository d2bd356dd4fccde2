"""The `adapters-kit` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings
from pathlib import Path

from .errors import AdaptersKitError, TrainingInterrupted
from .training.quality import QualityWarning


def _print_json(obj: dict) -> None:
    print(json.dumps(obj, indent=None, default=str))


def _progress_line(event: dict) -> None:
    """`--json` training progress: one JSON object a line on stderr (stdout keeps the result)."""
    print(json.dumps(event, default=str), file=sys.stderr, flush=True)


def _warn(notes: list[str]) -> None:
    for note in notes:
        print(f"adapters-kit: warning: {note}", file=sys.stderr)


def _class_weights(text: str) -> str | dict[str, float]:
    """`balanced`, `none`, or `LABEL=W,LABEL=W`."""
    if text in ("balanced", "none"):
        return text
    out = {}
    for part in text.split(","):
        label, eq, weight = part.partition("=")
        try:
            out[label.strip()] = float(weight)
        except ValueError:
            eq = ""
        if not eq or not label.strip():
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a class weighting; give balanced, none, or LABEL=WEIGHT,... "
                "(e.g. spam=4,ham=1)")
    return out


def cmd_tasks(args: argparse.Namespace) -> int:
    from .tasks import list_tasks

    specs = list_tasks()
    if args.json:
        _print_json({"tasks": [{"name": s.name, "kind": s.kind, "labels": s.labels,
                                "text_fields": s.text_fields, "metric": s.metric,
                                "train": s.train, "description": s.description} for s in specs]})
        return 0
    width = max(len(s.name) for s in specs)
    for s in specs:
        data = "data ok" if s.train and (s.format == "hub" or Path(s.train).exists()) else "no data"
        print(f"{s.name:<{width}}  {s.kind:<14} {len(s.labels) or '-':>3} labels  {data:<8} "
              f"{s.description}")
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from .backbones import describe_backbones
    from .comparison import last_comparison, summary

    rows = describe_backbones()
    last = last_comparison()  # the figures of the last `compare` run here, if any
    if args.json:
        _print_json({"backbones": rows, "last_compare": last})
    else:
        for r in rows:
            print(f"{r['name']:<20} {r['description']}")
        print("Any hub name or local folder of a DistilBERT or ALBERT model also works "
              "(e.g. distilbert-base-uncased, albert-base-v2).")
        print("\n" + summary(last) if last else
              "\nRun `adapters-kit compare TASK` to measure them on your task and this machine.")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .comparison import compare

    result = compare(args.task, args.backbones, args.precisions, device=args.device,
                     budget_s=args.budget_s, epochs=args.epochs,
                     max_train_examples=args.max_train_examples, seed=args.seed,
                     threads=args.threads, out=args.out,
                     progress=not args.json, on_progress=_progress_line if args.json else None)
    if args.json:
        _print_json(result.to_dict())
    else:
        print(result.table())
        print(result.recommendation)
        print(f"wrote {result.json_path} and {result.png}; adapters in {result.store}")
    return 0


def _device(args: argparse.Namespace, quiet: bool = False):
    """The command's `--device`, resolved; says on stderr which device it chose (not under
    `--json`, whose output carries a `device` key instead)."""
    from .devices import choice_note, resolve_device
    from .training.distributed import is_main_process

    device = resolve_device(args.device)
    if not (quiet or getattr(args, "json", False)) and is_main_process():
        print(f"adapters-kit: {choice_note(args.device, device)}", file=sys.stderr, flush=True)
    return device


def cmd_train(args: argparse.Namespace) -> int:
    from .tasks import get_task
    from .training.distributed import is_main_process
    from .training.loop import TrainConfig, train

    spec = get_task(args.task)
    if args.data or args.dev_data:
        spec = spec.with_data(args.data, args.dev_data)
    if args.encoding:
        spec = dataclasses.replace(spec, encoding=args.encoding)
    out_url = args.out if args.out and "://" in args.out else None
    if out_url:  # trained into a local staging folder, then published (adapters.remote)
        from .adapters.remote import staging_for

        out = staging_for(out_url, spec.name, overwrite=args.overwrite)
    else:
        out = Path(args.out or Path("adapters") / spec.name)
    config = TrainConfig(backbone=args.backbone, epochs=args.epochs, learning_rate=args.lr,
                         batch_size=args.batch_size, rank=args.rank, targets=args.targets,
                         head=args.head, max_train_examples=args.max_train_examples,
                         seed=args.seed, max_seconds=args.max_seconds, overwrite=args.overwrite,
                         precision=args.precision, threads=args.threads, dropout=args.dropout,
                         class_weights=args.class_weights, device=str(_device(args)),
                         quantize=args.quantize, double_quant=args.double_quant, optim=args.optim,
                         **_variants(args), **_given(args, "patience"),
                         resume=not args.no_resume, progress=not args.json)
    with warnings.catch_warnings():  # reported below, once, as the output format wants
        warnings.simplefilter("ignore", QualityWarning)
        result = train(spec, out, config, on_progress=_progress_line if args.json else None)
    if not is_main_process():  # under `accelerate launch` the main process reports for all
        return 0
    if out_url:
        from .adapters.remote import publish_staged

        publish_staged(out, out_url)
        result.path = out = out_url
    if args.json:
        _print_json({"task": spec.name, "backbone": args.backbone, **result.to_dict()})
    else:
        m = result.metrics[spec.metric]
        base = result.baseline.get(spec.metric)
        print(f"{spec.name}: dev {spec.metric} {m:.4f}"
              + (f" (TF-IDF baseline {base:.4f})" if base is not None else "")
              + f" in {result.train_seconds:.0f} s; adapter {result.adapter_bytes:,} bytes -> {out}")
        if result.class_weights:
            print("class weights: " + ", ".join(f"{k} {v:.3f}" for k, v in result.class_weights.items()))
        _print_report(result.report)
        _warn(result.warnings)
    return 0


def _variants(args: argparse.Namespace) -> dict:
    """The LoRA variant flags as TrainConfig fields."""
    return {"use_rslora": args.rslora, "use_dora": args.dora,
            "loraplus_lr_ratio": args.loraplus_lr_ratio}


def cmd_train_many(args: argparse.Namespace) -> int:
    from .tasks import get_task
    from .training.loop import TrainConfig
    from .training.many import TrainJob, train_many

    specs = [get_task(t) for t in args.tasks]
    config = TrainConfig(backbone=args.backbone, epochs=args.epochs, learning_rate=args.lr,
                         batch_size=args.batch_size, rank=args.rank, targets=args.targets,
                         head=args.head, max_train_examples=args.max_train_examples,
                         seed=args.seed, overwrite=args.overwrite, precision=args.precision,
                         threads=args.threads, dropout=args.dropout, **_variants(args),
                         device=str(_device(args)), resume=not args.no_resume,
                         progress=not args.json)
    out = Path(args.out)
    with warnings.catch_warnings():  # reported below, once per task
        warnings.simplefilter("ignore", QualityWarning)
        results = train_many([TrainJob(s, out / s.name, config) for s in specs],
                             on_progress=_progress_line if args.json else None, lanes=args.lanes)
    if args.json:
        _print_json({"backbone": args.backbone,
                     "tasks": {name: r.to_dict() for name, r in results.items()}})
        return 0
    for spec in specs:
        r = results[spec.name]
        base = r.baseline.get(spec.metric)
        print(f"{spec.name}: dev {spec.metric} {r.metrics[spec.metric]:.4f}"
              + (f" (TF-IDF baseline {base:.4f})" if base is not None else "")
              + f"; adapter {r.adapter_bytes:,} bytes -> {r.path}")
        _warn([f"{spec.name}: {w}" for w in r.warnings])
    return 0


def _variant_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rslora", action="store_true", help="rsLoRA: scale by alpha / sqrt(rank)")
    p.add_argument("--loraplus-lr-ratio", type=float, metavar="RATIO",
                   help="LoRA+: train the B factors at --lr x RATIO (e.g. 16)")
    p.add_argument("--dora", action="store_true", help="DoRA (plain peft serves it; the engine "
                   "refuses it); sequence tasks need --head full")


def _print_report(report: dict) -> None:
    """The per-class table and, for single-label tasks, the confusion matrix."""
    if not report:
        return
    labels = report["labels"]
    width = max(9, *(len(n) for n in labels))
    print(f"{'class':<{width}}  precision  recall     f1  support  predicted")
    for name, r in report["per_class"].items():
        print(f"{name:<{width}}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1']:.4f}  "
              f"{r['support']:7d}  {r['predicted']:9d}")
    matrix = report.get("confusion_matrix")
    if matrix:
        cell = max(6, *(len(n) for n in labels), *(len(str(v)) for row in matrix for v in row))
        print(f"confusion (rows: true, columns: predicted)\n{'':<{width}}  "
              + " ".join(f"{n:>{cell}}" for n in labels))
        for name, row in zip(labels, matrix):
            print(f"{name:<{width}}  " + " ".join(f"{v:>{cell}}" for v in row))


def _model_for(adapter_dir: str, args: argparse.Namespace):
    from .adapters.store import read_adapter
    from .engine.model import MultiTaskModel

    device = _device(args)  # a device that is not there fails before anything is read
    files = read_adapter(adapter_dir)
    model = MultiTaskModel(files.task["backbone"]["name"], device=device)
    name = model.load(files)
    return model, name, files


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_adapter

    started = time.perf_counter()
    model, _, files = _model_for(args.adapter_dir, args)
    result = evaluate_adapter(files, args.data, args.split, model=model,  # read once
                              baseline=not args.no_baseline, encoding=args.encoding)
    seconds = time.perf_counter() - started
    if args.json:
        _print_json({**result, "seconds": round(seconds, 2), "adapter": str(files.path),
                     "device": str(model.device)})
    else:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
        print(f"{result['task']} on {result['split']} ({result['examples']} examples): {shown}")
        if result["baseline"]:
            print("TF-IDF baseline (trained on the task's train split, same rows): "
                  + ", ".join(f"{k} {v:.4f}" for k, v in result["baseline"].items()))
        _print_report(result["report"])
        _warn(result["warnings"])
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    model, name, _ = _model_for(args.adapter_dir, args)
    task = model.tasks[name]
    inputs = [tuple(t.split(args.sep, 1)) if task.spec.is_pair else t for t in args.texts]
    preds = model.predict(name, inputs)
    if args.json:
        _print_json({"task": name, "predictions": preds, "device": str(model.device)})
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
    from .adapters.merge import merge_adapter

    device = _device(args)
    out = merge_adapter(args.adapter_dir, args.out, overwrite=args.overwrite, device=device)
    if args.json:
        _print_json({"merged": str(out), "adapter": args.adapter_dir, "device": str(device)})
    else:
        print(f"merged {args.adapter_dir} into its base -> {out} (a plain transformers folder)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .server import ServeConfig
        from .server.app import serve
    except ImportError as e:
        print(f"adapters-kit: error: the server needs its extra ({e.name} is missing): "
              'pip install "adapters-kit[serve]"', file=sys.stderr)
        return 2
    # flags win over ADAPTERS_KIT_* variables, which win over the defaults
    flags = {k: getattr(args, k) for k in ("store", "backbone", "keys", "host", "port", "precision",
                                           "device", "quantize", *_SERVE_LIMITS)}
    flags["jobs"] = args.jobs or None
    flags["jobs_dir"] = args.jobs_dir
    config = ServeConfig.from_env(**flags)
    if not args.ray:
        if args.replicas is not None or args.ray_address or args.ray_gpus_per_replica is not None:
            raise AdaptersKitError("--replicas, --ray-address and --ray-gpus-per-replica need "
                                   "--ray; add --ray to serve on Ray Serve, or drop them for the "
                                   "single-process server")
        serve(config)
        return 0
    if args.replicas is not None and args.replicas < 1:
        raise AdaptersKitError(f"--replicas {args.replicas}: a deployment needs at least 1 "
                               "engine replica")
    try:
        from .server.ray_app import serve_ray
    except ImportError as e:
        print(f"adapters-kit: error: --ray needs Ray Serve ({e.name} is missing): "
              'pip install "adapters-kit[ray]"', file=sys.stderr)
        return 2
    serve_ray(config, args.replicas or 1, args.ray_address, args.ray_gpus_per_replica or 0.0)
    return 0


# ServeConfig fields the command line may set (defaults and meaning: ServeConfig, README)
_SERVE_LIMITS = {"max_body_bytes": int, "max_inputs": int, "max_chars": int,
                 "max_request_rows": int, "queue_inputs": int,
                 "batch_tokens": int, "max_wait_ms": float, "deadline_s": float,
                 "torch_threads": int, "store_poll_s": float, "store_cache_bytes": int,
                 "tenant_queue_inputs": int, "tenant_rate": float,
                 "job_threads": int, "job_lanes": int, "job_max_bytes": int, "job_max_rows": int,
                 "tenant_queued_jobs": int, "tenant_running_jobs": int}


def _device_flag(p: argparse.ArgumentParser, what: str = "where to run",
                 default: str | None = "auto") -> None:
    p.add_argument("--device", default=default, metavar="auto|cpu|cuda|cuda:N",
                   help=f"{what}: auto (default) = a GPU when one is visible, else the CPU"
                   + ("" if default else "; or ADAPTERS_KIT_DEVICE"))


def _gpu_count(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and (value <= 1 or value.is_integer())):
        raise argparse.ArgumentTypeError(f"{text!r} is not a GPU count; give a fraction of one "
                                         "GPU (e.g. 0.5) or a whole number")
    return value


def _given(args: argparse.Namespace, *names: str) -> dict:
    """The TrainConfig fields among `names` given on the command line (the rest keep their
    defaults)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def cmd_jobs(args: argparse.Namespace) -> int:
    """`jobs list|show|cancel`: the job table of a store, as the server sees it."""
    from .adapters.remote import is_url
    from .jobs.layout import jobs_root
    from .jobs.table import JobTable, public_view

    store = args.store if is_url(args.store) else Path(args.store)
    if not is_url(store) and not store.is_dir():
        raise AdaptersKitError(f"store {store} is not a directory; pass --store DIR (or URL), the "
                               "store the server was started with")
    folder = jobs_root(store, args.jobs_dir)
    if not (folder / "jobs.sqlite3").is_file():
        raise AdaptersKitError(f"no job table for store {store} in {folder}; a server started "
                               "with --jobs on this machine keeps it there (pass --jobs-dir DIR "
                               "if it was started with one)")
    table = JobTable.for_store(store, args.jobs_dir)
    if args.action == "list":
        jobs = [{**public_view(j), "tenant": j["tenant"]} for j in table.list(args.tenant, args.limit)]
        if args.json:
            _print_json({"jobs": jobs})
        for j in [] if args.json else jobs:
            p = j["progress"] or {}
            step = f"{p.get('step', 0)}/{p.get('total_steps') or '?'}" if p else ""
            print(f"{j['id']}  {j['tenant']:<12} {j['name']:<24} {j['state']:<10} {step:<10} "
                  f"{j['created']}")
        return 0
    if not args.job_id:
        raise AdaptersKitError(f"jobs {args.action} needs a job id; `adapters-kit jobs list "
                               f"--store {store}` lists them")
    job = table.cancel(args.job_id) if args.action == "cancel" else table.get(args.job_id)
    if job is None:
        raise AdaptersKitError(f"no job {args.job_id!r} in {store}; `adapters-kit jobs list "
                               f"--store {store}` lists them")
    view = {**public_view(job), "tenant": job["tenant"]}
    if args.json or args.action == "show":
        print(json.dumps(view, indent=None if args.json else 2, default=str))
    else:
        print(f"{job['id']}: {view['state']}" + (" (asked to stop; the worker ends it at its next "
                                                 "progress report)" if view["state"] == "running"
                                                 else ""))
    return 0


def _count(what: str):
    """An argparse type: a whole number of 1 or more, named `what` in its error."""
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}; give 1 or more")
        return int(text)
    return parse


_thread_count = _count("a thread count")


class _UsageError(Exception):
    """A command-line mistake, raised instead of argparse's exit so `--json` can report it."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise _UsageError(message, self)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="adapters-kit", description=(
        "Train small LoRA task adapters for DistilBERT or ALBERT and serve many on one base."))
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tasks", help="list the registered tasks (bundled cards, ADAPTERS_KIT_TASKS)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("backbones", help="list the embedded backbones and their trade-off")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_backbones)

    p = sub.add_parser("train", help="train a task adapter")
    p.add_argument("task", help="a registered task name, or a path to a .toml task card")
    p.add_argument("--data", help="training data file (overrides the card; dev is then held out)")
    p.add_argument("--dev-data", help="evaluation data file (overrides the card)")
    p.add_argument("--encoding", help="text encoding of the data files (default: the card's, "
                   "else utf-8); Windows files are usually cp1252")
    p.add_argument("--class-weights", type=_class_weights, metavar="balanced|none|LABEL=W,...",
                   help="weigh the loss by class (default: the card's class_weights, else none)")
    p.add_argument("--backbone", default="embedded-distilbert",
                   help="embedded-distilbert (default), embedded-albert, a hub name or a folder")
    p.add_argument("--out", help="adapter directory to write (default: adapters/TASK), or a "
                   "store URL to publish to (s3://bucket/prefix/TASK)")
    p.add_argument("--epochs", type=float)
    p.add_argument("--max-train-examples", type=int)
    p.add_argument("--rank", type=int)
    p.add_argument("--targets", choices=["qv", "attention", "all-linear"])
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--head", choices=["lora", "full"], default="lora",
                   help="lora: small files (default); full: peft's default head, saved whole")
    p.add_argument("--max-seconds", type=float, help="stop after this long, keeping the best")
    p.add_argument("--patience", type=int, help="evaluations without improvement before "
                   "training stops early (default 4)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="training matmuls: auto (default) = on a GPU bf16 where native, else "
                   "fp16 with a grad scaler; on the CPU bf16 where native, else fp32")
    _device_flag(p)
    p.add_argument("--quantize", choices=["8bit", "4bit"],
                   help="QLoRA: train on a bitsandbytes 8-bit or 4-bit (NF4) base; needs "
                   "pip install 'adapters-kit[quant]' (README, Quantized bases)")
    p.add_argument("--double-quant", action="store_true",
                   help="with --quantize 4bit: quantize the blocks' scales too")
    p.add_argument("--optim", choices=["adamw", "adamw8bit"], default="adamw",
                   help="adamw (torch) or adamw8bit (bitsandbytes' 8-bit moments)")
    p.add_argument("--dropout", type=float,
                   help="override every dropout of the model and LoRA during training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_thread_count, help="torch threads per process (default: all cores; "
                   "under `accelerate launch`, cores / processes)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing adapter")
    p.add_argument("--no-resume", action="store_true", help="ignore an interrupted run's checkpoint")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout (an "
                   "error too); progress goes to stderr as JSON lines")
    _variant_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("train-many", help="train many task adapters together on one shared base")
    p.add_argument("tasks", nargs="+", metavar="CARD_OR_TASK",
                   help="registered task names or paths to .toml task cards")
    p.add_argument("--out", required=True, help="folder of the adapters (each in OUT/TASK)")
    p.add_argument("--backbone", default="embedded-distilbert")
    p.add_argument("--epochs", type=float, help="for every task (default: each card's)")
    p.add_argument("--lr", type=float, help="learning rate for every task (default: each card's)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--rank", type=int)
    p.add_argument("--targets", choices=["qv", "attention", "all-linear"])
    p.add_argument("--head", choices=["lora", "full"], default="lora")
    p.add_argument("--max-train-examples", type=int)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--dropout", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_thread_count)
    p.add_argument("--lanes", type=_count("a number of lanes"), default=1,
                   help="train the tasks in this many groups side by side, the torch threads "
                   "divided between them, at most one lane per thread (default 1; more can be "
                   "faster on a CPU whose cores one task's batch leaves idle; with dropout on, "
                   "a run of several lanes is not repeatable bit for bit)")
    p.add_argument("--overwrite", action="store_true", help="replace existing adapters")
    p.add_argument("--no-resume", action="store_true", help="ignore interrupted runs' checkpoints")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout; progress as "
                   "JSON lines (each with its task) on stderr")
    _variant_flags(p)
    _device_flag(p)
    p.set_defaults(func=cmd_train_many)
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
    p.add_argument("--max-train-examples", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_thread_count, help="torch threads for training and "
                   "measuring (default: all cores)")
    p.add_argument("--out", help="folder for compare.json, compare.png and the adapters' store "
                   "(default: compare-TASK)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout; "
                   "progress goes to stderr as JSON lines")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("eval", help="score an adapter on its dev/test split or a data file")
    p.add_argument("adapter_dir")
    p.add_argument("--data", help="a labelled data file in the task's format")
    p.add_argument("--split", default="dev", choices=["dev", "test"])
    p.add_argument("--encoding", help="text encoding of the --data file (default: the task's)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the TF-IDF baseline (it trains on the task's training split)")
    _device_flag(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="predict labels for texts with an adapter")
    p.add_argument("adapter_dir")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("--sep", default="|||", help="separates the two texts of a pair task")
    _device_flag(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("merge", help="export an adapter merged into its base (no peft needed)")
    p.add_argument("adapter_dir")
    p.add_argument("out", help="model folder to write")
    p.add_argument("--overwrite", action="store_true")
    _device_flag(p, "where the merge runs (the weights written are the same)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("serve", help="serve every adapter in a store over HTTP (see README); "
                       "every setting may also come from ADAPTERS_KIT_<SETTING>, under the flags")
    p.add_argument("--store", help="folder of adapter directories, one per task, or a store "
                   "URL such as s3://bucket/prefix (or ADAPTERS_KIT_STORE)")
    p.add_argument("--backbone",
                   help="the base the adapters were trained on (default embedded-distilbert)")
    p.add_argument("--keys", help="TOML keys file: tenants, their keys and tasks, the admin key; "
                   "without it the server binds loopback only")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default 8000)")
    for field, kind in _SERVE_LIMITS.items():
        p.add_argument("--" + field.replace("_", "-"), dest=field, type=kind,
                       help="see the README, section HTTP server, for the default")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"],
                   help="engine matmul precision: fp32 (default, exact), bf16 (faster on "
                   "CPUs with bf16 units and recent GPUs), or auto (bf16 on such a GPU, else fp32)")
    _device_flag(p, default=None)
    p.add_argument("--quantize", choices=["8bit", "4bit"],
                   help="serve on a bitsandbytes 8-bit or 4-bit (NF4) base (README, Quantized bases)")
    p.add_argument("--ray", action="store_true",
                   help="serve on Ray Serve: engine replicas, requests routed by task (README, "
                   "section Serving on Ray)")
    p.add_argument("--replicas", type=int, help="with --ray: engine replicas (default 1)")
    p.add_argument("--ray-address", help="with --ray: join the Ray cluster at this address "
                   "(default: RAY_ADDRESS, else start a local Ray instance)")
    p.add_argument("--ray-gpus-per-replica", type=_gpu_count, metavar="N",
                   help="with --ray: GPUs each engine replica asks Ray for, a fraction (0.5: "
                   "two replicas share one) or a whole number (default 0: the CPU)")
    p.add_argument("--jobs", action="store_true", default=None,
                   help="take training jobs (POST /v1/jobs) and run a trainer worker beside "
                   "the server (README, section Training jobs)")
    p.add_argument("--jobs-dir", help="with --jobs: the local folder of the job table, uploads "
                   "and work (default STORE/.jobs, or for a store URL a folder in the cache)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("jobs", help="list, show or cancel the training jobs of a store")
    p.add_argument("action", choices=["list", "show", "cancel"])
    p.add_argument("job_id", nargs="?", help="the job (show, cancel)")
    p.add_argument("--store", required=True, help="the store the server takes jobs for (a "
                   "folder or a URL)")
    p.add_argument("--jobs-dir", help="the jobs folder the server was given, if any")
    p.add_argument("--tenant", help="list only this tenant's jobs")
    p.add_argument("--limit", type=int, default=100, help="list at most this many (newest first)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("demo", help="train two demo adapters and serve both on one base model")
    p.add_argument("--out", default="adapters-demo", help="where the demo writes its adapters")
    p.set_defaults(func=cmd_demo)
    __import__("adapters_kit.cli_distill", fromlist=["add_parsers"]).add_parsers(sub)  # distillation
    return ap


def _fail(as_json: bool, code: int, kind: str, message: str) -> int:
    """Report a failure: `{"error": {...}}` on stdout under `--json`, else text on stderr."""
    if as_json:
        _print_json({"error": {"type": kind, "message": message, "exit_code": code}})
    else:
        print(f"adapters-kit: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if argv is None else list(argv)
    as_json = "--json" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as e:
        message, refusing = e.args  # the (sub)command that refused the arguments
        if as_json:
            return _fail(as_json, 2, "UsageError", f"{refusing.prog}: {message}")
        refusing.print_usage(sys.stderr)
        print(f"{refusing.prog}: error: {message}", file=sys.stderr)  # as argparse words it
        return 2
    try:
        return args.func(args)
    except TrainingInterrupted as e:  # stopped on request: resumable, as after Ctrl-C
        return _fail(as_json, 130, "Interrupted", str(e))
    except (AdaptersKitError, FileExistsError) as e:  # a user's mistake; any other error is a bug
        return _fail(as_json, 2, type(e).__name__, str(e))
    except KeyboardInterrupt:
        return _fail(as_json, 130, "Interrupted", "interrupted; `train` resumes from its last "
                     "checkpoint if run again")
    except Exception as e:
        if not as_json:
            raise
        import traceback

        traceback.print_exc()  # the details, for a bug report; stdout keeps the JSON
        return _fail(as_json, 1, type(e).__name__, f"{e} (an internal error: please report it)")


if __name__ == "__main__":
    sys.exit(main())
