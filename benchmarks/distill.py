"""Distillation on real weights: compact students of `embedded-distilbert`, and task adapters
distilled onto them, against the teacher adapter and against the student trained on labels alone.

    python benchmarks/distill.py --part latency   # teacher vs 3-layer student, one run, side by side
    python benchmarks/distill.py --part sst2      # teacher, label-only student, distilled student(s)
    python benchmarks/distill.py --part agnews
    python benchmarks/distill.py --part albert    # the shared-layer student on sst2 and ag_news
    python benchmarks/distill.py --part ner       # CoNLL-2003 teacher vs distilled 3-layer student

Each part is one short run (run it under `flock /tmp/ak-bench.lock`); adapters are kept in
`--work` (default ~/.cache/adapters_kit/bench/distill) under names that say their settings, so
later parts and reruns reuse them. Every training of a part uses the same settings (max train
examples, epochs, seed), printed with the figures. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import time
from pathlib import Path

from _common import SHARED, emit, require_shared

from adapters_kit import MultiTaskModel, TrainConfig, get_task, train
from adapters_kit.adapters.store import TASK
from adapters_kit.backbones.made import read_registry
from adapters_kit.backbones.students import make_student, report
from adapters_kit.comparison import measure
from adapters_kit.evaluation import evaluate_adapter
from adapters_kit.tasks.kinds import kind_of
from adapters_kit.training import distill

TEACHER = "embedded-distilbert"
MINI, SHARED_STUDENT, MINI_GD = "distil-mini-3", "distil-shared-128", "distil-mini-3-gd"
TASKS = {"sst2": "sst2", "agnews": "ag_news", "ner": "conll2003"}


def student(name: str) -> dict:
    """Make (once) and report a student of the teacher."""
    if name not in read_registry():
        if name == MINI_GD:
            raise SystemExit(f"{MINI_GD} is made by --part general; run that first")
        if name == MINI:
            make_student(MINI, TEACHER, layers=3)
        else:
            make_student(SHARED_STUDENT, TEACHER, share_layers=True, embedding_size=128)
    return report(name).to_dict()


def cached(work: Path, label: str, settings: dict, run) -> Path:
    """The adapter `label` trained with `settings`: kept from an earlier run, else `run(path)`."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
    path = work / f"{label}-{key}"
    if not (path / TASK).exists():
        t = time.perf_counter()
        run(path)
        print(f"  trained {label} in {time.perf_counter() - t:.0f} s -> {path}", flush=True)
    else:
        print(f"  reused {label} ({path})", flush=True)
    return path


def config(args, backbone: str) -> TrainConfig:
    return TrainConfig(backbone=backbone, max_train_examples=args.max_train_examples, epochs=args.epochs,
                       seed=0, baseline=False, overwrite=True, progress=False, threads=args.threads)


def metric_of(path: Path, split: str) -> float:
    spec = json.loads((path / TASK).read_text())
    if split == "dev":
        return float(spec["metrics"][get_task(spec["task"]["name"]).metric])
    result = evaluate_adapter(path, split=split, baseline=False)
    return float(result["metrics"][get_task(spec["task"]["name"]).metric])


