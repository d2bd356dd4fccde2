"""Adapters across bases: each adapter scored through the engine on the fp32, 8-bit and 4-bit base.

    python benchmarks/quantized_cross.py ADAPTER_DIR [ADAPTER_DIR ...]

The adapters are typically those `train_sst2.py` writes with and without `--quantize`. An adapter
trained on one base serves on the others (the fingerprint is the unquantized base's); this
measures whether that is sound: the dev score of every (trained on, served on) pair, through the
serving engine as users run it. The last line is one JSON object.
"""

from __future__ import annotations

import json
from pathlib import Path

from _common import emit

from adapters_kit import MultiTaskModel
from adapters_kit.evaluation import evaluate_adapter

BASES = {"fp32": None, "8bit": "8bit", "4bit": "4bit"}


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("adapters", nargs="+")
    args = ap.parse_args()
    paths = [Path(p) for p in args.adapters]
    metas = [json.loads((p / "task.json").read_text()) for p in paths]
    backbone = metas[0]["backbone"]["name"]
    rows = []
    for served, mode in BASES.items():
        engine = MultiTaskModel(backbone, quantize=mode)
        for path, meta in zip(paths, metas):
            trained = (meta["backbone"].get("quantization") or {}).get("mode", "fp32")
            metric = meta["task"].get("metric", "accuracy")
            name = f"{path.name}-on-{served}"
            r = evaluate_adapter(path, model=engine, baseline=False)
            engine.unload(r["task"])
            score = r["metrics"][metric]
            rows.append({"adapter": path.name, "trained_on": trained, "served_on": served,
                         metric: round(score, 4), "recorded": round(meta["metrics"][metric], 4)})
            print(f"{name:<48} trained on {trained:<5} served on {served:<5} dev {metric} "
                  f"{score:.4f} (recorded at training {meta['metrics'][metric]:.4f})", flush=True)
        del engine
    emit({"backbone": backbone, "rows": rows})


if __name__ == "__main__":
    main()
