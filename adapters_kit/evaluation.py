"""Scoring a trained adapter on a split, through the serving engine (what users will run)."""

from __future__ import annotations

from pathlib import Path

from .kinds import kind_of
from .runtime import MultiTaskModel
from .store import AdapterFiles, read_adapter
from .tasks import TaskSpec


def evaluate_adapter(adapter_dir: str | Path | AdapterFiles, data: str | None = None, split: str = "dev",
                     model: MultiTaskModel | None = None, batch_size: int = 64) -> dict:
    """Metrics of an adapter on `data` (a file) or its task's `split` ("dev" or "test").

    Returns {"task", "split", "examples", "metrics"}. The dev split is rebuilt exactly as
    training held it out (same seed); a QA article split never changes.
    """
    files = adapter_dir if isinstance(adapter_dir, AdapterFiles) else read_adapter(adapter_dir)
    spec = TaskSpec.from_dict({k: v for k, v in files.task["task"].items() if k != "source"})
    if model is None:
        model = MultiTaskModel(files.task["backbone"]["name"])
    name = model.load(files)
    kind = kind_of(spec)
    seed = files.task.get("training", {}).get("seed", 0)
    examples = kind.eval_split(spec, data, split, seed=seed)
    feats = kind.featurize(spec, model.tokenizer, examples)
    outputs = model.run_ids(name, feats.ids, batch_size)
    return {"task": spec.name, "split": data or split, "examples": len(examples),
            "metrics": kind.evaluate(spec, examples, feats, outputs)}