def task_part(args, task: str, students: list[str], split: str = "dev", labels_only: bool = True) -> dict:
    """Teacher, the label-only student (unless not `labels_only`) and the distilled student of
    each of `students`."""
    spec = get_task(task)
    common = {"task": task, "max_train_examples": args.max_train_examples, "epochs": args.epochs}
    teacher = cached(args.work, f"{task}-teacher", {**common, "backbone": TEACHER},
                     lambda p: train(spec, p, config(args, TEACHER)))
    rows = {"teacher": {"backbone": TEACHER, "metric": metric_of(teacher, split), "path": str(teacher)}}
    for name in students:
        info = student(name)
        how = {"temperature": args.temperature, "alpha": args.alpha}
        distilled = cached(args.work, f"{task}-{name}-distilled",
                           {**common, "backbone": name, "student": info["fingerprint"], **how,
                            "teacher": str(teacher)},
                           lambda p, n=name, how=how: distill(teacher, p, n, config(args, n), **how))
        if labels_only:
            labels = cached(args.work, f"{task}-{name}-labels", {**common, "backbone": name,
                                                                  "student": info["fingerprint"]},
                            lambda p, n=name: train(spec, p, config(args, n)))
            rows[f"{name} labels only"] = {"backbone": name, "metric": metric_of(labels, split),
                                           "path": str(labels)}
        rows[f"{name} distilled"] = {"backbone": name, "metric": metric_of(distilled, split),
                                     "path": str(distilled)}
        if args.unlabelled and spec.name == "sst2":
            u = {**how, "unlabelled": "{shared}/sst2/train.tsv", "max_unlabelled": args.unlabelled}
            extra = cached(args.work, f"{task}-{name}-distilled-u{args.unlabelled}",
                           {**common, "backbone": name, "student": info["fingerprint"], **u,
                            "teacher": str(teacher)},
                           lambda p, n=name, u=u: distill(teacher, p, n, config(args, n), **u))
            rows[f"{name} distilled + {args.unlabelled} unlabelled"] = {
                "backbone": name, "metric": metric_of(extra, split), "path": str(extra)}
    t = rows["teacher"]["metric"]
    scale = 100.0 if spec.metric != "mse" else 1.0
    print(f"\n{task} ({split} {spec.metric}); every training: max_train_examples="
          f"{args.max_train_examples}, epochs={args.epochs or 'the card'}s, seed 0; "
          f"T={args.temperature}, alpha={args.alpha}")
    for label, r in rows.items():
        r["behind_teacher_points"] = round((t - r["metric"]) * scale, 2)
        print(f"  {label:<45} {r['metric'] * scale:6.2f}  ({r['behind_teacher_points']:+.2f} behind "
              "the teacher)")
    for name in students if labels_only else []:
        base = rows[f"{name} labels only"]["metric"]
        for label, r in rows.items():
            if label.startswith(f"{name} distilled"):
                r["over_labels_only_points"] = round((r["metric"] - base) * scale, 2)
                print(f"  {label}: {r['over_labels_only_points']:+.2f} points over labels alone")
    return {"task": task, "split": split, "metric": spec.metric, "settings": {
        **common, "temperature": args.temperature, "alpha": args.alpha}, "rows": rows,
        "students": {n: student(n) for n in students}}


def latency_part(args) -> dict:
    """Teacher and 3-layer student through the serving engine, measured in alternating rounds."""
    info = student(MINI)
    spec = get_task("sst2")
    quick = TrainConfig(max_train_examples=256, epochs=1, baseline=False, overwrite=True, progress=False)
    paths = {b: cached(args.work, f"latency-{b}", {"backbone": b, "quick": 256},
                       lambda p, b=b: train(spec, p, dataclasses.replace(quick, backbone=b)))
             for b in (TEACHER, MINI)}
    kind = kind_of(spec)
    dev = kind.splits(spec, seed=0, max_train=16)[1]
    inputs = measure.dev_inputs(dev)
    engines = {}
    for b, path in paths.items():
        model = MultiTaskModel(b, capacity=2)
        name = model.load(path)
        feats = kind.featurize(model.tasks[name].spec, model.tokenizer, dev)
        engines[b] = (model, measure.Requests(model, name, inputs, feats.ids))
    p50 = {b: [] for b in engines}
    rps = {b: [] for b in engines}
    for _ in range(args.rounds):  # alternate, so a burst of load elsewhere hits both
        for b, (_, req) in engines.items():
            p50[b].append(measure.latency_ms(req, max_requests=150, max_seconds=3.0)[0])
            rps[b].append(measure.rows_per_second(req, max_seconds=3.0))
    out = {b: {"p50_ms": round(statistics.median(p50[b]), 3),
               "rows_per_second": round(statistics.median(rps[b]), 1),
               "base_memory_bytes": measure.tensor_bytes(engines[b][0].model)} for b in engines}
    ratio_p50 = out[MINI]["p50_ms"] / out[TEACHER]["p50_ms"]
    ratio_rps = out[MINI]["rows_per_second"] / out[TEACHER]["rows_per_second"]
    print(f"\nsingle-request p50 (SST-2 dev inputs, median of {args.rounds} alternating rounds): "
          f"teacher {out[TEACHER]['p50_ms']:.2f} ms, {MINI} {out[MINI]['p50_ms']:.2f} ms -> "
          f"{ratio_p50:.3f}x (target <= 0.6)")
    print(f"batch throughput (32 a batch): teacher {out[TEACHER]['rows_per_second']:.0f} rows/s, "
          f"{MINI} {out[MINI]['rows_per_second']:.0f} rows/s -> {ratio_rps:.2f}x (target >= 1.7)")
    return {"engines": out, "p50_ratio": round(ratio_p50, 4), "throughput_ratio": round(ratio_rps, 3),
            "p50_target_met": ratio_p50 <= 0.6, "throughput_target_met": ratio_rps >= 1.7,
            "student": info, "rounds": args.rounds}


