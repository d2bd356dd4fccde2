"""Adapter bytes per task for both head designs, at DistilBERT-base shape and on the embedded
backbones (r=8 on q/v, 2 labels). Sizes do not depend on training, so the weights are fresh.

    python benchmarks/adapter_size.py
"""

from __future__ import annotations

from pathlib import Path

from _common import emit, temp_dir

from adapters_kit.adapters.store import save_adapter
from adapters_kit.backbones import Backbone
from adapters_kit.training.loop import lora_config


def adapter_bytes(backbone: Backbone, head: str, work: Path) -> int:
    from peft import get_peft_model

    model = backbone.load_model(2)
    cfg = {"targets": "qv", "head": head, "rank": 8, "lora_alpha": 16, "lora_dropout": 0.0}
    peft_model = get_peft_model(model, lora_config(backbone.arch, 2, cfg))
    out = save_adapter(work / f"{backbone.name.replace('/', '_')}-{head}", peft_model,
                       {"task": {}, "backbone": {}}, overwrite=True)
    return sum((out / n).stat().st_size for n in ("adapter_model.safetensors", "adapter_config.json"))


def distilbert_base_folder(work: Path) -> Path:
    """A randomly initialised model of distilbert-base-uncased's shape (768 wide, 6 layers)."""
    from transformers import DistilBertConfig, DistilBertModel

    from adapters_kit.backbones.embedded import embedded_dir

    folder = work / "distilbert-base-shape"
    DistilBertModel(DistilBertConfig()).save_pretrained(str(folder))
    src = embedded_dir("embedded-distilbert")  # same uncased WordPiece vocabulary
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / f).write_bytes((src / f).read_bytes())
    return folder


def main() -> None:
    work = temp_dir("adapter-size-")
    rows = []
    for name in (str(distilbert_base_folder(work)), "embedded-distilbert", "embedded-albert"):
        bb = Backbone.resolve(name)
        label = "distilbert-base shape" if name.startswith(str(work)) else name
        sizes = {head: adapter_bytes(bb, head, work) for head in ("lora", "full")}
        rows.append({"backbone": label, "small_head_bytes": sizes["lora"],
                     "full_head_bytes": sizes["full"]})
        print(f"{label:<24} small head {sizes['lora']:>10,} B   peft default head "
              f"{sizes['full']:>10,} B")
    emit({"adapter_sizes": rows})


if __name__ == "__main__":
    main()
