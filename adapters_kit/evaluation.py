"""Scoring a trained adapter on a split, through the serving engine (what users will run)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .adapters.store import AdapterFiles, read_adapter
from .engine.model import MultiTaskModel
from .errors import DataError
from .tasks import TaskSpec
from .tasks.kinds import kind_of
from .training.quality import quality_warnings


def evaluate_adapter(adapter_dir: str | Path | AdapterFiles, data: str | None = None, split: str = "dev",
                     model: MultiTaskModel | None = None, batch_size: int = 64,
                     baseline: bool = True, encoding: str | None = None) -> dict:
    """Metrics of an adapter on `data` (a file) or its task's `split` ("dev" or "test").

    Returns {"task", "split", "examples", "metrics", "report", "baseline", "warnings"}. The dev
    split is rebuilt exactly as training held it out (same seed); a QA article split never
    changes. `report` holds per-class scores and the confusion matrix; `baseline` is the TF-IDF
    baseline trained on the task's training split (as in training) and scored on these same
    rows: the one saved at training time for dev, trained afresh for a file or the test split
    ({} where the training data is not at hand; a warning says so). `encoding` reads `data`.
    """
    files = adapter_dir if isinstance(adapter_dir, AdapterFiles) else read_adapter(adapter_dir)
    spec = TaskSpec.from_dict({k: v for k, v in files.task["task"].items() if k != "source"})
    if model is None:
        model = MultiTaskModel(files.task["backbone"]["name"])
    name = model.load(files)
    kind = kind_of(spec)
    training = files.task.get("training", {})
    seed = training.get("seed", 0)
    read_spec = dataclasses.replace(spec, encoding=encoding) if encoding and data else spec
    examples = kind.eval_split(read_spec, data, split, seed=seed)
    feats = kind.featurize(spec, model.tokenizer, examples)
    outputs = model.run_ids(name, feats.ids, batch_size)
    metrics = kind.evaluate(spec, examples, feats, outputs)
    notes: list[str] = []
    base: dict = {}
    if baseline:
        base = (files.task.get("tfidf_baseline") or {}) if data is None and split == "dev" else {}
        if not base:
            try:
                train_split, _ = kind.splits(spec, seed=seed, max_train=training.get("max_train_examples"))
                base = kind.baseline(spec, train_split, examples)
            except DataError as e:
                notes.append(f"no TF-IDF baseline: the training data cannot be read ({e})")
    report = kind.report(spec, examples, feats, outputs)
    notes += quality_warnings(spec, report, training.get("train_label_counts"), metrics, base)
    return {"task": spec.name, "split": data or split, "examples": len(examples), "metrics": metrics,
            "report": report, "baseline": base, "warnings": notes}
