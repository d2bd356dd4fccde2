"""A customer brings a labelled file and gets an adapter: the whole flow in one script.

    python examples/customer_adapter.py customer.csv --text-column message --label-column label

Copy and change it: the task is registered from the file's own labels, trained on the
embedded backbone, and served next to any other adapters on the same base.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from adapters_kit import MultiTaskModel, TaskSpec, TrainConfig, register_task, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="CSV file with a text column and a label column")
    ap.add_argument("--name", default="customer_task")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--label-column", default="label")
    ap.add_argument("--out", default="adapters")
    args = ap.parse_args()

    with open(args.data, newline="", encoding="utf-8") as f:
        labels = sorted({row[args.label_column] for row in csv.DictReader(f)})
    spec = register_task(TaskSpec(name=args.name, labels=labels, text_fields=[args.text_column],
                                  label_field=args.label_column, train=args.data,
                                  dev_fraction=0.2, epochs=3), replace=True)
    result = train(spec, Path(args.out) / spec.name, TrainConfig(overwrite=True))
    print(f"dev {spec.metric}: {result.metrics[spec.metric]:.3f} "
          f"(TF-IDF baseline {result.baseline.get(spec.metric, float('nan')):.3f}); "
          f"adapter {result.adapter_bytes:,} bytes at {result.path}")

    model = MultiTaskModel("embedded-distilbert")
    model.load(result.path)
    for p in model.predict(spec.name, ["an example message from this customer"]):
        print(p)


if __name__ == "__main__":
    main()
