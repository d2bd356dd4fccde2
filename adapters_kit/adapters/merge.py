"""Export one adapter merged into its base: a plain `transformers` model folder."""

from __future__ import annotations

from pathlib import Path

from ..backbones import Backbone
from ..devices import resolve_device
from ..files import atomic_directory
from ..tasks.kinds import kind_of
from .store import check_against_base, read_adapter


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, overwrite: bool = False,
                  device: str = "auto") -> Path:
    """Write `adapter_dir` merged into its base as a model folder that needs no peft.

    `device`: where the merge's matmuls run (`auto`: a GPU when one is visible); the folder's
    weights are the same fp32 tensors wherever it ran.

    The folder loads with the task kind's auto class (`AutoModelForSequenceClassification`,
    `...ForTokenClassification` or `...ForQuestionAnswering`) and carries the task's label names
    in its config.
    """
    from peft import PeftModel

    files = read_adapter(adapter_dir)  # verified before peft reads anything
    kind = kind_of(files.spec)
    backbone = Backbone.resolve(files.task["backbone"]["name"])
    check_against_base(files, backbone.load_model(1), backbone.fingerprint())
    where = resolve_device(device)
    base = kind.load_model(backbone, files.num_outputs).to(where)
    merged = PeftModel.from_pretrained(base, str(files.path), torch_device=str(where)
                                       ).merge_and_unload().eval()
    labels = kind.output_names(files.spec)
    merged.config.id2label = dict(enumerate(labels))
    merged.config.label2id = {label: i for i, label in enumerate(labels)}
    merged.config.problem_type = kind.problem_type
    with atomic_directory(Path(out_dir), overwrite=overwrite) as tmp:
        merged.save_pretrained(str(tmp))
        backbone.tokenizer().save_pretrained(str(tmp))
    return Path(out_dir)
