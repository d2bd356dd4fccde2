"""Class weighting on an imbalanced task: dev macro-F1 unweighted, balanced, and by default.

    python benchmarks/class_weights.py [--task sms_spam|trec] [--modes none,balanced,default]
        [--epochs N] [--max-train N] [--threads N]

Trains the task once per mode on the same backbone, seed and recipe (the card's defaults unless
overridden): `none` is unweighted cross-entropy, `balanced` is `class_weights = "balanced"`, and
`default` leaves `class_weights` unset (balanced when a class is under 5% of the training rows).
Prints each run's dev scores against the TF-IDF baseline, per-class report and confusion matrix,
and the test split's scores where the task has one. `--task trec` is TREC's six coarse classes
(../shared/data/trec: train_5500 for training with a seeded 10% dev hold-out, TREC_10 as test;
ABBR is 1.6% of the training rows). The last line printed is one JSON object.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from _common import emit, require_shared, temp_dir
from _train_eval import parser

from adapters_kit import TaskSpec, TrainConfig, get_task, train
from adapters_kit.training.quality import QualityWarning


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--task", default="sms_spam", help="a card's task, or trec")
    ap.add_argument("--modes", default="none,balanced",
                    help="comma-separated: none, balanced, default (class_weights unset)")
    args = ap.parse_args()
    modes = args.modes.split(",")
    out = Path(args.out or temp_dir("class-weights-"))
    spec = trec_task(out / "data") if args.task == "trec" else get_task(args.task)
    require_shared(*Path(spec.train).parts[-2:]) if args.task != "trec" else None
    runs = {}
    for mode in modes:
        config = TrainConfig(backbone=args.backbone, epochs=args.epochs, learning_rate=args.lr,
                             rank=args.rank, targets=args.targets, batch_size=args.batch_size,
                             max_train_examples=args.max_train, max_seconds=args.max_seconds,
                             evals_per_epoch=args.evals_per_epoch, seed=args.seed, threads=args.threads,
                             class_weights=None if mode == "default" else mode, overwrite=True,
                             resume=False, progress=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", QualityWarning)
            r = train(spec, out / f"{args.task}-{mode}", config)
        runs[mode] = {"dev_metrics": r.metrics, "baseline": r.baseline, "report": r.report,
                      "test_metrics": r.test_metrics, "test_baseline": r.test_baseline,
                      "class_weights_note": r.class_weights_note,
                      "class_weights": r.class_weights, "warnings": [str(w.message) for w in caught],
                      "best_step": r.history["best_step"], "train_seconds": round(r.train_seconds, 1),
                      "adapter": str(r.path)}
        print(f"\n== {args.task}, class weights {mode}: dev {spec.metric} {r.metrics[spec.metric]:.4f} "
              f"(TF-IDF {r.baseline.get(spec.metric, float('nan')):.4f}), {r.train_seconds:.0f} s, "
              f"best step {r.history['best_step']}")
        if r.test_metrics:
            print(f"   test {spec.metric} {r.test_metrics[spec.metric]:.4f} "
                  f"(TF-IDF {r.test_baseline.get(spec.metric, float('nan')):.4f})")
        if r.class_weights_note:
            print(f"   {r.class_weights_note}")
        if r.class_weights:
            print("weights: " + ", ".join(f"{k} {v:.3f}" for k, v in r.class_weights.items()))
        for name, row in r.report["per_class"].items():
            print(f"  {name:<10} P {row['precision']:.4f}  R {row['recall']:.4f}  F1 {row['f1']:.4f}  "
                  f"support {row['support']}  predicted {row['predicted']}")
        print(f"  confusion (rows true, columns predicted): {r.report['confusion_matrix']}")
        for w in runs[mode]["warnings"]:
            print(f"  warning: {w}")
    scores = {m: runs[m]["dev_metrics"][spec.metric] for m in modes}
    base = next(iter(runs.values()))["baseline"].get(spec.metric)
    print(f"\n{args.task} dev {spec.metric}: " + ", ".join(f"{m} {v:.4f}" for m, v in scores.items())
          + (f"; TF-IDF {base:.4f}" if base is not None else ""))
    emit({"task": args.task, "backbone": args.backbone, "metric": spec.metric, "seed": args.seed,
          "epochs": args.epochs, "max_train": args.max_train, **scores, "tfidf": base, "runs": runs})


def trec_task(folder: Path) -> TaskSpec:
    """TREC's coarse classes as TSV files in `folder`, and a task over them."""
    root = require_shared("trec")
    labels = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    paths = {}
    for split, name in (("train", "train_5500.label"), ("test", "TREC_10.label")):
        rows = []
        for line in (root / name).read_text(encoding="latin-1").splitlines():
            label, _, text = line.partition(" ")
            rows.append(f"{text.strip()}\t{label.split(':')[0]}")
        folder.mkdir(parents=True, exist_ok=True)
        paths[split] = folder / f"{split}.tsv"
        paths[split].write_text("text\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return TaskSpec(name="trec_coarse", labels=labels, train=str(paths["train"]),
                    test=str(paths["test"]), dev_fraction=0.1, metric="f1_macro")


if __name__ == "__main__":
    main()
