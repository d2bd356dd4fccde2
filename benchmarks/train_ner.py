"""CoNLL-2003 NER on an embedded backbone: test-set entity F1, training time, adapter size.

    python benchmarks/train_ner.py [--backbone embedded-albert] [--epochs N]

Trains on CoNLL-2003 train with the `conll2003` card's defaults, keeps the checkpoint with the
best validation F1, and scores the test set (entity-level, exact span and type, seqeval)
through the serving engine. The last line printed is one JSON object.
"""

from __future__ import annotations

from _common import emit, require_shared
from _train_eval import parser, run


def main() -> None:
    args = parser(__doc__).parse_args()
    require_shared("conll2003", "train.txt")
    r = run("conll2003", args, "test")
    m = r["eval_metrics"]
    print(f"CoNLL-2003 test: F1 {m['f1'] * 100:.2f} (P {m['precision'] * 100:.2f}, "
          f"R {m['recall'] * 100:.2f}) | dev F1 {r['dev_metrics']['f1'] * 100:.2f} | "
          f"{r['train_seconds']:.0f} s training | adapter {r['adapter_bytes']:,} bytes")
    emit({**r, "test_f1": round(m["f1"] * 100, 2), "test_precision": round(m["precision"] * 100, 2),
          "test_recall": round(m["recall"] * 100, 2),
          "dev_f1": round(r["dev_metrics"]["f1"] * 100, 2)})


if __name__ == "__main__":
    main()
