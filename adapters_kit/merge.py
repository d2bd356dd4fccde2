"""Export one adapter merged into its base: a plain `transformers` model folder."""

from __future__ import annotations

from pathlib import Path

from .backbones import Backbone, fingerprint
from .fsutil import atomic_directory
from .store import check_against_base, read_adapter


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write `adapter_dir` merged into its base as a model folder that needs no peft.

    The folder loads with `AutoModelForSequenceClassification.from_pretrained(out_dir)` and
    carries the task's label names in its config.
    """
    from peft import PeftModel

    files = read_adapter(adapter_dir)  # verified before peft reads anything
    task = files.task["task"]
    backbone = Backbone.resolve(files.task["backbone"]["name"])
    n = 1 if task["kind"] == "regression" else len(task["labels"])
    base = backbone.load_model(n)
    check_against_base(files, base, fingerprint(base))
    merged = PeftModel.from_pretrained(base, str(files.path)).merge_and_unload().eval()
    labels = task["labels"] or ["value"]
    merged.config.id2label = dict(enumerate(labels))
    merged.config.label2id = {label: i for i, label in enumerate(labels)}
    merged.config.problem_type = {"classification": "single_label_classification",
                                  "multi-label": "multi_label_classification",
                                  "regression": "regression"}[task["kind"]]
    with atomic_directory(Path(out_dir), overwrite=overwrite) as tmp:
        merged.save_pretrained(str(tmp))
        backbone.tokenizer().save_pretrained(str(tmp))
    return Path(out_dir)
