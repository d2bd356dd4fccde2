"""Class weighting on an imbalanced task: dev macro-F1 with and without `--class-weights balanced`.

    python benchmarks/class_weights.py [--task sms_spam] [--epochs N] [--max-train N] [--threads N]

Trains the card's task twice on the same backbone, seed and recipe (the card's defaults unless
overridden), once with unweighted cross-entropy and once with `class_weights = "balanced"`, and
prints each run's dev scores, per-class report and confusion matrix. The dev split is the card's
seeded hold-out, identical for both runs. The last line printed is one JSON object.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

from _common import emit, require_shared
from _train_eval import parser

from adapters_kit import TrainConfig, get_task, train
from adapters_kit.training.quality import QualityWarning


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--task", default="sms_spam")
    args = ap.parse_args()
    spec = get_task(args.task)
    require_shared(*Path(spec.train).parts[-2:])
    out = Path(args.out or tempfile.mkdtemp(prefix="class-weights-"))
    runs = {}
    for mode in ("none", "balanced"):
        config = TrainConfig(backbone=args.backbone, epochs=args.epochs, learning_rate=args.lr,
                             rank=args.rank, targets=args.targets, batch_size=args.batch_size,
                             max_train_examples=args.max_train, max_seconds=args.max_seconds,
                             evals_per_epoch=args.evals_per_epoch, seed=args.seed, threads=args.threads,
                             class_weights=mode, overwrite=True, resume=False, progress=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", QualityWarning)
            r = train(spec, out / f"{args.task}-{mode}", config)
        runs[mode] = {"dev_metrics": r.metrics, "baseline": r.baseline, "report": r.report,
                      "class_weights": r.class_weights, "warnings": [str(w.message) for w in caught],
                      "best_step": r.history["best_step"], "train_seconds": round(r.train_seconds, 1),
                      "adapter": str(r.path)}
        print(f"\n== {args.task}, class weights {mode}: dev {spec.metric} {r.metrics[spec.metric]:.4f} "
              f"(TF-IDF {r.baseline.get(spec.metric, float('nan')):.4f}), {r.train_seconds:.0f} s, "
              f"best step {r.history['best_step']}")
        if r.class_weights:
            print("weights: " + ", ".join(f"{k} {v:.3f}" for k, v in r.class_weights.items()))
        for name, row in r.report["per_class"].items():
            print(f"  {name:<10} P {row['precision']:.4f}  R {row['recall']:.4f}  F1 {row['f1']:.4f}  "
                  f"support {row['support']}  predicted {row['predicted']}")
        print(f"  confusion (rows true, columns predicted): {r.report['confusion_matrix']}")
        for w in runs[mode]["warnings"]:
            print(f"  warning: {w}")
    plain, weighted = (runs[m]["dev_metrics"][spec.metric] for m in ("none", "balanced"))
    print(f"\n{args.task} dev {spec.metric}: unweighted {plain:.4f}, balanced {weighted:.4f} "
          f"(difference {weighted - plain:+.4f})")
    emit({"task": args.task, "backbone": args.backbone, "metric": spec.metric, "seed": args.seed,
          "epochs": args.epochs, "max_train": args.max_train, "unweighted": plain,
          "balanced": weighted, "runs": runs})


if __name__ == "__main__":
    main()