def general_part(args) -> dict:
    """A 3-layer student distilled on SST-2 train's sentences (unlabelled) for a time budget."""
    from adapters_kit.training.general_distill import GeneralDistillConfig, general_distill

    make_student(MINI_GD, TEACHER, layers=3, overwrite=True)
    result = general_distill(MINI_GD, "{shared}/sst2/train.tsv", GeneralDistillConfig(
        max_seconds=args.general_seconds, learning_rate=args.general_lr, max_length=64,
        progress=False, threads=args.threads)).to_dict()
    print(f"\n{MINI_GD}: {result['steps']} steps of general distillation on {result['texts']} SST-2 "
          f"train sentences in {result['seconds']:.0f} s; loss {result['first_loss']:.4f} -> "
          f"{result['last_loss']:.4f}")
    return {"general_distillation": result, "student": report(MINI_GD).to_dict()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", required=True,
                    choices=["latency", "sst2", "agnews", "albert", "ner", "general"])
    ap.add_argument("--student", default=MINI, help=f"sst2, agnews, ner: the student ({MINI}, or "
                    f"{MINI_GD} after --part general)")
    ap.add_argument("--general-seconds", type=float, default=480.0)
    ap.add_argument("--general-lr", type=float, default=2e-4)
    ap.add_argument("--albert-tasks", default="sst2,ag_news", help="albert: the tasks (comma-separated)")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache/adapters_kit/bench/distill")
    ap.add_argument("--max-train-examples", type=int, default=8000,
                    help="training rows for teacher and students alike (default 8000)")
    ap.add_argument("--epochs", type=float, default=None, help="default: the task card's")
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--unlabelled", type=int, default=0,
                    help="sst2: also distil with this many rows of SST-2 train as unlabelled text")
    ap.add_argument("--rounds", type=int, default=3, help="latency: alternating rounds")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    require_shared("sst2")
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.part == "latency":
        result = latency_part(args)
    elif args.part == "general":
        result = general_part(args)
    elif args.part in ("sst2", "agnews"):
        result = task_part(args, TASKS[args.part], [args.student])
    elif args.part == "albert":
        result = {t: task_part(args, t, [SHARED_STUDENT], labels_only=False)
                  for t in args.albert_tasks.split(",")}
        info = next(iter(result.values()))["students"][SHARED_STUDENT]
        print(f"\n{SHARED_STUDENT}: base bytes {info['disk_bytes_ratio']:.3f}x the teacher's on disk, "
              f"{info['memory_bytes_ratio']:.3f}x in memory (target <= 0.35)")
    else:
        require_shared("conll2003")
        result = task_part(args, "conll2003", [args.student], split="test", labels_only=False)
    emit({"benchmark": "distill", "part": args.part, "seconds": round(time.perf_counter() - started, 1),
          "shared_data": str(SHARED), **({"result": result} if args.part != "albert" else result)})


if __name__ == "__main__":
    main()
