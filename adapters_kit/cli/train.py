"""`train` and `train-many`: their config flags are TrainConfig's fields (cli.flags)."""

from __future__ import annotations

import argparse
import dataclasses
import warnings
from pathlib import Path

from ..training.config import TrainConfig
from ..training.quality import QualityWarning
from .args import announce_device, count, json_flag, thread_count
from .flags import ConfigFlags
from .report import print_json, print_report, progress_line, warn


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


CUSTOM = {
    # the names these flags have always had
    "learning_rate": {"flag": "--lr", "metavar": "LR"},
    "use_rslora": {"flag": "--rslora"},
    "use_dora": {"flag": "--dora"},
    # what the annotation alone cannot say
    "class_weights": {"type": _class_weights, "metavar": "balanced|none|LABEL=W,..."},
    "threads": {"type": thread_count},
    "device": {"metavar": "auto|cpu|cuda|cuda:N"},
    "loraplus_lr_ratio": {"metavar": "RATIO"},
}
TRAIN_FLAGS = ConfigFlags(TrainConfig, custom=CUSTOM, skip={
    "progress": "--json turns the progress bar off: progress then goes to stderr as JSON lines",
})
"""The TrainConfig fields `train` takes as flags: all but those in `skip`, each for its reason."""
TRAIN_MANY_FLAGS = dataclasses.replace(TRAIN_FLAGS, skip={
    **TRAIN_FLAGS.skip,
    "max_seconds": "train_many has no time budget: it steps every task together to the end",
    "quantize": "train_many shares one full-precision base; train QLoRA adapters with `train`",
    "double_quant": "a setting of quantize, which train_many does not take",
})


def _config(args: argparse.Namespace, flags: ConfigFlags) -> TrainConfig:
    """The command line's TrainConfig, built here only: the flags given over TrainConfig's
    defaults, the device resolved (and said on stderr)."""
    given = flags.given(args)
    device = announce_device(given.get("device", TrainConfig.device), quiet=args.json)
    return TrainConfig(**{**given, "device": str(device), "progress": not args.json})


def cmd_train(args: argparse.Namespace) -> int:
    from ..tasks import get_task
    from ..training import loop
    from ..training.distributed import is_main_process

    spec = get_task(args.task)
    if args.data or args.dev_data:
        spec = spec.with_data(args.data, args.dev_data)
    if args.encoding:
        spec = dataclasses.replace(spec, encoding=args.encoding)
    from ..adapters.door import publish_staged, staging_for

    # a store URL: trained into a local staging folder, then published there
    staged = staging_for(args.out, spec.name, overwrite=bool(args.overwrite)) if args.out else None
    out_url = args.out if staged else None
    out = staged or Path(args.out or Path("adapters") / spec.name)
    config = _config(args, TRAIN_FLAGS)
    with warnings.catch_warnings():  # reported below, once, as the output format wants
        warnings.simplefilter("ignore", QualityWarning)
        result = loop.train(spec, out, config, on_progress=progress_line if args.json else None)
    if not is_main_process():  # under `accelerate launch` the main process reports for all
        return 0
    if out_url:
        publish_staged(out, out_url)
        result.path = out = out_url
    if args.json:
        print_json({"task": spec.name, "backbone": config.backbone, **result.to_dict()})
    else:
        m = result.metrics[spec.metric]
        base = result.baseline.get(spec.metric)
        print(f"{spec.name}: dev {spec.metric} {m:.4f}"
              + (f" (TF-IDF baseline {base:.4f})" if base is not None else "")
              + f" in {result.train_seconds:.0f} s; adapter {result.adapter_bytes:,} bytes -> {out}")
        if result.class_weights:
            print("class weights: " + ", ".join(f"{k} {v:.3f}" for k, v in result.class_weights.items()))
        print_report(result.report)
        warn(result.warnings)
    return 0


def cmd_train_many(args: argparse.Namespace) -> int:
    from ..tasks import get_task
    from ..training.many import TrainJob, train_many

    specs = [get_task(t) for t in args.tasks]
    config = _config(args, TRAIN_MANY_FLAGS)
    out = Path(args.out)
    with warnings.catch_warnings():  # reported below, once per task
        warnings.simplefilter("ignore", QualityWarning)
        results = train_many([TrainJob(s, out / s.name, config) for s in specs],
                             on_progress=progress_line if args.json else None, lanes=args.lanes)
    if args.json:
        print_json({"backbone": config.backbone,
                    "tasks": {name: r.to_dict() for name, r in results.items()}})
        return 0
    for spec in specs:
        r = results[spec.name]
        base = r.baseline.get(spec.metric)
        print(f"{spec.name}: dev {spec.metric} {r.metrics[spec.metric]:.4f}"
              + (f" (TF-IDF baseline {base:.4f})" if base is not None else "")
              + f"; adapter {r.adapter_bytes:,} bytes -> {r.path}")
        warn([f"{spec.name}: {w}" for w in r.warnings])
    return 0


def add_train(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a task adapter")
    p.add_argument("task", help="a registered task name, or a path to a .toml task card")
    p.add_argument("--data", help="training data file (overrides the card; dev is then held out)")
    p.add_argument("--dev-data", help="evaluation data file (overrides the card)")
    p.add_argument("--encoding", help="text encoding of the data files (default: the card's, "
                   "else utf-8); Windows files are usually cp1252")
    p.add_argument("--out", help="adapter directory to write (default: adapters/TASK), or a "
                   "store URL to publish to (s3://bucket/prefix/TASK)")
    json_flag(p, "print one JSON object on stdout (an error too); progress goes to stderr as "
              "JSON lines")
    TRAIN_FLAGS.add_to(p.add_argument_group("training settings (TrainConfig; unset: the task "
                                            "card's [defaults], else TrainConfig's)"))
    return p


def add_train_many(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train-many", help="train many task adapters together on one shared base")
    p.add_argument("tasks", nargs="+", metavar="CARD_OR_TASK",
                   help="registered task names or paths to .toml task cards")
    p.add_argument("--out", required=True, help="folder of the adapters (each in OUT/TASK)")
    p.add_argument("--lanes", type=count("a number of lanes"), default=1,
                   help="train the tasks in this many groups side by side, the torch threads "
                   "divided between them, at most one lane per thread (default 1; more can be "
                   "faster on a CPU whose cores one task's batch leaves idle; with dropout on, "
                   "a run of several lanes is not repeatable bit for bit)")
    json_flag(p, "one JSON object on stdout; progress as JSON lines (each with its task) on stderr")
    TRAIN_MANY_FLAGS.add_to(p.add_argument_group("training settings for every task (TrainConfig; "
                                                 "unset: each card's [defaults], else "
                                                 "TrainConfig's)"))
    return p
