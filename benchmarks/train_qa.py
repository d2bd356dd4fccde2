"""Extractive QA on the SQuAD v1.1 article split: held-out exact match and F1.

    python benchmarks/train_qa.py [--backbone embedded-albert] [--epochs N]

Only SQuAD's dev set ships in ../shared (48 articles). The `squad` card splits it by article:
titles sorted, shuffled with seed 0, 38 articles to train and the last 10 held out (the same
split every run). Training uses the card's defaults; the held-out articles are scored with
the official SQuAD v1.1 EM/F1 through the serving engine. The last line is one JSON object.
"""

from __future__ import annotations

from _common import emit, require_shared
from _train_eval import parser, run


def main() -> None:
    args = parser(__doc__).parse_args()
    require_shared("squad_v1.1", "dev-v1.1.json")
    r = run("squad", args, "dev")
    m = r["eval_metrics"]
    print(f"SQuAD held-out articles ({r['eval_examples']} questions): EM {m['exact_match']:.2f}, "
          f"F1 {m['f1']:.2f} | {r['train_seconds']:.0f} s training | adapter "
          f"{r['adapter_bytes']:,} bytes")
    emit({**r, "exact_match": round(m["exact_match"], 2), "f1": round(m["f1"], 2)})


if __name__ == "__main__":
    main()
